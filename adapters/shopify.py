"""Shopify: signed webhooks in, Admin GraphQL out, paginated GraphQL history for ``ladder sync``.

Inbound, every vendor payload goes through a marshmallow schema with ``unknown=EXCLUDE`` (a new
Shopify field never breaks us) into a REST-shaped dict, and one mapping turns that dict into our
generic events.  ``sync`` converts GraphQL nodes into the same REST shape and reuses the same
mapping, so an order seen by a webhook and by a sync yields the same event ids and content and the
two dedupe against each other.

Event ids are deterministic (docs/internals.md): ``shopify:customer:<id>:created``,
``shopify:customer:<id>:updated:<updated_at>``, ``shopify:checkout:<token>``,
``shopify:order:<id>:placed|paid|cancelled``, ``shopify:refund:<refund id>``.  Times are the
shop's own (``processed_at``, ``cancelled_at``, the refund's ``created_at``), never the delivery
time, so the same state always maps to the same content.

Money: an order's ``total`` is ``total_price`` in the shop currency (``total_price_set.shop_money``
when present), *not* ``current_total_price``: the latter already subtracts refunds, which reach the
ledger as their own ``order_refunded`` events and would otherwise be counted twice.

Outbound, awards become Admin GraphQL mutations at
``{api_url}/admin/api/{api_version}/graphql.json`` with the pinned API version; HTTP and GraphQL
failures become our ``DeliveryError`` tree (``RateLimited``, ``Unavailable``, ``Rejected``,
``NotSupported``).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar

import requests
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from ..errors import BadRequest, NotSupported, RateLimited, Rejected, SignatureError, Unavailable
from ..events import MAX_ID, AwareTime, format_time
from ..identity import guest_id
from .base import Adapter, Delivery, DeliveryResult, Inbound, get_header, retry_after_seconds, verify_hmac_base64

__all__ = ["ShopifyAdapter"]

CENT = Decimal("0.01")
#: financial statuses of an order whose money was taken (and perhaps returned later: the
#: refunds arrive as their own events, so a refunded order was still paid first)
PAID_STATUSES = frozenset({"paid", "partially_refunded", "refunded"})
#: Retry-After when Shopify's 429 names none (its REST/GraphQL leaky bucket refills in ~1-2 s)
DEFAULT_RETRY_AFTER = 2.0
#: connect timeout; the read timeout is the adapter's ``timeout``
CONNECT_TIMEOUT = 5.0
PAGE_SIZE = 100
#: how often ``sync`` waits out a throttle on one page before giving up
SYNC_THROTTLE_RETRIES = 5
_EMAIL = validate.Email()


# ================================================================ vendor schemas (unknown=EXCLUDE)
class _ShopifyId(fields.Field):
    """Shopify ids arrive as JSON numbers (REST webhooks) or strings; ours are strings."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or str(value).strip() == "":
            raise ValidationError("Not a valid Shopify id.")
        return str(value).strip()


class _Amount(fields.Field):
    """A money amount as Shopify writes it: a decimal string, sometimes a JSON number."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
            raise ValidationError("Not a valid amount.")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValidationError("Not a valid amount.") from None
        if not amount.is_finite():
            raise ValidationError("Not a valid amount.")
        return amount


class _Vendor(Schema):
    class Meta:
        unknown = EXCLUDE


class _Money(_Vendor):
    amount = _Amount(allow_none=True)
    currency_code = fields.String(allow_none=True)


class _MoneySet(_Vendor):
    shop_money = fields.Nested(_Money, allow_none=True)


class _Consent(_Vendor):
    state = fields.String(allow_none=True)


class _Customer(_Vendor):
    id = _ShopifyId(allow_none=True)
    email = fields.String(allow_none=True)
    created_at = AwareTime(allow_none=True)
    updated_at = AwareTime(allow_none=True)
    tags = fields.String(allow_none=True)
    locale = fields.String(allow_none=True)
    accepts_marketing = fields.Boolean(allow_none=True)
    email_marketing_consent = fields.Nested(_Consent, allow_none=True)


class _DiscountCode(_Vendor):
    code = fields.String(allow_none=True)


class _Line(_Vendor):
    sku = fields.String(allow_none=True)
    quantity = fields.Integer(allow_none=True)
    price = _Amount(allow_none=True)
    price_set = fields.Nested(_MoneySet, allow_none=True)
    gift_card = fields.Boolean(allow_none=True)


class _Transaction(_Vendor):
    id = _ShopifyId(allow_none=True)
    kind = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    amount = _Amount(allow_none=True)
    amount_set = fields.Nested(_MoneySet, allow_none=True)
    currency = fields.String(allow_none=True)


class _Refund(_Vendor):
    id = _ShopifyId(required=True)
    order_id = _ShopifyId(allow_none=True)
    created_at = AwareTime(allow_none=True)
    processed_at = AwareTime(allow_none=True)
    note = fields.String(allow_none=True)
    transactions = fields.List(fields.Nested(_Transaction), allow_none=True)


class _Schedule(_Vendor):
    due_at = AwareTime(allow_none=True)


class _PaymentTerms(_Vendor):
    payment_terms_name = fields.String(allow_none=True)
    payment_terms_type = fields.String(allow_none=True)
    due_in_days = fields.Integer(allow_none=True)
    payment_schedules = fields.List(fields.Nested(_Schedule), allow_none=True)


class _Order(_Vendor):
    id = _ShopifyId(required=True)
    email = fields.String(allow_none=True)
    contact_email = fields.String(allow_none=True)
    created_at = AwareTime(allow_none=True)
    processed_at = AwareTime(allow_none=True)
    updated_at = AwareTime(allow_none=True)
    cancelled_at = AwareTime(allow_none=True)
    financial_status = fields.String(allow_none=True)
    currency = fields.String(allow_none=True)
    total_price = _Amount(allow_none=True)
    total_price_set = fields.Nested(_MoneySet, allow_none=True)
    total_discounts = _Amount(allow_none=True)
    total_discounts_set = fields.Nested(_MoneySet, allow_none=True)
    total_shipping_price_set = fields.Nested(_MoneySet, allow_none=True)
    discount_codes = fields.List(fields.Nested(_DiscountCode), allow_none=True)
    line_items = fields.List(fields.Nested(_Line), allow_none=True)
    payment_gateway_names = fields.List(fields.String(allow_none=True), allow_none=True)
    gateway = fields.String(allow_none=True)
    payment_terms = fields.Nested(_PaymentTerms, allow_none=True)
    customer = fields.Nested(_Customer, allow_none=True)
    refunds = fields.List(fields.Nested(_Refund), allow_none=True)


class _Checkout(_Vendor):
    id = _ShopifyId(allow_none=True)
    token = fields.String(required=True, validate=validate.Length(min=1))
    email = fields.String(allow_none=True)
    created_at = AwareTime(required=True)
    customer = fields.Nested(_Customer, allow_none=True)


class _CustomerPayload(_Customer):
    id = _ShopifyId(required=True)


class _ComplianceCustomer(_Vendor):
    id = _ShopifyId(allow_none=True)
    email = fields.String(allow_none=True)


class _Compliance(_Vendor):
    shop_domain = fields.String(allow_none=True)
    customer = fields.Nested(_ComplianceCustomer, allow_none=True)


_ORDER, _REFUND, _CUSTOMER, _CHECKOUT, _COMPLIANCE = _Order(), _Refund(), _CustomerPayload(), _Checkout(), _Compliance()


# ================================================================ mapping helpers
def _cents(amount: Decimal | None) -> str | None:
    """Our money spelling; Shopify amounts are non-negative with at most the currency's decimals."""
    if amount is None or amount < 0:
        return None
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def _shop_money(money_set: Mapping[str, Any] | None, fallback: Decimal | None = None) -> Decimal | None:
    """The shop-currency amount of a ``*_set`` (the shop's own money), else the plain field."""
    shop = (money_set or {}).get("shop_money") or {}
    amount = shop.get("amount")
    return amount if amount is not None else fallback


def _valid_email(value: str | None) -> str | None:
    """The e-mail if our event schema will accept it; a bad one is dropped, not fatal."""
    if not value or len(value) > 320:
        return None
    try:
        _EMAIL(value.strip())
    except ValidationError:
        return None
    return value.strip()


def _split_tags(value: str | None) -> list[str]:
    """Shopify's comma-separated tag string as a list (tags too long for our schema are dropped)."""
    tags = [t.strip() for t in (value or "").split(",")]
    return [t for t in dict.fromkeys(tags) if t and len(t) <= MAX_ID][:250]


def _gid(kind: str, shop_id: str) -> str:
    return f"gid://shopify/{kind}/{shop_id}"


def _legacy_id(gid: str | None) -> str | None:
    """``gid://shopify/Refund/123`` → ``"123"`` (what REST webhooks call the id)."""
    if not gid:
        return None
    return gid.rsplit("/", 1)[-1] or None


def _account_id(customer_id: str | None) -> str | None:
    """The Shopify customer id behind one of our customer ids; None for guests and redacted ids."""
    if customer_id and customer_id.isdigit():
        return customer_id
    return None


def _customer_info(c: Mapping[str, Any]) -> dict[str, Any]:
    """The ``customer`` object of a customer event."""
    info: dict[str, Any] = {}
    email = _valid_email(c.get("email"))
    if email:
        info["email"] = email
    if "tags" in c:
        info["tags"] = _split_tags(c.get("tags"))
    consent = c.get("email_marketing_consent")
    if consent is not None and consent.get("state"):
        info["accepts_marketing"] = consent["state"].lower() == "subscribed"
    elif c.get("accepts_marketing") is not None:
        info["accepts_marketing"] = bool(c["accepts_marketing"])
    locale = c.get("locale")
    if locale and 2 <= len(locale) <= 35:
        info["locale"] = locale
    return info


def _order_customer_id(o: Mapping[str, Any]) -> tuple[str, str | None]:
    """(customer id, guest e-mail): the account when there is one, else the guest id."""
    customer = o.get("customer") or {}
    if customer.get("id"):
        return str(customer["id"]), None
    email = _valid_email(o.get("email") or o.get("contact_email") or customer.get("email"))
    return guest_id(email, str(o["id"])), email


def _payment_method(o: Mapping[str, Any]) -> str:
    gateways = [g for g in (o.get("payment_gateway_names") or []) if g] or ([o["gateway"]] if o.get("gateway") else [])
    if gateways and all(g.lower() == "gift_card" for g in gateways):
        return "gift_card"
    return "card"


def _has_terms(o: Mapping[str, Any]) -> bool:
    return bool(o.get("payment_terms"))


def _order_time(o: Mapping[str, Any]) -> datetime:
    when = o.get("processed_at") or o.get("created_at")
    if when is None:
        raise BadRequest(f"order {o['id']} has neither processed_at nor created_at")
    return when


def _order_body(o: Mapping[str, Any], payment: dict[str, Any]) -> dict[str, Any]:
    """The ``order`` object of an order-creating event (order_paid / order_placed)."""
    total = _shop_money(o.get("total_price_set"), o.get("total_price"))
    money = o.get("total_price_set") or {}
    currency = ((money.get("shop_money") or {}).get("currency_code") or o.get("currency") or "").upper()
    body: dict[str, Any] = {"id": str(o["id"]), "total": _cents(total), "currency": currency or None,
                            "discount_total": _cents(_shop_money(o.get("total_discounts_set"),
                                                                 o.get("total_discounts"))),
                            "shipping": _cents(_shop_money(o.get("total_shipping_price_set")))}
    codes = [d["code"][:MAX_ID] for d in o.get("discount_codes") or [] if d.get("code")]
    if codes:
        body["discount_codes"] = codes[:100]
    body["payment"] = payment
    lines = []
    for li in o.get("line_items") or []:
        quantity = li.get("quantity")
        if not quantity or quantity < 1:
            continue
        line: dict[str, Any] = {"quantity": quantity}
        if li.get("sku"):
            line["sku"] = li["sku"][:MAX_ID]
        price = _cents(_shop_money(li.get("price_set"), li.get("price")))
        if price is not None:
            line["price"] = price
        if li.get("gift_card") is not None:
            line["gift_card"] = bool(li["gift_card"])
        lines.append(line)
    if lines:
        body["lines"] = lines[:1000]
    return {k: v for k, v in body.items() if v is not None}


def _with_guest(event: dict[str, Any], email: str | None) -> dict[str, Any]:
    """A guest's order events keep the e-mail, the key to link them to an account later."""
    if email:
        event["customer"] = {"email": email}
    return event


def order_paid_event(o: Mapping[str, Any]) -> dict[str, Any]:
    customer_id, email = _order_customer_id(o)
    return _with_guest({"id": f"shopify:order:{o['id']}:paid", "type": "order_paid", "customer_id": customer_id,
                        "occurred_at": format_time(_order_time(o)),
                        "order": _order_body(o, {"method": _payment_method(o)})}, email)


def order_placed_event(o: Mapping[str, Any]) -> dict[str, Any]:
    """An order bought on payment terms: placed, unpaid, due later."""
    customer_id, email = _order_customer_id(o)
    payment: dict[str, Any] = {"method": "terms"}
    terms = o.get("payment_terms") or {}
    dues = [s["due_at"] for s in terms.get("payment_schedules") or [] if s.get("due_at")]
    if dues:
        payment["due_at"] = format_time(min(dues))
    return _with_guest({"id": f"shopify:order:{o['id']}:placed", "type": "order_placed", "customer_id": customer_id,
                        "occurred_at": format_time(_order_time(o)), "order": _order_body(o, payment)}, email)


def order_cancelled_event(o: Mapping[str, Any]) -> dict[str, Any]:
    customer_id, _ = _order_customer_id(o)
    return {"id": f"shopify:order:{o['id']}:cancelled", "type": "order_cancelled", "customer_id": customer_id,
            "occurred_at": format_time(o["cancelled_at"]), "order": {"id": str(o["id"])}}


def refund_amount(refund: Mapping[str, Any]) -> Decimal:
    """What the refund returned: successful ``kind=refund`` transactions only (refunds/create also
    fires for restocks and failed attempts, where no money moved)."""
    total = Decimal(0)
    for tx in refund.get("transactions") or []:
        if (tx.get("kind") or "").lower() == "refund" and (tx.get("status") or "").lower() == "success":
            total += _shop_money(tx.get("amount_set"), tx.get("amount")) or Decimal(0)
    return total


def order_refunded_event(refund: Mapping[str, Any], customer_id: str, order_id: str) -> dict[str, Any] | None:
    """None when the refund moved no money."""
    amount = refund_amount(refund)
    if amount <= 0:
        return None
    when = refund.get("created_at") or refund.get("processed_at")
    if when is None:
        raise BadRequest(f"refund {refund['id']} has no created_at")
    body: dict[str, Any] = {"id": str(refund["id"]), "amount": _cents(amount)}
    if refund.get("note"):
        body["reason"] = refund["note"][:1000]
    return {"id": f"shopify:refund:{refund['id']}", "type": "order_refunded", "customer_id": customer_id,
            "occurred_at": format_time(when), "order": {"id": order_id}, "refund": body}


def order_state_events(o: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every event an order's current state implies (orders/updated, sync).

    Ids are the same as the specific topics', so a state seen twice (or by a webhook and a sync)
    is a duplicate, never a second payment.
    """
    out: list[dict[str, Any]] = []
    status = (o.get("financial_status") or "").lower()
    if status in PAID_STATUSES:
        out.append(order_paid_event(o))
    elif _has_terms(o) and not o.get("cancelled_at"):
        out.append(order_placed_event(o))
    if o.get("cancelled_at"):
        out.append(order_cancelled_event(o))
    out += _order_refunds(o)
    return out


def _order_refunds(o: Mapping[str, Any]) -> list[dict[str, Any]]:
    customer_id, _ = _order_customer_id(o)
    events = [order_refunded_event(r, customer_id, str(o["id"])) for r in o.get("refunds") or []]
    return [e for e in events if e is not None]


def customer_events(c: Mapping[str, Any], *, created: bool, updated: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    info = _customer_info(c)
    cid = str(c["id"])
    if created:
        if c.get("created_at") is None:
            raise BadRequest(f"customer {cid} has no created_at")
        out.append({"id": f"shopify:customer:{cid}:created", "type": "customer_created", "customer_id": cid,
                    "occurred_at": format_time(c["created_at"]), "customer": info})
    if updated:
        when = c.get("updated_at") or c.get("created_at")
        if when is None:
            raise BadRequest(f"customer {cid} has no updated_at")
        stamp = format_time(when)
        out.append({"id": f"shopify:customer:{cid}:updated:{stamp}", "type": "customer_updated", "customer_id": cid,
                    "occurred_at": stamp, "customer": info})
    for event in out:
        if not event["customer"]:
            del event["customer"]
    return out


def _customer_links(c: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """An account with an e-mail claims the guest sales made with that e-mail."""
    email = _valid_email(c.get("email"))
    return ((guest_id(email), str(c["id"])),) if email else ()


# ================================================================ GraphQL documents
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

TAGS_ADD = """mutation tagsAdd($id: ID!, $tags: [String!]!) {
  tagsAdd(id: $id, tags: $tags) {
    node { id }
    userErrors { field message }
  }
}"""

TAGS_REMOVE = """mutation tagsRemove($id: ID!, $tags: [String!]!) {
  tagsRemove(id: $id, tags: $tags) {
    node { id }
    userErrors { field message }
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


def _nodes(conn: Any) -> list[Any]:
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
        "id": node.get("legacyResourceId") or _legacy_id(node.get("id")),
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
    order_id = node.get("legacyResourceId") or _legacy_id(node.get("id"))
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
            "payment_schedules": [{"due_at": s.get("dueAt")} for s in _nodes(terms.get("paymentSchedules"))]},
        "customer": None if not customer else {"id": customer.get("legacyResourceId") or _legacy_id(customer.get("id")),
                                               "email": customer.get("email")},
        "line_items": [{"sku": li.get("sku"), "quantity": li.get("quantity"), "gift_card": li.get("isGiftCard"),
                        "price_set": _money_set(li.get("originalUnitPriceSet"))}
                       for li in _nodes(node.get("lineItems"))],
        "refunds": [{"id": _legacy_id(r.get("id")), "order_id": order_id, "created_at": r.get("createdAt"),
                     "note": r.get("note"),
                     "transactions": [{"id": _legacy_id(t.get("id")), "kind": (t.get("kind") or "").lower(),
                                       "status": (t.get("status") or "").lower(),
                                       "amount_set": _money_set(t.get("amountSet"))}
                                      for t in _nodes(r.get("transactions"))]}
                    for r in _nodes(node.get("refunds"))],
    }


# ================================================================ the adapter
class ShopifyAdapter(Adapter):
    """One Shopify shop: webhooks in, Admin GraphQL out."""

    platform: ClassVar[str] = "shopify"
    capabilities: ClassVar[tuple[str, ...]] = ("discount_codes", "tags", "store_credit", "payment_terms")

    #: Optional: order id → our customer id, from our own ledger (set by the inbox).  refunds/create
    #: names the order but not its customer; without a lookup the adapter asks the Admin API.
    order_owner_lookup: Callable[[str], str | None] | None = None

    # injectable for tests: the clock of discount start times, and sync's throttle wait
    @staticmethod
    def now() -> datetime:
        return datetime.now(timezone.utc)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)

    # ------------------------------------------------------------ inbound
    @classmethod
    def shop_hint(cls, headers: Mapping[str, str]) -> str | None:
        return get_header(headers, "X-Shopify-Shop-Domain") or None

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        if not verify_hmac_base64(get_header(headers, "X-Shopify-Hmac-Sha256"), body, self.secrets):
            raise SignatureError("missing or invalid X-Shopify-Hmac-Sha256 signature")

    def delivery_id(self, headers: Mapping[str, str], body: bytes) -> str | None:
        return get_header(headers, "X-Shopify-Webhook-Id") or get_header(headers, "X-Shopify-Event-Id") or None

    def topic(self, headers: Mapping[str, str], body: bytes) -> str:
        return (get_header(headers, "X-Shopify-Topic") or "").strip().lower()

    def parse(self, topic: str, headers: Mapping[str, str], body: bytes) -> Inbound:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadRequest(f"Shopify {topic} webhook: the body is not JSON") from None
        if not isinstance(data, dict):
            raise BadRequest(f"Shopify {topic} webhook: expected a JSON object")
        handler = self._HANDLERS.get(topic)
        if handler is None:
            return Inbound(note="topic not handled")
        return handler(self, data)

    @staticmethod
    def _load(schema: Schema, data: Mapping[str, Any], what: str) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = schema.load(data)
        except ValidationError as exc:
            raise BadRequest(f"malformed Shopify {what} payload", exc.normalized_messages()) from None
        return loaded

    def _orders_create(self, data: Mapping[str, Any]) -> Inbound:
        o = self._load(_ORDER, data, "order")
        if (o.get("financial_status") or "").lower() == "paid":
            return Inbound(events=(order_paid_event(o),))
        if _has_terms(o):
            return Inbound(events=(order_placed_event(o),))
        return Inbound(note=f"{o.get('financial_status') or 'unpaid'} order: waits for orders/paid")

    def _orders_paid(self, data: Mapping[str, Any]) -> Inbound:
        return Inbound(events=(order_paid_event(self._load(_ORDER, data, "order")),))

    def _orders_updated(self, data: Mapping[str, Any]) -> Inbound:
        o = self._load(_ORDER, data, "order")
        events = order_state_events(o)
        return Inbound(events=tuple(events), note="" if events else "no paid, cancelled or refunded state yet")

    def _orders_cancelled(self, data: Mapping[str, Any]) -> Inbound:
        o = self._load(_ORDER, data, "order")
        if o.get("cancelled_at") is None:
            raise BadRequest(f"orders/cancelled for order {o['id']} without cancelled_at")
        # its refunds carry the same ids as refunds/create, so whichever comes first counts
        return Inbound(events=(order_cancelled_event(o), *_order_refunds(o)))

    def _refunds_create(self, data: Mapping[str, Any]) -> Inbound:
        r = self._load(_REFUND, data, "refund")
        if refund_amount(r) <= 0:
            return Inbound(note="no money moved: no successful refund transaction")
        order_id = r.get("order_id")
        if not order_id:
            raise BadRequest(f"refund {r['id']} names no order_id")
        event = order_refunded_event(r, self.order_owner(order_id), order_id)
        return Inbound(events=(event,) if event else ())

    def _customers_create(self, data: Mapping[str, Any]) -> Inbound:
        c = self._load(_CUSTOMER, data, "customer")
        return Inbound(events=tuple(customer_events(c, created=True, updated=False)), links=_customer_links(c))

    def _customers_update(self, data: Mapping[str, Any]) -> Inbound:
        c = self._load(_CUSTOMER, data, "customer")
        return Inbound(events=tuple(customer_events(c, created=False, updated=True)), links=_customer_links(c))

    def _checkouts_create(self, data: Mapping[str, Any]) -> Inbound:
        co = self._load(_CHECKOUT, data, "checkout")
        customer = co.get("customer") or {}
        email = _valid_email(co.get("email") or customer.get("email"))
        if customer.get("id"):
            customer_id = str(customer["id"])
        elif email:
            customer_id = guest_id(email)
        else:
            return Inbound(note="anonymous checkout: no customer and no e-mail")
        event: dict[str, Any] = {"id": f"shopify:checkout:{co['token']}", "type": "checkout_started",
                                 "customer_id": customer_id, "occurred_at": format_time(co["created_at"])}
        return Inbound(events=(_with_guest(event, email),))

    def _compliance_customer(self, data: Mapping[str, Any]) -> str:
        payload = self._load(_COMPLIANCE, data, "compliance")
        customer = payload.get("customer") or {}
        if customer.get("id"):
            return str(customer["id"])
        email = _valid_email(customer.get("email"))
        if email:
            return guest_id(email)
        raise BadRequest("compliance webhook names no customer id or e-mail")

    def _data_request(self, data: Mapping[str, Any]) -> Inbound:
        return Inbound(data_request=self._compliance_customer(data))

    def _customers_redact(self, data: Mapping[str, Any]) -> Inbound:
        return Inbound(redact_customer=self._compliance_customer(data))

    def _shop_redact(self, data: Mapping[str, Any]) -> Inbound:
        return Inbound(redact_shop=True)

    _HANDLERS: ClassVar[dict[str, Callable[[ShopifyAdapter, Mapping[str, Any]], Inbound]]] = {
        "orders/create": _orders_create,
        "orders/paid": _orders_paid,
        "orders/updated": _orders_updated,
        "orders/cancelled": _orders_cancelled,
        "refunds/create": _refunds_create,
        "customers/create": _customers_create,
        "customers/update": _customers_update,
        "checkouts/create": _checkouts_create,
        "customers/data_request": _data_request,
        "customers/redact": _customers_redact,
        "shop/redact": _shop_redact,
    }

    def order_owner(self, order_id: str) -> str:
        """Our customer id of an order: from the ledger lookup when set, else the Admin API."""
        if self.order_owner_lookup is not None:
            found = self.order_owner_lookup(order_id)
            if found:
                return found
        data = self._graphql(ORDER_OWNER, {"id": _gid("Order", order_id)})
        order = data.get("order")
        if not order:
            # deleted or never visible to us: keep the refund under the order, as a guest sale is
            return guest_id(None, order_id)
        return _order_customer_id({"id": order_id, "email": order.get("email"),
                                   "customer": {"id": (order.get("customer") or {}).get("legacyResourceId"),
                                                "email": (order.get("customer") or {}).get("email")}})[0]

    # ------------------------------------------------------------ outbound
    @property
    def graphql_url(self) -> str:
        if not self.shop.api_url or not self.shop.api_version:
            raise NotSupported(f"shop {self.shop.id} has no api_url/api_version: Shopify calls need manual action")
        return f"{self.shop.api_url.rstrip('/')}/admin/api/{self.shop.api_version}/graphql.json"

    def _graphql(self, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """POST one GraphQL document; the ``data`` object, or our DeliveryError for every failure."""
        url = self.graphql_url
        try:
            resp = self.session.post(
                url, json={"query": query, "variables": dict(variables)},
                headers={"X-Shopify-Access-Token": self.shop.access_token or "", "Accept": "application/json"},
                timeout=(min(CONNECT_TIMEOUT, self.timeout), self.timeout))
        except requests.Timeout as exc:
            raise Unavailable(f"Shopify did not answer in time: {exc}") from None
        except requests.RequestException as exc:
            raise Unavailable(f"Shopify could not be reached: {exc}") from None
        if resp.status_code == 429:
            raise RateLimited("Shopify rate limit (HTTP 429)", _retry_after(resp.headers.get("Retry-After")))
        if resp.status_code >= 500:
            raise Unavailable(f"Shopify answered HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise Rejected(f"Shopify refused the request (HTTP {resp.status_code}): {_http_message(resp)}",
                           {"status": resp.status_code})
        try:
            payload = resp.json()
        except ValueError:
            raise Unavailable(f"Shopify answered HTTP {resp.status_code} without JSON") from None
        if not isinstance(payload, dict):
            raise Unavailable("Shopify answered an unexpected JSON document")
        errors = payload.get("errors")
        if errors:
            _raise_graphql_errors(errors, payload.get("extensions") or {})
        data = payload.get("data")
        if not isinstance(data, dict):
            raise Unavailable("Shopify answered without data")
        return data

    def _mutate(self, name: str, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """A mutation's result object; ``userErrors`` (HTTP 200) are a permanent refusal."""
        result = self._graphql(query, variables).get(name)
        if not isinstance(result, dict):
            raise Unavailable(f"Shopify answered {name} without a result")
        user_errors = result.get("userErrors") or []
        if user_errors:
            messages = [f"{'.'.join(str(f) for f in e.get('field') or []) or name}: {e.get('message')}"
                        for e in user_errors]
            raise Rejected(f"Shopify rejected {name}: " + "; ".join(messages), {"userErrors": user_errors})
        return result

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        award = delivery.award
        kind = award.get("type")
        params = award.get("params") or {}
        if kind == "discount":
            return self._grant_discount(delivery) if delivery.action == "grant" else self._revoke_discount(delivery)
        if kind == "tag" or (kind == "vip_service" and params.get("tag")):
            return self._tag(delivery, params["tag"], add=delivery.action == "grant")
        raise NotSupported(f"a {kind} reward needs manual action in Shopify (not delivered automatically)")

    def _customer_gid(self, delivery: Delivery, what: str) -> str:
        customer_id = (delivery.customer or {}).get("customer_id") or delivery.award.get("customer_id")
        account = _account_id(str(customer_id) if customer_id is not None else None)
        if account is None:
            raise NotSupported(f"customer {customer_id} has no Shopify account: {what} needs manual action")
        return _gid("Customer", account)

    def _grant_discount(self, delivery: Delivery) -> DeliveryResult:
        params = delivery.award.get("params") or {}
        customer = self._customer_gid(delivery, "a customer-limited discount code")
        code = params.get("code")
        if not code:
            raise Rejected(f"award {delivery.award.get('key')} has no discount code")
        if params.get("percent") is not None:
            value: dict[str, Any] = {"percentage": float(Decimal(str(params["percent"])) / 100)}
        elif params.get("amount") is not None:
            value = {"discountAmount": {"amount": str(params["amount"]), "appliesOnEachItem": False}}
        else:
            raise Rejected(f"award {delivery.award.get('key')}: a discount needs percent or amount")
        discount: dict[str, Any] = {
            "title": f"{delivery.award.get('reward') or 'Loyalty reward'} {code}",
            "code": code,
            "startsAt": format_time(self.now().replace(microsecond=0)),
            "usageLimit": int(params.get("usage_limit") or 1),
            "appliesOncePerCustomer": True,
            "customerSelection": {"customers": {"add": [customer]}},
            "customerGets": {"value": value, "items": {"all": True}},
        }
        if params.get("expires_at"):
            discount["endsAt"] = params["expires_at"]
        if params.get("minimum_order") is not None:
            discount["minimumRequirement"] = {"subtotal": {"greaterThanOrEqualToSubtotal":
                                                           str(params["minimum_order"])}}
        try:
            result = self._mutate("discountCodeBasicCreate", DISCOUNT_CREATE, {"basicCodeDiscount": discount})
        except Rejected as exc:
            if "unique" not in exc.message.lower():
                raise
            # A retry after a timeout whose request did succeed: the code exists already. Our codes
            # are derived from the award key, so an existing code with this name is this award's.
            existing = self._graphql(DISCOUNT_BY_CODE, {"code": code}).get("codeDiscountNodeByCode")
            if existing and existing.get("id"):
                return DeliveryResult(external_id=existing["id"], detail=f"discount code {code} (already created)")
            raise
        node = result.get("codeDiscountNode") or {}
        if not node.get("id"):
            raise Unavailable("Shopify created no discount and named no error")
        return DeliveryResult(external_id=node["id"], detail=f"discount code {code}")

    def _revoke_discount(self, delivery: Delivery) -> DeliveryResult:
        target = delivery.external_id
        if not target:
            # the grant's result was not kept: find the code we created, if any
            code = (delivery.award.get("params") or {}).get("code")
            found = self._graphql(DISCOUNT_BY_CODE, {"code": code}).get("codeDiscountNodeByCode") if code else None
            if not found:
                return DeliveryResult(external_id=None, detail="no discount to delete")
            target = found["id"]
        result = self._mutate("discountCodeDelete", DISCOUNT_DELETE, {"id": target})
        return DeliveryResult(external_id=result.get("deletedCodeDiscountId") or target, detail="discount deleted")

    def _tag(self, delivery: Delivery, tag: str, *, add: bool) -> DeliveryResult:
        customer = self._customer_gid(delivery, f"the tag {tag!r}")
        name, query = ("tagsAdd", TAGS_ADD) if add else ("tagsRemove", TAGS_REMOVE)
        result = self._mutate(name, query, {"id": customer, "tags": [tag]})
        node = result.get("node") or {}
        return DeliveryResult(external_id=node.get("id") or customer,
                              detail=f"tag {tag!r} {'added' if add else 'removed'}")

    # ------------------------------------------------------------ sync
    def sync(self, since: datetime | None, progress: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
        """Customers, then orders, updated since ``since`` (all when None), as generic events.

        Pages of ``PAGE_SIZE`` through GraphQL cursors; ``progress`` hears one line per page.
        A throttled page is retried after the wait Shopify names.
        """
        search = None if since is None else f"updated_at:>='{format_time(since)}'"
        for node in self._pages("customers", CUSTOMERS_PAGE, search, progress):
            c = self._load(_CUSTOMER, customer_from_graphql(node), "customer")
            created = c.get("created_at")
            updated = c.get("updated_at")
            yield from customer_events(c, created=True, updated=bool(updated and created and updated > created))
        for node in self._pages("orders", ORDERS_PAGE, search, progress):
            yield from order_state_events(self._load(_ORDER, order_from_graphql(node), "order"))

    def _pages(self, field: str, query: str, search: str | None,
               progress: Callable[[str], None] | None) -> Iterator[Mapping[str, Any]]:
        cursor: str | None = None
        page = 0
        while True:
            variables: dict[str, Any] = {"first": PAGE_SIZE, "after": cursor, "query": search}
            conn = self._throttled(query, variables).get(field) or {}
            nodes = _nodes(conn)
            page += 1
            if progress is not None:
                progress(f"{field}: page {page}, {len(nodes)} records")
            yield from nodes
            info = conn.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                return
            cursor = info["endCursor"]

    def _throttled(self, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        for attempt in range(SYNC_THROTTLE_RETRIES + 1):
            try:
                return self._graphql(query, variables)
            except RateLimited as exc:
                if attempt == SYNC_THROTTLE_RETRIES:
                    raise
                self.sleep(exc.retry_after or DEFAULT_RETRY_AFTER)
        raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------- error translation
def _retry_after(value: str | None) -> float:
    return retry_after_seconds(value, DEFAULT_RETRY_AFTER)


def _http_message(resp: requests.Response) -> str:
    """The shop's own words for a refused request (``{"errors": …}``), else the body's start."""
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "").strip()[:500]
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, str):
        return errors
    if isinstance(errors, list):
        return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
    if isinstance(errors, dict):
        return "; ".join(f"{k}: {v}" for k, v in errors.items())
    return json.dumps(body)[:500]


def _raise_graphql_errors(errors: Sequence[Any], extensions: Mapping[str, Any]) -> None:
    codes = [((e.get("extensions") or {}).get("code") if isinstance(e, dict) else None) for e in errors]
    messages = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
    if "THROTTLED" in codes:
        raise RateLimited(f"Shopify GraphQL throttled: {messages}", _throttle_wait(extensions))
    if "INTERNAL_SERVER_ERROR" in codes:
        raise Unavailable(f"Shopify GraphQL failed: {messages}")
    raise Rejected(f"Shopify GraphQL refused the request: {messages}", {"errors": list(errors)})


def _throttle_wait(extensions: Mapping[str, Any]) -> float:
    """Seconds until the bucket holds the query's cost: (requested − available) / restore rate."""
    cost = extensions.get("cost") or {}
    status = cost.get("throttleStatus") or {}
    try:
        requested = float(cost["requestedQueryCost"])
        available = float(status["currentlyAvailable"])
        rate = float(status["restoreRate"])
    except (KeyError, TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    if rate <= 0:
        return DEFAULT_RETRY_AFTER
    return max((requested - available) / rate, 0.1)
