"""Awards → Admin GraphQL mutations, by the capability the award's type needs (never by its
name): ``discount_codes`` → customer-limited discount codes, ``tags`` → customer tags,
``customer_fields`` → customer metafields.

An award whose type names a customer field (``RewardType.customer_field``: a ``vip_service``'s
``vip``) also writes that field of the delivery's customer document, on a grant and on a revoke
alike, as the JSON metafield ``loyalty_ladder.<field>`` (``metafieldsSet``), or deletes it when
the document's value is null (``metafieldsDelete``): the shop keeps the customer's current value
whichever delivery ran last.  With ``tags`` the tag call comes first.

Tags are delivered as desired state when the delivery's customer document says which ladder tags
the customer holds (``ladder_tags``: ``desired`` among ``managed``, from
:func:`loyalty_ladder.outbox.documents.ladder_tags`): the customer's tags are read
(``customerTags``), the desired ones missing are added and the managed ones not desired removed,
in one ``tagsAdd`` and one ``tagsRemove`` at most — nothing when the shop is already right.  A
grant retried after its own end therefore adds nothing, and a grant and the end of the tag it
replaces ask the shop for each change once.  Without ``ladder_tags`` (a delivery built by hand)
the award's own tag is added or removed.

A grant is idempotent across retries: our codes derive from the award key, so a retry after a
timeout whose request did succeed finds the code it created and adopts it.  An award needing no
capability, or one without a handler here (``payment_terms``), is ``NotSupported`` (the award
needs manual action).

``store_credit`` (a points redemption) → ``storeCreditAccountCredit`` on the customer: the
award's ``value`` in its ``currency``; external id = the credit transaction's id.  Where the shop
cannot hold it — a userError ``UNSUPPORTED_CURRENCY``, or one saying store credit is not
enabled/available — the value becomes a one-time customer-limited fixed-amount code instead
(``params.code``, by the discount path; only in the shop's currency).  A redemption is never taken
back: a revoke is ``Rejected``.

Store credit is not idempotent (the mutation takes no idempotency key and a credit carries no
reference of ours to look for), so nothing ever credits twice:

* a credit whose outcome is unknown — a timeout, a connection error, a 5xx, an answer without a
  transaction — is ``NotSupported`` at once: staff check the customer's store credit in Shopify;
* a later attempt (``delivery.attempt > 1``: after a rate limit, or a run that crashed with the
  credit in flight) never credits: it adopts the redemption's code if an earlier attempt made
  one (only a definite "no store credit" answer leads there, so nothing was credited), else it
  is ``NotSupported`` with the same instruction.  A rate-limited first attempt therefore ends with
  staff too: a retry cannot tell it apart from a lost answer.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ...errors import NotSupported, Rejected, Unavailable
from ...events import format_time
from ...rewards import Kind
from ...rewards import registry as reward_types
from ..base import Delivery, DeliveryResult
from .client import ShopifyClient
from .graphql import (
    CUSTOMER_TAGS,
    DISCOUNT_BY_CODE,
    DISCOUNT_CREATE,
    DISCOUNT_DELETE,
    METAFIELDS_DELETE,
    METAFIELDS_SET,
    STORE_CREDIT_CREDIT,
    TAGS_ADD,
    TAGS_REMOVE,
)
from .mapping import account_id, gid

__all__ = ["HANDLERS", "METAFIELD_NAMESPACE", "deliver", "metafield_value"]

#: the namespace of the customer metafields we write (``loyalty_ladder.vip``)
METAFIELD_NAMESPACE = "loyalty_ladder"

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
    state = (delivery.customer or {}).get("ladder_tags")
    if isinstance(state, Mapping) and "desired" in state and _is_privilege(delivery):
        return _with_customer_field(client, delivery, _desired_tags(client, delivery, state))
    return _with_customer_field(client, delivery, _tag(client, delivery, tag, add=delivery.action == "grant"))


def _customer_fields(client: ShopifyClient, delivery: Delivery, now: datetime) -> DeliveryResult:
    if _field_name(delivery) is None:
        raise NotSupported(f"a {delivery.award.get('type')} reward names no customer field: manual action in Shopify")
    return _with_customer_field(client, delivery, None)


def _store_credit(client: ShopifyClient, delivery: Delivery, now: datetime) -> DeliveryResult:
    if delivery.action != "grant":
        raise Rejected(f"a points redemption is never taken back: refusing to {delivery.action} "
                       f"{delivery.award.get('key')} (nothing changed in Shopify)")
    return _grant_store_credit(client, delivery, now)


#: capability → handler: what this adapter carries automatically
HANDLERS: dict[str, Handler] = {"discount_codes": _discount_codes, "tags": _tags, "store_credit": _store_credit,
                                "customer_fields": _customer_fields}


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


def _is_privilege(delivery: Delivery) -> bool:
    return reward_types.of(str(delivery.award.get("type") or "")).kind == Kind.PRIVILEGE


def _desired_tags(client: ShopifyClient, delivery: Delivery, state: Mapping[str, Any]) -> DeliveryResult:
    """Privileges as desired state: read the customer's tags, add the desired ladder tags they
    lack, remove the managed ones not desired (``tagsAdd`` / ``tagsRemove`` only when something
    differs) — so a grant retried after its own end adds nothing, and every delivery leaves the
    customer with exactly the ladder tags they hold; tags not ours are never touched."""
    customer = _customer_gid(delivery, "ladder tags")
    found = client.query(CUSTOMER_TAGS, {"id": customer}).get("customer")
    if not isinstance(found, Mapping):
        raise Rejected(f"Shopify knows no customer {customer}: its tags cannot be set")
    current = {str(t) for t in found.get("tags") or ()}
    desired = {str(t) for t in state.get("desired") or ()}
    managed = {str(t) for t in state.get("managed") or ()} | desired
    add, remove = sorted(desired - current), sorted((managed & current) - desired)
    if add:
        client.mutate("tagsAdd", TAGS_ADD, {"id": customer, "tags": add})
    if remove:
        client.mutate("tagsRemove", TAGS_REMOVE, {"id": customer, "tags": remove})
    done = [f"added {', '.join(map(repr, add))}"] if add else []
    done += [f"removed {', '.join(map(repr, remove))}"] if remove else []
    now_held = ", ".join(map(repr, sorted(desired))) or "none"
    return DeliveryResult(external_id=found.get("id") or customer,
                          detail=f"ladder tags {'; '.join(done) if done else 'already as desired'} (held: {now_held})")


def _tag(client: ShopifyClient, delivery: Delivery, tag: str, *, add: bool) -> DeliveryResult:
    customer = _customer_gid(delivery, f"the tag {tag!r}")
    name, query = ("tagsAdd", TAGS_ADD) if add else ("tagsRemove", TAGS_REMOVE)
    result = client.mutate(name, query, {"id": customer, "tags": [tag]})
    node = result.get("node") or {}
    return DeliveryResult(external_id=node.get("id") or customer,
                          detail=f"tag {tag!r} {'added' if add else 'removed'}")


# ---------------------------------------------------------------- store credit (points redemptions)
#: userError codes of storeCreditAccountCredit meaning the shop cannot hold this credit at all
NO_STORE_CREDIT_CODES = frozenset({"UNSUPPORTED_CURRENCY"})
#: …and the words of one saying store credit is off for the shop (the enum names no code for it)
_NO_STORE_CREDIT = re.compile(r"store credit\b.*\bnot\b.*\b(enabled|available|supported|activated)\b"
                              r"|\bnot\b.*\b(enabled|available|supported|activated)\b.*\bstore credit", re.IGNORECASE)
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _grant_store_credit(client: ShopifyClient, delivery: Delivery, now: datetime) -> DeliveryResult:
    customer = _customer_gid(delivery, "store credit")
    amount, currency = _credit_money(client, delivery)
    what = _redemption_text(delivery, amount, currency)
    if delivery.attempt > 1:
        return _store_credit_retry(client, delivery, customer, what)
    money = {"amount": str(amount), "currencyCode": currency}
    try:
        result = client.mutate("storeCreditAccountCredit", STORE_CREDIT_CREDIT,
                               {"id": customer, "creditInput": {"creditAmount": money}})
    except Unavailable as exc:
        raise NotSupported(_unknown_outcome(what, customer, exc.message)) from None
    except Rejected as exc:
        why = _no_store_credit(exc)
        if why is None:
            raise
        return _store_credit_as_code(client, delivery, now, amount, currency, what, why)
    transaction = result.get("storeCreditAccountTransaction") or {}
    external_id = transaction.get("id") or (transaction.get("account") or {}).get("id")
    if not external_id:
        raise NotSupported(_unknown_outcome(what, customer, "Shopify answered without a transaction"))
    balance = transaction.get("balanceAfterTransaction") or {}
    after = f"; balance {balance['amount']} {balance.get('currencyCode') or currency}" if balance.get("amount") else ""
    return DeliveryResult(external_id=external_id, detail=f"store credit {what}{after}")


def _credit_money(client: ShopifyClient, delivery: Delivery) -> tuple[Decimal, str]:
    params = delivery.award.get("params") or {}
    raw = delivery.award.get("value") if delivery.award.get("value") is not None else params.get("value")
    try:
        amount = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        amount = Decimal("NaN")
    if not amount.is_finite() or amount <= 0:
        raise Rejected(f"award {delivery.award.get('key')} has no positive value to credit ({raw!r})")
    currency = str(params.get("currency") or client.shop.currency or "")
    if not _CURRENCY.match(currency):
        raise Rejected(f"award {delivery.award.get('key')} has no ISO 4217 currency ({currency!r})")
    return amount, currency


def _redemption_text(delivery: Delivery, amount: Decimal, currency: str) -> str:
    params = delivery.award.get("params") or {}
    about = [f"{params['points']} points" if params.get("points") is not None else "",
             f"redemption {params['redemption']}" if params.get("redemption") else ""]
    about = [a for a in about if a]
    return f"{amount} {currency}" + (f" ({', '.join(about)})" if about else "")


def _unknown_outcome(what: str, customer: str, cause: str) -> str:
    return (f"store credit of {what} for {customer} may or may not have been credited ({cause}); it is never "
            "credited twice automatically: check the customer's store credit in Shopify, credit it by hand if "
            "it is missing, then mark the award done")


def _no_store_credit(exc: Rejected) -> str | None:
    """Shopify's words when the shop cannot hold this credit (so a code carries it), else None."""
    for error in exc.errors.get("userErrors") or ():
        if not isinstance(error, Mapping):
            continue
        message = str(error.get("message") or "")
        if error.get("code") in NO_STORE_CREDIT_CODES or _NO_STORE_CREDIT.search(message):
            return f"Shopify: {message or error.get('code')}"
    return None


def _store_credit_as_code(client: ShopifyClient, delivery: Delivery, now: datetime, amount: Decimal,
                          currency: str, what: str, why: str) -> DeliveryResult:
    """The redemption as a one-time code for the customer, by the discount path (retry-safe)."""
    if currency != client.shop.currency:
        raise NotSupported(f"no store credit for {what} ({why}), and a {currency} amount cannot be a code in a "
                           f"{client.shop.currency} shop: pay it out by hand")
    params = delivery.award.get("params") or {}
    as_code = replace(delivery, award={**delivery.award, "params": {
        "code": params.get("code"), "amount": str(amount), "currency": currency, "usage_limit": 1}})
    result = _grant_discount(client, as_code, now)
    return DeliveryResult(external_id=result.external_id, detail=f"{result.detail} for {what}: no store credit ({why})")


def _store_credit_retry(client: ShopifyClient, delivery: Delivery, customer: str, what: str) -> DeliveryResult:
    """A later attempt: adopt the code an earlier one made, never credit (see the module doc)."""
    code = (delivery.award.get("params") or {}).get("code")
    found = client.query(DISCOUNT_BY_CODE, {"code": code}).get("codeDiscountNodeByCode") if code else None
    if found and found.get("id"):
        return DeliveryResult(external_id=found["id"],
                              detail=f"discount code {code} for {what} (already created: no store credit)")
    raise NotSupported(_unknown_outcome(what, customer, f"attempt {delivery.attempt}: an earlier attempt's "
                                                        "outcome is unknown"))


# ---------------------------------------------------------------- customer fields (metafields)
def _field_name(delivery: Delivery) -> str | None:
    return reward_types.of(str(delivery.award.get("type") or "")).customer_field


def metafield_value(value: Any) -> str:
    """A customer field's value as the JSON text of its metafield (compact, keys sorted)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _with_customer_field(client: ShopifyClient, delivery: Delivery, before: DeliveryResult | None) -> DeliveryResult:
    """Write the award's customer field (if its type names one) after ``before`` (the tag call)."""
    name = _field_name(delivery)
    if name is None:
        assert before is not None
        return before
    customer = _customer_gid(delivery, f"the customer field {name!r}")
    value = (delivery.customer or {}).get(name)
    where = {"ownerId": customer, "namespace": METAFIELD_NAMESPACE, "key": name}
    if value is None:
        client.mutate("metafieldsDelete", METAFIELDS_DELETE, {"metafields": [where]})
        done = f"metafield {METAFIELD_NAMESPACE}.{name} deleted"
    else:
        client.mutate("metafieldsSet", METAFIELDS_SET,
                      {"metafields": [{**where, "type": "json", "value": metafield_value(value)}]})
        done = f"metafield {METAFIELD_NAMESPACE}.{name} set"
    if before is None:
        return DeliveryResult(external_id=customer, detail=done)
    return DeliveryResult(external_id=before.external_id, detail=f"{before.detail}; {done}")
