"""``vip_service``: a service level, optionally marked by a shop tag."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loyalty_ladder.rulewords import Text

from .base import Kind, ParamsSchema, RewardType


class VipServiceParams(ParamsSchema):
    level = Text(load_default="vip")
    tag = Text(no_commas=True)


class VipService(RewardType):
    """A privilege.  With a ``tag`` the shop carries it as a customer tag (``tags``); without
    one only staff can (no capability: manual action)."""

    name = "vip_service"
    kind = Kind.PRIVILEGE
    params_schema = VipServiceParams
    promotional = False  # a privilege granted or ended

    def capability(self, params: Mapping[str, Any]) -> str | None:
        return "tags" if params.get("tag") else None
