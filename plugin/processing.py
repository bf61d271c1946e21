"""Processing one customer: read their ledger, fold it, and save the outcome — in that order.

The fold (facts → engine → ladder → implied awards) is the slow part and runs with **no
transaction open**.  The save is one short write transaction that first takes the customer's
lock (a row lock on PostgreSQL, the write lock on SQLite) and checks that the customer's fold
inputs are unchanged since they were read (:func:`fingerprint`); only then does it reconcile the
awards, keep a VIP's personal manager (:func:`loyalty_ladder.vip.ensure`), plan their deliveries
and store the customer's state.  If something changed meanwhile
(another event arrived, a guest was linked), the customer is folded again.  After
:data:`MAX_OPTIMISTIC_TRIES` the fold runs inside the lock, so a customer under constant
traffic still makes progress.

Per-customer serialisation therefore lives in the database, never in a process lock, and
queue jobs only carry ``(shop, customer)``: a job that runs twice changes nothing.

Poison isolation: a failure (any exception but NotFound) is counted on the customer's row
(``failures``, ``last_error``) and the customer is left alone for a backoff
(``retry_at``: :data:`FAILURE_BACKOFF` × 2^(failures−1), at most :data:`FAILURE_BACKOFF_CAP`) by
the consumers that look for work (the live lane, the sweep).
At the :data:`MAX_FAILURES`-th failure in a row the customer's unapplied events are tested one by
one, in arrival order, on top of the applied ones (which folded fine before): a fold and a save
that is rolled back, each failure confirmed once.  An event that makes it fail is *set aside*
(``events.set_aside_at`` + the exception's text): never folded again, not pending, shown on the
customer document; the rest is processed.  If the customer fails even without any unapplied
event (a wake-up that crashes, a broken programme) it is a dead letter: its unapplied events are
set aside with that reason, its wake-ups stop (``next_wake_at`` cleared) and ``last_error`` keeps
the reason, until a new event is processed successfully.  A successful save resets the count.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from . import adjustments, award_store, identity, ledger, programmes, store, vip
from . import events as events_mod
from . import ladder as ladder_mod
from .clock import utcnow
from .errors import NotFound
from .jsonable import to_jsonable
from .outbox import planning
from .shop import ShopConfig
from .timeline import ShopInputs, Timeline

log = logging.getLogger(__name__)

#: folds without the lock before one runs inside it
MAX_OPTIMISTIC_TRIES = 3
#: failures in a row after which a customer's unapplied events are tested one by one
MAX_FAILURES = 3
#: the wait after the first failure; it doubles with each further one, up to FAILURE_BACKOFF_CAP
FAILURE_BACKOFF = timedelta(seconds=2)
FAILURE_BACKOFF_CAP = timedelta(hours=1)
#: unapplied events tested per isolation (each test: one fold and one rolled-back save); later
#: ones are processed as usual afterwards and isolated in a later round if one of them fails
MAX_ISOLATION_CANDIDATES = 100
#: how much of an exception's text is kept as a reason
REASON_CHARS = 2000


@dataclass(frozen=True)
class FoldInputs:
    """What a customer's fold reads: their ledger rows (with linked guests') and events in
    ledger order, the shop's go-live time, its shop-wide inputs (admin turns, exclusions), and a
    fingerprint of all that and of the shop's timeline of versions."""

    rows: tuple[Any, ...]
    events: tuple[events_mod.Event, ...]
    live_from: datetime | None
    shop_inputs: ShopInputs
    fingerprint: tuple[Any, ...]


#: what a process_customer caller hands in: ``timelines(key=None)`` gives the shop's timeline now;
#: with the ``key`` the inputs saw (``programmes.activations_key``), one at least as new as that
TimelineSource = Callable[..., Timeline]


@dataclass(frozen=True)
class Processed:
    """The outcome of :func:`process_customer`: the state (of ``customer_id``, the account a
    guest id resolves to) and the deliveries planned that should run now."""

    customer_id: str
    state: ladder_mod.LadderState
    deliveries: tuple[int, ...]


def fingerprint(conn: sa.Connection, shop_id: str, customer_id: str) -> tuple[Any, ...]:
    """Cheap identity of a customer's fold inputs: their ids, the count and last pk of their
    events, the shop's go-live time, its shop events and its timeline.  All are append-only, so an unchanged
    fingerprint means unchanged inputs (a redaction moves events away and changes the count)."""
    ids = identity.ids_of(conn, shop_id, customer_id)
    ev = store.events
    count, last, aside = conn.execute(sa.select(sa.func.count(), sa.func.max(ev.c.pk), sa.func.count(ev.c.set_aside_at))
                                      .where(ev.c.shop_id == shop_id, ev.c.customer_id.in_(ids))).one()
    live_from = conn.execute(sa.select(store.shops.c.live_from).where(store.shops.c.shop_id == shop_id)).scalar()
    return (tuple(ids), count, last, aside, live_from, tuple(adjustments.shop_inputs_key(conn, shop_id)),
            programmes.activations_key(conn, shop_id))


def load_inputs(conn: sa.Connection, shop_id: str, customer_id: str) -> FoldInputs:
    """Read everything :func:`fold` needs for one customer (see :class:`FoldInputs`)."""
    ids = identity.ids_of(conn, shop_id, customer_id)
    rows = ledger.rows_of(conn, shop_id, ids)
    live_from = conn.execute(sa.select(store.shops.c.live_from).where(store.shops.c.shop_id == shop_id)).scalar()
    return FoldInputs(tuple(rows), tuple(events_mod.Event.from_raw(r.body) for r in rows), live_from,
                      adjustments.shop_inputs(conn, shop_id), fingerprint(conn, shop_id, customer_id))


def fold(timeline: Timeline, inputs: FoldInputs, as_of: datetime, shop_id: str,
         customer_id: str) -> ladder_mod.LadderState:
    """The ladder fold of loaded inputs (pure: no database)."""
    return ladder_mod.fold(timeline, None, inputs.events, as_of, shop=shop_id, customer_id=customer_id,
                           live_from=inputs.live_from, shop_inputs=inputs.shop_inputs)


def next_to_dict(step: Any) -> dict[str, Any] | None:
    """The ``next`` step of a state as stored: ``{stage, missing, earliest_at}`` or None at the top."""
    if step is None:
        return None
    return {"stage": step.stage, "missing": [dict(m) for m in step.missing], "earliest_at": step.earliest_at}


def history_of(state: ladder_mod.LadderState) -> list[dict[str, Any]]:
    """Every transition of a state, in order, as ``{stage, at, turn}``."""
    return [{"stage": h.stage, "at": h.at, "turn": h.turn} for h in state.history]


def points_of(state: ladder_mod.LadderState) -> dict[str, Any] | None:
    """The customer's points ledger as the customer document shows it (None: never any points)."""
    view = state.points
    if view is None or not view.entries:
        return None
    return view.to_dict(state.point_value, state.currency)


def snapshot(state: ladder_mod.LadderState) -> dict[str, Any]:
    """The part of a state stored as JSON beside the customer's columns (what the customer
    document shows without folding again)."""
    return to_jsonable({"history": history_of(state), "facts": state.facts, "next": next_to_dict(state.next),
                        "lapse_at": state.lapse_at, "points": points_of(state)})


def _save_customer(conn: sa.Connection, shop_id: str, customer_id: str, state: ladder_mod.LadderState,
                   evs: Sequence[events_mod.Event], now: datetime) -> None:
    """Write every column of the customer row from the fold: each is a function of the history,
    the programme in force and the as-of time (the e-mail is the latest in ledger order), so any
    order of delivery leaves the same row; only ``updated_at`` (``now``) records processing."""
    t = store.customers
    email = None
    for event in sorted(evs, key=lambda e: (e.occurred_at, e.id)):
        if event.customer is not None and event.customer.email:
            email = event.customer.email
    values = {"email": email, "stage": state.stage, "subgroup": state.subgroup, "lapsed": state.lapsed,
              "turn": state.turn, "since": state.since, "rule_version": state.rule_version,
              "next_wake_at": state.next_wake_at, "updated_at": now, "state": snapshot(state),
              "failures": 0, "last_error": None, "retry_at": None}
    # lock_customer created the row: always an update
    conn.execute(t.update().where(t.c.shop_id == shop_id, t.c.customer_id == customer_id).values(**values))


def _merge_guest(db: sa.Engine, shop: ShopConfig, timeline: Timeline, customer_id: str, account: str,
                 now: datetime, smtp_configured: bool) -> list[int]:
    """A guest merged into an account: what it earned alone is reversed, its row dropped."""
    with store.begin_write(db) as conn:
        recorded = award_store.record(conn, shop.id, customer_id, (), timeline.at(now).version, now,
                                      reverse_reason=f"merged into customer {account}")
        vip.ensure(conn, shop, customer_id, now)  # holds nothing now: its manager is released
        conn.execute(store.customers.delete().where(store.customers.c.shop_id == shop.id,
                                                    store.customers.c.customer_id == customer_id))
        return _plan(conn, shop, recorded, smtp_configured, now)


def _plan(conn: sa.Connection, shop: ShopConfig, recorded: award_store.Recorded, smtp_configured: bool,
          now: datetime, refreshed: Sequence[str] = ()) -> list[int]:
    if not recorded and not refreshed:
        return []
    return planning.plan(conn, shop, recorded.granted, recorded.reversed, smtp_configured=smtp_configured, now=now,
                         ended=recorded.ended, refreshed=refreshed, expired=recorded.expired)


def _save(conn: sa.Connection, shop: ShopConfig, customer_id: str, inputs: FoldInputs,
          state: ladder_mod.LadderState, as_of: datetime, smtp_configured: bool) -> tuple[ladder_mod.LadderState,
                                                                                             list[int]]:
    recorded = award_store.record(conn, shop.id, customer_id, state.awards, state.rule_version, as_of,
                                  reverse_reasons=state.revoked, live=not shop.shadow)
    # a VIP's personal manager, from the awards just recorded; a changed one is delivered again
    refreshed = vip.ensure(conn, shop, customer_id, as_of)
    deliveries = _plan(conn, shop, recorded, smtp_configured, as_of, refreshed)
    # an event a little ahead of our clock is folded when its time comes, not marked applied now
    ahead = [e.occurred_at for e in inputs.events if e.occurred_at > as_of]
    if ahead:
        wake = min(ahead) if state.next_wake_at is None else min(state.next_wake_at, min(ahead))
        state = dataclasses.replace(state, next_wake_at=wake)
    _save_customer(conn, shop.id, customer_id, state, inputs.events, as_of)
    applied = [r.pk for r, e in zip(inputs.rows, inputs.events) if e.occurred_at <= as_of]
    for chunk in ledger.chunks(applied):
        conn.execute(store.events.update()
                     .where(store.events.c.pk.in_(chunk), store.events.c.applied_at.is_(None))
                     .values(applied_at=as_of))
    return state, deliveries


def process_customer(db: sa.Engine, shop: ShopConfig, timelines: TimelineSource,
                     customer_id: str, as_of: datetime | None = None, *,
                     smtp_configured: bool = False) -> Processed:
    """Re-fold one customer's whole history and reconcile their awards (see the module docstring).
    ``timelines()`` gives the shop's timeline of versions as it is now; it is asked again (with
    the key the inputs saw) when the timeline changed meanwhile.

    A guest id linked to an account is processed as that account (its own awards reversed as
    merged).  Raises NotFound for a customer with no accepted event.  Any other exception is
    counted on the customer and raised again; at the MAX_FAILURES-th in a row the events that
    make it fail are set aside and the rest is processed (the module docstring).
    """
    as_of = as_of or utcnow()
    try:
        return _process_customer(db, shop, timelines, customer_id, as_of, smtp_configured)
    except NotFound:
        raise
    except Exception as exc:
        recorded = _record_failure(db, shop.id, customer_id, exc)
        if recorded is None:
            raise
        account, failures = recorded
        if failures < MAX_FAILURES:
            log.warning("processing %s/%s failed (%d of %d): %s", shop.id, account, failures, MAX_FAILURES,
                        reason_of(exc))
            raise
        if not isolate(db, shop, timelines(), account, as_of, smtp_configured):
            log.error("processing %s/%s failed %d times, also without its unapplied events: %s; "
                      "a dead letter until a new event", shop.id, account, failures, reason_of(exc))
            raise
    return _process_customer(db, shop, timelines, customer_id, as_of, smtp_configured)


def reason_of(exc: BaseException) -> str:
    """An exception as a stored reason: its type and message (a database error without its SQL
    and parameters), at most REASON_CHARS characters."""
    message = str(exc.orig) if isinstance(exc, sa.exc.StatementError) and exc.orig is not None else str(exc)
    return f"{type(exc).__name__}: {message.strip()}"[:REASON_CHARS]


def _record_failure(db: sa.Engine, shop_id: str, customer_id: str, exc: BaseException) -> tuple[str, int] | None:
    """Count one failure on the customer's row (and set its backoff); (account, failures in a
    row), or None when even that cannot be written (the database is down: nothing to count)."""
    try:
        with store.begin_write(db) as conn:
            account = identity.canonical(conn, shop_id, customer_id)
            failures = int(store.lock_customer(conn, shop_id, account)["failures"] or 0) + 1
            # also at MAX_FAILURES and beyond: should processing still fail after the isolation
            # (a failure outside the fold and save, events beyond one round), it waits (a success resets it)
            retry_at = utcnow() + min(FAILURE_BACKOFF * 2 ** min(failures - 1, 20), FAILURE_BACKOFF_CAP)
            cu = store.customers
            conn.execute(cu.update().where(cu.c.shop_id == shop_id, cu.c.customer_id == account)
                         .values(failures=failures, last_error=reason_of(exc), retry_at=retry_at))
    except Exception:
        log.exception("could not record the failure of %s/%s", shop_id, customer_id)
        return None
    return account, failures


def _trial(db: sa.Engine, shop: ShopConfig, timeline: Timeline, customer_id: str,
           inputs: FoldInputs, kept: Sequence[int], as_of: datetime, smtp_configured: bool) -> Exception | None:
    """Fold and save the customer with only the inputs' events at positions ``kept``, in a
    transaction that is rolled back; the exception that fails it, or None."""
    if not kept:
        return None
    sub = dataclasses.replace(inputs, rows=tuple(inputs.rows[i] for i in kept),
                              events=tuple(inputs.events[i] for i in kept))
    try:
        state = fold(timeline, sub, as_of, shop.id, customer_id)
        with db.connect() as conn:
            conn.execution_options(ladder_write=True)
            transaction = conn.begin()
            try:
                store.lock_customer(conn, shop.id, customer_id)
                _save(conn, shop, customer_id, sub, state, as_of, smtp_configured)
            finally:
                transaction.rollback()
    except Exception as exc:  # noqa: BLE001 - whatever fails the trial is its answer
        return exc
    return None


def isolate(db: sa.Engine, shop: ShopConfig, timeline: Timeline, customer_id: str,
            as_of: datetime, smtp_configured: bool = False) -> bool:
    """Set aside the unapplied events that make the customer's fold or save fail (see the
    module docstring).  True when the customer can be processed now (culprits set aside, or
    nothing fails any more); False for a dead letter (it fails even without its unapplied events).
    """
    with db.connect() as conn:
        inputs = load_inputs(conn, shop.id, customer_id)
        ev = store.events
        pks = [r.pk for r in inputs.rows]
        applied = {r.pk for chunk in ledger.chunks(pks) for r in conn.execute(
            sa.select(ev.c.pk).where(ev.c.pk.in_(chunk), ev.c.applied_at.is_not(None)))}
    kept = [i for i, r in enumerate(inputs.rows) if r.pk in applied]
    candidates = [i for i, r in enumerate(inputs.rows) if r.pk not in applied][:MAX_ISOLATION_CANDIDATES]

    def fails(positions: list[int]) -> Exception | None:
        error = _trial(db, shop, timeline, customer_id, inputs, positions, as_of, smtp_configured)
        if error is not None:  # once more: a passing glitch must not set a good event aside
            error = _trial(db, shop, timeline, customer_id, inputs, positions, as_of, smtp_configured)
        return error

    now = utcnow()
    base_error = fails(kept)
    if base_error is not None:
        reason = f"not applied: the customer's processing fails even without it: {reason_of(base_error)}"
        _set_aside(db, [(inputs.rows[i].pk, reason) for i in candidates], now)
        cu = store.customers
        with store.begin_write(db) as conn:
            conn.execute(cu.update().where(cu.c.shop_id == shop.id, cu.c.customer_id == customer_id)
                         .values(next_wake_at=None, retry_at=None, last_error=reason_of(base_error)))
        return False
    culprits = []
    for i in candidates:
        error = fails([*kept, i])
        if error is None:
            kept.append(i)
        else:
            culprits.append((inputs.rows[i].pk, reason_of(error)))
            log.warning("event %s of %s/%s set aside: %s", inputs.events[i].id, shop.id, customer_id,
                        reason_of(error))
    _set_aside(db, culprits, now)
    return True


def _set_aside(db: sa.Engine, reasons: Sequence[tuple[int, str]], now: datetime) -> None:
    ev = store.events
    if not reasons:
        return
    with store.begin_write(db) as conn:
        for pk, reason in reasons:
            conn.execute(ev.update().where(ev.c.pk == pk, ev.c.applied_at.is_(None), ev.c.set_aside_at.is_(None))
                         .values(set_aside_at=now, set_aside_reason=reason[:REASON_CHARS]))


def _process_customer(db: sa.Engine, shop: ShopConfig, timelines: TimelineSource,
                      customer_id: str, as_of: datetime, smtp_configured: bool) -> Processed:
    deliveries: list[int] = []

    with db.connect() as conn:
        account = identity.canonical(conn, shop.id, customer_id)
    if account != customer_id:
        deliveries += _merge_guest(db, shop, timelines(), customer_id, account, as_of, smtp_configured)
        customer_id = account
    for attempt in range(MAX_OPTIMISTIC_TRIES + 1):
        locked_fold = attempt == MAX_OPTIMISTIC_TRIES
        # asked with no transaction open (the registry may record the shop's first activation);
        # an activation after this is in the fingerprint, so the save below sees it and folds again
        timeline = timelines()
        if not locked_fold:
            with db.connect() as conn:
                inputs = load_inputs(conn, shop.id, customer_id)
            if not inputs.rows:
                raise NotFound(f"customer '{customer_id}' has no accepted events in shop '{shop.id}'")
            if timeline.key and timeline.key != inputs.fingerprint[-1]:
                timeline = timelines(key=inputs.fingerprint[-1])  # an activation between the two reads
            state = fold(timeline, inputs, as_of, shop.id, customer_id)
        with store.begin_write(db) as conn:
            store.lock_customer(conn, shop.id, customer_id)
            if locked_fold:  # the last resort: read and fold under the lock
                inputs = load_inputs(conn, shop.id, customer_id)
                if not inputs.rows:
                    raise NotFound(f"customer '{customer_id}' has no accepted events in shop '{shop.id}'")
                if timeline.key and timeline.key != inputs.fingerprint[-1]:
                    timeline = timelines(key=inputs.fingerprint[-1])  # a read: never waits for our lock
                state = fold(timeline, inputs, as_of, shop.id, customer_id)
            elif fingerprint(conn, shop.id, customer_id) != inputs.fingerprint:
                continue  # the ledger changed while we folded: the transaction ends, fold again
            state, planned = _save(conn, shop, customer_id, inputs, state, as_of, smtp_configured)
        return Processed(customer_id, state, tuple(deliveries + planned))
    raise AssertionError("unreachable: the last attempt folds under the lock")  # pragma: no cover


def wakeups_due(db: sa.Engine, now: datetime) -> list[tuple[str, str]]:
    """(shop, customer) pairs whose next wake-up has come (minimum stays ending, lapse
    deadlines, month starts), sorted."""
    cu = store.customers
    with db.connect() as conn:
        due = conn.execute(sa.select(cu.c.shop_id, cu.c.customer_id)
                           .where(cu.c.next_wake_at.is_not(None), cu.c.next_wake_at <= now,
                                  sa.or_(cu.c.retry_at.is_(None), cu.c.retry_at <= now))).all()
    return sorted((r.shop_id, r.customer_id) for r in due)
