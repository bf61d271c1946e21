"""The Admin GraphQL documents we send, and GraphQL nodes in the REST webhook shape.

``sync`` reads history through GraphQL but maps it with the webhook mapping: converting a node
into the REST body a webhook would carry means an order seen by a webhook and by a sync yields
the same event ids and content, so the two dedupe against each other.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .mapping import legacy_id

DISCOUNT_CREATE = """mutation discountCodeBasicCreate($basicCodeDiscount: DiscountCodeBasicInput!) {
  discountCodeBasicCreate(basicCodeDiscount: $basicCodeDiscount) {
    codeDiscountNode { id }
    userErrors { field code message }
  }
}"""

DISCOUNT_DELETE = """mutation discountCodeDelete($id: ID!) {
  discountCodeDelete(id: $id) {
    deletedCodeDiscountId
    userErrors { field code message }
  }
}"""

DISCOUNT_BY_CODE = """query codeDiscountNodeByCode($code: String!) {
  codeDiscountNodeByCode(code: $code) { id }
}"""

# id: the customer's gid (Shopify opens the customer's account in that currency if it has none).
# userErrors codes: ACCOUNT_NOT_FOUND, CREDIT_LIMIT_EXCEEDED, EXPIRES_AT_IN_PAST,
# MISMATCHING_CURRENCY, NEGATIVE_OR_ZERO_AMOUNT, OWNER_NOT_FOUND, UNSUPPORTED_CURRENCY.
# Needs the write_store_credit_account_transactions access scope; takes no idempotency key.
STORE_CREDIT_CREDIT = """mutation storeCreditAccountCredit($id: ID!, $creditInput: StoreCreditAccountCreditInput!) {
  storeCreditAccountCredit(id: $id, creditInput: $creditInput) {
    storeCreditAccountTransaction {
      id
      amount { amount currencyCode }
      balanceAfterTransaction { amount currencyCode }
      account { id }
    }
    userErrors { field code message }
  }
}"""

# a customer's field of ours (namespace loyalty_ladder); the customer's gid is the ownerId
METAFIELDS_SET = """mutation metafieldsSet($metafields: [MetafieldsSetInput!]!) {
  metafieldsSet(metafields: $metafields) {
    metafields { id namespace key }
    userErrors { field code message }
  }
}"""

METAFIELDS_DELETE = """mutation metafieldsDelete($metafields: [MetafieldIdentifierInput!]!) {
  metafieldsDelete(metafields: $metafields) {
    deletedMetafields { ownerId namespace key }
    userErrors { field message }
  }
}"""

TAGS_ADD = """mutation tagsAdd($id: ID!, $tags: [String!]!) {
  tagsAdd(id: $id, tags: $tags) {
    node { id }
    userErrors { field message }
  }
}"""

CUSTOMER_TAGS = """query customerTags($id: ID!) {
  customer(id: $id) { id tags }
}"""

TAGS_REMOVE = """mutation tagsRemove($id: ID!, $tags: [String!]!) {
  tagsRemove(id: $id, tags: $tags) {
    node { id }
    userErrors { field message }
  }
}"""

EMAIL_CONSENT_UPDATE = """mutation customerEmailMarketingConsentUpdate($input: CustomerEmailMarketingConsentUpdateInput!) {
  customerEmailMarketingConsentUpdate(input: $input) {
    customer { id }
    userErrors { field code message }
  }
}"""

ORDER_OWNER = """query orderOwner($id: ID!) {
  order(id: $id) { legacyResourceId email customer { legacyResourceId email } }
}"""

CUSTOMERS_PAGE = """query customersPage($first: Int!, $after: String, $query: String) {
  customers(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes {
      legacyResourceId email createdAt updatedAt tags locale
      emailMarketingConsent { marketingState }
    }
  }
}"""

ORDERS_PAGE = """query ordersPage($first: Int!, $after: String, $query: String) {
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {
    pageInfo { hasNextPage endCursor }
    nodes {
      legacyResourceId email createdAt processedAt updatedAt cancelledAt
      displayFinancialStatus currencyCode paymentGatewayNames discountCodes
      totalPriceSet { shopMoney { amount currencyCode } }
      totalDiscountsSet { shopMoney { amount currencyCode } }
      totalShippingPriceSet { shopMoney { amount currencyCode } }
      paymentTerms { paymentTermsName paymentSchedules(first: 10) { nodes { dueAt } } }
      customer { legacyResourceId email }
      lineItems(first: 100) {
        nodes { sku quantity isGiftCard originalUnitPriceSet { shopMoney { amount currencyCode } } }
      }
      refunds(first: 50) {
        id createdAt note
        transactions(first: 20) {
          nodes { id kind status amountSet { shopMoney { amount currencyCode } } }
        }
      }
    }
  }
}"""


# ---------------------------------------------------------------- GraphQL node → REST shape
def _money_set(node: Mapping[str, Any] | None) -> dict[str, Any] | None:
    shop = (node or {}).get("shopMoney")
    if not shop:
        return None
    return {"shop_money": {"amount": shop.get("amount"), "currency_code": shop.get("currencyCode")}}


def nodes(conn: Any) -> list[Any]:
    """A connection's nodes, whether queried as ``nodes`` or ``edges { node }`` (or a plain list)."""
    if conn is None:
        return []
    if isinstance(conn, list):
        return conn
    if "nodes" in conn:
        return list(conn["nodes"] or [])
    return [e["node"] for e in conn.get("edges") or []]


def customer_from_graphql(node: Mapping[str, Any]) -> dict[str, Any]:
    consent = node.get("emailMarketingConsent")
    return {
        "id": node.get("legacyResourceId") or legacy_id(node.get("id")),
        "email": node.get("email"),
        "created_at": node.get("createdAt"),
        "updated_at": node.get("updatedAt"),
        "tags": ", ".join(node.get("tags") or []),
        "locale": node.get("locale"),
        "email_marketing_consent": None if consent is None else {"state": (consent.get("marketingState") or "")
                                                                 .lower()},
    }


def order_from_graphql(node: Mapping[str, Any]) -> dict[str, Any]:
    """An Admin GraphQL ``Order`` as the REST webhook body (only what our mapping reads)."""
    order_id = node.get("legacyResourceId") or legacy_id(node.get("id"))
    terms = node.get("paymentTerms")
    customer = node.get("customer")
    return {
        "id": order_id,
        "email": node.get("email"),
        "created_at": node.get("createdAt"),
        "processed_at": node.get("processedAt"),
        "updated_at": node.get("updatedAt"),
        "cancelled_at": node.get("cancelledAt"),
        "financial_status": (node.get("displayFinancialStatus") or "").lower() or None,
        "currency": node.get("currencyCode"),
        "total_price_set": _money_set(node.get("totalPriceSet")),
        "total_discounts_set": _money_set(node.get("totalDiscountsSet")),
        "total_shipping_price_set": _money_set(node.get("totalShippingPriceSet")),
        "discount_codes": [{"code": c} for c in node.get("discountCodes") or []],
        "payment_gateway_names": list(node.get("paymentGatewayNames") or []),
        "payment_terms": None if not terms else {
            "payment_terms_name": terms.get("paymentTermsName"),
            "payment_schedules": [{"due_at": s.get("dueAt")} for s in nodes(terms.get("paymentSchedules"))]},
        "customer": None if not customer else {"id": customer.get("legacyResourceId") or legacy_id(customer.get("id")),
                                               "email": customer.get("email")},
        "line_items": [{"sku": li.get("sku"), "quantity": li.get("quantity"), "gift_card": li.get("isGiftCard"),
                        "price_set": _money_set(li.get("originalUnitPriceSet"))}
                       for li in nodes(node.get("lineItems"))],
        "refunds": [{"id": legacy_id(r.get("id")), "order_id": order_id, "created_at": r.get("createdAt"),
                     "note": r.get("note"),
                     "transactions": [{"id": legacy_id(t.get("id")), "kind": (t.get("kind") or "").lower(),
                                       "status": (t.get("status") or "").lower(),
                                       "amount_set": _money_set(t.get("amountSet"))}
                                      for t in nodes(r.get("transactions"))]}
                    for r in nodes(node.get("refunds"))],
    }

