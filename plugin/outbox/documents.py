"""The documents a delivery carries: the award as adapters, templates and the outgoing webhook
see it, and the customer's profile (e-mail, locale, consent, tags) as the ledger knows it."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from .. import store
from ..clock import iso_or_none

#: the events a notice announces (the outgoing webhook's ``event`` and the e-mail's subject)
EVENT_GRANTED = "award.granted"
EVENT_REVERSED = "award.reversed"


def customer_profile(conn: sa.Connection, shop_id: str, customer_id: str) -> dict[str, Any]:
    """The latest e-mail, locale, marketing consent and tags the shop told us of a customer.

    Folded from the ``customer`` blocks of the customer's events (and those of guest ids linked
    to them) in the ledger's order (``occurred_at``, id), so it is as current as the ledger,
    even inside the reconcile transaction before ``customers`` is updated.
    """
    ev, links = store.events, store.customer_links
    ids = [customer_id, *(r.alias_id for r in conn.execute(
        sa.select(links.c.alias_id).where(links.c.shop_id == shop_id, links.c.customer_id == customer_id)))]
    rows = conn.execute(sa.select(ev.c.event_id, ev.c.occurred_at, ev.c.body)
                        .where(ev.c.shop_id == shop_id, ev.c.customer_id.in_(ids))).all()
    profile: dict[str, Any] = {"customer_id": customer_id, "email": None, "locale": None,
                               "accepts_marketing": False, "tags": []}
    for row in sorted(rows, key=lambda r: (r.occurred_at, r.event_id)):
        info = (row.body or {}).get("customer") or {}
        for name in ("email", "locale", "accepts_marketing", "tags"):
            if info.get(name) is not None:
                profile[name] = info[name]
    if profile["email"] is None:
        email = conn.execute(sa.select(store.customers.c.email).where(
            store.customers.c.shop_id == shop_id, store.customers.c.customer_id == customer_id)).scalar()
        profile["email"] = email
    return profile


def award_document(award: Mapping[str, Any]) -> dict[str, Any]:
    """An award row as adapters, templates and the outgoing webhook see it (JSON-friendly)."""
    value = award.get("value")
    return {
        "key": award["key"], "reward": award["reward_id"], "type": award["type"], "status": award["status"],
        "params": dict(award.get("params") or {}), "value": None if value is None else str(value),
        "stage": award.get("stage"), "turn": award.get("turn"), "customer_id": award["customer_id"],
        "scope": award.get("scope"), "scope_ref": award.get("scope_ref"),
        "granted_at": iso_or_none(award.get("granted_at")),
    }


def first_stage(conn: sa.Connection, shop_id: str, customer_id: str) -> str | None:
    """The first stage of the customer's recorded history (where every customer starts)."""
    state = conn.execute(sa.select(store.customers.c.state).where(
        store.customers.c.shop_id == shop_id, store.customers.c.customer_id == customer_id)).scalar()
    history = (state or {}).get("history") or []
    return history[0].get("stage") if history else None
