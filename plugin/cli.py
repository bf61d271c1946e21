"""The ``ladder`` command.

Every user-facing failure is a ``LadderError`` turned into a one-line (or
``path:line:col``) message and its exit code; no tracebacks for user mistakes.
"""
from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click

from . import __version__
from .errors import BadRequest, ConfigError, LadderError, RuleFileError


class LadderGroup(click.Group):
    """Renders LadderError as a message on stderr with the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RuleFileError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            ctx.exit(exc.exit_code)
        except LadderError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.errors:
                click.echo(json.dumps(exc.errors, indent=2, ensure_ascii=False, default=str), err=True)
            ctx.exit(exc.exit_code)


def _settings(**overrides: Any):
    from .config import load_settings

    return load_settings(overrides={k: v for k, v in overrides.items() if v is not None})


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # Python 3.11 reads "Z" itself
    except ValueError:
        raise click.BadParameter(f"'{value}' is not an ISO 8601 time", param_hint=name) from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"'{value}' has no time zone; add Z or +HH:MM", param_hint=name)
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not datetime(1970, 1, 1, tzinfo=UTC) <= utc <= datetime(2200, 1, 1, tzinfo=UTC):
        raise click.BadParameter(f"'{value}' is out of range (1970–2200)", param_hint=name)
    return utc


def read_labelled(stream: TextIO, name: str) -> tuple[list[str], list[dict[str, Any]]]:
    """JSON lines (one event per line) or one JSON array; blank lines ignored.

    Returns each item with a label for messages: ``file:line`` for JSON lines, ``file[i]`` for
    an array."""
    text = stream.read()
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"{name}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise BadRequest(f"{name}: invalid JSON: nested too deeply") from None
        if not isinstance(data, list):
            raise BadRequest(f"{name}: expected a JSON array of events")
        return [f"{name}[{i}]" for i in range(len(data))], data
    labels, items = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"{name}:{lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise BadRequest(f"{name}:{lineno}:1: invalid JSON: nested too deeply") from None
        if not isinstance(item, dict):
            raise BadRequest(f"{name}:{lineno}:1: expected one event object per line")
        labels.append(f"{name}:{lineno}")
        items.append(item)
    return labels, items


def read_events(stream: TextIO, name: str) -> Iterator[dict[str, Any]]:
    yield from read_labelled(stream, name)[1]


@click.group(cls=LadderGroup)
@click.version_option(__version__, prog_name="ladder")
def main() -> None:
    """loyalty-ladder: customer events in, loyalty stages and rewards out."""


# ------------------------------------------------------------------ serve / worker
@main.command()
@click.option("--host", default=None, help="address to bind (default 127.0.0.1, LADDER_HOST)")
@click.option("--port", default=None, type=int, help="port (default 8000, LADDER_PORT)")
def serve(host: str | None, port: int | None) -> None:
    """Web server and queue consumer in one process (the embedded default)."""
    from werkzeug.serving import make_server

    from .app import EXTENSION, create_app
    from .queue import start_consumer

    settings = _settings(host=host, port=port)
    if not settings.admin_token:
        settings = dataclasses.replace(settings, admin_token=secrets.token_urlsafe(24))
        click.echo(f"LADDER_ADMIN_TOKEN was not set; this run's admin token is: {settings.admin_token}")
    app = create_app(settings)
    state = app.extensions[EXTENSION]
    programme = state.service.ensure_programme_recorded(next(iter(state.service.shops)))
    try:  # bind first: a port in use must not leave a consumer running
        server = make_server(settings.host, settings.port, app, threaded=True)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    consumer = start_consumer(state.huey, workers=1, poll_seconds=settings.queue_poll_seconds)
    click.echo(f"loyalty-ladder {__version__} on http://{settings.host}:{server.server_port} "
               f"(database {settings.database_url}, programme {programme.source} version {programme.version}, "
               f"shops: {', '.join(state.service.shops)})")

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopping")
    finally:
        server.server_close()
        consumer.stop()


@main.command()
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="consumer threads (the engine is serialised per process: scale with processes)")
def worker(workers: int) -> None:
    """A queue consumer alone (scale-out: run several, beside gunicorn web workers)."""
    from .queue import make_huey, run_consumer
    from .service import LadderService
    from .tasks import register_tasks

    settings = _settings()
    service = LadderService(settings)
    huey = make_huey(settings)
    register_tasks(huey, service)
    click.echo(f"loyalty-ladder worker: database {settings.database_url}, queue {settings.queue_url or 'sqlite'}")
    run_consumer(huey, workers=workers, poll_seconds=settings.queue_poll_seconds)


# ------------------------------------------------------------------ files
@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="overwrite existing files")
def init(directory: Path, force: bool) -> None:
    """Write the default programme (rules/) and example settings (config/) into DIRECTORY."""
    package = Path(__file__).parent / "data"
    plan = []
    for sub in ("rules", "config"):
        source = package / sub
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.suffix in (".yaml", ".yml"):
                plan.append((path, directory / sub / path.relative_to(source)))
    existing = [str(target) for _, target in plan if target.exists()]
    if existing and not force:  # check everything first: never leave a half-written copy
        raise LadderError(f"{', '.join(existing)} exist(s); use --force to overwrite")
    written = []
    for path, target in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        written.append(target)
    for target in written:
        click.echo(f"wrote {target}")
    click.echo(f"next: cd {directory} && ladder validate rules/ && ladder serve")


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Validate programmes (a directory = one programme, non-recursive; or one file).

    Exit 0 when every programme is valid, 1 otherwise, with `path:line:col: message` on stderr.
    """
    from . import rulefile

    if not paths:
        settings = _settings()
        paths = (settings.rules or rulefile.default_programme_path(),)
    failed = False
    for path in paths:
        try:
            programme = rulefile.load_programme(path)
        except RuleFileError as exc:
            failed = True
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            continue
        click.echo(f"{path}: valid — version {programme.version}, {len(programme.stages)} stages, "
                   f"{len(programme.subgroups)} subgroups, {len(programme.rewards)} rewards")
    if failed:
        sys.exit(1)


# ------------------------------------------------------------------ what-if
@main.command()
@click.argument("events", type=click.File("r"), default="-")
@click.option("--rules", "rules_path", type=click.Path(exists=True, path_type=Path),
              help="programme directory or file (default: LADDER_RULES, ./rules, the shipped one)")
@click.option("--as-of", "as_of", help="evaluate at this time (default: the latest event's time)")
@click.option("--trace", is_flag=True, help="include the explanation with every comparison")
def simulate(events: TextIO, rules_path: Path | None, as_of: str | None, trace: bool) -> None:
    """Run EVENTS (JSON lines or a JSON array; - for stdin) through a programme; nothing is stored."""
    from . import rulefile
    from .documents import SIMULATION
    from .engine import get_engine
    from .views import simulate as run

    path = rules_path or _settings().rules or rulefile.default_programme_path()
    programme = rulefile.load_programme(path)
    compiled = get_engine().compile(programme)
    labels, items = read_labelled(events, events.name)
    result = run(programme, compiled, items, _parse_time(as_of, "--as-of"), trace, labels=labels)
    click.echo(json.dumps(SIMULATION.dump(result), indent=2, ensure_ascii=False))


@main.command()
@click.argument("shop")
@click.argument("customer")
def explain(shop: str, customer: str) -> None:
    """Why CUSTOMER of SHOP is where they are (from the database)."""
    from .service import LadderService

    service = LadderService(_settings())
    click.echo(json.dumps(service.explain(shop, customer), indent=2, ensure_ascii=False))


@main.command(name="import")
@click.argument("events", type=click.File("r"))
@click.option("--shop", default="default", show_default=True)
@click.option("--live-from", "live_from", help="the shop goes live at this time (default: now); "
                                              "awards before it are recorded as historical, never paid")
def import_(events: TextIO, shop: str, live_from: str | None) -> None:
    """Load a shop's history (JSON lines); no rewards are paid for the past."""
    from .service import LadderService

    service = LadderService(_settings())
    labels, items = read_labelled(events, events.name)
    totals = service.import_events(shop, items, labels=labels, live_from=_parse_time(live_from, "--live-from"),
                                   progress=lambda msg: click.echo(msg, err=True))
    click.echo(f"imported {totals['accepted']} events ({totals['duplicates']} already known) "
               f"for {totals['customers']} customers into shop '{shop}'")


# ------------------------------------------------------------------ shops
@main.command()
@click.argument("shop")
@click.option("--since", help="only what changed since this time (default: everything)")
@click.option("--live-from", "live_from", help="for a first import: the shop goes live at this time (default: now)")
def sync(shop: str, since: str | None, live_from: str | None) -> None:
    """Pull SHOP's customers and orders through its API: the initial import of its history
    (no rewards paid for the past) or the reconciliation of anything webhooks missed."""
    from .service import LadderService

    service = LadderService(_settings())
    adapter = service.adapter(shop)
    events = adapter.sync(_parse_time(since, "--since"), lambda msg: click.echo(msg, err=True))
    totals = service.import_events(shop, events, live_from=_parse_time(live_from, "--live-from"),
                                   progress=lambda msg: click.echo(msg, err=True), source=adapter.platform)
    click.echo(f"synced {totals['accepted']} new events ({totals['duplicates']} already known) "
               f"for {totals['customers']} customers of shop '{shop}'")


@main.command()
@click.argument("records", type=click.File("r"))
def replay(records: TextIO) -> None:
    """Re-inject recorded webhooks (JSON lines {platform, headers, body}, as `ladder inbox-export`
    writes them), e.g. after an outage. Signatures are verified again; duplicates are no-ops."""
    from . import inbox
    from .service import LadderService

    service = LadderService(_settings())
    counts = inbox.replay(service.db, service.shops, read_events(records, records.name),
                          on_reject=lambda n, msg: click.echo(f"record {n}: {msg}", err=True))
    click.echo(", ".join(f"{k}: {v}" for k, v in counts.items()))
    click.echo("run `ladder worker` (or `ladder serve`) to process what was accepted")


@main.command(name="inbox-export")
@click.option("--since", help="only webhooks received since this time")
def inbox_export(since: str | None) -> None:
    """Write the recorded webhooks as JSON lines (the `ladder replay` format) to stdout."""
    from . import inbox
    from .service import LadderService

    service = LadderService(_settings())
    for record in inbox.export(service.db, since=_parse_time(since, "--since")):
        click.echo(json.dumps(record, ensure_ascii=False))


@main.command(name="customer-data")
@click.argument("shop")
@click.argument("customer")
def customer_data(shop: str, customer: str) -> None:
    """Everything stored about CUSTOMER (answers a shop's customers/data_request)."""
    from .service import LadderService

    service = LadderService(_settings())
    click.echo(json.dumps(service.customer_data(shop, customer), indent=2, ensure_ascii=False))
