"""What the engine answers, as data: an evaluation with its trace, and why a programme is refused.

Apart from the compiler and the durable_rules host so that callers (the ladder, the rule-file
validator, the views) can name these types without either, and so that both can return them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


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
