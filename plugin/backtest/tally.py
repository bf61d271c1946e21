"""A backtest's figures: per-customer sides added up, chunk tallies merged, the report built.

Every figure is a sum or a count, and the examples are the first ten in one total order (the
most reasons, then the largest loss of face value, then the customer id), so merging the chunk
tallies of any number of workers in any order gives the same report.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

#: how many customers worse off (and failures) the report names
EXAMPLES = 10
#: the row and column of customers on no stage (off the ladder)
NONE = "(none)"
SIDES = ("baseline", "candidate")
#: why a customer is worse off under the candidate, in report order
REASONS = ("lower_stage", "lapsed_only_under_candidate", "privilege_lost", "lower_face_value")


@dataclass(frozen=True)
class Side:
    """One customer under one programme at the as-of time."""

    stage: str | None
    rank: float  # the stage's position on the candidate's ladder (replay.rank), -1 off the ladder
    subgroup: str | None
    lapsed: bool
    #: reward id -> (type, awards, face value, cost, awards without a face value)
    rewards: Mapping[str, tuple[str, int, Decimal, Decimal, int]]
    value: Decimal
    cost: Decimal
    privileges: frozenset[str]  # held at the as-of time (privileges not ended)
    climbed_at: bool = False  # a transition at the preview instant
    lapsed_at: bool = False  # lapsed at the preview instant
    at_preview: tuple[tuple[str, str, bool, Decimal | None], ...] = ()  # (key, granted|ended, historical, value)


def worse_reasons(baseline: Side, candidate: Side) -> list[str]:
    reasons = []
    if candidate.rank < baseline.rank:
        reasons.append("lower_stage")
    if candidate.lapsed and not baseline.lapsed:
        reasons.append("lapsed_only_under_candidate")
    # a tag is the shop's label (what it brings lives in the shop): listed, but alone not a loss
    if any(not p.startswith("tag ") for p in baseline.privileges - candidate.privileges):
        reasons.append("privilege_lost")
    if candidate.value < baseline.value:
        reasons.append("lower_face_value")
    return reasons


def _side_doc(side: Side) -> dict[str, Any]:
    return {"stage": side.stage, "subgroup": side.subgroup, "lapsed": side.lapsed, "face_value": side.value,
            "privileges": sorted(side.privileges)}


@dataclass
class Tally:
    customers: int = 0
    movement: Counter[tuple[str, str]] = field(default_factory=Counter)
    stages: Counter[tuple[str, str]] = field(default_factory=Counter)
    lapsed: Counter[tuple[str, str]] = field(default_factory=Counter)
    subgroups: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (side, stage, subgroup)
    #: (side, reward id) -> [awards, customers, face value, cost, awards without a face value]
    rewards: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    reward_types: dict[str, str] = field(default_factory=dict)
    value: dict[str, Decimal] = field(default_factory=lambda: {s: Decimal(0) for s in SIDES})
    cost: dict[str, Decimal] = field(default_factory=lambda: {s: Decimal(0) for s in SIDES})
    awards: Counter[str] = field(default_factory=Counter)
    worse: Counter[str] = field(default_factory=Counter)
    #: customers who lose each privilege, tags included (``tag ladder-regular``, ``vip service``)
    lost: Counter[str] = field(default_factory=Counter)
    worse_off: int = 0
    #: heap of the examples: (-reasons, -loss, customer id, example) with a total order
    examples: list[tuple[int, Decimal, str, dict[str, Any]]] = field(default_factory=list)
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: what happens at the preview instant under the candidate and not under the baseline
    preview: Counter[str] = field(default_factory=Counter)
    preview_value: Decimal = Decimal(0)
    preview_rewards: Counter[str] = field(default_factory=Counter)

    # -- one customer
    def add(self, customer_id: str, baseline: Side, candidate: Side) -> None:
        self.customers += 1
        self.movement[(baseline.stage or NONE, candidate.stage or NONE)] += 1
        for name, side in zip(SIDES, (baseline, candidate)):
            stage = side.stage or NONE
            self.stages[(name, stage)] += 1
            if side.lapsed:
                self.lapsed[(name, stage)] += 1
            if side.subgroup is not None:
                self.subgroups[(name, stage, side.subgroup)] += 1
            for reward_id, (rtype, count, value, cost, unvalued) in side.rewards.items():
                self._type(reward_id, rtype)
                row = self.rewards.setdefault((name, reward_id), [0, 0, Decimal(0), Decimal(0), 0])
                row[0] += count
                row[1] += 1
                row[2] += value
                row[3] += cost
                row[4] += unvalued
                self.awards[name] += count
            self.value[name] += side.value
            self.cost[name] += side.cost
        self.lost.update(baseline.privileges - candidate.privileges)
        reasons = worse_reasons(baseline, candidate)
        if reasons:
            self.worse_off += 1
            self.worse.update(reasons)
            loss = baseline.value - candidate.value
            example = {"customer_id": customer_id, "reasons": reasons, "baseline": _side_doc(baseline),
                       "candidate": _side_doc(candidate),
                       "privileges_lost": sorted(baseline.privileges - candidate.privileges)}
            self._keep(self.examples, (-len(reasons), -loss, customer_id, example))
        if candidate.at_preview or candidate.climbed_at or candidate.lapsed_at:
            self._preview(baseline, candidate)

    def _preview(self, baseline: Side, candidate: Side) -> None:
        if candidate.climbed_at and not baseline.climbed_at:
            self.preview["climb"] += 1
        if candidate.lapsed_at and not baseline.lapsed_at:
            self.preview["lapse"] += 1
        before = {(key, what) for key, what, _h, _v in baseline.at_preview}
        granted = False
        for key, what, historical, value in candidate.at_preview:
            if (key, what) in before:
                continue
            self.preview[what] += 1
            if what == "granted":
                granted = True
                self.preview_value += value or 0
                self.preview_rewards[key.split("/")[2]] += 1
            if not historical:
                self.preview["deliveries"] += 1
        if granted:
            self.preview["customers_granted"] += 1

    def _type(self, reward_id: str, rtype: str) -> None:
        # one id of two types (baseline and candidate differ): the first in name order, whatever
        # the order the chunks arrive in
        known = self.reward_types.get(reward_id)
        self.reward_types[reward_id] = rtype if known is None else min(known, rtype)

    def fail(self, customer_id: str, reason: str) -> None:
        self.failed += 1
        self._keep(self.failures, (customer_id, reason))

    @staticmethod
    def _keep(heap: list[Any], item: Any) -> None:
        """Keep the EXAMPLES smallest items (a max-heap by negation would need invertible keys,
        so the list is kept sorted; it never holds more than EXAMPLES + 1 items)."""
        heap.append(item)
        heap.sort(key=_order)
        del heap[EXAMPLES:]

    # -- chunks
    def merge(self, other: Tally) -> None:
        self.customers += other.customers
        self.movement.update(other.movement)
        self.stages.update(other.stages)
        self.lapsed.update(other.lapsed)
        self.subgroups.update(other.subgroups)
        for key, row in other.rewards.items():
            mine = self.rewards.setdefault(key, [0, 0, Decimal(0), Decimal(0), 0])
            for i, v in enumerate(row):
                mine[i] += v
        for reward_id, rtype in other.reward_types.items():
            self._type(reward_id, rtype)
        for name in SIDES:
            self.value[name] += other.value[name]
            self.cost[name] += other.cost[name]
        self.awards.update(other.awards)
        self.worse.update(other.worse)
        self.lost.update(other.lost)
        self.worse_off += other.worse_off
        for item in other.examples:
            self._keep(self.examples, item)
        self.failed += other.failed
        for item in other.failures:
            self._keep(self.failures, item)
        self.preview.update(other.preview)
        self.preview_value += other.preview_value
        self.preview_rewards.update(other.preview_rewards)


def _order(item: Any) -> tuple[Any, ...]:
    # examples: (-reasons, -loss, customer id, doc); failures: (customer id, reason)
    return item[:3] if isinstance(item[-1], dict) else item
