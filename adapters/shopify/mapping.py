"""Shopify payloads (loaded by :mod:`.schemas`) → our generic events.

Event ids are deterministic (docs/internals.md): ``shopify:customer:<id>:created``,
``shopify:customer:<id>:updated:<updated_at>``, ``shopify:checkout:<token>``,
``shopify:order:<id>:placed|paid|cancelled``, ``shopify:refund:<refund id>``.  Times are the
shop's own (``processed_at``, ``cancelled_at``, the refund's ``created_at``), never the delivery
time, so the same state always maps to the same content.

Money: an order's ``total`` is ``total_price`` in the shop currency (``total_price_set.shop_money``
when present), *not* ``current_total_price``: the latter already subtracts refunds, which reach the
ledger as their own ``order_refunded`` events and would otherwise be counted twice.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from marshmallow import ValidationError, validate

from ...errors import BadRequest
from ...events import MAX_ID, format_time
from ...identity import guest_id

#: the first part of every Shopify event id
PREFIX = "shopify"
#: the order events that name the order's customer (see :func:`order_event_id`)
ORDER_STATES = ("placed", "paid", "cancelled")
CENT = Decimal("0.01")
#: financial statuses of an order whose money was taken (and perhaps returned later: the
#: refunds arrive as their own events, so a refunded order was still paid first)
PAID_STATUSES = frozenset({"paid", "partially_refunded", "refunded"})
_EMAIL = validate.Email()


def order_event_id(order_id: str, state: str) -> str:
    """``shopify:order:<id>:<state>``: one id per order state, so a state seen again is a no-op."""
    return f"{PREFIX}:order:{order_id}:{state}"


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


def valid_email(value: str | None) -> str | None:
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


def gid(kind: str, shop_id: str) -> str:
    return f"gid://shopify/{kind}/{shop_id}"


def legacy_id(gid: str | None) -> str | None:
    """``gid://shopify/Refund/123`` → ``"123"`` (what REST webhooks call the id)."""
    if not gid:
        return None
    return gid.rsplit("/", 1)[-1] or None


def account_id(customer_id: str | None) -> str | None:
    """The Shopify customer id behind one of our customer ids; None for guests and redacted ids."""
    if customer_id and customer_id.isdigit():
        return customer_id
    return None


def _customer_info(c: Mapping[str, Any]) -> dict[str, Any]:
    """The ``customer`` object of a customer event."""
    info: dict[str, Any] = {}
    email = valid_email(c.get("email"))
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


def order_customer_id(o: Mapping[str, Any]) -> tuple[str, str | None]:
    """(customer id, guest e-mail): the account when there is one, else the guest id."""
    customer = o.get("customer") or {}
    if customer.get("id"):
        return str(customer["id"]), None
    email = valid_email(o.get("email") or o.get("contact_email") or customer.get("email"))
    return guest_id(email, str(o["id"])), email


def _payment_method(o: Mapping[str, Any]) -> str:
    gateways = [g for g in (o.get("payment_gateway_names") or []) if g] or ([o["gateway"]] if o.get("gateway") else [])
    if gateways and all(g.lower() == "gift_card" for g in gateways):
        return "gift_card"
    return "card"


def has_terms(o: Mapping[str, Any]) -> bool:
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
    # the tax in the total (Shopify's total_tax counts it whether prices include tax or not): not
    # the shop's money, it earns no points; 0 is left out (an order without it counts as 0)
    tax = _shop_money(o.get("total_tax_set"), o.get("total_tax"))
    if tax is not None and tax > 0:
        body["tax"] = _cents(tax)
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
    customer_id, email = order_customer_id(o)
    return _with_guest({"id": order_event_id(str(o["id"]), "paid"), "type": "order_paid", "customer_id": customer_id,
                        "occurred_at": format_time(_order_time(o)),
                        "order": _order_body(o, {"method": _payment_method(o)})}, email)


def order_placed_event(o: Mapping[str, Any]) -> dict[str, Any]:
    """An order bought on payment terms: placed, unpaid, due later."""
    customer_id, email = order_customer_id(o)
    payment: dict[str, Any] = {"method": "terms"}
    terms = o.get("payment_terms") or {}
    dues = [s["due_at"] for s in terms.get("payment_schedules") or [] if s.get("due_at")]
    if dues:
        payment["due_at"] = format_time(min(dues))
    return _with_guest({"id": order_event_id(str(o["id"]), "placed"), "type": "order_placed", "customer_id": customer_id,
                        "occurred_at": format_time(_order_time(o)), "order": _order_body(o, payment)}, email)


def order_cancelled_event(o: Mapping[str, Any]) -> dict[str, Any]:
    customer_id, _ = order_customer_id(o)
    return {"id": order_event_id(str(o["id"]), "cancelled"), "type": "order_cancelled", "customer_id": customer_id,
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
    return {"id": f"{PREFIX}:refund:{refund['id']}", "type": "order_refunded", "customer_id": customer_id,
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
    elif has_terms(o) and not o.get("cancelled_at"):
        out.append(order_placed_event(o))
    if o.get("cancelled_at"):
        out.append(order_cancelled_event(o))
    out += order_refunds(o)
    return out


def order_refunds(o: Mapping[str, Any]) -> list[dict[str, Any]]:
    customer_id, _ = order_customer_id(o)
    events = [order_refunded_event(r, customer_id, str(o["id"])) for r in o.get("refunds") or []]
    return [e for e in events if e is not None]


def customer_events(c: Mapping[str, Any], *, created: bool, updated: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    info = _customer_info(c)
    cid = str(c["id"])
    if created:
        if c.get("created_at") is None:
            raise BadRequest(f"customer {cid} has no created_at")
        out.append({"id": f"{PREFIX}:customer:{cid}:created", "type": "customer_created", "customer_id": cid,
                    "occurred_at": format_time(c["created_at"]), "customer": info})
    if updated:
        when = c.get("updated_at") or c.get("created_at")
        if when is None:
            raise BadRequest(f"customer {cid} has no updated_at")
        stamp = format_time(when)
        out.append({"id": f"{PREFIX}:customer:{cid}:updated:{stamp}", "type": "customer_updated", "customer_id": cid,
                    "occurred_at": stamp, "customer": info})
    for event in out:
        if not event["customer"]:
            del event["customer"]
    return out


def customer_links(c: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """An account with an e-mail claims the guest sales made with that e-mail."""
    email = valid_email(c.get("email"))
    return ((guest_id(email), str(c["id"])),) if email else ()


def checkout_started_event(co: Mapping[str, Any]) -> dict[str, Any] | None:
    """A started checkout of an account or of an e-mail; None when it names neither."""
    customer = co.get("customer") or {}
    email = valid_email(co.get("email") or customer.get("email"))
    if customer.get("id"):
        customer_id = str(customer["id"])
    elif email:
        customer_id = guest_id(email)
    else:
        return None
    event: dict[str, Any] = {"id": f"{PREFIX}:checkout:{co['token']}", "type": "checkout_started",
                             "customer_id": customer_id, "occurred_at": format_time(co["created_at"])}
    return _with_guest(event, email)
