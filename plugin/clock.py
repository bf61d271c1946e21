"""Time, one spelling: ``utcnow()`` (aware UTC), ``as_utc()`` (any stored instant as aware UTC) and
``iso()`` (ISO 8601 with ``Z``).

Every module that stamps or prints a time uses these two, so the whole code base agrees on what
"now" is (tests patch one place) and on how an instant is written.
"""
from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current instant, timezone-aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An instant in UTC; a naive one (SQLite gives times back without a zone) is taken as UTC,
    which is what every time we store is."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime) -> str:
    """An aware datetime as UTC ISO 8601 with ``Z`` (``2026-03-02T10:00:00Z``)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_or_none(value: datetime | None) -> str | None:
    """:func:`iso`, passing ``None`` through."""
    return None if value is None else iso(value)
