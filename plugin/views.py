"""Read views: the customer document, the explanation, a customer's stored data, and the
what-if ``simulate``.  Nothing here writes; the documents are dumped by :mod:`.documents`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import award_store, identity, ledger, store, vip
from . import ladder as ladder_mod
from .clock import utcnow
from .engine import CompiledProgramme
from .errors import NotFound
from .explanations import explain_state
from .jsonable import to_jsonable
from .processing import fold, history_of, load_inputs, next_to_dict, points_of
from .programme import Programme
from .rewards import Kind
from .rewards import registry as reward_types
from .rewards.base import params_of
from .shop import VipManager
from .statuses import AwardStatus
from .timeline import Timeline


def customer_view(db: sa.Engine, shop_id: str, customer_id: str,
                  managers: Sequence[VipManager] = ()) -> dict[str, Any]:
    """The customer document (a guest id answers for the account it joined); NotFound for a
    customer with no accepted event.  ``managers``: the shop's VIP managers (who ``vip`` names)."""
    with db.connect() as conn:
        customer_id = identity.canonical(conn, shop_id, customer_id)
        ids = identity.ids_of(conn, shop_id, customer_id)
        ev = store.events
        total, pending = conn.execute(
            sa.select(sa.func.count(), sa.func.sum(sa.case(
                (sa.and_(ev.c.applied_at.is_(None), ev.c.set_aside_at.is_(None)), 1), else_=0)))
            .where(ev.c.shop_id == shop_id, ev.c.customer_id.in_(ids))).one()
        if not total:
            raise NotFound(f"no customer '{customer_id}' in shop '{shop_id}'",
                           {"customer_id": ["no accepted event for this customer"]})
        row = conn.execute(sa.select(store.customers).where(store.customers.c.shop_id == shop_id,
                                                            store.customers.c.customer_id == customer_id)).first()
        rewards = award_store.recorded_awards(conn, shop_id, customer_id)
        set_aside = ledger.set_aside_of(conn, shop_id, ids)
        vip_now = vip.current(conn, shop_id, customer_id, managers, utcnow())
    state = (row.state if row is not None else None) or {}
    return {
        "shop": shop_id,
        "customer_id": customer_id,
        "stage": row.stage if row else None,
        "subgroup": row.subgroup if row else None,
        "lapsed": bool(row.lapsed) if row else False,
        "turn": row.turn if row else 1,
        "since": row.since if row else None,
        "history": state.get("history", []),
        "facts": state.get("facts", {}),
        "rewards": rewards,
        "next": state.get("next"),
        "lapse_at": state.get("lapse_at"),
        "points": state.get("points"),
        "privileges": privileges_of(rewards),
        "rule_version": row.rule_version if row else None,
        "pending_events": int(pending or 0),
        "vip": vip_now,
        "set_aside_events": set_aside,
        "processing_failure": ({"failures": row.failures, "error": row.last_error, "retry_at": row.retry_at}
                               if row is not None and row.failures else None),
    }


#: a privilege's fields the customer document shows besides its status (what it is in the shop)
PRIVILEGE_PARAMS = ("tag", "level", "priority", "net_days", "credit_limit")


def privileges_of(rewards: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The customer's privileges (stage tags, VIP service, payment terms), held or not: each with its
    status (``due``/``delivered`` … held; ``suspended``; ``ended``; ``historical``), since when it
    is held (its holding's start), the reason and what it is; reversed ones (never earned) left out."""
    out = []
    for award in rewards:
        if award.get("status") == AwardStatus.REVERSED or reward_types.of(str(award.get("type"))).kind != Kind.PRIVILEGE:
            continue
        params = params_of(award)
        out.append({"key": award["key"], "reward": award.get("reward_id"), "type": award.get("type"),
                    "status": award.get("status"), "since": award.get("granted_at"), "reason": award.get("reason"),
                    **{name: params[name] for name in PRIVILEGE_PARAMS if name in params}})
    return out


def customer_data(db: sa.Engine, shop_id: str, customer_id: str,
                  managers: Sequence[VipManager] = ()) -> dict[str, Any]:
    """Everything stored about a customer (answers a data request): their document, ledger and
    VIP manager assignment."""
    view = customer_view(db, shop_id, customer_id, managers)
    with db.connect() as conn:
        rows = ledger.rows_of(conn, shop_id, identity.ids_of(conn, shop_id, view["customer_id"]),
                              include_set_aside=True)
        assigned = vip.assignment(conn, shop_id, view["customer_id"])
    if assigned is not None:
        listed = next((m for m in managers if m.id == assigned["manager_id"]), None)
        assigned["manager"] = vip.manager_document(listed)
    return {"customer": view, "events": rows, "vip_assignment": assigned}


def explain(db: sa.Engine, timeline: Timeline, shop_id: str, customer_id: str,
            as_of: datetime | None = None) -> dict[str, Any]:
    """Why this stage, what gets to the next, when lapse would come, and each reward's fate —
    under the version active at ``as_of`` (default now)."""
    as_of = as_of or utcnow()
    view = customer_view(db, shop_id, customer_id)
    customer_id = view["customer_id"]
    with db.connect() as conn:
        inputs = load_inputs(conn, shop_id, customer_id)
    state = fold(timeline, inputs, as_of, shop_id, customer_id)
    segment = timeline.at(as_of)
    return explain_state(segment.programme, segment.evaluator, state, view["rewards"], as_of)


def state_view(state: ladder_mod.LadderState, shop_id: str, customer_id: str) -> dict[str, Any]:
    """A folded (not stored) state as the customer document would show it."""
    return {
        "shop": shop_id, "customer_id": customer_id, "stage": state.stage, "subgroup": state.subgroup,
        "lapsed": state.lapsed, "turn": state.turn, "since": state.since, "history": history_of(state),
        "facts": state.facts, "next": next_to_dict(state.next), "lapse_at": state.lapse_at,
        "points": to_jsonable(points_of(state)), "rule_version": state.rule_version,
        "rewards": [{"key": a.key, "reward_id": a.reward_id, "type": a.type, "customer_id": customer_id,
                     "status": _folded_status(a), "reason": a.ended_reason or a.suspended_reason or award_store.grant_reason(a),
                     "rule_version": a.rule_version or state.rule_version, "scope": a.scope, "scope_ref": a.scope_ref,
                     "stage": a.stage, "turn": a.turn, "granted_at": a.granted_at, "value": a.value,
                     "params": a.params, "reversed_at": None} for a in state.awards],
    }


def _folded_status(award: ladder_mod.ImpliedAward) -> str:
    """The status a folded award would be recorded with (nothing delivered: ``due`` at most)."""
    if award.historical:
        return AwardStatus.HISTORICAL
    if award.ended_at is not None:
        return AwardStatus.ENDED
    if award.suspended_at is not None:
        return AwardStatus.SUSPENDED
    if award.expired_at is not None:
        return AwardStatus.EXPIRED
    return AwardStatus.DUE


def simulate(programme: Programme, compiled: CompiledProgramme, raw_events: Sequence[Mapping[str, Any]],
             as_of: datetime | None = None, trace: bool = False,
             labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Events in, per-customer result (and trace) out; nothing is stored.

    The events are checked as the API checks them (schema, currency, an id reused with other
    content), so what simulates is what the live server would accept; only future times are
    allowed here (a what-if may look ahead)."""
    parsed, names = ledger.parse_labelled(list(raw_events), labels, "invalid events")
    ledger.check_acceptable(programme, parsed, None, names)
    ledger.check_unique(parsed, names)
    if as_of is None:
        as_of = max((e.occurred_at for e in parsed), default=utcnow())
    by_customer: dict[str, list[Any]] = {}
    for event in parsed:
        by_customer.setdefault(event.customer_id, []).append(event)
    out = {}
    for customer_id, evs in by_customer.items():
        state = ladder_mod.fold(programme, compiled, evs, as_of, shop="simulate", customer_id=customer_id)
        doc = state_view(state, "simulate", customer_id)
        doc["privileges"] = privileges_of(doc["rewards"])
        held = [r for r, a in zip(doc["rewards"], state.awards, strict=True) if a.ended_at is None]
        doc["vip"] = vip.document(vip.best(held, as_of), None)  # nothing is stored: no manager
        if trace:
            doc["explain"] = explain_state(programme, compiled, state, doc["rewards"], as_of)
        out[customer_id] = doc
    return {"as_of": as_of, "rule_version": programme.version, "customers": out}
