"""Received webhooks for an operator: list them by status (``ladder inbox list``,
``GET …/inbox``) and send failed or ignored ones round again (``ladder inbox retry``) once the
cause is fixed — the row goes back to ``received`` and the live lane processes it again."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import audit, store
from .clock import utcnow
from .inbox import SWEEP_GIVE_UP
from .statuses import InboxStatus

#: how many rows a listing returns unless told otherwise, and at most
LIST_DEFAULT = store.PAGE_DEFAULT
LIST_MAX = store.PAGE_MAX
#: the statuses an operator may send back to ``received``
RETRYABLE = (InboxStatus.FAILED, InboxStatus.IGNORED)


def list_rows(db: sa.Engine, *, shop_id: str | None = None, status: str | None = None,
              limit: int = LIST_DEFAULT, before: int | None = None) -> list[dict[str, Any]]:
    """Inbox rows for an operator, newest first: pk, platform, shop, topic, delivery id, status,
    error, received_at, processed_at — never the body or the headers (personal data).
    ``before``: only rows with a smaller pk (the next page)."""
    t = store.inbox
    columns = [t.c.pk, t.c.platform, t.c.shop_id, t.c.topic, t.c.delivery_id, t.c.status, t.c.error,
               t.c.received_at, t.c.processed_at]
    return store.newest_rows(db, t, columns, shop_id=shop_id, status=status, before=before, limit=limit)


def retry(db: sa.Engine, pks: Iterable[int] = (), *, status: str | None = None,
          shop_id: str | None = None, author: str | None = None, reason: str | None = None) -> store.RetryResult:
    """Set failed (or ignored) rows back to ``received`` so the consumer processes them again,
    once the cause is fixed: the rows named by ``pks``, or every row with ``status`` (of
    ``shop_id``).  Idempotent: a row already ``received`` is left as it is.  The error and the
    processed time are cleared (the new run writes its own); redacted rows (their body is gone)
    and processed rows are never retried.  With an ``author`` (an operator's command), each row
    retried gets an audit row (``inbox_retried``) in the same transaction.
    """
    t = store.inbox
    wanted = list(dict.fromkeys(int(pk) for pk in pks))
    retried: list[int] = []
    skipped: list[tuple[int, str]] = []
    with store.begin_write(db) as conn:
        query = sa.select(t.c.pk, t.c.shop_id, t.c.status, t.c.error)
        if wanted:
            query = query.where(t.c.pk.in_(wanted))
        elif status is not None:
            query = query.where(t.c.status == status)
        else:
            return store.RetryResult((), ())
        if shop_id is not None:
            query = query.where(t.c.shop_id == shop_id)
        found = {r.pk: r for r in conn.execute(query.order_by(t.c.pk))}
        for pk in wanted or list(found):
            row = found.get(pk)
            if row is None:
                skipped.append((pk, "no such inbox row" + (f" of shop {shop_id!r}" if shop_id else "")))
            elif row.status == InboxStatus.RECEIVED:
                skipped.append((pk, "already received (waiting for the consumer)"))
            elif row.error == "redacted":
                skipped.append((pk, "redacted: its body is gone"))
            elif row.status not in RETRYABLE:
                skipped.append((pk, f"{row.status}: only {' or '.join(RETRYABLE)} rows are retried"))
            else:
                retried.append(pk)
        if retried:
            values: dict[str, Any] = {"status": InboxStatus.RECEIVED, "error": None, "processed_at": None}
            if "attempts" in t.c:  # the poison-isolation counter and backoff (migration 0004)
                values["attempts"] = 0
            if "retry_at" in t.c:
                values["retry_at"] = None
            conn.execute(t.update().where(t.c.pk.in_(retried), t.c.status.in_(RETRYABLE)).values(**values))
            if author is not None:
                for pk in retried:
                    row = found[pk]
                    audit.record(conn, author=author, action="inbox_retried", shop_id=row.shop_id, target=str(pk),
                                 reason=reason, detail={"status_before": str(row.status), "error": row.error})
    return store.RetryResult(tuple(retried), tuple(skipped))


def failures_since(db: sa.Engine, since: datetime) -> int:
    """Inbox rows that failed since ``since`` (by their processed time), for ``/healthz``."""
    t = store.inbox
    with db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
            t.c.status == InboxStatus.FAILED, t.c.processed_at >= since)).scalar() or 0)


def stale(db: sa.Engine, pks: Iterable[int], now: datetime | None = None) -> list[int]:
    """Those of ``pks`` that arrived more than SWEEP_GIVE_UP ago: received again, the sweep
    does not pick them up (``ladder inbox retry --now`` processes them)."""
    wanted = list(pks)
    if not wanted:
        return []
    t = store.inbox
    now = now or utcnow()
    with db.connect() as conn:
        return [r.pk for r in conn.execute(sa.select(t.c.pk).where(
            t.c.pk.in_(wanted), t.c.received_at <= now - SWEEP_GIVE_UP).order_by(t.c.pk))]
