"""Shopify's webhook payloads as marshmallow schemas (``unknown=EXCLUDE``: a new Shopify field
never breaks us).  They load into REST-shaped dicts, the one shape :mod:`.mapping` reads; ``sync``
converts GraphQL nodes into the same shape (:mod:`.graphql`) and loads them here too."""
from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from ...errors import BadRequest
from ...events import MAX_MONEY, AwareTime

__all__ = ["CHECKOUT", "COMPLIANCE", "CUSTOMER", "ORDER", "REFUND", "load"]


class _ShopifyId(fields.Field):
    """Shopify ids arrive as JSON numbers (REST webhooks) or strings; ours are strings."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or str(value).strip() == "":
            raise ValidationError("Not a valid Shopify id.")
        return str(value).strip()


class _Amount(fields.Field):
    """A money amount as Shopify writes it: a decimal string, sometimes a JSON number."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
            raise ValidationError("Not a valid amount.")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValidationError("Not a valid amount.") from None
        if not amount.is_finite():
            raise ValidationError("Not a valid amount.")
        if abs(amount) > MAX_MONEY:  # also keeps quantize() from overflowing the decimal context
            raise ValidationError(f"Amount too large (at most {MAX_MONEY}).")
        return amount


class _Vendor(Schema):
    class Meta:
        unknown = EXCLUDE


class _Money(_Vendor):
    amount = _Amount(allow_none=True)
    currency_code = fields.String(allow_none=True)


class _MoneySet(_Vendor):
    shop_money = fields.Nested(_Money, allow_none=True)


class _Consent(_Vendor):
    state = fields.String(allow_none=True)


class _Customer(_Vendor):
    id = _ShopifyId(allow_none=True)
    email = fields.String(allow_none=True)
    created_at = AwareTime(allow_none=True)
    updated_at = AwareTime(allow_none=True)
    tags = fields.String(allow_none=True)
    locale = fields.String(allow_none=True)
    accepts_marketing = fields.Boolean(allow_none=True)
    email_marketing_consent = fields.Nested(_Consent, allow_none=True)


class _DiscountCode(_Vendor):
    code = fields.String(allow_none=True)


class _Line(_Vendor):
    sku = fields.String(allow_none=True)
    quantity = fields.Integer(allow_none=True)
    price = _Amount(allow_none=True)
    price_set = fields.Nested(_MoneySet, allow_none=True)
    gift_card = fields.Boolean(allow_none=True)


class _Transaction(_Vendor):
    id = _ShopifyId(allow_none=True)
    kind = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    amount = _Amount(allow_none=True)
    amount_set = fields.Nested(_MoneySet, allow_none=True)
    currency = fields.String(allow_none=True)


class _Refund(_Vendor):
    id = _ShopifyId(required=True)
    order_id = _ShopifyId(allow_none=True)
    created_at = AwareTime(allow_none=True)
    processed_at = AwareTime(allow_none=True)
    note = fields.String(allow_none=True)
    transactions = fields.List(fields.Nested(_Transaction), allow_none=True)


class _Schedule(_Vendor):
    due_at = AwareTime(allow_none=True)


class _PaymentTerms(_Vendor):
    payment_terms_name = fields.String(allow_none=True)
    payment_terms_type = fields.String(allow_none=True)
    due_in_days = fields.Integer(allow_none=True)
    payment_schedules = fields.List(fields.Nested(_Schedule), allow_none=True)


class _Order(_Vendor):
    id = _ShopifyId(required=True)
    email = fields.String(allow_none=True)
    contact_email = fields.String(allow_none=True)
    created_at = AwareTime(allow_none=True)
    processed_at = AwareTime(allow_none=True)
    updated_at = AwareTime(allow_none=True)
    cancelled_at = AwareTime(allow_none=True)
    financial_status = fields.String(allow_none=True)
    currency = fields.String(allow_none=True)
    total_price = _Amount(allow_none=True)
    total_price_set = fields.Nested(_MoneySet, allow_none=True)
    total_discounts = _Amount(allow_none=True)
    total_discounts_set = fields.Nested(_MoneySet, allow_none=True)
    total_shipping_price_set = fields.Nested(_MoneySet, allow_none=True)
    total_tax = _Amount(allow_none=True)
    total_tax_set = fields.Nested(_MoneySet, allow_none=True)
    discount_codes = fields.List(fields.Nested(_DiscountCode), allow_none=True)
    line_items = fields.List(fields.Nested(_Line), allow_none=True)
    payment_gateway_names = fields.List(fields.String(allow_none=True), allow_none=True)
    gateway = fields.String(allow_none=True)
    payment_terms = fields.Nested(_PaymentTerms, allow_none=True)
    customer = fields.Nested(_Customer, allow_none=True)
    refunds = fields.List(fields.Nested(_Refund), allow_none=True)


class _Checkout(_Vendor):
    id = _ShopifyId(allow_none=True)
    token = fields.String(required=True, validate=validate.Length(min=1))
    email = fields.String(allow_none=True)
    created_at = AwareTime(required=True)
    customer = fields.Nested(_Customer, allow_none=True)


class _CustomerPayload(_Customer):
    id = _ShopifyId(required=True)


class _ComplianceCustomer(_Vendor):
    id = _ShopifyId(allow_none=True)
    email = fields.String(allow_none=True)


class _Compliance(_Vendor):
    shop_domain = fields.String(allow_none=True)
    customer = fields.Nested(_ComplianceCustomer, allow_none=True)


ORDER, REFUND, CUSTOMER, CHECKOUT, COMPLIANCE = _Order(), _Refund(), _CustomerPayload(), _Checkout(), _Compliance()


def load(schema: Schema, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The payload through ``schema``; BadRequest (never retried) when it does not fit."""
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        raise BadRequest(f"malformed Shopify {what} payload", exc.normalized_messages()) from None
    return loaded
