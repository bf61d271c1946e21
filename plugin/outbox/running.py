"""Running deliveries: one job per row, outside any transaction for the slow part (the shop's
API, SMTP, a webhook), between two short ones:

1. *claim*: the row must be ``pending`` and due; it is leased (``next_attempt_at`` moved
   :data:`CLAIM_LEASE` ahead) so a second worker given the same pk does nothing;
2. the call;
3. *finish*: the row is re-read under the customer's write lock.  If a reconcile changed it
   meanwhile (a grant cancelled because its award was reversed while the call was in flight), the
   shop's answer still wins — what exists in the shop is a fact — and the missing compensation
   (a revoke, or a grant again) is armed and returned as ``follow_up``.

A delivery is marked done only on the shop's success; 429 waits for Retry-After, ``Unavailable``
backs off (2, 4, 8 … s) up to :data:`MAX_ATTEMPTS`, ``Rejected`` fails at once, ``NotSupported``
needs manual action.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .. import notify, store
from ..adapters.base import Delivery
from ..clock import utcnow
from ..errors import DeliveryError, NotFound, NotSupported, RateLimited, Rejected
from ..rewards import registry as reward_types
from ..shop import ShopConfig, VipManager
from ..shops import declared_shop
from ..statuses import AwardStatus, DeliveryAction, DeliveryStatus, NotifyChannel
from .documents import EVENT_GRANTED, award_document, customer_profile, first_stage
from .planning import _log_award, arm_row, set_award_status

log = logging.getLogger(__name__)

#: consecutive ``Unavailable`` failures after which a delivery is ``failed``
MAX_ATTEMPTS = 10
#: the first retry waits this many seconds, then twice as long each time (2, 4, 8 … s)
BACKOFF_BASE_SECONDS = 2
BACKOFF_MAX = timedelta(hours=1)
#: how long a run in flight owns its row; after that a crashed run's row is due again
CLAIM_LEASE = timedelta(minutes=5)
#: when a 429 names no Retry-After
DEFAULT_RATE_LIMIT_WAIT = timedelta(seconds=2)

#: ``adapter_factory(shop_id)`` → the shop's adapter (anything with ``deliver(Delivery)``)
AdapterFactory = Callable[[str], Any]


@dataclass(frozen=True)
class RunOutcome:
    """What one :func:`run` did: the row's status afterwards, when to run it again (a pending
    retry) and the rows it armed that should run now (notices after a grant, a compensation)."""

    status: str
    retry_at: datetime | None = None
    follow_up: tuple[int, ...] = ()


#: the statuses of an award the shop must not hold (a suspended privilege is taken back while paused)
GONE = (AwardStatus.REVERSED, AwardStatus.ENDED, AwardStatus.SUSPENDED)

def due(db: sa.Engine, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Pending deliveries whose time has come (retries, lost enqueues, crashed runs), oldest first."""
    return [pk for pk, _shop in due_by_shop(db, now or utcnow(), limit)]


def due_by_shop(db: sa.Engine, now: datetime, limit: int = 500) -> list[tuple[int, str]]:
    """``(pk, shop)`` of the pending deliveries whose time has come, oldest first."""
    t = store.deliveries
    with db.connect() as conn:
        return [(int(r.pk), r.shop_id) for r in conn.execute(
            sa.select(t.c.pk, t.c.shop_id).where(t.c.status == DeliveryStatus.PENDING, t.c.next_attempt_at.is_not(None),
                                                 t.c.next_attempt_at <= now)
            .order_by(t.c.next_attempt_at, t.c.pk).limit(limit))]


def _load(conn: sa.Connection, pk: int, lock: bool = False) -> dict[str, Any]:
    query = sa.select(store.deliveries).where(store.deliveries.c.pk == pk)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"no delivery {pk}")
    return dict(row)


def _award(conn: sa.Connection, key: str) -> dict[str, Any]:
    return dict(conn.execute(sa.select(store.awards).where(store.awards.c.key == key)).mappings().one())


def _sibling(conn: sa.Connection, key: str, action: str, channel: str | None = None) -> dict[str, Any] | None:
    t = store.deliveries
    cond = t.c.channel.is_(None) if channel is None else t.c.channel == channel
    row = conn.execute(sa.select(t).where(t.c.award_key == key, t.c.action == action, cond)).mappings().first()
    return dict(row) if row is not None else None


def event_id(row: Mapping[str, Any]) -> str:
    """The notice's dedupe key: the same across retries of one notice, new for a new round."""
    generation = int((row.get("detail") or {}).get("generation", 1))
    return f"ladder-delivery-{row['pk']}-{generation}"


@dataclass(frozen=True)
class _Job:
    row: dict[str, Any]
    award: dict[str, Any]
    customer: dict[str, Any]
    external_id: str | None
    first_stage: str | None


def _close(conn: sa.Connection, row: Mapping[str, Any], status: str, reason: str, now: datetime) -> RunOutcome:
    t = store.deliveries
    detail = dict(row.get("detail") or {})
    detail["reason"] = reason
    conn.execute(t.update().where(t.c.pk == row["pk"]).values(
        status=status, last_error=reason, detail=detail, next_attempt_at=None, updated_at=now))
    return RunOutcome(status)


def _claim(db: sa.Engine, pk: int, now: datetime,
           managers_of: Callable[[str], Sequence[VipManager]]) -> _Job | RunOutcome:
    with store.begin_write(db) as conn:
        row = _load(conn, pk, lock=True)
        if row["status"] != DeliveryStatus.PENDING:
            return RunOutcome(row["status"])  # done, cancelled or shadow: running again does nothing
        if row["next_attempt_at"] is None:
            return RunOutcome(DeliveryStatus.PENDING)  # waits for something else (a notice for its grant)
        if row["next_attempt_at"] > now:
            return RunOutcome(DeliveryStatus.PENDING, retry_at=row["next_attempt_at"])  # not yet, or in flight elsewhere
        award = _award(conn, row["award_key"])
        # the customer as they are now (a VIP's current manager), not as when the row was planned
        customer = customer_profile(conn, row["shop_id"], row["customer_id"], managers_of(row["shop_id"]), now)
        external_id = None
        stage_one = None
        if row["action"] == DeliveryAction.REVOKE:
            grant_row = _sibling(conn, row["award_key"], DeliveryAction.GRANT)
            external_id = grant_row["external_id"] if grant_row else None
        elif row["action"] == DeliveryAction.NOTIFY:
            grant_row = _sibling(conn, row["award_key"], DeliveryAction.GRANT)
            granted_event = (row.get("detail") or {}).get("event", EVENT_GRANTED) == EVENT_GRANTED
            if granted_event and grant_row is not None and grant_row["status"] == DeliveryStatus.PENDING:
                conn.execute(store.deliveries.update().where(store.deliveries.c.pk == pk)
                             .values(next_attempt_at=None, updated_at=now))
                return RunOutcome(DeliveryStatus.PENDING)  # armed again when the grant is delivered
            if granted_event and grant_row is not None and grant_row["status"] != DeliveryStatus.DELIVERED:
                return _close(conn, row, DeliveryStatus.CANCELLED,
                              f"the reward was not delivered ({grant_row['status']})", now)
            stage_one = first_stage(conn, row["shop_id"], row["customer_id"])
            problem = notify.consent_problem(award_document(award), customer, stage_one)
            if problem:
                return _close(conn, row, DeliveryStatus.CANCELLED, problem, now)
            if row["channel"] == NotifyChannel.EMAIL and not customer.get("email"):
                return _close(conn, row, DeliveryStatus.CANCELLED, "the customer has no e-mail address", now)
        conn.execute(store.deliveries.update().where(store.deliveries.c.pk == pk).values(
            attempts=row["attempts"] + 1, next_attempt_at=now + CLAIM_LEASE, updated_at=now))
        row["attempts"] += 1
        return _Job(row, award, customer, external_id, stage_one)


def _call(job: _Job, adapter_factory: AdapterFactory, notifier: Any) -> tuple[str | None, str]:
    """The slow part, outside any transaction: (external id, detail), or a DeliveryError."""
    row = job.row
    if row["action"] == DeliveryAction.NOTIFY:
        notice = notify.Notice(channel=row["channel"], event=(row.get("detail") or {}).get("event", EVENT_GRANTED),
                               event_id=event_id(row), shop_id=row["shop_id"], award=award_document(job.award),
                               customer=job.customer)
        return notifier.send(notice), ""
    adapter = adapter_factory(row["shop_id"])
    result = adapter.deliver(Delivery(pk=row["pk"], action=row["action"], award=award_document(job.award),
                                      customer=job.customer, external_id=job.external_id, attempt=row["attempts"]))
    return result.external_id, result.detail


def backoff(failures: int) -> timedelta:
    """Wait before retry number ``failures``: 2, 4, 8 … seconds, at most :data:`BACKOFF_MAX`."""
    return min(timedelta(seconds=BACKOFF_BASE_SECONDS * 2 ** (failures - 1)), BACKOFF_MAX)


def _finish_success(conn: sa.Connection, row: dict[str, Any], external_id: str | None, detail_text: str,
                    now: datetime) -> RunOutcome:
    t = store.deliveries
    award = _award(conn, row["award_key"])
    was = row["status"]  # what the row is *now*: a reconcile may have cancelled it during the call
    detail = dict(row.get("detail") or {})
    if detail_text:
        detail["result"] = detail_text
    detail.pop("failures", None)
    conn.execute(t.update().where(t.c.pk == row["pk"]).values(
        status=DeliveryStatus.DELIVERED, external_id=external_id, last_error=None, detail=detail, next_attempt_at=None,
        delivered_at=now, updated_at=now))
    follow: list[int] = []
    where = f" (shop id {external_id})" if external_id else ""
    action = row["action"]
    if action == DeliveryAction.GRANT:
        if was == DeliveryStatus.PENDING and award["status"] == AwardStatus.DUE:
            # the award keeps the reason the fold gives it (a re-fold would restate it); the log says this
            set_award_status(conn, award, AwardStatus.DELIVERED, f"delivered to the shop{where}", now,
                             keep_reason=True)
            follow += _arm_waiting_notices(conn, award["key"], now)
        elif award["status"] in GONE:
            # Reversed (ended, suspended) while the call was in flight: it exists in the shop now, so take it back.
            _log_award(conn, award, f"delivered{where} after it was reversed; revoking it", now)
            follow += _rearm(conn, award, DeliveryAction.REVOKE, now)
        elif award["status"] == AwardStatus.DUE:
            # the award keeps the reason the fold gives it (a re-fold would restate it); the log says this
            set_award_status(conn, award, AwardStatus.DELIVERED, f"delivered to the shop{where}", now,
                             keep_reason=True)
            follow += _arm_waiting_notices(conn, award["key"], now)
    elif action == DeliveryAction.REVOKE:
        if award["status"] in GONE:
            _log_award(conn, award, f"revoked in the shop{where}", now)
        else:
            # Granted again while the revoke was in flight: the object is gone, deliver it again.
            _log_award(conn, award, "revoked in the shop while it was granted again; delivering it again", now)
            follow += _rearm(conn, award, DeliveryAction.GRANT, now)
    elif action == DeliveryAction.NOTIFY and reward_types.of(award["type"]).notice_only \
            and award["status"] == AwardStatus.DUE \
            and _sibling(conn, award["key"], DeliveryAction.GRANT) is None:
        set_award_status(conn, award, AwardStatus.DELIVERED, f"sent by {row['channel']}", now)
    return RunOutcome(DeliveryStatus.DELIVERED, follow_up=tuple(follow))


def _arm_waiting_notices(conn: sa.Connection, key: str, now: datetime) -> list[int]:
    t = store.deliveries
    pks = [int(r.pk) for r in conn.execute(sa.select(t.c.pk).where(
        t.c.award_key == key, t.c.action == DeliveryAction.NOTIFY, t.c.status == DeliveryStatus.PENDING,
        t.c.next_attempt_at.is_(None)))]
    if pks:
        conn.execute(t.update().where(t.c.pk.in_(pks)).values(next_attempt_at=now, updated_at=now))
    return pks


def _rearm(conn: sa.Connection, award: Mapping[str, Any], action: str, now: datetime) -> list[int]:
    """Arm a compensation found only after the fact (a late success); return its pk to run."""
    existing = _sibling(conn, award["key"], action)
    if existing is not None and existing["status"] == DeliveryStatus.PENDING:
        conn.execute(store.deliveries.update().where(store.deliveries.c.pk == existing["pk"])
                     .values(next_attempt_at=now, updated_at=now))
        return [int(existing["pk"])]
    return [arm_row(conn, now, award, existing, action, None, DeliveryStatus.PENDING, due=True)]


def _finish_error(conn: sa.Connection, row: dict[str, Any], exc: Exception, now: datetime) -> RunOutcome:
    t = store.deliveries
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    detail = dict(row.get("detail") or {})
    if row["status"] != DeliveryStatus.PENDING:
        # Cancelled while the call was in flight, and nothing was created: nothing more to do.
        conn.execute(t.update().where(t.c.pk == row["pk"]).values(last_error=message, updated_at=now))
        return RunOutcome(row["status"])
    if isinstance(exc, RateLimited):
        wait = timedelta(seconds=exc.retry_after) if exc.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
        retry_at = now + max(wait, timedelta(0))
        conn.execute(t.update().where(t.c.pk == row["pk"]).values(
            last_error=f"rate limited: {message}", next_attempt_at=retry_at, updated_at=now))
        return RunOutcome(DeliveryStatus.PENDING, retry_at=retry_at)
    if isinstance(exc, (Rejected, NotSupported)):
        status = DeliveryStatus.NEEDS_MANUAL_ACTION if isinstance(exc, NotSupported) else DeliveryStatus.FAILED
        conn.execute(t.update().where(t.c.pk == row["pk"]).values(
            status=status, last_error=message, next_attempt_at=None, updated_at=now))
        _award_after_error(conn, row, status, message, now)
        return RunOutcome(status)
    # Unavailable, or an unexpected error (a bug in an adapter): retried with backoff, then failed.
    failures = int(detail.get("failures", 0)) + 1
    detail["failures"] = failures
    if not isinstance(exc, DeliveryError):
        message = f"unexpected {type(exc).__name__}: {message}"
    if failures >= MAX_ATTEMPTS:
        reason = f"gave up after {failures} failed attempts: {message}"
        conn.execute(t.update().where(t.c.pk == row["pk"]).values(
            status=DeliveryStatus.FAILED, last_error=reason, detail=detail, next_attempt_at=None, updated_at=now))
        _award_after_error(conn, row, DeliveryStatus.FAILED, reason, now)
        return RunOutcome(DeliveryStatus.FAILED)
    retry_at = now + backoff(failures)
    conn.execute(t.update().where(t.c.pk == row["pk"]).values(
        last_error=message, detail=detail, next_attempt_at=retry_at, updated_at=now))
    return RunOutcome(DeliveryStatus.PENDING, retry_at=retry_at)


def _award_after_error(conn: sa.Connection, row: Mapping[str, Any], status: str, message: str,
                       now: datetime) -> None:
    award = _award(conn, row["award_key"])
    if row["action"] == DeliveryAction.GRANT and award["status"] == AwardStatus.DUE:
        set_award_status(conn, award, status, message, now)
        t = store.deliveries
        conn.execute(t.update().where(t.c.award_key == award["key"], t.c.action == DeliveryAction.NOTIFY,
                                      t.c.status == DeliveryStatus.PENDING)
                     .values(status=DeliveryStatus.CANCELLED, last_error="the reward was not delivered",
                             next_attempt_at=None,
                             updated_at=now))
    elif row["action"] == DeliveryAction.REVOKE:
        _log_award(conn, award, f"revoke {status}: {message}", now)


def run(db: sa.Engine, pk: int, adapter_factory: AdapterFactory, notifier: Any,
        now: datetime | None = None, shops: Mapping[str, ShopConfig] | None = None) -> RunOutcome:
    """Run one delivery: claim it, call the shop (or the notifier), record the answer.

    ``adapter_factory(shop_id)`` gives the shop's adapter; ``notifier`` has ``send(Notice) -> str``
    (see :class:`loyalty_ladder.notify.Notifier`).  A row that is not pending, or not yet due,
    is left alone, so running a delivered delivery again does nothing.  ``retry_at`` says when
    to run it again; ``follow_up`` lists rows to run now.  ``shops``: the configured shops, whose
    ``vip_managers`` name a VIP's manager in the customer document the call carries (without
    them, or for a shop not among them, the manager is null).
    """
    now = now or utcnow()

    def managers_of(shop_id: str) -> Sequence[VipManager]:
        if shops is None or shop_id not in shops:
            return ()
        return declared_shop(shops, shop_id).vip_managers  # not a secret: nothing resolved

    claimed = _claim(db, pk, now, managers_of)
    if isinstance(claimed, RunOutcome):
        return claimed
    try:
        external_id, detail_text = _call(claimed, adapter_factory, notifier)
    except Exception as exc:  # every failure is recorded on the row; none is lost
        if not isinstance(exc, DeliveryError):
            log.exception("delivery %s: unexpected error", pk)
        else:
            log.info("delivery %s: %s", pk, exc)
        with store.begin_write(db) as conn:
            store.lock_customer(conn, claimed.row["shop_id"], claimed.row["customer_id"])
            return _finish_error(conn, _load(conn, pk, lock=True), exc, now)
    with store.begin_write(db) as conn:
        # The customer lock orders this after (or before) a reconcile of the same customer, so
        # the row's status read here is the one that reconcile left.
        store.lock_customer(conn, claimed.row["shop_id"], claimed.row["customer_id"])
        return _finish_success(conn, _load(conn, pk, lock=True), external_id, detail_text, now)
