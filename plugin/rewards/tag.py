"""``tag``: a tag on the customer in the shop (segments, e-mail lists)."""
from __future__ import annotations

from loyalty_ladder.rulewords import Text

from .base import Kind, ParamsSchema, RewardType


class TagParams(ParamsSchema):
    tag = Text(no_commas=True, required=True)


class Tag(RewardType):
    """A privilege: the stage tag is held while the customer is in the stage.  It is the shop's
    segmentation, not a gift, so the customer is not e-mailed about it."""

    name = "tag"
    kind = Kind.PRIVILEGE
    params_schema = TagParams
    promotional = False  # a privilege granted or ended (the webhook hears of it)
    requires = "tags"
    emailed = False
