"""``points``: bonus points, each award one batch with its own expiry."""
from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, validates_schema

from loyalty_ladder.programme import Trigger
from loyalty_ladder.rulewords import AtKey, Int, Number

from .base import CENT, AwardContext, Kind, ParamsSchema, RewardType, decimal_or_none


class PointsParams(ParamsSchema):
    points = Int(minimum=1)
    points_per_unit = Number(what="a number of points per currency unit such as \"1\"", money=False,
                              low=Decimal(0), low_open=True)
    expires_days = Int(minimum=1, load_default=365)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _one_of(self, data: dict[str, Any], original: dict[str, Any], **kwargs: Any) -> None:
        if "points" in original and "points_per_unit" in original:
            raise ValidationError(AtKey("points are either 'points' or 'points_per_unit', not both"),
                                  "points_per_unit")
        if "points" not in original and "points_per_unit" not in original:
            raise ValidationError("a points reward needs 'points' (a fixed number) or 'points_per_unit' "
                                  "(per currency unit of an order)")


class Points(RewardType):
    """A grant: one batch of the customer's points ledger (:mod:`loyalty_ladder.points`).  The
    ledger is kept here, not in the shop: the award is delivered by being credited to it, and the
    customer spends the points through a redemption (``points_redemption``)."""

    name = "points"
    kind = Kind.GRANT
    params_schema = PointsParams
    promotional = False  # a notice of points credited: what the customer earned
    kept_here = True

    def trigger_problems(self, params: Mapping[str, Any], trigger: Trigger) -> dict[str, str]:
        if "points_per_unit" in params and trigger.kind != "order":
            return {"points_per_unit": (
                f"'points_per_unit' needs an 'order' trigger (points per currency unit of an order), "
                f"not '{trigger.kind}'; use 'points' for a fixed number")}
        return {}

    @staticmethod
    def earned(params: Mapping[str, Any], base: Decimal | None) -> int:
        """The points of a reward's params: floor(``base`` × ``points_per_unit``) for an order
        reward (``base``: the part of the order that earns points), else the fixed ``points``."""
        per_unit = decimal_or_none(params.get("points_per_unit"))
        if per_unit is not None:
            return math.floor(base * per_unit) if base is not None else 0
        return int(params.get("points") or 0)

    def award_params(self, params: dict[str, Any], ctx: AwardContext) -> tuple[dict[str, Any], Decimal | None]:
        """``points`` (:meth:`earned`, of the order as it stands at ``as_of``); value = points ×
        the programme's ``point_value`` when it sets one."""
        base = ctx.points_base if ctx.points_base is not None else ctx.order_net
        points = self.earned(params, base)
        params.pop("points_per_unit", None)
        params.pop("points", None)
        value = (ctx.point_value * points).quantize(CENT) if ctx.point_value is not None else None
        return {"points": points, **params}, value

    def implied(self, params: Mapping[str, Any]) -> bool:
        """Points of an order refunded in full (outside the window) come to nothing: not implied."""
        return params.get("points") != 0
