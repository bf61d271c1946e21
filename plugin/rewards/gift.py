"""``gift``: a gift, e.g. an apology for a mistake."""
from __future__ import annotations

from decimal import Decimal

from loyalty_ladder.rulewords import Number, Text

from .base import Kind, ParamsSchema, RewardType


class GiftParams(ParamsSchema):
    description = Text(required=True)
    value = Number(low=Decimal(0), load_default=Decimal("0.00"))


class Gift(RewardType):
    """A grant handed over by staff (no shop API sends parcels); ``value`` is its cost to us."""

    name = "gift"
    kind = Kind.GRANT
    params_schema = GiftParams
    promotional = False  # a gift given (an apology for a complaint): already theirs
