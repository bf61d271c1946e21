"""durable_rules behind one interface: compile a programme, say which conditions hold.

This is the only module that imports durable_rules.  A programme's stage, subgroup and
reward conditions become one ruleset (``ladder_<version>``) with one rule per condition, plus
a catch-all; ``CompiledProgramme.evaluate`` asserts one customer's facts in a fresh session and
answers with *every* condition that holds (the ladder, not the engine, decides movement).

What we found, beyond /work/shared/DURABLE_RULES.md (durable-rules 2.0.28 on Python 3.11,
reproduced with probes; the reasons read in its C source, ``src/rules``):

* ``assert_fact`` does fire every matching rule in one call.  The fact runs through the alpha
  network once and each matching rule leaves an action frame in the session;
  ``Ruleset.do_actions`` runs them one after the other (``start_action_for_state``, then
  ``complete_and_start_action`` until it returns nothing).  No second call or ruleset is needed.
  A rule fires once per matching branch of an ``$or`` (``any`` with two true alternatives
  fires twice): harmless, we collect a set.
* Reading that action queue ourselves is what makes the engine fast.  The standard path runs,
  per matching rule, a Python action (``Closure``, ``Promise``) and a state round trip
  (``json.dumps`` + ``update_state`` + ``json.loads``): about 17 µs per rule, 14,000 evals/s on
  the default ladder's stages (4 matches per customer).  Each queue message already names its
  rule (``{"r3":{"m":{…}}}``), so ``Engine._fire`` calls the same two C functions and reads the
  names: no Python actions at all, about 3× faster.  A flat fact conversion and the fact's JSON
  from a per-programme template instead of ``json.dumps`` gain another ~50 % (bench/engine.py,
  BENCHMARKS.md).
* The session state is itself a fact.  ``update_state`` (run after every standard action)
  re-asserts the state message (``sid``, ``id``, ``$s`` and whatever actions wrote into ``c.s``)
  through the same alpha network, so a rule that matches it fires again, writes the state again,
  and so on for ever (100 % CPU, GIL held).  That is why ``$nex`` hangs: the state message lacks
  the field, so "not exists" matches it.  A rule on ``sid``, or on a field an action writes into
  ``c.s``, hangs the same way (both reproduced).  So rules test only fact fields, never ``$ex`` /
  ``$nex``; and we run no actions.
* ``delete_state`` after a ``MessageNotHandledException`` (``post`` or ``assert_fact`` that
  matched nothing) crashes the process (SIGSEGV or "double free"): ``createStateNode`` never
  initialises the session's action context and ``deleteStateNode`` frees it; only starting an
  action sets it.  Not deleting leaks a session per call (``MemoryError`` at the 1,025th).  So
  every ruleset has a catch-all rule ``ok`` on a constant field ``ok__ = 1``: every fact is
  handled, an action starts, and the session can be deleted.  Its message in the queue also
  proves the queue was read to the end.
* durable's JSON reader accepts an exponent only after a fraction: ``1e-05`` and ``1e+16``
  (Python's ``repr`` of such floats) are "error 204", in a fact and in a ruleset.  We write
  ``1.0e-05``.  Doubles are read with ``atof`` and integers with ``atoll``, so a Python float or
  int arrives bit-exact, and int/double comparisons are mixed correctly (probed on boundaries).
* Decimal and time facts are posted as doubles.  Two different decimals can round to the same
  double (``0.1`` and ``0.1000000000000000000001``); where a fact's double equals a literal's
  double but the exact values differ, the fact is nudged one ulp in the right direction, so
  every comparison has the exact Decimal/datetime outcome.  Literals of one fact that are equal
  or adjacent as doubles are refused (:func:`check_programme`).

Thread-safety: the C extension is neither thread-safe nor releasing the GIL, so one lock guards
every durable call (compile, evaluate, drop) and the stock ``Host``'s timer threads are disabled.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import operator
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import durable_rules_engine
from durable.engine import Host, Ruleset

from .errors import EngineError
from .factspec import FACTS
from .programme import AllOf, AnyOf, Comparison, Condition, Not, Programme, condition_id

#: limits checked by the rule-file validator and again by ``compile``: durable freezes building a
#: ruleset with ~512 tests on one field and rejects facts with 254+ properties.
LIMITS = {"tests_per_field": 200, "conditions": 200, "fields": 250}

OK_FIELD = "ok__"  # the constant field of the catch-all rule (see the module docstring)
OK_RULE = "ok"  # the catch-all rule's name
_HAS = "has__"
_TAG = "tag__"
# Integers are exact in a double up to 2**53; facts beyond are clamped, literals beyond refused.
_INT_BOUND = 2**53

_INT_KINDS = frozenset({"count", "days"})
_DECIMAL_KINDS = frozenset({"money", "ratio", "number"})
_NEGATED = {"eq": "ne", "ne": "eq", "lt": "gte", "gte": "lt", "lte": "gt", "gt": "lte"}
_DURABLE_OP = {"ne": "$neq", "lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte"}
_PY_OP: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "lte": operator.le, "gt": operator.gt, "gte": operator.ge,
}
# durable's number reader wants a fraction before an exponent: 1e-05 -> 1.0e-05
_BARE_EXPONENT = re.compile(r"(?<=[:\[,\s])(-?\d+)(?=e[+-])")


# ================================================================= results
@dataclass(frozen=True)
class TraceEntry:
    """One comparison of one condition: ``current op value`` gave ``result``."""

    condition: str
    fact: str
    op: str
    value: Any
    current: Any
    result: bool


@dataclass(frozen=True)
class Evaluation:
    holds: frozenset[str]
    trace: tuple[TraceEntry, ...] = ()


#: why the engine refuses a programme: over one of ``LIMITS`` (the first three), two literals
#: of one fact it cannot tell apart, or a comparison it cannot compile at all
ProblemKind = Literal["tests_per_field", "conditions", "fields", "literals_too_close",
                      "literals_equal", "unsupported"]
LIMIT_KINDS: frozenset[str] = frozenset({"tests_per_field", "conditions", "fields"})


@dataclass(frozen=True)
class ProgrammeProblem:
    """One reason :func:`check_programme` gives, as data.

    The rule-file validator words and positions each problem itself from these fields (which
    fact, which condition, how many against which limit); ``message`` is the engine's own
    sentence, used when ``compile`` refuses a programme.  Fields that do not apply are ``None``.
    """

    kind: ProblemKind
    message: str
    condition: str | None = None  # the condition id concerned ("stage:regular"), when one is
    fact: str | None = None  # the fact concerned, when one is
    field: str | None = None  # the posted engine field (tests_per_field)
    count: int | None = None  # tests on the field, conditions or fields in the programme
    limit: int | None = None  # the ``LIMITS`` value exceeded
    values: tuple[Any, ...] = ()  # the literals concerned (literals_*), as written

    def __str__(self) -> str:
        return self.message


# ================================================================= compilation (pure Python)
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


def _comparisons(cond: Condition | None) -> Iterable[Comparison]:
    if cond is None:
        return
    if isinstance(cond, Comparison):
        yield cond
    elif isinstance(cond, Not):
        yield from _comparisons(cond.item)
    else:
        for item in cond.items:
            yield from _comparisons(item)


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
            for cmp in _comparisons(when):
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
        for cmp in _comparisons(when):
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


# ================================================================= the trace (pure Python)
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


# ================================================================= durable_rules
class _QuietHost(Host):
    """A Host without the timer threads (they crash the C extension; a ladder needs no timers)."""

    def _run(self) -> None:
        return None


class _LadderRuleset(Ruleset):
    """A durable ``Ruleset`` created from our own JSON text (durable's reader needs ``1.0e-05``).

    It has no Python actions: ``Engine._fire`` reads the matching rules off the action queue.
    """

    def __init__(self, name: str, host: Host, definition: dict[str, Any]):
        # Ruleset.__init__ would json.dumps the definition itself and wrap the actions.
        self._actions = {}
        self._name = name
        self._host = host
        self._definition = definition
        self._handle = durable_rules_engine.create_ruleset(name, _dumps(definition))


class CompiledProgramme:
    """A programme registered in durable_rules; ``evaluate`` is safe from any thread."""

    def __init__(self, engine: Engine, programme: Programme, plan: _Plan,
                 ruleset: _LadderRuleset | None):
        self.version = programme.version
        self.programme = programme
        self.condition_ids = tuple(cid for cid, _ in plan.conditions)
        self.fields = tuple(plan.counts)
        self._engine = engine
        self._plan = plan
        self._ruleset = ruleset
        self.dropped = False

    def __repr__(self) -> str:
        return f"<CompiledProgramme {self.version} conditions={len(self.condition_ids)}>"

    def durable_rules(self) -> dict[str, tuple[str, Any]]:
        """Rule name -> (the condition id it answers, its ``m`` expression), as registered.

        The catch-all rule is included as ``"ok": ("ok", {"ok__": 1})`` (for benchmarks and tests).
        """
        if not self._plan.rules:
            return {}
        out = {rule: (self._plan.rule_conditions[rule], copy.deepcopy(expr)) for rule, expr in self._plan.rules.items()}
        out[OK_RULE] = (OK_RULE, {OK_FIELD: 1})
        return out

    def post_fields(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        """The exact fields posted to durable_rules for ``facts`` (without the session id)."""
        return _post_fields(self._plan, facts)

    def evaluate(self, facts: Mapping[str, Any], trace: bool = False) -> Evaluation:
        """Which conditions hold for one customer's facts; with ``trace``, every comparison too."""
        values = _values(self._plan, facts)
        if self._ruleset is None:
            if self.dropped:
                raise EngineError(f"programme {self.version} was dropped")
            holds = self._plan.always
        else:
            holds = self._plan.always | self._engine._fire(self, values)
        if not trace:
            return Evaluation(holds)
        entries: list[TraceEntry] = []
        walked = set()
        for cid, when in self._plan.conditions:
            if when is None or _walk(when, facts, cid, entries):
                walked.add(cid)
        if walked != holds:
            raise EngineError(
                f"the trace disagrees with durable_rules for programme {self.version}",
                {"engine_only": sorted(holds - walked), "trace_only": sorted(walked - holds)},
            )
        return Evaluation(holds, tuple(entries))


def _same_meaning(a: Programme, b: Programme) -> bool:
    def by_id(p: Programme) -> list:
        return sorted(p.rewards, key=lambda r: r.id)

    return (a.settings, a.stages, a.subgroups) == (b.settings, b.stages, b.subgroups) and by_id(a) == by_id(b)


class Engine:
    """One quiet durable ``Host`` and one lock; programmes compiled once per version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._host = _QuietHost()
        self._compiled: dict[str, CompiledProgramme] = {}
        self._sids = itertools.count(1)

    def compile(self, programme: Programme) -> CompiledProgramme:
        """Register ``programme`` as ruleset ``ladder_<version>``; the same version is compiled once."""
        with self._lock:
            cached = self._compiled.get(programme.version)
            if cached is not None:
                # The same meaning read from another place (another `source`, rewards in
                # another order) is the same programme; anything else is a version clash.
                if not _same_meaning(cached.programme, programme):
                    raise EngineError(f"another programme with version {programme.version} is already "
                                      "compiled (is its canonical text set?)")
                return cached
            problems = [problem.message for problem in check_programme(programme)]
            if problems:
                raise EngineError("the rule engine cannot compile this programme: " + "; ".join(problems),
                                  {"problems": problems})
            plan = _plan(programme)
            ruleset = None
            if plan.rules:
                name = f"ladder_{programme.version}"
                definition = {rule: {"all": [{"m": expr}]} for rule, expr in plan.rules.items()}
                definition[OK_RULE] = {"all": [{"m": {OK_FIELD: 1}}]}
                try:
                    ruleset = _LadderRuleset(name, self._host, definition)
                except durable_rules_engine.error as error:
                    raise EngineError(f"durable_rules refused ruleset {name}: {error}") from error
                self._host._ruleset_directory[name] = ruleset
                self._host._ruleset_list.append(ruleset)
            compiled = CompiledProgramme(self, programme, plan, ruleset)
            self._compiled[programme.version] = compiled
            return compiled

    def drop(self, compiled: CompiledProgramme) -> None:
        """Unregister a compiled programme and free its ruleset; evaluating it afterwards fails."""
        with self._lock:
            if compiled.dropped:
                return
            compiled.dropped = True
            if self._compiled.get(compiled.version) is compiled:
                del self._compiled[compiled.version]
            ruleset = compiled._ruleset
            if ruleset is not None:
                self._host._ruleset_directory.pop(ruleset._name, None)
                if ruleset in self._host._ruleset_list:
                    self._host._ruleset_list.remove(ruleset)
                durable_rules_engine.delete_ruleset(ruleset._handle)

    def _fire(self, compiled: CompiledProgramme, values: list[Any]) -> frozenset[str]:
        """Assert one fact in a fresh session, collect every matching rule, delete the session."""
        sid = str(next(self._sids))
        text = _fact_text(compiled._plan, values, sid)
        ruleset = compiled._ruleset
        assert ruleset is not None
        conditions = compiled._plan.rule_conditions
        fired: set[str] = set()
        handled = False
        with self._lock:
            if compiled.dropped:
                raise EngineError(f"programme {compiled.version} was dropped")
            handle = ruleset._handle
            try:
                code, state = durable_rules_engine.assert_fact(handle, text)[:2]
            except durable_rules_engine.error as error:
                raise EngineError(f"durable_rules refused the facts: {error}") from error
            if code != 0:
                # 1 = not handled, 2 = already seen: impossible with the catch-all rule and a fresh
                # sid.  The session is left alive on purpose: deleting it now would crash.
                raise EngineError(f"durable_rules did not handle the facts (result {code})")
            try:
                # What Ruleset.do_actions does, minus the Python action and the state round trip:
                # each message names one matching rule ('{"r3":{"m":{...}}}').
                started = durable_rules_engine.start_action_for_state(handle, state)
                message = started[1] if started else None
                while message:
                    rule = message[2:message.find('"', 2)]
                    if rule not in conditions and rule != OK_RULE:
                        rule = next(iter(json.loads(message)), "")
                    if rule == OK_RULE:
                        handled = True
                    elif rule in conditions:
                        fired.add(conditions[rule])
                    else:
                        raise EngineError(f"durable_rules fired an unknown rule: {message[:80]}")
                    message = durable_rules_engine.complete_and_start_action(handle, state)
            except durable_rules_engine.error as error:
                raise EngineError(f"durable_rules failed running the actions: {error}") from error
            finally:
                durable_rules_engine.delete_state(handle, sid)
        if not handled:
            # the catch-all rule always matches: without it, the result cannot be trusted
            raise EngineError("durable_rules returned an incomplete result (the catch-all rule did not fire)")
        return frozenset(fired)


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The process-wide engine (created on first use)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine
