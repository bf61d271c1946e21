"""The validated, immutable model of a loyalty programme (what rule files mean).

``rulefile`` builds it from YAML; ``engine`` compiles its conditions;
``ladder`` and ``awards`` interpret stages, subgroups and rewards.  Nothing
here reads files or talks to durable_rules.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


# --------------------------------------------------------------- conditions
@dataclass(frozen=True)
class Comparison:
    """``fact op value``; false when the fact is absent."""

    fact: str
    op: str  # one of factspec.ORDER_OPS / TAG_OPS
    value: Decimal | int | bool | str | datetime


@dataclass(frozen=True)
class AllOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


Condition = Comparison | AllOf | AnyOf | Not


def comparisons(cond: Condition | None) -> Iterator[Comparison]:
    """Every comparison of a condition, depth first, in the order written."""
    if cond is None:
        return
    if isinstance(cond, Comparison):
        yield cond
    elif isinstance(cond, Not):
        yield from comparisons(cond.item)
    else:
        for item in cond.items:
            yield from comparisons(item)


def condition_facts(cond: Condition | None) -> set[str]:
    """Names of the facts a condition reads."""
    return {cmp.fact for cmp in comparisons(cond)}


def condition_to_data(cond: Condition | None) -> Any:
    """The canonical data form (as in rule files) of a condition."""
    if cond is None:
        return None
    if isinstance(cond, Comparison):
        value: Any = cond.value
        if isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        return {"fact": cond.fact, cond.op: value}
    if isinstance(cond, Not):
        return {"not": condition_to_data(cond.item)}
    key = "all" if isinstance(cond, AllOf) else "any"
    return {key: [condition_to_data(i) for i in cond.items]}


# --------------------------------------------------------------- condition ids
#: what a condition belongs to; its id is ``<kind>:<item id>`` (``stage:regular``)
CONDITION_KINDS = ("stage", "subgroup", "reward")


def condition_id(kind: str, item_id: str) -> str:
    """The id of the ``when`` of a stage, subgroup or reward (``stage:regular``).

    The engine answers with these ids and the ladder, awards and traces read them back, so they
    are spelt here only: a kind-id pair stays one string everywhere.
    """
    if kind not in CONDITION_KINDS:
        raise ValueError(f"unknown condition kind {kind!r}; one of {', '.join(CONDITION_KINDS)}")
    return f"{kind}:{item_id}"


def parse_condition_id(cid: str) -> tuple[str, str]:
    """``(kind, item id)`` of a condition id; the inverse of :func:`condition_id`.

    Item ids never contain ``:`` (rule files restrict them to ``[a-z][a-z0-9_-]*``), so the first
    colon separates the two; ``ValueError`` for anything that is not a condition id.
    """
    kind, sep, item_id = cid.partition(":")
    if not sep or kind not in CONDITION_KINDS or not item_id:
        raise ValueError(f"not a condition id: {cid!r} (expected stage:<id>, subgroup:<id> or reward:<id>)")
    return kind, item_id


# --------------------------------------------------------------- programme
TRIGGERS = ("stage", "order", "period", "event", "lapse")
PERIODS = ("month", "quarter", "year")
EVENT_TRIGGERS = ("complaint", "review", "referral", "order_refunded", "order_cancelled", "customer_created")


@dataclass(frozen=True)
class Settings:
    currency: str = "EUR"
    refund_window_days: int = 30
    default_margin: Decimal = Decimal("0.30")  # profit share of net sales when cost is unknown
    image_client_tag: str = "image-client"
    name: str = ""
    #: what one point is worth in ``currency`` when redeemed (None: points cannot be redeemed)
    point_value: Decimal | None = None
    #: the days before a batch of points expires when the customer is reminded (0: never)
    points_reminder_days: int = 14


@dataclass(frozen=True)
class Stage:
    id: str
    name: str
    when: Condition | None = None  # None: always holds
    min_stay_days: int = 0
    lapse_after_days: int | None = None


@dataclass(frozen=True)
class Subgroup:
    id: str
    name: str
    when: Condition | None = None  # None: the catch-all (must be last)


@dataclass(frozen=True)
class Trigger:
    """When a reward is granted.

    * ``stage``: once per stage and turn, at the first wake-up in the stage where
      ``when`` holds (not for customers only passing through);
    * ``order``: for each counting paid/placed order while in one of ``stages``;
    * ``period``: once per calendar ``every`` (month/quarter/year) while in ``stages``;
    * ``event``: for each event of type ``event`` while in ``stages``;
    * ``lapse``: once per turn when the customer lapses in one of ``stages``.

    ``stages`` empty means every stage.
    """

    kind: str
    stages: tuple[str, ...] = ()
    every: str | None = None
    event: str | None = None


@dataclass(frozen=True)
class Reward:
    id: str
    type: str
    trigger: Trigger
    when: Condition | None = None
    subgroups: tuple[str, ...] = ()  # empty: all subgroups
    params: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class Programme:
    settings: Settings
    stages: tuple[Stage, ...]
    subgroups: tuple[Subgroup, ...]
    rewards: tuple[Reward, ...]
    source: str = ""  # directory or file it was read from
    canonical: str = field(default="", compare=False)  # normalised JSON of the parsed programme

    @property
    def version(self) -> str:
        """Hash of the normalised programme: comments and formatting do not change it."""
        return hashlib.sha256(self.canonical.encode()).hexdigest()[:12]

    def stage_index(self, stage_id: str) -> int:
        for i, stage in enumerate(self.stages):
            if stage.id == stage_id:
                return i
        raise KeyError(stage_id)

    def stage(self, stage_id: str) -> Stage:
        return self.stages[self.stage_index(stage_id)]

    def reward(self, reward_id: str) -> Reward:
        for reward in self.rewards:
            if reward.id == reward_id:
                return reward
        raise KeyError(reward_id)

    def facts_used(self) -> set[str]:
        out: set[str] = set()
        for item in (*self.stages, *self.subgroups, *self.rewards):
            out |= condition_facts(item.when)
        return out


def canonical_json(data: Any) -> str:
    """Stable JSON used for the programme version hash."""

    def default(o: Any) -> Any:
        if isinstance(o, Decimal):
            return str(o)
        if isinstance(o, datetime):
            return o.isoformat()
        raise TypeError(type(o))

    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=default)
