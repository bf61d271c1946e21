"""durable_rules behind one interface: compile a programme, say which conditions hold.

This is the only module that imports durable_rules.  A programme's stage, subgroup and
reward conditions become one ruleset (``ladder_<version>``) with one rule per condition, plus
a catch-all; ``CompiledProgramme.evaluate`` asserts one customer's facts in a fresh session and
answers with *every* condition that holds (the ladder, not the engine, decides movement).

The pure-Python parts it builds on are its siblings: the rules come from ``compiler``, the posted
fact from ``posting``, the trace from ``trace``.

What we found, beyond what the durable_rules documentation says (durable-rules 2.0.28 on
Python 3.11, reproduced with probes; the reasons read in its C source, ``src/rules``):

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
import itertools
import json
import threading
from collections.abc import Mapping
from typing import Any

import durable_rules_engine
from durable.engine import Host, Ruleset

from ..errors import EngineError
from ..programme import Programme
from .compiler import OK_FIELD, OK_RULE, _dumps, _Plan, _plan, check_programme
from .posting import _fact_text, _post_fields, _values
from .results import Evaluation, TraceEntry
from .trace import _walk


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
