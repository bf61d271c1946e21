"""``ladder serve`` and ``ladder worker``: the processes that run the lanes."""
from __future__ import annotations

import dataclasses
import secrets
import signal
import threading
from typing import TYPE_CHECKING, Any

import click

from .. import __version__, redact
from ..errors import ConfigError
from .base import (
    cli_settings,
    main,
    note_default_shop,
)

if TYPE_CHECKING:
    from ..programmes import Bootstrap


def served(reports: list[Bootstrap]) -> str:
    """The versions served, for the start line: ``programme version X`` (one shop) or
    ``programme versions: a X, b Y``."""
    if len(reports) == 1:
        return f"programme version {reports[0].active}"
    return "programme versions: " + ", ".join(f"{r.shop_id} {r.active}" for r in reports)


def echo_reports(reports: list[Bootstrap]) -> None:
    """What start-up found in the rules directories: a version activated for a shop that had
    none, a directory holding another version than the active one (and the command that
    activates it), a directory that does not load (a warning, on stderr)."""
    for report in reports:
        lines = report.lines()
        for line in lines:
            click.echo(line, err=lines[0].startswith("warning:"))


@main.command()
@click.option("--host", default=None, help="address to bind (default 127.0.0.1, LADDER_HOST)")
@click.option("--port", default=None, type=int, help="port (default 8000, LADDER_PORT)")
def serve(host: str | None, port: int | None) -> None:
    """Web server and every lane (live, deliveries, bulk) in one process (the embedded default)."""
    from werkzeug.serving import make_server

    from ..app import EXTENSION, create_app
    from ..lanes import start_lanes, stop_lanes
    from ..queue import check_reachable, start_consumer

    settings = cli_settings(host=host, port=port)
    if not settings.admin_token:
        settings = dataclasses.replace(settings, admin_token=secrets.token_urlsafe(24))
        click.echo(f"LADDER_ADMIN_TOKEN was not set; this run's admin token is: {settings.admin_token}")
    app = create_app(settings)
    state = app.extensions[EXTENSION]
    note_default_shop(state.service.shops)
    reports = state.service.bootstrap_programmes()  # RuleFileError (exit 1) for a shop with nothing to serve
    check_reachable(state.huey, settings)
    try:  # bind first: a port in use must not leave a consumer running
        server = make_server(settings.host, settings.port, app, threaded=True)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    consumer = start_consumer(state.huey, workers=1, poll_seconds=settings.queue_poll_seconds)  # bulk
    lanes = start_lanes(state.service, ("live", "deliveries"))
    click.echo(f"loyalty-ladder {__version__} on http://{settings.host}:{server.server_port} "
               f"(database {redact.mask_url(settings.database_url)}, {served(reports)}, "
               f"shops: {', '.join(state.service.shops)})")
    echo_reports(reports)

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
    from ..lanes import start_lanes, stop_lanes
    from ..queue import check_reachable, make_huey, run_consumer
    from ..service import LadderService
    from ..shops import require_secrets
    from ..tasks import register_tasks

    names = tuple(n.strip() for n in lane_names.split(",") if n.strip())
    unknown = sorted(set(names) - {"live", "deliveries", "bulk"})
    if unknown or not names:
        raise click.BadParameter(f"unknown lane(s) {', '.join(unknown) or '(none given)'}; "
                                 "use live, deliveries, bulk", param_hint="--lanes")
    settings = cli_settings()
    service = LadderService(settings)
    require_secrets(service.shops)  # a worker serves every shop
    note_default_shop(service.shops)
    reports = service.bootstrap_programmes()  # RuleFileError (exit 1) for a shop with nothing to serve
    huey = make_huey(settings)
    check_reachable(huey, settings)
    register_tasks(huey, service)
    lanes = start_lanes(service, tuple(n for n in names if n != "bulk"))
    click.echo(f"loyalty-ladder worker ({', '.join(names)}): database {redact.mask_url(settings.database_url)}, "
               f"queue {redact.mask_url(settings.queue_url) or 'sqlite'}, {served(reports)}")
    echo_reports(reports)
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
