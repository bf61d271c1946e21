"""Shadow to live: a shop's ``mode`` in the shops file, compared with the one last seen.

A shop in ``mode: shadow`` computes everything and delivers nothing: its awards are ``shadow`` and
so are their delivery rows (never run; :mod:`.outbox.planning`).  When the shops file
says ``live`` where the database last saw ``shadow``, the shop goes live *at that instant*:

* ``shops.live_from`` becomes now (it only ever moves forward), so the fold implies every award
  granted before it as ``historical`` (:func:`loyalty_ladder.awards.imply`) and re-folds agree;
* every award of the shop granted before ``live_from`` that is ``shadow`` (or still ``due``)
  becomes ``historical`` (never delivered), with an ``award_log`` row saying why;
* the shop's ``shadow`` delivery rows, and the pending ones of those awards, are ``cancelled``
  with the reason — so only what is decided from now on is paid;
* every customer on the ladder is due at once: the privileges they hold now (their stage tag, VIP
  service) are delivered from now on, as after an import;
* an audit row (action ``shop_went_live``, author ``configuration``) records it,

all in one transaction.  ``live`` → ``shadow`` records the mode (and an audit row) only.  A shop
seen for the first time has its mode recorded, nothing else: first seen in shadow, it goes live
later as above; first seen live, its ``live_from`` is left as it is (an import may have set it).

:func:`sync_modes` runs whenever a service starts: when no mode changed it is one ``SELECT``.
Several processes starting at once are safe — each switch re-reads the shop's row under a write
lock, and the later ones find the mode already recorded.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import audit, award_store, store
from .awards import ImpliedAward
from .clock import iso, utcnow
from .errors import ConfigError
from .shop import ShopConfig
from .shops import declared_shop
from .statuses import AwardStatus, DeliveryStatus

log = logging.getLogger(__name__)

#: who the audit log names for a switch the shops file made
AUTHOR = "configuration"
ACTION_LIVE = "shop_went_live"
ACTION_SHADOW = "shop_went_shadow"
#: rows per statement when awards and deliveries are switched
_CHUNK = 500
#: a switch that meets a deadlock or a lock timeout is tried this many times in all
_ATTEMPTS = 3


@dataclass(frozen=True)
class ModeChange:
    """What :func:`sync_modes` did for one shop: ``old`` → ``new`` (``old`` None: first sight),
    the shop's ``live_from`` afterwards, and for a switch to live the awards made ``historical``
    and the deliveries ``cancelled``."""

    shop_id: str
    old: str | None
    new: str
    live_from: datetime | None
    historical: int = 0
    cancelled: int = 0

    def describe(self) -> str:
        if self.old is None:
            return f"shop '{self.shop_id}' first seen in mode {self.new}"
        if self.new == "live":
            return (f"shop '{self.shop_id}' went live at {iso(self.live_from) if self.live_from else '?'}: "
                    f"{self.historical} award(s) decided in shadow mode are historical (never delivered), "
                    f"{self.cancelled} delivery row(s) cancelled")
        return f"shop '{self.shop_id}' is in shadow mode from now on: nothing is delivered"


def sync_modes(db: sa.Engine, shops: Mapping[str, ShopConfig], now: datetime | None = None) -> list[ModeChange]:
    """Compare each configured shop's mode with the one last seen and apply the changes (see the
    module docstring).  Returns what changed; nothing when every mode is as last seen.
    ConfigError when the database cannot say (not migrated, unreachable)."""
    now = now or utcnow()
    # the mode is no secret: a lazily loaded shops file resolves no env: variable for it
    configured = {shop_id: declared_shop(shops, shop_id).mode for shop_id in shops}
    if not configured:
        return []
    t = store.shops
    try:
        with db.connect() as conn:
            seen = {r.shop_id: r.mode for r in conn.execute(
                sa.select(t.c.shop_id, t.c.mode).where(t.c.shop_id.in_(sorted(configured))))}
        changes = []
        for shop_id, mode in sorted(configured.items()):
            if shop_id in seen and seen[shop_id] == mode:
                continue
            change = _apply(db, shop_id, mode, now)
            if change is not None:
                log.info("%s", change.describe())
                changes.append(change)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        raise ConfigError(f"cannot compare the shops' modes with the database: {getattr(exc, 'orig', exc)} "
                          "(is the database reachable and migrated?)") from None
    return changes


def _apply(db: sa.Engine, shop_id: str, mode: str, now: datetime) -> ModeChange | None:
    """One shop's switch in its own write transaction, tried again after a deadlock."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            with store.begin_write(db) as conn:
                return _switch(conn, shop_id, mode, now)
        except sa.exc.OperationalError:
            if attempt == _ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _locked_shop(conn: sa.Connection, shop_id: str) -> Any:
    """The shop's row under a write lock; created (with no mode) when missing."""
    t = store.shops
    query = sa.select(t).where(t.c.shop_id == shop_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        conn.execute(store._dialect_insert(conn)(t).values(shop_id=shop_id, mode=None, created_at=utcnow())
                     .on_conflict_do_nothing(index_elements=["shop_id"]))
        row = conn.execute(query).one()
    return row


def _switch(conn: sa.Connection, shop_id: str, mode: str, now: datetime) -> ModeChange | None:
    t = store.shops
    row = _locked_shop(conn, shop_id)
    old = row.mode
    if old == mode:
        return None  # another process recorded it first
    if old is None:  # first sight: record the mode, nothing else
        conn.execute(t.update().where(t.c.shop_id == shop_id).values(mode=mode))
        return ModeChange(shop_id, None, mode, row.live_from)
    if mode == "live":
        return go_live(conn, shop_id, now, previous_live_from=row.live_from, previous_mode=old)
    conn.execute(t.update().where(t.c.shop_id == shop_id).values(mode=mode))
    audit.record(conn, author=AUTHOR, action=ACTION_SHADOW, shop_id=shop_id, target=shop_id, at=now,
                 reason=f"the shops file says mode: {mode} (was {old}); nothing is delivered from now on",
                 detail={"from": old, "to": mode})
    return ModeChange(shop_id, old, mode, row.live_from)


def go_live(conn: sa.Connection, shop_id: str, now: datetime, *, previous_live_from: datetime | None,
            previous_mode: str = "shadow") -> ModeChange:
    """Make the shop live from ``now`` in the caller's transaction (see the module docstring)."""
    live_from = max(previous_live_from, now) if previous_live_from is not None else now
    conn.execute(store.shops.update().where(store.shops.c.shop_id == shop_id).values(mode="live", live_from=live_from))
    why = f"decided in shadow mode; the shop went live at {iso(live_from)}"
    historical, cancelled = _make_historical(conn, shop_id, live_from, why, now)
    cancelled += _cancel_shadow_rows(conn, shop_id, f"{why}: never delivered", now)
    # the privileges customers hold now (stage tags, VIP service) are delivered from now on: each
    # customer on the ladder is re-decided at once (award_store.record)
    store.wake_customers(conn, shop_id, now, on_ladder_only=True)
    audit.record(conn, author=AUTHOR, action=ACTION_LIVE, shop_id=shop_id, target=shop_id, at=now,
                 reason=f"the shops file says mode: live (was {previous_mode}); awards decided before "
                        f"{iso(live_from)} are historical, never delivered",
                 detail={"from": previous_mode, "to": "live", "live_from": live_from,
                         "previous_live_from": previous_live_from, "historical_awards": historical,
                         "cancelled_deliveries": cancelled})
    return ModeChange(shop_id, previous_mode, "live", live_from, historical, cancelled)


def _make_historical(conn: sa.Connection, shop_id: str, live_from: datetime, why: str,
                     now: datetime) -> tuple[int, int]:
    """Every ``shadow`` (or ``due``) award of the shop granted before ``live_from`` becomes ``historical`` (its
    ``reason`` the one the fold gives a historical award, so a re-fold restates nothing) and its
    pending deliveries are cancelled; a chunk at a time, so memory stays flat however many there
    are.  Returns (awards, deliveries) changed."""
    aw, dl = store.awards, store.deliveries
    reason = f"{why}: never delivered"
    awards = deliveries = 0
    while True:
        # the rows switched leave the selection: the next chunk is simply the next LIMIT
        rows = conn.execute(sa.select(aw).where(aw.c.shop_id == shop_id,
                                                aw.c.status.in_((AwardStatus.SHADOW, AwardStatus.DUE)),
                                                aw.c.granted_at < live_from)
                            .order_by(aw.c.key).limit(_CHUNK)).mappings().all()
        if not rows:
            return awards, deliveries
        for row in rows:
            implied = ImpliedAward(key=row["key"], shop=shop_id, customer_id=row["customer_id"],
                                   reward_id=row["reward_id"], type=row["type"], scope=row["scope"],
                                   scope_ref=row["scope_ref"], stage=row["stage"], turn=row["turn"],
                                   granted_at=row["granted_at"], historical=True)
            conn.execute(aw.update().where(aw.c.key == row["key"]).values(
                status=AwardStatus.HISTORICAL, reason=award_store.grant_reason(implied), updated_at=now))
            award_store.log(conn, row["key"], now, AwardStatus.HISTORICAL, why, row["rule_version"])
        pending = conn.execute(sa.select(dl.c.pk, dl.c.detail).where(
            dl.c.award_key.in_([row["key"] for row in rows]), dl.c.status == DeliveryStatus.PENDING)).all()
        _cancel(conn, pending, reason, now)
        awards += len(rows)
        deliveries += len(pending)


def _cancel_shadow_rows(conn: sa.Connection, shop_id: str, reason: str, now: datetime) -> int:
    """Cancel the shop's ``shadow`` delivery rows: never run, and a ``shadow`` notice would count as
    sent should its award be earned again after going live."""
    dl = store.deliveries
    count = 0
    while True:
        rows = conn.execute(sa.select(dl.c.pk, dl.c.detail).where(
            dl.c.shop_id == shop_id, dl.c.status == DeliveryStatus.SHADOW).order_by(dl.c.pk).limit(_CHUNK)).all()
        if not rows:
            return count
        _cancel(conn, rows, reason, now)
        count += len(rows)


def _cancel(conn: sa.Connection, rows: Sequence[Any], reason: str, now: datetime) -> None:
    dl = store.deliveries
    for row in rows:
        detail = {**(row.detail or {}), "reason": reason}
        conn.execute(dl.update().where(dl.c.pk == row.pk).values(
            status=DeliveryStatus.CANCELLED, last_error=reason, detail=detail, next_attempt_at=None, updated_at=now))
