"""Static checks of a valid programme (``rulefile.lint``): exact warnings and notes, `--strict`."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_ladder import rulefile
from loyalty_ladder.cli import main
from loyalty_ladder.errors import RuleFileError
from loyalty_ladder.rulefile import Checked, RuleFileWarning, load_programme_checked
from loyalty_ladder.rulefile.lint import CHECKS, MAX_TERMS

from .test_docs_examples import DOC, EXAMPLES, _write

ROOT = Path(__file__).resolve().parent.parent


def checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Checked:
    """The checks of one rule file ``ladder.yaml`` (positions relative to ``tmp_path``)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ladder.yaml").write_text(text, encoding="utf-8")
    return load_programme_checked("ladder.yaml")


def warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> list[str]:
    return [str(w) for w in checked(tmp_path, monkeypatch, text).warnings]


# ------------------------------------------------------------------ the acceptance file
ACCEPTANCE = """\
stages:
  - id: potential
  - id: buyer
    when: {fact: orders_count, gte: 1}
  - id: impossible
    when:
      - {fact: orders_count, gte: 5}
      - {fact: orders_count, lt: 3}
  - id: top
    when: {fact: orders_count, gte: 10}
rewards:
  - id: per-order
    type: discount
    on: {order: any}
    params: {percent: 5}
"""
ACCEPTANCE_WARNINGS = [
    ("ladder.yaml:6:5: warning: the condition of stage 'impossible' can never hold ({fact: orders_count, gte: 5} "
     "and {fact: orders_count, lt: 3} cannot both hold), so no customer can reach it"),
    ("ladder.yaml:9:5: warning: stage 'top' can never be reached: the ladder climbs one stage at a time and "
     "stage 'impossible' below it can never be reached"),
    ("ladder.yaml:12:5: warning: discount codes can stack without limit: reward 'per-order' gives a 5 % code on "
     "every order, valid 30 days, so a customer can hold any number at once; worst case on one order, where the "
     "shop lets codes combine: any number of 'per-order' codes (stage 'potential')"),
]


def test_unreachable_stage_and_unbounded_stack_are_warnings_with_positions(tmp_path, monkeypatch) -> None:
    result = checked(tmp_path, monkeypatch, ACCEPTANCE)
    assert [str(w) for w in result.warnings] == ACCEPTANCE_WARNINGS
    assert [w.check for w in result.warnings] == ["unreachable-stage", "unreachable-stage", "discount-stack"]
    assert [(w.path, w.line, w.column) for w in result.warnings] == [
        ("ladder.yaml", 6, 5), ("ladder.yaml", 9, 5), ("ladder.yaml", 12, 5)]
    assert [s.id for s in result.programme.stages] == ["potential", "buyer", "impossible", "top"]
    assert result.programme == rulefile.load_programme("ladder.yaml")


def test_validate_prints_warnings_and_fails_only_with_strict(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ladder.yaml").write_text(ACCEPTANCE, encoding="utf-8")
    version = rulefile.load_programme("ladder.yaml").version
    runner = CliRunner()

    lenient = runner.invoke(main, ["validate", "ladder.yaml"], catch_exceptions=False)
    assert lenient.exit_code == 0
    assert lenient.stderr.splitlines() == ACCEPTANCE_WARNINGS
    assert lenient.stdout.splitlines() == [
        f"ladder.yaml: valid — version {version}, 4 stages, 0 subgroups, 1 rewards",
        ("ladder.yaml:2:5: note: stage 'potential': no fixed rewards with a face value; "
         "no condition, so no minimum sales"),
        ("ladder.yaml:3:5: note: stage 'buyer': no fixed rewards with a face value; "
         "its condition implies orders_count ≥ 1"),
        ("ladder.yaml:2:5: note: worst-case discount on one order, where the shop lets codes combine: "
         "any number of 'per-order' codes in stage 'potential' (per-order 5 % × any number)"),
    ]

    strict = runner.invoke(main, ["validate", "--strict", "ladder.yaml"], catch_exceptions=False)
    assert strict.exit_code == 1
    assert strict.stderr.splitlines() == ACCEPTANCE_WARNINGS
    assert strict.stdout == ""


def test_strict_passes_a_programme_with_notes_only(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ladder.yaml").write_text(
        "stages:\n  - id: potential\nrewards:\n  - id: hello\n    type: gift\n    on: {stage: potential}\n"
        "    params: {description: a card, value: \"2.00\"}\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", "--strict", "ladder.yaml"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[1:] == [
        ("ladder.yaml:2:5: note: stage 'potential': rewards worth 2.00 EUR a year in one turn "
         "(hello 2.00 EUR once per turn); no condition, so no minimum sales"),
    ]


def test_errors_are_reported_as_before_without_warnings(tmp_path, monkeypatch) -> None:
    text = "stages:\n  - id: potential\n  - id: buyer\n    when: {fact: order_count, gte: 1}\n"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ladder.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(RuleFileError) as info:
        load_programme_checked("ladder.yaml")
    with pytest.raises(RuleFileError) as plain:
        rulefile.load_programme("ladder.yaml")
    assert info.value.problems == plain.value.problems
    for strict in ([], ["--strict"]):
        result = CliRunner().invoke(main, ["validate", *strict, "ladder.yaml"], catch_exceptions=False)
        assert result.exit_code == 1
        assert result.stderr == "ladder.yaml:4:18: unknown fact 'order_count' — did you mean 'orders_count'?\n"


# ------------------------------------------------------------------ the shipped programmes
def line_of(path: Path, item: str) -> int:
    """The line of ``  - id: ITEM`` in a shipped rule file (comments above it may change)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines.index(f"  - id: {item}") + 1


SHIPPED = [ROOT / "rules", *sorted(p for p in (ROOT / "rules" / "examples").iterdir() if p.is_dir()),
           ROOT / "plugin" / "data" / "rules"]
#: real findings in shipped rule files (reported, not silenced: the files are the shop's to change)
FASHION = ROOT / "rules" / "examples" / "fashion-shop" / "ladder.yaml"
SHIPPED_WARNINGS = {
    "fashion-shop": [
        (f"ladder.yaml:{line_of(FASHION, 'sorry')}:5: warning: discount codes can stack without limit: reward 'sorry' gives a 10.00 EUR code "
         "on every 'complaint' event, valid 60 days, so a customer can hold any number at once; worst case on one "
         "order, where the shop lets codes combine: 45 % + 10.00 EUR + any number of 'sorry' codes "
         "(stage 'first_purchase')"),
    ],
}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_programmes_warn_only_where_expected(path: Path, monkeypatch) -> None:
    monkeypatch.chdir(path)
    result = load_programme_checked(".")
    assert [str(w).removeprefix("./") for w in result.warnings] == SHIPPED_WARNINGS.get(path.name, [])
    assert len([n for n in result.notes if ": note: stage '" in n]) == len(result.programme.stages)


def test_the_default_programme_passes_strict_with_its_notes() -> None:
    result = CliRunner().invoke(main, ["validate", "--strict", str(ROOT / "rules")], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    programme = rulefile.load_programme(ROOT / "rules")
    at = {stage: f"rules/ladder.yaml:{line_of(ROOT / 'rules' / 'ladder.yaml', stage)}:5"
          for stage in ("potential", "visitor", "first_purchase", "regular", "advocate")}
    lines = [line.replace(str(ROOT) + "/", "") for line in result.stdout.splitlines()]
    assert lines[0] == (f"rules: valid — version {programme.version}, 5 stages, 3 subgroups, "
                        f"{len(programme.rewards)} rewards")
    assert lines[1:] == [
        (f"{at['potential']}: note: stage 'potential': no fixed rewards with a face value; unbounded: apology "
         "5.00 EUR per 'complaint' event; no condition, so no minimum sales"),
        (f"{at['visitor']}: note: stage 'visitor': no fixed rewards with a face value; unbounded: apology "
         "5.00 EUR per 'complaint' event; its condition implies no minimum sales"),
        (f"{at['first_purchase']}: note: stage 'first_purchase': rewards worth 10.00 EUR a year in one turn "
         "(second-order 10.00 EUR once per turn); unbounded: apology 5.00 EUR per 'complaint' event; "
         "its condition implies orders_count ≥ 1"),
        (f"{at['regular']}: note: stage 'regular': rewards worth 5.00 EUR a year in one turn (free-express "
         "5.00 EUR once per turn); unbounded: apology 5.00 EUR per 'complaint' event; its condition implies "
         "orders_count ≥ 3"),
        (f"{at['advocate']}: note: stage 'advocate': no fixed rewards with a face value; unbounded: apology "
         "5.00 EUR per 'complaint' event; its condition implies orders_count ≥ 5"),
        (f"{at['first_purchase']}: note: worst-case discount on one order, where the shop lets codes combine: "
         "35 % + 10.00 EUR, 4 codes held at once in stage 'first_purchase' (welcome 10 %, first-order 10 %, "
         "second-order 10.00 EUR, win-back 15 %)"),
    ]


def test_checks_are_fast_for_the_shipped_programmes() -> None:
    for path in SHIPPED:
        best = min(_timed(path) for _ in range(3))
        assert best < 0.05, f"{path}: {best * 1000:.1f} ms"


def _timed(path: Path) -> float:
    start = time.perf_counter()
    load_programme_checked(path)
    return time.perf_counter() - start


# ------------------------------------------------------------------ 1. unreachable stages
def test_a_stage_that_cannot_hold_after_the_minimum_stay_below_is_unreachable(tmp_path, monkeypatch) -> None:
    text = """\
stages:
  - id: potential
  - id: buyer
    when: {fact: orders_count, gte: 1}
    min_stay_days: 14
  - id: quick
    when:
      - {fact: orders_count, gte: 2}
      - {fact: days_known, lt: 14}
"""
    assert warnings(tmp_path, monkeypatch, text) == [
        ("ladder.yaml:7:5: warning: stage 'quick' can never be reached: a customer climbs to it only after the 14 "
         "days' minimum stay in stage 'buyer', and then its condition can never hold ({fact: days_known, gte: 14} "
         "and {fact: days_known, lt: 14} cannot both hold)"),
    ]
    # one day less is possible: no warning
    assert warnings(tmp_path, monkeypatch, text.replace("lt: 14}", "lt: 15}")) == []


def test_a_first_stage_that_never_holds_blocks_the_whole_ladder(tmp_path, monkeypatch) -> None:
    text = """\
stages:
  - id: potential
    when: {fact: full_price_share, gt: 1}
  - id: buyer
"""
    assert warnings(tmp_path, monkeypatch, text) == [
        ("ladder.yaml:3:5: warning: the condition of stage 'potential' can never hold ({fact: full_price_share, "
         "gt: \"1\"} cannot hold (full_price_share is from 0 to 1)), so no customer can reach it"),
        ("ladder.yaml:4:5: warning: stage 'buyer' can never be reached: the ladder climbs one stage at a time and "
         "stage 'potential' below it can never be reached"),
    ]


# ------------------------------------------------------------------ 2. conditions that never hold
@pytest.mark.parametrize("condition,reason", [
    ("[{fact: orders_count, gte: 5}, {fact: orders_count, lt: 3}]",
     "{fact: orders_count, gte: 5} and {fact: orders_count, lt: 3} cannot both hold"),
    ("{all: [{fact: orders_count, gte: 5}, {not: {fact: orders_count, gte: 3}}]}",
     "{fact: orders_count, gte: 5} and not {fact: orders_count, gte: 3} cannot both hold"),
    ("{not: {any: [{fact: accepts_marketing, eq: true}, {fact: accepts_marketing, eq: false}]}}",
     "not {fact: accepts_marketing, eq: true} and not {fact: accepts_marketing, eq: false} cannot both hold"),
    ("[{fact: tags, contains: vip}, {not: {fact: tags, contains: vip}}]",
     "{fact: tags, contains: vip} and not {fact: tags, contains: vip} cannot both hold"),
    ("[{fact: days_since_last_order, lt: 30}, {not: {fact: days_since_last_order, lt: 60}}]",
     "{fact: days_since_last_order, lt: 30} and not {fact: days_since_last_order, lt: 60} cannot both hold"),
    ("{fact: average_rating, gt: 5}", "{fact: average_rating, gt: \"5\"} cannot hold (average_rating is from 1 to 5)"),
    ("{not: {fact: referrals, gte: 0}}", "not {fact: referrals, gte: 0} cannot hold (a count is never negative)"),
    ("[{fact: net_spent, gt: 100}, {fact: net_spent, lte: 100}]",
     "{fact: net_spent, gt: \"100.00\"} and {fact: net_spent, lte: \"100.00\"} cannot both hold"),
    ("[{fact: orders_count, gte: 2}, {fact: orders_count, lte: 2}, {fact: orders_count, ne: 2}]",
     "{fact: orders_count, gte: 2}, {fact: orders_count, lte: 2} and {fact: orders_count, ne: 2} cannot all hold"),
])
def test_a_reward_condition_that_never_holds(tmp_path, monkeypatch, condition: str, reason: str) -> None:
    text = f"""\
stages:
  - id: potential
rewards:
  - id: hello
    type: greeting
    on: {{stage: potential}}
    when: {condition}
"""
    assert warnings(tmp_path, monkeypatch, text) == [
        f"ladder.yaml:7:5: warning: the condition of reward 'hello' can never hold ({reason}), so it is never granted",
    ]


@pytest.mark.parametrize("condition", [
    # an `any` with one branch that can hold
    "{any: [[{fact: orders_count, gte: 5}, {fact: orders_count, lt: 3}], {fact: orders_count, gte: 1}]}",
    # `not` of a comparison on a fact that can be absent holds for a customer without it
    "[{not: {fact: days_since_last_order, lt: 60}}, {not: {fact: days_since_last_order, gte: 60}}]",
    "{not: {fact: average_rating, gte: 1}}",
    # just possible: whole numbers, closed bounds, money between two amounts, a ratio at its edge
    "[{fact: orders_count, gt: 2}, {fact: orders_count, lt: 4}]",
    "[{fact: net_spent, gt: 100}, {fact: net_spent, lt: \"100.01\"}]",
    "{fact: full_price_share, gte: 1}",
    "[{fact: orders_count, ne: 2}, {fact: orders_count, gte: 2}]",
    "[{fact: first_order_at, lt: 2026-01-01}, {fact: first_order_at, gte: 2025-12-31}]",
    "[{fact: tags, contains: vip}, {not: {fact: tags, contains: staff}}]",
])
def test_a_condition_that_can_hold_gives_no_warning(tmp_path, monkeypatch, condition: str) -> None:
    text = f"""\
stages:
  - id: potential
rewards:
  - id: hello
    type: greeting
    on: {{stage: potential}}
    when: {condition}
"""
    assert warnings(tmp_path, monkeypatch, text) == []


def test_a_subgroup_condition_and_a_reward_in_its_subgroups_that_never_hold(tmp_path, monkeypatch) -> None:
    text = """\
stages:
  - id: potential
subgroups:
  - id: profitable
    when: {fact: profit, gte: "250.00"}
  - id: critics
    when: {fact: average_rating, lt: 1}
  - id: rest
rewards:
  - id: big-gift
    type: gift
    on: {stage: potential}
    subgroups: [rest]
    when: {fact: profit, gte: "300.00"}
    params: {description: a hamper}
  - id: critics-gift
    type: gift
    on: {stage: potential}
    subgroups: [critics]
    params: {description: flowers}
  - id: fine
    type: gift
    on: {stage: potential}
    subgroups: [profitable]
    when: {fact: profit, gte: "300.00"}
    params: {description: a hamper}
"""
    assert warnings(tmp_path, monkeypatch, text) == [
        ("ladder.yaml:7:5: warning: the condition of subgroup 'critics' can never hold ({fact: average_rating, "
         "lt: \"1\"} cannot hold (average_rating is from 1 to 5)), so no customer is ever in it"),
        ("ladder.yaml:14:5: warning: the condition of reward 'big-gift' can never hold for a customer in its "
         "subgroups 'rest' ({fact: profit, gte: \"300.00\"} and not {fact: profit, gte: \"250.00\"} cannot both "
         "hold), so it is never granted"),
    ]


def test_a_condition_too_large_to_expand_gets_no_verdict(tmp_path, monkeypatch) -> None:
    # nine `any`s of two multiply out to 512 alternatives (> MAX_TERMS) before the contradiction
    branches = ", ".join(f"{{any: [{{fact: referrals, gte: {i}}}, {{fact: complaints, gte: {i}}}]}}" for i in range(9))
    assert 2 ** 9 > MAX_TERMS >= 2 ** 8
    text = f"""\
stages:
  - id: potential
rewards:
  - id: hello
    type: greeting
    on: {{stage: potential}}
    when: {{all: [{branches}, {{fact: orders_count, gte: 5}}, {{fact: orders_count, lt: 3}}]}}
"""
    assert warnings(tmp_path, monkeypatch, text) == []
    smaller = text.replace(", {any: [{fact: referrals, gte: 8}, {fact: complaints, gte: 8}]}", "")
    assert warnings(tmp_path, monkeypatch, smaller) == [
        ("ladder.yaml:7:5: warning: the condition of reward 'hello' can never hold ({fact: orders_count, gte: 5} "
         "and {fact: orders_count, lt: 3} cannot both hold), so it is never granted"),
    ]


# ------------------------------------------------------------------ 3. shadowed subgroups
def test_a_subgroup_shadowed_by_earlier_ones(tmp_path, monkeypatch) -> None:
    text = """\
stages:
  - id: potential
subgroups:
  - id: big-spender
    when: {fact: net_spent, gte: "500.00"}
  - id: small-spender
    when: {fact: net_spent, lt: "500.00"}
  - id: frequent
    when: {fact: orders_count, gte: 10}
  - id: rest
"""
    assert warnings(tmp_path, monkeypatch, text) == [
        ("ladder.yaml:8:5: warning: subgroup 'frequent' can never be chosen: whenever its condition holds, one of "
         "the earlier subgroups 'big-spender', 'small-spender' holds too; the first that holds wins"),
        ("ladder.yaml:10:5: warning: subgroup 'rest' (the catch-all) can never be chosen: every customer matches "
         "an earlier subgroup ('big-spender', 'small-spender'); the first that holds wins"),
    ]


def test_subgroups_that_overlap_without_shadowing_give_no_warning(tmp_path, monkeypatch) -> None:
    text = """\
stages:
  - id: potential
subgroups:
  - id: profitable
    when: {fact: profit, gte: "250.00"}
  - id: average
    when: {fact: profit, gte: "50.00"}
  - id: rated
    when:
      not: {fact: average_rating, lt: 4}
  - id: rest
"""
    assert warnings(tmp_path, monkeypatch, text) == []


# ------------------------------------------------------------------ 4. overlapping rewards
OVERLAP = """\
stages:
  - id: potential
  - id: regular
    when: {fact: orders_count, gte: 3}
    lapse_after_days: 90
subgroups:
  - id: profitable
    when: {fact: profit, gte: "100.00"}
  - id: rest
rewards:
  - id: points-a
    type: points
    on: {order: any}
    params: {points_per_unit: 1}
  - id: points-b
    type: points
    on: {order: [regular]}
    subgroups: [profitable]
    params: {points_per_unit: 2}
  - id: tag-a
    type: tag
    on: {event: review}
    params: {tag: reviewer}
  - id: tag-b
    type: tag
    on: {event: complaint}
    params: {tag: complainer}
  - id: gift-a
    type: gift
    on: {period: month}
    when: {fact: accepts_marketing, eq: true}
    params: {description: a sample}
  - id: gift-b
    type: gift
    on: {period: month}
    when: {fact: accepts_marketing, eq: false}
    params: {description: a sample}
  - id: gift-c
    type: gift
    on: {period: year}
    params: {description: a sample}
  - id: back-a
    type: discount
    on: {lapse: any}
    subgroups: [rest]
    params: {percent: 10}
  - id: back-b
    type: discount
    on: {lapse: regular}
    subgroups: [profitable]
    params: {percent: 10}
"""


def test_two_rewards_of_one_type_on_the_same_trigger(tmp_path, monkeypatch) -> None:
    result = checked(tmp_path, monkeypatch, OVERLAP)
    assert [str(w) for w in result.warnings if w.check == "overlapping-rewards"] == [
        ("ladder.yaml:15:5: warning: rewards 'points-a' (at ladder.yaml:11:5) and 'points-b' are both 'points' "
         "rewards granted for every order in stage 'regular' to subgroup 'profitable', and their conditions can "
         "hold together: a customer can get both"),
    ]
    # different events, exclusive conditions, other periods, other subgroups: no overlap
    assert [w.check for w in result.warnings] == ["overlapping-rewards"]


# ------------------------------------------------------------------ 5. discount stack
STACK = """\
stages:
  - id: potential
    lapse_after_days: 10
  - id: buyer
    when: {fact: orders_count, gte: 1}
    min_stay_days: 40
  - id: regular
    when: {fact: orders_count, gte: 3}
rewards:
  - id: welcome
    type: discount
    on: {stage: potential}
    params: {percent: 10, expires_days: 30}
  - id: buyer-code
    type: discount
    on: {stage: buyer}
    params: {percent: 20, expires_days: 60}
  - id: monthly
    type: discount
    on: {period: month, stages: [buyer, regular]}
    params: {amount: "5.00", expires_days: 60}
  - id: regular-code
    type: discount
    on: {stage: regular}
    params: {percent: 35}
"""


def test_percentages_stacking_beyond_half_an_order(tmp_path, monkeypatch) -> None:
    result = checked(tmp_path, monkeypatch, STACK)
    # potential lapses every 10 days: 3 welcome codes within their 30 days (50 % in buyer, not
    # more than half); in regular the buyer's 40 days' stay has outlived the welcome codes but
    # not the buyer code; a monthly code lives 60 days: 3 at once
    assert [str(w) for w in result.warnings] == [
        ("ladder.yaml:7:5: warning: a customer in stage 'regular' can hold discount codes of 55 % + 15.00 EUR "
         "at once (buyer-code 20 %, monthly 5.00 EUR × 3, regular-code 35 %): more than 50 % off one order where "
         "the shop lets codes combine"),
    ]
    assert result.notes[-1] == (
        "ladder.yaml:7:5: note: worst-case discount on one order, where the shop lets codes combine: "
        "55 % + 15.00 EUR, 5 codes held at once in stage 'regular' (buyer-code 20 %, monthly 5.00 EUR × 3, "
        "regular-code 35 %)")


def test_half_an_order_is_not_too_much(tmp_path, monkeypatch) -> None:
    result = checked(tmp_path, monkeypatch, STACK.replace("percent: 35", "percent: 30"))
    assert result.warnings == []
    assert result.notes[-1] == (
        "ladder.yaml:4:5: note: worst-case discount on one order, where the shop lets codes combine: "
        "50 % + 15.00 EUR, 7 codes held at once in stage 'buyer' (welcome 10 % × 3, buyer-code 20 %, "
        "monthly 5.00 EUR × 3)")


def test_codes_per_event_are_unbounded_and_warned_once_at_the_reward(tmp_path, monkeypatch) -> None:
    text = """\
stages:
  - id: potential
    lapse_after_days: 365
  - id: buyer
    when: {fact: orders_count, gte: 1}
  - id: regular
    when: {fact: orders_count, gte: 3}
rewards:
  - id: thanks
    type: discount
    on: {event: review, stages: [buyer, regular]}
    params: {amount: "3.00", expires_days: 7}
  - id: win-back
    type: discount
    on: {lapse: any}
    params: {percent: 10}
"""
    # one warning for 'thanks' (at its worst stage, with the win-back code of a lapse in potential)
    assert warnings(tmp_path, monkeypatch, text) == [
        ("ladder.yaml:9:5: warning: discount codes can stack without limit: reward 'thanks' gives a 3.00 EUR code "
         "on every 'review' event, valid 7 days, so a customer can hold any number at once; worst case on one "
         "order, where the shop lets codes combine: 10 % + any number of 'thanks' codes (stage 'buyer')"),
    ]


# ------------------------------------------------------------------ 6. yearly face value
YEARLY = """\
stages:
  - id: potential
  - id: spender
    when:
      any:
        - [{fact: net_spent, gte: "150.00"}, {fact: orders_count, gte: 2}]
        - [{fact: net_spent, gt: "120.00"}, {fact: profit, gte: "40.00"}, {fact: orders_count, gte: 3}]
    lapse_after_days: 60
rewards:
  - id: monthly-gift
    type: gift
    on: {period: month, stages: [spender]}
    params: {description: a sample box, value: "9.00"}
  - id: quarterly
    type: debt_forgiveness
    on: {period: quarter, stages: [spender]}
    params: {max_amount: "1.00"}
  - id: welcome
    type: discount
    on: {stage: spender}
    params: {amount: "5.00"}
  - id: win-back
    type: free_service
    on: {lapse: [spender]}
    params: {service: a call, value: "3.00"}
  - id: per-order
    type: discount
    on: {order: [spender]}
    params: {amount: "2.00"}
  - id: per-order-points
    type: points
    on: {order: any}
    params: {points_per_unit: 1}
  - id: review-gift
    type: gift
    on: {event: review}
    params: {description: a pen, value: "1.50"}
  - id: percent-code
    type: discount
    on: {stage: potential}
    params: {percent: 10}
"""


def test_yearly_face_value_per_stage_beside_the_sales_it_implies(tmp_path, monkeypatch) -> None:
    result = checked(tmp_path, monkeypatch, YEARLY)
    fixed = ("monthly-gift 9.00 EUR × 12, quarterly 1.00 EUR × 4, welcome 5.00 EUR once per turn, "
             "win-back 3.00 EUR once per turn")
    # 120.00 a year against sales of more than 120.00 (the smaller of the two branches): not more
    assert [w.check for w in result.warnings] == ["discount-stack"]  # per-order: a code per order
    assert result.notes[:2] == [
        ("ladder.yaml:2:5: note: stage 'potential': no fixed rewards with a face value; unbounded: review-gift "
         "1.50 EUR per 'review' event; no condition, so no minimum sales"),
        (f"ladder.yaml:3:5: note: stage 'spender': rewards worth 120.00 EUR a year in one turn ({fixed}); unbounded: "
         "per-order 2.00 EUR per order, review-gift 1.50 EUR per 'review' event; its condition implies "
         "net_spent > 120.00 EUR, orders_count ≥ 2"),
    ]


def test_fixed_rewards_worth_more_than_the_implied_sales_are_a_warning(tmp_path, monkeypatch) -> None:
    result = checked(tmp_path, monkeypatch, YEARLY.replace('value: "9.00"', 'value: "9.01"'))
    assert [str(w) for w in result.warnings if w.check == "yearly-value"] == [
        ("ladder.yaml:3:5: warning: rewards of stage 'spender' worth up to 120.12 EUR a year (monthly-gift 9.01 EUR "
         "× 12, quarterly 1.00 EUR × 4, welcome 5.00 EUR once per turn, win-back 3.00 EUR once per turn) exceed the "
         "120.00 EUR of sales (net_spent) its condition implies"),
    ]


def test_no_sales_implied_means_no_yearly_warning(tmp_path, monkeypatch) -> None:
    text = YEARLY.replace('{fact: net_spent, gte: "150.00"}', '{fact: checkouts_started, gte: 1}')
    result = checked(tmp_path, monkeypatch, text.replace('value: "9.00"', 'value: "900.00"'))
    assert [w.check for w in result.warnings] == ["discount-stack"]
    assert result.notes[1].endswith("; its condition implies orders_count ≥ 2")


# ------------------------------------------------------------------ the API and the docs
def test_the_api_is_exported_and_names_its_checks() -> None:
    assert {"Checked", "RuleFileWarning", "load_programme_checked", "load_programme_items"} <= set(rulefile.__all__)
    assert CHECKS == ("unreachable-stage", "never-holds", "shadowed-subgroup", "overlapping-rewards",
                      "discount-stack", "yearly-value")
    warning = RuleFileWarning("a.yaml", 3, 5, "something", check="never-holds")
    assert str(warning) == "a.yaml:3:5: warning: something"


LINT = re.compile(r'^<!--\s*lint:\s*(warning|note|none)(?:\s+"((?:[^"\\]|\\.)*)")?\s*-->\s*$')
FENCE = re.compile(r"^```yaml")


def doc_claims() -> list[tuple[int, list[str], list[str] | None]]:
    """(line of the yaml block, its warnings, its notes or None) for each block claimed by
    ``<!-- lint: … -->`` comments in docs/rules.md."""
    out = []
    pending: list[tuple[str, str]] = []
    for number, line in enumerate(DOC.read_text(encoding="utf-8").splitlines(), 1):
        found = LINT.match(line)
        if found:
            text = (found.group(2) or "").replace('\\"', '"').replace("\\\\", "\\")
            pending.append((found.group(1), text))
        elif FENCE.match(line) and pending:
            notes = [t for kind, t in pending if kind == "note"]
            out.append((number, [t for kind, t in pending if kind == "warning"], notes or None))
            pending = []
    assert not pending, f"lint claims without a block: {pending}"
    return out


DOC_CLAIMS = doc_claims()


def test_the_docs_show_every_check() -> None:
    shown = " ".join(w for _, ws, _ in DOC_CLAIMS for w in ws)
    for phrase in ("can never be reached", "can never hold", "can never be chosen", "a customer can get both",
                   "can stack without limit", "more than 50 % off", "exceed the"):
        assert phrase in shown, phrase
    assert any(not ws for _, ws, _ in DOC_CLAIMS), "a negative example"


@pytest.mark.parametrize("line,expected,notes", DOC_CLAIMS, ids=[f"line{c[0]}" for c in DOC_CLAIMS])
def test_doc_lint_example(line: int, expected: list[str], notes: list[str] | None, tmp_path, monkeypatch) -> None:
    example = next(e for e in EXAMPLES if e.line == line)
    assert example.kind == "valid", "a lint example is a valid programme"
    monkeypatch.chdir(tmp_path)
    result = load_programme_checked(_write(example, tmp_path))
    assert [str(w) for w in result.warnings] == expected
    if notes is not None:
        assert result.notes == notes


# ------------------------------------------------------------------ soundness of "can never hold"
_LITERALS = {
    "orders_count": st.sampled_from([0, 1, 2, 3, 4]),
    "days_since_last_order": st.sampled_from([0, 1, 3, 5]),
    "average_rating": st.sampled_from(["1", "2.5", "4", "5"]),
    "net_spent": st.sampled_from(["-1", "0", "0.5", "1"]),
    "accepts_marketing": st.booleans(),
}
_VALUES = {
    "orders_count": st.sampled_from([0, 1, 2, 3, 4, 5]),
    "days_since_last_order": st.sampled_from([None, 0, 1, 2, 3, 4, 5, 6]),
    "average_rating": st.sampled_from([None, "1", "2", "2.5", "3", "4", "4.5", "5"]),
    "net_spent": st.sampled_from(["-1.5", "-1", "-0.5", "0", "0.25", "0.5", "0.75", "1", "1.5"]),
    "accepts_marketing": st.booleans(),
    "tags": st.sampled_from([frozenset(), frozenset({"a"}), frozenset({"b"}), frozenset({"a", "b"})]),
}


@st.composite
def _comparison(draw):
    fact = draw(st.sampled_from([*_LITERALS, "tags"]))
    if fact == "tags":
        return {"fact": "tags", "contains": draw(st.sampled_from(["a", "b"]))}
    ops = ["eq", "ne"] if fact == "accepts_marketing" else ["eq", "ne", "lt", "lte", "gt", "gte"]
    return {"fact": fact, draw(st.sampled_from(ops)): draw(_LITERALS[fact])}


_CONDITIONS = st.recursive(
    _comparison(),
    lambda inner: st.one_of(
        st.builds(lambda items: {"all": items}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda items: {"any": items}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda item: {"not": item}, inner),
    ),
    max_leaves=8,
)


@given(data=_CONDITIONS, facts=st.fixed_dictionaries(_VALUES))
@settings(max_examples=400, deadline=None)
def test_never_is_only_said_of_conditions_no_customer_meets(data, facts) -> None:
    """Whenever some customer meets a condition (the reference evaluator says so), the analysis
    must not call it impossible; the values include absent facts and both sides of each bound."""
    from loyalty_ladder.rulefile.lint import _decide

    from .reference_eval import holds

    condition, errors = rulefile.parse_condition(data)
    assert not errors, errors
    if holds(data, facts):
        assert not _decide([condition]).never, (data, facts)
