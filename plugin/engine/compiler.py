"""A programme compiled, in pure Python, into the rule JSON durable_rules reads.

Pure so that the rule-file validator can ask what the engine would refuse (:func:`check_programme`,
:func:`tests_per_fact`) without registering anything in durable_rules.  Conditions are put in
negation normal form (``not`` pushed down to the comparisons, constants folded), literals become
the numbers durable compares, and :class:`_Plan` records everything the host needs afterwards:
the rules, which condition each answers, and how to post a customer's facts (the field order and
the fact's JSON template).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..errors import EngineError
from ..factspec import FACTS
from ..programme import AllOf, AnyOf, Comparison, Condition, Not, Programme, comparisons, condition_id
from .results import ProgrammeProblem

#: limits checked by the rule-file validator and again by ``compile``: durable freezes building a
#: ruleset with ~512 tests on one field and rejects facts with 254+ properties.
LIMITS = {"tests_per_field": 200, "conditions": 200, "fields": 250}

OK_FIELD = "ok__"  # the constant field of the catch-all rule (why: the docstring of engine.host)
OK_RULE = "ok"  # the catch-all rule's name
_HAS = "has__"
_TAG = "tag__"
# Integers are exact in a double up to 2**53; facts beyond are clamped, literals beyond refused.
_INT_BOUND = 2**53

_NEGATED = {"eq": "ne", "ne": "eq", "lt": "gte", "gte": "lt", "lte": "gt", "gt": "lte"}
_DURABLE_OP = {"ne": "$neq", "lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte"}
# durable's number reader wants a fraction before an exponent: 1e-05 -> 1.0e-05
_BARE_EXPONENT = re.compile(r"(?<=[:\[,\s])(-?\d+)(?=e[+-])")


def tag_field(tag: str) -> str:
    """The posted field for ``tags contains <tag>``.

    Injective: a tag already made of ``[a-z0-9_]`` without ``__`` is used as is; any other
    gets its sanitised form plus ``__`` and a hash of the original, which plain ones never have.
    """
    clean = re.sub(r"[^a-z0-9_]", "_", tag.lower())
    if clean == tag and "__" not in tag and tag:
        return _TAG + tag
    digest = hashlib.sha256(tag.encode()).hexdigest()[:8]
    return f"{_TAG}{clean}__{digest}"


def _literal(kind: str, value: Any) -> Any:
    """The number durable compares for a literal of a fact of ``kind``."""
    if kind == "bool":
        return 1 if value else 0
    if isinstance(value, bool):
        raise EngineError(f"a {kind} fact cannot be compared with {value!r}")
    if isinstance(value, int):
        if abs(value) >= _INT_BOUND:
            raise EngineError(f"the literal {value} is too large for the rule engine (limit 2**53)")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise EngineError(f"the literal {value} is not a finite number")
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise EngineError(f"the time {value.isoformat()} has no time zone")
        return value.timestamp()
    raise EngineError(f"cannot compile the literal {value!r} for a {kind} fact")


# NNF nodes: ("and"|"or", [children]) or ("cmp", Comparison, negated) or ("const", bool)
_Node = tuple


def _nnf(cond: Condition, negate: bool = False) -> _Node:
    """Push ``not`` down to the comparisons (De Morgan); fold constants and flatten."""
    if isinstance(cond, Comparison):
        return ("cmp", cond, negate)
    if isinstance(cond, Not):
        return _nnf(cond.item, not negate)
    if isinstance(cond, (AllOf, AnyOf)):
        conj = isinstance(cond, AllOf) != negate  # not(all) = any(not), not(any) = all(not)
        kind = "and" if conj else "or"
        absorbing = not conj  # False absorbs an "and", True absorbs an "or"
        children: list[_Node] = []
        for item in cond.items:
            child = _nnf(item, negate)
            if child[0] == "const":
                if child[1] == absorbing:
                    return child
                continue  # the neutral element
            if child[0] == kind:
                children.extend(child[1])
            else:
                children.append(child)
        if not children:
            return ("const", conj)  # all() is true, any() is false
        if len(children) == 1:
            return children[0]
        return (kind, children)
    raise EngineError(f"unknown condition {cond!r}")


def _leaf_json(cmp: Comparison, negate: bool) -> Any:
    spec = FACTS.get(cmp.fact)
    if spec is None:
        raise EngineError(f"unknown fact {cmp.fact!r}", {"fact": cmp.fact})
    if spec.kind == "tags":
        if cmp.op != "contains" or not isinstance(cmp.value, str):
            raise EngineError(f"{cmp.fact} only supports 'contains' with a tag, not {cmp.op} {cmp.value!r}",
                              {"fact": cmp.fact})
        test: Any = {tag_field(cmp.value): 0 if negate else 1}
    else:
        if cmp.op not in spec.ops:
            raise EngineError(f"{cmp.fact} ({spec.kind}) does not support '{cmp.op}'", {"fact": cmp.fact})
        op = _NEGATED[cmp.op] if negate else cmp.op
        lit = _literal(spec.kind, cmp.value)
        test = {cmp.fact: lit} if op == "eq" else {_DURABLE_OP[op]: {cmp.fact: lit}}
    if not spec.nullable:
        return test
    # absent facts make every comparison false: guard it, and the negation is "absent or not"
    if negate:
        return {"$or": [{_HAS + cmp.fact: 0}, test]}
    return {"$and": [{_HAS + cmp.fact: 1}, test]}


def _to_json(node: _Node) -> Any:
    """The durable expression of an NNF node (no constants left at this point)."""
    if node[0] == "cmp":
        return _leaf_json(node[1], node[2])
    key = "$and" if node[0] == "and" else "$or"
    items: list[Any] = []
    seen: set[str] = set()
    for child in node[1]:
        expr = _to_json(child)
        # flatten a guard's $and into a parent $and (and $or into $or), drop exact duplicates
        parts = expr[key] if isinstance(expr, dict) and list(expr) == [key] else [expr]
        for part in parts:
            text = json.dumps(part, sort_keys=True)
            if text not in seen:
                seen.add(text)
                items.append(part)
    return items[0] if len(items) == 1 else {key: items}


def _count_tests(expr: Any, counts: dict[str, int]) -> None:
    (key, value), = expr.items()
    if key in ("$and", "$or"):
        for item in value:
            _count_tests(item, counts)
    elif key.startswith("$"):
        (field, _), = value.items()
        counts[field] = counts.get(field, 0) + 1
    else:
        counts[key] = counts.get(key, 0) + 1


@dataclass(frozen=True)
class _Plan:
    """Everything pure about a compiled programme: rules, fields, how to post facts."""

    rules: dict[str, Any]  # rule name -> durable expression of its "m"
    rule_conditions: dict[str, str]  # rule name -> condition id
    always: frozenset[str]  # conditions that hold without asking durable
    never: frozenset[str]  # conditions folded to false
    conditions: tuple[tuple[str, Condition | None], ...]  # every condition id with its `when`
    numeric: tuple[tuple[str, str, bool, dict[float, Any]], ...]  # fact, kind, nullable, literals
    tags: tuple[tuple[str, str], ...]  # field, tag
    counts: dict[str, int]  # durable tests per posted field
    names: tuple[str, ...]  # posted fields in the order of ``_values`` (ok__ and sid aside)
    template: str  # the fact's JSON with a %s per value, then the sid


def _conditions(programme: Programme) -> tuple[tuple[str, Condition | None], ...]:
    return (
        *((condition_id("stage", s.id), s.when) for s in programme.stages),
        *((condition_id("subgroup", g.id), g.when) for g in programme.subgroups),
        *((condition_id("reward", r.id), r.when) for r in programme.rewards),
    )


def _plan(programme: Programme) -> _Plan:
    conditions = _conditions(programme)
    rules: dict[str, Any] = {}
    rule_conditions: dict[str, str] = {}
    always: set[str] = set()
    never: set[str] = set()
    literals: dict[str, dict[float, Any]] = {}
    tags: dict[str, str] = {}
    for cid, when in conditions:
        try:
            for cmp in comparisons(when):
                spec = FACTS.get(cmp.fact)
                if spec is None:
                    raise EngineError(f"{cid}: unknown fact {cmp.fact!r}", {"fact": cmp.fact})
                if spec.kind == "tags":
                    if isinstance(cmp.value, str):
                        tags.setdefault(tag_field(cmp.value), cmp.value)
                else:
                    try:
                        image = _literal(spec.kind, cmp.value)
                    except EngineError as error:
                        raise EngineError(error.message, {"fact": cmp.fact}) from error
                    literals.setdefault(cmp.fact, {}).setdefault(image, cmp.value)
            if when is None:
                always.add(cid)
                continue
            node = _nnf(when)
            if node[0] == "const":
                (always if node[1] else never).add(cid)
                continue
            name = f"r{len(rules)}"
            rules[name] = _to_json(node)
            rule_conditions[name] = cid
        except EngineError as error:
            # the same message, plus where: check_programme reports it as data
            raise EngineError(error.message, {**error.errors, "condition": cid}) from error
    counts: dict[str, int] = {}
    for expr in rules.values():
        _count_tests(expr, counts)
    if rules:
        counts[OK_FIELD] = 1
    numeric = tuple(
        (fact, FACTS[fact].kind, FACTS[fact].nullable, lits)
        for fact, lits in sorted(literals.items())
    )
    names: list[str] = []
    for fact, _, nullable, _ in numeric:
        names += [fact, _HAS + fact] if nullable else [fact]
    sorted_tags = tuple(sorted(tags.items()))
    names += [field for field, _ in sorted_tags]
    parts = [f'"{name}":%s' for name in names]
    if rules:
        parts.append(f'"{OK_FIELD}":1')
    template = "{" + ",".join([*parts, '"sid":"%s"']) + "}"
    return _Plan(rules, rule_conditions, frozenset(always), frozenset(never), conditions,
                 numeric, sorted_tags, counts, tuple(names), template)


def tests_per_fact(programme: Programme) -> dict[str, int]:
    """Durable tests per posted field after compilation (``has__`` flags and ``ok__`` included).

    Pure Python: the rule-file validator uses it to refuse programmes over ``LIMITS``.
    """
    return dict(_plan(programme).counts)


def field_fact(field: str) -> str | None:
    """The fact behind a posted field (``has__<fact>`` and ``tag__<tag>`` are derived from one);
    ``None`` for the catch-all's ``ok__``."""
    if field.startswith(_HAS):
        return field[len(_HAS):]
    if field.startswith(_TAG):
        return "tags"
    return field if field in FACTS else None


def check_programme(programme: Programme) -> list[ProgrammeProblem]:
    """Why the engine would refuse ``programme`` (empty when it compiles).

    Each problem is data (see :class:`ProgrammeProblem`) so the rule-file validator can point at
    the fact or condition concerned without reading the messages.
    """
    try:
        plan = _plan(programme)
    except EngineError as error:
        return [ProgrammeProblem("unsupported", error.message, condition=error.errors.get("condition"),
                                 fact=error.errors.get("fact"))]
    limit = LIMITS["tests_per_field"]
    problems = [
        ProgrammeProblem("tests_per_field",
                         f"field '{field}' needs {n} engine tests, more than the limit of {limit}",
                         fact=field_fact(field), field=field, count=n, limit=limit)
        for field, n in sorted(plan.counts.items()) if n > limit
    ]
    limit = LIMITS["conditions"]
    if len(plan.conditions) > limit:
        problems.append(ProgrammeProblem(
            "conditions",
            f"the programme has {len(plan.conditions)} conditions, more than the limit of {limit}",
            condition=plan.conditions[limit][0], count=len(plan.conditions), limit=limit,
        ))
    limit = LIMITS["fields"]
    if len(plan.counts) > limit:
        problems.append(ProgrammeProblem(
            "fields", f"the programme posts {len(plan.counts)} fields, more than the limit of {limit}",
            count=len(plan.counts), limit=limit,
        ))
    for fact, _, _, lits in plan.numeric:
        images = sorted(lits)
        for low, high in itertools.pairwise(images):
            if math.nextafter(low, math.inf) >= high:
                problems.append(ProgrammeProblem(
                    "literals_too_close",
                    f"the literals {lits[low]} and {lits[high]} of '{fact}' are too close to compare exactly",
                    fact=fact, values=(lits[low], lits[high]),
                ))
    by_image: dict[tuple[str, float], list[Any]] = {}
    for _, when in plan.conditions:
        for cmp in comparisons(when):
            kind = FACTS[cmp.fact].kind
            if kind not in ("tags", "bool"):
                values = by_image.setdefault((cmp.fact, _literal(kind, cmp.value)), [])
                if all(v != cmp.value for v in values):
                    values.append(cmp.value)
    for (fact, _), values in sorted(by_image.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if len(values) > 1:
            problems.append(ProgrammeProblem(
                "literals_equal",
                f"the literals {' and '.join(str(v) for v in values)} of '{fact}' are the same number "
                "to the rule engine",
                fact=fact, values=tuple(values),
            ))
    return problems


_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _dumps(data: Any) -> str:
    text = _ENCODE(data)
    if "e-" in text or "e+" in text:  # field names are [a-z0-9_]: only numbers match
        text = _BARE_EXPONENT.sub(r"\1.0", text)
    return text
