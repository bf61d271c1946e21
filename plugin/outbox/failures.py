"""Deliveries for an operator: list them (``ladder deliveries list``, ``GET …/deliveries``) and
send failed ones round again (``ladder deliveries retry``) once the cause is fixed.

A retry sets a ``failed`` row back to ``pending``, due now, with a fresh failure count; the
deliveries sweep runs it.  A failed *grant* also puts its award back to ``due`` (with an audit
row) and re-arms the notices its failure cancelled, to wait for the grant as planning arms them;
a grant whose award has been reversed meanwhile is not retried (there is nothing to give).
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .. import audit, store
from ..clock import utcnow
from ..statuses import AwardStatus, DeliveryAction, DeliveryStatus
from .planning import set_award_status

#: how many rows a listing returns unless told otherwise, and at most
LIST_DEFAULT = store.PAGE_DEFAULT
LIST_MAX = store.PAGE_MAX
#: what running.py writes on the notices of a grant that failed
_CANCELLED_WITH_GRANT = "the reward was not delivered"


def list_rows(db: sa.Engine, *, shop_id: str | None = None, status: str | None = None,
              limit: int = LIST_DEFAULT, before: int | None = None) -> list[dict[str, Any]]:
    """Delivery rows, newest first: pk, shop, customer, award key, action, channel, status,
    attempts, last error, external id and times — not the award document or the customer."""
    t = store.deliveries
    columns = [t.c.pk, t.c.shop_id, t.c.customer_id, t.c.award_key, t.c.action, t.c.channel, t.c.status,
               t.c.attempts, t.c.last_error, t.c.external_id, t.c.created_at, t.c.updated_at,
               t.c.next_attempt_at, t.c.delivered_at]
    return store.newest_rows(db, t, columns, shop_id=shop_id, status=status, before=before, limit=limit)


def retry(db: sa.Engine, pks: Iterable[int] = (), *, status: str | None = None, shop_id: str | None = None,
          now: datetime | None = None, author: str | None = None, reason: str | None = None) -> store.RetryResult:
    """Set failed deliveries back to ``pending`` (due now): those named by ``pks``, or every row
    with ``status`` (``failed``) of ``shop_id``.  Idempotent: a pending row is left alone.  With
    an ``author`` (an operator's command), each delivery retried gets an audit row
    (``delivery_retried``) in the same transaction."""
    t, awards = store.deliveries, store.awards
    now = now or utcnow()
    wanted = list(dict.fromkeys(int(pk) for pk in pks))
    retried: list[int] = []
    skipped: list[tuple[int, str]] = []
    if not wanted and status is None:
        return store.RetryResult((), ())
    with store.begin_write(db) as conn:
        query = sa.select(t.c.pk, t.c.shop_id, t.c.award_key, t.c.action, t.c.status, t.c.detail, t.c.last_error,
                          awards.c.status.label("award_status"),
                          awards.c.rule_version).join(awards, awards.c.key == t.c.award_key)
        query = query.where(t.c.pk.in_(wanted)) if wanted else query.where(t.c.status == status)
        if shop_id is not None:
            query = query.where(t.c.shop_id == shop_id)
        found = {r.pk: r for r in conn.execute(query.order_by(t.c.pk))}
        for pk in wanted or list(found):
            row = found.get(pk)
            if row is None:
                skipped.append((pk, "no such delivery" + (f" of shop {shop_id!r}" if shop_id else "")))
            elif row.status == DeliveryStatus.PENDING:
                skipped.append((pk, "already pending"))
            elif row.status != DeliveryStatus.FAILED:
                skipped.append((pk, f"{row.status}: only failed deliveries are retried"))
            elif row.action == DeliveryAction.GRANT and row.award_status in (AwardStatus.REVERSED, AwardStatus.ENDED):
                skipped.append((pk, f"its award was {row.award_status} meanwhile: nothing to grant"))
            else:
                _rearm_failed(conn, row, now)
                retried.append(pk)
                if author is not None:
                    audit.record(conn, author=author, action="delivery_retried", shop_id=row.shop_id, target=str(pk),
                                 reason=reason, detail={"award_key": row.award_key, "action": str(row.action),
                                                        "last_error": row.last_error}, at=now)
    return store.RetryResult(tuple(retried), tuple(skipped))


def _rearm_failed(conn: sa.Connection, row: Any, now: datetime) -> None:
    t = store.deliveries
    detail = dict(row.detail or {})
    detail.pop("failures", None)  # a fresh round of backoff
    detail["retried_at"] = now.isoformat()
    hit = conn.execute(t.update().where(t.c.pk == row.pk, t.c.status == DeliveryStatus.FAILED).values(
        status=DeliveryStatus.PENDING, next_attempt_at=now, detail=detail, updated_at=now)).rowcount
    if row.action != DeliveryAction.GRANT or not hit:
        return  # not a grant, or no longer failed (staff handed it over meanwhile): the award stays
    if row.award_status == AwardStatus.FAILED:
        set_award_status(conn, {"key": row.award_key, "rule_version": row.rule_version}, AwardStatus.DUE,
                         "delivery retried by an operator", now)
    # the notices the failed grant cancelled wait for it again (armed when it is delivered)
    conn.execute(t.update().where(
        t.c.award_key == row.award_key, t.c.action == DeliveryAction.NOTIFY, t.c.status == DeliveryStatus.CANCELLED,
        t.c.last_error == _CANCELLED_WITH_GRANT).values(
        status=DeliveryStatus.PENDING, next_attempt_at=None, last_error=None, updated_at=now))


def failures_since(db: sa.Engine, since: datetime) -> int:
    """Deliveries that failed since ``since`` (by their last change), for ``/healthz``."""
    t = store.deliveries
    with db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
            t.c.status == DeliveryStatus.FAILED, t.c.updated_at >= since)).scalar() or 0)
