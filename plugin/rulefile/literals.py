"""Typed literal values of rule files: ids, float-free decimals, money, times.

One spelling per meaning ("300.00", 300 and 300.0 are the same number) so that the programme's
version hash covers meaning, not formatting.
"""
from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

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

