"""A small, independent evaluator of rule-file conditions, the oracle for the engine tests.

It reads the *data* form of a condition (as in rule files and ``programme.condition_to_data``):
``{"fact": NAME, OP: value}``, ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": cond}``, or
``None`` (always holds), over a plain facts dict (``None`` = absent).  A comparison with an
absent fact is false and ``not`` negates it (two-valued logic).  Numbers compare exactly as
``Decimal``, times as aware datetimes.

It deliberately imports nothing from ``loyalty_ladder``: a shared mistake in the package cannot
make the engine and its oracle agree.  The kinds below are our own copy; a test checks it
against ``factspec`` so the copy cannot drift silently.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

#: fact name -> kind; numbers (count, days, money, ratio, number) compare as Decimal
KINDS: dict[str, str] = {
    "orders_count": "count",
    "orders_12m": "count",
    "net_spent": "money",
    "profit": "money",
    "average_order_value": "money",
    "outstanding_balance": "money",
    "first_order_at": "time",
    "last_order_at": "time",
    "days_since_last_order": "days",
    "days_since_first_order": "days",
    "days_known": "days",
    "active_months_12m": "count",
    "full_price_share": "ratio",
    "checkouts_started": "count",
    "referrals": "count",
    "complaints": "count",
    "reviews_count": "count",
    "average_rating": "number",
    "refunds_count": "count",
    "accepts_marketing": "bool",
    "has_account": "bool",
    "image_client": "bool",
    "tags": "tags",
}

_NUMERIC = {"count", "days", "money", "ratio", "number"}


def _apply(op: str, left: Any, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if op == "lt":
        return bool(left < right)
    if op == "lte":
        return bool(left <= right)
    if op == "gt":
        return bool(left > right)
    if op == "gte":
        return bool(left >= right)
    raise ValueError(f"unknown operator {op!r}")


def _as_time(value: Any) -> datetime:
    out = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(out, datetime) or out.tzinfo is None:
        raise ValueError(f"not an aware time: {value!r}")
    return out


def compare(fact: str, op: str, value: Any, current: Any) -> bool:
    """``current op value`` for one fact; false when the fact is absent."""
    if current is None:
        return False
    kind = KINDS[fact]
    if kind == "tags":
        if op != "contains":
            raise ValueError(f"tags only support contains, not {op!r}")
        return value in current
    if kind in _NUMERIC:
        # str() first: an int, a Decimal or a decimal string all become the exact Decimal
        return _apply(op, Decimal(str(current)), Decimal(str(value)))
    if kind == "time":
        return _apply(op, _as_time(current), _as_time(value))
    if kind == "bool":
        if not isinstance(current, bool) or not isinstance(value, bool):
            raise ValueError(f"{fact} compares bools, got {current!r} and {value!r}")
        return _apply(op, current, value)
    raise ValueError(f"unknown kind {kind!r}")


def holds(condition: Any, facts: Mapping[str, Any]) -> bool:
    """Whether a condition in data form holds for ``facts``."""
    if condition is None:
        return True
    if not isinstance(condition, Mapping):
        raise TypeError(f"not a condition: {condition!r}")
    if "all" in condition:
        return all(holds(item, facts) for item in condition["all"])
    if "any" in condition:
        return any(holds(item, facts) for item in condition["any"])
    if "not" in condition:
        return not holds(condition["not"], facts)
    fact = condition["fact"]
    [(op, value)] = [(k, v) for k, v in condition.items() if k != "fact"]
    return compare(fact, op, value, facts.get(fact))
