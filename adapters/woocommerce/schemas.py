"""WooCommerce's REST v3 payloads as marshmallow schemas (``unknown=EXCLUDE``: a new field never
breaks us), and its value spellings (GMT times without a zone, amounts as strings or numbers)
turned into ours."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from ...errors import BadRequest
from ...events import MAX_MONEY

CENT = Decimal("0.01")
_is_email = validate.Email()


class _Vendor(Schema):
    class Meta:
        unknown = EXCLUDE


class _AddressSchema(_Vendor):
    email = fields.String(allow_none=True)


class _LineSchema(_Vendor):
    sku = fields.String(allow_none=True)
    quantity = fields.Integer(allow_none=True)
    price = fields.Raw(allow_none=True)  # a JSON number (price = total / quantity) in REST v3


class _CouponLineSchema(_Vendor):
    code = fields.String(allow_none=True)


class _RefundRefSchema(_Vendor):
    id = fields.Integer(required=True)
    reason = fields.String(allow_none=True)
    refund = fields.String(allow_none=True)  # the older key of the reason (REST v1/v2 payloads)
    total = fields.Raw(required=True)


class _OrderSchema(_Vendor):
    id = fields.Integer(required=True)
    status = fields.String(required=True)
    currency = fields.String(required=True)
    date_created_gmt = fields.String(required=True)
    date_modified_gmt = fields.String(allow_none=True)
    date_paid_gmt = fields.String(allow_none=True)
    total = fields.Raw(required=True)
    discount_total = fields.Raw(allow_none=True)
    shipping_total = fields.Raw(allow_none=True)
    total_tax = fields.Raw(allow_none=True)
    customer_id = fields.Integer(load_default=0, allow_none=True)
    billing = fields.Nested(_AddressSchema, allow_none=True)
    payment_method = fields.String(allow_none=True)
    line_items = fields.List(fields.Nested(_LineSchema), load_default=list)
    coupon_lines = fields.List(fields.Nested(_CouponLineSchema), load_default=list)
    refunds = fields.List(fields.Nested(_RefundRefSchema), load_default=list)


class _CustomerSchema(_Vendor):
    id = fields.Integer(required=True)
    email = fields.String(allow_none=True)
    date_created_gmt = fields.String(required=True)
    date_modified_gmt = fields.String(allow_none=True)
    billing = fields.Nested(_AddressSchema, allow_none=True)


class _IdOnlySchema(_Vendor):
    id = fields.Integer(required=True)


ORDER = _OrderSchema()
CUSTOMER = _CustomerSchema()
ID_ONLY = _IdOnlySchema()


def gmt(value: str | None) -> datetime | None:
    """A REST ``*gmt`` time (``2017-03-22T19:28:08``, no zone: it *is* GMT) → aware UTC."""
    if not value:
        return None
    text = value.strip()
    if text[-1:] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"not a WooCommerce date: {value!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def when(value: str | None) -> datetime:
    """A time the payload must have (its schema requires the field, but it may be blank)."""
    parsed = gmt(value)
    if parsed is None:
        raise BadRequest("a WooCommerce payload without its date")
    return parsed


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def money(value: Any) -> Decimal | None:
    """A WooCommerce amount (string or number, any decimals) → cents; None when absent/blank."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise BadRequest(f"not an amount: {value!r}") from None
    if not amount.is_finite():
        raise BadRequest(f"not an amount: {value!r}")
    if abs(amount) > MAX_MONEY:  # also keeps quantize() from overflowing the decimal context
        raise BadRequest(f"amount too large: {str(value)[:40]!r} (at most {MAX_MONEY})",
                         {"amount": [f"at most {MAX_MONEY}"]})
    # line prices are total / quantity and may have many decimals: round to the cent
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def valid_email(value: str | None) -> str | None:
    """The e-mail when it is one (admin-created orders may have an empty billing e-mail)."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        _is_email(text)
    except ValidationError:
        return None
    return text if len(text) <= 320 else None


def load(schema: Schema, data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise BadRequest(f"the {what} payload must be a JSON object")
    try:
        return schema.load(dict(data))
    except ValidationError as exc:
        raise BadRequest(f"malformed WooCommerce {what} payload", exc.normalized_messages()) from None


def split_tags(value: Any) -> list[str]:
    if isinstance(value, list):
        items = [str(v) for v in value]
    elif isinstance(value, str):
        items = value.split(",")
    else:
        items = []
    return list(dict.fromkeys(t.strip() for t in items if t and t.strip()))
