"""Awards → Admin GraphQL mutations, by the capability the award's type needs (never by its
name): ``discount_codes`` → customer-limited discount codes, ``tags`` → customer tags.

A grant is idempotent across retries: our codes derive from the award key, so a retry after a
timeout whose request did succeed finds the code it created and adopts it.  An award needing no
capability, or one without a handler here (``payment_terms``, ``store_credit``), is
``NotSupported`` (the award needs manual action).
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from ...errors import NotSupported, Rejected, Unavailable
from ...events import format_time
from ...rewards import registry as reward_types
from ..base import Delivery, DeliveryResult
from .client import ShopifyClient
from .graphql import DISCOUNT_BY_CODE, DISCOUNT_CREATE, DISCOUNT_DELETE, TAGS_ADD, TAGS_REMOVE
from .mapping import account_id, gid

__all__ = ["HANDLERS", "deliver"]

#: carries one grant or revoke of an award needing the capability; ``now`` starts a discount
Handler = Callable[[ShopifyClient, Delivery, datetime], DeliveryResult]


def _discount_codes(client: ShopifyClient, delivery: Delivery, now: datetime) -> DeliveryResult:
    if delivery.action == "grant":
        return _grant_discount(client, delivery, now)
    return _revoke_discount(client, delivery)


def _tags(client: ShopifyClient, delivery: Delivery, now: datetime) -> DeliveryResult:
    tag = str((delivery.award.get("params") or {}).get("tag") or "").strip()
    if not tag:
        raise NotSupported(f"a {delivery.award.get('type')} reward without a tag needs manual action in Shopify")
    return _tag(client, delivery, tag, add=delivery.action == "grant")


#: capability → handler: what this adapter carries automatically
HANDLERS: dict[str, Handler] = {"discount_codes": _discount_codes, "tags": _tags}


def deliver(client: ShopifyClient, delivery: Delivery, now: datetime) -> DeliveryResult:
    """Carry one grant or revoke by the capability its reward type needs for it."""
    handler = HANDLERS.get(reward_types.capability_of(delivery.award) or "")
    if handler is None:
        kind = delivery.award.get("type")
        raise NotSupported(f"a {kind} reward needs manual action in Shopify (not delivered automatically)")
    return handler(client, delivery, now)


def _customer_gid(delivery: Delivery, what: str) -> str:
    customer_id = (delivery.customer or {}).get("customer_id") or delivery.award.get("customer_id")
    account = account_id(str(customer_id) if customer_id is not None else None)
    if account is None:
        raise NotSupported(f"customer {customer_id} has no Shopify account: {what} needs manual action")
    return gid("Customer", account)


def _grant_discount(client: ShopifyClient, delivery: Delivery, now: datetime) -> DeliveryResult:
    params = delivery.award.get("params") or {}
    customer = _customer_gid(delivery, "a customer-limited discount code")
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
        "startsAt": format_time(now.replace(microsecond=0)),
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
        result = client.mutate("discountCodeBasicCreate", DISCOUNT_CREATE, {"basicCodeDiscount": discount})
    except Rejected as exc:
        if "unique" not in exc.message.lower():
            raise
        # A retry after a timeout whose request did succeed: the code exists already. Our codes
        # are derived from the award key, so an existing code with this name is this award's.
        existing = client.query(DISCOUNT_BY_CODE, {"code": code}).get("codeDiscountNodeByCode")
        if existing and existing.get("id"):
            return DeliveryResult(external_id=existing["id"], detail=f"discount code {code} (already created)")
        raise
    node = result.get("codeDiscountNode") or {}
    if not node.get("id"):
        raise Unavailable("Shopify created no discount and named no error")
    return DeliveryResult(external_id=node["id"], detail=f"discount code {code}")


def _revoke_discount(client: ShopifyClient, delivery: Delivery) -> DeliveryResult:
    target = delivery.external_id
    if not target:
        # the grant's result was not kept: find the code we created, if any
        code = (delivery.award.get("params") or {}).get("code")
        found = client.query(DISCOUNT_BY_CODE, {"code": code}).get("codeDiscountNodeByCode") if code else None
        if not found:
            return DeliveryResult(external_id=None, detail="no discount to delete")
        target = found["id"]
    result = client.mutate("discountCodeDelete", DISCOUNT_DELETE, {"id": target})
    return DeliveryResult(external_id=result.get("deletedCodeDiscountId") or target, detail="discount deleted")


def _tag(client: ShopifyClient, delivery: Delivery, tag: str, *, add: bool) -> DeliveryResult:
    customer = _customer_gid(delivery, f"the tag {tag!r}")
    name, query = ("tagsAdd", TAGS_ADD) if add else ("tagsRemove", TAGS_REMOVE)
    result = client.mutate(name, query, {"id": customer, "tags": [tag]})
    node = result.get("node") or {}
    return DeliveryResult(external_id=node.get("id") or customer,
                          detail=f"tag {tag!r} {'added' if add else 'removed'}")
