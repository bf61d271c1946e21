"""``free_service``: an extra service for free ("we make your layout for free")."""
from __future__ import annotations

from decimal import Decimal

from loyalty_ladder.rulewords import Number, Text

from .base import Kind, ParamsSchema, RewardType


class FreeServiceParams(ParamsSchema):
    service = Text(required=True)
    value = Number(low=Decimal(0))


class FreeService(RewardType):
    """A grant staff perform; ``value`` (when given) is its cost to us."""

    name = "free_service"
    kind = Kind.GRANT
    params_schema = FreeServiceParams
    promotional = True  # an offer of a service to use: marketing
