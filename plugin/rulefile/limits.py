"""Refuse programmes the rule engine cannot compile safely, at the rule-file position concerned.

durable_rules freezes (GIL held, 100 % CPU) building a ruleset with about 512 tests on one field
and rejects facts with 254+ properties: ``engine.LIMITS`` keeps well below.  Beyond the limits,
``engine.check_programme`` finds what else it would refuse (two literals of one fact that are the
same double), so that a programme that validates also compiles.  Its problems are data
(:class:`~loyalty_ladder.engine.ProgrammeProblem`); here they get rule-file words and positions.
"""
from __future__ import annotations

from typing import Any

from loyalty_ladder import factspec
from loyalty_ladder.errors import RuleFileProblem
from loyalty_ladder.programme import Programme, condition_id

from .conditions import LOGIC_KEYS
from .positions import Item, Path_, Source

# what each list of a rule file holds, as a condition kind (see programme.condition_id)
_ITEM_KINDS = {"stages": "stage", "subgroups": "subgroup", "rewards": "reward"}


def check_limits(programme: Programme, items: dict[str, list[Item]],
                 sources: list[Source]) -> list[RuleFileProblem]:
    """The engine's problems with ``programme`` (read from ``items`` of ``sources``), positioned."""
    # Imported here: the engine (and durable_rules) is only needed once the file is valid.
    from loyalty_ladder import engine

    first_use = _comparison_positions(items)
    by_condition = {
        condition_id(_ITEM_KINDS[kind], item.id): item
        for kind, kind_items in items.items() for item in kind_items if item.id is not None
    }
    fallback = sources[0]
    problems: list[RuleFileProblem] = []
    for problem in engine.check_programme(programme):
        if problem.kind == "tests_per_field":
            fact = problem.fact
            src, path = first_use.get(fact, (fallback, ())) if fact else (fallback, ())
            subject = f"fact '{fact}'" if fact in factspec.FACTS else f"engine field '{problem.field}'"
            problems.append(src.problem_at(path, (
                f"{subject} needs {problem.count} engine tests (field '{problem.field}'), more than the "
                f"limit of {problem.limit}: the rule engine freezes compiling ~512 tests on one field; "
                "use fewer distinct thresholds on this fact"
            )))
        elif problem.kind == "conditions":
            over = by_condition.get(problem.condition or "")
            src, path = (over.source, over.path) if over is not None else (fallback, ())
            problems.append(src.problem_at(path, (
                f"the programme has {problem.count} stages, subgroups and rewards, more than the engine "
                f"limit of {problem.limit} conditions; split it into several programmes"
            )))
        elif problem.kind == "fields":
            problems.append(fallback.problem_at((), (
                f"the programme posts {problem.count} fields to the engine, more than the limit of "
                f"{problem.limit} (durable_rules rejects facts with 254 or more properties); "
                "use fewer distinct tags in 'contains'"
            )))
        else:
            # Whatever else the engine would refuse, at the first comparison of the fact concerned.
            src, path = first_use.get(problem.fact, (fallback, ())) if problem.fact else (fallback, ())
            problems.append(src.problem_at(
                path, f"the rule engine cannot compile this programme: {problem.message}"
            ))
    return problems


def _comparison_positions(items: dict[str, list[Item]]) -> dict[str, tuple[Source, Path_]]:
    """The first comparison naming each fact, for pointing at it."""
    out: dict[str, tuple[Source, Path_]] = {}

    def walk(src: Source, raw: Any, path: Path_) -> None:
        if isinstance(raw, dict):
            fact = raw.get("fact")
            if isinstance(fact, str):
                out.setdefault(fact, (src, (*path, "fact")))
            for key in LOGIC_KEYS:
                if key in raw:
                    walk(src, raw[key], (*path, key))
        elif isinstance(raw, list):
            for i, sub in enumerate(raw):
                walk(src, sub, (*path, i))

    for kind in ("stages", "subgroups", "rewards"):
        for item in items[kind]:
            if isinstance(item.raw, dict) and "when" in item.raw:
                walk(item.source, item.raw["when"], (*item.path, "when"))
    return out
