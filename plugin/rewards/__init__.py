"""Reward types with one home: each type's params, award, delivery and announcement.

``base`` defines :class:`RewardType` and :class:`Kind`; ``registry`` maps names to types (the
built-ins below, entry points of the group ``loyalty_ladder.reward_types``, :func:`register`);
one module per built-in type: ``discount``, ``tag``, ``points``, ``gift``, ``free_service``,
``vip_service``, ``deferred_payment``, ``debt_forgiveness``, ``greeting``.  The format of each
type's params is documented in ``docs/rules.md``.
"""
from __future__ import annotations

from .base import AwardContext, Kind, ParamsSchema, RewardType
from .registry import GROUP, capability_of, find, get, names, of, register, types, unregister

__all__ = [
    "GROUP", "AwardContext", "Kind", "ParamsSchema", "RewardType", "capability_of", "find", "get", "names", "of",
    "register", "types", "unregister",
]
