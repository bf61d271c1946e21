"""Awards → WooCommerce REST calls, by the capability the award's type needs (never by its name):

* ``discount_codes`` (a ``discount``): grant → ``POST /coupons`` restricted to the customer's
  e-mail; external id = the coupon id; revoke → ``DELETE /coupons/<id>?force=true``.
  ``date_expires`` is the award's ``expires_at`` written in the shop's ``timezone`` (WooCommerce
  reads it in the *site's* timezone: keep the two equal).
* ``tags`` (a ``tag``, a ``vip_service`` with a ``tag``) → the customer meta
  ``loyalty_ladder_tags`` (comma-separated), read with ``GET /customers/<id>`` and written with
  ``PUT``; as desired state when the delivery's customer document has ``ladder_tags`` (the ladder
  tags the customer holds, among those we manage): a grant retried after its own end adds nothing.
* ``customer_fields`` (a ``vip_service`` without a tag) → the customer meta below, alone.
  An award whose type names a customer field (``RewardType.customer_field``: ``vip``) writes,
  on a grant and on a revoke alike, that field of the delivery's customer document as the meta
  ``loyalty_ladder_<field>`` (JSON text; emptied when the value is null), in the same ``PUT`` as
  its tag: the shop keeps the customer's current value whichever delivery ran last.
* ``store_credit`` (a ``points_redemption``) → a one-time coupon of the award's ``value``:
  ``fixed_cart``, ``usage_limit`` 1, ``usage_limit_per_user`` 1, restricted to the customer's
  e-mail, code = ``params.code``, combinable with other coupons (``individual_use`` false: it is
  the customer's own money); a retry adopts the coupon an earlier attempt created, as for a
  discount.  A redemption is never taken back: a revoke is ``Rejected``.
* no capability, or one without a handler here → ``NotSupported`` (the award needs manual action).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from ...errors import NotSupported, Rejected, Unavailable
from ...rewards import Kind
from ...rewards import registry as reward_types
from ...shop import ShopConfig
from ..base import Delivery, DeliveryResult
from .client import WooClient
from .schemas import split_tags, valid_email, when

__all__ = ["FIELD_META_PREFIX", "HANDLERS", "TAGS_META_KEY", "coupon_body", "deliver", "meta_value"]

#: the customer meta key that carries our tags (comma-separated)
TAGS_META_KEY = "loyalty_ladder_tags"
#: a customer field's meta key is this + the field's name (``loyalty_ladder_vip``)
FIELD_META_PREFIX = "loyalty_ladder_"

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


def _customer_fields(client: WooClient, delivery: Delivery) -> DeliveryResult:
    if _field_name(delivery) is None:
        raise NotSupported(f"a {delivery.award.get('type')!r} reward names no customer field: deliver it by hand")
    return _set_tag(client, delivery, None, add=delivery.action == "grant")


def _store_credit(client: WooClient, delivery: Delivery) -> DeliveryResult:
    if delivery.action != "grant":
        raise Rejected(f"a points redemption is never taken back: refusing to {delivery.action} "
                       f"{delivery.award.get('key')} (nothing changed in WooCommerce)")
    return _redemption_coupon(client, delivery)


#: capability → handler: what this adapter carries automatically
HANDLERS: dict[str, Handler] = {"discount_codes": _discount_codes, "tags": _tags, "store_credit": _store_credit,
                                "customer_fields": _customer_fields}


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


def _create_coupon(client: WooClient, delivery: Delivery, body: dict[str, Any] | None = None) -> DeliveryResult:
    body = body or coupon_body(client.shop, delivery)
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


def _field_name(delivery: Delivery) -> str | None:
    return reward_types.of(str(delivery.award.get("type") or "")).customer_field


def meta_value(value: Any) -> str:
    """A customer field's value as its meta's JSON text (compact, keys sorted); null → ``""``."""
    return "" if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _set_tag(client: WooClient, delivery: Delivery, tag: str | None, add: bool) -> DeliveryResult:
    """Add or remove ``tag`` (None: no tag) and write the award's customer field, if its type
    names one: one ``GET``, and one ``PUT`` with the meta that changed (none when nothing did)."""
    customer_id = str(delivery.customer.get("customer_id") or delivery.award.get("customer_id") or "")
    if not customer_id.isdigit():
        raise NotSupported(f"customer {customer_id!r} has no WooCommerce account to tag")
    customer = client.json(client.call("GET", f"customers/{customer_id}"), f"GET customers/{customer_id}")
    stored: dict[str, Any] = {}
    for meta in (customer.get("meta_data") or []) if isinstance(customer, Mapping) else []:
        if isinstance(meta, Mapping) and isinstance(meta.get("key"), str):
            stored[meta["key"]] = meta.get("value")
    changes: list[dict[str, str]] = []
    done: list[str] = []
    state = delivery.customer.get("ladder_tags")
    if reward_types.of(str(delivery.award.get("type") or "")).kind != Kind.PRIVILEGE:
        state = None  # a grant that carries a tag adds (or, reversed, removes) its own tag
    if tag is not None:
        current = split_tags(stored.get(TAGS_META_KEY))
        if isinstance(state, Mapping) and "desired" in state:
            # desired state: the ladder tags the customer holds, among those we manage; others stay
            desired = [str(t) for t in state.get("desired") or ()]
            managed = {str(t) for t in state.get("managed") or ()} | set(desired)
            kept = [t for t in current if t not in managed or t in desired]
            wanted = [*kept, *(t for t in desired if t not in kept)]
        else:
            wanted = (current if tag in current else [*current, tag]) if add else [t for t in current if t != tag]
        if wanted == current:
            done.append("ladder tags already as desired" if isinstance(state, Mapping) and "desired" in state
                        else f"tag {tag!r} already {'set' if add else 'absent'}")
        else:
            changes.append({"key": TAGS_META_KEY, "value": ",".join(wanted)})
            added, removed = [t for t in wanted if t not in current], [t for t in current if t not in wanted]
            done.append(", ".join([*(f"tag {t!r} added" for t in added), *(f"tag {t!r} removed" for t in removed)]))
    name = _field_name(delivery)
    if name is not None:
        key, text = FIELD_META_PREFIX + name, meta_value(delivery.customer.get(name))
        if str(stored.get(key) or "") == text:
            done.append(f"meta {key} already {'written' if text else 'empty'}")
        else:
            changes.append({"key": key, "value": text})
            done.append(f"meta {key} {'written' if text else 'emptied'}")
    if changes:
        client.call("PUT", f"customers/{customer_id}", body={"meta_data": changes})
    return DeliveryResult(external_id=customer_id, detail="; ".join(done))


def _redemption_coupon(client: WooClient, delivery: Delivery) -> DeliveryResult:
    """A points redemption as a one-time coupon, through the discount's coupon path."""
    award = delivery.award
    params = award.get("params") or {}
    raw = award.get("value") if award.get("value") is not None else params.get("value")
    try:
        value = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        value = Decimal("NaN")
    if not value.is_finite() or value <= 0:
        raise Rejected(f"award {award.get('key')} has no positive value to pay out ({raw!r})")
    if not params.get("code"):
        raise Rejected(f"award {award.get('key')} has no code for its coupon")
    currency = params.get("currency") or client.shop.currency
    as_coupon = replace(delivery, award={**award, "params": {
        "code": params["code"], "amount": str(value), "currency": currency, "usage_limit": 1}})
    body = coupon_body(client.shop, as_coupon)
    body["individual_use"] = False
    result = _create_coupon(client, as_coupon, body)
    about = ", ".join(part for part in (f"{params['points']} points" if params.get("points") is not None else "",
                                        f"redemption {params['redemption']}" if params.get("redemption") else "")
                      if part)
    return DeliveryResult(external_id=result.external_id,
                          detail=f"{result.detail} for {value} {currency}" + (f" ({about})" if about else ""))
