"""``ladder backtest``: a programme replayed over a shop's history before it goes live."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import click

from .base import cli_settings, existing_service, main, masked_url, missing_sqlite_file, parse_time
from .rules import parse_stage_map


class ProgressBar:
    """Customers replayed, on stderr: a bar with the ETA on a terminal, else a line per 10 %."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.shown = -1
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        elapsed = now - self.started
        share = done / total if total else 1.0
        eta = (elapsed / done * (total - done)) if done else None
        tail = f"{done:,}/{total:,} customers, {_duration(elapsed)} elapsed" + (
            f", about {_duration(eta)} left" if eta is not None and done < total else "")
        if self.tty:
            if done < total and now - self.last < 0.2:
                return
            self.last = now
            width = 30
            bar = "#" * int(width * share) + "-" * (width - int(width * share))
            self.stream.write(f"\rreplaying [{bar}] {share:4.0%} {tail}   ")
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()
            return
        step = int(share * 10)
        if step > self.shown or done >= total:
            if done >= total and self.shown == 10:
                return
            self.shown = step
            self.stream.write(f"replaying: {share:.0%} ({tail})\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _load_candidate(path: Path) -> tuple[Any, tuple[str, ...]]:
    """The candidate programme and its static-check warnings (``ladder validate``'s)."""
    from .. import rulefile

    checked = rulefile.load_programme_checked(path)
    return checked.programme, tuple(str(w) for w in checked.warnings)


@main.command()
@click.option("--rules", "rules_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="the candidate programme (a directory or one file)")
@click.option("--baseline", "baseline_path", type=click.Path(exists=True, path_type=Path),
              help="compare with this programme throughout (default: the shop's recorded timeline of versions; "
                   "without one, its rules directory)")
@click.option("--from", "from_", metavar="TIME",
              help="the candidate only from TIME, the baseline before it: an activation preview")
@click.option("--stage-map", "stage_map", multiple=True, metavar="OLD=NEW",
              help="with --from: a stage the candidate drops = the stage its customers move to (repeatable)")
@click.option("--history", "history_path", metavar="FILE|-",
              help="an events file (JSON lines; - for stdin) instead of the shop's ledger in the database")
@click.option("--shop", default="default", show_default=True)
@click.option("--as-of", "as_of", help="fold as of this time (default: the latest event of a file, else now)")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), help="write the report here (default: stdout)")
@click.option("--jobs", type=click.IntRange(min=1), help="worker processes (default: every core)")
def backtest(rules_path: Path, baseline_path: Path | None, from_: str | None, stage_map: tuple[str, ...],
             history_path: str | None, shop: str, as_of: str | None, fmt: str, out: Path | None,
             jobs: int | None) -> None:
    """Replay a shop's history through the programme in --rules next to a baseline, and report
    who would move (baseline stage → candidate stage), customers per stage and subgroup, awards
    per reward with their face value, and the customers worse off.  Nothing is stored.

    Exit 1 when a customer could not be replayed (each is listed with its reason and left out
    of the figures)."""
    from .. import backtest as bt
    from .. import rulefile
    from ..clock import utcnow

    candidate_from = parse_time(from_, "--from")
    when = parse_time(as_of, "--as-of")
    mapping = parse_stage_map(stage_map)
    candidate, warnings = _load_candidate(rules_path)
    for warning in warnings:
        click.echo(warning, err=True)
    settings = cli_settings()
    service = None
    if history_path is None:
        service = existing_service("backtesting over the ledger of")
        service._declared(shop)  # NotFound for a shop that is not configured
        history: Any = bt.DatabaseHistory(service.db, shop)
    else:
        _known_shop(settings, shop)
        history = bt.FileHistory(history_path, progress=lambda msg: click.echo(msg, err=True))
        if baseline_path is None and missing_sqlite_file(settings.database_url) is None:
            from ..service import LadderService

            click.echo(f"reading the recorded timeline from {masked_url(settings.database_url)}", err=True)
            service = LadderService(settings, sync_modes=False)
    part = _writable(out)
    try:
        baseline = _baseline(service, shop, baseline_path, settings, rulefile)
        history.prepare()
        if history.scan.problems:
            from ..errors import BadRequest

            raise BadRequest(f"{history.name} cannot be read as events: nothing was replayed",
                             {"lines": history.scan.problems})
        click.echo(f"{history.name}: {history.scan.customers:,} customers, {history.scan.events:,} events", err=True)
        doc = bt.backtest(history, shop=shop, baseline=baseline, candidate=candidate, candidate_from=candidate_from,
                          stage_map=mapping, as_of=when, jobs=jobs or bt.default_jobs(), candidate_name=str(rules_path),
                          warnings=warnings, on_progress=ProgressBar(), now=utcnow())
    except BaseException:
        if part is not None:
            part.unlink(missing_ok=True)
        raise
    finally:
        history.close()
    text = {"json": lambda d: json.dumps(d, indent=2, ensure_ascii=False) + "\n", "csv": bt.to_csv,
            "table": bt.table}[fmt](doc)
    if out is None or part is None:
        click.echo(text, nl=False)
    else:
        part.write_text(text, encoding="utf-8")
        part.replace(out)
        click.echo(f"wrote the report to {out}", err=True)
    if doc["failures"]["count"]:
        click.echo(f"{doc['failures']['count']} customer(s) could not be replayed and are left out; e.g. "
                   f"{doc['failures']['examples'][0]['customer_id']}: {doc['failures']['examples'][0]['reason']}",
                   err=True)
        sys.exit(1)


def _writable(out: Path | None) -> Path | None:
    """``OUT.part``, created now so a report that cannot be written is refused before the replay,
    renamed to OUT when the report is complete."""
    if out is None:
        return None
    if not out.parent.is_dir():
        raise click.BadParameter(f"the directory {out.parent} does not exist", param_hint="--out")
    part = out.with_name(out.name + ".part")
    try:
        part.write_text("", encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot write {out}: {exc.strerror or exc}", param_hint="--out") from None
    return part


def _known_shop(settings: Any, shop: str) -> None:
    """A history file is replayed for a shop of the shops file (its programme, its currency)."""
    from ..errors import NotFound
    from ..shops import load_shops

    shops = load_shops(settings.shops_file, lazy=True)
    if shop not in shops:
        raise NotFound(f"unknown shop '{shop}'", {"shop": [f"configured shops: {', '.join(sorted(shops))}"]})


def _baseline(service: Any, shop: str, baseline_path: Path | None, settings: Any, rulefile: Any) -> Any:
    from .. import backtest as bt

    recorded = None
    if service is not None:
        from ..shops import declared_shop

        declared = declared_shop(service.shops, shop) if shop in service.shops else None
        if declared is not None:
            recorded = service.programmes.current(service.db, declared)
    if baseline_path is not None:
        programme = rulefile.load_programme(baseline_path)
        semantics = recorded.semantics if recorded is not None else bt.THIS_RELEASE
        return bt.directory_baseline(programme, str(baseline_path), semantics)
    if recorded is not None:
        return bt.recorded_baseline(recorded, shop)
    path = (service.shop_directory(shop) if service is not None and shop in service.shops
            else Path(settings.rules) if settings.rules else rulefile.default_programme_path())
    programme = rulefile.load_programme(path)
    return bt.directory_baseline(programme, str(path), note=f"shop '{shop}' has no recorded timeline: its rules directory")
