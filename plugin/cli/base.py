"""The ``ladder`` group, its error rendering, and what several commands share: settings, times,
event files, the database a read-only command may open."""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click

from .. import __version__, redact
from ..errors import BadRequest, LadderError, RuleFileError


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


def cli_settings(**overrides: Any):
    from ..config import load_settings

    settings = load_settings(overrides={k: v for k, v in overrides.items() if v is not None})
    redact.install(settings)  # no secret of these in any log line of the command
    return settings


def parse_time(value: str | None, name: str) -> datetime | None:
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



def masked_url(url: str) -> str:
    """The database URL with its password masked (for what a command prints)."""
    try:
        from ..redact import mask_url
    except ImportError:  # pragma: no cover - redact.py arrives with the secret-masking work
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return mask_url(url)


def missing_sqlite_file(database_url: str) -> str | None:
    """The path of a SQLite database file that does not exist (opening it would create an empty
    one), or None: another backend, an in-memory database, or a file that is there."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    path = url.database
    if url.get_backend_name() == "sqlite" and path and path != ":memory:" and not path.startswith("file:") \
            and not Path(path).exists():
        return path
    return None


def existing_service(verb: str = "reading"):
    """The service of a command that must not create a database (the read-only ones, retries):
    says on stderr which database it uses (password masked) and refuses a SQLite file that does
    not exist rather than creating an empty one."""

    from ..errors import NotFound
    from ..service import LadderService

    settings = cli_settings()
    click.echo(f"{verb} database {masked_url(settings.database_url)}", err=True)
    path = missing_sqlite_file(settings.database_url)
    if path is not None:
        raise NotFound(f"no database at {path}: nothing has been recorded there (set LADDER_DATABASE_URL, "
                       "or run where `ladder serve` runs)", {"database_url": [masked_url(settings.database_url)]})
    # a read-only command never switches a shop from shadow to live: only serve, worker and the
    # commands that process do (a shops file edited for a one-off look changes nothing)
    return LadderService(settings, sync_modes=False)


def note_default_shop(shops: Any) -> None:
    from ..shops import default_shop_note

    note = default_shop_note(shops)
    if note:
        click.echo(note, err=True)


def echo_retry(kind: str, result: Any, then: str) -> None:
    for pk in result.retried:
        click.echo(f"{kind} {pk}: retried")
    for pk, why in result.skipped:
        click.echo(f"{kind} {pk}: left alone: {why}")
    click.echo(f"{len(result.retried)} {kind}(s) retried, {len(result.skipped)} left alone"
               + (f"; {then}" if result.retried else ""))
    if any(why.startswith("no such") for _, why in result.skipped):
        sys.exit(3)


def print_rows(rows: list[dict[str, Any]], schema: Any, columns: tuple[str, ...], as_json: bool) -> None:
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


def retry_args(pks: tuple[int, ...], status: str | None) -> None:
    if not pks and status is None:
        raise click.UsageError("name the rows (PK …) or select them with --status failed")
    if pks and status is not None:
        raise click.UsageError("give PKs or --status, not both")


