"""Customer facts: aggregates of one customer's events at a point in time.

Feed events to a ``FactsAccumulator`` in ``(occurred_at, id)`` order and ask for a
``snapshot(at)``: a *facts mapping* with a key for every ``factspec.FACTS`` name,
``None`` meaning absent.  Updates are incremental (each event changes only its
order's contribution), so a fold over a whole history stays linear.

Definitions (the README copies them):

* An **order** exists from its first ``order_placed`` or ``order_paid``; an
  ``order_paid`` after ``order_placed`` for the same order id is the payment, not a
  second order.  An order's figures (total, shipping, cost, discounts, payment
  method) are taken from the latest placed/paid event that carries them.
* A **counting order** exists, is not cancelled and not fully refunded
  (Σ refund amounts ≥ total).  A full refund or cancellation at any time takes the
  order out of every count (``orders_count``, ``orders_12m``,
  ``active_months_12m``, first/last order time); a partial refund only reduces money.
* **Excluded orders** (fully refunded or cancelled within the refund window — the
  ladder decides which) never happened: they contribute to no money or order fact.
  Their refund and cancellation events still count in ``refunds_count``.
* ``net_spent`` = Σ (total − refunded) over orders, refunds capped at the total;
  a cancelled order contributes 0.
* ``profit`` per order = (total − shipping − tax − cost) × (1 − refunded / total)
  − max(0, shipping_cost − shipping), where cost = Σ line cost × quantity when every
  line has a cost, else ``order.cost``, else (total − shipping − tax) × (1 − default_margin);
  ``tax`` is the tax included in the total (0 when not sent: an order without it folds as
  before the field existed). A cancelled order contributes 0 (nothing was shipped or sold).
* ``average_order_value`` = net_spent / orders_count; absent without counting orders.
* ``full_price_share`` = net of orders without discount codes and with
  ``discount_total`` 0 (or not sent) / net_spent; absent while net_spent is 0.
* ``outstanding_balance`` = Σ over orders placed on payment terms
  (``payment.method`` terms) and not yet paid (``order_paid``) of
  max(0, total − refunded − Σ ``payment_received`` amounts).
* ``days_since_first_order`` / ``days_since_last_order`` / ``days_known`` are whole
  days, rounded down, from the first/latest counting order (first event) to ``at``.
* ``orders_12m`` / ``active_months_12m``: counting orders, and their distinct UTC
  calendar months, with a time in (at − 365 days, at].
* ``checkouts_started``, ``complaints``, ``reviews_count``: events of that type;
  ``referrals``: distinct referred customers; ``average_rating``: mean rating (0.01);
  ``refunds_count``: distinct refunds plus cancelled orders.
* ``tags``: the tags of the latest event that sent ``customer.tags`` (a full
  replacement, as shops send them); ``image_client``: the programme's
  ``image_client_tag`` in tags, or the latest ``customer.image_client``;
  ``accepts_marketing``: the latest value sent (False until then); ``has_account``:
  True after ``customer_created``, False after ``customer_deleted``.
* Money is rounded to 0.01, ratios to 0.0001, all ``Decimal``; amounts are taken in
  the programme currency (the service rejects other currencies).
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .events import Event, Order
from .programme import Settings

ZERO = Decimal(0)
CENT = Decimal("0.01")
RATIO = Decimal("0.0001")
DAY = timedelta(days=1)
YEAR = timedelta(days=365)


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def whole_days(delta: timedelta) -> int:
    """Whole days, rounded down (a negative delta, impossible in a fold, gives 0)."""
    return max(0, delta // DAY)


@dataclass
class OrderState:
    """What we know of one order so far."""

    id: str
    first_at: datetime  # first placed/paid event: the order's time
    total: Decimal = ZERO
    shipping: Decimal = ZERO
    shipping_cost: Decimal | None = None
    tax: Decimal = ZERO  # the tax included in total: collected for the state, not profit
    gift_cards: Decimal = ZERO  # gift cards bought with the order (lines marked gift_card)
    points_paid: Decimal = ZERO  # the part of total paid with loyalty points
    cost: Decimal = ZERO  # cost of goods, resolved when the order's figures arrive
    full_price: bool = True
    terms: bool = False
    paid: bool = False
    cancelled: bool = False
    refunds: dict[str, Decimal] = field(default_factory=dict)
    payments_received: Decimal = ZERO

    @property
    def refunded(self) -> Decimal:
        return min(self.total, sum(self.refunds.values(), ZERO))

    @property
    def net(self) -> Decimal:
        """What the customer finally paid for it (0 when cancelled)."""
        return ZERO if self.cancelled else self.total - self.refunded

    @property
    def counts(self) -> bool:
        return not self.cancelled and (self.total == ZERO or self.refunded < self.total)

    def profit(self) -> Decimal:
        if self.cancelled:
            return ZERO
        kept = (Decimal(1) - self.refunded / self.total) if self.total > 0 else Decimal(1)
        subsidy = max(ZERO, (self.shipping_cost or ZERO) - self.shipping) if self.shipping_cost is not None else ZERO
        return (self.total - self.shipping - self.tax - self.cost) * kept - subsidy

    def points_base(self) -> Decimal:
        """What earns points: the net spend without tax, gift cards and the part paid with points,
        reduced in proportion to what was refunded (0 when cancelled)."""
        if self.cancelled:
            return ZERO
        kept = (Decimal(1) - self.refunded / self.total) if self.total > 0 else Decimal(1)
        return max(ZERO, (self.total - self.tax - self.gift_cards - self.points_paid) * kept)

    def outstanding(self) -> Decimal:
        if not self.terms or self.paid or self.cancelled:
            return ZERO
        return max(ZERO, self.total - self.refunded - self.payments_received)


def order_cost(order: Order, default_margin: Decimal) -> Decimal:
    """Cost of goods: lines when every line has one, else the order's cost, else the margin
    (of the net sale: the total without shipping and tax)."""
    if order.lines and all(line.cost is not None for line in order.lines):
        return sum((line.cost * line.quantity for line in order.lines if line.cost is not None), ZERO)
    if order.cost is not None:
        return order.cost
    total = order.total or ZERO
    return (total - (order.shipping or ZERO) - (order.tax or ZERO)) * (Decimal(1) - default_margin)


@dataclass(frozen=True)
class _Contribution:
    """One order's share of the running sums."""

    net: Decimal = ZERO
    profit: Decimal = ZERO
    full_price_net: Decimal = ZERO
    outstanding: Decimal = ZERO


class FactsAccumulator:
    """Incremental facts of one customer; ``apply`` events in (occurred_at, id) order."""

    def __init__(self, settings: Settings | None = None, excluded_orders: Iterable[str] = ()):
        self.settings = settings or Settings()
        self.excluded_orders = frozenset(excluded_orders)
        self.orders: dict[str, OrderState] = {}
        self._contrib: dict[str, _Contribution] = {}
        self._net = ZERO
        self._profit = ZERO
        self._full_price_net = ZERO
        self._outstanding = ZERO
        self._counting_times: list[tuple[datetime, str]] = []  # sorted (time, order id)
        self._counting: set[str] = set()
        self.first_event_at: datetime | None = None
        self.last_event_at: datetime | None = None
        self.checkouts = 0
        self.complaints = 0
        self.referred: set[str] = set()
        self.ratings: list[int] = []
        self.refund_ids: set[str] = set()
        self.cancelled_orders: set[str] = set()
        self.tags: frozenset[str] = frozenset()
        self.image_client_flag = False
        self.accepts_marketing = False
        self.has_account = False
        self.new_orders: list[str] = []  # orders first seen by the latest apply() calls; the ladder drains it

    # ----------------------------------------------------------- feeding
    def apply(self, event: Event) -> None:
        if self.first_event_at is None:
            self.first_event_at = event.occurred_at
        self.last_event_at = event.occurred_at
        self._apply_customer(event)
        kind = event.type
        if kind == "customer_created":
            self.has_account = True
        elif kind == "customer_deleted":
            self.has_account = False
        elif kind == "checkout_started":
            self.checkouts += 1
        elif kind == "complaint":
            self.complaints += 1
        elif kind == "referral" and event.referred_customer_id:
            self.referred.add(event.referred_customer_id)
        elif kind == "review" and event.rating is not None:
            self.ratings.append(event.rating)
        if kind == "order_refunded" and event.refund is not None:
            self.refund_ids.add(event.refund.id)
        elif kind == "order_cancelled" and event.order is not None:
            self.cancelled_orders.add(event.order.id)
        elif kind == "order_restored" and event.order is not None:
            self.cancelled_orders.discard(event.order.id)
        if event.order is not None and event.order.id not in self.excluded_orders:
            self._apply_order(event, event.order)

    def _seen_orders(self) -> set[str]:
        return set(self.orders) | set(self.excluded_orders)

    def _apply_customer(self, event: Event) -> None:
        info = event.customer
        if info is None:
            return
        if info.tags is not None:
            self.tags = frozenset(info.tags)
        if info.image_client is not None:
            self.image_client_flag = info.image_client
        if info.accepts_marketing is not None:
            self.accepts_marketing = info.accepts_marketing

    def _apply_order(self, event: Event, order: Order) -> None:
        kind = event.type
        state = self.orders.get(order.id)
        if state is None:
            if kind not in ("order_placed", "order_paid"):
                return  # a refund/payment for an order we never saw: nothing to aggregate
            state = OrderState(id=order.id, first_at=event.occurred_at)
            self.orders[order.id] = state
            self._contrib[order.id] = _Contribution()
            self.new_orders.append(order.id)
        was_counting = order.id in self._counting
        if kind in ("order_placed", "order_paid") and order.total is not None:
            state.total = order.total
            state.shipping = order.shipping or ZERO
            state.shipping_cost = order.shipping_cost
            state.tax = order.tax or ZERO
            state.gift_cards = sum((line.price * line.quantity for line in order.lines
                                    if line.gift_card and line.price is not None), ZERO)
            state.points_paid = order.points_paid or ZERO
            state.cost = order_cost(order, self.settings.default_margin)
            state.full_price = not order.discount_codes and not (order.discount_total or ZERO) > 0
            if order.payment is not None:
                state.terms = order.payment.method == "terms"
        if kind == "order_paid":
            state.paid = True
        elif kind == "payment_received" and event.amount is not None:
            state.payments_received += event.amount
        elif kind == "order_refunded" and event.refund is not None:
            state.refunds[event.refund.id] = event.refund.amount
        elif kind == "order_cancelled":
            state.cancelled = True
        elif kind == "order_restored":
            state.cancelled = False  # the shop un-cancelled it: it counts again
        self._update(state, was_counting)

    def _update(self, state: OrderState, was_counting: bool) -> None:
        old = self._contrib[state.id]
        net = state.net
        new = _Contribution(
            net=net,
            profit=state.profit(),
            full_price_net=net if state.full_price else ZERO,
            outstanding=state.outstanding(),
        )
        self._contrib[state.id] = new
        self._net += new.net - old.net
        self._profit += new.profit - old.profit
        self._full_price_net += new.full_price_net - old.full_price_net
        self._outstanding += new.outstanding - old.outstanding
        entry = (state.first_at, state.id)
        if state.counts and not was_counting:
            bisect.insort(self._counting_times, entry)
            self._counting.add(state.id)
        elif was_counting and not state.counts:
            self._counting_times.remove(entry)
            self._counting.discard(state.id)

    # ----------------------------------------------------------- reading
    def counting_orders(self) -> list[str]:
        """Ids of the counting orders in time order."""
        return [oid for _, oid in self._counting_times]

    def last_order_at(self) -> datetime | None:
        return self._counting_times[-1][0] if self._counting_times else None

    def order_net(self, order_id: str) -> Decimal | None:
        state = self.orders.get(order_id)
        return None if state is None else money(state.net)

    def points_base(self, order_id: str) -> Decimal | None:
        """The part of the order that earns points (:meth:`OrderState.points_base`), or None."""
        state = self.orders.get(order_id)
        return None if state is None else money(state.points_base())

    def snapshot(self, at: datetime) -> dict[str, Any]:
        """The facts mapping at ``at`` (events applied so far; time facts measured to ``at``)."""
        times = self._counting_times
        count = len(times)
        first = times[0][0] if times else None
        last = times[-1][0] if times else None
        # orders in (at - 365 days, at]: the list is sorted, so bisect on the lower bound
        start = bisect.bisect_right(times, (at - YEAR, "\uffff"))
        recent = [t for t, _ in times[start:] if t <= at]
        net = money(self._net)
        facts: dict[str, Any] = {
            "orders_count": count,
            "orders_12m": len(recent),
            "net_spent": net,
            "profit": money(self._profit),
            "average_order_value": money(self._net / count) if count else None,
            "outstanding_balance": money(self._outstanding),
            "first_order_at": first,
            "last_order_at": last,
            "days_since_last_order": whole_days(at - last) if last is not None else None,
            "days_since_first_order": whole_days(at - first) if first is not None else None,
            "days_known": whole_days(at - self.first_event_at) if self.first_event_at is not None else None,
            "active_months_12m": len({(t.year, t.month) for t in recent}),
            "full_price_share": (self._full_price_net / self._net).quantize(RATIO, rounding=ROUND_HALF_UP)
            if self._net > 0 else None,
            "checkouts_started": self.checkouts,
            "referrals": len(self.referred),
            "complaints": self.complaints,
            "reviews_count": len(self.ratings),
            "average_rating": money(Decimal(sum(self.ratings)) / len(self.ratings)) if self.ratings else None,
            # a cancelled order we never saw placed or paid (a shop auto-cancelling an unpaid
            # checkout) is not a refund to the customer
            "refunds_count": len(self.refund_ids) + len(self.cancelled_orders & self._seen_orders()),
            "accepts_marketing": self.accepts_marketing,
            "has_account": self.has_account,
            "image_client": self.image_client_flag or self.settings.image_client_tag in self.tags,
            "tags": self.tags,
        }
        return facts


def compute_facts(events: Iterable[Event], at: datetime, settings: Settings | None = None,
                  excluded_orders: Iterable[str] = frozenset()) -> dict[str, Any]:
    """Facts at ``at`` from events (any order; those after ``at`` are ignored)."""
    acc = FactsAccumulator(settings, excluded_orders)
    seen: set[str] = set()
    for event in sorted(events, key=lambda e: e.sort_key):
        if event.occurred_at > at or event.id in seen:
            continue
        seen.add(event.id)
        acc.apply(event)
    return acc.snapshot(at)
