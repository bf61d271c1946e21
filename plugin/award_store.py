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
from .clock import iso
from .jsonable import to_jsonable
from .rewards import Kind
from .rewards import registry as reward_types
from .statuses import AwardStatus

#: why an award stops being implied, unless the caller knows better (a guest merged)
NOT_IMPLIED = "no longer implied by the customer's history (e.g. its order was refunded within the refund window)"


@dataclass(frozen=True)
class Recorded:
    """The keys a reconcile granted (to deliver; ``historical`` ones excluded — a suspended
    privilege restored is granted again), reversed, ended (privileges to take back in the shop,
    suspended ones too) and expired (grants whose jobs waiting to run or for staff are cancelled)."""

    granted: tuple[str, ...] = ()
    reversed: tuple[str, ...] = ()
    ended: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.granted or self.reversed or self.ended or self.expired)


#: what an award that expired says in the audit log
EXPIRED_REASON = "expired: its validity passed before it was used or delivered"
#: the statuses a grant can expire from (not delivered yet, or delivered with a code no order used)
EXPIRES_FROM = (AwardStatus.DUE, AwardStatus.NEEDS_MANUAL_ACTION, AwardStatus.FAILED)


def grant_reason(award: awards_mod.ImpliedAward) -> str:
    """Why an award was granted, in words (stored as its ``reason``)."""
    where = f"in stage {award.stage}" if award.stage else ""
    text = {
        "stage": f"reached stage {award.stage} (turn {award.turn})",
        "privilege": f"held from stage {award.stage} (turn {award.turn})",
        "order": f"order {award.scope_ref} {where}",
        "event": f"event {award.scope_ref} {where}",
        "period": f"period {award.scope_ref} {where}",
        "lapse": f"lapsed {where} (turn {award.turn})",
        "manual": award.note or "granted by hand",
    }.get(award.scope, award.scope)
    if award.historical:
        text += "; before the shop went live, recorded only"
    return text.strip()


def derived_values(award: awards_mod.ImpliedAward, version: str) -> dict[str, Any]:
    """Every stored column of an award that is a function of the history and the timeline of
    versions (all but the processing record: ``status`` as far as it follows delivery,
    ``created_at``, ``updated_at``, ``reversed_at``, and the ``award_log``).  ``rule_version`` is
    the version that decided the award (``version``, the one in force now, when it names none)."""
    return {"reward_id": award.reward_id, "type": award.type, "scope": award.scope, "scope_ref": award.scope_ref,
            "stage": award.stage, "turn": award.turn, "granted_at": award.granted_at,
            "params": to_jsonable(award.params), "value": award.value,
            "reason": award.ended_reason or award.suspended_reason or grant_reason(award),
            "rule_version": award.rule_version or version}


def _show(value: Any) -> str:
    return iso(value) if isinstance(value, datetime) else str(value)


def _change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What a recompute changed, in words (for the audit row; the award's reason stays why it is held)."""
    parts = []
    if str(old.get("value")) != str(new["value"]):
        parts.append(f"value {old.get('value')} → {new['value']}")
    for name in ("stage", "turn", "granted_at", "scope_ref"):
        if old.get(name) != new[name]:
            parts.append(f"{name} {_show(old.get(name))} → {_show(new[name])}")
    if awards_mod._canon(old.get("params")) != awards_mod._canon(new["params"]):
        parts.append("parameters changed")
    if old.get("rule_version") != new["rule_version"]:
        parts.append(f"programme version {old.get('rule_version')} → {new['rule_version']}")
    return ", ".join(parts) or "reason restated"


def _differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(awards_mod._canon(old.get(k)) != awards_mod._canon(v) if k == "params"
               else (str(old.get(k)) != str(v) if k == "value" else old.get(k) != v) for k, v in new.items())


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
           version: str, now: datetime, reverse_reason: str | None = None,
           reverse_reasons: Mapping[str, str] | None = None, live: bool = True) -> Recorded:
    """Reconcile ``implied`` with the customer's recorded awards and write the difference.

    ``version``: the version in force now (it goes on reversals and the audit rows; each implied
    award carries the version that decided it).  ``reverse_reasons``: why particular keys are
    reversed (a revocation by hand), before ``reverse_reason`` and the generic reason.  ``live``:
    the shop delivers (not in shadow mode), so a privilege held when it went live is delivered.

    Order-independent: every column :func:`derived_values` names is recomputed from ``implied``
    for every implied award (granted, re-granted, recomputed or kept), so the rows are the same
    whatever order the events arrived in.  ``now`` (processing time) only goes to the processing
    record: ``created_at``, ``updated_at``, ``reversed_at`` and the audit rows.
    """
    t = store.awards
    recorded = recorded_awards(conn, shop_id, customer_id)
    plan = awards_mod.reconcile(list(implied), recorded)
    by_key = {r["key"]: r for r in recorded}
    for award in plan.grant:
        status = AwardStatus.HISTORICAL if award.historical else AwardStatus.DUE
        if award.ended_at is not None and not award.historical:
            # held and ended before it was ever recorded: nothing to deliver (granted before the shop
            # went live it stays historical, as when it is recorded first and ends later)
            status = AwardStatus.ENDED
        elif award.suspended_at is not None and not award.historical:
            status = AwardStatus.SUSPENDED  # paused before it was ever recorded: delivered when restored
        elif award.expired_at is not None and not award.historical:
            status = AwardStatus.EXPIRED  # its validity passed before it was ever recorded
        values = {"shop_id": shop_id, "customer_id": customer_id, **derived_values(award, version),
                  "status": status, "updated_at": now, "reversed_at": None}
        if award.key in by_key:  # a reversed award implied again
            conn.execute(t.update().where(t.c.key == award.key).values(**values))
        else:
            conn.execute(t.insert().values(key=award.key, created_at=now, **values))
        log(conn, award.key, now, status, values["reason"], version)
    reversed_keys = [rec["key"] if isinstance(rec, Mapping) else rec.key for rec in plan.reverse]
    for key in reversed_keys:
        # the reason is a function of why (never of when); the instant is processing time
        reason = (reverse_reasons or {}).get(key) or reverse_reason or NOT_IMPLIED
        conn.execute(t.update().where(t.c.key == key)
                     .values(status=AwardStatus.REVERSED, reason=reason, reversed_at=now, updated_at=now))
        log(conn, key, now, AwardStatus.REVERSED, reason, version)
    # recomputed (params, value, stage, granted_at … differ) and kept awards alike: a kept award
    # whose reason or programme version is stale is restated, so no column depends on history order
    ended: list[str] = []
    held_again: list[str] = []
    expired: list[str] = []
    for award in (*plan.update, *plan.keep):
        old = by_key[award.key]
        values = derived_values(award, version)
        status = _paused_or_expired(award, old["status"])
        if status is not None:
            new, why = status
            conn.execute(t.update().where(t.c.key == award.key).values(**values, status=new, updated_at=now))
            log(conn, award.key, now, new, why, award.rule_version or version)
            if new == AwardStatus.SUSPENDED:
                ended.append(award.key)  # taken back in the shop while it is paused
            elif new == AwardStatus.DUE:
                held_again.append(award.key)  # restored: delivered again
            elif new == AwardStatus.EXPIRED:
                expired.append(award.key)
            continue
        if award.ended_at is None and old["status"] == AwardStatus.ENDED:
            # ended, and no longer: the history that ended it was undone (a refund inside the
            # window took back the climb that left its stage) — held again, delivered again
            # (unless it is paused now: then it waits, suspended, for its restoring)
            status = AwardStatus.HISTORICAL if award.historical else (
                AwardStatus.SUSPENDED if award.suspended_at is not None else AwardStatus.DUE)
            conn.execute(t.update().where(t.c.key == award.key).values(**values, status=status, updated_at=now))
            log(conn, award.key, now, status, "held again: the history that ended it was undone",
                award.rule_version or version)
            if status == AwardStatus.DUE:
                held_again.append(award.key)
            continue
        if award.ended_at is not None and old["status"] not in (AwardStatus.ENDED, AwardStatus.HISTORICAL):
            # a privilege a later version no longer grants (or changed): taken back, not reversed
            conn.execute(t.update().where(t.c.key == award.key)
                         .values(**values, status=AwardStatus.ENDED, updated_at=now))
            log(conn, award.key, now, AwardStatus.ENDED, award.ended_reason, award.rule_version or version)
            if old["status"] != AwardStatus.SUSPENDED:  # a suspended one was taken back already
                ended.append(award.key)
            continue
        if (live and not award.historical and award.ended_at is None
                and old["status"] in (AwardStatus.HISTORICAL, AwardStatus.SHADOW)
                and reward_types.of(award.type).kind == Kind.PRIVILEGE):
            # a privilege the customer holds when the shop went live (after an import, or a shadow
            # period): recorded as history until now, delivered from now on — or, paused now,
            # suspended until it is restored (nothing to take back: it never reached the shop)
            paused = award.suspended_at is not None
            status = AwardStatus.SUSPENDED if paused else AwardStatus.DUE
            conn.execute(t.update().where(t.c.key == award.key, t.c.status == old["status"])
                         .values(**values, status=status, updated_at=now))
            log(conn, award.key, now, status, award.suspended_reason if paused
                else "held when the shop went live: delivered from now on", award.rule_version or version)
            if not paused:
                held_again.append(award.key)
            continue
        if award.historical and old["status"] in (AwardStatus.DUE, AwardStatus.SHADOW):
            # decided before the shop went live (a shadow shop switched to live meanwhile):
            # recorded only, never delivered — whichever process saw the switch first
            conn.execute(t.update().where(t.c.key == award.key, t.c.status == old["status"])
                         .values(**values, status=AwardStatus.HISTORICAL, updated_at=now))
            log(conn, award.key, now, AwardStatus.HISTORICAL, "decided before the shop went live; recorded only",
                version)
            continue
        if not _differs(old, values):
            continue
        conn.execute(t.update().where(t.c.key == award.key).values(**values, updated_at=now))
        log(conn, award.key, now, old["status"], f"recomputed: {_change(old, values)}", version)
    granted = (a.key for a in plan.grant
               if not a.historical and a.ended_at is None and a.suspended_at is None and a.expired_at is None)
    return Recorded((*granted, *held_again), tuple(reversed_keys), tuple(ended), tuple(expired))


def _paused_or_expired(award: awards_mod.ImpliedAward, old: str) -> tuple[str, str] | None:
    """The status a recorded award moves to when it is suspended, restored, expired or used after
    all (semantics 4), with the audit row's words; None when none of these applies."""
    if award.historical or award.ended_at is not None:
        return None
    if award.suspended_at is not None and old in (AwardStatus.DUE, AwardStatus.DELIVERED, AwardStatus.FAILED,
                                                 AwardStatus.NEEDS_MANUAL_ACTION, AwardStatus.SHADOW):
        return AwardStatus.SUSPENDED, award.suspended_reason
    if award.suspended_at is None and old == AwardStatus.SUSPENDED:
        return AwardStatus.DUE, "restored: the cause of its suspension ended"
    if award.expired_at is not None and (old in EXPIRES_FROM or (old == AwardStatus.DELIVERED
                                                                 and award.params.get("code"))):
        return AwardStatus.EXPIRED, f"{EXPIRED_REASON} ({iso(award.expired_at)})"
    if award.expired_at is None and old == AwardStatus.EXPIRED:
        # an order named its code before it expired after all (a late event): due again, and
        # planning finds what the shop holds from an earlier delivery
        return AwardStatus.DUE, "used before it expired (an order named its code)"
    return None
