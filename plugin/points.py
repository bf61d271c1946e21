"""The points ledger: batches of points with their own expiry, spent first-expiring-first (pure).

A customer's points are a function of their history, like everything the fold decides: the fold
(:mod:`.ladder`) drives one :class:`PointsLedger` through the customer's wake-ups in time order,
so replaying or reordering the events gives the same ledger.  Nothing here touches a database.

* **Batches.**  Each ``points`` award is one batch (its key is the award key): the points it
  brought, what remains of them, when it was earned and when it expires.  A manual adjustment
  that adds points is a batch of its own.
* **Spending** (a redemption, a manual adjustment that removes points) takes from the batches
  that expire first (then the earliest earned, then the key), never below zero.  A redemption
  already made is never taken back; if a later undo leaves less than it took (an order that
  never counted vanishes from the history), what is missing is a **debt**.
* **Clawback.**  When an order's points shrink (a partial refund; points revoked by hand), the
  difference is taken from that order's batch first, then from the other batches
  first-expiring-first; only what they cannot cover becomes a debt.  Points an order gains back
  (a cancelled order restored) return to its batch.
* **Debt** is paid first by every new earning.  The balance is never negative.
* **Expiry** happens at the batch's ``expires_at`` (a wake-up of the fold, never a job editing
  records): what remains of the batch is gone.

Every change is an :class:`Entry`; the customer document shows the balance, its value, the debt
and the batches; the entries explain them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from .rewards.base import CENT, iso

__all__ = ["Batch", "Entry", "PointsLedger", "PointsView", "value_of"]


def value_of(points: int, point_value: Decimal | None) -> Decimal | None:
    """The money value of ``points`` at ``point_value`` per point (None: points have no value)."""
    if point_value is None:
        return None
    return (point_value * points).quantize(CENT)


@dataclass
class Batch:
    """Points earned together, with one expiry."""

    key: str  # the points award's key (or the manual adjustment's event id)
    earned_at: datetime
    expires_at: datetime | None
    points: int  # what the batch holds after clawbacks (the award's points)
    remaining: int
    order_id: str | None = None
    expired: bool = False
    remind_at: datetime | None = None  # when the customer is reminded of what is left (None: never)
    reminded: bool = False
    expired_points: int = 0  # what expired of it (a later clawback takes these first: never twice)

    def usable(self, at: datetime) -> bool:
        return self.remaining > 0 and not self.expired and (self.expires_at is None or self.expires_at > at)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "points": self.points, "remaining": self.remaining,
                "earned_at": iso(self.earned_at), "expires_at": iso(self.expires_at) if self.expires_at else None}


@dataclass(frozen=True)
class Entry:
    """One change of the ledger: ``earned``, ``redeemed``, ``adjusted``, ``clawed_back``,
    ``expired`` or ``debt_paid``; ``points`` is signed (what the balance gained or lost)."""

    at: datetime
    kind: str
    points: int
    ref: str  # the batch key, redemption id or event id it is about
    debt: int = 0  # the debt this change left behind (a clawback or redemption not covered)


@dataclass(frozen=True)
class PointsView:
    """The ledger at ``as_of``: what the customer document shows."""

    balance: int
    debt: int
    batches: tuple[Batch, ...]  # those with points remaining, first-expiring-first
    entries: tuple[Entry, ...]
    redeemed: int  # points spent in all

    def to_dict(self, point_value: Decimal | None, currency: str | None) -> dict[str, Any]:
        value = value_of(self.balance, point_value)
        return {"balance": self.balance, "value": str(value) if value is not None else None, "currency": currency,
                "point_value": str(point_value) if point_value is not None else None, "debt": self.debt,
                "redeemed": self.redeemed, "batches": [b.to_dict() for b in self.batches]}


@dataclass
class PointsLedger:
    """The mutable ledger the fold drives; read it with :meth:`view`."""

    batches: dict[str, Batch] = field(default_factory=dict)
    debt: int = 0
    entries: list[Entry] = field(default_factory=list)
    redeemed: int = 0

    # ------------------------------------------------------------ reading
    def balance(self, at: datetime) -> int:
        return sum(b.remaining for b in self.batches.values() if b.usable(at))

    def next_expiry(self, after: datetime) -> datetime | None:
        """The earliest expiry strictly after ``after`` of a batch with points left (a wake-up)."""
        return min((b.expires_at for b in self.batches.values()
                    if b.remaining > 0 and not b.expired and b.expires_at is not None and b.expires_at > after),
                   default=None)

    def next_reminder(self, after: datetime) -> datetime | None:
        """The earliest reminder strictly after ``after`` of a batch with points left (a wake-up)."""
        return min((b.remind_at for b in self.batches.values()
                    if b.remind_at is not None and not b.reminded and b.remaining > 0 and b.remind_at > after),
                   default=None)

    def remind(self, at: datetime) -> list[Batch]:
        """The batches whose reminder is due by ``at`` and that still hold points (each once)."""
        if not any(b.remind_at is not None and not b.reminded and b.remind_at <= at for b in self.batches.values()):
            return []  # most wake-ups: nothing to sort
        due = []
        for batch in sorted(self.batches.values(), key=_spend_order):
            if batch.remind_at is not None and not batch.reminded and batch.remind_at <= at:
                batch.reminded = True
                if batch.usable(at):
                    due.append(batch)
        return due

    def view(self, at: datetime) -> PointsView:
        live = sorted((b for b in self.batches.values() if b.usable(at)), key=_spend_order)
        return PointsView(balance=sum(b.remaining for b in live), debt=self.debt, batches=tuple(live),
                          entries=tuple(self.entries), redeemed=self.redeemed)

    # ------------------------------------------------------------ changes
    def expire(self, at: datetime) -> None:
        """Every batch whose expiry has come by ``at`` loses what remains of it."""
        if not any(not b.expired and b.expires_at is not None and b.expires_at <= at for b in self.batches.values()):
            return  # most wake-ups: nothing to sort
        for batch in sorted(self.batches.values(), key=_spend_order):
            if not batch.expired and batch.expires_at is not None and batch.expires_at <= at:
                batch.expired = True
                if batch.remaining:
                    self.entries.append(Entry(batch.expires_at, "expired", -batch.remaining, batch.key))
                batch.expired_points, batch.remaining = batch.remaining, 0

    def earn(self, key: str, at: datetime, points: int, expires_at: datetime | None, order_id: str | None = None,
             kind: str = "earned", remind_at: datetime | None = None) -> None:
        """A new batch (a debt is paid from it first).  A key already known is ignored; a batch of
        0 points is kept (its order may grow: a total that arrives later)."""
        if key in self.batches:
            return
        points = max(0, points)
        if remind_at is not None and remind_at <= at:
            remind_at = None  # the batch is shorter than the reminder period: no reminder
        batch = Batch(key, at, expires_at, points, points, order_id, remind_at=remind_at)
        self.batches[key] = batch
        if points:
            self.entries.append(Entry(at, kind, points, key))
            self._pay_debt(batch, at)

    def resize(self, key: str, at: datetime, points: int) -> None:
        """The batch ``key`` now holds ``points`` (an order's points after a refund, a restore)."""
        batch = self.batches.get(key)
        if batch is None or points == batch.points:
            return
        delta = points - batch.points
        batch.points = points
        if delta > 0:  # points back (a cancelled order restored)
            if batch.expired or (batch.expires_at is not None and batch.expires_at <= at):
                batch.expired_points += delta  # back, but expired: a later shrink takes these first
                return
            batch.remaining += delta
            self.entries.append(Entry(at, "earned", delta, key))
            self._pay_debt(batch, at)
            return
        # what expired of the batch was never the customer's to spend: it is taken back first
        lapsed = min(-delta, batch.expired_points)
        batch.expired_points -= lapsed
        if -delta - lapsed:
            self.claw_back(key, at, -delta - lapsed)

    def claw_back(self, key: str, at: datetime, points: int) -> None:
        """Take ``points`` back for batch ``key``: from it first, then first-expiring-first, the rest as debt."""
        own = self.batches.get(key)
        left = points
        if own is not None and own.usable(at):
            taken = min(own.remaining, left)
            own.remaining -= taken
            left -= taken
        left = self._take(at, left, exclude=key)
        self.debt += left
        self.entries.append(Entry(at, "clawed_back", -(points - left), key, debt=left))

    def spend(self, ref: str, at: datetime, points: int, kind: str = "redeemed") -> int:
        """Take ``points`` first-expiring-first; what the batches cannot cover becomes debt.
        Returns the points actually taken from batches."""
        left = self._take(at, points)
        self.debt += left
        if kind == "redeemed":
            self.redeemed += points
        self.entries.append(Entry(at, kind, -(points - left), ref, debt=left))
        return points - left

    # ------------------------------------------------------------ internals
    def _take(self, at: datetime, points: int, exclude: str | None = None) -> int:
        left = points
        for batch in sorted(self.batches.values(), key=_spend_order):
            if left <= 0:
                break
            if batch.key == exclude or not batch.usable(at):
                continue
            taken = min(batch.remaining, left)
            batch.remaining -= taken
            left -= taken
        return left

    def _pay_debt(self, batch: Batch, at: datetime) -> None:
        if not self.debt or not batch.remaining:
            return
        paid = min(self.debt, batch.remaining)
        batch.remaining -= paid
        self.debt -= paid
        self.entries.append(Entry(at, "debt_paid", -paid, batch.key, debt=self.debt))


def _spend_order(batch: Batch) -> tuple[Any, ...]:
    """First-expiring-first; never-expiring last; then the earliest earned; then the key."""
    return (batch.expires_at is None, batch.expires_at or batch.earned_at, batch.earned_at, batch.key)

