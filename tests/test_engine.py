"""The engine: compilation to durable_rules, evaluation, trace, limits, drop.

The differential test at the end generates random condition trees and facts and requires
the engine to agree with ``tests/reference_eval.py`` on every condition.
"""
from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_ladder import engine as engine_mod
from loyalty_ladder import factspec
from loyalty_ladder.engine import LIMITS, Evaluation, TraceEntry, get_engine, tag_field
from loyalty_ladder.engine import host as engine_host
from loyalty_ladder.engine import trace as engine_trace
from loyalty_ladder.errors import EngineError
from loyalty_ladder.programme import (
    CONDITION_KINDS,
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    Not,
    Programme,
    Reward,
    Settings,
    Stage,
    Subgroup,
    Trigger,
    canonical_json,
    condition_id,
    condition_to_data,
    parse_condition_id,
)

from . import reference_eval

T0 = datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=UTC)
_unique = itertools.count()


# ------------------------------------------------------------------ helpers
def programme_of(stages: list[Condition | None], subgroups: list[Condition | None] = (),
                 rewards: list[Condition | None] = ()) -> Programme:
    """A programme straight from conditions, with a canonical text that makes its version unique."""
    data = {
        "stages": [condition_to_data(c) for c in stages],
        "subgroups": [condition_to_data(c) for c in subgroups],
        "rewards": [condition_to_data(c) for c in rewards],
        "n": next(_unique),
    }
    return Programme(
        settings=Settings(),
        stages=tuple(Stage(id=f"s{i}", name=f"S{i}", when=c) for i, c in enumerate(stages)),
        subgroups=tuple(Subgroup(id=f"g{i}", name=f"G{i}", when=c) for i, c in enumerate(subgroups)),
        rewards=tuple(Reward(id=f"r{i}", type="tag", trigger=Trigger("stage"), when=c, params={"tag": f"t{i}"})
                      for i, c in enumerate(rewards)),
        canonical=canonical_json(data),
    )


def base_facts(**values: Any) -> dict[str, Any]:
    """Facts of a customer with one order; nullable facts present unless overridden."""
    facts: dict[str, Any] = {
        "orders_count": 1, "orders_12m": 1, "net_spent": Decimal("100.00"), "profit": Decimal("30.00"),
        "average_order_value": Decimal("100.00"), "outstanding_balance": Decimal(0),
        "first_order_at": T0, "last_order_at": T0, "days_since_last_order": 10,
        "days_since_first_order": 10, "days_known": 20, "active_months_12m": 1,
        "full_price_share": Decimal(1), "checkouts_started": 1, "referrals": 0, "complaints": 0,
        "reviews_count": 0, "average_rating": None, "refunds_count": 0, "accepts_marketing": False,
        "has_account": True, "image_client": False, "tags": frozenset(),
    }
    assert set(facts) == set(factspec.FACTS)
    facts.update(values)
    return facts


@pytest.fixture
def compiled_of():
    """Compile programmes for one test and drop them afterwards."""
    made = []

    def make(*stages: Condition | None, **kw: Any):
        compiled = get_engine().compile(programme_of(list(stages), **kw))
        made.append(compiled)
        return compiled

    yield make
    for compiled in made:
        get_engine().drop(compiled)


def holds1(compiled, facts) -> bool:
    """Whether the single stage ``s0`` holds; cross-checked with the trace."""
    result = "stage:s0" in compiled.evaluate(facts).holds
    assert ("stage:s0" in compiled.evaluate(facts, trace=True).holds) == result
    return result


# ------------------------------------------------------------------ reference table
def test_reference_kinds_match_factspec() -> None:
    assert reference_eval.KINDS == {name: spec.kind for name, spec in factspec.FACTS.items()}


# ------------------------------------------------------------------ operators
ORDER_CASES = [
    # fact, literal, below, equal, above
    ("orders_count", 3, 2, 3, 4),
    ("net_spent", Decimal("500.00"), Decimal("499.99"), Decimal(500), Decimal("500.01")),
    ("full_price_share", Decimal("0.6"), Decimal("0.59"), Decimal("0.60"), Decimal("0.61")),
    ("days_since_last_order", 30, 29, 30, 31),
    ("average_rating", Decimal("4.5"), Decimal("4.4"), Decimal("4.5"), Decimal(5)),
    ("last_order_at", T0, T0 - timedelta(microseconds=1), T0, T0 + timedelta(microseconds=1)),
]
EXPECTED = {"eq": (False, True, False), "ne": (True, False, True), "lt": (True, False, False),
            "lte": (True, True, False), "gt": (False, False, True), "gte": (False, True, True)}


@pytest.mark.parametrize("fact,literal,below,equal,above", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_every_operator_at_the_boundary(compiled_of, fact, literal, below, equal, above) -> None:
    for op, expected in EXPECTED.items():
        compiled = compiled_of(Comparison(fact, op, literal))
        got = tuple(holds1(compiled, base_facts(**{fact: v})) for v in (below, equal, above))
        assert got == expected, (fact, op)
        # and negated: exactly the opposite for a present fact
        negated = compiled_of(Not(Comparison(fact, op, literal)))
        got = tuple(holds1(negated, base_facts(**{fact: v})) for v in (below, equal, above))
        assert got == tuple(not e for e in expected), (fact, "not", op)


@pytest.mark.parametrize("fact", [n for n, s in factspec.FACTS.items() if s.nullable])
def test_absent_facts_fail_every_comparison_and_not_negates(compiled_of, fact) -> None:
    kind = factspec.FACTS[fact].kind
    literal = {"money": Decimal(1), "ratio": Decimal("0.5"), "number": Decimal(3), "days": 5, "time": T0}[kind]
    for op in factspec.ORDER_OPS:
        compiled = compiled_of(Comparison(fact, op, literal))
        negated = compiled_of(Not(Comparison(fact, op, literal)))
        facts = base_facts(**{fact: None})
        assert not holds1(compiled, facts), op
        assert holds1(negated, facts), op
        assert compiled.post_fields(facts)[f"has__{fact}"] == 0


def test_de_morgan_through_nested_not(compiled_of) -> None:
    cond = Not(AllOf((Comparison("orders_count", "gte", 3),
                      Not(AnyOf((Comparison("days_since_last_order", "lt", 30),
                                 Comparison("image_client", "eq", True)))))))
    compiled = compiled_of(cond)
    data = condition_to_data(cond)
    for orders, days, image in itertools.product((2, 3), (None, 29, 30), (False, True)):
        facts = base_facts(orders_count=orders, days_since_last_order=days, image_client=image)
        assert holds1(compiled, facts) == reference_eval.holds(data, facts), (orders, days, image)


def test_bools(compiled_of) -> None:
    is_true = compiled_of(Comparison("accepts_marketing", "eq", True))
    not_false = compiled_of(Comparison("accepts_marketing", "ne", False))
    is_false = compiled_of(Comparison("accepts_marketing", "eq", False))
    for value in (True, False):
        facts = base_facts(accepts_marketing=value)
        assert holds1(is_true, facts) is value
        assert holds1(not_false, facts) is value
        assert holds1(is_false, facts) is (not value)
        assert is_true.post_fields(facts)["accepts_marketing"] == (1 if value else 0)


def test_tags_stay_distinct_after_sanitising(compiled_of) -> None:
    tags = ["vip", "VIP", "image-client", "image_client", "a b", "a_b", "a__b", "ž", ""]
    fields = [tag_field(t) for t in tags]
    assert len(set(fields)) == len(tags)
    assert all(f.startswith("tag__") and all(ch.isalnum() or ch == "_" for ch in f) for f in fields)
    assert fields[0] == "tag__vip"  # plain tags keep their name
    compiled = compiled_of(*[Comparison("tags", "contains", t) for t in tags],
                           rewards=[Not(Comparison("tags", "contains", "VIP"))])
    for have in (frozenset(), frozenset({"VIP"}), frozenset({"a b", "image_client"}), frozenset(tags)):
        ev = compiled.evaluate(base_facts(tags=have), trace=True)
        expected = {f"stage:s{i}" for i, t in enumerate(tags) if t in have}
        if "VIP" not in have:
            expected.add("reward:r0")
        assert ev.holds == expected


def test_money_precision_beyond_a_double(compiled_of) -> None:
    """Decimals that round to the literal's double still compare exactly (the one-ulp nudge)."""
    tiny = Decimal("1E-20")
    for literal in (Decimal("0.1"), Decimal("499.99"), Decimal(500), Decimal("0.6")):
        fact = "full_price_share" if literal < 1 else "net_spent"
        gte = compiled_of(Comparison(fact, "gte", literal))
        eq = compiled_of(Comparison(fact, "eq", literal))
        gt = compiled_of(Comparison(fact, "gt", literal))
        for value in (literal - tiny, literal, literal + tiny):
            facts = base_facts(**{fact: value})
            assert holds1(gte, facts) == (value >= literal), (literal, value)
            assert holds1(eq, facts) == (value == literal), (literal, value)
            assert holds1(gt, facts) == (value > literal), (literal, value)


def test_numbers_durable_cannot_read_in_pythons_notation(compiled_of) -> None:
    """repr(1e-05) and repr(1e+16) are rejected by durable's JSON reader; we write 1.0e-05."""
    small = compiled_of(Comparison("full_price_share", "lt", Decimal("0.00002")))
    assert holds1(small, base_facts(full_price_share=Decimal("0.00001")))
    assert not holds1(small, base_facts(full_price_share=Decimal("0.00003")))
    big = compiled_of(Comparison("net_spent", "gte", Decimal("1E+16")))
    assert holds1(big, base_facts(net_spent=Decimal("2E+16")))
    assert not holds1(big, base_facts(net_spent=Decimal(9999999999999998)))


def test_time_facts(compiled_of) -> None:
    before = compiled_of(Comparison("first_order_at", "lt", datetime(2026, 1, 1, tzinfo=UTC)))
    other_zone = datetime(2026, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))  # the same instant
    assert holds1(before, base_facts(first_order_at=datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)))
    assert not holds1(before, base_facts(first_order_at=other_zone))
    assert not holds1(before, base_facts(first_order_at=None))
    with pytest.raises(EngineError, match="aware"):
        before.evaluate(base_facts(first_order_at=datetime(2025, 1, 1)))


def test_conditions_without_when_and_constants(compiled_of) -> None:
    compiled = compiled_of(None, AnyOf(()), AllOf(()), Not(AnyOf(())),
                           subgroups=[Comparison("orders_count", "gte", 1), None])
    assert compiled.condition_ids == ("stage:s0", "stage:s1", "stage:s2", "stage:s3", "subgroup:g0", "subgroup:g1")
    assert compiled.evaluate(base_facts(orders_count=0), trace=True).holds == {
        "stage:s0", "stage:s2", "stage:s3", "subgroup:g1"}
    assert "subgroup:g0" in compiled.evaluate(base_facts(orders_count=5)).holds


def test_programme_without_rules_needs_no_ruleset(compiled_of) -> None:
    compiled = compiled_of(None, None)
    assert compiled.fields == ()
    assert compiled.post_fields(base_facts()) == {}
    assert compiled.evaluate(base_facts()) == Evaluation(frozenset({"stage:s0", "stage:s1"}))


def test_post_fields_are_exactly_what_the_rules_read(compiled_of) -> None:
    compiled = compiled_of(
        AllOf((Comparison("orders_count", "gte", 3), Comparison("days_since_last_order", "lte", 90))),
        AnyOf((Comparison("tags", "contains", "VIP"), Comparison("image_client", "eq", True))),
        rewards=[Comparison("last_order_at", "gte", T0)],
    )
    facts = base_facts(orders_count=4, days_since_last_order=None, tags=frozenset({"VIP"}), last_order_at=T0)
    assert compiled.post_fields(facts) == {
        "orders_count": 4, "days_since_last_order": 0, "has__days_since_last_order": 0,
        "image_client": 0, tag_field("VIP"): 1, "last_order_at": T0.timestamp(), "has__last_order_at": 1,
        "ok__": 1,
    }
    assert set(compiled.fields) == set(compiled.post_fields(facts))


def test_wrong_fact_types_are_refused(compiled_of) -> None:
    compiled = compiled_of(Comparison("orders_count", "gte", 3), Comparison("net_spent", "gte", Decimal(5)))
    for bad in ({"orders_count": "60"}, {"orders_count": True}, {"orders_count": None},
                {"net_spent": 5.0}, {"net_spent": Decimal("NaN")}):
        with pytest.raises(EngineError):
            compiled.evaluate(base_facts(**bad))


def test_every_matching_rule_fires_in_one_call(compiled_of) -> None:
    """30 conditions, several with `any` branches that all match (durable fires those twice)."""
    stages = [AnyOf((Comparison("orders_count", "gte", i), Comparison("referrals", "gte", 0),
                     Comparison("accepts_marketing", "eq", False))) for i in range(20)]
    stages += [Comparison("profit", "lt", Decimal(i)) for i in range(10)]
    compiled = compiled_of(*stages)
    facts = base_facts(orders_count=7, profit=Decimal("4.5"))
    expected = {f"stage:s{i}" for i in range(20)} | {f"stage:s{20 + i}" for i in range(5, 10)}
    assert compiled.evaluate(facts, trace=True).holds == expected


def test_durable_rules_standard_actions_agree(compiled_of) -> None:
    """The registered rules, run through durable's own Python actions, give the same answers."""
    from durable.engine import Host

    class Quiet(Host):
        def _run(self) -> None:
            return None

    def marker(key: str):
        def action(c) -> None:
            c.s[key] = 1
        return action

    compiled = compiled_of(
        AllOf((Comparison("orders_count", "gte", 3), Not(Comparison("days_since_last_order", "gt", 90)))),
        AnyOf((Comparison("tags", "contains", "VIP"), Comparison("full_price_share", "gte", Decimal("0.6")))),
    )
    rules = compiled.durable_rules()
    assert rules["ok"] == ("ok", {"ok__": 1})
    host = Quiet()
    host.register_rulesets({"check": {name: {"all": [{"m": expr}], "run": marker(key)}
                                      for name, (key, expr) in rules.items()}})
    for n, facts in enumerate([base_facts(), base_facts(orders_count=3, days_since_last_order=None),
                               base_facts(orders_count=5, days_since_last_order=91, tags=frozenset({"VIP"})),
                               base_facts(full_price_share=None)]):
        fields = {**compiled.post_fields(facts), "sid": str(n)}
        try:
            state = host.assert_fact("check", fields)
        finally:
            host.delete_state("check", str(n))
        assert "ok" in state
        assert {k for k in state if k.startswith("stage:")} == compiled.evaluate(facts).holds


def test_an_unexpected_action_message_is_an_error(compiled_of, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compiled_of(Comparison("orders_count", "gte", 3))
    monkeypatch.setattr(engine_host, "OK_RULE", "renamed")  # the catch-all's messages become unknown
    with pytest.raises(EngineError, match="unknown rule"):
        compiled.evaluate(base_facts())
    monkeypatch.undo()
    assert compiled.evaluate(base_facts(orders_count=3)).holds == {"stage:s0"}  # the session was cleaned up


# ------------------------------------------------------------------ limits
def test_tests_per_fact_counts_guards_and_the_catch_all() -> None:
    programme = programme_of([
        None,
        AllOf((Comparison("orders_count", "gte", 3), Comparison("days_since_last_order", "lte", 90))),
        Not(AllOf((Comparison("orders_count", "gte", 5), Comparison("days_since_last_order", "gt", 30)))),
        Comparison("tags", "contains", "vip"),
    ])
    assert engine_mod.tests_per_fact(programme) == {
        "orders_count": 2, "days_since_last_order": 2, "has__days_since_last_order": 2,
        "tag__vip": 1, "ok__": 1,
    }


def test_compile_refuses_programmes_over_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    many = AnyOf(tuple(Comparison("orders_count", "eq", i) for i in range(LIMITS["tests_per_field"] + 1)))
    with pytest.raises(EngineError, match="'orders_count' needs 201 engine tests"):
        get_engine().compile(programme_of([many]))
    with pytest.raises(EngineError, match="conditions, more than the limit"):
        get_engine().compile(programme_of([None] * (LIMITS["conditions"] + 1)))
    monkeypatch.setitem(LIMITS, "fields", 2)
    with pytest.raises(EngineError, match="posts 3 fields"):
        get_engine().compile(programme_of([Comparison("orders_count", "gte", 1),
                                           Comparison("referrals", "gte", 1)]))


def test_literals_the_engine_cannot_tell_apart_are_refused() -> None:
    programme = programme_of([Comparison("net_spent", "gte", Decimal("0.1")),
                              Comparison("net_spent", "lt", Decimal("0.1000000000000000000001"))])
    with pytest.raises(EngineError, match="same number"):
        get_engine().compile(programme)


def test_check_programme_problems_are_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """The validator positions problems from these fields, never from the messages."""
    many = AnyOf(tuple(Comparison("days_since_last_order", "eq", i) for i in range(LIMITS["tests_per_field"] + 1)))
    problems = engine_mod.check_programme(programme_of([many]))
    assert [(p.kind, p.field, p.fact, p.count, p.limit) for p in problems] == [
        ("tests_per_field", "days_since_last_order", "days_since_last_order", 201, 200),
        ("tests_per_field", "has__days_since_last_order", "days_since_last_order", 201, 200),
    ]
    assert str(problems[0]) == problems[0].message == (
        "field 'days_since_last_order' needs 201 engine tests, more than the limit of 200")

    [over] = engine_mod.check_programme(programme_of([None] * (LIMITS["conditions"] + 1)))
    assert (over.kind, over.condition, over.count, over.limit) == (
        "conditions", f"stage:s{LIMITS['conditions']}", LIMITS["conditions"] + 1, LIMITS["conditions"])

    [equal] = engine_mod.check_programme(programme_of([
        Comparison("net_spent", "gte", Decimal("0.1")),
        Comparison("net_spent", "lt", Decimal("0.1000000000000000000001")),
    ]))
    assert (equal.kind, equal.fact, equal.values) == (
        "literals_equal", "net_spent", (Decimal("0.1"), Decimal("0.1000000000000000000001")))

    [unsupported] = engine_mod.check_programme(programme_of([None, Comparison("orders_count", "gte", 2**60)]))
    assert (unsupported.kind, unsupported.condition, unsupported.fact) == ("unsupported", "stage:s1", "orders_count")
    assert "too large" in unsupported.message

    monkeypatch.setitem(LIMITS, "fields", 1)
    [fields] = engine_mod.check_programme(programme_of([Comparison("referrals", "gte", 1)]))
    assert (fields.kind, fields.count, fields.limit) == ("fields", 2, 1)
    assert engine_mod.field_fact("ok__") is None and engine_mod.field_fact("tag__vip") == "tags"


def test_condition_ids_are_built_and_parsed_in_one_place() -> None:
    assert condition_id("stage", "regular") == "stage:regular"
    for kind in CONDITION_KINDS:
        assert parse_condition_id(condition_id(kind, "a-b_1")) == (kind, "a-b_1")
    for bad in ("regular", "stage:", "level:x", ":x"):
        with pytest.raises(ValueError):
            parse_condition_id(bad)
    with pytest.raises(ValueError):
        condition_id("level", "x")
    compiled = get_engine().compile(programme_of([None], [None], [None]))
    assert compiled.condition_ids == ("stage:s0", "subgroup:g0", "reward:r0")


# ------------------------------------------------------------------ lifecycle
def test_compile_is_cached_by_version() -> None:
    programme = programme_of([Comparison("orders_count", "gte", 1)])
    engine = get_engine()
    first = engine.compile(programme)
    try:
        assert engine.compile(programme) is first
        assert first.version == programme.version
        impostor = Programme(settings=Settings(), stages=(Stage("x", "X", Comparison("referrals", "gte", 1)),),
                             subgroups=(), rewards=(), canonical=programme.canonical)
        with pytest.raises(EngineError, match="already compiled"):
            engine.compile(impostor)
    finally:
        engine.drop(first)


def test_drop_and_recompile_fifty_times() -> None:
    engine = get_engine()
    host = engine._host
    registered = len(host._ruleset_list)
    programme = programme_of([AllOf((Comparison("orders_count", "gte", 3), Comparison("profit", "gt", Decimal(0))))])
    for _ in range(50):
        compiled = engine.compile(programme)
        assert len(host._ruleset_list) == registered + 1
        assert compiled.evaluate(base_facts(orders_count=3)).holds == {"stage:s0"}
        assert compiled.evaluate(base_facts(orders_count=2)).holds == frozenset()
        engine.drop(compiled)
        assert len(host._ruleset_list) == registered
        assert f"ladder_{programme.version}" not in host._ruleset_directory
        with pytest.raises(EngineError, match="dropped"):
            compiled.evaluate(base_facts())
        engine.drop(compiled)  # twice is harmless


def test_sessions_do_not_leak(compiled_of) -> None:
    """More evaluations than durable's 1,024 live sessions, half of them matching nothing."""
    compiled = compiled_of(Comparison("orders_count", "gte", 3))
    for i in range(3000):
        assert compiled.evaluate(base_facts(orders_count=i % 6)).holds == ({"stage:s0"} if i % 6 >= 3 else set())


def test_threads_share_the_engine_safely(compiled_of) -> None:
    compiled = compiled_of(Comparison("orders_count", "gte", 3), Comparison("referrals", "gte", 1))
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(400):
                n = (i + seed) % 5
                ev = compiled.evaluate(base_facts(orders_count=n, referrals=n % 2))
                assert ev.holds == {c for c, ok in (("stage:s0", n >= 3), ("stage:s1", n % 2 == 1)) if ok}
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# ------------------------------------------------------------------ trace
def test_trace_lists_every_comparison(compiled_of) -> None:
    compiled = compiled_of(AnyOf((Comparison("orders_count", "gte", 3), Comparison("average_rating", "gte", Decimal(4)))))
    ev = compiled.evaluate(base_facts(orders_count=5, average_rating=None), trace=True)
    assert ev.holds == {"stage:s0"}
    assert ev.trace == (
        TraceEntry("stage:s0", "orders_count", "gte", 3, 5, True),
        TraceEntry("stage:s0", "average_rating", "gte", Decimal(4), None, False),
    )
    assert compiled.evaluate(base_facts()).trace == ()


def test_trace_that_disagrees_with_durable_is_an_error(compiled_of, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compiled_of(Comparison("orders_count", "gte", 3))
    facts = base_facts(orders_count=5)
    real = engine_trace._compare
    monkeypatch.setattr(engine_trace, "_compare", lambda current, op, value: not real(current, op, value))
    assert compiled.evaluate(facts).holds == {"stage:s0"}  # durable alone is unaffected
    with pytest.raises(EngineError, match="disagrees") as info:
        compiled.evaluate(facts, trace=True)
    assert info.value.errors == {"engine_only": ["stage:s0"], "trace_only": []}


# ------------------------------------------------------------------ differential test
# Literal pools: boundaries get hit because facts are drawn from the same pools (and neighbours).
INT_POOL = {"count": [0, 1, 2, 3, 5, 10], "days": [0, 1, 7, 30, 90, 365]}
DEC_POOL = {
    "money": [Decimal(s) for s in ("0", "49.99", "50", "499.99", "500.00", "1000", "-10.5", "0.00001")],
    "ratio": [Decimal(s) for s in ("0", "0.1", "0.5", "0.6", "0.75", "1", "0.00002")],
    "number": [Decimal(s) for s in ("1", "2.5", "3", "4", "4.5", "5")],
}
TIME_POOL = [T0 + timedelta(days=d) for d in (-400, -30, 0, 30)] + [T0 + timedelta(microseconds=1)]
TAG_POOL = ["vip", "VIP", "image-client", "a b", "a_b", "wholesale"]
NEAR = [Decimal(0), Decimal("0.01"), Decimal("-0.01"), Decimal("1E-20"), Decimal("-1E-20")]


def literal_for(fact: str) -> st.SearchStrategy[Any]:
    kind = factspec.FACTS[fact].kind
    if kind in INT_POOL:
        return st.sampled_from(INT_POOL[kind])
    if kind in DEC_POOL:
        return st.sampled_from(DEC_POOL[kind])
    if kind == "time":
        return st.sampled_from(TIME_POOL)
    if kind == "bool":
        return st.booleans()
    return st.sampled_from(TAG_POOL)


@st.composite
def comparisons(draw: st.DrawFn) -> Comparison:
    fact = draw(st.sampled_from(sorted(factspec.FACTS)))
    spec = factspec.FACTS[fact]
    return Comparison(fact, draw(st.sampled_from(spec.ops)), draw(literal_for(fact)))


def conditions(depth: int = 3) -> st.SearchStrategy[Condition]:
    if depth == 0:
        return comparisons()
    inner = conditions(depth - 1)
    return st.one_of(
        comparisons(),
        st.lists(inner, min_size=0, max_size=3).map(lambda xs: AllOf(tuple(xs))),
        st.lists(inner, min_size=0, max_size=3).map(lambda xs: AnyOf(tuple(xs))),
        inner.map(Not),
    )


@st.composite
def fact_values(draw: st.DrawFn) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for name, spec in factspec.FACTS.items():
        if spec.nullable and draw(st.integers(0, 4)) == 0:
            facts[name] = None
            continue
        kind = spec.kind
        if kind in INT_POOL:
            value: Any = max(0, draw(st.sampled_from(INT_POOL[kind])) + draw(st.sampled_from([-1, 0, 0, 1])))
        elif kind in DEC_POOL:
            value = draw(st.sampled_from(DEC_POOL[kind])) + draw(st.sampled_from(NEAR))
        elif kind == "time":
            value = draw(st.sampled_from(TIME_POOL)) + timedelta(microseconds=draw(st.sampled_from([-1, 0, 0, 1])))
        elif kind == "bool":
            value = draw(st.booleans())
        else:
            value = frozenset(draw(st.lists(st.sampled_from(TAG_POOL), max_size=3)))
        facts[name] = value
    return facts


maybe_conditions = st.one_of(st.none(), conditions())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stages=st.lists(maybe_conditions, min_size=1, max_size=4),
    subgroups=st.lists(maybe_conditions, max_size=2),
    rewards=st.lists(maybe_conditions, max_size=2),
    fact_sets=st.lists(fact_values(), min_size=1, max_size=5),
)
def test_engine_agrees_with_the_reference_evaluator(stages, subgroups, rewards, fact_sets) -> None:
    programme = programme_of(stages, subgroups, rewards)
    expected_conditions = {
        **{f"stage:s{i}": condition_to_data(c) for i, c in enumerate(stages)},
        **{f"subgroup:g{i}": condition_to_data(c) for i, c in enumerate(subgroups)},
        **{f"reward:r{i}": condition_to_data(c) for i, c in enumerate(rewards)},
    }
    engine = get_engine()
    compiled = engine.compile(programme)
    try:
        assert set(compiled.condition_ids) == set(expected_conditions)
        for i, facts in enumerate(fact_sets):
            expected = {cid for cid, data in expected_conditions.items() if reference_eval.holds(data, facts)}
            got = compiled.evaluate(facts, trace=(i == 0)).holds
            assert got == expected, json.dumps(
                {"missing": sorted(expected - got), "extra": sorted(got - expected)})
    finally:
        engine.drop(compiled)


def test_the_same_programme_read_from_two_places_compiles_once(tmp_path):
    """Two shops (or ./rules and the packaged copy) with identical programmes share one ruleset."""
    import shutil
    from pathlib import Path

    from loyalty_ladder import rulefile
    from loyalty_ladder.engine import get_engine

    root = Path(__file__).resolve().parent.parent / "rules"
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(root / "ladder.yaml", copy / "ladder.yaml")
    first, second = rulefile.load_programme(root), rulefile.load_programme(copy)
    assert first.source != second.source and first.version == second.version
    assert get_engine().compile(first) is get_engine().compile(second)
