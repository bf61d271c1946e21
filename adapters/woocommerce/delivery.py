"""Awards → WooCommerce REST calls, by the capability the award's type needs (never by its name):

* ``discount_codes`` (a ``discount``): grant → ``POST /coupons`` restricted to the customer's
  e-mail; external id = the coupon id; revoke → ``DELETE /coupons/<id>?force=true``.
  ``date_expires`` is the award's ``expires_at`` written in the shop's ``timezone`` (WooCommerce
  reads it in the *site's* timezone: keep the two equal).
* ``tags`` (a ``tag``, a ``vip_service`` with a ``tag``) → the customer meta
  ``loyalty_ladder_tags`` (comma-separated), read with ``GET /customers/<id>`` and written with
  ``PUT``.
* no capability, or one without a handler here → ``NotSupported`` (the award needs manual action).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ...errors import NotSupported, Rejected, Unavailable
from ...rewards import registry as reward_types
from ...shop import ShopConfig
from ..base import Delivery, DeliveryResult
from .client import WooClient
from .schemas import split_tags, valid_email, when

__all__ = ["HANDLERS", "TAGS_META_KEY", "coupon_body", "deliver"]

#: the customer meta key that carries our tags (comma-separated)
TAGS_META_KEY = "loyalty_ladder_tags"

#: carries one grant or revoke of an award needing the capability
Handler = Callable[[WooClient, Delivery], DeliveryResult]


def _discount_codes(client: WooClient, delivery: Delivery) -> DeliveryResult:
    if delivery.action == "grant":
        return _create_coupon(client, delivery)
    return _delete_coupon(client, delivery)


def _tags(client: WooClient, delivery: Delivery) -> DeliveryResult:
    tag = str((delivery.award.get("params") or {}).get("tag") or "").strip()
    if not tag:
        raise NotSupported("a tag reward without a tag")
    return _set_tag(client, delivery, tag, add=delivery.action == "grant")


#: capability → handler: what this adapter carries automatically
HANDLERS: dict[str, Handler] = {"discount_codes": _discount_codes, "tags": _tags}


def deliver(client: WooClient, delivery: Delivery) -> DeliveryResult:
    """Carry one grant or revoke by the capability its reward type needs for it."""
    if delivery.action not in ("grant", "revoke"):
        raise NotSupported(f"WooCommerce adapter cannot {delivery.action!r} an award")
    handler = HANDLERS.get(reward_types.capability_of(delivery.award) or "")
    if handler is None:
        raise NotSupported(f"WooCommerce cannot carry a {delivery.award.get('type')!r} reward: deliver it by hand")
    return handler(client, delivery)


def coupon_body(shop: ShopConfig, delivery: Delivery) -> dict[str, Any]:
    """The ``POST /coupons`` body for a discount award (public: the tests match it exactly)."""
    params = delivery.award.get("params") or {}
    email = valid_email(delivery.customer.get("email"))
    if email is None:
        raise NotSupported("a WooCommerce coupon is restricted to the customer's e-mail, and there is none")
    if "percent" in params:
        discount_type, amount = "percent", str(params["percent"])
    elif "amount" in params:
        currency = params.get("currency")
        if currency and currency != shop.currency:
            raise NotSupported(f"a {currency} amount cannot be a coupon in a {shop.currency} shop")
        discount_type, amount = "fixed_cart", str(params["amount"])
    else:
        raise NotSupported("a discount without percent or amount")
    body: dict[str, Any] = {
        "code": params["code"],
        "discount_type": discount_type,
        "amount": amount,
        "individual_use": True,
        "usage_limit": int(params.get("usage_limit") or 1),
        "usage_limit_per_user": 1,
        "email_restrictions": [email],
        "description": f"loyalty-ladder {delivery.award.get('key', '')}".strip(),
    }
    if params.get("expires_at"):
        expires = when(str(params["expires_at"]))
        # WooCommerce reads date_expires in the site's timezone: write it in the shop's
        body["date_expires"] = expires.astimezone(shop.zone).strftime("%Y-%m-%dT%H:%M:%S")
    if params.get("minimum_order") is not None:
        body["minimum_amount"] = str(params["minimum_order"])
    return body


def _create_coupon(client: WooClient, delivery: Delivery) -> DeliveryResult:
    body = coupon_body(client.shop, delivery)
    try:
        response = client.call("POST", "coupons", body=body)
    except Rejected as exc:
        if exc.errors.get("code") != "woocommerce_rest_coupon_code_already_exists":
            raise
        # an earlier attempt created it but its answer was lost (timeout): the code is
        # deterministic per award, so the existing coupon is ours
        found = client.json(client.call("GET", "coupons", params={"code": body["code"]}), "GET coupons")
        if not found:
            raise
        return DeliveryResult(external_id=str(found[0]["id"]), detail=f"coupon {body['code']} (existed)")
    created = client.json(response, "POST coupons")
    if not isinstance(created, Mapping) or created.get("id") is None:
        raise Unavailable("WooCommerce created no coupon id")
    return DeliveryResult(external_id=str(created["id"]), detail=f"coupon {body['code']}")


def _delete_coupon(client: WooClient, delivery: Delivery) -> DeliveryResult:
    if not delivery.external_id:
        return DeliveryResult(external_id=None, detail="no coupon was created: nothing to delete")
    try:
        client.call("DELETE", f"coupons/{delivery.external_id}", params={"force": "true"})
    except Rejected as exc:
        if exc.errors.get("status") != 404:
            raise
        return DeliveryResult(external_id=delivery.external_id, detail="coupon already gone")
    return DeliveryResult(external_id=delivery.external_id, detail=f"coupon {delivery.external_id} deleted")


def _set_tag(client: WooClient, delivery: Delivery, tag: str, add: bool) -> DeliveryResult:
    customer_id = str(delivery.customer.get("customer_id") or delivery.award.get("customer_id") or "")
    if not customer_id.isdigit():
        raise NotSupported(f"customer {customer_id!r} has no WooCommerce account to tag")
    customer = client.json(client.call("GET", f"customers/{customer_id}"), f"GET customers/{customer_id}")
    current: list[str] = []
    for meta in (customer.get("meta_data") or []) if isinstance(customer, Mapping) else []:
        if isinstance(meta, Mapping) and meta.get("key") == TAGS_META_KEY:
            current = split_tags(meta.get("value"))
    if add:
        wanted = current if tag in current else [*current, tag]
    else:
        wanted = [t for t in current if t != tag]
    if wanted == current:
        return DeliveryResult(external_id=customer_id, detail=f"tag {tag!r} already {'set' if add else 'absent'}")
    client.call("PUT", f"customers/{customer_id}",
               body={"meta_data": [{"key": TAGS_META_KEY, "value": ",".join(wanted)}]})
    return DeliveryResult(external_id=customer_id, detail=f"tag {tag!r} {'added' if add else 'removed'}")
