"""The audit log: every admin action — who, when, what, on what, and why (``store.audit_log``).

Writers call :func:`record` inside the transaction of the action itself, so an action and its
audit row are stored together or not at all.  Read through ``GET /api/v1/shops/<shop>/audit``
and ``ladder audit``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import store
from .clock import utcnow
from .errors import BadRequest
from .jsonable import to_jsonable

#: the longest author name kept (the column's size)
MAX_AUTHOR = 255
#: entries a page holds unless told otherwise, and at most
PAGE_DEFAULT = store.PAGE_DEFAULT
PAGE_MAX = store.PAGE_MAX


def record(conn: sa.Connection, *, author: str, action: str, shop_id: str | None = None, target: str | None = None,
           reason: str | None = None, detail: Mapping[str, Any] | None = None, at: datetime | None = None) -> int:
    """Write one audit row in the caller's transaction; returns its pk."""
    result = conn.execute(store.audit_log.insert().values(
        at=at or utcnow(), shop_id=shop_id, author=author[:MAX_AUTHOR], action=action, target=target,
        reason=reason, detail=to_jsonable(dict(detail or {}))))
    return int(result.inserted_primary_key[0])


@dataclass(frozen=True)
class Page:
    """A page of audit entries, newest first, and the cursor of the next page (None: no more)."""

    items: list[dict[str, Any]]
    limit: int
    next_cursor: str | None


def encode_cursor(pk: int) -> str:
    """The opaque cursor of the page after the entry ``pk`` (URL-safe)."""
    return store.encode_cursor(pk=pk)


def decode_cursor(cursor: str) -> int:
    """The entry a cursor continues after; BadRequest for one this module did not make."""
    try:
        pk = store.decode_cursor(cursor, "pk")["pk"]
        if not isinstance(pk, int) or isinstance(pk, bool) or not 0 < pk < 2**63:
            raise ValueError(pk)
    except ValueError:
        raise BadRequest("invalid cursor: pass the next_cursor of the previous page unchanged",
                         {"cursor": ["Not a cursor of this listing."]}) from None
    return pk


def entries(db: sa.Engine, shop_id: str | None = None, since: datetime | None = None, action: str | None = None,
            limit: int = PAGE_DEFAULT, cursor: str | None = None) -> Page:
    """Audit entries, newest first (by the order they were written): of ``shop_id`` (None: every
    shop, and the actions of no shop), at or after ``since``, of ``action``; at most ``limit``
    (clamped to 1…PAGE_MAX); ``cursor`` — the ``next_cursor`` of the previous page — continues."""
    t = store.audit_log
    limit = max(1, min(int(limit), PAGE_MAX))
    where = []
    if shop_id is not None:
        where.append(t.c.shop_id == shop_id)
    if since is not None:
        where.append(t.c.at >= since)
    if action is not None:
        where.append(t.c.action == action)
    if cursor is not None:
        where.append(t.c.pk < decode_cursor(cursor))
    with db.connect() as conn:
        rows = conn.execute(sa.select(t).where(*where).order_by(t.c.pk.desc()).limit(limit + 1)).mappings().all()
    items = [dict(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(items, limit, encode_cursor(items[-1]["pk"]) if more else None)
