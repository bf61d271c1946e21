"""``greeting``: a greeting, for attention rather than money."""
from __future__ import annotations

from loyalty_ladder.rulewords import Choice, Text

from .base import Kind, ParamsSchema, RewardType

OCCASIONS = ("birthday", "holiday", "anniversary")


class GreetingParams(ParamsSchema):
    occasion = Choice(OCCASIONS, load_default="birthday")
    message = Text()


class Greeting(RewardType):
    """A grant that *is* its notice: with a notification channel it needs no grant job, and the
    notice's success delivers it."""

    name = "greeting"
    kind = Kind.GRANT
    params_schema = GreetingParams
    promotional = True  # attention, not something earned: marketing
    notice_only = True
