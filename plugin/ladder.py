"""The ladder state machine: one customer's events, folded in time order, with due-time wake-ups.

A customer's state is a pure function of their events (deduplicated by id, sorted by
``(occurred_at, id)``, those after ``as_of`` ignored), the shop's timeline of programme versions
(:class:`~loyalty_ladder.timeline.Timeline`), its shop-wide inputs (admin turns, exclusions:
:class:`~loyalty_ladder.timeline.ShopInputs`) and ``as_of``.  Live processing, import, replay
and ``simulate`` all call ``fold``; the engine only says which conditions hold, this module
decides movement.

One module although it is over 400 lines: it is one state machine, and the order of the steps
of a wake-up (below) is its contract; split across files, that order would have no one place.

**Wake-ups.**  The machine looks at the customer at every distinct event time and at
its own due times: the end of the current stage's minimum stay, the lapse deadline,
the first instant of every calendar month (UTC) while on the ladder, each shop-wide
turn, each activation of a programme version and each upgrade of the fold's semantics while on
the ladder, and each change of the shop's exclusions.  ``as_of`` itself is never a wake-up, so ``fold(events, T2)`` agrees
with ``fold(events, T1)`` up to ``T1`` when nothing happened in between.

**At a wake-up**, in this order (every later feature keeps it; a step a feature adds goes
where this list names it):

1. pick the version active at the instant (the timeline segment it falls in).  At an
   activation the new version takes over: stage, turn and ``since`` are kept (a stage id the
   new version dropped is moved by the activation's stage map), so its minimum stays and lapse
   deadlines count from the same ``since`` and anchor and a deadline already past falls now;
   facts use the deciding version's settings from now on (the refund window excepted: an
   order keeps the window of the version active at its first event);
2. apply the events of that instant, manual adjustments among them (``stage_set``: the
   stage is set, a stage below only when forced, and it holds — no climb — until the
   customer's next counting order, from which on the rules decide again; ``turn_started``: a
   new turn; the grants and revocations of step 9);
3. refund-window exclusions (computed before the fold: an excluded order's events never
   arrive), then expiries: batches of points whose ``expires_at`` has come lose what remains
   (:mod:`.points`; each expiry is a wake-up);
4. a shop-wide turn at this instant: ``turn += 1`` (stage kept, lapse cleared: the turn
   restarts the lapse clock);
5. an excluded customer (a tag or e-mail pattern of the shop's exclusions) stops here: the
   events count in the facts, nothing is evaluated, moved or granted;
6. snapshot the facts (never affected by this wake-up's grants), evaluate once;
7. lapsed and a new counting order: no longer lapsed, ``turn += 1`` (a transition to
   the same stage with the new turn); then lapse: the deadline (anchor + the stage's
   ``lapse_after_days``, anchor = the latest counting order — or, without orders, the latest
   event — but not before the current turn's start) has come: lapsed, keeping the stage; then
   climb: enter stage 0 when it holds; climb while the next stage holds and the current
   stage's minimum stay (from ``since``) has passed, one stage per step, further in the
   same instant only while the entered stage has no minimum stay; never while lapsed;
   no demotion ever (a lapse check follows, for a stage with a shorter lapse);
8. subgroup: the first whose condition holds; privileges end (at an activation, step 1 marks
   the privileges the new version dropped or changed as ended at this instant, and here those
   of the current stage and turn it no longer allows to this customer; from semantics 2 on, a
   privilege granted on reaching a stage ends once the customer is in another stage; suspend and
   restore: none yet);
9. grants in rule-file order — reward condition and subgroup filter must hold in this
   evaluation, the customer must be in one of the trigger's stages (none listed: any): ``stage``
   rewards of the stage the customer is in now (once per stage and turn, so a stage
   only passed through gets none — and a version activated now grants its stage rewards whose
   key is not yet implied), ``order`` rewards for each counting order first
   seen now, ``event`` rewards for each event of the trigger's type now, ``period``
   rewards at the month wake-up that starts their period (every month start; Jan/Apr/
   Jul/Oct 1 for quarters; Jan 1 for years), for customers on the ladder before that
   instant — so a new-year greeting comes on January 1st, never in March to someone
   who joined in February — and ``lapse`` rewards when the customer lapsed now; then the
   manual grants (``reward_granted``) of this instant; a manual revocation
   (``reward_revoked``) removes its award from what is implied, with its reason;
10. the points ledger (:mod:`.points`), also for an excluded customer: the batches of orders
    whose figures changed now are resized (a refund claws back from the order's batch, then
    first-expiring-first, the rest a debt); the points granted in step 9 are new batches (each
    pays the debt first); then this instant's manual point adjustments and redemptions
    (``points_redeemed``: spent first-expiring-first, and an award of ``points_redemption`` that
    pays the value out in the shop); a points award revoked by hand is clawed back.

An award keeps the version that decided it (``rule_version``) and the values that version gave
it; an activation never reverses or re-values what was decided before it.

**Refund window.**  An order fully refunded (Σ refunds ≥ total) or cancelled within
``refund_window_days`` of its first event (and by ``as_of``) never counted: its
placed/paid/payment events are left out of the fold, so whatever depended on it —
a step, its rewards — is simply not implied any more (the service reverses the
recorded awards).  Its refund/cancel events stay (they count in ``refunds_count``).
Later or partial refunds only reduce the facts from their time on; per-order award
values use the order's net at ``as_of``.
"""
from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from .awards import ImpliedAward, award_key, imply
from .clock import as_utc
from .events import ADMIN_EVENT_TYPES, Event
from .facts import FactsAccumulator
from .points import PointsLedger, PointsView
from .programme import Programme, Reward, Settings, Stage, Trigger, condition_id
from .rewards import Kind
from .rewards import registry as reward_types
from .rewards.points import Points
from .timeline import Segment, ShopInputs, Timeline


# ------------------------------------------------------------------ protocol
class EvaluationLike(Protocol):
    holds: frozenset[str]
    trace: Sequence[Any]


class Evaluator(Protocol):
    """What the ladder needs from the engine (a ``CompiledProgramme`` satisfies it)."""

    def evaluate(self, facts: Mapping[str, Any], trace: bool = False) -> EvaluationLike: ...


# ------------------------------------------------------------------ state
@dataclass(frozen=True)
class Transition:
    """Entering ``stage`` (or starting ``turn`` at the same stage) at ``at``."""

    stage: str
    at: datetime
    turn: int


@dataclass(frozen=True)
class NextStep:
    stage: str
    missing: tuple[Mapping[str, Any], ...]  # {fact, op, value, current} of each failing comparison
    earliest_at: datetime | None  # when the current stage's minimum stay ends (None: not on the ladder)


@dataclass(frozen=True)
class LadderState:
    stage: str | None
    subgroup: str | None
    lapsed: bool
    turn: int
    since: datetime | None  # entered the current stage or turn
    history: tuple[Transition, ...]
    facts: Mapping[str, Any]
    awards: tuple[ImpliedAward, ...]
    next: NextStep | None
    next_wake_at: datetime | None
    rule_version: str  # the version active at as_of
    lapse_at: datetime | None = None
    lapsed_at: datetime | None = None  # when the customer lapsed (None while not lapsed)
    excluded: str | None = None  # why the shop's exclusions leave the customer out (None: evaluated)
    #: award keys revoked by hand, with the reason (they are not in ``awards``)
    revoked: Mapping[str, str] = field(default_factory=dict)
    #: the points ledger at ``as_of`` (:mod:`.points`)
    points: PointsView | None = None
    #: what a point is worth under the version active at ``as_of`` (None: points have no value)
    point_value: Decimal | None = None
    currency: str | None = None


# ------------------------------------------------------------------ helpers
ORDER_CREATING = ("order_placed", "order_paid")
#: the reward id of points redemptions in award keys (``…/points/redemption/<id>``)
REDEMPTION_REWARD = "points"
#: the fold semantics from which points earn on the points base (timeline.py, semantics 3)
POINTS_BASE_SEMANTICS = 3
#: the fold semantics from which a privilege is held as one holding (``…/privilege/<holding>``),
#: suspended while the customer lapsed where its type says so, and a grant expires (semantics 4)
HOLDINGS_SEMANTICS = 4
#: the scopes of a privilege held for a stage (before semantics 4 the stage and turn, since: the holding)
HELD_SCOPES = ("stage", "privilege")


def holding_instant(at: datetime) -> str:
    """A holding that starts at an instant other than a first stage entry: ``20261201T104500Z``
    (with microseconds when the instant has them)."""
    u = at.astimezone(UTC)
    return u.strftime("%Y%m%dT%H%M%S") + (f".{u.microsecond:06d}" if u.microsecond else "") + "Z"
#: events of an order excluded by the refund window that vanish from the fold
VANISHING = ("order_placed", "order_paid", "payment_received")


def prepare_events(events: Iterable[Event], as_of: datetime) -> list[Event]:
    """Deduplicate by id, drop events after ``as_of``, sort by ``(occurred_at, id)``.

    Duplicates of an id should carry the same content (the service enforces it); if not,
    the one first in ``(occurred_at, id)`` order wins, so the choice is still deterministic.
    """
    chosen: dict[str, Event] = {}
    for event in events:
        if event.occurred_at > as_of:
            continue
        known = chosen.get(event.id)
        if known is None or event.occurred_at < known.occurred_at:
            chosen[event.id] = event
    return sorted(chosen.values(), key=lambda e: e.sort_key)


def excluded_orders(events: Sequence[Event], settings: Settings | Callable[[datetime], Settings]) -> frozenset[str]:
    """Orders fully refunded or cancelled within the refund window of their first event.

    ``events`` are already sorted and cut at ``as_of``.  ``settings``: the programme's, or a
    function of an instant giving the settings of the version active then — an order keeps the
    refund window of the version active at its first event.
    """
    settings_at = settings if callable(settings) else (lambda _t: settings)
    windows: dict[str, timedelta] = {}
    first_at: dict[str, datetime] = {}
    totals: dict[str, Decimal] = {}
    refunds: dict[str, dict[str, Decimal]] = {}
    out: set[str] = set()
    for event in events:
        order = event.order
        if order is None:
            continue
        oid = order.id
        start = first_at.setdefault(oid, event.occurred_at)
        window = windows.get(oid)
        if window is None:
            window = windows[oid] = timedelta(days=settings_at(start).refund_window_days)
        if event.type in ORDER_CREATING and order.total is not None:
            totals[oid] = order.total
        if event.type == "order_restored":
            out.discard(oid)  # restored by the shop: the order counts after all
            continue
        if event.occurred_at - start > window:
            continue
        if event.type == "order_cancelled":
            out.add(oid)
        elif event.type == "order_refunded" and event.refund is not None:
            paid_back = refunds.setdefault(oid, {})
            paid_back[event.refund.id] = event.refund.amount
            if oid in totals and sum(paid_back.values()) >= totals[oid]:
                out.add(oid)
    return frozenset(out)


def month_start(t: datetime) -> datetime:
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def next_month_start(t: datetime) -> datetime:
    """The first instant of the calendar month after the one ``t`` is in (UTC)."""
    u = t.astimezone(UTC)
    if u.month == 12:
        return datetime(u.year + 1, 1, 1, tzinfo=UTC)
    return datetime(u.year, u.month + 1, 1, tzinfo=UTC)


def period_id(t: datetime, every: str | None) -> str:
    """``2026-03`` (month), ``2026-Q1`` (quarter), ``2026`` (year)."""
    if every == "year":
        return f"{t.year:04d}"
    if every == "quarter":
        return f"{t.year:04d}-Q{(t.month - 1) // 3 + 1}"
    return f"{t.year:04d}-{t.month:02d}"


def starts_period(t: datetime, every: str | None) -> bool:
    """Is the month start ``t`` also the start of a quarter / year?"""
    if every == "year":
        return t.month == 1
    if every == "quarter":
        return t.month % 3 == 1
    return True



def _holds(holds: frozenset[str], kind: str, item_id: str, when: Any) -> bool:
    # a missing condition always holds; the engine says so too, this is belt and braces
    return when is None or condition_id(kind, item_id) in holds


@dataclass
class _Grant:
    """A grant decided during the fold; params are resolved at the end (values need the net at as_of)."""

    reward: Reward
    scope: str
    ref: str | tuple[str, int]
    stage: str
    turn: int
    at: datetime
    version: str
    order_id: str | None = None
    note: str = ""  # a manual grant's author and reason
    ended_at: datetime | None = None  # a privilege ended by a later activation
    ended_reason: str = ""
    #: the stage a stage privilege is held for (a stage map moves it with the customer)
    held_in: str = ""
    key: str = ""  # the award key
    #: a privilege paused (semantics 4: the customer lapsed, for a type suspended while lapsed)
    suspended_at: datetime | None = None
    suspended_reason: str = ""
    #: a grant whose validity passed before it was used (semantics 4)
    expired_at: datetime | None = None


def _redemption(event: Event) -> Reward:
    """The award a ``points_redeemed`` event implies: its params were fixed when it was made."""
    adjustment = event.adjustment
    assert adjustment is not None
    params = {"points": adjustment.points, "value": adjustment.value, "currency": adjustment.currency,
              "redemption": adjustment.redemption}
    return Reward(id=REDEMPTION_REWARD, type="points_redemption", trigger=Trigger("event", event=event.type),
                  params=params, name="Points redemption")


class _Fold:
    """The mutable machine behind ``fold`` (one use)."""

    def __init__(self, timeline: Timeline, shop_inputs: ShopInputs, shop: str = "default", customer_id: str = ""):
        self.timeline = timeline
        self.shop, self.customer_id = shop, customer_id
        self.shop_inputs = shop_inputs
        self.seg_idx = -1
        self.segment: Segment = timeline.segments[0]
        self.programme: Programme = self.segment.programme
        self.evaluator: Evaluator = self.segment.evaluator
        self.stages: tuple[Stage, ...] = self.programme.stages
        self.used: tuple[str, ...] = ()
        self.memo: dict[tuple[Any, ...], frozenset[str]] = {}
        self.turn_times = list(shop_inputs.turns)
        self.turn_ptr = 0
        self.exclusion_times = [t for t, _ in shop_inputs.exclusions]
        self.acc: FactsAccumulator | None = None
        self.idx: int | None = None  # index of the current stage
        self.lapsed = False
        self.turn = 1
        self.since: datetime | None = None
        self.turn_start: datetime | None = None
        self.subgroup: str | None = None
        self.history: list[Transition] = []
        self.grants: list[_Grant] = []
        self.privileges: list[_Grant] = []  # the grants that are privileges (the loops of steps 1, 8, 9)
        self.granted: set[tuple[str, str, Any]] = set()
        #: stage privileges ended because the customer left their stage (semantics 2), by mark
        self.left: dict[tuple[str, str, Any], _Grant] = {}
        self.revoked: dict[str, str] = {}
        self.lapsed_at: datetime | None = None
        self.excluded: str | None = None
        self.email: str | None = None
        #: a stage set by hand holds (no climb) until the customer's next counting order
        self.placed = False
        #: privileges ended by an activation that changed them: reward id → the version whose
        #: grant starts them again (its key carries that version)
        self.restarted: dict[str, str] = {}
        self.semantics = timeline.semantics_at(datetime.min.replace(tzinfo=UTC))
        self.activated_at: datetime | None = None  # the latest activation instant the fold passed
        self.points = PointsLedger()
        #: points grants by award key, the keys of each order's batches, this wake-up's new grants
        self.batch_grants: dict[str, _Grant] = {}
        self.order_batches: dict[str, list[str]] = {}
        self.new_grants: list[_Grant] = []
        #: when the grants with a validity (``expires_days``) expire, sorted (wake-ups), and the
        #: discount codes seen in orders with when first (semantics 4: a code used is not expired)
        self.expiries: list[datetime] = []
        self.codes_used: dict[str, datetime] = {}
        self.use(timeline.index_at(datetime.min.replace(tzinfo=UTC)))

    # -------------------------------------------------------------- versions
    def use(self, seg_idx: int, at: datetime | None = None) -> None:
        """Let the timeline's segment ``seg_idx`` decide from now on (step 1 of a wake-up at ``at``)."""
        if seg_idx == self.seg_idx:
            return
        segment = self.timeline.segments[seg_idx]
        stage = self.stage
        previous = self.programme if self.seg_idx >= 0 else None
        self.seg_idx, self.segment = seg_idx, segment
        self.programme, self.evaluator = segment.programme, segment.evaluator
        self.stages = segment.programme.stages
        self.used = tuple(sorted(segment.programme.facts_used()))
        self.memo = {}
        if self.acc is not None:
            self.acc.settings = segment.programme.settings
        if stage is not None:
            # stage, turn and since are kept; a stage the new version dropped moves by the map
            target = segment.stage_map.get(stage.id, stage.id)
            ids = [st.id for st in self.stages]
            self.idx = ids.index(target) if target in ids else min(self.idx or 0, len(ids) - 1)
            moved_to = self.stages[self.idx].id
            if moved_to != stage.id:
                # a mapped stage is the same step under a new id: what it granted in this turn
                # (stage and lapse rewards) is not granted again under the new id, and the
                # privileges held for it are held for the new id
                for reward_id, scope, ref in list(self.granted):
                    if scope in ("stage", "lapse") and ref == (stage.id, self.turn):
                        self.granted.add((reward_id, scope, (moved_to, self.turn)))
                for grant in self.privileges:
                    if grant.held_in == stage.id:
                        grant.held_in = moved_to
        if previous is not None and at is not None:
            self.activated_at = at
            self._end_privileges(at, segment)

    def _end_privileges(self, at: datetime, segment: Segment) -> None:
        """At an activation: privileges (tags, VIP service, payment terms) the new version no
        longer has end now; one whose type or parameters it changed ends and, where the new
        version grants it to the customer now, starts again with its values (a new key)."""
        rewards = {r.id: r for r in segment.programme.rewards}
        for grant in self.privileges:
            if grant.ended_at is not None:
                continue
            new = rewards.get(grant.reward.id)
            if new is None:
                why = f"version {segment.version} no longer grants it"
            elif (new.type, dict(new.params)) != (grant.reward.type, dict(grant.reward.params)):
                why = f"version {segment.version} changed it"
                self.restarted[new.id] = segment.version
            else:
                continue
            grant.ended_at, grant.ended_reason = at, f"ended: {why}"

    # -------------------------------------------------------------- evaluation
    def evaluate(self, facts: Mapping[str, Any]) -> frozenset[str]:
        # identical used facts give the identical answer: month wake-ups often change nothing
        key = tuple(facts[name] for name in self.used)
        holds = self.memo.get(key)
        if holds is None:
            holds = frozenset(self.evaluator.evaluate(facts).holds)
            self.memo[key] = holds
        return holds

    # -------------------------------------------------------------- due times
    @property
    def stage(self) -> Stage | None:
        return None if self.idx is None else self.stages[self.idx]

    def stay_end(self) -> datetime | None:
        stage = self.stage
        if stage is None or self.lapsed or self.idx == len(self.stages) - 1 or not stage.min_stay_days:
            return None
        assert self.since is not None
        return self.since + timedelta(days=stage.min_stay_days)

    def lapse_deadline(self) -> datetime | None:
        stage = self.stage
        if stage is None or self.lapsed or stage.lapse_after_days is None or self.acc is None:
            return None
        # a customer whose only events are manual adjustments (not facts) counts from the turn
        anchor = self.acc.last_order_at() or self.acc.last_event_at or self.turn_start or self.since
        if anchor is None:  # pragma: no cover - on a stage means a since
            return None
        return max(anchor, self.turn_start or anchor) + timedelta(days=stage.lapse_after_days)

    def next_due(self, after: datetime) -> datetime | None:
        """The earliest due time strictly after ``after`` (events are not due times)."""
        candidates = [t for t in (self.stay_end(), self.lapse_deadline()) if t is not None and t > after]
        if self.idx is not None:
            candidates.append(next_month_start(after))
            ptr = bisect.bisect_right(self.turn_times, after)
            if ptr < len(self.turn_times):
                candidates.append(self.turn_times[ptr])
            activation = self.timeline.next_start(after)
            if activation is not None:
                candidates.append(activation)
            upgrade = self.timeline.next_semantics_start(after)
            if upgrade is not None:
                candidates.append(upgrade)
        ptr = bisect.bisect_right(self.exclusion_times, after)
        if ptr < len(self.exclusion_times):
            candidates.append(self.exclusion_times[ptr])
        ptr = bisect.bisect_right(self.expiries, after)
        if ptr < len(self.expiries):
            candidates.append(self.expiries[ptr])
        for points_due in (self.points.next_expiry(after), self.points.next_reminder(after)):
            if points_due is not None:
                candidates.append(points_due)
        return min(candidates, default=None)

    # -------------------------------------------------------------- movement
    def _transition(self, at: datetime) -> None:
        stage = self.stage
        assert stage is not None
        self.since = at
        self.history.append(Transition(stage.id, at, self.turn))

    def _new_turn(self, at: datetime) -> None:
        self.turn += 1
        self.lapsed = False
        self.turn_start = at
        self._transition(at)

    def _check_lapse(self, at: datetime) -> bool:
        deadline = self.lapse_deadline()
        if deadline is not None and deadline <= at:
            self.lapsed = True
            self.lapsed_at = at
            return True
        return False

    def _adjust(self, at: datetime, event: Event) -> None:
        """A manual ``stage_set`` or ``turn_started`` (step 2); grants and revocations wait for step 9."""
        adjustment = event.adjustment
        if event.type == "turn_started":
            if self.idx is not None:
                self._new_turn(at)
            return
        if event.type != "stage_set" or adjustment is None or adjustment.stage is None:
            return
        ids = [st.id for st in self.stages]
        if adjustment.stage not in ids:
            return  # checked when it was made; a version without the stage leaves it a no-op
        target = ids.index(adjustment.stage)
        if self.idx is not None and (target == self.idx or (target < self.idx and not adjustment.force)):
            return
        if self.idx is None:
            self.turn_start = at
        self.idx = target
        self.lapsed = False
        self.lapsed_at = None
        self.placed = True  # placed by hand: held until the next order (a move down would bounce back)
        self._transition(at)

    def wake(self, at: datetime, batch: Sequence[Event], on_ladder_before: bool) -> None:
        self.use(self.timeline.index_at(at), at)
        # the fold semantics in force (Timeline.semantics_at): a release that changes what the
        # fold means branches on it, so its change holds from the upgrade instant on only
        self.semantics = self.timeline.semantics_at(at)
        acc = self.acc
        assert acc is not None
        acc.new_orders.clear()
        self.new_grants = []
        self.points.expire(at)  # step 3: expiries (refund-window exclusions were made before the fold)
        manual = []
        for event in batch:
            if event.type in ADMIN_EVENT_TYPES:
                manual.append(event)
                continue
            acc.apply(event)
            if event.customer is not None and event.customer.email:
                self.email = event.customer.email
            if event.order is not None:
                for code in event.order.discount_codes:
                    self.codes_used.setdefault(code.upper(), at)
        new_orders = [oid for oid in acc.new_orders if acc.orders[oid].counts]
        for event in manual:
            self._adjust(at, event)

        admin_turn = False
        while self.turn_ptr < len(self.turn_times) and self.turn_times[self.turn_ptr] <= at:
            # turns while on the ladder are wake-ups of their own, so only this instant's reach here;
            # a turn before the customer entered the ladder means nothing to them
            admin_turn = admin_turn or (self.idx is not None and self.turn_times[self.turn_ptr] == at)
            self.turn_ptr += 1
        if admin_turn:
            self._new_turn(at)

        self.excluded = self.shop_inputs.exclusions_at(at).match(acc.tags, self.email)
        if self.excluded is not None:
            self._ledger(at, batch, manual)  # the customer's own points are theirs, excluded or not
            return

        facts = acc.snapshot(at)
        holds = self.evaluate(facts)

        if self.lapsed and new_orders:
            self._new_turn(at)
            self.lapsed_at = None
        lapsed_now = self._check_lapse(at)

        stages = self.stages
        if self.idx is None and _holds(holds, "stage", stages[0].id, stages[0].when):
            self.idx = 0
            self.turn_start = at
            self._transition(at)
        if new_orders and not any(e.type == "stage_set" for e in manual):
            self.placed = False  # new evidence: the rules decide again
        while (self.idx is not None and not self.lapsed and self.idx + 1 < len(stages) and not self.placed
               and _holds(holds, "stage", stages[self.idx + 1].id, stages[self.idx + 1].when)):
            assert self.since is not None
            if at < self.since + timedelta(days=stages[self.idx].min_stay_days):
                break
            self.idx += 1
            self._transition(at)
        lapsed_now = self._check_lapse(at) or lapsed_now

        self.subgroup = next((g.id for g in self.programme.subgroups
                              if _holds(holds, "subgroup", g.id, g.when)), None)
        if self.activated_at == at and self.idx is not None:
            self._end_disallowed(at, holds)
        if self.semantics >= 2 and self.idx is not None:
            self._end_left_behind(at)
        if self.semantics >= HOLDINGS_SEMANTICS:
            self._suspend(at)
        if self.idx is not None:
            period_start = on_ladder_before and at == month_start(at)
            self._grant(at, holds, batch, new_orders, period_start, lapsed_now)
        for event in manual:
            self._manual_award(at, event)
        self._ledger(at, batch, manual)

    # -------------------------------------------------------------- points (step 10)
    def _points_of(self, grant: _Grant) -> int:
        """A points grant's points now (an order's as its figures stand at this wake-up)."""
        return Points.earned(grant.reward.params, self._points_base(grant))

    def _points_base(self, grant: _Grant) -> Decimal | None:
        if grant.order_id is None:
            return None
        acc = self.acc
        assert acc is not None
        if self.timeline.semantics_at(grant.at) >= POINTS_BASE_SEMANTICS:
            return acc.points_base(grant.order_id)
        return acc.order_net(grant.order_id)

    def _ledger(self, at: datetime, batch: Sequence[Event], manual: Sequence[Event]) -> None:
        ledger = self.points
        for oid in dict.fromkeys(e.order.id for e in batch if e.order is not None):
            for key in self.order_batches.get(oid, ()):
                if key not in self.revoked:
                    ledger.resize(key, at, self._points_of(self.batch_grants[key]))
        for grant in self.new_grants:
            if grant.reward.type != Points.name or grant.key in self.batch_grants:
                continue
            self.batch_grants[grant.key] = grant
            if grant.order_id is not None:
                self.order_batches.setdefault(grant.order_id, []).append(grant.key)
            days = grant.reward.params.get("expires_days")
            expires = grant.at + timedelta(days=int(days)) if days is not None else None
            ledger.earn(grant.key, at, self._points_of(grant), expires, grant.order_id,
                        remind_at=self._remind_at(expires))
        for event in manual:
            adjustment = event.adjustment
            if adjustment is None:
                continue
            if event.type == "reward_revoked" and adjustment.award_key in self.batch_grants:
                ledger.resize(adjustment.award_key, at, 0)  # revoked by hand: clawed back
            elif event.type == "points_adjusted" and adjustment.points:
                if adjustment.points > 0:
                    days = adjustment.expires_days
                    expires = at + timedelta(days=days) if days else None
                    ledger.earn(event.id, at, adjustment.points, expires, kind="adjusted",
                                remind_at=self._remind_at(expires))
                else:
                    ledger.spend(event.id, at, -adjustment.points, kind="adjusted")
            elif event.type == "points_redeemed" and adjustment.points:
                ledger.spend(adjustment.redemption or event.id, at, adjustment.points)
                self._add(_redemption(event), "redemption", adjustment.redemption or event.id, at)
        for due in ledger.remind(at) if self.semantics >= HOLDINGS_SEMANTICS else ():
            reminder = Reward(id=REDEMPTION_REWARD, type="points_reminder", trigger=Trigger("event"),
                              params={"points": due.remaining, "expires_at": due.expires_at, "batch": due.key},
                              name="Points expiring soon")
            grant = self.batch_grants.get(due.key)
            # the batch's own reference (reward, scope, ref; or the adjustment's event id) keeps the key short
            ref = (grant.reward.id, grant.scope, *([grant.ref] if isinstance(grant.ref, str) else grant.ref)) \
                if grant is not None else (due.key,)
            self._add(reminder, "reminder", tuple(str(p) for p in ref), at)

    def _remind_at(self, expires: datetime | None) -> datetime | None:
        """When a batch expiring at ``expires`` is reminded of (the deciding version's setting)."""
        days = self.programme.settings.points_reminder_days
        return expires - timedelta(days=days) if expires is not None and days else None

    def _end_disallowed(self, at: datetime, holds: frozenset[str]) -> None:
        """At an activation, after evaluation (step 8): a privilege held for the current stage and
        turn ends when the new version no longer allows it to this customer — its stages, its
        subgroups or its condition (a privilege of an earlier stage is left as it is)."""
        stage = self.stage
        assert stage is not None
        rewards = {r.id: r for r in self.programme.rewards}
        for grant in self.privileges:
            # semantics 2 holds a stage privilege across turns in the stage: each turn's grant counts
            held_here = (grant.held_in == stage.id if self.semantics >= 2
                         else isinstance(grant.ref, tuple) and grant.ref[:2] == (stage.id, self.turn))
            if grant.ended_at is not None or grant.scope not in HELD_SCOPES or not held_here:
                continue
            reward = rewards.get(grant.reward.id)
            if reward is None:
                continue  # dropped: ended in step 1
            version = self.segment.version
            if reward.trigger.kind != "stage" or (reward.trigger.stages and stage.id not in reward.trigger.stages):
                why = f"version {version} does not grant it in stage {stage.id}"
            elif reward.subgroups and self.subgroup not in reward.subgroups:
                why = f"version {version} grants it only to subgroups {', '.join(reward.subgroups)}"
            elif not _holds(holds, "reward", reward.id, reward.when):
                why = f"its condition in version {version} does not hold"
            else:
                continue
            grant.ended_at, grant.ended_reason = at, f"ended: {why}"

    def _end_left_behind(self, at: datetime) -> None:
        """Semantics 2, step 8: a privilege granted on reaching a stage ends when the customer is
        no longer in the stage it is held for (a climb, a stage set by hand; a stage map moves it
        along) — the customer holds the tag, VIP service or terms of where they are, not of every
        stage they passed.  It is held on where the same reward is granted in the new stage too
        (a reward of several stages), and across a new turn in the same stage (the new turn's
        grant joins it), so the shop is never asked to remove and add one tag at once.  Entering
        the stage again in the same turn holds it again under the same key."""
        stage = self.stage
        assert stage is not None
        for grant in self.privileges:  # every wake-up: the cheap tests first
            if grant.ended_at is not None or grant.scope not in HELD_SCOPES or grant.held_in == stage.id:
                continue
            reward = next((r for r in self.programme.rewards if r.id == grant.reward.id), None)
            if (reward is not None and reward.trigger.kind == "stage"
                    and (not reward.trigger.stages or stage.id in reward.trigger.stages)):
                continue  # granted in this stage too: held on (no removal and new grant of one tag)
            grant.ended_at, grant.ended_reason = at, f"ended: left stage {grant.held_in} for {stage.id}"
            if self.semantics < HOLDINGS_SEMANTICS:
                # entering that stage again in this turn (a stage set down by hand, then a climb)
                # holds it again under the same key (from semantics 4 on: a new holding)
                self.left[(grant.reward.id, grant.scope, grant.ref)] = grant

    def _suspend(self, at: datetime) -> None:
        """Semantics 4, step 8: a held privilege whose type pauses while the customer lapsed (VIP
        service, payment terms) is suspended at the lapse and restored at the customer's next turn."""
        for grant in self.privileges:
            if grant.ended_at is not None or not reward_types.of(grant.reward.type).suspended_while_lapsed:
                continue
            if self.lapsed and grant.suspended_at is None:
                grant.suspended_at = at
                grant.suspended_reason = f"suspended: the customer lapsed in stage {self.stage.id if self.stage else '?'}"
            elif not self.lapsed and grant.suspended_at is not None:
                grant.suspended_at, grant.suspended_reason = None, ""  # the cause ended: restored

    def _hold(self, reward: Reward, stage: Stage, at: datetime) -> None:
        """Semantics 4, step 9: a privilege granted on reaching a stage is one holding from its start
        to its end (``…/privilege/<stage>/<turn>``): a new turn in the stage, or another stage that
        grants it too, holds it on — no second award; after it ended, a new start is a new holding
        keyed by its instant."""
        for grant in self.privileges:
            if grant.reward.id == reward.id and grant.ended_at is None and grant.scope in HELD_SCOPES:
                grant.held_in = stage.id
                return
        ref: str | tuple[Any, ...] = (stage.id, self.turn)
        if (reward.id, "privilege", ref) in self.granted:
            ref = holding_instant(at)
        self._add(reward, "privilege", ref, at)

    def _manual_award(self, at: datetime, event: Event) -> None:
        """A manual ``reward_granted`` or ``reward_revoked`` (step 9, after the rule-file grants)."""
        adjustment = event.adjustment
        if adjustment is None:
            return
        who = f"by {adjustment.author}: {adjustment.reason}"
        if event.type == "reward_revoked" and adjustment.award_key:
            self.revoked[adjustment.award_key] = f"revoked {who}"
        elif event.type == "reward_granted" and adjustment.reward:
            reward = next((r for r in self.programme.rewards if r.id == adjustment.reward), None)
            if reward is not None:  # checked when it was made; a version without it grants nothing
                self._add(reward, "manual", event.id, at, note=f"granted {who}")

    def _grant(self, at: datetime, holds: frozenset[str], batch: Sequence[Event], new_orders: Sequence[str],
               month_start_wake: bool, lapsed_now: bool) -> None:
        stage = self.stage
        assert stage is not None
        for reward in self.programme.rewards:
            trigger = reward.trigger
            if trigger.stages and stage.id not in trigger.stages:
                continue
            if not _holds(holds, "reward", reward.id, reward.when):
                continue
            if reward.subgroups and self.subgroup not in reward.subgroups:
                continue
            kind = trigger.kind
            if kind == "stage" and self.semantics >= HOLDINGS_SEMANTICS and \
                    reward_types.of(reward.type).kind == Kind.PRIVILEGE:
                self._hold(reward, stage, at)
            elif kind == "stage":
                restarted = self.restarted.get(reward.id)
                ref = (stage.id, self.turn) if restarted is None else (stage.id, self.turn, restarted)
                self._add(reward, "stage", ref, at)
            elif kind == "order":
                for oid in new_orders:
                    self._add(reward, "order", oid, at, order_id=oid)
            elif kind == "event":
                for event in batch:
                    if event.type == trigger.event:
                        self._add(reward, "event", event.id, at)
            elif kind == "period" and month_start_wake and starts_period(at, trigger.every):
                self._add(reward, "period", period_id(at, trigger.every), at)
            elif kind == "lapse" and lapsed_now:
                self._add(reward, "lapse", (stage.id, self.turn), at)

    def _add(self, reward: Reward, scope: str, ref: str | tuple[Any, ...], at: datetime,
             order_id: str | None = None, note: str = "") -> None:
        mark = (reward.id, scope, ref)
        left = self.left.pop(mark, None)
        if left is not None and left.ended_at is not None:
            left.ended_at, left.ended_reason = None, ""  # back in its stage: held again, same key
            return
        if mark in self.granted:
            return
        self.granted.add(mark)
        stage = self.stage
        grant = _Grant(reward, scope, ref, stage.id if stage is not None else "", self.turn, at,
                       self.segment.version, order_id, note, held_in=stage.id if stage is not None else "",
                       key=award_key(self.shop, self.customer_id, reward.id, scope, ref))
        self.grants.append(grant)
        self.new_grants.append(grant)
        reward_type = reward_types.of(reward.type)
        if reward_type.kind == Kind.PRIVILEGE:
            self.privileges.append(grant)
        days = reward.params.get("expires_days")
        if days is not None and reward_type.kind == Kind.GRANT and not reward_type.kept_here:
            bisect.insort(self.expiries, at + timedelta(days=int(days)))


# ------------------------------------------------------------------ fold
def fold(programme: Programme | Timeline, evaluator: Evaluator | None, events: Iterable[Event], as_of: datetime,
         shop: str = "default", customer_id: str = "", live_from: datetime | None = None,
         shop_turns: Iterable[datetime] = (), shop_inputs: ShopInputs | None = None) -> LadderState:
    """The customer's ladder state at ``as_of`` (see the module docstring for the rules).

    ``programme``: a shop's :class:`Timeline` of versions (``evaluator`` unused), or one programme
    with its ``evaluator`` — a timeline of that one version.  ``shop_inputs``: the shop-wide admin
    turns and exclusions (``shop_turns`` alone: turns only)."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    timeline = programme if isinstance(programme, Timeline) else Timeline.single(programme, evaluator)
    if shop_inputs is None:
        shop_inputs = ShopInputs.of(shop_turns)
    live_from = as_utc(live_from) if live_from is not None else None
    evs = prepare_events(events, as_of)
    excluded = excluded_orders(evs, lambda t: timeline.at(t).programme.settings)
    if excluded:
        evs = [e for e in evs if not (e.type in VANISHING and e.order is not None and e.order.id in excluded)]

    machine = _Fold(timeline, shop_inputs, shop, customer_id)
    acc = FactsAccumulator(machine.programme.settings, excluded)
    machine.acc = acc
    i = 0
    last: datetime | None = None
    while True:
        next_event = evs[i].occurred_at if i < len(evs) else None
        due = machine.next_due(last) if last is not None else None
        candidates = [t for t in (next_event, due) if t is not None]
        if not candidates:
            break
        at = min(candidates)
        if at > as_of:
            break
        j = i
        while j < len(evs) and evs[j].occurred_at == at:
            j += 1
        machine.wake(at, evs[i:j], on_ladder_before=machine.idx is not None)
        i = j
        last = at

    machine.use(timeline.index_at(as_of))  # a customer off the ladder is read under today's version
    facts = acc.snapshot(as_of)
    resolved = (_expire(_resolve(g, shop, customer_id, live_from, acc, timeline, machine._points_base(g)),
                        machine, timeline, as_of)
                for g in machine.grants)
    # an award may come to nothing (points of an order refunded in full, outside the window): its
    # type says so, and it is no longer implied (reversed), rather than left due with nothing in it
    awards = tuple(a for a in resolved if reward_types.of(a.type).implied(a.params) and a.key not in machine.revoked)
    stage = machine.stage
    lapse_at = machine.lapse_deadline()
    programme, evaluator = machine.programme, machine.evaluator
    return LadderState(
        points=machine.points.view(as_of), point_value=programme.settings.point_value,
        currency=programme.settings.currency,
        stage=stage.id if stage is not None else None,
        subgroup=machine.subgroup if stage is not None else None,
        lapsed=machine.lapsed,
        turn=machine.turn,
        since=machine.since,
        history=tuple(machine.history),
        facts=facts,
        awards=awards,
        next=_next_step(programme, evaluator, machine, facts),
        next_wake_at=machine.next_due(as_of),
        rule_version=programme.version,
        lapse_at=lapse_at,
        lapsed_at=machine.lapsed_at if machine.lapsed else None,
        excluded=machine.excluded,
        revoked=dict(machine.revoked),
    )


def _resolve(grant: _Grant, shop: str, customer_id: str, live_from: datetime | None,
             acc: FactsAccumulator, timeline: Timeline, points_base: Decimal | None) -> ImpliedAward:
    """The award of a grant, valued as the version that decided it values it."""
    order_net = acc.order_net(grant.order_id) if grant.order_id is not None else None
    settings = timeline.at(grant.at).programme.settings
    if timeline.semantics_at(grant.at) < POINTS_BASE_SEMANTICS:
        points_base = None  # the order's whole net, as before semantics 3
    return imply(grant.reward, shop=shop, customer_id=customer_id, scope=grant.scope, ref=grant.ref,
                 stage=grant.stage or None, turn=grant.turn, granted_at=grant.at, live_from=live_from,
                 order_net=order_net, currency=settings.currency, rule_version=grant.version, note=grant.note,
                 ended_at=grant.ended_at, ended_reason=grant.ended_reason, points_base=points_base,
                 point_value=settings.point_value, suspended_at=grant.suspended_at,
                 suspended_reason=grant.suspended_reason, key=grant.key or None)


def _expire(award: ImpliedAward, machine: _Fold, timeline: Timeline, as_of: datetime) -> ImpliedAward:
    """Semantics 4: a grant whose validity (``expires_at``) passed by ``as_of`` before it was used
    is expired — a discount code is used when an order names it before then; a grant without a
    code cannot tell use, so it expires only if it was never delivered (the store decides that)."""
    text = award.params.get("expires_at")
    reward_type = reward_types.of(award.type)
    if not isinstance(text, str) or reward_type.kind != Kind.GRANT or reward_type.kept_here:
        return award
    expires = datetime.fromisoformat(text)
    if expires > as_of or timeline.semantics_at(expires) < HOLDINGS_SEMANTICS:
        return award
    code = award.params.get("code")
    used = machine.codes_used.get(str(code).upper()) if code else None
    if used is not None and used < expires:
        return award
    return dataclasses.replace(award, expired_at=expires)


def _next_step(programme: Programme, evaluator: Evaluator, machine: _Fold,
               facts: Mapping[str, Any]) -> NextStep | None:
    stages = programme.stages
    target = 0 if machine.idx is None else machine.idx + 1
    if target >= len(stages):
        return None
    nxt = stages[target]
    missing: list[dict[str, Any]] = []
    if nxt.when is not None:
        condition = condition_id("stage", nxt.id)
        evaluation = evaluator.evaluate(facts, trace=True)
        if condition not in evaluation.holds:
            # the failing comparisons are what is missing (for `any`, each alternative)
            for entry in evaluation.trace:
                if entry.condition == condition and not entry.result:
                    missing.append({"fact": entry.fact, "op": entry.op, "value": entry.value,
                                    "current": entry.current})
    earliest = None
    current = machine.stage
    if current is not None and machine.since is not None:
        earliest = machine.since + timedelta(days=current.min_stay_days)
    return NextStep(stage=nxt.id, missing=tuple(missing), earliest_at=earliest)
