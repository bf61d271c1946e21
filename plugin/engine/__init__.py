"""The rule engine: a programme compiled for durable_rules, asked which conditions hold.

A package so that each concept has its module and only one of them touches durable_rules:

* ``results`` – what the engine answers (``Evaluation``, ``TraceEntry``) and why it refuses a
  programme (``ProgrammeProblem``);
* ``compiler`` – pure Python: a programme into durable's rule JSON, the ``LIMITS`` and
  ``check_programme`` the rule-file validator shares with ``compile``;
* ``posting`` – one customer's facts into the posted fields and the fact's JSON text;
* ``trace`` – every comparison evaluated in pure Python, to explain and cross-check an answer;
* ``host`` – the only importer of durable_rules: ``Engine``, ``CompiledProgramme``,
  ``get_engine``, and the durable_rules hazards they work around (its docstring).

Everything public that ``loyalty_ladder.engine`` offered as a single module is re-exported here.
"""
from __future__ import annotations

from .compiler import LIMITS, OK_FIELD, OK_RULE, check_programme, field_fact, tag_field, tests_per_fact
from .host import CompiledProgramme, Engine, get_engine
from .results import LIMIT_KINDS, Evaluation, ProblemKind, ProgrammeProblem, TraceEntry

__all__ = [
    "LIMITS", "LIMIT_KINDS", "OK_FIELD", "OK_RULE", "CompiledProgramme", "Engine", "Evaluation",
    "ProblemKind", "ProgrammeProblem", "TraceEntry", "check_programme", "field_fact", "get_engine",
    "tag_field", "tests_per_fact",
]
