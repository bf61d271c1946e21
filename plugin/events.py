"""The generic event schema (public contract) and the immutable ``Event`` it yields.

Generic events are our own format, so unknown fields are errors (``unknown=RAISE``):
a typo in an integration must fail loudly, not be dropped.  Vendor adapters map
their payloads to this shape first.

Every accepted event keeps ``raw``: the canonical JSON form of what was accepted
(money as normalised decimal strings, times as UTC ``…Z``, absent fields left
out, ``schema`` dropped because version 1 is the only one).  Two submissions
with the same meaning therefore have the same ``raw`` — that is what the events
endpoint compares for its 409 — and ``Event.from_raw(raw)`` rebuilds the event
from storage.

One module although it is a little over 400 lines: the schema *is* the public contract of an
event, and keeping every field's rule in one file keeps the contract readable in one place.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

EVENT_TYPES = (
    "customer_created",
    "customer_updated",
    "customer_deleted",
    "checkout_started",
    "order_placed",
    "order_paid",
    "payment_received",
    "order_refunded",
    "order_cancelled",
    "order_restored",
    "referral",
    "complaint",
    "review",
    "stage_set",
    "turn_started",
    "reward_granted",
    "reward_revoked",
    "points_adjusted",
    "points_redeemed",
)
#: manual adjustments by staff (``ladder adjust``, ``POST …/adjustments``),
#: stored in the customer's ledger with ``source`` ``admin`` and an ``adjustment`` {author, reason,
#: …}; the fold applies them at their instant.  The public events API refuses them.
ADMIN_EVENT_TYPES = ("stage_set", "turn_started", "reward_granted", "reward_revoked", "points_adjusted",
                     "points_redeemed")
#: the admin events that change the points ledger (``points_redeemed``: stored by
#: :mod:`.redemptions`, with the redemption's id, points and value in ``adjustment``)
POINTS_EVENT_TYPES = ("points_adjusted", "points_redeemed")
#: events that are about one order and must name it
ORDER_EVENTS = ("order_placed", "order_paid", "payment_received", "order_refunded", "order_cancelled",
                "order_restored")
#: events that create an order (and so must carry its total and currency)
ORDER_CREATING_EVENTS = ("order_placed", "order_paid")
PAYMENT_METHODS = ("card", "gift_card", "points", "terms", "other")

MAX_ID = 200
#: the largest number of points one adjustment or redemption moves
MAX_POINTS = 1_000_000_000
#: the id rules of :func:`id_problem` as a JSON-schema pattern (for ``/openapi.json``)
ID_PATTERN = r"^[^/\u0000-\u001f\u007f-\u009f]*[^/\s\u0000-\u001f\u007f-\u009f][^/\u0000-\u001f\u007f-\u009f]*$"
#: largest batch of events one request (the events API, a generic webhook) or import transaction carries
MAX_EVENTS_PER_REQUEST = 1000
CENT = Decimal("0.01")
#: far above any real order; keeps absurd inputs (1e400) out of our arithmetic
MAX_MONEY = Decimal(1000000000000)


# ------------------------------------------------------------------ fields
class Money(fields.Field):
    """A non-negative amount: a decimal string (``"12.50"``) or a JSON number, at most 2 decimals.

    JSON numbers go through ``str`` so ``19.99`` stays 19.99 and never becomes a binary
    float approximation.  Serialises as a string with exactly two decimals.
    """

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "Not a valid amount: use a decimal string such as \"12.50\".",
        "negative": "Must not be negative.",
        "precision": "At most 2 decimal places.",
        "too_large": "Amount too large.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
            raise self.make_error("invalid")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise self.make_error("invalid") from None
        if not amount.is_finite():
            raise self.make_error("invalid")
        if amount < 0:
            raise self.make_error("negative")
        if amount > MAX_MONEY:
            raise self.make_error("too_large")
        quantised = amount.quantize(CENT)
        if quantised != amount:
            raise self.make_error("precision")
        return quantised

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return str(Decimal(value).quantize(CENT))


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class AwareTime(fields.Field):
    """ISO 8601 with a zone → aware UTC datetime; a time without a zone is rejected."""

    default_error_messages: ClassVar[dict[str, str]] = {
        "invalid": "Not a valid ISO 8601 date-time.",
        "naive": "timezone required (e.g. 2026-03-02T10:00:00Z)",
        "range": "out of range: times must lie between 1970 and 2200",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> datetime:
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, str):
            text = value.strip()
            try:
                parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" and text else text)
            except ValueError:
                raise self.make_error("invalid") from None
        else:
            raise self.make_error("invalid")
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise self.make_error("naive")
        try:
            utc = parsed.astimezone(UTC)
        except OverflowError:
            raise self.make_error("range") from None
        if not EARLIEST <= utc <= LATEST:
            raise self.make_error("range")
        return utc

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return format_time(value)


def format_time(value: datetime) -> str:
    """UTC ISO 8601 with ``Z``; the one spelling used in ``raw``."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an id (event, customer, order, refund), or None.

    Ids end up in URLs (``/customers/<id>``) and award keys (``shop/customer/…/order/<id>``):
    a ``/`` could never be fetched, a control character never be typed, a blank id never be
    told apart from a missing one."""
    if not value.strip():
        return "Must not be blank."
    if "/" in value:
        return "Must not contain '/'."
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in value):
        return "Must not contain control characters."
    return None


def _valid_id(value: str) -> None:
    problem = id_problem(value)
    if problem:
        raise ValidationError(problem)


def _id_field(required: bool = True) -> fields.String:
    return fields.String(required=required, validate=[validate.Length(min=1, max=MAX_ID), _valid_id],
                         metadata={"pattern": ID_PATTERN})


def _bad_text(value: Any) -> str | None:
    """Why a string cannot be stored (a NUL byte, a lone surrogate), or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return "must not contain NUL characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode (a lone surrogate was found)"
    elif isinstance(value, list):
        for item in value:
            problem = _bad_text(item)
            if problem:
                return problem
    return None


def text_problem(value: str) -> str | None:
    """Why a text cannot be stored (a NUL byte, a lone surrogate), or None (for ids outside events)."""
    return _bad_text(value)


class _Strict(Schema):
    class Meta:
        unknown = RAISE

    @pre_load
    def _storable_text(self, data: Any, **kwargs: Any) -> Any:
        # strings go to the database and to shops' APIs: refuse what neither can store
        if isinstance(data, Mapping):
            errors = {key: [problem] for key, value in data.items() if (problem := _bad_text(value))}
            if errors:
                raise ValidationError(errors)
        return data


class PaymentSchema(_Strict):
    method = fields.String(required=True, validate=validate.OneOf(PAYMENT_METHODS))
    due_at = AwareTime()


class LineSchema(_Strict):
    sku = fields.String(validate=validate.Length(max=MAX_ID))
    quantity = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=1_000_000))
    price = Money()
    cost = Money()
    gift_card = fields.Boolean()


class OrderSchema(_Strict):
    id = _id_field()
    total = Money()
    currency = fields.String(validate=validate.Regexp(r"^[A-Z]{3}$", error="A 3-letter ISO 4217 code such as EUR."))
    discount_total = Money()
    cost = Money()
    shipping = Money()
    shipping_cost = Money()
    tax = Money()
    #: the part of ``total`` paid with loyalty points (store credit or a redemption's code): earns no points
    points_paid = Money()
    discount_codes = fields.List(fields.String(validate=validate.Length(min=1, max=MAX_ID)),
                                 validate=validate.Length(max=100))
    payment = fields.Nested(PaymentSchema)
    lines = fields.List(fields.Nested(LineSchema), validate=validate.Length(max=1000))


class RefundSchema(_Strict):
    id = _id_field()
    amount = Money(required=True)
    reason = fields.String(validate=validate.Length(max=1000))


class CustomerSchema(_Strict):
    email = fields.Email(validate=validate.Length(max=320))
    birthday = fields.Date()
    locale = fields.String(validate=validate.Length(min=2, max=35))
    tags = fields.List(fields.String(validate=validate.Length(min=1, max=MAX_ID)), validate=validate.Length(max=250))
    accepts_marketing = fields.Boolean()
    image_client = fields.Boolean()


class AdjustmentSchema(_Strict):
    """Who made a manual adjustment, why, and its data (by event type: ``stage_set`` names the
    ``stage`` and may ``force`` one below the current; ``reward_granted`` the ``reward`` id;
    ``reward_revoked`` the ``award_key``)."""

    author = fields.String(required=True, validate=validate.Length(min=1, max=255))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))
    stage = fields.String(validate=validate.Length(min=1, max=64))
    force = fields.Boolean()
    reward = fields.String(validate=validate.Length(min=1, max=64))
    award_key = fields.String(validate=validate.Length(min=1, max=512))
    #: ``points_adjusted``: points added (> 0) or removed (< 0); ``points_redeemed``: points spent (> 0)
    points = fields.Integer(strict=True, validate=validate.Range(min=-MAX_POINTS, max=MAX_POINTS))
    #: ``points_adjusted`` adding points: the days they last (none: they never expire)
    expires_days = fields.Integer(strict=True, validate=validate.Range(min=1, max=36_500))
    #: ``points_redeemed``: the redemption's id (the caller's idempotency key), its value and currency
    redemption = fields.String(validate=validate.Length(min=1, max=MAX_ID))
    value = Money()
    currency = fields.String(validate=validate.Regexp(r"^[A-Z]{3}$", error="A 3-letter ISO 4217 code such as EUR."))


#: what each admin event type's adjustment must name
_ADJUSTMENT_NEEDS = {"stage_set": "stage", "reward_granted": "reward", "reward_revoked": "award_key",
                     "points_adjusted": "points", "points_redeemed": "redemption"}


class EventSchema(_Strict):
    schema = fields.Integer(strict=True, validate=validate.Equal(1, error="Only schema version 1 exists."))
    id = _id_field()
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    customer_id = _id_field()
    occurred_at = AwareTime(required=True)
    order = fields.Nested(OrderSchema)
    refund = fields.Nested(RefundSchema)
    customer = fields.Nested(CustomerSchema)
    referred_customer_id = _id_field(required=False)
    reason = fields.String(validate=validate.Length(max=1000))
    rating = fields.Integer(strict=True, validate=validate.Range(min=1, max=5))
    amount = Money()
    adjustment = fields.Nested(AdjustmentSchema)

    @validates_schema
    def _per_type(self, data: dict[str, Any], **kwargs: Any) -> None:
        kind = data.get("type")
        errors: dict[str, Any] = {}
        order = data.get("order")
        if kind in ORDER_EVENTS:
            if order is None:
                errors["order"] = [f"Required for {kind} (at least order.id)."]
            elif kind in ORDER_CREATING_EVENTS:
                missing = {name: ["Missing data for required field."]
                           for name in ("total", "currency") if order.get(name) is None}
                if missing:
                    errors["order"] = missing
        if kind == "order_refunded" and data.get("refund") is None:
            errors["refund"] = ["Required for order_refunded: {id, amount}."]
        if kind == "payment_received" and data.get("amount") is None:
            errors["amount"] = ["Required for payment_received."]
        if kind == "referral" and data.get("referred_customer_id") is None:
            errors["referred_customer_id"] = ["Required for referral."]
        if kind == "review" and data.get("rating") is None:
            errors["rating"] = ["Required for review."]
        adjustment = data.get("adjustment")
        if kind in ADMIN_EVENT_TYPES:
            if adjustment is None:
                errors["adjustment"] = [f"Required for {kind}: {{author, reason, …}}."]
            elif kind in _ADJUSTMENT_NEEDS and not adjustment.get(_ADJUSTMENT_NEEDS[kind]):
                errors["adjustment"] = {_ADJUSTMENT_NEEDS[kind]: [f"Required for {kind}."]}
            elif kind == "points_redeemed" and not (adjustment.get("points") or 0) > 0:
                errors["adjustment"] = {"points": ["A redemption spends at least 1 point."]}
        elif adjustment is not None:
            errors["adjustment"] = ["Only for manual adjustments (" + ", ".join(ADMIN_EVENT_TYPES) + ")."]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> Event:
        return _event_from_loaded(data)


# ------------------------------------------------------------------ dataclasses
@dataclass(frozen=True)
class Line:
    quantity: int
    sku: str | None = None
    price: Decimal | None = None
    cost: Decimal | None = None  # unit cost of goods
    gift_card: bool = False


@dataclass(frozen=True)
class Payment:
    method: str
    due_at: datetime | None = None


@dataclass(frozen=True)
class Order:
    id: str
    total: Decimal | None = None  # what the customer pays, after discounts, including shipping
    currency: str | None = None
    discount_total: Decimal | None = None
    cost: Decimal | None = None  # cost of goods of the whole order, when lines carry none
    shipping: Decimal | None = None  # shipping charged to the customer (part of total)
    shipping_cost: Decimal | None = None  # what shipping cost the shop
    tax: Decimal | None = None  # the tax included in total (VAT, sales tax): not the shop's money
    points_paid: Decimal | None = None  # the part of total paid with loyalty points
    discount_codes: tuple[str, ...] = ()
    payment: Payment | None = None
    lines: tuple[Line, ...] = ()


@dataclass(frozen=True)
class Refund:
    id: str
    amount: Decimal
    reason: str | None = None


@dataclass(frozen=True)
class CustomerInfo:
    email: str | None = None
    birthday: date | None = None
    locale: str | None = None
    tags: tuple[str, ...] | None = None  # None: not sent (keep what we knew); () : no tags
    accepts_marketing: bool | None = None
    image_client: bool | None = None


@dataclass(frozen=True)
class Adjustment:
    """A manual adjustment's author, reason and data (see :class:`AdjustmentSchema`)."""

    author: str
    reason: str
    stage: str | None = None
    force: bool = False
    reward: str | None = None
    award_key: str | None = None
    points: int | None = None
    expires_days: int | None = None
    redemption: str | None = None
    value: Decimal | None = None
    currency: str | None = None


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    customer_id: str
    occurred_at: datetime
    order: Order | None = None
    refund: Refund | None = None
    customer: CustomerInfo | None = None
    referred_customer_id: str | None = None
    reason: str | None = None
    rating: int | None = None
    amount: Decimal | None = None
    adjustment: Adjustment | None = None
    #: canonical JSON form of what was accepted (storage, 409 comparison)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def sort_key(self) -> tuple[datetime, str]:
        """The fold order: the shop's own time, then the id to break ties."""
        return (self.occurred_at, self.id)

    @property
    def order_id(self) -> str | None:
        return self.order.id if self.order is not None else None

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> Event:
        """Rebuild an event from its stored canonical form (validated again: storage is input too)."""
        return parse_event(raw)


def _event_from_loaded(data: dict[str, Any]) -> Event:
    order = data.get("order")
    customer = data.get("customer")
    refund = data.get("refund")
    ev = Event(
        id=data["id"],
        type=data["type"],
        customer_id=data["customer_id"],
        occurred_at=data["occurred_at"],
        order=None if order is None else Order(
            id=order["id"],
            total=order.get("total"),
            currency=order.get("currency"),
            discount_total=order.get("discount_total"),
            cost=order.get("cost"),
            shipping=order.get("shipping"),
            shipping_cost=order.get("shipping_cost"),
            tax=order.get("tax"),
            points_paid=order.get("points_paid"),
            discount_codes=tuple(order.get("discount_codes") or ()),
            payment=None if order.get("payment") is None else Payment(**order["payment"]),
            lines=tuple(Line(**line) for line in order.get("lines") or ()),
        ),
        refund=None if refund is None else Refund(**refund),
        customer=None if customer is None else CustomerInfo(
            **{k: (tuple(v) if k == "tags" else v) for k, v in customer.items()}),
        referred_customer_id=data.get("referred_customer_id"),
        reason=data.get("reason"),
        rating=data.get("rating"),
        amount=data.get("amount"),
        adjustment=None if data.get("adjustment") is None else Adjustment(**data["adjustment"]),
    )
    object.__setattr__(ev, "raw", _canonical(data))
    return ev


def _canonical(data: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready canonical form of loaded data: absent stays absent, ``schema`` dropped."""

    def conv(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value.quantize(CENT))
        if isinstance(value, datetime):
            return format_time(value)
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, Mapping):
            return {k: conv(v) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [conv(v) for v in value]
        return value

    return {k: conv(v) for k, v in data.items() if v is not None and k != "schema"}


# ------------------------------------------------------------------ parsing
_SCHEMA = EventSchema()


def parse_event(data: Any) -> Event:
    """Validate one generic event; raises marshmallow ``ValidationError`` with per-field messages."""
    if not isinstance(data, Mapping):
        raise ValidationError({"_schema": ["An event must be a JSON object."]})
    return _SCHEMA.load(dict(data))


def parse_events(items: Sequence[Any]) -> list[Event]:
    """Validate a batch all-or-nothing; errors are keyed by the item's index (as a string)."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise ValidationError({"_schema": ["Expected a list of events."]})
    parsed: list[Event] = []
    errors: dict[str, Any] = {}
    for i, item in enumerate(items):
        try:
            parsed.append(parse_event(item))
        except ValidationError as exc:
            errors[str(i)] = exc.normalized_messages()
    if errors:
        raise ValidationError(errors)
    return parsed
