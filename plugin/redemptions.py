"""Points spent and points adjusted by hand: checked against the customer's balance, stored as
events of their ledger.

**A redemption** (``POST …/customers/<id>/points/redemptions``, ``ladder points redeem``) names
itself with an id — the caller's idempotency key — and the points to spend.  Under the customer's
lock the customer is folded as of now (:func:`.processing.fold`, the same fold as live traffic);
the redemption is refused when the shop's active version gives points no value, or when the
points exceed the balance (``insufficient_points``: nothing changes).  Otherwise a
``points_redeemed`` event is stored with the points, their value (× the point value of the
version active at this instant) and the currency, with its audit row, in the same transaction.
Folding it spends the points first-expiring-first and implies the ``points_redemption`` award
that pays the value out in the shop (:mod:`.rewards.points_redemption`).

The same id again is the same redemption: its stored result is returned (``duplicate``); the
same id with other points is ``idempotency_conflict``.  Ids are per customer.

**A manual adjustment** (``POST …/points/adjustments``, ``ladder points adjust``) adds points (a
batch of its own, lasting ``expires_days`` or for ever) or removes them (first-expiring-first; not
more than the balance), with its author and reason — a ``points_adjusted`` event.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError

from . import audit, identity, ledger, store
from . import events as events_mod
from .adjustments import SOURCE, check_author_reason, check_idempotency_key, input_id, resolve_customer
from .clock import as_utc, iso, utcnow
from .errors import BadRequest, Conflict
from .points import value_of
from .processing import fold, load_inputs
from .timeline import Timeline

#: the reason stored with a redemption (the caller gives none)
REDEEMED = "points redeemed"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class InsufficientPoints(Conflict):
    code = "insufficient_points"


class PointsHaveNoValue(Conflict):
    code = "points_have_no_value"


class NotAnAccount(Conflict):
    code = "not_an_account"


def _latest_input(conn: sa.Connection, shop_id: str, customer_id: str) -> datetime | None:
    """The instant of the customer's latest points input (a later one never sorts before it)."""
    ev = store.events
    return conn.execute(sa.select(sa.func.max(ev.c.occurred_at)).where(
        ev.c.shop_id == shop_id, ev.c.customer_id == customer_id,
        ev.c.type.in_(events_mod.POINTS_EVENT_TYPES))).scalar()


def _now_under_lock(conn: sa.Connection, shop_id: str, customer_id: str, now: datetime | None) -> datetime:
    """The instant of an input, read once the customer's lock is held: never before the inputs
    stored while this one waited, so the balance it is checked against has them all."""
    at = now or utcnow()
    latest = _latest_input(conn, shop_id, customer_id)
    return max(at, as_utc(latest)) if latest is not None else at


@dataclass(frozen=True)
class Stored:
    """A stored points event (redemption or adjustment) and whether it was already there."""

    shop_id: str
    customer_id: str
    event: Mapping[str, Any]
    duplicate: bool
    balance_before: int | None = None  # None for a duplicate (the balance then is not known any more)


def check_points(value: Any, *, allow_negative: bool = False) -> int:
    """A whole number of points (not a boolean), at least 1 (or, ``allow_negative``, not 0)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest("points must be a whole number", {"points": ["Not a valid integer."]})
    low = -events_mod.MAX_POINTS if allow_negative else 1
    if not low <= value <= events_mod.MAX_POINTS or value == 0:
        what = "not 0" if allow_negative else "at least 1"
        raise BadRequest(f"points must be {what} and at most {events_mod.MAX_POINTS} in size",
                         {"points": [f"Must be {what}, at most {events_mod.MAX_POINTS} in size."]})
    return value


def _balance(conn: sa.Connection, timeline: Timeline, shop_id: str, customer_id: str, at: datetime) -> int:
    state = fold(timeline, load_inputs(conn, shop_id, customer_id), at, shop_id, customer_id)
    return state.points.balance if state.points is not None else 0


def _known(conn: sa.Connection, shop_id: str, event_id: str) -> Mapping[str, Any] | None:
    ev = store.events
    row = conn.execute(sa.select(ev.c.body).where(ev.c.shop_id == shop_id, ev.c.event_id == event_id)).first()
    return dict(row.body) if row is not None else None


def _store(conn: sa.Connection, shop_id: str, account: str, body: dict[str, Any], *, author: str, action: str,
           detail: Mapping[str, Any], at: datetime) -> Mapping[str, Any]:
    try:
        event = events_mod.parse_event(body)
    except ValidationError as exc:  # our own limits are checked before; this names anything left
        raise BadRequest("invalid points input; nothing was stored", exc.normalized_messages()) from None
    ledger.insert_events(conn, shop_id, [event], SOURCE)
    audit.record(conn, author=author, action=action, shop_id=shop_id, target=account,
                 reason=body["adjustment"]["reason"], detail=detail, at=at)
    return dict(event.raw)


def redeem(db: sa.Engine, timeline: Timeline, shop_id: str, customer_id: str, redemption_id: Any, points: Any, *,
           author: str, now: datetime | None = None) -> Stored:
    """Spend ``points`` of the customer's balance now (see the module docstring).

    Raises BadRequest (a bad id or number), NotFound (no such customer), IdempotencyConflict,
    PointsHaveNoValue or InsufficientPoints; nothing is stored then.  The caller has the customer
    processed afterwards (that records the award paying the value out)."""
    key = check_idempotency_key(redemption_id)
    if key is None:
        raise BadRequest("a redemption needs an id (your idempotency key)", {"id": ["Missing data for required field."]})
    if len(key) > events_mod.MAX_ID:
        raise BadRequest(f"the redemption id is longer than {events_mod.MAX_ID} characters",
                         {"id": [f"Longer than maximum length {events_mod.MAX_ID}."]})
    problem = events_mod.id_problem(key) or events_mod.text_problem(key)
    if problem:
        raise BadRequest(f"the redemption id cannot be stored: {problem}", {"id": [problem]})
    points = check_points(points)
    author = check_author_reason(author, REDEEMED)[0]
    with store.begin_write(db) as conn:
        account = resolve_customer(conn, shop_id, customer_id)
        if not identity.is_account(account):
            # a guest's points move to their account when it is made; paid out now, under the
            # guest's id, they would be paid again under the account's
            raise NotAnAccount(f"customer '{account}' is a guest, not a shop account: points are redeemed once the "
                               "customer has an account (their points move to it); nothing was changed",
                               {"customer_id": ["not a shop account"]})
        store.lock_customer(conn, shop_id, account)  # a concurrent redemption waits for this one
        at = _now_under_lock(conn, shop_id, account, now)
        event_id = input_id("redeem", shop_id=shop_id, customer_id=account, kind="points_redeemed", data={},
                            occurred_at=utcnow(), idempotency_key=key)
        known = _known(conn, shop_id, event_id)
        if known is not None:
            spent = (known.get("adjustment") or {}).get("points")
            if spent != points:
                raise IdempotencyConflict(
                    f"redemption '{key}' was made for {spent} points, not {points}; nothing was changed",
                    {"id": [f"already used for a redemption of {spent} points"]})
            return Stored(shop_id, account, known, duplicate=True)
        settings = timeline.at(at).programme.settings
        if settings.point_value is None:
            raise PointsHaveNoValue(f"the programme active in shop '{shop_id}' gives points no money value "
                                    "(settings: point_value): nothing can be redeemed",
                                    {"points": ["points have no value in this programme"]})
        balance = _balance(conn, timeline, shop_id, account, at)
        if points > balance:
            raise InsufficientPoints(f"customer '{account}' has {balance} points, fewer than the {points} asked; "
                                     "nothing was changed", {"points": [f"the balance is {balance}"],
                                                             "balance": balance})
        value = value_of(points, settings.point_value)
        if value is None or value <= 0:
            raise BadRequest(f"{points} points are worth less than 0.01 {settings.currency} at "
                             f"{settings.point_value} each: redeem more", {"points": ["worth less than 0.01"]})
        data = {"author": author, "reason": REDEEMED, "points": points, "redemption": key, "value": value,
                "currency": settings.currency}
        body = {"id": event_id, "type": "points_redeemed", "customer_id": account, "occurred_at": iso(at),
                "adjustment": data}
        stored = _store(conn, shop_id, account, body, author=author, action="points_redeemed", at=at,
                        detail={"event_id": event_id, "redemption": key, "points": points, "value": value,
                                "currency": settings.currency, "balance_before": balance})
    return Stored(shop_id, account, stored, duplicate=False, balance_before=balance)


def adjust_points(db: sa.Engine, timeline: Timeline, shop_id: str, customer_id: str, points: Any, *, author: str,
                  reason: str, expires_days: int | None = None, idempotency_key: str | None = None,
                  now: datetime | None = None) -> Stored:
    """Add (``points`` > 0, lasting ``expires_days``, default for ever) or remove points by hand.

    Removing more than the balance is InsufficientPoints; the same idempotency key with another
    adjustment is IdempotencyConflict.  The caller has the customer processed afterwards."""
    points = check_points(points, allow_negative=True)
    author, reason = check_author_reason(author, reason)
    key = check_idempotency_key(idempotency_key)
    if expires_days is not None and (isinstance(expires_days, bool) or not isinstance(expires_days, int)
                                     or not 1 <= expires_days <= 36_500):
        raise BadRequest("expires_days must be a whole number of days from 1 to 36500",
                         {"expires_days": ["Must be from 1 to 36500."]})
    if expires_days is not None and points < 0:
        raise BadRequest("expires_days is for points added", {"expires_days": ["Not used when removing points."]})
    data: dict[str, Any] = {"author": author, "reason": reason, "points": points}
    if expires_days is not None:
        data["expires_days"] = expires_days
    with store.begin_write(db) as conn:
        account = resolve_customer(conn, shop_id, customer_id)
        asked = now or utcnow()  # the request's own time names it (two alike requests are two)
        store.lock_customer(conn, shop_id, account)
        at = _now_under_lock(conn, shop_id, account, asked)
        event_id = input_id("points", shop_id=shop_id, customer_id=account, kind="points_adjusted", data=data,
                            occurred_at=asked, idempotency_key=key)
        known = _known(conn, shop_id, event_id)
        if known is not None:
            if dict(known.get("adjustment") or {}) != data:
                raise IdempotencyConflict("the idempotency key was used for another points adjustment; nothing was "
                                          "stored", {"idempotency_key": ["reused with other content"]})
            return Stored(shop_id, account, known, duplicate=True)
        balance = _balance(conn, timeline, shop_id, account, at)
        if points < 0 and -points > balance:
            raise InsufficientPoints(f"customer '{account}' has {balance} points, fewer than the {-points} to "
                                     "remove; nothing was changed", {"points": [f"the balance is {balance}"],
                                                                     "balance": balance})
        body = {"id": event_id, "type": "points_adjusted", "customer_id": account, "occurred_at": iso(at),
                "adjustment": data}
        stored = _store(conn, shop_id, account, body, author=author, action="points_adjusted", at=at,
                        detail={"event_id": event_id, "points": points, "expires_days": expires_days,
                                "balance_before": balance})
    return Stored(shop_id, account, stored, duplicate=False, balance_before=balance)


