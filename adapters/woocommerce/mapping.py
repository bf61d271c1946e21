"""WooCommerce payloads (loaded by :mod:`.schemas`) → our generic events.

One id per fact, so the same state always maps to the same events (the status mapping is in the
package docstring): ``woo:order:<id>:paid|cancelled|refunded``,
``woo:order:<id>:restored|deleted:<date_modified_gmt>``, ``woo:refund:<refund id>``,
``woo:customer:<id>:created|deleted``, ``woo:customer:<id>:updated:<date_modified_gmt>``.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from ...identity import guest_id
from .schemas import gmt, iso, money, valid_email, when

#: the first part of every WooCommerce event id
PREFIX = "woo"
#: the order events that name the order's customer (see :func:`order_event_id`)
ORDER_STATES = ("placed", "paid", "cancelled")
#: payment methods that are not a card payment
OFFLINE_METHODS = frozenset({"cod", "bacs", "cheque"})
PAID_STATUSES = frozenset({"processing", "completed"})
MAX_LINES = 1000
MAX_CODES = 100
MAX_ID = 200
MAX_REASON = 1000


def order_event_id(order_id: str, state: str) -> str:
    """``woo:order:<id>:<state>``: one id per order state, so a state seen again is a no-op."""
    return f"{PREFIX}:order:{order_id}:{state}"


def order_owner(order: Mapping[str, Any]) -> tuple[str, str | None]:
    email = valid_email((order.get("billing") or {}).get("email"))
    customer = order.get("customer_id") or 0
    if customer > 0:
        return str(customer), email
    return guest_id(email, str(order["id"])), email


def order_events(order: Mapping[str, Any], restored: bool = False) -> tuple[list[dict[str, Any]], str]:
    """The events one order state implies, and a note when it implies nothing."""
    oid = str(order["id"])
    status = order["status"].removeprefix("wc-")
    customer_id, email = order_owner(order)
    created = when(order["date_created_gmt"])
    modified = gmt(order.get("date_modified_gmt")) or created

    def base(event_id: str, kind: str, at: datetime, order_obj: dict[str, Any]) -> dict[str, Any]:
        event: dict[str, Any] = {"id": event_id, "type": kind, "customer_id": customer_id,
                                 "occurred_at": iso(at), "order": order_obj}
        if email:
            event["customer"] = {"email": email}
        return event

    events: list[dict[str, Any]] = []
    note = ""
    if status in PAID_STATUSES or status == "refunded":
        paid_at = gmt(order.get("date_paid_gmt")) or created
        events.append(base(order_event_id(oid, "paid"), "order_paid", paid_at, order_body(order)))
        for ref in order.get("refunds") or ():
            amount = money(ref["total"])
            refund: dict[str, Any] = {"id": str(ref["id"]), "amount": str(abs(amount or Decimal(0)))}
            reason = (ref.get("reason") or ref.get("refund") or "").strip()
            if reason:
                refund["reason"] = reason[:MAX_REASON]
            event = base(f"{PREFIX}:refund:{ref['id']}", "order_refunded", modified, {"id": oid})
            event["refund"] = refund
            events.append(event)
        if status == "refunded" and not order.get("refunds"):
            # refunded without refund records (status set by hand): the whole order goes back
            event = base(order_event_id(oid, "refunded"), "order_refunded", modified, {"id": oid})
            event["refund"] = {"id": f"{oid}:refunded", "amount": str(money(order["total"]) or Decimal(0))}
            events.append(event)
        if restored:
            stamp = order.get("date_modified_gmt") or order["date_created_gmt"]
            events.append(base(f"{PREFIX}:order:{oid}:restored:{stamp}", "order_restored", modified, {"id": oid}))
    elif status in ("cancelled", "trash"):
        events.append(base(order_event_id(oid, "cancelled"), "order_cancelled", modified, {"id": oid}))
        if restored:
            note = f"order {oid} restored as cancelled: it does not count"
    elif status == "failed":
        note = f"order {oid} failed: never paid, so nothing to count or reverse"
    elif status in ("pending", "on-hold"):
        note = f"order {oid} is {status}: not paid yet, waits for processing/completed"
    else:
        note = f"order {oid} has status {status!r}, which loyalty-ladder does not count"
    return events, note


def order_body(order: Mapping[str, Any]) -> dict[str, Any]:
    """Our ``order`` object of a paid order: money, codes, payment, lines."""
    body: dict[str, Any] = {"id": str(order["id"]), "total": str(money(order["total"]) or Decimal(0)),
                            "currency": order["currency"].upper()}
    discount = money(order.get("discount_total"))
    if discount is not None:
        body["discount_total"] = str(abs(discount))
    shipping = money(order.get("shipping_total"))
    if shipping is not None:
        body["shipping"] = str(abs(shipping))
    tax = money(order.get("total_tax"))
    if tax is not None and tax > 0:  # the tax in the total: not the shop's money, earns no points
        body["tax"] = str(tax)
    codes = [c["code"].strip() for c in order.get("coupon_lines") or ()
             if c.get("code") and c["code"].strip() and len(c["code"].strip()) <= MAX_ID]
    if codes:
        body["discount_codes"] = list(dict.fromkeys(codes))[:MAX_CODES]
    method = (order.get("payment_method") or "").strip()
    if method:  # empty for free and admin-created orders: no payment information
        body["payment"] = {"method": "other" if method in OFFLINE_METHODS else "card"}
    lines = []
    for item in order.get("line_items") or ():
        quantity = item.get("quantity")
        if not isinstance(quantity, int) or quantity < 1:
            continue
        line: dict[str, Any] = {"quantity": min(quantity, 1_000_000)}
        sku = (item.get("sku") or "").strip()
        if sku:
            line["sku"] = sku[:MAX_ID]
        price = money(item.get("price"))
        if price is not None:
            line["price"] = str(abs(price))
        lines.append(line)
    if lines:
        body["lines"] = lines[:MAX_LINES]
    return body


def customer_events(customer: Mapping[str, Any], created: bool) -> list[dict[str, Any]]:
    cid = str(customer["id"])
    email = valid_email(customer.get("email")) or valid_email((customer.get("billing") or {}).get("email"))
    info = {"email": email} if email else None
    if created:
        event: dict[str, Any] = {"id": f"{PREFIX}:customer:{cid}:created", "type": "customer_created",
                                 "customer_id": cid, "occurred_at": iso(when(customer["date_created_gmt"]))}
    else:
        stamp = customer.get("date_modified_gmt") or customer["date_created_gmt"]
        event = {"id": f"{PREFIX}:customer:{cid}:updated:{stamp}", "type": "customer_updated",
                 "customer_id": cid, "occurred_at": iso(when(stamp))}
    if info:
        event["customer"] = info
    return [event]


def customer_links(customer: Mapping[str, Any], events: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """Guest orders placed with the account's e-mail belong to the account from now on."""
    address = (events[0].get("customer") or {}).get("email") if events else None
    return ((guest_id(address), str(customer["id"])),) if address else ()


def order_deleted_event(order: Mapping[str, Any]) -> dict[str, Any]:
    """A trashed order: its own id per deletion, so trash → restore → trash cancels again."""
    oid = order["id"]
    customer_id, address = order_owner(order)
    stamp = order.get("date_modified_gmt") or order["date_created_gmt"]
    event: dict[str, Any] = {
        "id": f"{PREFIX}:order:{oid}:deleted:{stamp}",
        "type": "order_cancelled",
        "customer_id": customer_id,
        "occurred_at": iso(when(stamp)),
        "order": {"id": str(oid)},
    }
    if address:
        event["customer"] = {"email": address}
    return event


def customer_deleted_event(customer_id: str, received_at: datetime) -> dict[str, Any]:
    """customer.deleted: WooCommerce sends only the id, so the receipt time is the only time there is."""
    return {"id": f"{PREFIX}:customer:{customer_id}:deleted", "type": "customer_deleted",
            "customer_id": customer_id, "occurred_at": iso(received_at)}
