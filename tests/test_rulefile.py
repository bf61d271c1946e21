"""Rule files: the default programme and examples load; broken files give exact, positioned problems."""
from __future__ import annotations

import copy
import re
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_ladder import engine, rulefile
from loyalty_ladder.errors import RuleFileError
from loyalty_ladder.programme import AllOf, AnyOf, Comparison, Not, Trigger

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
EXAMPLES = sorted(p for p in (RULES / "examples").iterdir() if p.is_dir())
BROKEN = Path(__file__).resolve().parent / "fixtures" / "broken_rules"
EXPECTED: dict[str, list[str]] = yaml.safe_load((BROKEN / "expected.yaml").read_text(encoding="utf-8"))

MINIMAL = """\
stages:
  - id: potential
  - id: buyer
    when: {fact: orders_count, gte: 1}
"""


# ------------------------------------------------------------------ valid programmes
def test_default_programme_is_valid() -> None:
    programme = rulefile.load_programme(RULES)
    assert [s.id for s in programme.stages] == ["potential", "visitor", "first_purchase", "regular", "advocate"]
    assert [s.id for s in programme.subgroups] == ["profitable", "average", "unprofitable"]
    assert programme.subgroups[-1].when is None
    assert rulefile.validate(RULES) == []


def test_default_programme_rewards_follow_the_ladder() -> None:
    programme = rulefile.load_programme(RULES)
    rewards = {r.id: r for r in programme.rewards}
    # every stage has its tag
    tagged = {r.trigger.stages[0] for r in programme.rewards if r.type == "tag"}
    assert tagged == {s.id for s in programme.stages}
    assert rewards["welcome"].trigger == Trigger("stage", ("potential",))
    assert rewards["first-order"].trigger == Trigger("stage", ("visitor",))
    assert rewards["second-order"].trigger == Trigger("stage", ("first_purchase",))
    assert rewards["order-points"].trigger == Trigger("order", ("regular", "advocate"))
    assert rewards["pay-later"].params == {"net_days": 30, "credit_limit": "500.00"}
    assert rewards["pay-later"].subgroups == ("profitable",)
    assert rewards["apology"].trigger == Trigger("event", (), event="complaint")
    assert rewards["win-back"].trigger.kind == "lapse"
    lapsing = {s.id for s in programme.stages if s.lapse_after_days}
    assert set(rewards["win-back"].trigger.stages) <= lapsing


def test_default_programme_path_is_the_shipped_copy() -> None:
    path = rulefile.default_programme_path()
    assert (path / "ladder.yaml").read_text(encoding="utf-8") == (RULES / "ladder.yaml").read_text(encoding="utf-8")
    assert rulefile.load_programme(path).version == rulefile.load_programme(RULES).version


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(example: Path) -> None:
    assert rulefile.validate(example) == []
    programme = rulefile.load_programme(example)
    assert programme.rewards and programme.source == str(example)


def test_examples_cover_wholesale_terms_and_fashion_points() -> None:
    assert {p.name for p in EXAMPLES} >= {"b2b-wholesale", "fashion-shop"}
    b2b = rulefile.load_programme(RULES / "examples" / "b2b-wholesale")
    assert len(list((RULES / "examples" / "b2b-wholesale").glob("*.yaml"))) >= 2
    assert {"deferred_payment", "debt_forgiveness"} <= {r.type for r in b2b.rewards}
    fashion = rulefile.load_programme(RULES / "examples" / "fashion-shop")
    assert {"discount", "points"} <= {r.type for r in fashion.rewards}


def test_examples_are_not_part_of_the_default_programme() -> None:
    """A programme directory is read non-recursively."""
    ids = {r.id for r in rulefile.load_programme(RULES).rewards}
    assert "terms-partner" not in ids and "season-preview" not in ids


# ------------------------------------------------------------------ parsed values
def test_literals_are_typed_by_fact_kind() -> None:
    programme = rulefile.load_text(MINIMAL + """\
  - id: typed
    when:
      - {fact: profit, gte: 300}
      - {fact: net_spent, lt: 12.5}
      - {fact: full_price_share, gte: "0.6"}
      - {fact: average_rating, gte: 4}
      - {fact: accepts_marketing, eq: true}
      - {fact: first_order_at, gte: 2026-01-31}
      - {fact: last_order_at, lt: "2026-02-01T10:00:00"}
      - {fact: last_order_at, ne: "2026-02-01T12:00:00+02:00"}
      - {fact: tags, contains: vip}
      - not: {fact: days_since_last_order, gt: 90}
""")
    when = programme.stage("typed").when
    assert isinstance(when, AllOf)
    values = [c.value for c in when.items if isinstance(c, Comparison)]
    assert values[:5] == [Decimal("300.00"), Decimal("12.50"), Decimal("0.6"), Decimal(4), True]
    assert type(values[4]) is bool
    assert values[5] == datetime(2026, 1, 31, tzinfo=UTC)
    assert values[6] == datetime(2026, 2, 1, 10, tzinfo=UTC)
    assert values[7] == datetime(2026, 2, 1, 10, tzinfo=UTC)
    assert all(v.tzinfo is not None for v in values[5:8])
    assert values[8] == "vip"
    assert when.items[-1] == Not(Comparison("days_since_last_order", "gt", 90))
    assert isinstance(programme.stage("buyer").when, Comparison)


def test_defaults_are_filled_in() -> None:
    programme = rulefile.load_text(MINIMAL + """\
subgroups:
  - id: rest
rewards:
  - id: second_order
    type: discount
    on: {stage: buyer}
    params: {amount: 5}
  - id: pts
    type: points
    on: {order: any}
    params: {points_per_unit: "0.5"}
  - id: hi
    type: greeting
    on: {event: customer_created}
""")
    s = programme.settings
    assert (s.currency, s.refund_window_days, s.default_margin, s.image_client_tag) == (
        "EUR", 30, Decimal("0.3"), "image-client")
    buyer = programme.stage("buyer")
    assert (buyer.name, buyer.min_stay_days, buyer.lapse_after_days) == ("Buyer", 0, None)
    assert programme.reward("second_order").params == {
        "amount": "5.00", "expires_days": 30, "usage_limit": 1, "code_prefix": "SECOND-ORDER"}
    assert programme.reward("pts").params == {"points_per_unit": "0.5", "expires_days": 365}
    assert programme.reward("pts").trigger == Trigger("order", ())
    assert programme.reward("hi").params == {"occasion": "birthday"}
    assert programme.reward("hi").trigger == Trigger("event", (), event="customer_created")


def test_code_prefix_default_is_truncated_to_twenty() -> None:
    programme = rulefile.load_text(MINIMAL + """\
rewards:
  - id: a_very_long_reward_identifier
    type: discount
    on: {stage: buyer}
    params: {percent: 5}
""")
    assert programme.reward("a_very_long_reward_identifier").params["code_prefix"] == "A-VERY-LONG-REWARD-I"


def test_list_when_is_all_and_triggers_map_to_the_model() -> None:
    programme = rulefile.load_text(MINIMAL + """\
  - id: top
    when:
      - {fact: orders_count, gte: 3}
      - any: [{fact: referrals, gte: 1}, {fact: image_client, eq: true}]
    lapse_after_days: 90
rewards:
  - {id: a, type: tag, on: {stage: [buyer, top]}, params: {tag: a}}
  - {id: b, type: gift, on: {period: quarter, stages: [top]}, params: {description: socks}}
  - {id: c, type: discount, on: {lapse: top}, params: {percent: 5}}
  - {id: d, type: discount, on: {order: buyer}, params: {percent: 5}}
""")
    top = programme.stage("top").when
    assert isinstance(top, AllOf) and isinstance(top.items[1], AnyOf)
    assert programme.reward("a").trigger == Trigger("stage", ("buyer", "top"))
    assert programme.reward("b").trigger == Trigger("period", ("top",), every="quarter")
    assert programme.reward("c").trigger == Trigger("lapse", ("top",))
    assert programme.reward("d").trigger == Trigger("order", ("buyer",))


# ------------------------------------------------------------------ version
def _version(tmp_path: Path, files: dict[str, str]) -> str:
    folder = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return rulefile.load_programme(folder).version


def test_version_ignores_comments_formatting_and_file_boundaries(tmp_path: Path) -> None:
    text = (RULES / "ladder.yaml").read_text(encoding="utf-8")
    base = _version(tmp_path, {"ladder.yaml": text})
    no_comments = "\n".join(line.split(" #")[0].rstrip() for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert _version(tmp_path, {"ladder.yaml": no_comments}) == base
    # block style, other key order, quoted numbers written as numbers: same meaning
    data = yaml.safe_load(text.replace("\non:", "\n'on':").replace(" on:", " 'on':"))
    reformatted = yaml.safe_dump(data, default_flow_style=False, sort_keys=True)
    assert _version(tmp_path, {"ladder.yaml": reformatted}) == base
    rewards = data.pop("rewards")
    split = {
        "10-ladder.yaml": yaml.safe_dump(data, sort_keys=False),
        # rewards in other files and in another order: their order has no meaning
        "20-rewards.yaml": yaml.safe_dump({"rewards": rewards[8:]}),
        "30-rewards.yaml": yaml.safe_dump({"rewards": rewards[:8][::-1]}),
    }
    assert _version(tmp_path, split) == base
    assert _version(tmp_path, {"ladder.yaml": text.replace('gte: "250.00"', "gte: 250")}) == base


def test_version_changes_when_a_number_changes(tmp_path: Path) -> None:
    text = (RULES / "ladder.yaml").read_text(encoding="utf-8")
    base = _version(tmp_path, {"ladder.yaml": text})
    assert "min_stay_days: 14" in text and "credit_limit: \"500.00\"" in text
    assert _version(tmp_path, {"ladder.yaml": text.replace("min_stay_days: 14", "min_stay_days: 15")}) != base
    assert _version(tmp_path, {"ladder.yaml": text.replace('credit_limit: "500.00"', 'credit_limit: "501.00"')}) != base
    # a default written out explicitly is the same programme
    explicit = text.replace("params: {percent: 10, expires_days: 14, code_prefix: FIRST}",
                            "params: {percent: 10, expires_days: 14, code_prefix: FIRST, usage_limit: 1}")
    assert explicit != text and _version(tmp_path, {"ladder.yaml": explicit}) == base


def test_canonical_is_the_normalised_data() -> None:
    a = rulefile.load_text(MINIMAL)
    b = rulefile.load_text("# comment\nstages: [{id: potential}, {id: buyer, min_stay_days: 0, when: [{fact: orders_count, gte: 1}]}]\n")
    # a one-item list shorthand is still `all`: a different condition, so a different version
    assert a.version != b.version
    c = rulefile.load_text("stages: [{id: potential, name: Potential}, {id: buyer, when: {fact: orders_count, gte: 1}}]")
    assert a.canonical == c.canonical and a.version == c.version
    assert '"default_margin":"0.3"' in a.canonical


# ------------------------------------------------------------------ broken files
def test_corpus_is_complete() -> None:
    cases = sorted(p.name for p in BROKEN.iterdir() if p.name != "expected.yaml")
    assert cases == sorted(EXPECTED)
    assert len(cases) >= 24
    assert all(EXPECTED[c] for c in cases), "every broken case must expect at least one problem"


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_broken_programme(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    problems = rulefile.validate(Path(case))
    assert [str(p) for p in problems] == EXPECTED[case]
    with pytest.raises(RuleFileError) as info:
        rulefile.load_programme(case)
    assert [str(p) for p in info.value.problems] == EXPECTED[case]
    assert info.value.exit_code == 1 and info.value.http_status == 422


def test_all_problems_are_collected_and_sorted() -> None:
    with pytest.raises(RuleFileError) as info:
        rulefile.load_text("""\
rewards:
  - {id: x, type: tag, on: {stage: nowhere}, params: {tag: x}}
stages:
  - id: potential
    min_stay_days: -1
  - id: b
    when: {fact: profitt, gte: 1}
  - id: potential
""", name="p.yaml")
    assert [str(p) for p in info.value.problems] == [
        "p.yaml:2:36: unknown stage 'nowhere'; stages: potential, b",
        "p.yaml:5:20: 'min_stay_days' must be a whole number >= 0, got -1",
        "p.yaml:7:18: unknown fact 'profitt' — did you mean 'profit'?",
        "p.yaml:8:9: duplicate stage id 'potential' (first defined at p.yaml:4:9)",
    ]
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]


def test_missing_path_and_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert [str(p) for p in rulefile.validate(missing)] == [f"{missing}:1:1: no such file or directory"]
    binary = tmp_path / "rules.yaml"
    binary.write_bytes(b"stages:\n  - id: \xff\xfe\n")
    [problem] = rulefile.validate(binary)
    assert (problem.line, problem.column) == (1, 1) and problem.message.startswith("not UTF-8 text")


def test_directory_reads_only_rule_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("rewards: [{id: two, type: tag, on: {stage: potential}, params: {tag: t}}]\n")
    (tmp_path / "a.yaml").write_text("stages: [{id: potential}]\nrewards: [{id: one, type: tag, on: {stage: potential}, params: {tag: o}}]\n")
    (tmp_path / "notes.txt").write_text("not yaml: [")
    (tmp_path / ".draft.yaml").write_text("broken: [")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("broken: [")
    assert [r.id for r in rulefile.load_programme(tmp_path).rewards] == ["one", "two"]


def test_programme_without_stages(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("rewards: []\n")
    assert [str(p) for p in rulefile.validate(tmp_path)] == [
        f"{tmp_path / 'r.yaml'}:1:1: no stages: a programme needs a 'stages' list with at least one stage"
    ]


def test_yes_and_on_keys_are_names_not_booleans() -> None:
    """YAML 1.1 reads a bare `on` as true; keys are taken as written."""
    programme = rulefile.load_text(MINIMAL + "rewards:\n  - {id: t, type: tag, on: {stage: buyer}, params: {tag: t}}\n")
    assert programme.reward("t").trigger.kind == "stage"


def test_parse_decimal_rules() -> None:
    assert rulefile.parse_decimal("300.00") == Decimal(300)
    assert rulefile.parse_decimal(0.1) == Decimal("0.1")
    assert rulefile.parse_decimal(7) == Decimal(7)
    for bad in ("1e3", "NaN", "Infinity", True, None, "1.23456", "", "1,5"):
        with pytest.raises(ValueError):
            rulefile.parse_decimal(bad)


# ------------------------------------------------------------------ engine limits
def _many_tests_on_one_fact(n: int) -> str:
    comparisons = "\n".join(f"        - {{fact: orders_count, eq: {i}}}" for i in range(n))
    return f"stages:\n  - id: potential\n  - id: busy\n    when:\n      any:\n{comparisons}\n"


def test_too_many_tests_on_one_fact_is_refused() -> None:
    limit = engine.LIMITS["tests_per_field"]
    with pytest.raises(RuleFileError) as info:
        rulefile.load_text(_many_tests_on_one_fact(limit + 50), name="big.yaml")
    [problem] = info.value.problems
    match = re.fullmatch(
        r"fact 'orders_count' needs (\d+) engine tests \(field '[a-z_]+'\), more than the limit of "
        + str(limit) + r": .*", problem.message)
    assert match and int(match.group(1)) > limit, problem.message
    assert (problem.path, problem.line, problem.column) == ("big.yaml", 6, 18)  # the first comparison's fact
    # well below the limit is fine
    rulefile.load_text(_many_tests_on_one_fact(20))


def test_too_many_conditions_is_refused() -> None:
    limit = engine.LIMITS["conditions"]
    rewards = "\n".join(f"  - {{id: r{i}, type: tag, on: {{stage: potential}}, params: {{tag: t{i}}}}}"
                        for i in range(limit))
    with pytest.raises(RuleFileError) as info:
        rulefile.load_text(f"stages:\n  - id: potential\nrewards:\n{rewards}\n", name="many.yaml")
    [problem] = info.value.problems
    assert problem.message.startswith(f"the programme has {limit + 1} stages, subgroups and rewards, "
                                      f"more than the engine limit of {limit} conditions")
    # the first item over the limit
    assert (problem.line, problem.column) == (3 + limit, 5)


def test_too_many_fields_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(engine.LIMITS, "fields", 1)
    with pytest.raises(RuleFileError) as info:
        rulefile.load_text(MINIMAL + "  - id: rich\n    when: {fact: profit, gte: 10}\n", name="f.yaml")
    [problem] = info.value.problems
    assert re.fullmatch(r"the programme posts \d+ fields to the engine, more than the limit of 1 .*",
                        problem.message)


def test_what_the_engine_cannot_compile_is_refused_at_the_comparison() -> None:
    """Far in the future two times a microsecond apart are one double: the engine would mix them up."""
    with pytest.raises(RuleFileError) as info:
        rulefile.load_text(MINIMAL + """\
  - id: c
    when: {fact: first_order_at, gte: "9000-01-01T00:00:00.000001"}
  - id: d
    when: {fact: first_order_at, gte: "9000-01-01T00:00:00"}
""", name="t.yaml")
    [problem] = info.value.problems
    assert (problem.line, problem.column) == (6, 18)
    assert problem.message.startswith("the rule engine cannot compile this programme: ")
    assert "'first_order_at'" in problem.message


def test_a_literal_the_engine_cannot_hold_is_a_problem_at_its_comparison() -> None:
    """Integers beyond 2**53 are not exact as doubles: refused, where written, not a traceback."""
    with pytest.raises(RuleFileError) as info:
        rulefile.load_text(MINIMAL + "  - id: huge\n    when: {fact: referrals, gte: 100000000000000000000}\n",
                           name="h.yaml")
    assert [str(p) for p in info.value.problems] == [
        ("h.yaml:6:18: the rule engine cannot compile this programme: the literal 100000000000000000000 "
         "is too large for the rule engine (limit 2**53)"),
    ]


def test_the_package_keeps_the_module_names() -> None:
    """``loyalty_ladder.rulefile`` was one module: what it offered is still importable from it."""
    for name in ("RULE_SUFFIXES", "default_programme_path", "load_programme", "load_text", "validate",
                 "parse_decimal", "parse_condition", "parse_trigger", "programme_data", "SettingsSchema",
                 "StageSchema", "SubgroupSchema", "RewardSchema", "PARAMS_SCHEMAS", "AtKey", "ID_PATTERN"):
        assert hasattr(rulefile, name), name
    assert set(rulefile.__all__) <= set(dir(rulefile))


def test_rulefile_does_not_need_a_writable_copy(tmp_path: Path) -> None:
    """Validating never writes next to the rule files (they may live in a read-only package)."""
    target = tmp_path / "rules"
    shutil.copytree(RULES, target, ignore=shutil.ignore_patterns("examples"))
    before = sorted(p.name for p in target.iterdir())
    target.chmod(0o555)
    try:
        assert rulefile.validate(target) == []
    finally:
        target.chmod(0o755)
    assert sorted(p.name for p in target.iterdir()) == before


# ------------------------------------------------------------------ robustness
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 500), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["potential", "orders_count", "gte", "any", "all", "not", "fact", "on", "stage", "10.5",
                     "2026-01-01", "discount", "tag", "percent", "", "x" * 30]),
    st.text(max_size=8),
)
_keys = st.sampled_from(["programme", "stages", "subgroups", "rewards", "id", "when", "fact", "gte", "eq",
                         "contains", "all", "any", "not", "on", "stage", "order", "lapse", "period", "event",
                         "stages", "type", "params", "percent", "amount", "points_per_unit", "net_days",
                         "min_stay_days", "lapse_after_days", "currency", "tag", "subgroups", "bogus"])
_data = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5)), max_leaves=30)


@settings(max_examples=150, deadline=None)
@given(data=st.dictionaries(_keys, _data, max_size=4))
def test_any_data_gives_problems_or_a_programme_never_a_traceback(data: dict) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        programme = rulefile.load_text(text, name="f.yaml")
    except RuleFileError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.path == "f.yaml" and problem.line >= 1 and problem.column >= 1 and problem.message
    else:
        assert programme.stages


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab:-{}[]#\"' \n\t,&*!|>%@`0.")), max_size=60))
def test_any_text_gives_problems_or_a_programme_never_a_traceback(text: str) -> None:
    try:
        rulefile.load_text(text)
    except RuleFileError as error:
        assert all(p.line >= 1 and p.column >= 1 for p in error.problems)


def _paths(data: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _paths(value, (*prefix, i))
    return out


_LADDER = yaml.safe_load((RULES / "ladder.yaml").read_text(encoding="utf-8").replace(" on:", " 'on':"))
_LADDER_PATHS = _paths(_LADDER)[1:]


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(_LADDER_PATHS), value=_data)
def test_one_change_to_the_default_programme_never_gives_a_traceback(path: tuple, value: object) -> None:
    data = copy.deepcopy(_LADDER)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    try:
        rulefile.load_text(yaml.safe_dump(data, allow_unicode=True), name="f.yaml")
    except RuleFileError as error:
        assert error.problems and all(p.line >= 1 for p in error.problems)


def test_every_reward_type_accepts_notify_and_only_known_kinds():
    programme = rulefile.load_text(
        "stages:\n  - id: potential\nrewards:\n"
        "  - id: welcome\n    type: discount\n    on: {stage: potential}\n"
        "    params: {percent: 10, notify: promotional}\n"
        "  - id: hello\n    type: greeting\n    on: {period: year}\n    params: {notify: transactional}\n")
    assert programme.reward("welcome").params["notify"] == "promotional"
    with pytest.raises(RuleFileError) as caught:
        rulefile.load_text("stages:\n  - id: potential\nrewards:\n  - id: w\n    type: tag\n"
                           "    on: {stage: potential}\n    params: {tag: x, notify: marketing}\n")
    assert "'notify' must be one of promotional, transactional, got 'marketing'" in str(caught.value)
