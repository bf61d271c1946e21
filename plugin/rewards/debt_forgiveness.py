"""``debt_forgiveness``: writing off part of what an important customer owes."""
from __future__ import annotations

from decimal import Decimal

from loyalty_ladder.rulewords import Number

from .base import Kind, ParamsSchema, RewardType


class DebtForgivenessParams(ParamsSchema):
    max_amount = Number(required=True, low=Decimal(0), low_open=True)


class DebtForgiveness(RewardType):
    """A grant staff book; its value is ``max_amount``, the most written off per award."""

    name = "debt_forgiveness"
    kind = Kind.GRANT
    params_schema = DebtForgivenessParams
    promotional = False  # a debt written off: a notice of what was done
