"""Conditions (``when:``) from rule-file data into the programme model.

Conditions are recursive (``all``/``any``/``not`` around comparisons), so they are parsed by hand
rather than by a schema, but they answer like one: marshmallow-style nested errors keyed by the
path inside the condition, which the schema field turns into positioned problems.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from loyalty_ladder import factspec
from loyalty_ladder.programme import AllOf, AnyOf, Comparison, Condition, Not
from loyalty_ladder.rulewords import (
    AtKey,
    Errors,
    as_money,
    describe,
    did_you_mean,
    is_int,
    parse_decimal,
    parse_time,
    reason,
    unknown_key,
)

COMPARISON_OPS = factspec.ORDER_OPS + factspec.TAG_OPS
LOGIC_KEYS = ("all", "any", "not")


def parse_condition(raw: Any) -> tuple[Condition | None, Errors]:
    """A condition from rule-file data, or marshmallow-style nested errors (never both)."""
    if isinstance(raw, list):
        return _logic("all", raw, errors_key="_schema")
    if not isinstance(raw, dict):
        return None, {"_schema": [(
            f"a condition is a mapping such as {{fact: orders_count, gte: 1}} or all/any/not, "
            f"got {describe(raw)}"
        )]}
    logic = [k for k in raw if k in LOGIC_KEYS]
    if logic:
        errors: Errors = {}
        for extra in raw:
            if extra in ("fact", *COMPARISON_OPS):
                errors[extra] = [AtKey(f"'{extra}' cannot sit beside '{logic[0]}': "
                                       "put the comparison inside the list")]
            elif extra not in LOGIC_KEYS:
                errors[extra] = [unknown_key(extra, LOGIC_KEYS)]
        for extra in logic[1:]:
            errors[extra] = [AtKey(f"one condition holds one of all, any, not; found '{logic[0]}' and "
                                   f"'{extra}': nest them")]
        key = logic[0]
        if key == "not":
            item, sub = parse_condition(raw["not"])
            if sub:
                errors["not"] = sub
            return (None, errors) if errors else (Not(item), {})  # type: ignore[arg-type]
        condition, sub = _logic(key, raw[key], errors_key=key)
        errors.update(sub)
        return (None, errors) if errors else (condition, {})
    if "fact" in raw:
        return _comparison(raw)
    errors = {}
    for key in raw:
        if key not in COMPARISON_OPS:
            errors[key] = [unknown_key(key, ("fact", *LOGIC_KEYS))]
    if not errors:
        errors["_schema"] = ["a condition needs 'fact' (a comparison) or one of all, any, not"]
    return None, errors


def _logic(key: str, raw: Any, errors_key: str) -> tuple[Condition | None, Errors]:
    if not isinstance(raw, list) or not raw:
        what = "an empty list" if raw == [] else describe(raw)
        return None, {errors_key: [f"'{key}' needs a non-empty list of conditions, got {what}"]}
    items: list[Condition] = []
    errors: Errors = {}
    for i, item in enumerate(raw):
        condition, sub = parse_condition(item)
        if sub:
            errors[i] = sub
        elif condition is not None:
            items.append(condition)
    if errors:
        return None, ({errors_key: errors} if errors_key != "_schema" else errors)
    return (AllOf(tuple(items)) if key == "all" else AnyOf(tuple(items))), {}


_KIND_LABELS = {
    "count": "a count", "days": "a number of days", "money": "money", "number": "a number",
    "ratio": "a ratio", "bool": "true/false", "time": "a time", "tags": "a set of tags",
}
_KIND_WORDS = {
    "count": "a count: compare it with a whole number >= 0",
    "days": "a number of days: compare it with a whole number >= 0",
    "money": "money: compare it with an amount such as \"300.00\"",
    "number": "a number: compare it with a decimal number such as \"4.5\"",
    "ratio": "a ratio: compare it with a number from 0 to 1 such as \"0.6\"",
    "bool": "true/false: compare it with true or false",
    "time": "a time: compare it with an ISO date or date-time such as \"2026-01-31\"",
    "tags": "a set of tags: use contains with a tag name",
}


def _comparison(raw: dict[str, Any]) -> tuple[Condition | None, Errors]:
    errors: Errors = {}
    fact = raw["fact"]
    spec: factspec.FactSpec | None = None
    if not isinstance(fact, str):
        errors["fact"] = [f"'fact' must be a fact name, got {describe(fact)}"]
    elif fact not in factspec.FACTS:
        hint = did_you_mean(fact, list(factspec.FACTS)) or " (the facts are listed in docs/rules.md)"
        errors["fact"] = [f"unknown fact '{fact}'{hint}"]
    else:
        spec = factspec.FACTS[fact]
    allowed = spec.ops if spec else COMPARISON_OPS
    ops: list[str] = []
    for key in raw:
        if key == "fact":
            continue
        if key not in COMPARISON_OPS:
            hint = did_you_mean(key, allowed) or "; operators: " + ", ".join(allowed)
            errors[key] = [AtKey(f"unknown operator '{key}'{hint}")]
        else:
            ops.append(key)
    if len(ops) > 1:
        for extra in ops[1:]:
            errors[extra] = [AtKey(f"a comparison takes exactly one operator, found '{ops[0]}' and '{extra}': "
                                   "write two comparisons inside all")]
    if not ops:
        if not any(k != "fact" for k in raw):
            errors["_schema"] = [f"the comparison on '{fact}' needs an operator: one of {', '.join(allowed)}"]
        return None, errors
    op = ops[0]
    if spec is None:
        return None, errors
    if op not in spec.ops:
        errors[op] = [AtKey(f"operator '{op}' does not apply to fact '{fact}' ({_KIND_LABELS[spec.kind]}): "
                            f"use {' or '.join(spec.ops)}")]
        return None, errors
    try:
        value = _literal(spec, raw[op])
    except ValueError as exc:
        errors[op] = [f"fact '{fact}' is {_KIND_WORDS[spec.kind]}, got {describe(raw[op])}{exc}"]
        return None, errors
    if errors:
        return None, errors
    return Comparison(fact, op, value), {}


def _literal(spec: factspec.FactSpec, value: Any) -> Decimal | int | bool | str | datetime:
    """The typed literal of a comparison; ``ValueError`` carries an extra reason (or nothing)."""
    kind = spec.kind
    if kind in ("count", "days"):
        if not is_int(value) or value < 0:
            raise ValueError("")
        return int(value)
    if kind in ("money", "number", "ratio"):
        try:
            number = parse_decimal(value)
        except ValueError as exc:
            raise ValueError(reason(value, exc)) from exc
        if kind == "ratio" and not Decimal(0) <= number <= Decimal(1):
            raise ValueError(" (out of range)")
        return as_money(number) if kind == "money" else number
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("")
        return value
    if kind == "time":
        try:
            return parse_time(value)
        except ValueError as exc:
            raise ValueError("") from exc
    if kind == "tags":
        if not isinstance(value, str) or not value.strip() or "," in value:
            raise ValueError("")
        return value
    raise AssertionError(f"unhandled fact kind {kind}")  # pragma: no cover - factspec.KINDS is closed

