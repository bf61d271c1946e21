"""What decides a shop's customers at each instant: programme versions and the fold's semantics on
a timeline, and the shop-wide inputs every customer's fold reads (admin turns, exclusions).

Pure data, no database: :mod:`.programmes` builds a :class:`Timeline` from the shop's
activations, :mod:`.processing` reads the shop events into :class:`ShopInputs`, and
:func:`loyalty_ladder.ladder.fold` interprets both.

**Versions.**  A timeline is a list of :class:`Segment` in time order: the first one holds from
the beginning (``start`` None), each later one from its activation instant ``start`` until the
next.  The version of the segment an instant falls in decides the wake-up at that instant, so an
activation is never retroactive: what was decided before it stays decided by the version of its
time, and only the customer's own history (a refund inside the window, a late event) changes it.

**Semantics.**  A release that changes what the fold means (a fact redefined, a reward type's
behaviour changed) records a new :data:`CURRENT_SEMANTICS` from the instant the database is
upgraded to it (``semantics_versions``); the upgrade instant is a wake-up for every customer
on the ladder, and at each wake-up the fold knows the semantics in force
(:meth:`Timeline.semantics_at`), where a later release branches between the old and the new
behaviour — so a code upgrade is no more retroactive than an activation.

* 0 — the fold of releases up to 0.1, before versions were kept on a timeline;
* 1 — versions on a timeline, manual adjustments and exclusions as ledger inputs.  Semantics 1
  folds a history with one version exactly as semantics 0 did (``tests/test_upgrade.py`` re-folds
  a database written by the previous release and finds no delivered award reversed or re-valued).
* 2 — a customer holds the privileges of the stage they are in: a stage privilege (a stage tag,
  VIP service, payment terms granted on reaching a stage) ends when the customer leaves that
  stage.  Before, privileges of earlier stages were kept (every advocate still carried
  ``ladder-potential``); from the upgrade instant on — itself a wake-up — those of stages the
  customer has left end, taken back in the shop, never reversed.
* 3 — points per currency unit earn on the part of an order that is the shop's sale: the net
  spend without the tax it includes, gift cards bought with it and the part paid with points.
  Orders granted points before the upgrade instant keep the points of their whole net.
* 4 — a privilege granted on reaching a stage is one *holding* from its start to its end, keyed
  ``…/<reward>/privilege/<stage>/<turn>`` (a later start after it ended: ``…/privilege/<instant>``):
  a new turn in the stage, or a next stage that grants it too, holds it on instead of granting a
  second award; VIP service and payment terms are ``suspended`` while the customer lapsed and
  restored at their next turn; a grant whose validity (``expires_at``) passed before it was used
  — a discount code no order named, or a grant with an ``expires_at`` and no code that was never
  delivered — is ``expired``; points expiry reminders start.  Holdings that
  started before the upgrade instant keep their keys.
"""
from __future__ import annotations

import bisect
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .clock import as_utc
from .programme import Programme

#: the fold semantics of this release (see the module docstring)
CURRENT_SEMANTICS = 4
#: what each semantics version means, in words (shown by ``ladder rules list``)
SEMANTICS = {
    0: "the fold of releases up to 0.1 (one programme version at a time)",
    1: "programme versions on a timeline; manual adjustments and exclusions as ledger inputs",
    2: "a stage privilege (tag, VIP service, payment terms) ends when the customer leaves its stage",
    3: "points per currency unit earn on the net spend without tax, gift cards and the part paid with points",
    4: "a stage privilege is one holding (…/privilege/<holding>); VIP and terms suspended while lapsed; "
       "grants expire unused",
}



@dataclass(frozen=True)
class Segment:
    """One version's stretch of the timeline: from ``start`` (None: the beginning) to the next
    segment's start.  ``evaluator`` is the version's compiled programme (an ``Evaluator``);
    ``stage_map`` maps the ids of stages the previous version had and this one dropped to the
    stage a customer in them is moved to at ``start``."""

    start: datetime | None
    programme: Programme
    evaluator: Any
    stage_map: Mapping[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.programme.version


@dataclass(frozen=True)
class Timeline:
    """A shop's versions (and semantics) over time; see the module docstring."""

    segments: tuple[Segment, ...]
    #: ``(from, semantics version)`` in time order, the first from the beginning (None)
    semantics: tuple[tuple[datetime | None, int], ...] = ((None, CURRENT_SEMANTICS),)
    #: the identity of the database rows it was read from (``programmes.activations_key``); empty
    #: for a timeline that was not read from a database
    key: tuple[Any, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a timeline needs at least one programme version")
        if self.segments[0].start is not None:
            # nothing decides before the first activation but the first version itself
            first = self.segments[0]
            object.__setattr__(self, "segments", (Segment(None, first.programme, first.evaluator, first.stage_map),
                                                  *self.segments[1:]))
        starts = [s.start for s in self.segments[1:]]
        if any(t is None for t in starts) or starts != sorted(starts):  # type: ignore[type-var]
            raise ValueError("timeline segments must be in time order, only the first from the beginning")

    @classmethod
    def single(cls, programme: Programme, evaluator: Any) -> Timeline:
        """One version from the beginning (simulate, tests, a shop with one activation)."""
        return cls((Segment(None, programme, evaluator),))

    @property
    def starts(self) -> list[datetime]:
        """The activation instants after the first version (each a wake-up on the ladder)."""
        return [as_utc(s.start) for s in self.segments[1:] if s.start is not None]

    def index_at(self, at: datetime) -> int:
        """The index of the segment deciding the instant ``at`` (an activation decides its own instant)."""
        return bisect.bisect_right(self.starts, as_utc(at))

    def at(self, at: datetime) -> Segment:
        """The segment deciding the instant ``at``."""
        return self.segments[self.index_at(at)]

    def next_start(self, after: datetime) -> datetime | None:
        """The first activation instant strictly after ``after``."""
        starts = self.starts
        i = bisect.bisect_right(starts, as_utc(after))
        return starts[i] if i < len(starts) else None

    def next_semantics_start(self, after: datetime) -> datetime | None:
        """The first instant strictly after ``after`` from which another fold semantics holds
        (an upgrade: a wake-up for every customer on the ladder, like an activation)."""
        starts = sorted(as_utc(t) for t, _ in self.semantics if t is not None and as_utc(t) > as_utc(after))
        return starts[0] if starts else None

    def semantics_at(self, at: datetime) -> int:
        """The fold semantics in force at ``at``."""
        current = self.semantics[0][1]
        for start, version in self.semantics:
            if start is None or as_utc(start) <= as_utc(at):
                current = version
        return current

    @property
    def last(self) -> Segment:
        return self.segments[-1]


@dataclass(frozen=True)
class Exclusions:
    """Customers never evaluated: any of ``tags`` among theirs, or an e-mail matching one of
    ``emails`` (shell-style patterns, case-insensitive: ``*@myshop.example``)."""

    tags: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()

    def match(self, tags: Iterable[str], email: str | None) -> str | None:
        """Why a customer with these tags and e-mail is excluded (in words), or None."""
        hit = sorted(set(self.tags) & set(tags))
        if hit:
            return f"tag {hit[0]}"
        if email:
            low = email.lower()
            for pattern in self.emails:
                if fnmatch.fnmatchcase(low, pattern.lower()):
                    return f"e-mail matches {pattern}"
        return None

    def __bool__(self) -> bool:
        return bool(self.tags or self.emails)


@dataclass(frozen=True)
class ShopInputs:
    """The shop-wide inputs of every customer's fold (the ``shop_events`` table): admin turns
    (instants) and the exclusion lists, each in force from its instant until the next."""

    turns: tuple[datetime, ...] = ()
    exclusions: tuple[tuple[datetime, Exclusions], ...] = ()

    def exclusions_at(self, at: datetime) -> Exclusions:
        current = Exclusions()
        for start, rules in self.exclusions:
            if as_utc(start) <= as_utc(at):
                current = rules
        return current

    @classmethod
    def of(cls, turns: Iterable[datetime] = (),
           exclusions: Sequence[tuple[datetime, Exclusions]] = ()) -> ShopInputs:
        return cls(tuple(sorted({as_utc(t) for t in turns})),
                   tuple(sorted(((as_utc(t), e) for t, e in exclusions), key=lambda p: p[0])))
