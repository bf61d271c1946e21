"""The events ledger: what a shop told us, stored once, in order of arrival, never changed.

Storing is all-or-nothing per batch: every event is validated first (schema, currency, time),
then the batch is written in one transaction.  An id already stored with the same content (equal
as JSON) is a duplicate, a no-op; with other content it is a conflict (the whole batch is
refused) — except for vendor events (``keep_first``), whose ids a shop adapter derives from the
vendor's own ids, so the same id always means the same event and the first stored copy wins.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError

from . import events as events_mod
from . import store
from .clock import iso, utcnow
from .errors import BadRequest, Conflict
from .events import MAX_EVENTS_PER_REQUEST
from .programme import Programme

#: how far in the future an event's time may lie (the shop's clock may run a little ahead)
MAX_CLOCK_SKEW = timedelta(minutes=5)
#: ids per ``IN (…)`` query: well below every backend's bound-parameter limit
_IN_CHUNK = 500


def body_hash(raw: Mapping[str, Any]) -> str:
    """Hash of an event's canonical JSON: 'the same content (equal as JSON)'."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class AcceptResult:
    """What storing a batch did: new events, duplicates, and the customers with new events."""

    accepted: int = 0
    duplicates: int = 0
    customers: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def parse_batch(payload: Any) -> list[events_mod.Event]:
    """One event object or a non-empty list of at most MAX_EVENTS_PER_REQUEST, all valid, or BadRequest."""
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise BadRequest("no events given", {"_schema": ["send one event object or a non-empty list"]})
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise BadRequest(f"too many events: {len(items)} (at most {MAX_EVENTS_PER_REQUEST} per request)",
                         {"_schema": [f"at most {MAX_EVENTS_PER_REQUEST} events per request"]})
    try:
        return events_mod.parse_events(items)
    except ValidationError as exc:
        raise BadRequest("invalid events; nothing was stored", exc.normalized_messages()) from None


def parse_labelled(items: list[Any], labels: Sequence[str] | None, message: str
                   ) -> tuple[list[events_mod.Event], list[str]]:
    """Parse events all-or-nothing; errors keyed by each item's label (e.g. ``file:line``)."""
    names = list(labels) if labels is not None else [str(i) for i in range(len(items))]
    try:
        return events_mod.parse_events(items), names
    except ValidationError as exc:
        errors = {names[int(k)] if str(k).isdigit() and int(k) < len(names) else k: v
                  for k, v in exc.normalized_messages().items()}
        raise BadRequest(message, errors) from None


#: where staff make each manual adjustment instead of sending it as an event
_ADMIN_PATHS = {
    "stage_set": "action set_stage, or `ladder adjust SHOP CUSTOMER --stage STAGE`",
    "turn_started": "action start_turn, or `ladder adjust SHOP CUSTOMER --new-turn` "
                    "(a turn of the whole shop: POST /api/v1/shops/<shop>/turns or `ladder turn start`)",
    "reward_granted": "action grant, or `ladder adjust SHOP CUSTOMER --grant REWARD`",
    "reward_revoked": "action revoke, or `ladder adjust SHOP CUSTOMER --revoke AWARD_KEY`",
}
#: the points inputs have their own routes
_POINTS_PATHS = {
    "points_redeemed": "POST /api/v1/shops/<shop>/customers/<customer_id>/points/redemptions, or "
                       "`ladder points redeem SHOP CUSTOMER --id ID --points N`",
    "points_adjusted": "POST /api/v1/shops/<shop>/customers/<customer_id>/points/adjustments, or "
                       "`ladder points adjust SHOP CUSTOMER --points N --reason R`",
}


def admin_type_problem(kind: str) -> str:
    """Why an event of a manual-adjustment type is refused from a shop (events API, import,
    webhooks): staff make adjustments through their own command, with an author and a reason."""
    if kind in _POINTS_PATHS:
        return f"{kind} is a points input checked against the balance: use {_POINTS_PATHS[kind]}"
    return (f"{kind} is a manual adjustment: use POST /api/v1/shops/<shop>/customers/<customer_id>/adjustments "
            f"({_ADMIN_PATHS.get(kind, kind)})")


def check_acceptable(programme: Programme, parsed: Sequence[events_mod.Event], now: datetime | None,
                     labels: Sequence[str] | None = None) -> None:
    """Raise BadRequest naming each event in another currency, or (when ``now`` is given)
    more than MAX_CLOCK_SKEW in the future, or of a manual-adjustment type
    (``events.ADMIN_EVENT_TYPES``: only :mod:`.adjustments` stores those, with source ``admin``).
    ``labels`` name the items (default: their index)."""
    currency = programme.settings.currency
    problems: dict[str, Any] = {}
    for i, event in enumerate(parsed):
        label = labels[i] if labels is not None else str(i)
        if event.type in events_mod.ADMIN_EVENT_TYPES:
            problems[label] = {"type": [admin_type_problem(event.type)]}
            continue
        order = event.order
        if order is not None and order.currency and order.currency != currency:
            problems[label] = {"order": {"currency": [
                f"currency {order.currency} differs from the programme's {currency}; convert amounts before sending"]}}
        if now is not None and event.occurred_at > now + MAX_CLOCK_SKEW:
            problems.setdefault(label, {})["occurred_at"] = [
                (f"{iso(event.occurred_at)} is in the future (now {iso(now)}); "
                 "events are accepted once they happened")]
    if problems:
        raise BadRequest("invalid events; nothing was stored", problems)


def check_unique(parsed: Sequence[events_mod.Event], labels: Sequence[str]) -> None:
    """Conflict when one id appears twice in a batch with different content (``simulate``)."""
    seen: dict[str, str] = {}
    for name, event in zip(labels, parsed):
        digest = body_hash(event.raw)
        if seen.setdefault(event.id, digest) != digest:
            raise Conflict(f"{name}: event id '{event.id}' appears twice with different content",
                           {name: {"id": ["reused with other content"]}})


def chunks(seq: Sequence[Any], n: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    """``seq`` in slices of at most ``n`` (for ``IN (…)`` queries)."""
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def store_events(db: sa.Engine, shop_id: str, parsed: Sequence[events_mod.Event], source: str,
                 keep_first: bool = False) -> AcceptResult:
    """Insert the new events of a validated batch in one transaction; see the module docstring.

    Raises Conflict (nothing stored) when an id is reused with other content and not
    ``keep_first``.  The rows go in with ``INSERT … ON CONFLICT DO NOTHING``: two requests
    carrying the same new id at once (a client retrying while its first try is in flight) race
    on PostgreSQL, where reads do not block; the loser's row is simply not inserted, and it is
    then judged like any known id — a duplicate, or a conflict that rolls the batch back.
    """
    with store.begin_write(db) as conn:
        return insert_events(conn, shop_id, parsed, source, keep_first=keep_first)


def insert_events(conn: sa.Connection, shop_id: str, parsed: Sequence[events_mod.Event], source: str,
                  keep_first: bool = False) -> AcceptResult:
    """:func:`store_events` inside the caller's write transaction (a manual adjustment stores its
    event and its audit row together); a Conflict raised here must roll that transaction back."""
    t = store.events
    result = AcceptResult()
    seen_in_batch: dict[str, str] = {}
    now = utcnow()
    rows = []
    conflicts: dict[str, Any] = {}

    def judge(i: int, event: events_mod.Event, known: str, digest: str) -> None:
        if known != digest and not keep_first:
            conflicts[str(i)] = {"id": [f"event id '{event.id}' was already accepted with other content"]}
        else:
            result.duplicates += 1

    existing = _hashes(conn, shop_id, [e.id for e in parsed])
    fresh: list[tuple[int, events_mod.Event, str]] = []
    for i, event in enumerate(parsed):
        digest = body_hash(event.raw)
        known = existing.get(event.id) or seen_in_batch.get(event.id)
        if known is not None:
            judge(i, event, known, digest)
            continue
        seen_in_batch[event.id] = digest
        fresh.append((i, event, digest))
        rows.append({"shop_id": shop_id, "event_id": event.id, "customer_id": event.customer_id,
                     "type": event.type, "occurred_at": event.occurred_at, "body": event.raw,
                     "body_hash": digest, "source": source, "received_at": now, "applied_at": None})
    inserted: set[str] = set()
    if rows and not conflicts:
        inserted = set(conn.execute(store.insert_new_many(conn, t, ["shop_id", "event_id"], "event_id"),
                                    rows).scalars())
        raced = _hashes(conn, shop_id, [e.id for _, e, _ in fresh if e.id not in inserted])
        for i, event, digest in fresh:
            if event.id not in inserted:  # another writer stored it between our read and our insert
                judge(i, event, raced[event.id], digest)
    if conflicts:
        # raising inside the caller's transaction rolls the whole batch back
        raise Conflict("an event id was reused with other content; nothing was stored", conflicts)
    for _, event, _ in fresh:
        if event.id in inserted:
            result.ids.append(event.id)
            if event.customer_id not in result.customers:
                result.customers.append(event.customer_id)
    result.accepted = len(inserted)
    return result


def _hashes(conn: sa.Connection, shop_id: str, event_ids: Sequence[str]) -> dict[str, str]:
    t = store.events
    return {r.event_id: r.body_hash for chunk in chunks(list(event_ids))
            for r in conn.execute(sa.select(t.c.event_id, t.c.body_hash)
                                  .where(t.c.shop_id == shop_id, t.c.event_id.in_(chunk)))}


def owner_of(db: sa.Engine, shop_id: str, event_ids: Sequence[str]) -> str | None:
    """The customer of the first stored event among ``event_ids`` (e.g. the events an adapter
    says name an order's owner: Shopify's refunds/create names the order, not the customer)."""
    if not event_ids:
        return None
    t = store.events
    with db.connect() as conn:
        row = conn.execute(sa.select(t.c.customer_id).where(t.c.shop_id == shop_id, t.c.event_id.in_(event_ids))
                           .order_by(t.c.pk).limit(1)).first()
    return row.customer_id if row is not None else None


def customers_with_unapplied(db: sa.Engine, shop_id: str | None = None,
                             received_before: datetime | None = None) -> list[tuple[str, str]]:
    """(shop, customer) pairs with accepted events not applied yet, sorted.  Events set aside
    (poison isolation) are not pending, and a customer whose processing failed is left out until
    its backoff ends (``customers.retry_at``)."""
    ev, cu, links = store.events, store.customers, store.customer_links
    # a guest's events are processed as its account's: the account's backoff holds for them too
    account = (sa.select(links.c.customer_id).where(links.c.shop_id == ev.c.shop_id, links.c.alias_id == ev.c.customer_id)
               .scalar_subquery())
    backing_off = sa.exists().where(cu.c.shop_id == ev.c.shop_id,
                                    sa.or_(cu.c.customer_id == ev.c.customer_id, cu.c.customer_id == account),
                                    cu.c.retry_at.is_not(None), cu.c.retry_at > utcnow())
    where = [ev.c.applied_at.is_(None), ev.c.set_aside_at.is_(None), ~backing_off]
    if shop_id is not None:
        where.append(ev.c.shop_id == shop_id)
    if received_before is not None:
        where.append(ev.c.received_at <= received_before)
    with db.connect() as conn:
        rows = conn.execute(sa.select(ev.c.shop_id, ev.c.customer_id).distinct().where(*where)).all()
    return sorted((r.shop_id, r.customer_id) for r in rows)


def rows_of(conn: sa.Connection, shop_id: str, customer_ids: Sequence[str], *,
            include_set_aside: bool = False) -> list[Any]:
    """The ledger rows (pk, body, received_at, source) of these customer ids, in arrival order;
    events set aside (poison isolation) only with ``include_set_aside`` (a data request)."""
    ev = store.events
    where = [ev.c.shop_id == shop_id, ev.c.customer_id.in_(customer_ids)]
    if not include_set_aside:
        where.append(ev.c.set_aside_at.is_(None))
    return conn.execute(sa.select(ev.c.pk, ev.c.body, ev.c.received_at, ev.c.source)
                        .where(*where).order_by(ev.c.pk)).all()


def set_aside_of(conn: sa.Connection, shop_id: str, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The events of these customer ids that were set aside: ``{id, reason, at}``, in arrival order."""
    ev = store.events
    return [{"id": r.event_id, "reason": r.set_aside_reason, "at": r.set_aside_at} for r in conn.execute(
        sa.select(ev.c.event_id, ev.c.set_aside_reason, ev.c.set_aside_at)
        .where(ev.c.shop_id == shop_id, ev.c.customer_id.in_(customer_ids), ev.c.set_aside_at.is_not(None))
        .order_by(ev.c.pk))]
