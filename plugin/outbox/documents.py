"""The documents a delivery carries: the award as adapters, templates and the outgoing webhook
see it, and the customer's profile (e-mail, locale, consent, tags) as the ledger knows it, with
the VIP service they hold now and the ladder tags they should carry (desired state)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import identity, store, vip
from ..clock import utcnow
from ..documents import AWARD
from ..rewards import Kind
from ..rewards import registry as reward_types
from ..rewards.base import params_of
from ..shop import VipManager
from ..statuses import AwardStatus

#: the events a notice announces (the outgoing webhook's ``event`` and the e-mail's subject)
EVENT_GRANTED = "award.granted"
EVENT_REVERSED = "award.reversed"


def customer_profile(conn: sa.Connection, shop_id: str, customer_id: str, managers: Sequence[VipManager] = (),
                     now: datetime | None = None) -> dict[str, Any]:
    """The latest e-mail, locale, marketing consent and tags the shop told us of a customer, and
    ``vip``: the VIP service they hold at ``now`` (:func:`loyalty_ladder.vip.current`, the manager
    named from ``managers``, the shop's list) or None.

    Folded from the ``customer`` blocks of the customer's events (and those of guest ids linked
    to them) in the ledger's order (``occurred_at``, id), so it is as current as the ledger,
    even inside the reconcile transaction before ``customers`` is updated.
    """
    ev = store.events
    ids = identity.ids_of(conn, shop_id, customer_id)
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
    profile[vip.FIELD] = vip.current(conn, shop_id, customer_id, managers, now or utcnow())
    profile[LADDER_TAGS] = ladder_tags(conn, shop_id, customer_id)
    return profile


#: the key of the desired tag state in a delivery's customer document
LADDER_TAGS = "ladder_tags"
#: the statuses of a tag-carrying award whose tag the customer should carry in the shop
HOLDS_TAG = (AwardStatus.DUE, AwardStatus.DELIVERED, AwardStatus.NEEDS_MANUAL_ACTION, AwardStatus.FAILED)
#: the statuses of a privilege whose tag we may have put in the shop (a historical, shadow or
#: withheld one never reached it: a tag of that name there is the merchant's, left alone)
MAY_BE_IN_SHOP = (*HOLDS_TAG, AwardStatus.ENDED, AwardStatus.SUSPENDED, AwardStatus.REVERSED)


def ladder_tags(conn: sa.Connection, shop_id: str, customer_id: str) -> dict[str, list[str]]:
    """Privileges as desired state: ``desired`` — the tags of the customer's privileges that carry a
    tag (``tags`` capability: a stage tag, a tagged VIP service) and are held now; ``managed`` —
    the tags of all such privileges, whatever their status.  A tag delivery makes the shop's tags
    ``desired`` among ``managed`` (adds what is missing, removes the managed ones not desired) and
    leaves every other tag alone, so a retried grant can never overtake its own end, and a tag
    ended while nothing was delivered (shadow mode) is removed at the next delivery."""
    t = store.awards
    desired: set[str] = set()
    managed: set[str] = set()
    kept: set[str] = set()
    for row in conn.execute(sa.select(t.c.type, t.c.params, t.c.status).where(
            t.c.shop_id == shop_id, t.c.customer_id == customer_id)).mappings():
        if reward_types.capability_of(row) != "tags":
            continue
        tag = str(params_of(row).get("tag") or "").strip()
        if not tag:
            continue
        if reward_types.of(row["type"]).kind != Kind.PRIVILEGE:
            if row["status"] != AwardStatus.REVERSED:
                kept.add(tag)  # a grant's tag (a plugin's) stays until the grant is reversed
            continue
        if row["status"] in HOLDS_TAG:
            desired.add(tag)
        if row["status"] in MAY_BE_IN_SHOP:
            managed.add(tag)
    desired |= kept
    managed |= desired
    return {"desired": sorted(desired), "managed": sorted(managed)}


def award_document(award: Mapping[str, Any]) -> dict[str, Any]:
    """An award row as adapters, templates and the outgoing webhook see it: the same
    :class:`~loyalty_ladder.documents.AwardSchema` document the customer endpoint shows."""
    return AWARD.dump(award)


def first_stage(conn: sa.Connection, shop_id: str, customer_id: str) -> str | None:
    """The first stage of the customer's recorded history (where every customer starts)."""
    state = conn.execute(sa.select(store.customers.c.state).where(
        store.customers.c.shop_id == shop_id, store.customers.c.customer_id == customer_id)).scalar()
    history = (state or {}).get("history") or []
    return history[0].get("stage") if history else None
