"""``discount``: a discount code, the same for the same award on every fold."""
from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, validates_schema

from loyalty_ladder.rulewords import AtKey, Int, Number, Text

from .base import CENT, AwardContext, Kind, ParamsSchema, RewardType, decimal_or_none

CODE_PREFIX_PATTERN = re.compile(r"^[A-Z0-9-]{1,20}$")
_POSITIVE: dict[str, Any] = {"low": Decimal(0), "low_open": True}


def discount_code(prefix: str, key: str) -> str:
    """A code that is the same for the same award on every fold and differs between awards."""
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:8].upper()}"


class DiscountParams(ParamsSchema):
    percent = Number(what="a percentage such as 10", high=Decimal(100), money=False, **_POSITIVE)
    amount = Number(**_POSITIVE)
    expires_days = Int(minimum=1, load_default=30)
    usage_limit = Int(minimum=1, load_default=1)
    minimum_order = Number(low=Decimal(0))
    code_prefix = Text(pattern=CODE_PREFIX_PATTERN,
                        what=f"1 to 20 upper-case letters, digits or '-' ({CODE_PREFIX_PATTERN.pattern})")

    # The original data, not the loaded one: a key with a bad value still counts as given.
    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _one_of(self, data: dict[str, Any], original: dict[str, Any], **kwargs: Any) -> None:
        if "percent" in original and "amount" in original:
            raise ValidationError(AtKey("a discount is either 'percent' or 'amount', not both"), "amount")
        if "percent" not in original and "amount" not in original:
            raise ValidationError("a discount needs 'percent' (e.g. 10) or 'amount' (e.g. \"5.00\")")


class Discount(RewardType):
    """A grant; delivered as a customer-limited code (``discount_codes``).  Every discount — of
    any stage or trigger: a welcome, a first- or second-order code, a win-back — is an offer to
    buy again: promotional (consent needed) unless its params say ``notify: transactional``."""

    name = "discount"
    kind = Kind.GRANT
    params_schema = DiscountParams
    requires = "discount_codes"

    def rule_defaults(self, params: dict[str, Any], reward_id: str) -> dict[str, Any]:
        """``code_prefix``: the reward id upper-cased, ``_`` → ``-``, at most 20 characters."""
        if "code_prefix" not in params and reward_id:
            params["code_prefix"] = reward_id.upper().replace("_", "-")[:20]
        return params

    def award_params(self, params: dict[str, Any], ctx: AwardContext) -> tuple[dict[str, Any], Decimal | None]:
        """``code`` (deterministic from the key and ``code_prefix``), ``usage_limit`` (default 1),
        ``percent`` or ``amount``, ``minimum_order``; value = the fixed amount (a percentage has
        no value until used)."""
        value: Decimal | None = None
        prefix = str(params.pop("code_prefix", None) or ctx.reward.id.upper())
        out: dict[str, Any] = {"code": discount_code(prefix, ctx.key), "usage_limit": int(params.pop("usage_limit", 1))}
        if "percent" in params:
            out["percent"] = str(params.pop("percent"))
        if "amount" in params:
            amount = decimal_or_none(params.pop("amount"))
            if amount is not None:
                out["amount"] = str(amount.quantize(CENT))
                value = amount.quantize(CENT)
        if "minimum_order" in params:
            minimum = decimal_or_none(params.pop("minimum_order"))
            if minimum is not None:
                out["minimum_order"] = str(minimum.quantize(CENT))
        out.update(params)
        return out, value

    def resolve(self, ctx: AwardContext) -> tuple[dict[str, Any], Decimal | None]:
        """A fixed amount is in the programme's ``currency`` (added last, when known)."""
        params, value = super().resolve(ctx)
        if ctx.currency and "amount" in params and "currency" not in params:
            params["currency"] = ctx.currency
        return params, value
