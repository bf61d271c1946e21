"""The ladder state machine, with the real engine and YAML programmes.

The default programme (rules/ladder.yaml): potential (no condition, lapse 365) → visitor
(checkout or order) → first_purchase (an order; stay 14 days, lapse 180) → regular
(3 orders in 2 active months; stay 30, lapse 120) → advocate (5 orders, 60 % full price,
and a referral / profit 500 / image client; lapse 180).
"""
from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_ladder import rulefile
from loyalty_ladder.awards import reconcile
from loyalty_ladder.engine import get_engine
from loyalty_ladder.events import parse_event
from loyalty_ladder.ladder import Transition, fold

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 30, 10, tzinfo=UTC)
DAY = timedelta(days=1)


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def default():
    programme = rulefile.load_programme(ROOT / "rules")
    return programme, get_engine().compile(programme)


def compile_text(text: str):
    programme = rulefile.load_text(text)
    return programme, get_engine().compile(programme)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


_ids = itertools.count()


def event(kind: str, t: datetime, eid: str | None = None, **extra):
    return parse_event({"id": eid or f"e{next(_ids)}", "type": kind, "customer_id": "c-1",
                        "occurred_at": iso(t), **extra})


def order(oid: str, t: datetime, total: str = "50.00", kind: str = "order_paid", customer=None, **extra):
    top = {"customer": customer} if customer else {}
    return event(kind, t, eid=f"{kind}-{oid}", order={"id": oid, "total": total, "currency": "EUR", **extra}, **top)


def refund(oid: str, t: datetime, amount: str, rid: str = "r1"):
    return event("order_refunded", t, eid=f"refund-{oid}-{rid}", order={"id": oid},
                 refund={"id": rid, "amount": amount})


def run(pc, events, as_of, **kwargs):
    programme, compiled = pc
    return fold(programme, compiled, events, as_of, shop="demo", customer_id="c-1", **kwargs)


def keys(state) -> set[str]:
    return {a.key for a in state.awards}


def award(state, key_tail: str):
    found = [a for a in state.awards if a.key == f"demo/c-1/{key_tail}"]
    assert found, f"no award {key_tail} in {sorted(keys(state))}"
    return found[0]


def stages(state) -> list[tuple[str, datetime, int]]:
    return [(h.stage, h.at, h.turn) for h in state.history]


def regular_history():
    """Three orders over two months; a referral: facts meet every stage from Feb 1 on."""
    return [event("referral", T0, referred_customer_id="c-2"),
            order("o1", T0), order("o2", T0 + DAY), order("o3", T0 + 2 * DAY),
            order("o4", T0 + 2 * DAY + timedelta(hours=1)), order("o5", T0 + 2 * DAY + timedelta(hours=2))]


# ------------------------------------------------------------------ movement
def test_no_skip_a_huge_first_order_makes_first_purchase(default):
    state = run(default, [order("o1", T0, total="5000.00")], T0 + DAY)
    assert state.stage == "first_purchase"
    assert stages(state) == [("potential", T0, 1), ("visitor", T0, 1), ("first_purchase", T0, 1)]
    assert state.facts["net_spent"] == Decimal("5000.00")


def test_facts_meeting_every_stage_still_climb_one_step_per_minimum_stay(default):
    history = regular_history()  # on Feb 1 the facts satisfy regular and advocate
    state = run(default, history, T0 + 5 * DAY)
    assert state.stage == "first_purchase"
    regular_at = T0 + 14 * DAY
    advocate_at = regular_at + 30 * DAY
    state = run(default, history, advocate_at + DAY)
    assert stages(state)[2:] == [("first_purchase", T0, 1), ("regular", regular_at, 1),
                                 ("advocate", advocate_at, 1)]


def test_promotion_exactly_when_the_minimum_stay_ends_without_an_event(default):
    history = regular_history()
    due = T0 + 14 * DAY
    before = run(default, history, due - timedelta(microseconds=1))
    assert before.stage == "first_purchase"
    assert before.next_wake_at == due
    assert before.next is not None and before.next.stage == "regular" and before.next.earliest_at == due
    assert before.next.missing == ()  # the facts are there; only the stay is missing
    after = run(default, history, due)
    assert after.stage == "regular" and after.since == due
    assert award(after, "tag-regular/privilege/regular/1").granted_at == due


def test_pass_through_stages_get_no_rewards(default):
    guest = [order("o1", T0, customer={"email": "g@example.com", "accepts_marketing": True})]
    state = run(default, guest, T0 + DAY)
    assert keys(state) == {"demo/c-1/second-order/stage/first_purchase/1",
                           "demo/c-1/tag-first-purchase/privilege/first_purchase/1"}


def test_stage_rewards_for_customers_who_stay_in_the_stage(default):
    history = [event("customer_created", T0, customer={"accepts_marketing": True}), order("o1", T0 + DAY)]
    state = run(default, history, T0 + 2 * DAY)
    assert keys(state) == {
        "demo/c-1/welcome/stage/potential/1", "demo/c-1/tag-potential/privilege/potential/1",
        "demo/c-1/second-order/stage/first_purchase/1", "demo/c-1/tag-first-purchase/privilege/first_purchase/1",
    }
    welcome = award(state, "welcome/stage/potential/1")
    assert welcome.granted_at == T0 and welcome.params["code"].startswith("WELCOME-")
    assert welcome.params["percent"] == "10"


def test_stage_reward_granted_later_when_its_condition_becomes_true(default):
    history = [event("customer_created", T0),
               event("customer_updated", T0 + 3 * DAY, customer={"accepts_marketing": True})]
    state = run(default, history, T0 + 4 * DAY)
    assert award(state, "welcome/stage/potential/1").granted_at == T0 + 3 * DAY
    assert state.stage == "potential"


def test_no_demotion_when_facts_drop_below_the_stage(default):
    history = [order("o1", T0), order("o2", T0 + DAY), order("o3", T0 + 3 * DAY)]
    regular_at = T0 + 14 * DAY
    assert run(default, history, regular_at).stage == "regular"
    # o1 refunded in full 60 days later: outside the window, so it never un-counts the step
    history.append(refund("o1", T0 + 60 * DAY, "50.00"))
    state = run(default, history, T0 + 61 * DAY)
    assert state.facts["orders_count"] == 2
    assert state.stage == "regular" and not state.lapsed
    assert ("regular", regular_at, 1) in stages(state)


def test_lapse_at_the_deadline_with_win_back_once(default):
    history = [order("o1", T0)]
    deadline = T0 + 180 * DAY
    before = run(default, history, deadline - timedelta(seconds=1))
    assert not before.lapsed and before.lapse_at == deadline
    at = run(default, history, deadline)
    assert at.lapsed and at.stage == "first_purchase" and at.lapse_at is None
    win_back = award(at, "win-back/lapse/first_purchase/1")
    assert win_back.granted_at == deadline and win_back.params["code"].startswith("MISSYOU-")
    later = run(default, history, deadline + 400 * DAY)
    assert later.lapsed and [a.reward_id for a in later.awards].count("win-back") == 1


def test_lapse_clock_restarts_with_each_order(default):
    history = [order("o1", T0), order("o2", T0 + 100 * DAY)]
    state = run(default, history, T0 + 200 * DAY)
    assert not state.lapsed and state.lapse_at == T0 + 280 * DAY


def test_new_turn_after_lapse(default):
    back = T0 + 200 * DAY
    history = [order("o1", T0), order("o2", back)]
    state = run(default, history, back + DAY)
    assert not state.lapsed and state.turn == 2 and state.stage == "first_purchase"
    assert state.history[-1] == Transition("first_purchase", back, 2)
    assert state.since == back
    assert award(state, "win-back/lapse/first_purchase/1").granted_at == T0 + 180 * DAY
    assert award(state, "second-order/stage/first_purchase/2").granted_at == back
    assert award(state, "second-order/stage/first_purchase/1").granted_at == T0
    assert state.lapse_at == back + 180 * DAY


def test_admin_turn_makes_stage_rewards_grantable_again(default):
    turn_at = T0 + 50 * DAY
    before_entry = T0 - 10 * DAY  # a turn before the customer was on the ladder means nothing to them
    # naive times, as SQLite returns them, are UTC
    state = run(default, [order("o1", T0)], T0 + 60 * DAY, shop_turns=[before_entry, turn_at.replace(tzinfo=None)])
    assert state.turn == 2 and state.stage == "first_purchase"
    assert state.history[-1] == Transition("first_purchase", turn_at, 2)
    assert award(state, "second-order/stage/first_purchase/2").granted_at == turn_at
    # a privilege is one holding: the new turn holds the tag on, it grants no second award of it
    assert [k for k in keys(state) if "/tag-first-purchase/" in k] == [
        "demo/c-1/tag-first-purchase/privilege/first_purchase/1"]
    assert state.lapse_at == turn_at + 180 * DAY  # the turn restarts the lapse clock


def test_refund_inside_the_window_undoes_the_step_and_its_rewards(default):
    history = [event("customer_created", T0), order("o1", T0 + DAY, total="80.00")]
    before = run(default, history, T0 + 5 * DAY)
    assert before.stage == "first_purchase"
    assert "demo/c-1/second-order/stage/first_purchase/1" in keys(before)
    history += [refund("o1", T0 + 10 * DAY, "30.00", rid="r1"), refund("o1", T0 + 12 * DAY, "50.00", rid="r2")]
    partial = run(default, history, T0 + 11 * DAY)
    assert partial.stage == "first_purchase"  # a partial refund is no reason to undo anything
    after = run(default, history, T0 + 13 * DAY)
    assert after.stage == "potential"
    assert stages(after) == [("potential", T0, 1)]
    assert after.facts["orders_count"] == 0 and after.facts["refunds_count"] == 2
    assert keys(after) == {"demo/c-1/tag-potential/privilege/potential/1"}
    plan = reconcile(after.awards, [{"key": a.key, "status": "delivered", "params": dict(a.params),
                                     "value": a.value} for a in before.awards])
    assert {r["key"] for r in plan.reverse} == {"demo/c-1/second-order/stage/first_purchase/1",
                                                 "demo/c-1/tag-first-purchase/privilege/first_purchase/1"}


def test_cancellation_inside_the_window_never_counted(default):
    history = [order("o1", T0), event("order_cancelled", T0 + DAY, order={"id": "o1"})]
    state = run(default, history, T0 + 2 * DAY)
    assert state.stage == "potential" and state.facts["refunds_count"] == 1


def test_refund_outside_the_window_reduces_facts_and_points_but_never_demotes(default):
    history = [order("o1", T0), order("o2", T0 + DAY), order("o3", T0 + 3 * DAY),
               order("o4", T0 + 20 * DAY, total="100.00")]
    state = run(default, history, T0 + 21 * DAY)
    assert state.stage == "regular"
    assert award(state, "order-points/order/o4").params["points"] == 100
    assert not any(a.reward_id == "order-points" and a.scope_ref in ("o1", "o2", "o3") for a in state.awards)
    history.append(refund("o4", T0 + 60 * DAY, "40.00"))
    later = run(default, history, T0 + 61 * DAY)
    assert later.stage == "regular"
    assert later.facts["net_spent"] == Decimal("210.00")
    points = award(later, "order-points/order/o4")
    assert points.params["points"] == 60 and points.granted_at == T0 + 20 * DAY
    plan = reconcile(later.awards, [{"key": a.key, "status": "delivered", "params": dict(a.params)}
                                    for a in state.awards])
    assert [a.key for a in plan.update] == ["demo/c-1/order-points/order/o4"] and not plan.reverse


ABSENT = """
programme: {name: absent facts}
stages:
  - id: known
    name: Known
  - id: quiet
    name: Quiet
    when: {not: {fact: days_since_last_order, lt: 30}}
subgroups:
  - id: everyone
    name: Everyone
rewards:
  - id: quiet-tag
    type: tag
    on: {stage: quiet}
    params: {tag: quiet}
  - id: recent-tag
    type: tag
    on: {stage: known}
    when: {fact: days_since_last_order, gte: 0}
    params: {tag: has-ordered}
"""


def test_absent_facts_are_false_and_not_negates():
    pc = compile_text(ABSENT)
    contact = run(pc, [event("customer_created", T0)], T0 + DAY)
    # no orders: days_since_last_order is absent, `lt 30` is false, so `not` holds
    assert contact.stage == "quiet" and contact.facts["days_since_last_order"] is None
    assert "demo/c-1/recent-tag/privilege/known/1" not in keys(contact)
    buyer = run(pc, [order("o1", T0)], T0 + DAY)
    assert buyer.stage == "known" and "demo/c-1/recent-tag/privilege/known/1" in keys(buyer)
    # nothing arrives; 30 days after the order (Mar 1, 10:00) the first month start re-reads the time facts
    assert run(pc, [order("o1", T0)], datetime(2026, 3, 31, tzinfo=UTC)).stage == "known"
    later = run(pc, [order("o1", T0)], datetime(2026, 4, 1, tzinfo=UTC))
    assert later.stage == "quiet" and later.since == datetime(2026, 4, 1, tzinfo=UTC)


PERIODS = """
programme: {name: periods}
stages:
  - id: member
    name: Member
    when: {fact: has_account, eq: true}
subgroups:
  - id: everyone
    name: Everyone
rewards:
  - id: monthly
    type: greeting
    on: {period: month}
    params: {occasion: holiday}
  - id: quarterly
    type: tag
    on: {period: quarter, stages: [member]}
    params: {tag: q}
  - id: yearly
    type: tag
    on: {period: year}
    params: {tag: y}
"""


def test_period_rewards_at_the_start_of_each_period_while_on_the_ladder():
    pc = compile_text(PERIODS)
    joined = datetime(2026, 2, 10, tzinfo=UTC)
    state = run(pc, [event("checkout_started", joined - DAY), event("customer_created", joined)],
                datetime(2026, 5, 15, tzinfo=UTC))
    refs = sorted((a.reward_id, a.scope_ref) for a in state.awards)
    # joined mid-February, mid-Q1 and mid-2026: nothing for those periods
    assert refs == [("monthly", "2026-03"), ("monthly", "2026-04"), ("monthly", "2026-05"),
                    ("quarterly", "2026-Q2")]
    assert award(state, "quarterly/period/2026-Q2").granted_at == datetime(2026, 4, 1, tzinfo=UTC)
    assert state.next_wake_at == datetime(2026, 6, 1, tzinfo=UTC)
    next_year = run(pc, [event("customer_created", joined)], datetime(2027, 1, 1, tzinfo=UTC))
    assert "demo/c-1/yearly/period/2027" in keys(next_year)
    assert "demo/c-1/yearly/period/2026" not in keys(next_year)


def test_default_new_year_greeting_for_regulars(default):
    history = [order("o1", T0), order("o2", T0 + DAY), order("o3", T0 + 3 * DAY)]
    for m in range(3, 12, 3):  # keep ordering so the regular does not lapse
        history.append(order(f"p{m}", datetime(2026, m, 15, tzinfo=UTC)))
    state = run(default, history, datetime(2027, 1, 2, tzinfo=UTC))
    assert award(state, "new-year-greeting/period/2027").granted_at == datetime(2027, 1, 1, tzinfo=UTC)


def test_event_rewards_per_event_within_their_stages(default):
    history = [event("complaint", T0, eid="cx-1", reason="late"), event("review", T0 + DAY, eid="rv-1", rating=5),
               order("o1", T0 + 2 * DAY), event("review", T0 + 3 * DAY, eid="rv-2", rating=4),
               event("complaint", T0 + 3 * DAY, eid="cx-2")]
    state = run(default, history, T0 + 4 * DAY)
    assert {"demo/c-1/apology/event/cx-1", "demo/c-1/apology/event/cx-2",
            "demo/c-1/review-thanks/event/rv-2"} <= keys(state)
    assert "demo/c-1/review-thanks/event/rv-1" not in keys(state)  # reviewed while only potential
    assert award(state, "review-thanks/event/rv-2").params["points"] == 50


def test_subgroup_and_subgroup_filtered_rewards(default):
    history = regular_history()
    history[1] = order("o1", T0, total="2000.00")
    state = run(default, history, T0 + 50 * DAY)
    assert state.stage == "advocate" and state.subgroup == "profitable"
    assert "demo/c-1/vip/privilege/advocate/1" in keys(state)
    small = run(default, regular_history(), T0 + 50 * DAY)
    assert small.stage == "advocate" and small.subgroup == "average"  # profit 75: 30 % of 250
    assert "demo/c-1/vip/privilege/advocate/1" not in keys(small)


def test_next_step_lists_failing_comparisons(default):
    state = run(default, [order("o1", T0)], T0 + 20 * DAY)
    assert state.next is not None and state.next.stage == "regular"
    missing = {m["fact"]: m for m in state.next.missing}
    assert set(missing) == {"orders_count", "active_months_12m"}
    assert missing["orders_count"]["op"] == "gte" and missing["orders_count"]["current"] == 1
    assert state.next.earliest_at == T0 + 14 * DAY
    top = run(default, regular_history(), T0 + 60 * DAY)
    assert top.stage == "advocate" and top.next is None


def test_live_from_marks_earlier_awards_historical(default):
    live_from = T0 + 10 * DAY
    history = [event("customer_created", T0), order("o1", T0 + 5 * DAY)]
    state = run(default, history, T0 + 21 * DAY, live_from=live_from)
    assert award(state, "second-order/stage/first_purchase/1").historical is True
    # the potential tag ended before the shop went live: history; the first-purchase tag is held
    # when it goes live: delivered then
    assert award(state, "tag-potential/privilege/potential/1").historical is True
    assert award(state, "tag-first-purchase/privilege/first_purchase/1").historical is False


def test_before_entering_nothing_is_known(default):
    state = run(default, [], T0)
    assert state.stage is None and state.turn == 1 and state.history == () and state.awards == ()
    assert state.next is not None and state.next.stage == "potential"
    assert state.next_wake_at is None and state.rule_version == default[0].version


def test_as_of_is_not_a_wake_up(default):
    history = regular_history()
    t1, t2 = T0 + 20 * DAY, T0 + 40 * DAY
    early, late = run(default, history, t1), run(default, history, t2)
    assert [h for h in late.history if h.at <= t1] == list(early.history)
    assert {a.key for a in late.awards if a.granted_at <= t1} == keys(early)


def test_evaluations_are_memoised_within_a_fold(default):
    programme, compiled = default
    calls = []

    class Counting:
        def evaluate(self, facts, trace=False):
            calls.append(trace)
            return compiled.evaluate(facts, trace=trace)

    history = [order("o1", T0)] + [event("customer_updated", T0 + i * DAY, customer={"locale": f"l{i}"})
                                   for i in range(1, 30)]
    state = fold(programme, Counting(), history, T0 + 60 * DAY)
    # 30 event wake-ups, 2 month starts, a stay end: the facts the programme reads never change
    assert calls.count(False) == 1 and calls.count(True) == 1
    assert state.stage == "first_purchase"


# ------------------------------------------------------------------ order independence
_T = [T0 + timedelta(days=d) for d in (0, 0, 1, 3, 16, 40, 45, 75, 200, 230)]
POOL = [
    event("customer_created", _T[0], eid="p-created", customer={"accepts_marketing": True}),
    order("a", _T[1]), event("checkout_started", _T[1], eid="p-checkout"),
    order("b", _T[2], total="120.00"), order("c", _T[3], kind="order_placed", payment={"method": "terms"}),
    event("referral", _T[4], eid="p-ref", referred_customer_id="c-9"),
    refund("b", _T[4], "120.00"),  # inside the window: b never counted
    order("d", _T[5], total="300.00"), event("complaint", _T[5], eid="p-complaint"),
    order("e", _T[6]), order("f", _T[7], total="80.00"), refund("f", _T[8], "20.00"),
    order("g", _T[9]), event("review", _T[9], eid="p-review", rating=5),
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=20), st.randoms(use_true_random=False))
def test_permutations_and_duplicates_give_the_same_state(default, picks, rnd):
    chosen = [POOL[i] for i in picks]
    as_of = T0 + 260 * DAY
    reference = run(default, sorted(set(chosen), key=lambda e: e.sort_key), as_of)
    shuffled = chosen + [POOL[i] for i in picks[: len(picks) // 2]]
    rnd.shuffle(shuffled)
    state = run(default, shuffled, as_of)
    assert (state.stage, state.lapsed, state.turn, state.history) == (
        reference.stage, reference.lapsed, reference.turn, reference.history)
    assert keys(state) == keys(reference)
    assert state.facts == reference.facts


def test_a_cancelled_order_restored_by_the_shop_counts_again(default):
    """WooCommerce order.restored: the cancellation is undone, the step it made comes back."""
    first = order("o1", T0)
    cancelled = event("order_cancelled", T0 + DAY, eid="cancel-o1", order={"id": "o1"})
    restored = event("order_restored", T0 + 3 * DAY, eid="restore-o1", order={"id": "o1"})
    as_of = T0 + 5 * DAY
    without = run(default, [first, cancelled], as_of)
    assert without.stage != "first_purchase" and without.facts["orders_count"] == 0
    assert not any(a.scope == "stage" and a.stage == "first_purchase" for a in without.awards)
    again = run(default, [first, cancelled, restored], as_of)
    assert again.stage == "first_purchase" and again.facts["orders_count"] == 1
    assert again.facts["net_spent"] == Decimal("50.00")


def test_points_of_an_order_refunded_in_full_outside_the_window_are_reversed(default):
    history = [order("o1", T0), order("o2", T0 + DAY), order("o3", T0 + 3 * DAY),
               order("o4", T0 + 20 * DAY, total="100.00")]
    state = run(default, history, T0 + 21 * DAY)
    assert award(state, "order-points/order/o4").params["points"] == 100
    history.append(refund("o4", T0 + 60 * DAY, "100.00"))  # in full, 40 days later: outside the window
    later = run(default, history, T0 + 61 * DAY)
    assert later.stage == "regular"  # never a demotion
    assert "demo/c-1/order-points/order/o4" not in keys(later)  # nothing left to earn: reversed
    plan = reconcile(later.awards, [{"key": a.key, "status": "delivered", "params": dict(a.params)}
                                    for a in state.awards])
    assert [r["key"] for r in plan.reverse] == ["demo/c-1/order-points/order/o4"]
