"""Marshmallow fields that speak the rule files' words.

marshmallow's own messages ("Not a valid integer.") name neither the key nor what was expected;
these fields say both (``'min_stay_days' must be a whole number >= 0, got -1``).  Conditions and
triggers are fields too, so their nested errors land under the right path.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields

from loyalty_ladder.programme import Condition, Trigger

from .conditions import parse_condition
from .literals import ID_PATTERN, as_money, is_int, parse_decimal, reason
from .messages import describe, did_you_mean
from .triggers import parse_trigger


class RuleField(fields.Field):
    """A field whose messages name the key, in the rule files' words."""

    def key(self) -> str:
        return self.data_key or self.name or "value"


class Int(RuleField):
    def __init__(self, minimum: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.minimum = minimum

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> int:
        if not is_int(value) or value < self.minimum:
            raise ValidationError(f"'{self.key()}' must be a whole number >= {self.minimum}, got {describe(value)}")
        return int(value)


class Number(RuleField):
    """Money, ratio or any decimal number; kept as a normalised ``Decimal``."""

    def __init__(self, what: str = "an amount of money such as \"120.00\"", low: Decimal | None = None,
                 high: Decimal | None = None, low_open: bool = False, money: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.what, self.low, self.high, self.low_open, self.money = what, low, high, low_open, money

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Decimal:
        try:
            number = parse_decimal(value)
        except ValueError as exc:
            raise ValidationError(f"'{self.key()}' must be {self.what}, got {describe(value)}{reason(value, exc)}") from exc
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            bound = "greater than" if self.low_open else "at least"
            raise ValidationError(f"'{self.key()}' must be {bound} {self.low}, got {describe(value)}")
        if self.high is not None and number > self.high:
            raise ValidationError(f"'{self.key()}' must be at most {self.high}, got {describe(value)}")
        return as_money(number) if self.money else number


class Text(RuleField):
    def __init__(self, pattern: re.Pattern[str] | None = None, what: str = "a non-empty text",
                 no_commas: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.pattern, self.what, self.no_commas = pattern, what, no_commas

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"'{self.key()}' must be {self.what}, got {describe(value)}")
        if self.pattern is not None and not self.pattern.match(value):
            raise ValidationError(f"'{self.key()}' must be {self.what}, got {describe(value)}")
        if self.no_commas and "," in value:
            raise ValidationError(f"'{self.key()}' must not contain commas (shops separate tags with them), "
                                  f"got {describe(value)}")
        return value


class Choice(RuleField):
    def __init__(self, choices: tuple[Any, ...], what: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.choices, self.what = choices, what

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if value in self.choices and type(value) is type(self.choices[0]):
            return value
        listed = ", ".join(str(c) for c in self.choices)
        if self.what:
            hint = did_you_mean(value, [str(c) for c in self.choices]) or f"; one of {listed}"
            raise ValidationError(f"unknown {self.what} {describe(value)}{hint}")
        raise ValidationError(f"'{self.key()}' must be one of {listed}, got {describe(value)}")


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

