"""One customer's facts mapping turned into what is posted to durable_rules.

The hot path of every evaluation, hence flat loops and a per-programme JSON template instead of
``json.dumps`` (see :mod:`loyalty_ladder.engine.host`).  Decimals and times become doubles,
nudged one ulp where a fact's double equals a literal's but the exact values differ, so each
comparison keeps its exact outcome; nullable facts get their ``has__`` flag, tags their flags.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..errors import EngineError
from .compiler import _BARE_EXPONENT, _INT_BOUND, OK_FIELD, _Plan

_INT_KINDS = frozenset({"count", "days"})
_DECIMAL_KINDS = frozenset({"money", "ratio", "number"})


def _number(fact: str, kind: str, value: Any) -> int | float:
    """A fact value as durable compares it (before nudging)."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise EngineError(f"fact {fact} must be a bool, not {value!r}")
        return 1 if value else 0
    if kind in _INT_KINDS:
        if type(value) is not int:
            raise EngineError(f"fact {fact} must be an int, not {value!r}")
        return max(-_INT_BOUND, min(_INT_BOUND, value))
    if kind == "time":
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise EngineError(f"fact {fact} must be an aware datetime, not {value!r}")
        return value.timestamp()
    if isinstance(value, Decimal) or type(value) is int:
        number = float(value)
        if not math.isfinite(number):
            raise EngineError(f"fact {fact} is not a finite number: {value}")
        return number
    raise EngineError(f"fact {fact} must be a Decimal, not {value!r}")


def _values(plan: _Plan, facts: Mapping[str, Any]) -> list[Any]:
    """The posted values, in the order of ``plan.names`` (the hot path: keep it flat)."""
    out: list[Any] = []
    append = out.append
    for fact, kind, nullable, lits in plan.numeric:
        value = facts.get(fact)
        if value is None:
            if not nullable:
                raise EngineError(f"fact {fact} has no value but is never absent")
            append(0)
            append(0)
            continue
        kind_of_value = type(value)
        if kind_of_value is int and kind in _INT_KINDS:
            posted = value if -_INT_BOUND <= value <= _INT_BOUND else math.copysign(_INT_BOUND, value)
        elif kind_of_value is Decimal and kind in _DECIMAL_KINDS:
            posted = float(value)
            if not math.isfinite(posted):
                raise EngineError(f"fact {fact} is not a finite number: {value}")
        else:
            posted = _number(fact, kind, value)
        lit = lits.get(posted)
        if lit is not None and kind != "bool" and value != lit:
            # same double, different exact values: move one ulp to keep the exact order
            posted = math.nextafter(posted, math.inf if value > lit else -math.inf)
        append(posted)
        if nullable:
            append(1)
    if plan.tags:
        have = facts.get("tags")
        if have is None:
            raise EngineError("fact tags has no value (use an empty set)")
        if isinstance(have, str) or not isinstance(have, (set, frozenset, list, tuple)):
            raise EngineError(f"fact tags must be a set of strings, not {have!r}")
        for _, tag in plan.tags:
            append(1 if tag in have else 0)
    return out


def _post_fields(plan: _Plan, facts: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(zip(plan.names, _values(plan, facts)))
    if plan.rules:
        out[OK_FIELD] = 1
    return out


def _fact_text(plan: _Plan, values: list[Any], sid: str) -> str:
    """The fact as JSON: field names are [a-z0-9_] and values numbers, so a template does."""
    text = plan.template % (*values, sid)
    if "e-" in text or "e+" in text:  # only numbers can hold these
        text = _BARE_EXPONENT.sub(r"\1.0", text)
    return text
