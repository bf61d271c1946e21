"""The rule-file schemas: settings, stages, subgroups, rewards and each reward type's params.

Every schema raises on unknown keys (``unknown=RAISE``): a misspelt key is a problem to report
with a hint, never something to ignore.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validates_schema

from loyalty_ladder.programme import REWARD_TYPES

from .fields import Choice, ConditionField, IdList, Int, MappingField, Number, Text, TriggerField, id_field
from .messages import AtKey

CODE_PREFIX_PATTERN = re.compile(r"^[A-Z0-9-]{1,20}$")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
NET_DAYS = (7, 15, 30, 45, 60, 90)
OCCASIONS = ("birthday", "holiday", "anniversary")


class RuleSchema(Schema):
    class Meta:
        unknown = RAISE


class SettingsSchema(RuleSchema):
    name = Text(load_default="")
    currency = Text(pattern=CURRENCY_PATTERN, what="an ISO 4217 code of 3 upper-case letters such as EUR",
                     load_default="EUR")
    refund_window_days = Int(minimum=0, load_default=30)
    default_margin = Number(what="a share from 0 to 1 such as \"0.30\"", low=Decimal(0), high=Decimal(1),
                             money=False, load_default=Decimal("0.3"))
    image_client_tag = Text(no_commas=True, load_default="image-client")


class StageSchema(RuleSchema):
    id = id_field("a stage id", required=True)
    name = Text()
    when = ConditionField()
    min_stay_days = Int(minimum=0, load_default=0)
    lapse_after_days = Int(minimum=1, allow_none=True, load_default=None)


class SubgroupSchema(RuleSchema):
    id = id_field("a subgroup id", required=True)
    name = Text()
    when = ConditionField()


class RewardSchema(RuleSchema):
    id = id_field("a reward id", required=True)
    name = Text()
    type = Choice(REWARD_TYPES, what="reward type", required=True)
    on = TriggerField(required=True)
    when = ConditionField()
    subgroups = IdList(load_default=())
    params = MappingField(load_default=dict)


_POSITIVE = {"low": Decimal(0), "low_open": True}
NOTIFY_KINDS = ("promotional", "transactional")


class _Params(RuleSchema):
    """Keys every reward type accepts: ``notify`` says whether telling the customer is
    marketing (needs their consent) or a transactional notice of what they earned."""

    notify = Choice(NOTIFY_KINDS)


class DiscountParams(_Params):
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


class TagParams(_Params):
    tag = Text(no_commas=True, required=True)


class PointsParams(_Params):
    points = Int(minimum=1)
    points_per_unit = Number(what="a number of points per currency unit such as \"1\"", money=False,
                              **_POSITIVE)
    expires_days = Int(minimum=1, load_default=365)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _one_of(self, data: dict[str, Any], original: dict[str, Any], **kwargs: Any) -> None:
        if "points" in original and "points_per_unit" in original:
            raise ValidationError(AtKey("points are either 'points' or 'points_per_unit', not both"),
                                  "points_per_unit")
        if "points" not in original and "points_per_unit" not in original:
            raise ValidationError("a points reward needs 'points' (a fixed number) or 'points_per_unit' "
                                  "(per currency unit of an order)")


class GiftParams(_Params):
    description = Text(required=True)
    value = Number(low=Decimal(0), load_default=Decimal("0.00"))


class FreeServiceParams(_Params):
    service = Text(required=True)
    value = Number(low=Decimal(0))


class VipServiceParams(_Params):
    level = Text(load_default="vip")
    tag = Text(no_commas=True)


class DeferredPaymentParams(_Params):
    net_days = Choice(NET_DAYS, required=True)
    credit_limit = Number(required=True, **_POSITIVE)


class DebtForgivenessParams(_Params):
    max_amount = Number(required=True, **_POSITIVE)


class GreetingParams(_Params):
    occasion = Choice(OCCASIONS, load_default="birthday")
    message = Text()


PARAMS_SCHEMAS: dict[str, type[RuleSchema]] = {
    "discount": DiscountParams,
    "tag": TagParams,
    "points": PointsParams,
    "gift": GiftParams,
    "free_service": FreeServiceParams,
    "vip_service": VipServiceParams,
    "deferred_payment": DeferredPaymentParams,
    "debt_forgiveness": DebtForgivenessParams,
    "greeting": GreetingParams,
}
assert set(PARAMS_SCHEMAS) == set(REWARD_TYPES)


def json_friendly(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in params.items()}

