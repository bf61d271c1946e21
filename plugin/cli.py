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
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click

from . import __version__, redact
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
            click.echo(f"error: {redact.FILTER.mask(exc.message)}", err=True)  # e.g. a URL in the message
            if exc.errors:
                click.echo(redact.FILTER.mask(json.dumps(exc.errors, indent=2, ensure_ascii=False, default=str)),
                           err=True)
            ctx.exit(exc.exit_code)


def _settings(**overrides: Any):
    from .config import load_settings

    settings = load_settings(overrides={k: v for k, v in overrides.items() if v is not None})
    redact.install(settings)  # no secret of these in any log line of the command
    return settings


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
    """Web server and every lane (live, deliveries, bulk) in one process (the embedded default)."""
    from werkzeug.serving import make_server

    from .app import EXTENSION, create_app
    from .lanes import start_lanes, stop_lanes
    from .queue import start_consumer

    settings = _settings(host=host, port=port)
    if not settings.admin_token:
        settings = dataclasses.replace(settings, admin_token=secrets.token_urlsafe(24))
        click.echo(f"LADDER_ADMIN_TOKEN was not set; this run's admin token is: {settings.admin_token}")
    app = create_app(settings)
    state = app.extensions[EXTENSION]
    _note_default_shop(state.service.shops)
    programme = state.service.ensure_programme_recorded(next(iter(state.service.shops)))
    try:  # bind first: a port in use must not leave a consumer running
        server = make_server(settings.host, settings.port, app, threaded=True)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    consumer = start_consumer(state.huey, workers=1, poll_seconds=settings.queue_poll_seconds)  # bulk
    lanes = start_lanes(state.service, ("live", "deliveries"))
    click.echo(f"loyalty-ladder {__version__} on http://{settings.host}:{server.server_port} "
               f"(database {redact.mask_url(settings.database_url)}, programme {programme.source} version {programme.version}, "
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
        stop_lanes(lanes)
        consumer.stop()


@main.command()
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="bulk-lane consumer threads (the engine is serialised per process: scale with processes)")
@click.option("--lanes", "lane_names", default="live,deliveries,bulk", show_default=True,
              help="which lanes this process consumes (comma-separated: live, deliveries, bulk)")
def worker(workers: int, lane_names: str) -> None:
    """The consumers alone (scale-out: run several, beside gunicorn web workers).

    live: received webhooks and accepted events; deliveries: the outbox, per shop and
    rate-limited; bulk: the Huey queue (due wake-ups found by the minute sweep)."""
    from .lanes import start_lanes, stop_lanes
    from .queue import make_huey, run_consumer
    from .service import LadderService
    from .shops import require_secrets
    from .tasks import register_tasks

    names = tuple(n.strip() for n in lane_names.split(",") if n.strip())
    unknown = sorted(set(names) - {"live", "deliveries", "bulk"})
    if unknown or not names:
        raise click.BadParameter(f"unknown lane(s) {', '.join(unknown) or '(none given)'}; "
                                 "use live, deliveries, bulk", param_hint="--lanes")
    settings = _settings()
    service = LadderService(settings)
    require_secrets(service.shops)  # a worker serves every shop
    _note_default_shop(service.shops)
    huey = make_huey(settings)
    register_tasks(huey, service)
    lanes = start_lanes(service, tuple(n for n in names if n != "bulk"))
    click.echo(f"loyalty-ladder worker ({', '.join(names)}): database {redact.mask_url(settings.database_url)}, "
               f"queue {redact.mask_url(settings.queue_url) or 'sqlite'}")
    try:
        if "bulk" in names:
            run_consumer(huey, workers=workers, poll_seconds=settings.queue_poll_seconds)  # until a signal
        else:
            stopping = threading.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stopping.set())
            while not stopping.wait(1.0):
                pass
    finally:
        stop_lanes(lanes)


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
    """Why CUSTOMER of SHOP is where they are (from the database; read-only)."""
    service = _existing_service()
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

    service = _existing_service()
    for record in inbox.export(service.db, since=_parse_time(since, "--since")):
        click.echo(json.dumps(record, ensure_ascii=False))


@main.command(name="customer-data")
@click.argument("shop")
@click.argument("customer")
def customer_data(shop: str, customer: str) -> None:
    """Everything stored about CUSTOMER (answers a shop's customers/data_request; read-only)."""
    service = _existing_service()
    click.echo(json.dumps(service.customer_data(shop, customer), indent=2, ensure_ascii=False))


# ------------------------------------------------------------------ operators: inbox / deliveries
def _masked_url(url: str) -> str:
    """The database URL with its password masked (for what a command prints)."""
    try:
        from .redact import mask_url
    except ImportError:  # pragma: no cover - redact.py arrives with the secret-masking work
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return mask_url(url)


def _existing_service(verb: str = "reading"):
    """The service of a command that must not create a database (the read-only ones, retries):
    says on stderr which database it uses (password masked) and refuses a SQLite file that does
    not exist rather than creating an empty one."""
    from sqlalchemy.engine import make_url

    from .errors import NotFound
    from .service import LadderService

    settings = _settings()
    click.echo(f"{verb} database {_masked_url(settings.database_url)}", err=True)
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        path = url.database
        if path and path != ":memory:" and not path.startswith("file:") and not Path(path).exists():
            raise NotFound(f"no database at {path}: nothing has been recorded there (set LADDER_DATABASE_URL, "
                           "or run where `ladder serve` runs)", {"database_url": [_masked_url(settings.database_url)]})
    return LadderService(settings)


def _note_default_shop(shops: Any) -> None:
    from .shops import default_shop_note

    note = default_shop_note(shops)
    if note:
        click.echo(note, err=True)


def _echo_retry(kind: str, result: Any, then: str) -> None:
    for pk in result.retried:
        click.echo(f"{kind} {pk}: retried")
    for pk, why in result.skipped:
        click.echo(f"{kind} {pk}: left alone: {why}")
    click.echo(f"{len(result.retried)} {kind}(s) retried, {len(result.skipped)} left alone"
               + (f"; {then}" if result.retried else ""))
    if any(why.startswith("no such") for _, why in result.skipped):
        sys.exit(3)


def _rows(rows: list[dict[str, Any]], schema: Any, columns: tuple[str, ...], as_json: bool) -> None:
    docs = [schema.dump(row) for row in rows]
    if as_json:
        for doc in docs:
            click.echo(json.dumps(doc, ensure_ascii=False))
        return
    click.echo("\t".join(columns))
    for doc in docs:
        click.echo("\t".join("" if doc.get(c) is None else str(doc[c]).replace("\n", " ") for c in columns))
    if not docs:
        click.echo("(none)", err=True)


def _retry_args(pks: tuple[int, ...], status: str | None) -> None:
    if not pks and status is None:
        raise click.UsageError("name the rows (PK …) or select them with --status failed")
    if pks and status is not None:
        raise click.UsageError("give PKs or --status, not both")


@main.group(cls=LadderGroup)
def inbox() -> None:
    """Received webhooks: list them by status, send failed ones round again."""


@inbox.command(name="list")
@click.option("--shop", help="only this shop's rows")
@click.option("--status", type=click.Choice(["received", "processed", "ignored", "failed"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--before", type=click.IntRange(min=1), help="only rows with a smaller pk (the next page)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def inbox_list(shop: str | None, status: str | None, limit: int, before: int | None, as_json: bool) -> None:
    """Inbox rows, newest first: pk, status, shop, topic, times and the reason (never the body)."""
    from . import inbox as inbox_mod
    from .documents import INBOX_ROW

    service = _existing_service()
    rows = inbox_mod.list_rows(service.db, shop_id=shop, status=status, limit=limit, before=before)
    _rows(rows, INBOX_ROW, ("pk", "status", "shop", "platform", "topic", "delivery_id", "received_at",
                            "processed_at", "error"), as_json)


@inbox.command(name="retry")
@click.argument("pks", nargs=-1, type=int)
@click.option("--status", type=click.Choice(["failed", "ignored"]), help="every row with this status")
@click.option("--shop", help="only this shop's rows")
@click.option("--now", "process_now", is_flag=True,
              help="process the retried rows in this process at once and print each outcome")
def inbox_retry(pks: tuple[int, ...], status: str | None, shop: str | None, process_now: bool) -> None:
    """Set failed (or ignored) rows back to received, so the consumer processes them again — once
    the cause is fixed.  Idempotent: a row already received is left alone."""
    from . import inbox as inbox_mod

    _retry_args(pks, status)
    service = _existing_service("using")
    result = inbox_mod.retry(service.db, pks, status=status, shop_id=shop)
    if process_now:
        for pk in result.retried:
            service.process_inbox(pk)
        outcome = {row["pk"]: row for row in inbox_mod.list_rows(service.db, limit=inbox_mod.LIST_MAX)
                   if row["pk"] in result.retried}
        for pk in result.retried:
            row = outcome.get(pk) or {"status": "?", "error": None}
            click.echo(f"inbox row {pk}: {row['status']}" + (f": {row['error']}" if row["error"] else ""))
        return _echo_retry("inbox row", result, "processed above")
    stale = inbox_mod.stale(service.db, result.retried)
    for pk in stale:
        click.echo(f"inbox row {pk}: arrived more than {inbox_mod.SWEEP_GIVE_UP.days} days ago, so the consumer's "
                   "sweep no longer looks at it: process it with `ladder inbox retry --now`", err=True)
    _echo_retry("inbox row", result, "a running `ladder worker` (or `ladder serve`) processes them")


@main.group(cls=LadderGroup)
def deliveries() -> None:
    """Outbox deliveries (grants, revokes, notices): list them by status, retry failed ones."""


@deliveries.command(name="list")
@click.option("--shop", help="only this shop's deliveries")
@click.option("--status", type=click.Choice(["pending", "delivered", "failed", "needs_manual_action", "shadow",
                                             "cancelled"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--before", type=click.IntRange(min=1), help="only rows with a smaller pk (the next page)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def deliveries_list(shop: str | None, status: str | None, limit: int, before: int | None, as_json: bool) -> None:
    """Deliveries, newest first: pk, status, action, award key, attempts and the last error."""
    from .documents import DELIVERY_ROW
    from .outbox import failures

    service = _existing_service()
    rows = failures.list_rows(service.db, shop_id=shop, status=status, limit=limit, before=before)
    _rows(rows, DELIVERY_ROW, ("pk", "status", "shop", "action", "channel", "award_key", "attempts",
                               "updated_at", "last_error"), as_json)


@deliveries.command(name="retry")
@click.argument("pks", nargs=-1, type=int)
@click.option("--status", type=click.Choice(["failed"]), help="every failed delivery")
@click.option("--shop", help="only this shop's deliveries")
def deliveries_retry(pks: tuple[int, ...], status: str | None, shop: str | None) -> None:
    """Set failed deliveries back to pending (due now); a failed grant's award is due again.
    Idempotent: a pending delivery is left alone."""
    from .outbox import failures

    _retry_args(pks, status)
    service = _existing_service("using")
    result = failures.retry(service.db, pks, status=status, shop_id=shop)
    _echo_retry("delivery", result, "a running `ladder worker` (or `ladder serve`) delivers them")
