"""The awards table: a reconcile plan written down — grants, reversals, recomputed values —
each change with an audit row in ``award_log`` and the programme version that made it.

:func:`awards.reconcile` (pure) decides *what* changes; this module only records it.  An award
is never deleted: one no longer implied becomes ``reversed``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import awards as awards_mod
from . import store
from .jsonable import to_jsonable
from .statuses import AwardStatus

#: why an award stops being implied, unless the caller knows better (a guest merged)
NOT_IMPLIED = "no longer implied by the customer's history (e.g. its order was refunded within the refund window)"


@dataclass(frozen=True)
class Recorded:
    """The keys a reconcile granted (to deliver; ``historical`` ones excluded) and reversed."""

    granted: tuple[str, ...] = ()
    reversed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.granted or self.reversed)


def grant_reason(award: awards_mod.ImpliedAward) -> str:
    """Why an award was granted, in words (stored as its ``reason``)."""
    where = f"in stage {award.stage}" if award.stage else ""
    text = {
        "stage": f"reached stage {award.stage} (turn {award.turn})",
        "order": f"order {award.scope_ref} {where}",
        "event": f"event {award.scope_ref} {where}",
        "period": f"period {award.scope_ref} {where}",
        "lapse": f"lapsed {where} (turn {award.turn})",
    }.get(award.scope, award.scope)
    if award.historical:
        text += "; before the shop went live, recorded only"
    return text.strip()


def _change(old: Mapping[str, Any], new: awards_mod.ImpliedAward) -> str:
    if str(old.get("value")) != str(new.value):
        return f"value {old.get('value')} → {new.value}"
    return "parameters changed"


def recorded_awards(conn: sa.Connection, shop_id: str, customer_id: str) -> list[dict[str, Any]]:
    """Every award row of a customer, in (granted_at, key) order."""
    t = store.awards
    return [dict(r._mapping) for r in conn.execute(
        sa.select(t).where(t.c.shop_id == shop_id, t.c.customer_id == customer_id)
        .order_by(t.c.granted_at, t.c.key))]


def log(conn: sa.Connection, key: str, at: datetime, status: str, reason: str, version: str | None) -> None:
    """One audit row: an award's status and reason at an instant, under a programme version."""
    conn.execute(store.award_log.insert().values(award_key=key, at=at, status=status, reason=reason,
                                                 rule_version=version))


def record(conn: sa.Connection, shop_id: str, customer_id: str, implied: Sequence[awards_mod.ImpliedAward],
           version: str, now: datetime, reverse_reason: str | None = None) -> Recorded:
    """Reconcile ``implied`` with the customer's recorded awards and write the difference."""
    t = store.awards
    recorded = recorded_awards(conn, shop_id, customer_id)
    plan = awards_mod.reconcile(list(implied), recorded)
    by_key = {r["key"]: r for r in recorded}
    for award in plan.grant:
        status = AwardStatus.HISTORICAL if award.historical else AwardStatus.DUE
        reason = grant_reason(award)
        values = {"shop_id": shop_id, "customer_id": customer_id, "reward_id": award.reward_id, "type": award.type,
                  "scope": award.scope, "scope_ref": award.scope_ref, "stage": award.stage, "turn": award.turn,
                  "status": status, "reason": reason, "params": to_jsonable(award.params), "value": award.value,
                  "rule_version": version, "granted_at": award.granted_at, "updated_at": now, "reversed_at": None}
        if award.key in by_key:  # a reversed award implied again
            conn.execute(t.update().where(t.c.key == award.key).values(**values))
        else:
            conn.execute(t.insert().values(key=award.key, created_at=now, **values))
        log(conn, award.key, now, status, reason, version)
    reversed_keys = [rec["key"] if isinstance(rec, Mapping) else rec.key for rec in plan.reverse]
    for key in reversed_keys:
        reason = reverse_reason or NOT_IMPLIED
        conn.execute(t.update().where(t.c.key == key)
                     .values(status=AwardStatus.REVERSED, reason=reason, reversed_at=now, updated_at=now, rule_version=version))
        log(conn, key, now, AwardStatus.REVERSED, reason, version)
    for award in plan.update:
        old = by_key[award.key]
        reason = f"recomputed: {_change(old, award)}"
        conn.execute(t.update().where(t.c.key == award.key)
                     .values(params=to_jsonable(award.params), value=award.value, reason=reason,
                             updated_at=now, rule_version=version))
        log(conn, award.key, now, old["status"], reason, version)
    return Recorded(tuple(a.key for a in plan.grant if not a.historical), tuple(reversed_keys))
