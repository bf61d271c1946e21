"""Static checks of a valid programme: warnings at ``path:line:col``, and notes.

A programme that validates can still be wrong in ways no single value shows.  After the build,
with the items' positions (:func:`~.loader.load_programme_items`), these checks look for:

* ``unreachable-stage`` – a stage no customer can climb to: its condition can never hold, it
  cannot hold after the minimum stay of the stage below (``days_known`` ≥ that stay), or a
  stage below it is unreachable (the ladder climbs one stage at a time);
* ``never-holds`` – a subgroup's or reward's condition that can never hold (for a reward with
  ``subgroups``: not for a customer chosen into any of them);
* ``shadowed-subgroup`` – a subgroup never chosen: whenever it holds an earlier one holds too;
* ``overlapping-rewards`` – two rewards of one type a customer can both get on one trigger;
* ``discount-stack`` – discount codes a customer can hold at once beyond :data:`STACK_PERCENT`,
  or without limit (a code per order or per event);
* ``yearly-value`` – fixed rewards of a stage worth more a year than the sales (``net_spent``)
  its condition implies.  Each stage also gets a *note* with that figure, and a programme with
  discounts one with its worst-case stack: information, never a warning.

**Conditions** are decided by a small interval analysis over their disjunctive normal form:
every fact has a domain (counts and days whole numbers ≥ 0, ratios 0..1, ``average_rating``
1..5, booleans, tags present or not; money and times unbounded), a comparison with an absent
fact is false and ``not`` negates it (the two-valued logic of :mod:`loyalty_ladder.factspec`).
Facts are treated as independent of each other, so "can never hold" is only said when it is
certain; a condition whose normal form would exceed :data:`MAX_TERMS` terms gets no verdict and
no warning.  Overlaps and stacks are worst cases: facts, timing and conditions permitting.

:func:`load_programme_checked` is the entry point (``ladder validate``, ``ladder backtest``);
:func:`lint` checks a programme already loaded with its items.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from loyalty_ladder import factspec
from loyalty_ladder.errors import RuleFileProblem
from loyalty_ladder.programme import AllOf, Comparison, Condition, Not, Programme, Reward, Stage
from loyalty_ladder.rewards import registry as reward_types
from loyalty_ladder.rewards.base import CENT, AwardContext

from .loader import load_programme_items
from .positions import Item

__all__ = ["CHECKS", "MAX_TERMS", "STACK_PERCENT", "Checked", "RuleFileWarning", "lint", "load_programme_checked"]

#: the checks, as :attr:`RuleFileWarning.check` names them
CHECKS = ("unreachable-stage", "never-holds", "shadowed-subgroup", "overlapping-rewards", "discount-stack",
          "yearly-value")
#: the most terms a condition's normal form may have before the analysis gives up (no warning)
MAX_TERMS = 256
_MAX_WORK = 4096  # term pairs combined in one step
#: stacked percentages above this, on one order, are a warning
STACK_PERCENT = Decimal(50)
_PERIOD_MIN_DAYS = {"month": 28, "quarter": 90, "year": 365}
_PER_YEAR = {"month": 12, "quarter": 4, "year": 1}


@dataclass
class RuleFileWarning(RuleFileProblem):
    """A finding of a static check, printed ``path:line:col: warning: message``; ``check`` is
    one of :data:`CHECKS`."""

    check: str = ""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: warning: {self.message}"


@dataclass(frozen=True)
class Checked:
    """A valid programme with its static checks' warnings (in file and position order) and
    notes (``path:line:col: note: …`` lines: one per stage, then the discount stack)."""

    programme: Programme
    warnings: list[RuleFileWarning]
    notes: list[str]


def load_programme_checked(path: str | Path) -> Checked:
    """The programme at ``path`` with its warnings and notes; raises ``RuleFileError`` for errors
    exactly as :func:`~.loader.load_programme` does."""
    programme, items = load_programme_items(path)
    warnings, notes = lint(programme, items)
    return Checked(programme, warnings, notes)


def lint(programme: Programme, items: dict[str, list[Item]]) -> tuple[list[RuleFileWarning], list[str]]:
    """The warnings and notes of ``programme``, positioned by its ``items`` (as the loader read them)."""
    return _Lint(programme, items).run()


# ================================================================ the condition analysis
Interval = tuple[Any, bool, Any, bool]  # low, low included, high, high included; None: unbounded
_COMPLEMENT = {"eq": "ne", "ne": "eq", "lt": "gte", "gte": "lt", "lte": "gt", "gt": "lte"}
_INTEGER_KINDS = ("count", "days")
_RANGES: dict[str, tuple[Decimal, Decimal]] = {"average_rating": (Decimal(1), Decimal(5))}


@dataclass(frozen=True)
class _Set:
    """The states a fact may be in: absent (when it can be), and a set of values."""

    absent: bool
    values: tuple[Interval, ...] | frozenset[bool]

    @property
    def empty(self) -> bool:
        return not self.absent and not self.values

    def __and__(self, other: _Set) -> _Set:
        if isinstance(self.values, frozenset):
            return _Set(self.absent and other.absent, self.values & other.values)  # type: ignore[operator]
        values = tuple(iv for a in self.values for b in other.values  # type: ignore[union-attr]
                       if (iv := _meet(a, b)) is not None)
        return _Set(self.absent and other.absent, values)

    def lower(self) -> tuple[Any, bool] | None:
        """The least value (and whether it is included) every state has, or None."""
        if self.absent or isinstance(self.values, frozenset) or not self.values:
            return None
        if any(iv[0] is None for iv in self.values):
            return None
        low = min(iv[0] for iv in self.values)
        return low, any(iv[0] == low and iv[1] for iv in self.values)


def _meet(a: Interval, b: Interval) -> Interval | None:
    lo, lo_in = a[0], a[1]
    if b[0] is not None and (lo is None or b[0] > lo):
        lo, lo_in = b[0], b[1]
    elif b[0] is not None and b[0] == lo:
        lo_in = lo_in and b[1]
    hi, hi_in = a[2], a[3]
    if b[2] is not None and (hi is None or b[2] < hi):
        hi, hi_in = b[2], b[3]
    elif b[2] is not None and b[2] == hi:
        hi_in = hi_in and b[3]
    if lo is not None and hi is not None and (lo > hi or (lo == hi and not (lo_in and hi_in))):
        return None
    return lo, lo_in, hi, hi_in


def _domain(key: str) -> _Set:
    if key.startswith("tags:"):
        return _Set(False, frozenset((False, True)))
    spec = factspec.FACTS[key]
    if spec.kind == "bool":
        return _Set(False, frozenset((False, True)))
    if spec.kind in _INTEGER_KINDS:
        return _Set(spec.nullable, ((0, True, None, False),))
    if spec.kind == "ratio":
        return _Set(spec.nullable, ((Decimal(0), True, Decimal(1), True),))
    if key in _RANGES:
        low, high = _RANGES[key]
        return _Set(spec.nullable, ((low, True, high, True),))
    return _Set(spec.nullable, ((None, False, None, False),))


def _domain_words(key: str) -> str:
    kind = "tags" if key.startswith("tags:") else factspec.FACTS[key].kind
    if kind == "count":
        return "a count is never negative"
    if kind == "days":
        return "a number of days is never negative"
    if kind == "ratio":
        return f"{key} is from 0 to 1"
    if key in _RANGES:
        low, high = _RANGES[key]
        return f"{key} is from {low} to {high}"
    return f"{key} has no such value"  # pragma: no cover - other kinds are never empty alone


def _interval(op: str, value: Any, integer: bool) -> tuple[Interval, ...]:
    if op == "eq":
        return ((value, True, value, True),)
    if integer:
        return {
            "ne": ((None, False, value - 1, True), (value + 1, True, None, False)),
            "lt": ((None, False, value - 1, True),),
            "lte": ((None, False, value, True),),
            "gt": ((value + 1, True, None, False),),
            "gte": ((value, True, None, False),),
        }[op]
    return {
        "ne": ((None, False, value, False), (value, False, None, False)),
        "lt": ((None, False, value, False),),
        "lte": ((None, False, value, True),),
        "gt": ((value, False, None, False),),
        "gte": ((value, True, None, False),),
    }[op]


def _literal(cmp: Comparison, negated: bool) -> tuple[str, _Set]:
    """The fact key a comparison (or its negation) constrains, and the states it allows."""
    spec = factspec.FACTS[cmp.fact]
    if spec.kind == "tags":
        return f"tags:{cmp.value}", _Set(False, frozenset((not negated,)))
    op = _COMPLEMENT[cmp.op] if negated else cmp.op
    if spec.kind == "bool":
        values: Any = frozenset((cmp.value,) if op == "eq" else (not cmp.value,))
        return cmp.fact, _Set(False, values)
    # not C holds when the fact is absent; C itself never does
    allowed = _Set(spec.nullable and negated, _interval(op, cmp.value, spec.kind in _INTEGER_KINDS))
    return cmp.fact, allowed & _domain(cmp.fact)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return f'"{value}"'
    if isinstance(value, datetime):
        return f'"{value.isoformat().replace("+00:00", "Z")}"'
    return str(value)


def _describe(cmp: Comparison, negated: bool) -> str:
    text = f"{{fact: {cmp.fact}, {cmp.op}: {_show(cmp.value)}}}"
    return f"not {text}" if negated else text


def _reason(key: str, lits: tuple[str, ...]) -> str:
    if len(lits) == 1:
        return f"{lits[0]} cannot hold ({_domain_words(key)})"
    if len(lits) == 2:
        return f"{lits[0]} and {lits[1]} cannot both hold"
    return f"{', '.join(lits[:-1])} and {lits[-1]} cannot all hold"


Term = dict[str, tuple[_Set, tuple[str, ...]]]  # fact key → allowed states, the literals that say so


class _TooLarge(Exception):
    """The normal form would exceed MAX_TERMS: no verdict."""


def _combine(a: Term, b: Term, reasons: dict[str, None]) -> Term | None:
    out = dict(a)
    for key, (states, lits) in b.items():
        if key in out:
            mine, my_lits = out[key]
            both = mine & states
            joined = my_lits + tuple(lit for lit in lits if lit not in my_lits)
            if both.empty:
                reasons[_reason(key, joined)] = None
                return None
            out[key] = (both, joined)
        else:
            out[key] = (states, lits)
    return out


def _dnf(cond: Condition, negated: bool, reasons: dict[str, None]) -> list[Term]:
    """The satisfiable terms of ``cond`` (negated), or raises ``_TooLarge``."""
    if isinstance(cond, Comparison):
        key, states = _literal(cond, negated)
        lit = _describe(cond, negated)
        if states.empty:
            reasons[_reason(key, (lit,))] = None
            return []
        return [{key: (states, (lit,))}]
    if isinstance(cond, Not):
        return _dnf(cond.item, not negated, reasons)
    if isinstance(cond, AllOf) != negated:  # all, or not any: a conjunction
        return _product([{}], cond.items, negated, reasons)
    out: list[Term] = []
    for item in cond.items:
        out.extend(_dnf(item, negated, reasons))
        if len(out) > MAX_TERMS:
            raise _TooLarge
    return out


def _product(acc: list[Term], conds: Iterable[Condition], negated: bool, reasons: dict[str, None]) -> list[Term]:
    for cond in conds:
        part = _dnf(cond, negated, reasons)
        if len(acc) * len(part) > _MAX_WORK:
            raise _TooLarge
        acc = [t for a in acc for b in part if (t := _combine(a, b, reasons)) is not None]
        if not acc:
            return []
        if len(acc) > MAX_TERMS:
            raise _TooLarge
    return acc


@dataclass(frozen=True)
class _Verdict:
    terms: list[Term] | None  # the satisfiable terms; None: too large to decide
    reasons: tuple[str, ...]  # why terms could not hold

    @property
    def never(self) -> bool:
        return self.terms == []

    @property
    def possible(self) -> bool:
        return bool(self.terms)

    def why(self, most: int = 3) -> str:
        shown = self.reasons[:most]
        more = len(self.reasons) - len(shown)
        return "; ".join(shown) + (f"; and {more} more" if more else "")


def _decide(conds: Sequence[Condition | None], base: Term | None = None) -> _Verdict:
    """Whether all of ``conds`` (None: always holds) can hold together."""
    reasons: dict[str, None] = {}
    try:
        terms = _product([dict(base or {})], [c for c in conds if c is not None], False, reasons)
    except _TooLarge:
        return _Verdict(None, ())
    return _Verdict(terms, tuple(reasons))


# ================================================================ the checks
def _money(value: Decimal) -> str:
    return str(value.quantize(CENT))


def _number(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _ids(ids: Iterable[str]) -> str:
    return ", ".join(f"'{i}'" for i in ids)


def _face_value(reward: Reward, order_net: Decimal | None = None) -> Decimal | None:
    """The award's money value as its type resolves it (None: no face value)."""
    found = reward_types.find(reward.type)
    if found is None:  # pragma: no cover - a valid programme names registered types
        return None
    ctx = AwardContext(reward=reward, key="lint", granted_at=datetime(2026, 1, 1, tzinfo=UTC), order_net=order_net)
    try:
        _, value = found.resolve(ctx)
    except Exception:  # noqa: BLE001 - a plug-in type that cannot value an award here has no face value
        return None
    return value if value else None


@dataclass
class _Code:
    """What a discount reward can put in a customer's hands at once."""

    reward: Reward
    percent: Decimal | None
    amount: Decimal | None
    days: int

    def label(self, currency: str) -> str:
        if self.percent is not None:
            return f"{_number(self.percent)} %"
        return f"{_money(self.amount or Decimal(0))} {currency}"


class _Lint:
    def __init__(self, programme: Programme, items: dict[str, list[Item]]):
        self.p = programme
        self.currency = programme.settings.currency
        self.items = {kind: {item.id: item for item in kind_items} for kind, kind_items in items.items()}
        self.warnings: list[RuleFileWarning] = []
        self.notes: list[str] = []
        self.stage_ids = [s.id for s in programme.stages]
        self.reachable: list[bool] = []
        self.choosable: dict[str, bool] = {}  # subgroup id → can be a customer's subgroup
        self.never_granted: set[str] = set()  # rewards whose condition or subgroups never hold

    # ------------------------------------------------------------ output
    def warn(self, check: str, kind: str, item_id: str, message: str, *sub: Any, at_key: bool = False) -> None:
        item = self.items[kind][item_id]
        p = item.source.problem_at((*item.path, *sub), message, at_key=at_key)
        self.warnings.append(RuleFileWarning(p.path, p.line, p.column, p.message, check=check))

    def note(self, kind: str, item_id: str, message: str) -> None:
        item = self.items[kind][item_id]
        self.notes.append(f"{item.source.where(item.path)}: note: {message}")

    def where(self, kind: str, item_id: str) -> str:
        item = self.items[kind][item_id]
        return item.source.where(item.path)

    def run(self) -> tuple[list[RuleFileWarning], list[str]]:
        self.stages()
        self.subgroups()
        self.rewards()
        self.overlaps()
        self.yearly()
        self.discounts()
        self.warnings.sort(key=lambda w: (w.path, w.line, w.column, w.message))
        return self.warnings, self.notes

    # ------------------------------------------------------------ 1. stages
    def stages(self) -> None:
        root: str | None = None  # the lowest unreachable stage
        for k, stage in enumerate(self.p.stages):
            if root is not None:
                self.reachable.append(False)
                self.warn("unreachable-stage", "stages", stage.id, (
                    f"stage '{stage.id}' can never be reached: the ladder climbs one stage at a time "
                    f"and stage '{root}' below it can never be reached"))
                continue
            verdict = _decide([stage.when])
            if verdict.never:
                root = stage.id
                self.reachable.append(False)
                self.warn("unreachable-stage", "stages", stage.id, (
                    f"the condition of stage '{stage.id}' can never hold ({verdict.why()}), "
                    "so no customer can reach it"), "when", at_key=True)
                continue
            below = self.p.stages[k - 1] if k else None
            if verdict.possible and below is not None and below.min_stay_days and stage.when is not None:
                stay = _minimum_stay(below)
                after = _decide([stage.when], stay)
                if after.never:
                    root = stage.id
                    self.reachable.append(False)
                    self.warn("unreachable-stage", "stages", stage.id, (
                        f"stage '{stage.id}' can never be reached: a customer climbs to it only after the "
                        f"{below.min_stay_days} days' minimum stay in stage '{below.id}', and then its "
                        f"condition can never hold ({after.why()})"), "when", at_key=True)
                    continue
            self.reachable.append(True)

    # ------------------------------------------------------------ 2, 3. subgroups
    def chosen(self, index: int) -> list[Condition | None]:
        """The conditions under which subgroup ``index`` is the one chosen (first that holds)."""
        subgroups = self.p.subgroups
        earlier = [Not(s.when) for s in subgroups[:index] if s.when is not None and self.choosable.get(s.id)]
        return [subgroups[index].when, *earlier]

    def subgroups(self) -> None:
        subgroups = self.p.subgroups
        for i, sg in enumerate(subgroups):
            own = _decide([sg.when])
            if own.never:
                self.choosable[sg.id] = False
                self.warn("never-holds", "subgroups", sg.id, (
                    f"the condition of subgroup '{sg.id}' can never hold ({own.why()}), "
                    "so no customer is ever in it"), "when", at_key=True)
                continue
            verdict = _decide(self.chosen(i))
            self.choosable[sg.id] = not verdict.never
            if not verdict.never:
                continue
            # earlier subgroups are never catch-alls (that is an error), so each has a condition
            overlapping = [s for s in subgroups[:i] if s.when is not None and self.choosable.get(s.id)
                           and not _decide([sg.when, s.when]).never]
            whole = [s for s in overlapping if s.when is not None and _decide([sg.when, Not(s.when)]).never]
            if sg.when is None:
                message = (f"subgroup '{sg.id}' (the catch-all) can never be chosen: every customer matches an "
                           f"earlier subgroup ({_ids(s.id for s in overlapping)}); the first that holds wins")
            elif whole:
                message = (f"subgroup '{sg.id}' can never be chosen: whenever its condition holds, so does the "
                           f"condition of the earlier subgroup '{whole[0].id}' "
                           f"(at {self.where('subgroups', whole[0].id)}); the first that holds wins")
            else:
                message = (f"subgroup '{sg.id}' can never be chosen: whenever its condition holds, one of the "
                           f"earlier subgroups {_ids(s.id for s in overlapping)} holds too; the first that holds wins")
            self.warn("shadowed-subgroup", "subgroups", sg.id, message)

    # ------------------------------------------------------------ 2. rewards
    def rewards(self) -> None:
        index = {s.id: i for i, s in enumerate(self.p.subgroups)}
        for reward in self.p.rewards:
            if reward.when is not None:
                own = _decide([reward.when])
                if own.never:
                    self.never_granted.add(reward.id)
                    self.warn("never-holds", "rewards", reward.id, (
                        f"the condition of reward '{reward.id}' can never hold ({own.why()}), "
                        "so it is never granted"), "when", at_key=True)
                    continue
            if not reward.subgroups:
                continue
            if not any(self.choosable.get(s) for s in reward.subgroups):
                self.never_granted.add(reward.id)  # a subgroup never chosen is reported as such
                continue
            verdicts = [_decide([reward.when, *self.chosen(index[s])]) for s in reward.subgroups
                        if self.choosable.get(s)]
            if all(v.never for v in verdicts):
                self.never_granted.add(reward.id)
                reasons = tuple(dict.fromkeys(r for v in verdicts for r in v.reasons))
                self.warn("never-holds", "rewards", reward.id, (
                    f"the condition of reward '{reward.id}' can never hold for a customer in its subgroups "
                    f"{_ids(reward.subgroups)} ({_Verdict([], reasons).why()}), so it is never granted"),
                    "when", at_key=True)

    # ------------------------------------------------------------ 4. overlapping rewards
    def trigger_stages(self, reward: Reward) -> list[int]:
        """The reachable stages (indices) in which ``reward``'s trigger can fire (none for a
        reward that is never granted)."""
        if reward.id in self.never_granted:
            return []
        t = reward.trigger
        named = set(t.stages) if t.stages else set(self.stage_ids)
        out = [i for i, s in enumerate(self.p.stages) if s.id in named and self.reachable[i]]
        if t.kind == "lapse":
            out = [i for i in out if self.p.stages[i].lapse_after_days]
        return out

    def overlaps(self) -> None:
        rewards = self.p.rewards
        index = {s.id: i for i, s in enumerate(self.p.subgroups)}
        for n, second in enumerate(rewards):
            for first in rewards[:n]:
                if first.type != second.type:
                    continue
                a, b = first.trigger, second.trigger
                if (a.kind, a.every, a.event) != (b.kind, b.every, b.event):
                    continue
                common = sorted(set(self.trigger_stages(first)) & set(self.trigger_stages(second)))
                if not common:
                    continue
                if first.subgroups and second.subgroups:
                    groups: list[str] | None = [s for s in first.subgroups if s in second.subgroups]
                else:
                    groups = list(first.subgroups or second.subgroups) or None
                if groups is None:
                    together = _decide([first.when, second.when]).possible
                else:
                    groups = [g for g in groups if self.choosable.get(g)
                              and _decide([first.when, second.when, *self.chosen(index[g])]).possible]
                    together = bool(groups)
                if not together:
                    continue
                ids = [self.stage_ids[i] for i in common]
                stages = "any stage" if not a.stages and not b.stages else f"stage {_ids(ids)}"
                instance = {
                    "stage": f"in {stages} once per stage and turn",
                    "order": f"for every order in {stages}",
                    "lapse": f"on lapsing in {stages}",
                    "period": f"every {a.every} in {stages}",
                    "event": f"for every '{a.event}' event in {stages}",
                }[a.kind]
                among = f" to subgroup{'s' if len(groups) > 1 else ''} {_ids(groups)}" if groups else ""
                self.warn("overlapping-rewards", "rewards", second.id, (
                    f"rewards '{first.id}' (at {self.where('rewards', first.id)}) and '{second.id}' are both "
                    f"'{second.type}' rewards granted {instance}{among}, and their conditions can hold together: "
                    "a customer can get both"))

    # ------------------------------------------------------------ 5. discount stack
    def codes(self) -> list[_Code]:
        out = []
        for reward in self.p.rewards:
            if reward.type != "discount":
                continue
            params = reward.params
            percent = Decimal(str(params["percent"])) if params.get("percent") is not None else None
            amount = Decimal(str(params["amount"])).quantize(CENT) if params.get("amount") is not None else None
            out.append(_Code(reward, percent, amount, int(params.get("expires_days") or 30)))
        return out

    def held(self, code: _Code, stage: int) -> int | None:
        """How many codes of ``code`` a customer in ``stage`` can hold at once (None: any number)."""
        stages = self.p.stages
        trigger = code.reward.trigger

        def in_time(j: int) -> bool:
            # granted while in stage j (before leaving it): the stays of the stages between must
            # fit in the code's lifetime
            return j <= stage and sum(s.min_stay_days for s in stages[j + 1:stage]) < code.days

        sources = [j for j in self.trigger_stages(code.reward) if in_time(j)]
        if not sources:
            return 0
        if trigger.kind in ("order", "event"):
            return None
        if trigger.kind == "period":
            return math.ceil(code.days / _PERIOD_MIN_DAYS[trigger.every or "year"])
        if trigger.kind == "lapse":
            shortest = min(stages[j].lapse_after_days or 1 for j in self.trigger_stages(code.reward))
            return math.ceil(code.days / shortest)
        # once per stage and turn; a new turn of a stage needs a lapse in it
        return sum(math.ceil(code.days / stages[j].lapse_after_days) if stages[j].lapse_after_days else 1
                   for j in sources)

    def discounts(self) -> None:
        codes = self.codes()
        if not codes:
            return
        stacks = []
        for k, stage in enumerate(self.p.stages):
            if not self.reachable[k]:
                continue
            held = [(code, self.held(code, k)) for code in codes]
            held = [(code, n) for code, n in held if n != 0]
            percent = sum((code.percent * n for code, n in held if code.percent is not None and n), Decimal(0))
            amount = sum((code.amount * n for code, n in held if code.amount is not None and n), Decimal(0))
            unbounded = [code for code, n in held if n is None]
            stacks.append((stage, held, percent, amount, unbounded))
        if not stacks:
            return

        def figure(held: list[tuple[_Code, int | None]], percent: Decimal, amount: Decimal) -> str:
            parts = [f"{_number(percent)} %"] if percent else []
            if amount:
                parts.append(f"{_money(amount)} {self.currency}")
            for code, n in held:
                if n is None:
                    parts.append(f"any number of '{code.reward.id}' codes")
            return " + ".join(parts)

        def listing(held: list[tuple[_Code, int | None]]) -> str:
            return ", ".join(f"{code.reward.id} {code.label(self.currency)}" + (f" × {n}" if n and n > 1 else "")
                             + (" × any number" if n is None else "") for code, n in held)

        def badness(stack: tuple[Any, ...]) -> tuple[int, Decimal, Decimal]:
            return len(stack[4]), stack[2], stack[3]

        stage, held, percent, amount, unbounded = max(stacks, key=badness)
        count = "" if unbounded else f", {sum(n or 0 for _, n in held)} codes held at once"
        self.note("stages", stage.id, (
            f"worst-case discount on one order, where the shop lets codes combine: {figure(held, percent, amount)}"
            f"{count} in stage '{stage.id}' ({listing(held)})"))
        for code in codes:
            having = [s for s in stacks if code in s[4]]
            if not having:
                continue
            stage, held, percent, amount, _ = max(having, key=badness)
            t = code.reward.trigger
            what = "order" if t.kind == "order" else f"'{t.event}' event"
            self.warn("discount-stack", "rewards", code.reward.id, (
                f"discount codes can stack without limit: reward '{code.reward.id}' gives a "
                f"{code.label(self.currency)} code on every {what}, valid {code.days} days, so a customer can hold "
                f"any number at once; worst case on one order, where the shop lets codes combine: "
                f"{figure(held, percent, amount)} (stage '{stage.id}')"))
        over = [s for s in stacks if s[2] > STACK_PERCENT]
        if over:
            stage, held, percent, amount, _ = max(over, key=lambda s: s[2])
            self.warn("discount-stack", "stages", stage.id, (
                f"a customer in stage '{stage.id}' can hold discount codes of {figure(held, percent, amount)} "
                f"at once ({listing(held)}): more than {_number(STACK_PERCENT)} % off one order where the "
                "shop lets codes combine"))

    # ------------------------------------------------------------ 6. yearly face value
    def yearly(self) -> None:
        per_stage: dict[int, list[Reward]] = {}
        for reward in self.p.rewards:
            for k in self.trigger_stages(reward):
                per_stage.setdefault(k, []).append(reward)
        for k, stage in enumerate(self.p.stages):
            if not self.reachable[k]:
                continue
            fixed: list[str] = []
            total = Decimal(0)
            unbounded: list[str] = []
            for reward in per_stage.get(k, []):
                t = reward.trigger
                if t.kind == "order":
                    at_100, at_200 = _face_value(reward, Decimal(100)), _face_value(reward, Decimal(200))
                    if at_100 is None:
                        continue
                    if at_200 == 2 * at_100:
                        unbounded.append(f"{reward.id} {_number(at_100)} % of each order")
                    else:
                        unbounded.append(f"{reward.id} {_money(at_100)} {self.currency} per order")
                    continue
                value = _face_value(reward)
                if value is None:
                    continue
                if t.kind == "event":
                    unbounded.append(f"{reward.id} {_money(value)} {self.currency} per '{t.event}' event")
                elif t.kind == "period":
                    times = _PER_YEAR[t.every or "year"]
                    total += value * times
                    fixed.append(f"{reward.id} {_money(value)} {self.currency} "
                                 + ("once a year" if times == 1 else f"× {times}"))
                else:
                    total += value
                    fixed.append(f"{reward.id} {_money(value)} {self.currency} once per turn")
            parts = [f"rewards worth {_money(total)} {self.currency} a year in one turn ({', '.join(fixed)})"
                     if fixed else "no fixed rewards with a face value"]
            if unbounded:
                parts.append("unbounded: " + ", ".join(unbounded))
            implied = _implied(stage)
            if stage.when is None:
                parts.append("no condition, so no minimum sales")
            elif implied:
                parts.append("its condition implies " + ", ".join(
                    f"{fact} {'≥' if included else '>'} "
                    f"{_money(low) + ' ' + self.currency if isinstance(low, Decimal) else low}"
                    for fact, (low, included) in implied.items()))
            else:
                parts.append("its condition implies no minimum sales")
            self.note("stages", stage.id, f"stage '{stage.id}': " + "; ".join(parts))
            sales = implied.get("net_spent")
            if fixed and sales is not None and total > sales[0]:
                self.warn("yearly-value", "stages", stage.id, (
                    f"rewards of stage '{stage.id}' worth up to {_money(total)} {self.currency} a year "
                    f"({', '.join(fixed)}) exceed the {_money(sales[0])} {self.currency} of sales (net_spent) "
                    "its condition implies"))


#: the facts whose least value a stage's condition may imply, in the order notes name them
_SALES_FACTS = ("net_spent", "profit", "orders_count", "orders_12m")


def _implied(stage: Stage) -> dict[str, tuple[Any, bool]]:
    """The least net_spent, profit and orders every customer meeting the stage's condition has."""
    verdict = _decide([stage.when])
    if not verdict.terms:
        return {}
    out: dict[str, tuple[Any, bool]] = {}
    for fact in _SALES_FACTS:
        lows = []
        for term in verdict.terms:
            found = term.get(fact)
            low = found[0].lower() if found else None
            if low is None:
                break
            lows.append(low)
        else:
            least = min(lows, key=lambda low: (low[0], not low[1]))
            if least[0] > 0 or (least[0] == 0 and not least[1]):
                out[fact] = least
    return out


def _minimum_stay(below: Stage) -> Term:
    """What the minimum stay of the stage below implies when climbing: ``days_known`` ≥ it."""
    lit = f"{{fact: days_known, gte: {below.min_stay_days}}}"
    states = _Set(True, ((below.min_stay_days, True, None, False),))
    return {"days_known": (states, (lit,))}

