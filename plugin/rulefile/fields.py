"""Marshmallow fields of the rule files' structure: ids, conditions, triggers, mappings.

Conditions and triggers are fields too, so their nested errors land under the right path.  The
scalar fields (``Int``, ``Number``, ``Text``, ``Choice``) live in :mod:`loyalty_ladder.rulewords`,
where the reward types' params schemas find them too.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError

from loyalty_ladder.programme import Condition, Trigger
from loyalty_ladder.rulewords import ID_PATTERN, Choice, Int, Number, RuleField, Text, describe

from .conditions import parse_condition
from .triggers import parse_trigger

__all__ = ["Choice", "ConditionField", "IdList", "Int", "MappingField", "Number", "RuleField", "Text",
           "TriggerField", "id_field"]


def id_field(what: str, **kwargs: Any) -> Text:
    return Text(pattern=ID_PATTERN, what=f"{what} matching {ID_PATTERN.pattern} "
                                          "(lower-case letters, digits, '_' and '-')", **kwargs)


class IdList(RuleField):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> tuple:
        if not isinstance(value, list):
            raise ValidationError(f"'{self.key()}' must be a list of ids, got {describe(value)}")
        errors: dict[int, list[str]] = {}
        for i, item in enumerate(value):
            if not isinstance(item, str) or not ID_PATTERN.match(item):
                errors[i] = [f"an id must match {ID_PATTERN.pattern}, got {describe(item)}"]
        if errors:
            raise ValidationError(errors)
        return tuple(value)


class ConditionField(RuleField):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Condition:
        condition, errors = parse_condition(value)
        if errors:
            raise ValidationError(errors)
        assert condition is not None
        return condition


class TriggerField(RuleField):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Trigger:
        trigger, errors = parse_trigger(value)
        if errors:
            raise ValidationError(errors)
        assert trigger is not None
        return trigger


class MappingField(RuleField):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> dict:
        if not isinstance(value, dict):
            raise ValidationError(f"'{self.key()}' must be a mapping, got {describe(value)}")
        return value

