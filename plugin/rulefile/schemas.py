"""The rule-file schemas: settings, stages, subgroups and rewards.

Each reward type's params schema lives with its type (:mod:`loyalty_ladder.rewards`);
:data:`PARAMS_SCHEMAS` looks them up.

Every schema raises on unknown keys (``unknown=RAISE``): a misspelt key is a problem to report
with a hint, never something to ignore.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from marshmallow import Schema

from loyalty_ladder.rewards import registry as reward_types
from loyalty_ladder.rulewords import RuleSchema

from .fields import Choice, ConditionField, IdList, Int, MappingField, Number, Text, TriggerField, id_field

CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")


class SettingsSchema(RuleSchema):
    name = Text(load_default="")
    currency = Text(pattern=CURRENCY_PATTERN, what="an ISO 4217 code of 3 upper-case letters such as EUR",
                     load_default="EUR")
    refund_window_days = Int(minimum=0, load_default=30)
    default_margin = Number(what="a share from 0 to 1 such as \"0.30\"", low=Decimal(0), high=Decimal(1),
                             money=False, load_default=Decimal("0.3"))
    image_client_tag = Text(no_commas=True, load_default="image-client")
    point_value = Number(what="the money one point is worth such as \"0.01\"", low=Decimal(0), low_open=True,
                         money=False, load_default=None)
    points_reminder_days = Int(minimum=0, load_default=14)


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


def _reward_type_names() -> tuple[str, ...]:
    """At each use: a plugin or a test may register a type after this schema was defined."""
    return reward_types.rule_names()


class RewardSchema(RuleSchema):
    id = id_field("a reward id", required=True)
    name = Text()
    type = Choice(_reward_type_names, what="reward type", required=True)
    on = TriggerField(required=True)
    when = ConditionField()
    subgroups = IdList(load_default=())
    params = MappingField(load_default=dict)


class _ParamsSchemas(Mapping[str, type[Schema]]):
    """Each registered reward type's params schema, looked up in the registry at each use (the
    schemas live with their types in :mod:`loyalty_ladder.rewards`)."""

    def __getitem__(self, name: str) -> type[Schema]:
        found = reward_types.find(name)
        if found is None:
            raise KeyError(name)
        return found.params_schema

    def __iter__(self) -> Iterator[str]:
        return iter(_reward_type_names())

    def __len__(self) -> int:
        return len(_reward_type_names())


PARAMS_SCHEMAS: Mapping[str, type[Schema]] = _ParamsSchemas()


def json_friendly(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in params.items()}

