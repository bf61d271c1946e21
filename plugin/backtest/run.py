"""Running a backtest: the two timelines, the history streamed in chunks over worker processes,
the tallies merged into the report.

Memory stays flat: the history is read one customer at a time (:mod:`.sources`), at most
``2 × jobs`` chunks are in flight, and each chunk comes back as counts (:class:`.tally.Tally`).
With ``jobs`` above 1 the folds run in worker processes (spawned, each compiling the programmes
once), so both cores of a small machine are used; ``jobs=1`` folds in this process.
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from ..clock import iso
from ..errors import BadRequest, LadderError
from ..programme import Programme
from ..programmes import ActivationRefused, check_follows, check_stage_map
from ..timeline import CURRENT_SEMANTICS, Timeline
from .replay import Job, Replayer, TimelineSpec, run_chunk, start
from .report import Meta, document
from .sources import CHUNK, Customer, DatabaseHistory, FileHistory
from .tally import Tally

History = FileHistory | DatabaseHistory
#: called with (customers done, customers in all) as chunks come back
OnProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class Baseline:
    """What the candidate is compared with: a timeline (``segments``), and how to say so."""

    spec: TimelineSpec
    description: str


def recorded_baseline(timeline: Timeline, shop: str) -> Baseline:
    """The shop's recorded timeline of versions."""
    spec = TimelineSpec.of(timeline)
    parts = [spec.segments[0][1].version]
    parts += [f"{p.version} from {iso(start)}" for start, p, _map in spec.segments[1:] if start is not None]
    return Baseline(spec, f"the recorded timeline of shop '{shop}': {', '.join(parts)}")


#: the fold semantics of a timeline that was not read from a database
THIS_RELEASE: tuple[tuple[datetime | None, int], ...] = ((None, CURRENT_SEMANTICS),)


def directory_baseline(programme: Programme, where: str,
                       semantics: tuple[tuple[datetime | None, int], ...] = THIS_RELEASE, note: str = "") -> Baseline:
    """One programme throughout (``note``: why, when it was not asked for)."""
    text = f"{where}, version {programme.version}, throughout" + (f" ({note})" if note else "")
    return Baseline(TimelineSpec(((None, programme, ()),), semantics), text)


def candidate_spec(baseline: Baseline, candidate: Programme, start: datetime | None,
                   stage_map: Mapping[str, str]) -> TimelineSpec:
    """The candidate: ``candidate`` throughout (``start`` None), or the baseline until ``start``
    and ``candidate`` from then on — an activation at ``start``, with its stage map checked as
    ``ladder rules activate`` checks it."""
    spec = baseline.spec
    try:
        for _start, programme, _map in spec.segments:
            check_follows(programme, candidate)  # ActivationRefused, naming both currencies
        if start is not None:
            check_stage_map([s for s in spec.segments if s[0] is None or s[0] < start][-1][1], candidate,
                            stage_map)
    except ActivationRefused as exc:  # worded for an activation ("nothing was changed")
        raise BadRequest(exc.message.replace("; nothing was changed", ""), exc.errors) from None
    if start is None:
        if stage_map:
            raise BadRequest("--stage-map needs --from: a candidate throughout replaces no stage at any instant",
                             {"stage_map": ["only with --from"]})
        return TimelineSpec(((None, candidate, ()),), spec.semantics)
    before = tuple(s for s in spec.segments if s[0] is None or s[0] < start)
    return TimelineSpec((*before, (start, candidate, tuple(sorted(stage_map.items())))), spec.semantics)


def _chunks(customers: Iterator[Customer], size: int) -> Iterator[list[Customer]]:
    while True:
        chunk = list(islice(customers, size))
        if not chunk:
            return
        yield chunk


def replay(history: History, job: Job, jobs: int, on_progress: OnProgress | None = None,
           chunk: int = CHUNK) -> Tally:
    """Fold every customer of ``history`` under both timelines of ``job``; the merged tally."""
    total = history.scan.customers
    done = 0
    tally = Tally()
    report = on_progress or (lambda _d, _t: None)
    report(0, total)
    if jobs <= 1:
        replayer = Replayer(job)
        for part in _chunks(history.customers(), chunk):
            tally.merge(replayer.chunk(part))
            done += len(part)
            report(done, total)
        return tally
    try:
        return _in_workers(history, job, jobs, report, chunk, tally)
    except BrokenProcessPool:
        raise LadderError("a backtest worker process stopped before its work was done (killed, or out of "
                          "memory); nothing was reported — try again, or with --jobs 1") from None


def _in_workers(history: History, job: Job, jobs: int, report: OnProgress, chunk: int, tally: Tally) -> Tally:
    total = history.scan.customers
    done = 0
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=start, initargs=(job,)) as pool:
        pending: dict[Future[Tally], int] = {}
        try:
            for part in _chunks(history.customers(), chunk):
                if len(pending) >= 2 * jobs:
                    done += _collect(pending, tally)
                    report(done, total)
                pending[pool.submit(run_chunk, part)] = len(part)
            while pending:
                done += _collect(pending, tally)
                report(done, total)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return tally


def _collect(pending: dict[Future[Tally], int], tally: Tally) -> int:
    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
    n = 0
    for future in finished:
        n += pending.pop(future)
        tally.merge(future.result())
    return n


def default_jobs() -> int:
    """Every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def backtest(history: History, *, shop: str, baseline: Baseline, candidate: Programme,
             candidate_from: datetime | None = None, stage_map: Mapping[str, str] | None = None,
             as_of: datetime | None = None, jobs: int = 1, candidate_name: str = "",
             warnings: tuple[str, ...] = (), on_progress: OnProgress | None = None,
             now: datetime | None = None) -> dict[str, Any]:
    """The report of ``candidate`` against ``baseline`` over ``history`` (see :mod:`.report`).

    ``history`` must be prepared (:meth:`~.sources.FileHistory.prepare`).  ``as_of`` defaults
    to the latest event of a file (now for the database: ``now``), and never lies before
    ``candidate_from`` (a preview is folded through the activation instant)."""
    spec = candidate_spec(baseline, candidate, candidate_from, stage_map or {})
    scan = history.scan
    explicit = as_of is not None
    if as_of is None:
        as_of = (scan.latest if history.kind == "file" else now) or now
    if not scan.events or as_of is None:
        raise BadRequest(f"{history.name} holds no event: nothing to backtest")
    if candidate_from is not None:
        if explicit and as_of < candidate_from:
            raise BadRequest("--as-of is before --from: a preview is folded through the activation instant",
                             {"as_of": ["must not be before --from"]})
        as_of = max(as_of, candidate_from)
    job = Job(shop=shop, baseline=baseline.spec, candidate=spec, as_of=as_of, source=history.kind,
              source_name=history.name, live_from=history.live_from, shop_inputs=history.shop_inputs,
              preview_at=candidate_from)
    tally = replay(history, job, jobs, on_progress)
    described = f"{candidate_name or candidate.source}, version {candidate.version}, "
    described += f"from {iso(candidate_from)} (the baseline before)" if candidate_from else "throughout"
    meta = Meta(shop=shop, as_of=as_of, currency=candidate.settings.currency,
                history={"source": history.kind, "name": history.name, "customers": scan.customers,
                         "events": scan.events, "note": history.note},
                baseline={"description": baseline.description, "versions": baseline.spec.versions},
                candidate={"description": described, "versions": spec.versions,
                           "from": iso(candidate_from) if candidate_from else None},
                baseline_programme=baseline.spec.programme_at(as_of), candidate_programme=spec.programme_at(as_of),
                preview_at=candidate_from, warnings=warnings)
    return document(tally, meta)
