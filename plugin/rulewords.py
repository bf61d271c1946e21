"""The words of rule files: how literals are read, how problems are worded, and the scalar
marshmallow fields built from both.

A leaf: the rule-file package and the reward types (whose params schemas live with each type in
:mod:`loyalty_ladder.rewards`, below the rule files on the line, since the awards and the ladder
ask them too) word every problem the same way from here.

* literals: one spelling per meaning ("300.00", 300 and 300.0 are the same number) so that the
  programme's version hash covers meaning, not formatting;
* messages: how a value is described ("nothing (null)", "a list"), "did you mean" hints, and
  :class:`AtKey` (a message that belongs at the key, not the value);
* fields: marshmallow's own messages ("Not a valid integer.") name neither the key nor what was
  expected; these say both (``'min_stay_days' must be a whole number >= 0, got -1``).
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields

# ================================================================ messages
#: marshmallow-style nested errors: key or list index -> messages or nested errors
Errors = dict[Any, Any]


class AtKey(str):
    """An error message that belongs at the *key* of its path, not at the value.

    Used for unknown, duplicate and surplus keys: the key is what the author must fix.
    """


def describe(value: Any) -> str:
    """A value as an author would recognise it in their file ("got nothing (null)", "got a list")."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if isinstance(value, str) else str(value)


def did_you_mean(name: Any, candidates: list[str] | tuple[str, ...]) -> str:
    """A " — did you mean 'x'?" hint for a near-miss, or nothing: typos are the commonest mistake."""
    match = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f" — did you mean '{match[0]}'?" if match else ""


def unknown_key(key: str, candidates: list[str] | tuple[str, ...]) -> AtKey:
    """An unknown key, at the key, with the closest allowed one or else all of them."""
    hint = did_you_mean(key, candidates)
    if not hint:
        hint = "; allowed: " + ", ".join(candidates)
    return AtKey(f"unknown key '{key}'{hint}")


# ================================================================ literals
ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")
# "float-free": plain digits with an optional fraction, no exponent, no NaN/Infinity.
DECIMAL_PATTERN = re.compile(r"^[+-]?\d+(\.\d+)?$")
MAX_DECIMAL_PLACES = 4


def normalise(d: Decimal) -> Decimal:
    """One representation per number ("300.00", 300 and 300.0 are all 300) so the version
    hash covers meaning, not spelling."""
    return Decimal(format(d.normalize(), "f"))


def as_money(d: Decimal) -> Decimal:
    """Money with at least two decimal places ("5" → "5.00"), still one spelling per amount."""
    exponent = d.as_tuple().exponent
    return d.quantize(Decimal("0.01")) if isinstance(exponent, int) and exponent > -2 else d


def parse_decimal(value: Any) -> Decimal:
    """A Decimal from an int, a float-free decimal string or a YAML number (via ``str``).

    Raises ``ValueError`` with the reason; at most four decimal places.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError("not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError("not a number")  # noqa: TRY004 - callers report every bad literal alike
    if not DECIMAL_PATTERN.match(text):
        raise ValueError("not a plain decimal number")
    try:
        number = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already excludes it
        raise ValueError("not a number") from exc
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        raise ValueError(f"more than {MAX_DECIMAL_PLACES} decimal places")
    return normalise(number)


def parse_time(value: Any) -> datetime:
    """An aware UTC datetime from a date or date-time (YAML timestamp or ISO string)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
    else:
        raise ValueError("not a date")  # noqa: TRY004 - callers report every bad literal alike
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def reason(value: Any, exc: ValueError) -> str:
    """Why a number-looking value was refused (" (more than 4 decimal places)"); nothing for the
    obviously wrong ones such as a list."""
    return f" ({exc})" if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""


def is_int(value: Any) -> bool:
    """A whole number, not a boolean (YAML's ``true`` is an ``int`` to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


# ================================================================ scalar fields
class RuleSchema(Schema):
    """Every rule-file schema raises on unknown keys: a misspelt key is a problem to report with
    a hint, never something to ignore."""

    class Meta:
        unknown = RAISE


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
    """One of ``choices``: a tuple, or a function giving it at each use (the reward types, which a
    plugin or a test may register after the schema was defined)."""

    def __init__(self, choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]], what: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self._choices, self.what = choices, what

    @property
    def choices(self) -> tuple[Any, ...]:
        return self._choices() if callable(self._choices) else self._choices

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        choices = self.choices
        if value in choices and type(value) is type(choices[0]):
            return value
        listed = ", ".join(str(c) for c in choices)
        if self.what:
            hint = did_you_mean(value, [str(c) for c in choices]) or f"; one of {listed}"
            raise ValidationError(f"unknown {self.what} {describe(value)}{hint}")
        raise ValidationError(f"'{self.key()}' must be one of {listed}, got {describe(value)}")
