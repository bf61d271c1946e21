"""One customer replayed under the baseline and the candidate: the fold of live traffic, twice.

Everything a worker process needs arrives as plain, picklable data (:class:`Job`: the two
timelines as :class:`TimelineSpec`, the as-of time, the shop's inputs), is compiled once per
process (:func:`start`), and each chunk of customers comes back as one
:class:`~loyalty_ladder.backtest.tally.Tally` — so only counts cross between processes.

A customer is folded with :func:`loyalty_ladder.ladder.fold`, exactly as
:mod:`loyalty_ladder.processing` folds it live (the shop's go-live time, turns and exclusions
when the history is the database), and summarised as a :class:`Side` per programme.  Anything
that goes wrong with one customer — events that do not validate, a fold that raises — is that
customer's recorded failure with its reason; the others go on.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError

from .. import ladder as ladder_mod
from .. import ledger
from ..engine import get_engine
from ..errors import BadRequest, LadderError
from ..events import Event, parse_event
from ..programme import Programme
from ..rewards import Kind
from ..rewards import registry as reward_types
from ..timeline import Segment, ShopInputs, Timeline
from .sources import Customer
from .tally import Side, Tally

#: how much of a failure's text is kept
REASON_CHARS = 500


@dataclass(frozen=True)
class TimelineSpec:
    """A timeline as data (versions, their starts and stage maps, the fold semantics), rebuilt
    and compiled in each worker process."""

    segments: tuple[tuple[datetime | None, Programme, tuple[tuple[str, str], ...]], ...]
    semantics: tuple[tuple[datetime | None, int], ...]

    @classmethod
    def of(cls, timeline: Timeline) -> TimelineSpec:
        return cls(tuple((s.start, s.programme, tuple(sorted(s.stage_map.items()))) for s in timeline.segments),
                   timeline.semantics)

    def build(self) -> Timeline:
        engine = get_engine()
        return Timeline(tuple(Segment(start, programme, engine.compile(programme), dict(stage_map))
                              for start, programme, stage_map in self.segments), self.semantics)

    @property
    def versions(self) -> list[str]:
        return [programme.version for _start, programme, _map in self.segments]

    def programme_at(self, at: datetime) -> Programme:
        """The version deciding ``at`` (the as-of time: whose stage ids the report uses)."""
        chosen = self.segments[0][1]
        for start, programme, _map in self.segments:
            if start is None or start <= at:
                chosen = programme
        return chosen


@dataclass(frozen=True)
class Job:
    """What every worker needs: whose history, under which two timelines, as of when."""

    shop: str
    baseline: TimelineSpec
    candidate: TimelineSpec
    as_of: datetime
    #: ``file`` (raw JSON lines, validated as the events API validates them) or ``database``
    #: (stored events, already accepted)
    source: str
    source_name: str = ""
    live_from: datetime | None = None
    shop_inputs: ShopInputs = field(default_factory=ShopInputs)
    #: the activation instant of a preview (``--from``), else None
    preview_at: datetime | None = None


class Replayer:
    """A job's timelines compiled once; folds customers into a tally."""

    def __init__(self, job: Job):
        self.job = job
        self.baseline = job.baseline.build()
        self.candidate = job.candidate.build()
        self.candidate_programme = job.candidate.programme_at(job.as_of)
        self.baseline_programme = job.baseline.programme_at(job.as_of)

    def chunk(self, customers: Iterable[Customer]) -> Tally:
        tally = Tally()
        for customer in customers:
            try:
                events = self.events(customer)
                baseline = self.side(self.baseline, events, customer.id, self.baseline_programme)
                candidate = self.side(self.candidate, events, customer.id, self.candidate_programme)
            except Exception as exc:  # noqa: BLE001 - one customer's failure never stops the others
                tally.fail(customer.id, _reason(exc))
                continue
            tally.add(customer.id, baseline, candidate)
        return tally

    def events(self, customer: Customer) -> list[Event]:
        if self.job.source == "database":
            return [Event.from_raw(body) for body in customer.items]
        labels = [f"{self.job.source_name}:{n}" for n in customer.labels]
        parsed: list[Event] = []
        errors: dict[str, Any] = {}
        for label, line in zip(labels, customer.items):
            try:
                parsed.append(parse_event(json.loads(line)))
            except ValidationError as exc:
                errors[label] = exc.normalized_messages()
        if errors:
            raise _Invalid(errors)
        try:
            ledger.check_acceptable(self.candidate_programme, parsed, None, labels)
            ledger.check_unique(parsed, labels)
        except BadRequest as exc:  # worded for the events API ("nothing was stored")
            raise _Invalid(exc.errors) from None
        return parsed

    def side(self, timeline: Timeline, events: Sequence[Event], customer_id: str, own: Programme) -> Side:
        job = self.job
        state = ladder_mod.fold(timeline, None, events, job.as_of, shop=job.shop, customer_id=customer_id,
                                live_from=job.live_from, shop_inputs=job.shop_inputs)
        return summarise(state, rank(state.stage, own, self.candidate_programme), job.preview_at)


def rank(stage_id: str | None, own: Programme, common: Programme) -> float:
    """A stage's position on the candidate's ladder (``common``), so stages of two programmes
    compare: its index there; a stage only ``own`` has sits just above the nearest stage below it
    that the candidate has (as a stage map would move it); off the ladder: -1."""
    if stage_id is None:
        return -1
    ids = [s.id for s in common.stages]
    if stage_id in ids:
        return ids.index(stage_id)
    own_ids = [s.id for s in own.stages]
    below = [x for x in own_ids[:own_ids.index(stage_id)] if x in ids] if stage_id in own_ids else []
    return (ids.index(below[-1]) if below else -1) + 0.5


def summarise(state: ladder_mod.LadderState, position: float, preview_at: datetime | None) -> Side:
    """What the report needs of one customer's state under one programme (``position``: the
    stage's :func:`rank`)."""
    rewards: dict[str, tuple[str, int, Decimal, Decimal, int]] = {}
    held: set[str] = set()
    value = cost = Decimal(0)
    at_t: list[tuple[str, str, bool, Decimal | None]] = []  # (key, what, historical, value) at the preview instant
    for award in state.awards:
        reward_type = reward_types.of(award.type)
        kind = reward_type.kind
        face = award.value if award.value is not None else Decimal(0)
        award_cost = reward_type.cost(award)
        rtype, count, total, total_cost, unvalued = rewards.get(award.reward_id, (award.type, 0, Decimal(0),
                                                                                  Decimal(0), 0))
        rewards[award.reward_id] = (rtype, count + 1, total + face, total_cost + (award_cost or 0),
                                    unvalued + (award.value is None))
        value += face
        cost += award_cost or 0
        if kind == Kind.PRIVILEGE and award.ended_at is None:
            held.add(privilege_identity(award.type, award.params))
        if preview_at is not None:
            if award.granted_at == preview_at:
                at_t.append((award.key, "granted", award.historical, award.value))
            if award.ended_at is not None and award.ended_at == preview_at:
                at_t.append((award.key, "ended", award.historical, None))
    climbed = lapsed_at_t = False
    if preview_at is not None:
        climbed = any(h.at == preview_at for h in state.history)
        lapsed_at_t = state.lapsed and state.lapsed_at == preview_at
    return Side(stage=state.stage, rank=position, subgroup=state.subgroup, lapsed=state.lapsed,
                rewards=rewards, value=value, cost=cost, privileges=frozenset(held),
                climbed_at=climbed, lapsed_at=lapsed_at_t, at_preview=tuple(sorted(at_t, key=lambda x: x[:2])))


def privilege_identity(reward_type: str, params: Mapping[str, Any]) -> str:
    """What a customer holds by a privilege, whatever reward id gives it: a tag by its name, VIP
    service or payment terms by their type."""
    tag = params.get("tag") if reward_type == "tag" else None
    return f"tag {tag}" if tag else reward_type.replace("_", " ")


class _Invalid(LadderError):
    def __init__(self, errors: Mapping[str, Any]):
        super().__init__("invalid events", dict(errors))


def _flatten(errors: Any, prefix: str = "") -> list[str]:
    if isinstance(errors, Mapping):
        out: list[str] = []
        for key, value in errors.items():
            out += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(errors, list) and all(isinstance(e, str) for e in errors):
        return [f"{prefix}: {' '.join(errors)}"]
    if isinstance(errors, list):
        return [line for e in errors for line in _flatten(e, prefix)]
    return [f"{prefix}: {errors}"]


def _reason(exc: Exception) -> str:
    if isinstance(exc, LadderError):
        # errors keyed by event label: "demo.jsonl:17: order.total: Missing data for required field."
        lines = ([f"{label}: {line}" for label, sub in exc.errors.items() for line in _flatten(sub)]
                 if isinstance(exc.errors, Mapping) else [])
        text = f"{exc.message}: {'; '.join(lines)}" if lines else exc.message
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 1] + "…"


# -- the worker process side: one Replayer per process
_REPLAYER: Replayer | None = None


def start(job: Job) -> None:
    """Pool initializer: compile the job's timelines in this process."""
    global _REPLAYER
    _REPLAYER = Replayer(job)


def run_chunk(customers: list[Customer]) -> Tally:
    """Pool task: fold a chunk of customers with this process's replayer."""
    if _REPLAYER is None:  # pragma: no cover - start() runs first in every worker
        raise RuntimeError("backtest worker not started")
    return _REPLAYER.chunk(customers)
