"""The trace: every comparison of every condition, evaluated in pure Python on the facts.

Independent of durable_rules on purpose: the host compares the conditions the trace finds true
with those durable fired, so a disagreement between the two is an error, never a wrong answer.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from ..programme import AllOf, Comparison, Condition, Not
from .results import TraceEntry

_PY_OP: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "lte": operator.le, "gt": operator.gt, "gte": operator.ge,
}


def _compare(current: Any, op: str, value: Any) -> bool:
    """One comparison with the rule-file semantics: an absent fact makes it false."""
    if current is None:
        return False
    if op == "contains":
        return value in current
    return _PY_OP[op](current, value)


def _walk(cond: Condition, facts: Mapping[str, Any], cid: str, out: list[TraceEntry]) -> bool:
    # no short-circuit: the trace lists every comparison of the condition
    if isinstance(cond, Comparison):
        current = facts.get(cond.fact)
        result = _compare(current, cond.op, cond.value)
        out.append(TraceEntry(cid, cond.fact, cond.op, cond.value, current, result))
        return result
    if isinstance(cond, Not):
        return not _walk(cond.item, facts, cid, out)
    results = [_walk(item, facts, cid, out) for item in cond.items]
    return all(results) if isinstance(cond, AllOf) else any(results)
