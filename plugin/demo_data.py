"""Demo data: a realistic shop history in the generic event format, streamed month by month.

``generate(customers, seed=1, months=24, end=None)`` yields raw event dicts (the format of
:mod:`.events`, currency EUR) in time order, ``(occurred_at, id)``, like a shop export: every
one passes :func:`.events.parse_event` and is what ``ladder import`` and ``ladder simulate``
accept (``ladder demo-data`` writes them as JSON lines).

**Customers and their habits** (:data:`HABITS`, shares in :data:`HABIT_SHARES`): monthly buyers,
occasional buyers, discount hunters (codes, ``discount_total``, sale months), one-off buyers,
B2B buyers on payment terms (``order_placed`` with ``payment`` {terms, due_at}, then
``payment_received``, some late, some in two instalments, a few never within the history), image
clients (the tag ``image-client`` of the default programme; half of them also ``influencer``, the
fashion shop's) and visitors who only sign up or only start checkouts. Some buyers stop buying
(and lapse), some return a lot, some write many reviews; about one customer in eighteen was
referred by an earlier one (a ``referral`` event of the referrer naming them); a few
"ambassadors" refer several. Orders have lines (sku, quantity, price, cost), shipping and
what it cost the shop, the VAT included in the total (``tax``; 0 for reverse-charge B2B),
sometimes only an order cost or no cost at all (the programme's default margin then).
Seasonality: November and December peaks, a summer dip, sales in January, July and November.
After orders: refunds (full and partial, most inside the 30-day refund window, some after it),
cancellations, complaints and reviews.

**Deterministic for a seed and an end**: the output is a function of (customers, seed, months,
end) alone — byte-identical on every run and machine. Randomness comes only from BLAKE2b of
(seed, customer index[, month]) and ``random.Random(int).random()``; never ``hash()`` or the
clock. The default end is today 00:00 UTC, so pass ``end`` to reproduce a file on another day.

**Streaming, memory flat**: the history is generated one calendar-length month (a *bucket*,
``end`` minus whole months) at a time. A customer's profile is a pure function of (seed, index),
recomputed when needed rather than kept; each customer's events of a month come from an RNG
seeded by (seed, index, month). A month's events are sorted by ``(occurred_at, id)`` and yielded;
those that fall in a later month (a refund, a payment on terms, a one-off buyer's order some
weeks after signing up) wait in a small heap. Nothing at or after ``end`` is emitted. Customers
join in index order (a shop numbers its customers as they sign up), so a referrer, always an
earlier index, exists before the customer it refers.

Amounts are whole cents (``int``) inside this module, written as decimal strings: exact, never
a float. Times are whole UTC seconds since the epoch until written.
"""
from __future__ import annotations

import bisect
import heapq
import json
import math
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from hashlib import blake2b
from typing import Any, NamedTuple

CURRENCY = "EUR"
#: the habits, in the order of :data:`HABIT_SHARES`
HABITS = ("monthly", "occasional", "discount_hunter", "one_off", "b2b", "image_client", "visitor")
#: share of customers per habit (sums to 1)
HABIT_SHARES = {"monthly": 0.22, "occasional": 0.17, "discount_hunter": 0.14, "one_off": 0.17, "b2b": 0.04,
                "image_client": 0.02, "visitor": 0.24}
#: habits that buy again and again while they stay
RECURRING = frozenset({"monthly", "occasional", "discount_hunter", "b2b", "image_client"})
IMAGE_CLIENT_TAG = "image-client"  # the default programme's image_client_tag
INFLUENCER_TAG = "influencer"  # the fashion shop's (rules/examples/fashion-shop)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)

_DAY = 86400
_HOUR = 3600
#: orders per month while active, before the customer's own factor (0.6–1.4) and the season
_RATE = {"monthly": 1.75, "occasional": 0.6, "discount_hunter": 0.7, "b2b": 3.0, "image_client": 1.3}
#: chance that a recurring buyer stops buying at some month (and lapses later)
_CHURN = {"monthly": 0.25, "occasional": 0.35, "discount_hunter": 0.3, "b2b": 0.12, "image_client": 0.1}
#: chance that a consumer order uses a discount code
_CODE_USE = {"monthly": 0.08, "occasional": 0.25, "discount_hunter": 0.92, "one_off": 0.35, "image_client": 0.0}
#: the share of goods a code takes off, by code
_CODES = {"SAVE10": 10, "SAVE15": 15, "NEWSLETTER10": 10, "FREESHIP": 0, "WELCOME10": 10}
_SALE_CODES = {1: ("WINTERSALE30", 30), 7: ("SUMMERSALE30", 30), 11: ("BLACKFRIDAY25", 25)}
#: order volume by calendar month: November/December peak, summer dip
SEASON = {1: 0.95, 2: 0.85, 3: 0.95, 4: 1.0, 5: 1.0, 6: 0.9, 7: 0.8, 8: 0.75, 9: 1.0, 10: 1.05, 11: 1.45,
          12: 1.6}
#: discount hunters wait for the sales
_HUNTER_SEASON = {1: 1.8, 7: 1.8, 11: 2.6}
_LOCALES = (("de-DE", 19), ("de-AT", 20), ("fr-FR", 20), ("nl-NL", 21), ("it-IT", 22), ("es-ES", 21),
            ("en-IE", 23), ("fr-BE", 21))
_NAMES = ("anna", "ben", "clara", "david", "elena", "felix", "greta", "hugo", "ines", "jonas", "katrin", "luca",
          "mia", "noah", "olga", "paul", "rosa", "sami", "tara", "ugo", "vera", "wim", "xenia", "yusuf", "zoe")
_COMPLAINTS = ("parcel arrived late", "item damaged in transit", "wrong size delivered", "missing item",
               "colour differs from the photos", "refund took too long")
_REFUND_REASONS = ("returned", "does not fit", "damaged", "changed my mind")
#: weight of each UTC hour of the day for an order (evenings busiest)
_HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 8, 9, 9, 8, 8, 8, 9, 11, 13, 14, 12, 8, 4)
_HOUR_CUM = tuple(sum(_HOUR_WEIGHTS[:i + 1]) / sum(_HOUR_WEIGHTS) for i in range(24))
_PRICES = (490, 790, 990, 1290, 1490, 1990, 2490, 2990, 3490, 3990, 4990, 5990, 6990, 7990, 8990, 9990, 12990,
           14990, 17990, 19990, 24990)
_CATALOGUE_SIZE = 480
_FREE_SHIPPING_FROM = 6000  # cents of goods after discounts
_SHIPPING = 490


def _habit_table() -> tuple[str, ...]:
    """The habit of each of 1024 equal slices of [0, 1), by :data:`HABIT_SHARES`."""
    table, acc = [], 0.0
    bounds = []
    for name in HABITS:
        acc += HABIT_SHARES[name]
        bounds.append((acc, name))
    for k in range(1024):
        table.append(next((name for bound, name in bounds if (k + 0.5) / 1024 < bound), HABITS[-1]))
    return tuple(table)


_HABIT_BY_U = _habit_table()


class Profile(NamedTuple):
    """One demo customer's habits, a pure function of (seed, index, customers, window)."""

    index: int
    customer_id: str
    habit: str
    joined: int  # epoch seconds: sign-up (or, for a guest, the first event)
    join_month: int  # the bucket of ``joined``
    account: bool  # customer_created sent (False: a guest)
    accepts_marketing: bool
    locale: str | None
    vat: int  # per cent, included in consumer prices; 0: reverse-charge B2B
    birthday: date | None
    rate: float  # orders per month while active (recurring habits)
    basket: float  # 0.12–1.0: how far up the price list they buy
    last_month: int | None  # the last bucket they buy in (None: they stay)
    returner: bool  # returns a lot
    reviewer: bool  # reviews a lot
    influencer: bool  # an image client the fashion shop's tag also marks
    referrer: int | None  # index of the earlier customer who referred them

    @property
    def joined_at(self) -> datetime:
        return datetime.fromtimestamp(self.joined, UTC)


@dataclass
class Stats:
    """What a generation produced so far (updated as events are yielded; the time range is
    that of the months already out)."""

    customers: int = 0
    events: int = 0
    orders: int = 0
    months_done: int = 0
    first_at: str | None = None
    last_at: str | None = None


def add_months(value: datetime, months: int) -> datetime:
    """``value`` moved by whole calendar months (the day clamped to the month's length)."""
    month0 = value.month - 1 + months
    year, month = value.year + month0 // 12, month0 % 12 + 1
    last_day = [31, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31,
                30, 31, 30, 31][month - 1]
    return value.replace(year=year, month=month, day=min(value.day, last_day))


def default_end() -> datetime:
    """Today 00:00 UTC."""
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def _cents(value: int) -> str:
    return f"{value // 100}.{value % 100:02d}"


_encode = json.JSONEncoder(separators=(",", ":")).encode  # the text of json.dumps(separators=(",", ":"))
_UNPACK = struct.Struct("<32H").unpack
_U = 1 / 65536


def _uniforms(seed: int, index: int) -> tuple[int, ...]:
    """32 numbers in [0, 65536) from BLAKE2b of (seed, index), no RNG to seed: ``u[k] * _U`` is
    uniform in [0, 1) with 16-bit resolution."""
    return _UNPACK(blake2b(b"%d:%d" % (seed, index), digest_size=64, person=b"ladder-demo").digest())


def _rng(seed: int, index: int, month: int) -> random.Random:
    """The RNG of one customer's month (``index`` -1: the shop's catalogue). ``Random(int)``
    fills its state from every bit of the int, so distinct keys give unrelated streams."""
    return random.Random(((seed % (1 << 64)) << 128) | ((index + 1) << 32) | month)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class DemoShop:
    """One demo history: ``lines()`` streams it as JSON lines, ``events()`` as dicts;
    ``profile(i)`` says who customer ``i`` is. Raises ValueError for a bad argument."""

    def __init__(self, customers: int, seed: int = 1, months: int = 24, end: datetime | None = None):
        if isinstance(customers, bool) or not isinstance(customers, int) or customers < 1:
            raise ValueError("customers must be a whole number of at least 1")
        if isinstance(months, bool) or not isinstance(months, int) or months < 1:
            raise ValueError("months must be a whole number of at least 1")
        end = default_end() if end is None else end
        if end.tzinfo is None or end.utcoffset() is None:
            raise ValueError("end needs a time zone (e.g. 2026-03-01T00:00:00Z)")
        end = end.astimezone(UTC)
        if end > LATEST:
            raise ValueError("end must lie before 2200")
        try:
            start = add_months(end, -months)
        except ValueError:  # a year before 1
            start = EARLIEST - timedelta(days=1)
        if start < EARLIEST:
            raise ValueError(f"{months} months before {end.isoformat().replace('+00:00', 'Z')} is before 1970: "
                             "use fewer months or a later end")
        self.customers, self.seed, self.months = customers, seed, months
        self.start, self.end = start, end
        #: bucket m is [bounds[m], bounds[m + 1]); the last ends at ``end``
        self.bounds = [int(add_months(start, m).timestamp()) for m in range(months)] + [int(end.timestamp())]
        self._start_s, self._end_s = self.bounds[0], self.bounds[-1]
        self._span = self._end_s - self._start_s
        self._calendar = [datetime.fromtimestamp((self.bounds[m] + self.bounds[m + 1]) // 2, UTC).month
                          for m in range(months)]
        self._width = max(6, len(str(customers)))
        self._days: dict[int, str] = {}
        self._catalogue = self._make_catalogue()

    # ------------------------------------------------------------ customers
    def _make_catalogue(self) -> list[tuple[str, int, int]]:
        """(sku, gross price in cents, unit cost in cents), cheapest first; fixed for a seed."""
        rng = _rng(self.seed, -1, 0)
        items = []
        for k in range(_CATALOGUE_SIZE):
            price = _PRICES[min(len(_PRICES) - 1, int(len(_PRICES) * rng.random() ** 1.6))]
            net = price * 100 // 119
            cost = int(net * (0.3 + 0.3 * rng.random()))
            items.append((f"SKU-{k + 1:04d}", price, cost))
        items.sort(key=lambda item: (item[1], item[0]))
        return items

    def customer_id(self, index: int) -> str:
        return f"c-{index + 1:0{self._width}d}"

    def _joined(self, index: int, frac: float) -> int:
        """Sign-up time, increasing with the index: a quarter of the customers are there in the
        first weeks (the shop's existing base), the rest join evenly over the history."""
        u = (index + frac) / self.customers
        share = 0.04 * u / 0.25 if u < 0.25 else 0.04 + 0.96 * (u - 0.25) / 0.75
        return self._start_s + int(share * self._span)

    def _month_of(self, t: int) -> int:
        """The bucket of ``t`` (the last whose start is <= t)."""
        return min(self.months - 1, bisect.bisect_right(self.bounds, t) - 1)

    def _base(self, index: int) -> tuple[tuple[int, ...], str, int, int, int | None]:
        """(uniforms, habit, joined, join month, last month): what a referrer check needs."""
        u = _uniforms(self.seed, index)
        habit = _HABIT_BY_U[u[0] >> 6]
        joined = self._joined(index, (u[1] * 65536 + u[2]) / 4294967296)
        join_month = self._month_of(joined)
        last_month = None
        if habit in RECURRING and u[11] * _U < _CHURN[habit] and join_month < self.months - 1:
            last_month = join_month + int(u[12] * _U * (self.months - join_month))
        return u, habit, joined, join_month, last_month

    def profile(self, index: int) -> Profile:
        return self._profile(index, self._base(index))

    def _profile(self, index: int, base: tuple[tuple[int, ...], str, int, int, int | None]) -> Profile:
        bits, habit, joined, join_month, last_month = base
        u = [v * _U for v in bits]
        account = not ((habit == "one_off" and u[2] < 0.25) or (habit == "visitor" and u[2] < 0.3))
        locale, vat = None, 19
        if u[4] < 0.7:
            locale, vat = _LOCALES[int(u[5] * len(_LOCALES))]
        if habit == "b2b":
            vat = 0 if u[5] < 0.5 else vat  # an EU business abroad: reverse charge
        birthday = None
        if account and habit != "b2b" and u[6] < 0.4:
            birthday = date(1950 + int(u[7] * 56), 1, 1) + timedelta(days=int(u[8] * 365))
        rate = _RATE.get(habit, 0.0) * (0.6 + 0.8 * u[9])
        basket = 0.3 + 0.7 * u[10]
        if habit == "image_client":  # big spenders, or a name we are proud of who buys little
            basket, rate = (1.0, rate) if u[10] >= 0.35 else (0.12, rate * 0.7)
        referrer = self._referrer(index, u, joined) if account and index >= 40 and u[16] < 0.1 else None
        return Profile(
            index=index, customer_id=self.customer_id(index), habit=habit, joined=joined, join_month=join_month,
            account=account, accepts_marketing=account and u[3] < (0.85 if habit == "discount_hunter" else 0.55),
            locale=locale, vat=vat, birthday=birthday, rate=rate, basket=basket, last_month=last_month,
            returner=u[13] < (0.3 if habit == "discount_hunter" else 0.1),
            reviewer=u[14] < (0.5 if habit == "image_client" else 0.14),
            influencer=habit == "image_client" and u[15] < 0.5,
            referrer=referrer,
        )

    def _referrer(self, index: int, u: list[float], joined: int) -> int | None:
        """An earlier customer who buys and still buys at ``joined``: first an *ambassador*
        (every 23rd customer), else anyone earlier."""
        for candidate in (23 * int(u[17] * (index // 23)), int(u[18] * index)):
            _, habit, their_join, _, last_month = self._base(candidate)
            if habit in ("monthly", "occasional", "image_client", "b2b") and their_join < joined and (
                    last_month is None or self.bounds[last_month + 1] > joined):
                return candidate
        return None

    def profiles(self) -> Iterator[Profile]:
        """Every customer's profile in index order (computed, not stored)."""
        for index in range(self.customers):
            yield self.profile(index)

    # ------------------------------------------------------------ events
    def lines(self, stats: Stats | None = None,
              on_month: Callable[[int, Stats], None] | None = None) -> Iterator[str]:
        """The history as JSON lines (no newline; ``json.dumps(separators=(",", ":"))``) in
        ``(occurred_at, id)`` order; ``stats`` is updated as lines are yielded and
        ``on_month(m, stats)`` called once bucket ``m`` is out. A month is held as its lines,
        not as dicts: a fifth of the memory."""
        stats = stats if stats is not None else Stats()
        stats.customers = self.customers
        pending: list[tuple[int, str, str]] = []
        first = last = None
        for m in range(self.months):
            lo, hi = self.bounds[m], self.bounds[m + 1]
            batch: list[tuple[int, str, str]] = []
            while pending and pending[0][0] < hi:
                batch.append(heapq.heappop(pending))
            month = _Month(self, m, lo, hi, batch, pending)
            for index in range(self.customers):
                base = self._base(index)
                _, habit, joined, _, last_month = base
                if joined >= hi:
                    break  # later indices join later still
                if joined >= lo or (habit in RECURRING and (last_month is None or m <= last_month)):
                    month.customer(self._profile(index, base))
            stats.orders += month.orders
            batch.sort()  # (time, id, line): ids are unique, the lines are never compared
            if batch:
                first = batch[0][0] if first is None else first
                last = batch[-1][0]
                stats.first_at, stats.last_at = self.time(first), self.time(last)
            for _, _, line in batch:
                stats.events += 1
                yield line
            del batch
            stats.months_done = m + 1
            if on_month is not None:
                on_month(m, stats)

    def events(self, stats: Stats | None = None,
               on_month: Callable[[int, Stats], None] | None = None) -> Iterator[dict[str, Any]]:
        """The history as raw event dicts, in the order of :meth:`lines`."""
        loads = json.loads
        for line in self.lines(stats, on_month):
            yield loads(line)

    def time(self, t: int) -> str:
        day, second = divmod(t, _DAY)
        text = self._days.get(day)
        if text is None:
            text = self._days[day] = datetime.fromtimestamp(day * _DAY, UTC).strftime("%Y-%m-%d")
        return f"{text}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"


class _Month:
    """The events that one bucket's customers start: emitted into its batch, or the heap when
    they fall in a later bucket, or nowhere when at or after the end."""

    def __init__(self, shop: DemoShop, m: int, lo: int, hi: int, batch: list, pending: list):
        self.shop, self.m, self.lo, self.hi = shop, m, lo, hi
        self.batch, self.pending = batch, pending
        self.calendar = shop._calendar[m]
        self.orders = 0  # orders created this bucket (counted when emitted; a later one is counted there)
        self.serial = 0
        self.prefix = ""

    # ------------------------------------------------------------ plumbing
    def emit(self, t: int, kind: str, customer_id: str, **fields: Any) -> None:
        self.serial += 1
        eid = f"{self.prefix}-{self.serial:03d}"
        if t >= self.shop._end_s:
            return
        line = _encode({"id": eid, "type": kind, "customer_id": customer_id, "occurred_at": self.shop.time(t),
                        **fields})
        if t < self.hi:
            self.batch.append((t, eid, line))
        else:
            heapq.heappush(self.pending, (t, eid, line))

    def when(self, rng: random.Random, lo: int, hi: int) -> int:
        """A time in [lo, hi): a uniform day, a busy hour of it."""
        if hi - lo < _DAY:
            return lo + int(rng.random() * (hi - lo))
        day0 = (lo // _DAY + int(rng.random() * ((hi - lo) / _DAY + 1))) * _DAY
        r, hour = rng.random(), 0
        while _HOUR_CUM[hour] < r:
            hour += 1
        t = day0 + hour * _HOUR + int(rng.random() * _HOUR)
        return t if lo <= t < hi else lo + int(rng.random() * (hi - lo))

    # ------------------------------------------------------------ one customer
    def customer(self, p: Profile) -> None:
        joining = self.lo <= p.joined < self.hi
        buying = p.habit in RECURRING and p.join_month <= self.m and (p.last_month is None or self.m <= p.last_month)
        if not joining and not buying:
            return
        shop = self.shop
        rng = _rng(shop.seed, p.index, self.m)
        self.serial = 0
        self.prefix = f"ev-{p.index + 1:0{shop._width}d}-{self.m:03d}"
        cid = p.customer_id
        if joining:
            self.join(rng, p)
        if p.habit == "visitor":
            if not p.account or rng.random() < 0.6:  # guests always try; some sign up only
                t = p.joined
                for _ in range(1 + int(rng.random() * 3)):
                    self.emit(t, "checkout_started", cid)
                    t += int((1 + rng.random() * 40) * _DAY)
            return
        if p.habit == "one_off":
            if joining:
                delay = 0 if not p.account else int(rng.random() ** 2 * 45 * _DAY) + 600
                self.order(rng, p, p.joined + delay, 0)
            return
        lam = p.rate * SEASON[self.calendar]
        if p.habit == "discount_hunter":
            lam *= _HUNTER_SEASON.get(self.calendar, 0.5)
        start = max(self.lo, p.joined + _HOUR)
        if start >= self.hi:
            return
        lam *= (self.hi - start) / (self.hi - self.lo)
        for n in range(_poisson(rng, lam)):
            self.order(rng, p, self.when(rng, start, self.hi), n)
        if rng.random() < 0.1:  # an abandoned cart
            self.emit(self.when(rng, start, self.hi), "checkout_started", cid)

    def join(self, rng: random.Random, p: Profile) -> None:
        cid, t = p.customer_id, p.joined
        info: dict[str, Any] = {}
        if p.account:
            name = _NAMES[p.index % len(_NAMES)]
            domain = "example.net" if p.habit == "b2b" else ("example.com", "example.org")[p.index % 2]
            info["email"] = f"{'purchasing' if p.habit == 'b2b' else name}.{p.index + 1}@{domain}"
            info["accepts_marketing"] = p.accepts_marketing
            if p.birthday is not None:
                info["birthday"] = p.birthday.isoformat()
            if p.locale is not None:
                info["locale"] = p.locale
            tag_now = p.habit == "b2b" or (p.habit == "image_client" and rng.random() < 0.5)
            if tag_now:
                info["tags"] = self.tags(p)
            self.emit(t, "customer_created", cid, customer=info)
            if p.habit == "image_client" and not tag_now:  # staff tag them once they know who it is
                self.emit(t + int((3 + rng.random() * 40) * _DAY), "customer_updated", cid,
                          customer={"tags": self.tags(p)})
            if p.accepts_marketing and rng.random() < 0.06:
                self.emit(t + int((20 + rng.random() * 300) * _DAY), "customer_updated", cid,
                          customer={"accepts_marketing": False})
        if p.referrer is not None:
            self.emit(t + 45, "referral", self.shop.customer_id(p.referrer), referred_customer_id=cid)

    @staticmethod
    def tags(p: Profile) -> list[str]:
        if p.habit == "b2b":
            return ["b2b", "wholesale"]
        return [IMAGE_CLIENT_TAG, INFLUENCER_TAG] if p.influencer else [IMAGE_CLIENT_TAG]

    # ------------------------------------------------------------ one order
    def order(self, rng: random.Random, p: Profile, t: int, n: int) -> None:
        shop = self.shop
        oid = f"o-{p.index + 1:0{shop._width}d}-{self.m:03d}-{n + 1}"
        if t < shop._end_s:
            self.orders += 1
        if p.habit == "b2b":
            self.b2b_order(rng, p, t, oid)
            return
        catalogue = shop._catalogue
        lines, goods = [], 0
        count = 1 if rng.random() < 0.55 else (2 if rng.random() < 0.65 else 3 + int(rng.random() * 2))
        for _ in range(count):
            sku, price, cost = catalogue[int(rng.random() * p.basket * len(catalogue))]
            qty = 1 if rng.random() < 0.8 else 2 + int(rng.random() * 2)
            lines.append((sku, qty, price, cost))
            goods += price * qty
        codes: list[str] = []
        discount = 0
        free_shipping = False
        if rng.random() < _CODE_USE[p.habit]:
            sale = _SALE_CODES.get(self.calendar)
            if p.habit == "discount_hunter" and sale is not None:
                code, pct = sale
            else:
                code = tuple(_CODES)[int(rng.random() * len(_CODES))]
                pct = _CODES[code]
                free_shipping = code == "FREESHIP"
            codes.append(code)
            discount = goods * pct // 100
        shipping = 0 if free_shipping or goods - discount >= _FREE_SHIPPING_FROM else _SHIPPING
        shipping_cost = 450 + int(rng.random() * 350)
        total = goods - discount + shipping
        tax = total * p.vat // (100 + p.vat)  # consumer prices include VAT
        order: dict[str, Any] = {"id": oid, "total": _cents(total), "currency": CURRENCY}
        if discount:
            order["discount_total"] = _cents(discount)
        if codes:
            order["discount_codes"] = codes
        order["shipping"] = _cents(shipping)
        order["shipping_cost"] = _cents(shipping_cost)
        order["tax"] = _cents(tax)
        costing = rng.random()
        if 0.85 <= costing < 0.93:  # the shop knows the order's cost only
            order["cost"] = _cents(sum(c * q for _, q, _, c in lines))
        order["lines"] = [{"sku": s, "quantity": q, "price": _cents(pr), **({"cost": _cents(c)} if costing < 0.85
                                                                           else {})}
                          for s, q, pr, c in lines]
        method = "card" if rng.random() < 0.85 else ("gift_card" if rng.random() < 0.2 else "other")
        order["payment"] = {"method": method}
        cid = p.customer_id
        cancelled = rng.random() < 0.025
        if method == "other" and rng.random() < 0.4:  # a bank transfer: placed, paid 1–3 days later
            self.emit(t, "order_placed", cid, order=order)
            if not cancelled:
                self.emit(t + int((1 + rng.random() * 2) * _DAY), "order_paid", cid, order=dict(order))
        else:
            self.emit(t, "order_paid", cid, order=order)
        if cancelled:  # before it was shipped (or paid)
            self.emit(t + int((1 + rng.random() * 20) * _HOUR), "order_cancelled", cid, order={"id": oid},
                      reason="cancelled by the customer")
            return
        self.after(rng, p, t, oid, total, lines)

    def after(self, rng: random.Random, p: Profile, t: int, oid: str, total: int, lines: list) -> None:
        """Refund, complaint and review of an order that was kept (paid by now)."""
        cid = p.customer_id
        refund_chance = 0.06 * (3 if p.returner else 1) + (0.06 if p.habit == "discount_hunter" else 0)
        refunded = rng.random() < refund_chance
        if refunded:
            if rng.random() < 0.45 or len(lines) == 1 and lines[0][1] == 1:
                amount = total
            else:
                _, qty, price, _ = lines[int(rng.random() * len(lines))]
                amount = min(total, price * (1 if qty == 1 else 1 + int(rng.random() * qty)))
            # most inside the 30-day refund window, some after it
            days = 4 + rng.random() * 24 if rng.random() < 0.85 else 31 + rng.random() * 40
            self.emit(t + int(days * _DAY), "order_refunded", cid, order={"id": oid},
                      refund={"id": f"rf-{oid[2:]}", "amount": _cents(amount),
                              "reason": _REFUND_REASONS[int(rng.random() * len(_REFUND_REASONS))]})
        if rng.random() < (0.12 if refunded else 0.012):
            self.emit(t + int((2 + rng.random() * 10) * _DAY), "complaint", cid,
                      reason=_COMPLAINTS[int(rng.random() * len(_COMPLAINTS))])
        if rng.random() < (0.45 if p.reviewer else 0.07):
            r = rng.random()
            if refunded:
                rating = 1 if r < 0.35 else (2 if r < 0.65 else 3 if r < 0.85 else 4)
            else:
                rating = 5 if r < 0.5 else (4 if r < 0.8 else 3 if r < 0.9 else 2 if r < 0.95 else 1)
            self.emit(t + int((5 + rng.random() * 15) * _DAY), "review", cid, rating=rating)

    def b2b_order(self, rng: random.Random, p: Profile, t: int, oid: str) -> None:
        catalogue = self.shop._catalogue
        lines, goods = [], 0
        for _ in range(1 + int(rng.random() * 4)):
            sku, price, cost = catalogue[int(rng.random() * 0.6 * len(catalogue))]
            unit = price * 100 // 119 * 75 // 100  # wholesale: net of VAT, a quarter off
            qty = 5 + int(rng.random() * 36)
            lines.append((sku, qty, unit, cost))
            goods += unit * qty
        shipping = 0 if goods >= 50000 else 1500
        shipping_cost = 1800 + int(rng.random() * 1700)
        tax = (goods + shipping) * p.vat // 100  # business prices are net: VAT on top
        total = goods + shipping + tax
        terms_days = 30 if rng.random() < 0.8 else (14 if rng.random() < 0.5 else 60)
        due = t + terms_days * _DAY
        cid = p.customer_id
        self.emit(t, "order_placed", cid, order={
            "id": oid, "total": _cents(total), "currency": CURRENCY, "shipping": _cents(shipping),
            "shipping_cost": _cents(shipping_cost), "tax": _cents(tax),
            "payment": {"method": "terms", "due_at": self.shop.time(due)},
            "lines": [{"sku": s, "quantity": q, "price": _cents(u), "cost": _cents(c)} for s, q, u, c in lines]})
        if rng.random() < 0.015:
            self.emit(t + int((1 + rng.random() * 48) * _HOUR), "order_cancelled", cid, order={"id": oid},
                      reason="cancelled by the buyer")
            return
        owed = total
        if rng.random() < 0.04:  # goods sent back: the invoice is reduced before it is paid
            amount = lines[0][1] * lines[0][2] * (100 + p.vat) // 100
            amount = min(amount, total)
            owed -= amount
            self.emit(t + int((5 + rng.random() * 10) * _DAY), "order_refunded", cid, order={"id": oid},
                      refund={"id": f"rf-{oid[2:]}", "amount": _cents(amount), "reason": "returned"})
        if owed <= 0:
            return
        r = rng.random()
        if r < 0.03:
            return  # never paid within the history: outstanding
        if r < 0.25:
            paid_at = due + int((3 + rng.random() * 60) * _DAY)  # late
        else:
            paid_at = max(t + 2 * _DAY, due - int(rng.random() * 10 * _DAY))
        if rng.random() < 0.1:  # two instalments, the first halfway
            first = owed // 2
            self.emit((t + paid_at) // 2, "payment_received", cid, order={"id": oid}, amount=_cents(first))
            self.emit(paid_at, "payment_received", cid, order={"id": oid}, amount=_cents(owed - first))
        else:
            self.emit(paid_at, "payment_received", cid, order={"id": oid}, amount=_cents(owed))
        if rng.random() < 0.1:
            self.emit(t + int((10 + rng.random() * 20) * _DAY), "review", cid, rating=4 if rng.random() < 0.6 else 5)


def generate(customers: int, seed: int = 1, months: int = 24, end: datetime | None = None,
             stats: Stats | None = None,
             on_month: Callable[[int, Stats], None] | None = None) -> Iterator[dict[str, Any]]:
    """The demo history of ``customers`` customers over ``months`` months before ``end``
    (default: today 00:00 UTC), raw event dicts in ``(occurred_at, id)`` order; see the module
    docstring. Raises ValueError for a bad argument before the first event."""
    return DemoShop(customers, seed, months, end).events(stats, on_month)
