"""The fold over a timeline of programme versions, and manual inputs applied at their instant.

An activation at A decides every wake-up at or after A and never re-decides what came before:
awards decided before A keep their key, values and ``rule_version`` unless the customer's own
history changes them (a refund inside the window).  These tests fold real YAML programmes with
the real engine.
"""
from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_ladder import rulefile
from loyalty_ladder.engine import get_engine
from loyalty_ladder.events import parse_event
from loyalty_ladder.ladder import fold, holding_instant
from loyalty_ladder.timeline import Exclusions, Segment, ShopInputs, Timeline

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 30, 10, tzinfo=UTC)
DAY = timedelta(days=1)

BASE = """
programme: {currency: EUR, refund_window_days: %(window)d}
stages:
  - {id: potential, lapse_after_days: 365}
  - id: first_purchase
    when: {fact: orders_count, gte: 1}
    min_stay_days: %(stay)d
    lapse_after_days: %(lapse)d
  - id: %(regular)s
    when: {fact: orders_count, gte: 3}
    lapse_after_days: 120
rewards:
  - id: welcome
    type: discount
    on: {stage: first_purchase}
    params: {percent: %(percent)d, expires_days: 30, code_prefix: HI}
  - id: points
    type: points
    on: {order: any}
    params: {points_per_unit: %(points)d}
  - id: regular-gift
    type: discount
    on: {stage: %(regular)s}
    params: {percent: 15, expires_days: 30, code_prefix: REG}
"""


def programme(window=30, stay=14, lapse=180, regular="regular", percent=10, points=1):
    text = BASE % {"window": window, "stay": stay, "lapse": lapse, "regular": regular, "percent": percent,
                   "points": points}
    p = rulefile.load_text(text)
    return p, get_engine().compile(p)


V1 = programme()
V2 = programme(percent=12, points=2)


def timeline(*segments):
    """timeline((V1, None), (V2, at, {stage map}))"""
    return Timeline(tuple(Segment(seg[1], seg[0][0], seg[0][1], seg[2] if len(seg) > 2 else {}) for seg in segments))


_ids = itertools.count()


def iso(t):
    return t.isoformat().replace("+00:00", "Z")


def ev(kind, t, eid=None, **extra):
    return parse_event({"id": eid or f"e{next(_ids)}", "type": kind, "customer_id": "c-1", "occurred_at": iso(t),
                        **extra})


def order(oid, t, total="50.00", **extra):
    return ev("order_paid", t, eid=f"paid-{oid}", order={"id": oid, "total": total, "currency": "EUR", **extra})


def refund(oid, t, amount):
    return ev("order_refunded", t, eid=f"refund-{oid}", order={"id": oid}, refund={"id": f"r-{oid}", "amount": amount})


def adjust(kind, t, **data):
    return ev(kind, t, eid=f"admin-{kind}-{next(_ids)}", adjustment={"author": "ana", "reason": "test", **data})


def run(source, events, as_of, **kwargs):
    if isinstance(source, Timeline):
        return fold(source, None, events, as_of, shop="s", customer_id="c-1", **kwargs)
    return fold(source[0], source[1], events, as_of, shop="s", customer_id="c-1", **kwargs)


def by_reward(state, reward_id):
    return [a for a in state.awards if a.reward_id == reward_id]


def as_record(award):
    """What the awards table would keep of an award: everything but processing times."""
    return dataclasses.asdict(award)


# ------------------------------------------------------------------ one version
def test_a_one_version_timeline_is_the_plain_fold():
    events = [order("o1", T0), order("o2", T0 + 20 * DAY), order("o3", T0 + 50 * DAY)]
    as_of = T0 + 90 * DAY
    plain, timed = run(V1, events, as_of), run(timeline((V1, None)), events, as_of)
    assert plain == timed
    assert {a.rule_version for a in plain.awards} == {V1[0].version}


def test_activating_the_same_programme_changes_nothing_but_the_wake_up():
    events = [order("o1", T0), order("o2", T0 + 20 * DAY), order("o3", T0 + 50 * DAY)]
    as_of = T0 + 90 * DAY
    plain = run(V1, events, as_of)
    again = run(timeline((V1, None), (V1, T0 + 30 * DAY)), events, as_of)
    assert [as_record(a) for a in again.awards] == [as_record(a) for a in plain.awards]
    assert (again.stage, again.turn, again.since, again.history) == (plain.stage, plain.turn, plain.since, plain.history)


# ------------------------------------------------------------------ never retroactive
def test_an_activation_keeps_what_was_decided_before_it():
    a = T0 + 10 * DAY
    events = [order("o1", T0), order("o2", T0 + 20 * DAY)]
    state = run(timeline((V1, None), (V2, a)), events, T0 + 40 * DAY)
    welcome, = by_reward(state, "welcome")
    assert welcome.params["percent"] == "10" and welcome.rule_version == V1[0].version
    first, second = sorted(by_reward(state, "points"), key=lambda x: x.granted_at)
    # the order before A earns v1's points (1 per euro); the one after, v2's (2 per euro)
    assert (first.params["points"], first.rule_version) == (50, V1[0].version)
    assert (second.params["points"], second.rule_version) == (100, V2[0].version)
    assert state.rule_version == V2[0].version


def test_a_customer_reaching_the_stage_after_the_activation_gets_the_new_values():
    a = T0 - 10 * DAY
    state = run(timeline((V1, None), (V2, a)), [order("o1", T0)], T0 + DAY)
    welcome, = by_reward(state, "welcome")
    assert welcome.params["percent"] == "12" and welcome.rule_version == V2[0].version


def test_a_refund_inside_the_window_still_undoes_an_award_decided_before_the_activation():
    a = T0 + 5 * DAY
    events = [order("o1", T0), refund("o1", T0 + 10 * DAY, "50.00")]
    state = run(timeline((V1, None), (V2, a)), events, T0 + 20 * DAY)
    assert by_reward(state, "welcome") == [] and by_reward(state, "points") == []


def test_the_refund_window_is_the_one_active_at_the_orders_first_event():
    short = programme(window=3)
    a = T0 + DAY  # the short window is activated after the order was placed
    events = [order("o1", T0), refund("o1", T0 + 10 * DAY, "50.00")]
    state = run(timeline((V1, None), (short, a)), events, T0 + 20 * DAY)
    assert by_reward(state, "welcome") == []  # v1's 30-day window: the order never counted
    # an order placed after the activation gets the 3-day window: its late refund does not undo it
    events = [order("o2", a + DAY), refund("o2", a + 10 * DAY, "50.00")]
    state = run(timeline((V1, None), (short, a)), events, a + 20 * DAY)
    assert len(by_reward(state, "welcome")) == 1


def test_an_activation_is_a_wake_up_that_grants_the_new_versions_stage_rewards():
    extra = rulefile.load_text(BASE % {"window": 30, "stay": 14, "lapse": 180, "regular": "regular", "percent": 10,
                                       "points": 1} + """
  - id: thank-you
    type: tag
    on: {stage: first_purchase}
    params: {tag: thanked}
""")
    v3 = (extra, get_engine().compile(extra))
    a = T0 + 5 * DAY
    state = run(timeline((V1, None), (v3, a)), [order("o1", T0)], T0 + 6 * DAY)
    thanks, = by_reward(state, "thank-you")
    assert thanks.granted_at == a and thanks.rule_version == extra.version
    # stage, turn and since are kept: the activation is not a turn
    assert (state.stage, state.turn, state.since) == ("first_purchase", 1, T0)
    assert [h.stage for h in state.history] == ["potential", "first_purchase"]


def test_a_new_minimum_stay_counts_from_the_same_since_and_a_past_deadline_falls_at_the_activation():
    quick_lapse = programme(lapse=20)
    a = T0 + 40 * DAY  # 20 days after the only order passed long ago
    state = run(timeline((V1, None), (quick_lapse, a)), [order("o1", T0)], T0 + 50 * DAY)
    assert state.lapsed and state.lapsed_at == a and state.since == T0
    # under v1 alone the customer is not lapsed
    assert not run(V1, [order("o1", T0)], T0 + 50 * DAY).lapsed


def test_a_stage_map_moves_customers_of_a_dropped_stage_keeping_since_and_turn():
    renamed = programme(regular="loyal")
    events = [order("o1", T0), order("o2", T0 + 20 * DAY), order("o3", T0 + 40 * DAY)]
    a = T0 + 60 * DAY
    state = run(timeline((V1, None), (renamed, a, {"regular": "loyal"})), events, T0 + 70 * DAY)
    assert state.stage == "loyal" and state.since == T0 + 40 * DAY and state.turn == 1
    # the mapped stage is the same step: its stage reward is not granted again under the new id
    gift_old, = by_reward(state, "regular-gift")
    assert gift_old.stage == "regular" and gift_old.granted_at == T0 + 40 * DAY
    assert gift_old.rule_version == V1[0].version
    assert state.rule_version == renamed[0].version


def test_period_keys_already_granted_are_never_revalued():
    text = """
programme: {currency: EUR}
stages:
  - {id: potential}
  - {id: buyer, when: {fact: orders_count, gte: 1}}
rewards:
  - {id: monthly, type: points, on: {period: month}, params: {points: %d}}
"""
    p1, p2 = rulefile.load_text(text % 5), rulefile.load_text(text % 9)
    tl = Timeline((Segment(None, p1, get_engine().compile(p1)),
                   Segment(datetime(2026, 3, 15, tzinfo=UTC), p2, get_engine().compile(p2))))
    state = run(tl, [order("o1", T0)], datetime(2026, 5, 2, tzinfo=UTC))
    values = {a.scope_ref: (a.params["points"], a.rule_version) for a in state.awards if a.reward_id == "monthly"}
    assert values == {"2026-02": (5, p1.version), "2026-03": (5, p1.version),
                      "2026-04": (9, p2.version), "2026-05": (9, p2.version)}


# ------------------------------------------------------------------ the property
_kinds = st.sampled_from(["order", "refund_full", "refund_part"])


@st.composite
def histories(draw):
    n = draw(st.integers(1, 7))
    events, orders = [], []
    for i in range(n):
        t = T0 + timedelta(hours=draw(st.integers(0, 24 * 200)))
        kind = draw(_kinds)
        if kind == "order" or not orders:
            oid = f"o{i}"
            orders.append(oid)
            events.append(order(oid, t, total=f"{draw(st.integers(10, 300))}.00"))
        else:
            oid = draw(st.sampled_from(orders))
            events.append(refund(oid, t, "300.00" if kind == "refund_full" else "5.00"))
    return events


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(histories(), st.integers(0, 24 * 220), st.sampled_from([V2, programme(stay=0, lapse=30, percent=20),
                                                                 programme(window=2, points=3)]))
def test_awards_decided_before_an_activation_are_identical_with_and_without_it(events, hours, new):
    a = T0 + timedelta(hours=hours)
    as_of = T0 + 240 * DAY
    without = run(V1, events, as_of)
    with_it = run(timeline((V1, None), (new, a)), events, as_of)
    before = lambda state: sorted((as_record(x) for x in state.awards if x.granted_at < a), key=lambda r: r["key"])
    assert before(with_it) == before(without)
    assert [h for h in with_it.history if h.at < a] == [h for h in without.history if h.at < a]


# ------------------------------------------------------------------ manual inputs
def test_stage_set_moves_up_and_only_down_when_forced():
    events = [order("o1", T0), adjust("stage_set", T0 + DAY, stage="regular")]
    state = run(V1, events, T0 + 2 * DAY)
    assert state.stage == "regular" and state.since == T0 + DAY
    assert len(by_reward(state, "regular-gift")) == 1
    down = [*events, adjust("stage_set", T0 + 3 * DAY, stage="first_purchase")]
    assert run(V1, down, T0 + 4 * DAY).stage == "regular"  # not forced: ignored
    forced = [*events, adjust("stage_set", T0 + 3 * DAY, stage="first_purchase", force=True)]
    assert run(V1, forced, T0 + 4 * DAY).stage == "first_purchase"
    # even into a stage without a minimum stay: the placement holds at later wake-ups (month
    # starts, other events) until the customer's next order; then the rules decide again
    to_potential = [*events, adjust("stage_set", T0 + 3 * DAY, stage="potential", force=True)]
    state = run(V1, [*to_potential, ev("checkout_started", T0 + 4 * DAY)], T0 + 40 * DAY)
    assert (state.stage, state.since) == ("potential", T0 + 3 * DAY)
    later = run(V1, [*to_potential, order("o2", T0 + 45 * DAY)], T0 + 46 * DAY)
    assert later.stage == "first_purchase"


def test_a_manual_turn_starts_a_new_turn_keeping_the_stage():
    events = [order("o1", T0), adjust("turn_started", T0 + 5 * DAY)]
    state = run(V1, events, T0 + 6 * DAY)
    assert (state.stage, state.turn, state.since) == ("first_purchase", 2, T0 + 5 * DAY)
    assert {a.scope_ref for a in by_reward(state, "welcome")} == {"first_purchase/1", "first_purchase/2"}


def test_manual_grant_and_revoke_are_keyed_and_carry_their_reason():
    grant = adjust("reward_granted", T0 + DAY, reward="regular-gift")
    state = run(V1, [order("o1", T0), grant], T0 + 2 * DAY)
    manual, = [a for a in state.awards if a.scope == "manual"]
    assert manual.key == f"s/c-1/regular-gift/manual/{grant.id}" and "ana" in manual.note
    welcome = by_reward(state, "welcome")[0]
    revoke = adjust("reward_revoked", T0 + 3 * DAY, award_key=welcome.key)
    state = run(V1, [order("o1", T0), grant, revoke], T0 + 4 * DAY)
    assert welcome.key not in {a.key for a in state.awards}
    assert state.revoked == {welcome.key: "revoked by ana: test"}


def test_manual_events_do_not_count_as_customer_activity():
    events = [order("o1", T0)]
    plain = run(V1, events, T0 + 100 * DAY)
    with_turn = run(V1, [*events, adjust("stage_set", T0 + 50 * DAY, stage="first_purchase")], T0 + 100 * DAY)
    assert with_turn.facts == plain.facts


def test_excluded_customers_are_never_evaluated_from_the_exclusions_instant():
    staff = {"customer": {"email": "bo@myshop.example", "tags": ["staff"]}}
    first = parse_event({"id": "c0", "type": "customer_updated", "customer_id": "c-1", "occurred_at": iso(T0 - DAY),
                         **staff})
    rules = ShopInputs.of(exclusions=[(T0 - 2 * DAY, Exclusions(emails=("*@MYSHOP.example",)))])
    state = run(V1, [first, order("o1", T0)], T0 + DAY, shop_inputs=rules)
    assert state.stage is None and state.awards == () and state.excluded == "e-mail matches *@MYSHOP.example"
    by_tag = ShopInputs.of(exclusions=[(T0 + 20 * DAY, Exclusions(tags=("staff",)))])
    state = run(V1, [first, order("o1", T0), order("o2", T0 + 30 * DAY)], T0 + 40 * DAY, shop_inputs=by_tag)
    # decided before the exclusion stays; nothing after it
    assert len(by_reward(state, "welcome")) == 1 and len(by_reward(state, "points")) == 1
    assert state.excluded == "tag staff"


def test_an_unknown_reward_or_stage_in_a_manual_event_is_a_no_op_not_a_crash():
    events = [order("o1", T0), adjust("stage_set", T0 + DAY, stage="gone"),
              adjust("reward_granted", T0 + DAY, reward="gone")]
    state = run(V1, events, T0 + 2 * DAY)
    assert state.stage == "first_purchase" and not [a for a in state.awards if a.scope == "manual"]


@pytest.mark.parametrize("bad", [(), ((V1, T0), (V2, None))])
def test_a_timeline_must_be_in_time_order(bad):
    with pytest.raises(ValueError):
        timeline(*bad)


# ------------------------------------------------------------------ privileges at an activation
TAGGED = BASE + """
  - id: buyer-tag
    type: tag
    on: {stage: first_purchase}
    params: {tag: %(tag)s}
"""


def tagged(tag="buyer"):
    p = rulefile.load_text(TAGGED % {"window": 30, "stay": 14, "lapse": 180, "regular": "regular", "percent": 10,
                                     "points": 1, "tag": tag})
    return p, get_engine().compile(p)


def test_a_privilege_the_new_version_drops_ends_at_the_activation_and_is_not_reversed():
    old, a = tagged(), T0 + 5 * DAY
    state = run(timeline((old, None), (V1, a)), [order("o1", T0)], T0 + 6 * DAY)
    tag, = by_reward(state, "buyer-tag")
    assert (tag.ended_at, tag.rule_version) == (a, old[0].version)
    assert tag.ended_reason == f"ended: version {V1[0].version} no longer grants it"
    # a grant (the welcome code) is never ended by an activation
    assert by_reward(state, "welcome")[0].ended_at is None


def test_a_privilege_whose_parameters_changed_ends_and_starts_again_with_the_new_values():
    old, new, a = tagged("buyer"), tagged("customer"), T0 + 5 * DAY
    state = run(timeline((old, None), (new, a)), [order("o1", T0)], T0 + 6 * DAY)
    ended, started = sorted(by_reward(state, "buyer-tag"), key=lambda x: x.granted_at)
    assert (ended.params["tag"], ended.ended_at, ended.key) == ("buyer", a,
                                                                "s/c-1/buyer-tag/privilege/first_purchase/1")
    assert (started.params["tag"], started.granted_at, started.ended_at) == ("customer", a, None)
    # a new holding, started at the activation: keyed by its instant (semantics 4)
    assert started.key == f"s/c-1/buyer-tag/privilege/{holding_instant(a)}"
    assert started.rule_version == new[0].version


def test_an_unchanged_privilege_is_held_on_across_an_activation():
    old, a = tagged(), T0 + 5 * DAY
    # the same privilege in a version that changes a grant (the welcome percentage)
    changed_grant = rulefile.load_text(TAGGED % {"window": 30, "stay": 14, "lapse": 180, "regular": "regular",
                                                  "percent": 15, "points": 1, "tag": "buyer"})
    state = run(timeline((old, None), ((changed_grant, get_engine().compile(changed_grant)), a)),
                [order("o1", T0)], a + DAY)
    tag, = by_reward(state, "buyer-tag")
    assert tag.ended_at is None and tag.rule_version == old[0].version


def test_an_upgrade_of_the_fold_semantics_is_a_wake_up_on_the_ladder():
    upgrade = T0 + 3 * DAY + timedelta(hours=5)
    tl = Timeline(timeline((V1, None)).segments, semantics=((None, 0), (upgrade, 1)))
    assert (tl.semantics_at(upgrade - DAY), tl.semantics_at(upgrade)) == (0, 1)
    after_month_start = datetime(2026, 2, 1, 1, tzinfo=UTC)
    assert run(tl, [order("o1", T0)], after_month_start).next_wake_at == upgrade
    assert run(timeline((V1, None)), [order("o1", T0)], after_month_start).next_wake_at == T0 + 14 * DAY


def test_a_privilege_the_new_version_no_longer_allows_to_this_customer_ends_at_the_activation():
    narrowed = rulefile.load_text((TAGGED % {"window": 30, "stay": 14, "lapse": 180, "regular": "regular",
                                             "percent": 10, "points": 1, "tag": "buyer"}).replace(
        "    on: {stage: first_purchase}\n    params: {tag: buyer}",
        "    on: {stage: first_purchase}\n    when: {fact: orders_count, gte: 2}\n    params: {tag: buyer}"))
    old, a = tagged(), T0 + 5 * DAY
    state = run(timeline((old, None), ((narrowed, get_engine().compile(narrowed)), a)), [order("o1", T0)], a + DAY)
    tag, = by_reward(state, "buyer-tag")
    assert tag.ended_at == a and tag.ended_reason == f"ended: its condition in version {narrowed.version} does not hold"
    # one more order and the same activation allows it: held on
    state = run(timeline((old, None), ((narrowed, get_engine().compile(narrowed)), a)),
                [order("o1", T0), order("o2", T0 + DAY)], a + DAY)
    assert by_reward(state, "buyer-tag")[0].ended_at is None


# ------------------------------------------------------------------ semantics 2: privileges of the stage one is in
STAGE_TAGS = """
programme: {currency: EUR}
stages:
  - {id: potential, lapse_after_days: 365}
  - id: first_purchase
    when: {fact: orders_count, gte: 1}
    lapse_after_days: 60
  - id: regular
    when: {fact: orders_count, gte: 3}
rewards:
  - {id: tag-potential, type: tag, on: {stage: potential}, params: {tag: t-potential}}
  - {id: tag-first, type: tag, on: {stage: first_purchase}, params: {tag: t-first}}
  - {id: tag-regular, type: tag, on: {stage: regular}, params: {tag: t-regular}}
  - {id: hello, type: discount, on: {stage: potential}, params: {amount: "5.00", expires_days: 30, code_prefix: HI}}
"""
STAGE_TAGS_P = rulefile.load_text(STAGE_TAGS)
STAGE_TAGS_EV = get_engine().compile(STAGE_TAGS_P)


def held(state):
    return sorted(a.params["tag"] for a in state.awards if a.type == "tag" and a.ended_at is None)


#: the semantics 2 tests fold under semantics 2 (semantics 4 holds a privilege as one holding)
S2 = ((None, 2),)


def sem2(programme, evaluator):
    return Timeline((Segment(None, programme, evaluator),), semantics=S2)


def test_semantics_2_a_customer_holds_only_the_tag_of_their_stage():
    events = [ev("customer_created", T0), order("o1", T0 + 2 * DAY), order("o2", T0 + 9 * DAY),
              order("o3", T0 + 20 * DAY)]
    state = run(sem2(STAGE_TAGS_P, STAGE_TAGS_EV), events, T0 + 30 * DAY)
    assert state.stage == "regular" and held(state) == ["t-regular"]
    ended = {a.reward_id: (a.ended_at, a.ended_reason) for a in state.awards if a.ended_at is not None}
    assert ended == {"tag-potential": (T0 + 2 * DAY, "ended: left stage potential for first_purchase"),
                     "tag-first": (T0 + 20 * DAY, "ended: left stage first_purchase for regular")}
    # a grant is not a privilege: the welcome code of potential stays the customer's
    assert by_reward(state, "hello")[0].ended_at is None


def test_semantics_2_a_new_turn_in_the_same_stage_keeps_the_tag():
    # lapsed at first purchase (60 days), back with an order: a new turn in the same stage
    events = [ev("customer_created", T0), order("o1", T0 + DAY), order("o2", T0 + 100 * DAY)]
    state = run(sem2(STAGE_TAGS_P, STAGE_TAGS_EV), events, T0 + 101 * DAY)
    assert state.stage == "first_purchase" and state.turn == 2
    firsts = by_reward(state, "tag-first")
    assert [a.turn for a in firsts] == [1, 2] and all(a.ended_at is None for a in firsts)


def test_semantics_2_a_stage_set_down_by_hand_ends_the_higher_tag():
    events = [ev("customer_created", T0), order("o1", T0 + DAY), order("o2", T0 + 2 * DAY), order("o3", T0 + 3 * DAY),
              adjust("stage_set", T0 + 10 * DAY, stage="first_purchase", force=True)]
    state = run(sem2(STAGE_TAGS_P, STAGE_TAGS_EV), events, T0 + 11 * DAY)
    assert state.stage == "first_purchase" and held(state) == ["t-first"]  # back in first purchase: its tag again
    regular = by_reward(state, "tag-regular")[0]
    assert (regular.ended_at, regular.ended_reason) == (T0 + 10 * DAY, "ended: left stage regular for first_purchase")
    # climbing back in the same turn holds the regular tag again, under the same key
    back = run(sem2(STAGE_TAGS_P, STAGE_TAGS_EV), [*events, order("o4", T0 + 12 * DAY)], T0 + 13 * DAY)
    assert back.stage == "regular" and held(back) == ["t-regular"]
    assert [a.key for a in back.awards if a.reward_id == "tag-regular"] == [regular.key]


def test_semantics_2_a_stage_map_moves_the_tag_with_the_customer():
    renamed = rulefile.load_text(STAGE_TAGS.replace("id: regular\n", "id: loyal\n").replace("stage: regular}",
                                                                                             "stage: loyal}"))
    events = [ev("customer_created", T0), order("o1", T0 + DAY), order("o2", T0 + 2 * DAY), order("o3", T0 + 3 * DAY)]
    line = Timeline((Segment(None, STAGE_TAGS_P, STAGE_TAGS_EV),
                     Segment(T0 + 30 * DAY, renamed, get_engine().compile(renamed), {"regular": "loyal"})),
                    semantics=S2)
    state = run(line, events, T0 + 40 * DAY)
    assert state.stage == "loyal" and held(state) == ["t-regular"]


def test_semantics_2_a_privilege_of_several_stages_is_held_on_when_climbing_between_them():
    both = rulefile.load_text(STAGE_TAGS + "  - {id: tag-customer, type: tag, on: {stage: [first_purchase, regular]}, "
                                           "params: {tag: t-customer}}\n")
    events = [ev("customer_created", T0), order("o1", T0 + DAY), order("o2", T0 + 2 * DAY), order("o3", T0 + 3 * DAY)]
    state = run(sem2(both, get_engine().compile(both)), events, T0 + 5 * DAY)
    # no end at the climb: the shop is never asked to remove and add the same tag at once
    assert [(a.scope_ref, a.ended_at) for a in by_reward(state, "tag-customer")] == [("first_purchase/1", None),
                                                                                     ("regular/1", None)]


def test_semantics_2_an_activation_ends_every_turns_copy_of_a_privilege_it_no_longer_allows():
    stricter = rulefile.load_text(STAGE_TAGS.replace(
        "{id: tag-first, type: tag, on: {stage: first_purchase}, params: {tag: t-first}}",
        "{id: tag-first, type: tag, on: {stage: first_purchase}, when: {fact: orders_count, gte: 5}, "
        "params: {tag: t-first}}"))
    events = [ev("customer_created", T0), order("o1", T0 + DAY), order("o2", T0 + 100 * DAY)]  # turn 2 after a lapse
    line = Timeline((Segment(None, STAGE_TAGS_P, STAGE_TAGS_EV),
                     Segment(T0 + 110 * DAY, stricter, get_engine().compile(stricter))), semantics=S2)
    state = run(line, events, T0 + 111 * DAY)
    assert state.turn == 2 and held(state) == []
    assert {a.scope_ref: a.ended_at for a in by_reward(state, "tag-first")} == {
        "first_purchase/1": T0 + 110 * DAY, "first_purchase/2": T0 + 110 * DAY}


def test_the_semantics_2_upgrade_ends_left_behind_tags_at_its_instant_and_not_before():
    events = [ev("customer_created", T0), order("o1", T0 + 2 * DAY), order("o2", T0 + 9 * DAY),
              order("o3", T0 + 20 * DAY)]
    upgrade = T0 + 40 * DAY
    old = Timeline((Segment(None, STAGE_TAGS_P, STAGE_TAGS_EV),), semantics=((None, 1),))
    upgraded = Timeline((Segment(None, STAGE_TAGS_P, STAGE_TAGS_EV),), semantics=((None, 1), (upgrade, 2)))
    before = run(old, events, T0 + 60 * DAY)
    assert held(before) == ["t-first", "t-potential", "t-regular"]  # semantics 1 kept them all
    assert run(upgraded, events, upgrade - DAY).awards == run(old, events, upgrade - DAY).awards
    after = run(upgraded, events, T0 + 60 * DAY)
    assert held(after) == ["t-regular"]
    assert {a.reward_id: a.ended_at for a in after.awards if a.ended_at is not None} == {
        "tag-potential": upgrade, "tag-first": upgrade}


# ------------------------------------------------------------------ semantics 4: holdings, suspension, expiry
HOLDINGS = STAGE_TAGS + """  - {id: vip, type: vip_service, on: {stage: first_purchase}, params: {tag: vip}}
  - {id: tag-customer, type: tag, on: {stage: [first_purchase, regular]}, params: {tag: t-customer}}
"""
HOLDINGS_P = rulefile.load_text(HOLDINGS)
HOLDINGS_EV = get_engine().compile(HOLDINGS_P)


def test_semantics_4_a_new_turn_holds_the_same_holding():
    # lapsed at first purchase (60 days), back with an order: a new turn, the same holding
    events = [ev("customer_created", T0), order("o1", T0 + DAY), order("o2", T0 + 100 * DAY)]
    state = run((HOLDINGS_P, HOLDINGS_EV), events, T0 + 101 * DAY)
    assert state.stage == "first_purchase" and state.turn == 2
    assert [(a.key, a.ended_at) for a in by_reward(state, "tag-first")] == [
        ("s/c-1/tag-first/privilege/first_purchase/1", None)]
    # a grant is still granted per stage and turn
    assert [a.key for a in by_reward(state, "hello")] == ["s/c-1/hello/stage/potential/1"]


def test_semantics_4_a_privilege_of_several_stages_is_one_holding():
    events = [ev("customer_created", T0), order("o1", T0 + DAY), order("o2", T0 + 2 * DAY), order("o3", T0 + 3 * DAY)]
    state = run((HOLDINGS_P, HOLDINGS_EV), events, T0 + 5 * DAY)
    assert state.stage == "regular"
    assert [(a.key, a.ended_at) for a in by_reward(state, "tag-customer")] == [
        ("s/c-1/tag-customer/privilege/first_purchase/1", None)]


def test_semantics_4_a_privilege_started_again_is_a_new_holding_keyed_by_its_instant():
    back_down = T0 + 10 * DAY
    events = [ev("customer_created", T0), order("o1", T0 + DAY), order("o2", T0 + 2 * DAY), order("o3", T0 + 3 * DAY),
              adjust("stage_set", back_down, stage="first_purchase", force=True), order("o4", T0 + 12 * DAY)]
    state = run((HOLDINGS_P, HOLDINGS_EV), events, T0 + 13 * DAY)
    assert state.stage == "regular" and held(state) == ["t-customer", "t-regular"]
    regulars = sorted(by_reward(state, "tag-regular"), key=lambda a: a.granted_at)
    assert [(a.key, a.ended_at) for a in regulars] == [
        ("s/c-1/tag-regular/privilege/regular/1", back_down),
        (f"s/c-1/tag-regular/privilege/{holding_instant(T0 + 12 * DAY)}", None)]


def test_semantics_4_vip_service_is_suspended_while_lapsed_and_restored_at_the_next_turn():
    lapse = T0 + DAY + 60 * DAY
    events = [ev("customer_created", T0), order("o1", T0 + DAY)]
    lapsed = run((HOLDINGS_P, HOLDINGS_EV), events, lapse + DAY)
    assert lapsed.lapsed
    vip, = by_reward(lapsed, "vip")
    assert (vip.suspended_at, vip.suspended_reason, vip.ended_at) == (
        lapse, "suspended: the customer lapsed in stage first_purchase", None)
    # the stage tag is segmentation: it is not paused
    assert all(a.suspended_at is None for a in by_reward(lapsed, "tag-first"))
    back = run((HOLDINGS_P, HOLDINGS_EV), [*events, order("o2", T0 + 100 * DAY)], T0 + 101 * DAY)
    vip, = by_reward(back, "vip")
    assert vip.suspended_at is None and vip.ended_at is None and vip.key == "s/c-1/vip/privilege/first_purchase/1"


def test_semantics_4_a_code_no_order_used_expires_and_one_used_does_not():
    events = [ev("customer_created", T0)]
    expires = T0 + 30 * DAY
    before = run((HOLDINGS_P, HOLDINGS_EV), events, expires - DAY)
    hello, = by_reward(before, "hello")
    assert hello.expired_at is None and before.next_wake_at <= expires  # the expiry is a wake-up
    after = run((HOLDINGS_P, HOLDINGS_EV), events, expires)
    assert by_reward(after, "hello")[0].expired_at == expires
    code = hello.params["code"]
    used = [*events, order("o1", T0 + 5 * DAY, discount_codes=[code.lower()])]
    kept = run((HOLDINGS_P, HOLDINGS_EV), used, expires + DAY)
    assert by_reward(kept, "hello")[0].expired_at is None
    late = [*events, order("o1", expires + DAY, discount_codes=[code])]  # named after it expired: too late
    assert by_reward(run((HOLDINGS_P, HOLDINGS_EV), late, expires + 2 * DAY), "hello")[0].expired_at == expires


def test_the_semantics_4_upgrade_keeps_the_keys_of_holdings_started_before():
    upgrade = T0 + 50 * DAY
    events = [ev("customer_created", T0), order("o1", T0 + DAY), order("o2", T0 + 100 * DAY)]
    line = Timeline((Segment(None, HOLDINGS_P, HOLDINGS_EV),), semantics=((None, 2), (upgrade, 4)))
    state = run(line, events, T0 + 101 * DAY)
    # the first-purchase tag was held from before the upgrade: its key stays, and the new turn
    # after the upgrade grants no second copy of it
    assert [(a.key, a.ended_at) for a in by_reward(state, "tag-first")] == [
        ("s/c-1/tag-first/stage/first_purchase/1", None)]
    # a code that expired before the upgrade keeps what it was: expiry counts from semantics 4
    assert by_reward(state, "hello")[0].expired_at is None
