"""``vip_service``: a service level with a priority, optionally marked by a shop tag.

While a customer holds it they have a personal manager (:mod:`loyalty_ladder.vip`), and the shop
keeps ``{level, priority, manager}`` on the customer (:attr:`VipService.customer_field`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loyalty_ladder.rulewords import Int, Text

from .base import Kind, ParamsSchema, RewardType

#: the priority of a VIP award whose params name none: the highest
DEFAULT_PRIORITY = 1


class VipServiceParams(ParamsSchema):
    level = Text(load_default="vip")
    # no load_default: a programme written before priorities existed keeps its version hash and
    # its awards' params; an award without it has DEFAULT_PRIORITY (vip.priority_of)
    priority = Int(minimum=1)
    tag = Text(no_commas=True)


class VipService(RewardType):
    """A privilege.  With a ``tag`` the shop carries it as a customer tag (``tags``) and keeps the
    VIP document beside it; without one the shop keeps only the document (``customer_fields``).
    A shop lacking the capability leaves it to staff (manual action)."""

    name = "vip_service"
    kind = Kind.PRIVILEGE
    suspended_while_lapsed = True
    params_schema = VipServiceParams
    promotional = False  # a privilege granted or ended
    customer_field = "vip"

    def capability(self, params: Mapping[str, Any]) -> str | None:
        return "tags" if params.get("tag") else "customer_fields"
