"""The default programme (``rules/ladder.yaml``) folded by hand: the speed baseline of bench/backtest.py.

What the fold would cost written by hand: one customer's events in, their stage, subgroup,
lapse and awards out, as ``loyalty_ladder.ladder.fold`` gives them for a single version folded
from the beginning under the fold semantics of this release (4: ``timeline.CURRENT_SEMANTICS``)
— but in plain Python with the programme's thresholds as constants: no rule engine, no
``Programme`` model, no marshmallow, not even an import of ``loyalty_ladder`` at run time (the
check below imports it to compare).

It follows the order of operations of ``plugin/ladder.py`` (its docstring) for one version, no
shop-wide turns, no exclusions and no go-live time (``live_from``: every points grant is a batch):

* events deduplicated by id (the earliest wins), those after ``as_of`` dropped, sorted by
  ``(occurred_at, id)``; orders fully refunded or cancelled within 30 days of their first event
  (and not restored) are excluded: their placed/paid/payment events vanish;
* wake-ups at every event time; while on the ladder, at the end of the current stage's minimum
  stay, at the lapse deadline and at the first instant of every calendar month (UTC); and at
  the expiry of every discount code granted, and the expiry and the reminder time (14 days
  before its expiry) of every batch of points with points left;
* at a wake-up: expired batches of points lose what remains; the events of the instant (facts
  updated incrementally, as ``FactsAccumulator`` does, with the same ``Decimal`` arithmetic in
  the same order), the manual adjustments of the instant (``stage_set``, ``turn_started``), then
  lapsed + a new counting order → a new turn; the lapse check; enter Potential; climb one stage
  at a time while the next holds and the minimum stay has passed; a second lapse check; the
  first subgroup that holds; privileges held for a stage the customer is no longer in end
  (semantics 2); the grants in rule-file order; the manual grants and revocations; the points
  ledger (``loyalty_ladder.points``: batches of orders whose figures changed resized — a
  clawback from the order's batch, then first-expiring-first, the rest a debt —, this instant's
  points grants new batches paying the debt first, ``points_adjusted`` and ``points_redeemed``
  (spent first-expiring-first; a ``points_redemption`` award), points revoked by hand clawed
  back, and a ``points_reminder`` award for each batch whose reminder is due and that still
  holds points);
* a privilege granted on reaching a stage (the stage tags, ``vip``, ``pay-later``) is one
  holding (semantics 4): ``…/<reward>/privilege/<stage>/<turn>``, held on across a new turn in
  the stage (no second award); started again in a stage and turn that had one (after it ended:
  a stage set down by hand, then a climb back), keyed by its instant
  (``…/privilege/20261201T104500Z``);
* at the end, each award's key (``award_key``: ``shop/customer/reward/scope/ref``, components
  percent-encoded, long ones hashed) and face value; points of an order are floor(points base at
  ``as_of``) — the points base (semantics 3) is (total − tax − gift-card lines − the part paid
  with points) × (1 − refunded/total), 0 when cancelled — and an award of 0 points is not
  implied; points are worth ``point_value`` 0.01 each; revoked keys are dropped.

The facts the programme reads: ``checkouts_started``, ``orders_count``, ``active_months_12m``,
``full_price_share``, ``referrals``, ``profit``, ``image_client`` (the ``image-client`` tag or the
customer's flag), ``average_order_value`` and ``accepts_marketing``; only those are kept.

The fold computes keys and face values (what the backtest reports); the rest of an award's
params (discount codes, expiry times, points, a reminder's batch, a redemption's value) are built
only on request (:func:`award_params`), for the check.  The check compares stage, subgroup,
lapsed, turn and, per award, key, reward, value, stage, turn, granted_at and params, for every
customer.  Not reproduced, because no figure of the backtest's baseline depends on them: when a
privilege ended (``ended_at``), its suspension while the customer lapsed (``suspended_at``: VIP
service and payment terms), a grant that expired unused (``expired_at``), the ledger's balance
and entries, and the rest of ``LadderState`` (history, facts, next step).  Input is trusted:
events are taken as valid generic events (what ``parse_event`` accepts); nothing is validated.

    python bench/handfold.py --check 2000     # fold generated customers both ways, compare
    python bench/handfold.py --file demo.jsonl --as-of 2026-12-01T00:00:00Z   # stage counts
    python bench/handfold.py --file demo.jsonl --as-of 2026-12-01T00:00:00Z --compare   # both ways

``PROGRAMME_VERSION`` is the version of ``rules/`` this fold was written for; ``--check`` fails
when ``rules/`` has changed since (the constants below must then be brought up to date).
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import json
import math
import re
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
#: the version of rules/ this fold reproduces (``load_programme("rules").version``)
PROGRAMME_VERSION = "3dd58ce8191d"

# ------------------------------------------------------------------ the programme, as constants
ZERO = Decimal(0)
ONE = Decimal(1)
CENT = Decimal("0.01")
RATIO = Decimal("0.0001")
YEAR = timedelta(days=365)
REFUND_WINDOW = timedelta(days=30)
DEFAULT_MARGIN = Decimal("0.30")
IMAGE_CLIENT_TAG = "image-client"
CURRENCY = "EUR"
POINT_VALUE = Decimal("0.01")  # point_value: what one point is worth
REMINDER_BEFORE = timedelta(days=14)  # points_reminder_days

STAGES = ("potential", "visitor", "first_purchase", "regular", "advocate")
POTENTIAL, VISITOR, FIRST_PURCHASE, REGULAR, ADVOCATE = range(5)
LAST = ADVOCATE
NO_STAY = timedelta(0)
MIN_STAY = (NO_STAY, NO_STAY, timedelta(days=14), timedelta(days=30), NO_STAY)
LAPSE_AFTER = (timedelta(days=365), None, timedelta(days=180), timedelta(days=120), timedelta(days=180))

ADVOCATE_FULL_PRICE = Decimal("0.6")
ADVOCATE_PROFIT = Decimal("500.00")
PROFITABLE_PROFIT = Decimal("250.00")
PROFITABLE_AOV = Decimal("150.00")
PROFITABLE_AOV_PROFIT = Decimal("100.00")
AVERAGE_PROFIT = Decimal("50.00")
SUBGROUPS = ("profitable", "average", "unprofitable")

STAGE_TAG = ("tag-potential", "tag-visitor", "tag-first-purchase", "tag-regular", "tag-advocate")
STAGE_DISCOUNT = ("welcome", "first-order", "second-order", None, None)
#: every reward id, for manual grants (``reward_granted`` of an unknown id grants nothing)
REWARDS = ("welcome", "first-order", "second-order", *STAGE_TAG, "order-points", "free-express", "vip",
           "pay-later", "apology", "review-thanks", "win-back", "new-year-greeting")
#: fixed face values (points are valued at POINT_VALUE; a percentage, a tag … have none)
VALUES = {"second-order": Decimal("10.00"), "free-express": Decimal("5.00"), "apology": Decimal("5.00")}
REVIEW_POINTS = 50
POINTS_LAST = timedelta(days=365)  # expires_days of both points rewards
POINTS_REWARDS = frozenset(("order-points", "review-thanks"))
#: the days the discount codes last (each grant's expiry is a wake-up of the fold)
DISCOUNT_DAYS = {"welcome": timedelta(days=30), "first-order": timedelta(days=14),
                 "second-order": timedelta(days=30), "win-back": timedelta(days=30)}
#: the reward id of points reminders and redemptions (``…/points/reminder/…``, ``…/points/redemption/…``)
POINTS = "points"

ADMIN = frozenset(("stage_set", "turn_started", "reward_granted", "reward_revoked", "points_adjusted",
                   "points_redeemed"))
CREATING = frozenset(("order_placed", "order_paid"))
VANISHING = frozenset(("order_placed", "order_paid", "payment_received"))


# ------------------------------------------------------------------ small helpers
def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def dec(value: Any) -> Decimal:
    return Decimal(value) if isinstance(value, str) else Decimal(str(value))


def utc(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is UTC else t.astimezone(UTC)


def next_month_start(t: datetime) -> datetime:
    return datetime(t.year + 1, 1, 1, tzinfo=UTC) if t.month == 12 else datetime(t.year, t.month + 1, 1, tzinfo=UTC)


def holding_instant(t: datetime) -> str:
    """The reference of a holding started again after it ended: ``20261201T104500Z``."""
    return t.strftime("%Y%m%dT%H%M%S") + (f".{t.microsecond:06d}" if t.microsecond else "") + "Z"


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
_HASHED = re.compile(r"~[0-9a-f]{40}")


def _component(part: object) -> str:
    text = str(part)
    encoded = text if _UNRESERVED.fullmatch(text) else quote(text, safe="")
    if len(encoded) > 160:
        return "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    if _HASHED.fullmatch(encoded):
        return "%7E" + encoded[1:]
    return encoded


def _key(prefix: str, reward: str, scope: str, ref: str | tuple[Any, ...]) -> str:
    if isinstance(ref, tuple):
        return f"{prefix}{reward}/{scope}/" + "/".join(_component(p) for p in ref)
    return f"{prefix}{reward}/{scope}/{_component(ref)}"


class Award(NamedTuple):
    key: str
    reward: str
    value: Decimal | None
    stage: str | None
    turn: int
    granted_at: datetime
    #: for award_params: the points of a points reward; ("reminder", points, expires_at, batch key) of
    #: a points reminder; ("redemption", points, value, currency, redemption id) of a redemption
    detail: Any


class Result(NamedTuple):
    stage: str | None
    subgroup: str | None
    lapsed: bool
    turn: int
    awards: list[Award]


class _Order:
    __slots__ = ("cancelled", "cost", "counting", "first_at", "fp_net", "full_price", "gift_cards", "id", "net",
                 "points_paid", "profit", "refunds", "shipping", "shipping_cost", "tax", "total")

    def __init__(self, oid: str, first_at: datetime):
        self.id = oid
        self.first_at = first_at
        self.total = ZERO
        self.shipping = ZERO
        self.shipping_cost: Decimal | None = None
        self.tax = ZERO
        self.gift_cards = ZERO
        self.points_paid = ZERO
        self.cost = ZERO
        self.full_price = True
        self.cancelled = False
        self.refunds: dict[str, Decimal] = {}
        self.counting = False
        self.net = ZERO  # this order's contributions to the running sums
        self.profit = ZERO
        self.fp_net = ZERO

    def points(self) -> int:
        """floor(points base): (total − tax − gift cards − paid with points) × the share kept, 0 cancelled."""
        if self.cancelled:
            return 0
        total = self.total
        kept = (ONE - min(total, sum(self.refunds.values(), ZERO)) / total) if total > 0 else ONE
        return math.floor(money(max(ZERO, (total - self.tax - self.gift_cards - self.points_paid) * kept)))


# ------------------------------------------------------------------ the points ledger
class _Batch:
    __slots__ = ("earned_at", "expired", "expired_points", "expires_at", "key", "points", "ref", "remaining",
                 "remind_at", "reminded")

    def __init__(self, key: str, earned_at: datetime, expires_at: datetime | None, points: int,
                 remind_at: datetime | None, ref: tuple[str, ...]):
        self.key = key
        self.earned_at = earned_at
        self.expires_at = expires_at
        self.points = self.remaining = points
        self.remind_at = remind_at
        self.ref = ref  # the reminder's reference: (reward, scope, ref) of the award, or (event id,)
        self.reminded = self.expired = False
        self.expired_points = 0

    def usable(self, at: datetime) -> bool:
        return self.remaining > 0 and not self.expired and (self.expires_at is None or self.expires_at > at)


def _spend_order(b: _Batch) -> tuple[Any, ...]:
    return (b.expires_at is None, b.expires_at or b.earned_at, b.earned_at, b.key)


class _Ledger:
    """The batches of points (``loyalty_ladder.points.PointsLedger`` without its entries), with the
    pending expiries and reminders kept sorted so a wake-up looks only at those due."""

    __slots__ = ("batches", "debt", "expiring", "reminding")

    def __init__(self) -> None:
        self.batches: dict[str, _Batch] = {}
        self.debt = 0
        self.expiring: list[tuple[datetime, str]] = []  # (expires_at, key) of the batches not expired yet
        self.reminding: list[tuple[datetime, str]] = []  # (remind_at, key) of the batches not reminded yet

    def next_due(self) -> datetime | None:
        """The earliest pending expiry or reminder of a batch with points left (every pending one
        is after the latest wake-up: each wake-up takes those due)."""
        due = None
        for when, key in self.expiring:
            if self.batches[key].remaining > 0:
                due = when
                break
        for when, key in self.reminding:
            if due is not None and when >= due:
                break
            if self.batches[key].remaining > 0:
                due = when
                break
        return due

    def expire(self, at: datetime) -> None:
        expiring = self.expiring
        while expiring and expiring[0][0] <= at:
            b = self.batches[expiring.pop(0)[1]]
            b.expired = True
            b.expired_points, b.remaining = b.remaining, 0

    def earn(self, key: str, at: datetime, points: int, expires_at: datetime | None, ref: tuple[str, ...]) -> None:
        if key in self.batches:
            return
        remind_at = expires_at - REMINDER_BEFORE if expires_at is not None else None
        if remind_at is not None and remind_at <= at:
            remind_at = None
        b = self.batches[key] = _Batch(key, at, expires_at, max(0, points), remind_at, ref)
        if expires_at is not None:
            bisect.insort(self.expiring, (expires_at, key))
        if remind_at is not None:
            bisect.insort(self.reminding, (remind_at, key))
        self._pay_debt(b)

    def resize(self, key: str, at: datetime, points: int) -> None:
        b = self.batches.get(key)
        if b is None or points == b.points:
            return
        delta = points - b.points
        b.points = points
        if delta > 0:
            if not b.expired and (b.expires_at is None or b.expires_at > at):
                b.remaining += delta
                self._pay_debt(b)
            return
        lapsed = min(-delta, b.expired_points)
        b.expired_points -= lapsed
        if -delta - lapsed:
            left = -delta - lapsed
            if b.usable(at):
                taken = min(b.remaining, left)
                b.remaining -= taken
                left -= taken
            self.debt += self.take(at, left, key)

    def take(self, at: datetime, points: int, exclude: str | None = None) -> int:
        """Take ``points`` first-expiring-first; what is left over."""
        left = points
        for b in sorted(self.batches.values(), key=_spend_order):
            if left <= 0:
                break
            if b.key == exclude or not b.usable(at):
                continue
            taken = min(b.remaining, left)
            b.remaining -= taken
            left -= taken
        return left

    def _pay_debt(self, b: _Batch) -> None:
        if self.debt and b.remaining:
            paid = min(self.debt, b.remaining)
            b.remaining -= paid
            self.debt -= paid

    def remind(self, at: datetime) -> list[_Batch]:
        """The batches reminded of now (each once, when due) that still hold points."""
        due = []
        reminding = self.reminding
        while reminding and reminding[0][0] <= at:
            b = self.batches[reminding.pop(0)[1]]
            b.reminded = True
            if b.usable(at):
                due.append(b)
        return sorted(due, key=_spend_order) if len(due) > 1 else due


# ------------------------------------------------------------------ the fold
def fold_customer(events: Iterable[Mapping[str, Any]], as_of: datetime, shop: str = "default",
                  customer_id: str = "") -> Result:
    """One customer's raw events (generic-event JSON objects, any order) folded to ``as_of``."""
    chosen: dict[str, tuple[datetime, str, str, Mapping[str, Any]]] = {}
    for raw in events:
        at = utc(raw["occurred_at"])
        if at > as_of:
            continue
        eid = raw["id"]
        known = chosen.get(eid)
        if known is None or at < known[0]:
            chosen[eid] = (at, eid, raw["type"], raw)
    evs = sorted(chosen.values(), key=lambda e: (e[0], e[1]))

    # ---- refund window: orders fully refunded or cancelled within 30 days of their first event
    first_seen: dict[str, datetime] = {}
    totals: dict[str, Decimal] = {}
    paid_back: dict[str, dict[str, Decimal]] = {}
    excluded: set[str] = set()
    for at, _eid, kind, raw in evs:
        order = raw.get("order")
        if order is None:
            continue
        oid = order["id"]
        start = first_seen.setdefault(oid, at)
        if kind in CREATING and order.get("total") is not None:
            totals[oid] = dec(order["total"])
        if kind == "order_restored":
            excluded.discard(oid)
            continue
        if at - start > REFUND_WINDOW:
            continue
        if kind == "order_cancelled":
            excluded.add(oid)
        elif kind == "order_refunded" and raw.get("refund") is not None:
            back = paid_back.setdefault(oid, {})
            back[raw["refund"]["id"]] = dec(raw["refund"]["amount"])
            if oid in totals and sum(back.values()) >= totals[oid]:
                excluded.add(oid)
    if excluded:
        evs = [e for e in evs if not (e[2] in VANISHING and e[3]["order"]["id"] in excluded)]

    # ---- state
    orders: dict[str, _Order] = {}
    counting: list[tuple[datetime, str]] = []  # sorted (time, id) of the counting orders
    net = profit = fp_net = ZERO
    checkouts = 0
    referred: set[str] = set()
    tags: frozenset[str] = frozenset()
    image_flag = marketing = False
    last_event_at: datetime | None = None
    idx: int | None = None
    lapsed = placed = False
    turn = 1
    since = turn_start = None
    subgroup: str | None = None
    #: (reward, scope, ref, at, stage index, turn, order id, detail) in the order they were decided
    grants: list[tuple[str, str, Any, datetime, int | None, int, str | None, Any]] = []
    granted: set[tuple[str, str, Any]] = set()
    revoked: set[str] = set()
    held: set[str] = set()  # the privileges held now (semantics 4 holdings) …
    held_in = 0  # … all for this stage (each privilege of this programme belongs to one stage)
    expiries: list[datetime] = []  # when the discount codes granted expire (wake-ups), sorted
    ledger = _Ledger()
    batch_keys: set[str] = set()  # the award keys of the points grants that are batches
    order_batches: dict[str, list[str]] = {}  # order id → the keys of its batches
    prefix = f"{_component(shop)}/{_component(customer_id)}/"

    def grant(reward: str, scope: str, ref: Any, at: datetime, order_id: str | None = None,
              detail: Any = None) -> None:
        mark = (reward, scope, ref)
        if mark not in granted:
            granted.add(mark)
            grants.append((reward, scope, ref, at, idx, turn, order_id, detail))
            days = DISCOUNT_DAYS.get(reward)
            if days is not None:
                bisect.insort(expiries, at + days)

    def hold(reward: str, at: datetime) -> None:
        """A privilege of the stage: held on when held, else a new holding (keyed by its
        stage and turn, or by its instant when that stage and turn had one already)."""
        nonlocal held_in
        if reward in held:
            return
        ref: Any = (STAGES[idx], turn)  # type: ignore[index]
        if (reward, "privilege", ref) in granted:
            ref = holding_instant(at)
        grant(reward, "privilege", ref, at)
        held.add(reward)
        held_in = idx  # type: ignore[assignment]

    def deadline() -> datetime | None:
        if idx is None or lapsed or LAPSE_AFTER[idx] is None:
            return None
        anchor = counting[-1][0] if counting else (last_event_at or turn_start or since)
        return max(anchor, turn_start or anchor) + LAPSE_AFTER[idx]  # type: ignore[type-var, operator]

    n = len(evs)
    i = 0
    last: datetime | None = None
    while True:
        at = evs[i][0] if i < n else None
        if last is not None:  # due times
            due = None
            if idx is not None:  # only while on the ladder
                due = next_month_start(last)
                if not lapsed and MIN_STAY[idx] and idx != LAST:
                    stay_end = since + MIN_STAY[idx]  # type: ignore[operator]
                    if last < stay_end < due:
                        due = stay_end
                lapse_at = deadline()
                if lapse_at is not None and last < lapse_at < due:
                    due = lapse_at
            if expiries and expiries[-1] > last:  # a discount code expires
                expiry = expiries[bisect.bisect_right(expiries, last)]
                if due is None or expiry < due:
                    due = expiry
            if ledger.expiring or ledger.reminding:  # a batch of points expires, or is reminded of
                points_due = ledger.next_due()
                if points_due is not None and (due is None or points_due < due):
                    due = points_due
            if due is not None and (at is None or due < at):
                at = due
        if at is None or at > as_of:
            break
        on_ladder_before = idx is not None
        j = i
        while j < n and evs[j][0] == at:
            j += 1
        batch = evs[i:j]
        i = j
        last = at
        first_new = len(grants)
        if ledger.expiring and ledger.expiring[0][0] <= at:
            ledger.expire(at)  # step 3: what remains of batches whose expiry has come is gone

        # ---- the events of the instant
        new_orders: list[_Order] = []
        manual = []
        complaints: list[str] = []
        reviews: list[str] = []
        for _t, eid, kind, raw in batch:
            if kind in ADMIN:
                manual.append((eid, kind, raw))
                continue
            last_event_at = at
            info = raw.get("customer")
            if info is not None:
                if info.get("tags") is not None:
                    tags = frozenset(info["tags"])
                if info.get("image_client") is not None:
                    image_flag = info["image_client"]
                if info.get("accepts_marketing") is not None:
                    marketing = info["accepts_marketing"]
            if kind == "checkout_started":
                checkouts += 1
            elif kind == "complaint":
                complaints.append(eid)
            elif kind == "review":
                reviews.append(eid)
            elif kind == "referral" and raw.get("referred_customer_id"):
                referred.add(raw["referred_customer_id"])
            order = raw.get("order")
            if order is None or kind == "payment_received" or order["id"] in excluded:
                continue  # payments move only the outstanding balance, which the programme never reads
            oid = order["id"]
            state = orders.get(oid)
            if state is None:
                if kind not in CREATING:
                    continue
                state = orders[oid] = _Order(oid, at)
                new_orders.append(state)
            if kind in CREATING:
                if order.get("total") is not None:
                    total = state.total = dec(order["total"])
                    shipping = state.shipping = dec(order["shipping"]) if order.get("shipping") is not None else ZERO
                    ship_cost = order.get("shipping_cost")
                    state.shipping_cost = dec(ship_cost) if ship_cost is not None else None
                    tax = state.tax = dec(order["tax"]) if order.get("tax") is not None else ZERO
                    lines = order.get("lines")
                    state.gift_cards = sum((dec(line["price"]) * line["quantity"] for line in lines
                                            if line.get("gift_card") and line.get("price") is not None),
                                           ZERO) if lines else ZERO
                    paid_with_points = order.get("points_paid")
                    state.points_paid = dec(paid_with_points) if paid_with_points is not None else ZERO
                    if lines and all(line.get("cost") is not None for line in lines):
                        state.cost = sum((dec(line["cost"]) * line["quantity"] for line in lines), ZERO)
                    elif order.get("cost") is not None:
                        state.cost = dec(order["cost"])
                    else:
                        state.cost = (total - shipping - tax) * (ONE - DEFAULT_MARGIN)
                    discount = order.get("discount_total")
                    state.full_price = not order.get("discount_codes") and not (
                        dec(discount) if discount is not None else ZERO) > 0
            elif kind == "order_refunded":
                refund = raw.get("refund")
                if refund is None:
                    continue
                state.refunds[refund["id"]] = dec(refund["amount"])
            elif kind == "order_cancelled":
                state.cancelled = True
            elif kind == "order_restored":
                state.cancelled = False
            else:
                continue
            # this order's new contributions (FactsAccumulator._update, same arithmetic)
            total = state.total
            refunded = min(total, sum(state.refunds.values(), ZERO))
            if state.cancelled:
                o_net = o_profit = ZERO
            else:
                o_net = total - refunded
                kept = (ONE - refunded / total) if total > 0 else ONE
                subsidy = max(ZERO, state.shipping_cost - state.shipping) if state.shipping_cost is not None else ZERO
                o_profit = (total - state.shipping - state.tax - state.cost) * kept - subsidy
            o_fp = o_net if state.full_price else ZERO
            net += o_net - state.net
            profit += o_profit - state.profit
            fp_net += o_fp - state.fp_net
            state.net, state.profit, state.fp_net = o_net, o_profit, o_fp
            counts = not state.cancelled and (total == ZERO or refunded < total)
            if counts and not state.counting:
                bisect.insort(counting, (state.first_at, oid))
                state.counting = True
            elif state.counting and not counts:
                counting.remove((state.first_at, oid))
                state.counting = False
        new_counting = [o.id for o in new_orders if o.counting]  # first seen now, counting at its end

        # ---- manual adjustments (step 2)
        stage_set = False
        for _eid, kind, raw in manual:
            if kind == "turn_started":
                if idx is not None:
                    turn += 1
                    lapsed = False
                    turn_start = since = at
            elif kind == "stage_set":
                stage_set = True
                adj = raw.get("adjustment") or {}
                target_id = adj.get("stage")
                if target_id not in STAGES:
                    continue
                target = STAGES.index(target_id)
                if idx is not None and (target == idx or (target < idx and not adj.get("force"))):
                    continue
                if idx is None:
                    turn_start = at
                idx = target
                lapsed = False
                placed = True
                since = at

        # ---- the facts of the snapshot, read lazily (they do not change during the wake)
        count = len(counting)
        profit_m = money(profit)

        def active_months() -> int:
            start = bisect.bisect_right(counting, (at - YEAR, "\uffff"))  # noqa: B023 - used in this wake only
            return len({(t.year, t.month) for t, _ in counting[start:] if t <= at})  # noqa: B023

        def holds(stage: int) -> bool:
            if stage == VISITOR:
                return checkouts >= 1 or count >= 1  # noqa: B023
            if stage == FIRST_PURCHASE:
                return count >= 1  # noqa: B023
            if stage == REGULAR:
                return count >= 3 and active_months() >= 2  # noqa: B023
            # advocate
            if count < 5 or net <= 0:  # noqa: B023 - full_price_share is absent while net_spent is 0
                return False
            share = (fp_net / net).quantize(RATIO, rounding=ROUND_HALF_UP)  # noqa: B023
            return share >= ADVOCATE_FULL_PRICE and (
                len(referred) >= 1 or profit_m >= ADVOCATE_PROFIT  # noqa: B023
                or image_flag or IMAGE_CLIENT_TAG in tags)  # noqa: B023

        # ---- movement (step 7)
        if lapsed and new_counting:
            turn += 1
            lapsed = False
            turn_start = since = at
        lapsed_now = False
        lapse_at = deadline()
        if lapse_at is not None and lapse_at <= at:
            lapsed = lapsed_now = True
        if idx is None:  # Potential has no condition
            idx = 0
            turn_start = since = at
        if new_counting and not stage_set:
            placed = False
        while not lapsed and idx < LAST and not placed and holds(idx + 1):
            if at < since + MIN_STAY[idx]:
                break
            idx += 1
            since = at
        lapse_at = deadline()
        if lapse_at is not None and lapse_at <= at:
            lapsed = lapsed_now = True

        # ---- subgroup (step 8): the first that holds
        if profit_m >= PROFITABLE_PROFIT or (count and money(net / count) >= PROFITABLE_AOV
                                             and profit_m >= PROFITABLE_AOV_PROFIT):
            subgroup = "profitable"
        elif profit_m >= AVERAGE_PROFIT:
            subgroup = "average"
        else:
            subgroup = "unprofitable"

        # ---- privileges end (step 8): a stage's privilege once the customer is in another stage
        # (a new turn in the stage holds it on)
        if held_in != idx:
            held.clear()

        # ---- grants in rule-file order (step 9)
        stage_ref = (STAGES[idx], turn)
        discount = STAGE_DISCOUNT[idx]
        if discount is not None and (idx != POTENTIAL or marketing):
            grant(discount, "stage", stage_ref, at)
        hold(STAGE_TAG[idx], at)
        if idx >= REGULAR:
            for oid in new_counting:
                grant("order-points", "order", oid, at, oid)
        if idx == REGULAR:
            grant("free-express", "stage", stage_ref, at)
        if idx == ADVOCATE and subgroup == "profitable":
            hold("vip", at)
            hold("pay-later", at)
        for eid in complaints:
            grant("apology", "event", eid, at)
        if idx >= FIRST_PURCHASE:
            for eid in reviews:
                grant("review-thanks", "event", eid, at)
            if lapsed_now:
                grant("win-back", "lapse", stage_ref, at)
        if idx >= REGULAR and on_ladder_before and at.month == 1 and at == datetime(at.year, 1, 1, tzinfo=UTC):
            grant("new-year-greeting", "period", f"{at.year:04d}", at)
        for eid, kind, raw in manual:
            adj = raw.get("adjustment") or {}
            if kind == "reward_revoked" and adj.get("award_key"):
                revoked.add(adj["award_key"])
            elif kind == "reward_granted" and adj.get("reward") in REWARDS:
                grant(adj["reward"], "manual", eid, at)

        # ---- the points ledger (step 10)
        if order_batches and batch:  # the batches of orders whose figures changed now are resized
            for oid in dict.fromkeys(raw["order"]["id"] for _t, _e, _k, raw in batch if raw.get("order") is not None):
                for key in order_batches.get(oid, ()):
                    if key not in revoked:
                        ledger.resize(key, at, orders[oid].points())
        for reward, scope, ref, _at, _stage, _turn, order_id, _detail in (grants[first_new:] if len(grants) > first_new
                                                                            else ()):
            if reward not in POINTS_REWARDS:
                continue
            key = _key(prefix, reward, scope, ref)
            if key in batch_keys:
                continue
            batch_keys.add(key)
            if order_id is not None:
                order_batches.setdefault(order_id, []).append(key)
                earned = orders[order_id].points()
            else:
                earned = REVIEW_POINTS if reward == "review-thanks" else 0  # order points without an order: 0
            ledger.earn(key, at, earned, at + POINTS_LAST, (reward, scope, ref))
        for eid, kind, raw in manual:
            adj = raw.get("adjustment") or {}
            if kind == "reward_revoked":
                if adj.get("award_key") in batch_keys:
                    ledger.resize(adj["award_key"], at, 0)  # points revoked by hand: clawed back
            elif kind == "points_adjusted" and adj.get("points"):
                if adj["points"] > 0:
                    days = adj.get("expires_days")
                    ledger.earn(eid, at, adj["points"], at + timedelta(days=days) if days else None, (eid,))
                else:
                    ledger.debt += ledger.take(at, -adj["points"])
            elif kind == "points_redeemed" and adj.get("points"):
                rid = adj.get("redemption") or eid
                ledger.debt += ledger.take(at, adj["points"])
                value = adj.get("value")
                grant(POINTS, "redemption", rid, at, detail=(
                    "redemption", adj["points"], str(dec(value).quantize(CENT)) if value is not None else None,
                    adj.get("currency"), adj.get("redemption")))
        if ledger.reminding and ledger.reminding[0][0] <= at:
            for due_batch in ledger.remind(at):
                grant(POINTS, "reminder", due_batch.ref, at,
                      detail=("reminder", due_batch.remaining, due_batch.expires_at, due_batch.key))

    # ---- the awards, keyed and valued (order points from the order's points base at as_of)
    awards: list[Award] = []
    for reward, scope, ref, at, stage, grant_turn, order_id, detail in grants:
        key = _key(prefix, reward, scope, ref)
        value = VALUES.get(reward)
        if reward == "order-points":
            state = orders.get(order_id) if order_id is not None else None
            detail = state.points() if state is not None else 0
            if detail == 0:
                continue  # points that come to nothing are not implied
            value = (POINT_VALUE * detail).quantize(CENT)
        elif reward == "review-thanks":
            detail = REVIEW_POINTS
            value = (POINT_VALUE * detail).quantize(CENT)
        elif reward == POINTS and detail[0] == "redemption":
            value = Decimal(detail[2]) if detail[2] is not None else None
        if key in revoked:
            continue
        awards.append(Award(key, reward, value, STAGES[stage] if stage is not None else None,
                            grant_turn, at, detail))
    stage_id = STAGES[idx] if idx is not None else None
    return Result(stage_id, subgroup if stage_id is not None else None, lapsed, turn, awards)

# ------------------------------------------------------------------ params (for the check only)
def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _code(prefix: str, key: str) -> str:
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:8].upper()}"


_DISCOUNTS = {"welcome": ("WELCOME", "10", 30), "first-order": ("FIRST", "10", 14), "win-back": ("MISSYOU", "15", 30)}


def award_params(award: Award) -> dict[str, Any]:
    """The award's params as ``ImpliedAward.params`` carries them (codes, expiry times, points,
    a reminder's batch, a redemption's value)."""
    reward, at = award.reward, award.granted_at
    if reward in _DISCOUNTS:
        prefix, percent, days = _DISCOUNTS[reward]
        return {"code": _code(prefix, award.key), "usage_limit": 1, "percent": percent,
                "expires_at": _iso(at + timedelta(days=days))}
    if reward == "second-order":
        return {"code": _code("AGAIN", award.key), "usage_limit": 1, "amount": "10.00", "minimum_order": "50.00",
                "expires_at": _iso(at + timedelta(days=30)), "currency": CURRENCY}
    if reward in STAGE_TAG:
        return {"tag": "ladder-" + reward.removeprefix("tag-")}
    if reward in POINTS_REWARDS:
        return {"points": award.detail, "expires_at": _iso(at + POINTS_LAST)}
    if reward == POINTS and award.detail[0] == "reminder":
        _kind, points, expires_at, batch = award.detail
        return {"points": points, "expires_at": _iso(expires_at), "batch": batch}
    if reward == POINTS:
        _kind, points, value, currency, redemption = award.detail
        return {"points": points, "value": value, "currency": currency, "redemption": redemption,
                "code": _code("POINTS", award.key)}
    if reward == "free-express":
        return {"service": "free express shipping for a year", "value": "5.00"}
    if reward == "vip":
        return {"level": "vip", "tag": "vip"}
    if reward == "pay-later":
        return {"net_days": 30, "credit_limit": "500.00"}
    if reward == "apology":
        return {"description": "a small gift with our apologies", "value": "5.00"}
    if reward == "new-year-greeting":
        return {"occasion": "holiday", "message": "Thank you for another year with us."}
    raise KeyError(reward)


# ------------------------------------------------------------------ a whole file
def customers_of_file(path: str | Path, buckets: int = 128) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The events of a JSON-lines file (any order) grouped by customer, in flat memory: the lines
    spilled into ``buckets`` temporary files by a hash of the customer id, then read back one
    bucket at a time (a line is parsed twice: JSON is cheap next to the fold)."""
    with tempfile.TemporaryDirectory(prefix="handfold-") as tmp:
        names = [Path(tmp) / f"{b}.jsonl" for b in range(buckets)]
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(open(name, "w", encoding="utf-8")) for name in names]
            with open(path, encoding="utf-8") as lines:
                for line in lines:
                    if line.strip():
                        cid = json.loads(line)["customer_id"]
                        files[zlib.crc32(cid.encode()) % buckets].write(line if line.endswith("\n") else line + "\n")
        for name in names:
            grouped: dict[str, list[dict[str, Any]]] = {}
            with open(name, encoding="utf-8") as f:
                for line in f:
                    event = json.loads(line)
                    grouped.setdefault(event["customer_id"], []).append(event)
            name.unlink()
            yield from grouped.items()


class FileTally(NamedTuple):
    customers: int
    events: int
    orders: int  # distinct orders placed or paid in the file
    stages: Counter  # stage id (None: off the ladder) → customers
    subgroups: Counter  # (stage, subgroup) → customers
    lapsed: Counter  # stage → lapsed customers
    rewards: dict[str, tuple[int, Decimal]]  # reward id → (awards, total face value)


def fold_file(path: str | Path, as_of: datetime, shop: str = "default") -> FileTally:
    """Fold every customer of an events file; the tally a backtest report compares with."""
    stages: Counter = Counter()
    subgroups: Counter = Counter()
    lapsed: Counter = Counter()
    counts: Counter = Counter()
    values: dict[str, Decimal] = {}
    customers = events = orders = 0
    for cid, evs in customers_of_file(path):
        customers += 1
        events += len(evs)
        orders += len({e["order"]["id"] for e in evs if e["type"] in CREATING})
        result = fold_customer(evs, as_of, shop=shop, customer_id=cid)
        stages[result.stage] += 1
        subgroups[(result.stage, result.subgroup)] += 1
        if result.lapsed:
            lapsed[result.stage] += 1
        for award in result.awards:
            counts[award.reward] += 1
            if award.value is not None:
                values[award.reward] = values.get(award.reward, ZERO) + award.value
    rewards = {r: (counts[r], values.get(r, ZERO)) for r in counts}
    return FileTally(customers, events, orders, stages, subgroups, lapsed, rewards)


# ------------------------------------------------------------------ the check
def varied_history(rng: Any, cid: str, as_of: datetime) -> list[dict[str, Any]]:
    """Raw events of one customer with the fold's corner cases: lapses and returns, refunds and
    cancellations inside and outside the window, restored orders, payment terms, tags, consent
    changes, duplicates, events after ``as_of``, at month starts and exactly at stay ends, other
    time zones, manual adjustments."""
    months = rng.choice((3, 8, 14, 26, 40))
    t = as_of - timedelta(days=30 * months) + timedelta(seconds=rng.randrange(86400 * 20))
    out: list[dict[str, Any]] = []
    seq = 0

    def emit(kind: str, when: datetime, **body: Any) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        stamp = _iso(when)
        if rng.random() < 0.05:  # the same instant, written in another zone
            stamp = when.astimezone(timedelta_zone(rng.choice((2, -5, 9)))).isoformat()
        event = {"id": f"{cid}-e{seq:03d}", "type": kind, "customer_id": cid, "occurred_at": stamp, **body}
        out.append(event)
        return event

    profile = rng.choice(("contact", "checkout", "one-off", "regular", "regular", "advocate", "lapser", "b2b",
                          "new-year", "anniversary", "restored"))
    if profile in ("anniversary", "restored"):
        _corner_case(profile, rng, cid, t, emit)
        return out
    if profile == "new-year":  # placed by hand at the first instant of a year, then buying
        t = datetime(as_of.year - rng.choice((1, 2)), 1, 1, tzinfo=UTC)
        emit("stage_set", t, adjustment={"author": "staff", "reason": "import", "stage": rng.choice(STAGES[2:])})
        profile = "regular"
    emit("customer_created", t, customer={"accepts_marketing": rng.random() < 0.6,
                                         **({"tags": ["image-client"]} if rng.random() < 0.1 else {})})
    if profile == "contact":
        if rng.random() < 0.5:
            emit("customer_updated", t + timedelta(days=rng.randrange(1, 500)),
                 customer={"accepts_marketing": rng.random() < 0.5})
        if rng.random() < 0.4:  # a late first order, after the contact lapsed
            t += timedelta(days=rng.randrange(300, 450))
            profile = "one-off"
        else:
            return out
    if profile == "checkout" or rng.random() < 0.5:
        t += timedelta(hours=rng.randrange(1, 200))
        emit("checkout_started", t)
        if profile == "checkout":
            return out
    n_orders = {"one-off": 1, "regular": rng.randint(2, 8), "advocate": rng.randint(5, 12),
                "lapser": rng.randint(3, 9), "b2b": rng.randint(2, 10)}[profile]
    fixed_total = rng.random() < 0.25  # every order the same total: shares such as exactly 0.6 occur
    for n in range(n_orders):
        gap = rng.choice((0, 1, 14, 30, 31, 45, 60, 90)) if profile != "lapser" else rng.choice((14, 40, 130, 200))
        if rng.random() < 0.15:
            gap = rng.randrange(100, 400)
        elif rng.random() < 0.05:
            gap = rng.choice((364, 365))  # an order leaving the 12-month window exactly at a wake-up
        if gap == 0:
            t += timedelta(seconds=rng.choice((0, 1, 60)))
        elif rng.random() < 0.3:
            t += timedelta(days=gap)  # exactly whole days: lands on a stay end or a deadline
        else:
            t += timedelta(days=gap, seconds=rng.randrange(86400))
        if rng.random() < 0.07:
            t = next_month_start(t)  # an order at the first instant of a month
        oid = f"{cid}-o{n}"
        total = Decimal(rng.choice((0, 1, 9, 40, 55, 120, 180, 260, 700))) + Decimal(rng.randrange(100)) / 100
        if fixed_total:
            total = Decimal("100.00")
        elif rng.random() < 0.05:
            total = ZERO
        order: dict[str, Any] = {"id": oid, "total": str(total), "currency": "EUR"}
        if rng.random() < 0.5:
            order["shipping"] = str(min(total, Decimal("4.90")))
        if rng.random() < 0.3:
            order["shipping_cost"] = rng.choice(("3.00", "7.50"))
        if rng.random() < 0.5:
            order["tax"] = str(money(total * Decimal(rng.choice(("0", "0.16", "0.19")))))
        cost_kind = rng.random()
        if cost_kind < 0.4:
            order["lines"] = [{"sku": "A", "quantity": rng.randint(1, 3), "price": str(total),
                               "cost": f"{rng.randint(1, 60)}.{rng.randint(0, 99):02d}"},
                              {"sku": "B", "quantity": 1, "cost": "2.50"}]
        elif cost_kind < 0.55:
            order["lines"] = [{"sku": "A", "quantity": 1}]
            order["cost"] = str(money(total * Decimal("0.45")))
        elif cost_kind < 0.65:
            order["cost"] = str(money(total * Decimal("0.8")))
        if rng.random() < 0.1:  # a gift card bought with the order: it earns no points
            order.setdefault("lines", [{"sku": "A", "quantity": 1}]).append(
                {"sku": "GC", "quantity": rng.randint(1, 2), "price": rng.choice(("10.00", "25.00", "400.00")),
                 "gift_card": True, **({"cost": "0.00"} if rng.random() < 0.5 else {})})
        if rng.random() < 0.08:  # partly paid with points: that part earns none
            order["points_paid"] = str(min(total, Decimal(rng.choice(("1.00", "5.00", "20.00")))))
        if rng.random() < 0.25:
            order["discount_codes"] = ["WELCOME-X"]
        elif rng.random() < 0.1:
            order["discount_total"] = rng.choice(("0.00", "5.00"))
        if profile == "b2b" or rng.random() < 0.05:
            order["payment"] = {"method": "terms"}
        kind = rng.choice(("order_placed", "order_paid"))
        emit(kind, t, order=order)
        if kind == "order_placed" and rng.random() < 0.6:
            paid = dict(order)
            if rng.random() < 0.2:
                paid["total"] = str(total + 1)
            emit("order_paid", t + timedelta(minutes=rng.choice((0, 5, 3000))), order=paid)
        if order.get("payment") and rng.random() < 0.5:
            emit("payment_received", t + timedelta(days=rng.randrange(1, 40)), order={"id": oid},
                 amount=str(money(total / 2)))
        fate = rng.random()
        later = t + timedelta(days=rng.choice((0, 1, 10, 30, 31, 45)), seconds=rng.choice((0, 0, 3600)))
        if fate < 0.06:
            emit("order_cancelled", later, order={"id": oid})
            if rng.random() < 0.4:  # restored soon, or long after (an old order counting again)
                emit("order_restored", later + timedelta(days=rng.choice((1, 20, 60, 150, 200, 250))),
                     order={"id": oid})
        elif fate < 0.16:
            emit("order_refunded", later, order={"id": oid}, refund={"id": f"{oid}-r1", "amount": str(total)})
            if rng.random() < 0.2:
                emit("order_restored", later + timedelta(days=2), order={"id": oid})
        elif fate < 0.24:
            part = money(total * Decimal(rng.choice(("0.1", "0.5", "0.7"))))
            emit("order_refunded", later, order={"id": oid}, refund={"id": f"{oid}-r1", "amount": str(part)})
            if rng.random() < 0.5:
                emit("order_refunded", later + timedelta(days=rng.randrange(1, 40)), order={"id": oid},
                     refund={"id": f"{oid}-r2", "amount": str(total - part)})
        if rng.random() < 0.1:
            emit("review", t + timedelta(days=rng.randrange(1, 20)), rating=rng.randint(1, 5))
        if rng.random() < 0.06:
            emit("complaint", t + timedelta(days=rng.randrange(1, 20)), reason="late")
        if rng.random() < 0.06:
            emit("referral", t + timedelta(days=rng.randrange(1, 20)), referred_customer_id=f"{cid}-friend{n % 2}")
        if rng.random() < 0.05:
            emit("customer_updated", t + timedelta(hours=3),
                 customer={"tags": rng.choice(([], ["image-client"], ["vip", "image-client"], ["x"])),
                           "accepts_marketing": rng.random() < 0.5,
                           **({"image_client": rng.random() < 0.5} if rng.random() < 0.3 else {})})
        if rng.random() < 0.03:
            emit("order_refunded", t + timedelta(days=2),  # a refund of an order never seen
                 order={"id": f"{cid}-ghost"}, refund={"id": f"{cid}-ghost-r", "amount": "5.00"})
    if rng.random() < 0.12:  # manual adjustments (after the first event: the fold asserts an anchor)
        first = min(utc(e["occurred_at"]) for e in out)
        for _ in range(rng.randint(1, 3)):
            when = first + timedelta(days=rng.randrange(0, 30 * months + 1))
            choice = rng.random()
            adj = {"author": "staff", "reason": "bench"}
            if choice < 0.35:
                emit("stage_set", when, adjustment={**adj, "stage": rng.choice(STAGES),
                                                      **({"force": True} if rng.random() < 0.4 else {})})
            elif choice < 0.45:  # at the instant of an order
                when = utc(rng.choice([e for e in out if e["type"] in CREATING] or out)["occurred_at"])
                emit("stage_set", when, adjustment={**adj, "stage": rng.choice(STAGES[:3]), "force": True})
            elif choice < 0.55:
                emit("turn_started", when, adjustment=adj)
            elif choice < 0.8:
                emit("reward_granted", when, adjustment={**adj, "reward": rng.choice(REWARDS + ("nope",))})
            else:
                reviews = [e["id"] for e in out if e["type"] == "review"]
                emit("reward_revoked", when, adjustment={**adj, "award_key": rng.choice((
                    f"bench/{cid}/tag-potential/privilege/potential/1", f"bench/{cid}/first-order/stage/visitor/1",
                    f"bench/{cid}/order-points/order/{cid}-o1", f"bench/{cid}/order-points/order/{cid}-o2",
                    f"bench/{cid}/points/reminder/order-points/order/{cid}-o1",
                    *(f"bench/{cid}/review-thanks/event/{r}" for r in reviews[:1])))})
    if rng.random() < 0.15:  # points added or taken by hand, points redeemed (debts when they exceed the balance)
        first = min(utc(e["occurred_at"]) for e in out)
        for k in range(rng.randint(1, 4)):
            when = first + timedelta(days=rng.randrange(1, 30 * months + 1),
                                     seconds=rng.choice((0, rng.randrange(86400))))
            adj = {"author": "staff", "reason": "bench"}
            choice = rng.random()
            if choice < 0.4:
                emit("points_adjusted", when, adjustment={
                    **adj, "points": rng.choice((5, 40, 200)),
                    **({"expires_days": rng.choice((10, 14, 20, 90, 365))} if rng.random() < 0.7 else {})})
            elif choice < 0.55:
                emit("points_adjusted", when, adjustment={**adj, "points": -rng.choice((5, 30, 500))})
            else:
                points = rng.choice((10, 50, 100, 1000))
                emit("points_redeemed", when, adjustment={
                    **adj, "points": points, "redemption": f"{cid}-red{k}",
                    **({"value": str(POINT_VALUE * points), "currency": CURRENCY} if rng.random() < 0.9 else {})})
    if out and rng.random() < 0.08:  # a duplicate delivery, as it was or with another time (the earliest wins)
        copy = dict(rng.choice([e for e in out if e["type"] not in ADMIN]))  # an adjustment first: see compare()
        if rng.random() < 0.5:
            copy["occurred_at"] = _iso(utc(copy["occurred_at"]) + timedelta(days=rng.choice((-3, 2))))
        out.append(copy)
    if rng.random() < 0.1:  # an event after as_of
        emit("checkout_started", as_of + timedelta(days=3))
    rng.shuffle(out)
    return out


def _corner_case(profile: str, rng: Any, cid: str, t: datetime, emit: Any) -> None:
    """Two paths random histories seldom take.

    ``anniversary``: an order, a lapse, two orders 351 days later (a new turn): the minimum stay
    ends exactly 365 days after the first order, when it leaves the 12-month window.
    ``restored``: two orders in two months and a third cancelled as it is placed, restored 130 to
    170 days later: the customer climbs to Regular and lapses there in the same instant."""
    def order(n: int, when: datetime) -> None:
        emit("order_paid", when, order={"id": f"{cid}-o{n}", "total": "80.00", "currency": "EUR"})

    emit("customer_created", t, customer={"accepts_marketing": True})
    if profile == "anniversary":
        order(0, t + timedelta(hours=1))
        later = t + timedelta(days=351, hours=1)
        order(1, later)
        order(2, later + timedelta(seconds=rng.choice((0, 1))))
    else:
        order(0, t)
        order(1, t + timedelta(days=40))
        order(2, t + timedelta(days=41))
        emit("order_cancelled", t + timedelta(days=41), order={"id": f"{cid}-o2"})
        emit("order_restored", t + timedelta(days=41 + rng.choice((130, 150, 170))), order={"id": f"{cid}-o2"})


def timedelta_zone(hours: int) -> Any:
    from datetime import timezone
    return timezone(timedelta(hours=hours))


def _describe(award: Any) -> tuple[Any, ...]:
    return (award.reward_id, award.value, award.stage, award.turn, award.granted_at, dict(award.params))


def _mine(award: Award) -> tuple[Any, ...]:
    return (award.reward, award.value, award.stage, award.turn, award.granted_at, award_params(award))


def compare(programme: Any, compiled: Any, cid: str, raw_events: list[dict[str, Any]], as_of: datetime,
            shop: str = "bench") -> None:
    """Fold one customer both ways; AssertionError naming the first difference.

    Not for a history whose first event is a manual adjustment: ``ladder.fold`` then fails an
    assertion (no anchor for the lapse deadline), so the generator never writes one."""
    from loyalty_ladder.events import parse_event
    from loyalty_ladder.ladder import fold

    try:
        state = fold(programme, compiled, [parse_event(e) for e in raw_events], as_of, shop=shop, customer_id=cid)
    except Exception as exc:
        raise AssertionError(f"customer {cid}: ladder.fold raised {exc!r}") from exc
    mine = fold_customer(raw_events, as_of, shop=shop, customer_id=cid)
    theirs = (state.stage, state.subgroup, state.lapsed, state.turn)
    ours = (mine.stage, mine.subgroup, mine.lapsed, mine.turn)
    if theirs != ours:
        raise AssertionError(f"customer {cid}: ladder.fold gives (stage, subgroup, lapsed, turn) {theirs}, "
                             f"the hand fold {ours}")
    expected = {a.key: _describe(a) for a in state.awards}
    got = {a.key: _mine(a) for a in mine.awards}
    if expected != got:
        lines = [f"customer {cid}: awards differ"]
        for key in sorted(set(expected) | set(got)):
            if expected.get(key) != got.get(key):
                lines.append(f"  {key}\n    ladder.fold: {expected.get(key)}\n    hand fold:   {got.get(key)}")
        raise AssertionError("\n".join(lines))


def _programme(rules: str | Path) -> tuple[Any, Any]:
    """``rules/`` loaded and compiled; AssertionError when it is not the version reproduced here."""
    from loyalty_ladder import rulefile
    from loyalty_ladder.engine import get_engine

    programme = rulefile.load_programme(rules)
    if programme.version != PROGRAMME_VERSION:
        raise AssertionError(f"rules/ is version {programme.version}, the hand fold reproduces {PROGRAMME_VERSION}: "
                             "bring bench/handfold.py's constants up to date")
    return programme, get_engine().compile(programme)


def check_file(path: str | Path, as_of: datetime, shop: str = "default", rules: str | Path = ROOT / "rules",
               progress: Any = None) -> int:
    """Fold every customer of a JSON-lines events file (``ladder demo-data``'s, say) both ways, as of
    ``as_of``; AssertionError at the first difference.  Returns how many customers were compared."""
    programme, compiled = _programme(rules)
    say = progress or (lambda _msg: None)
    n = 0
    for cid, evs in customers_of_file(path):
        compare(programme, compiled, cid, evs, as_of, shop=shop)
        n += 1
        if n % 1000 == 0:
            say(f"{path}: {n} customers")
    return n


def check(customers: int, seed: int = 20260302, demo: bool = True, rules: str | Path = ROOT / "rules",
          progress: Any = None) -> dict[str, int]:
    """Fold ``customers`` varied generated customers, as many of bench/ladder.py's and (when
    ``loyalty_ladder.demo_data`` exists) as many of demo data both ways; raises AssertionError at the
    first difference.  Returns how many customers of each source were compared."""
    import random

    programme, compiled = _programme(rules)
    say = progress or (lambda _msg: None)
    compared: dict[str, int] = {}

    as_of = datetime(2026, 12, 1, tzinfo=UTC)
    rng = random.Random(seed)
    for n in range(customers):
        cid = f"v{n}"
        compare(programme, compiled, cid, varied_history(rng, cid, as_of), as_of)
        if n % 500 == 499:
            say(f"varied: {n + 1}/{customers}")
    compared["varied"] = customers

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ladder as bench_ladder  # bench/ladder.py: ten events over 2025

    rng = random.Random(seed + 1)
    for n in range(customers):
        cid = f"c{n}"
        compare(programme, compiled, cid, [e.raw for e in bench_ladder.history(rng, cid)], bench_ladder.AS_OF)
    say(f"bench/ladder.py: {customers}/{customers}")
    compared["bench/ladder.py"] = customers

    if demo:
        try:
            from loyalty_ladder import demo_data
        except ImportError:
            say("loyalty_ladder.demo_data does not exist yet: demo data not compared")
        else:
            grouped: dict[str, list[dict[str, Any]]] = {}
            latest = None
            for event in demo_data.generate(customers, seed=seed):
                grouped.setdefault(event["customer_id"], []).append(event)
                latest = event["occurred_at"]
            if latest is not None:
                end = utc(latest)
                for as_of in (end - timedelta(days=200), end + timedelta(days=40)):
                    for cid, evs in grouped.items():
                        compare(programme, compiled, cid, evs, as_of, shop="default")
                compared["demo-data customers (each folded as of two times)"] = len(grouped)
                say(f"demo data: {len(grouped)} customers")
    return compared


# ------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", type=int, metavar="N",
                        help="fold N customers of each generator both ways (ladder.fold and by hand) and compare")
    parser.add_argument("--seed", type=int, default=20260302)
    parser.add_argument("--no-demo", action="store_true", help="with --check: leave demo data out")
    parser.add_argument("--file", help="fold the customers of a JSON-lines events file and print the tally")
    parser.add_argument("--as-of", help="with --file: the instant to fold to (ISO 8601 with a zone)")
    parser.add_argument("--compare", action="store_true",
                        help="with --file: fold each customer both ways (ladder.fold and by hand) and compare")
    parser.add_argument("--shop", default="default")
    args = parser.parse_args(argv)
    if args.check is None and args.file is None:
        parser.error("give --check N or --file FILE")
    if args.compare and args.file is None:
        parser.error("--compare needs --file")
    if args.check is not None:
        started = time.perf_counter()
        try:
            compared = check(args.check, seed=args.seed, demo=not args.no_demo,
                             progress=lambda msg: print(msg, file=sys.stderr, flush=True))
        except AssertionError as exc:
            print(f"hand fold differs from ladder.fold: {exc}", file=sys.stderr)
            return 1
        total = sum(compared.values())
        detail = ", ".join(f"{n} {what}" for what, n in compared.items())
        print(f"hand fold equal to ladder.fold for all {total} customers compared ({detail}); "
              f"{time.perf_counter() - started:.0f} s")
    if args.file is not None:
        if not args.as_of:
            parser.error("--file needs --as-of")
        as_of = utc(args.as_of)
        started = time.perf_counter()
        if args.compare:
            try:
                n = check_file(args.file, as_of, shop=args.shop,
                               progress=lambda msg: print(msg, file=sys.stderr, flush=True))
            except AssertionError as exc:
                print(f"hand fold differs from ladder.fold: {exc}", file=sys.stderr)
                return 1
            print(f"hand fold equal to ladder.fold for all {n} customers of {args.file} as of {_iso(as_of)}; "
                  f"{time.perf_counter() - started:.0f} s")
            return 0
        tally = fold_file(args.file, as_of, shop=args.shop)
        elapsed = time.perf_counter() - started
        print(json.dumps({
            "customers": tally.customers, "events": tally.events, "orders": tally.orders,
            "seconds": round(elapsed, 1),
            "stages": {str(k): v for k, v in sorted(tally.stages.items(), key=lambda kv: str(kv[0]))},
            "rewards": {k: {"count": c, "value": str(v)} for k, (c, v) in sorted(tally.rewards.items())},
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
