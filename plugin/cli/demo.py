"""``ladder demo-data``: a realistic shop history in the generic event format."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TextIO

import click

from .base import main, parse_time

#: from this many customers on, a line per month on stderr (a smaller run takes seconds)
PROGRESS_FROM = 10_000


def _end(value: str | None) -> datetime | None:
    """A date (its 00:00 UTC) or an ISO time with a zone."""
    if value is None:
        return None
    text = value.strip()
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise click.BadParameter(f"'{value}' is not a date (YYYY-MM-DD) or an ISO 8601 time with a zone",
                                     param_hint="--end") from None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return parse_time(text, "--end")


def _target(out: str) -> Path | None:
    """The file to write (None: stdout), refused before anything is generated."""
    if out == "-":
        return None
    path = Path(out)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise click.BadParameter(f"cannot write {out}: the directory {parent} does not exist", param_hint="--out")
    if path.is_dir():
        raise click.BadParameter(f"cannot write {out}: it is a directory", param_hint="--out")
    return path


def _write(lines: Iterator[str], stream: TextIO) -> None:
    write = stream.write
    for line in lines:
        write(line)
        write("\n")


@main.command("demo-data")
@click.option("--customers", type=click.IntRange(min=1), required=True, help="how many customers")
@click.option("--seed", type=int, default=1, show_default=True, help="the same seed and end give the same bytes")
@click.option("--months", type=click.IntRange(min=1), default=24, show_default=True, help="length of the history")
@click.option("--end", "end_text", metavar="DATE|TIME",
              help="end of the history, nothing at or after it: a date (00:00 UTC) or an ISO time with a zone "
                   "[default: today 00:00 UTC]")
@click.option("--out", default="-", show_default=True, metavar="FILE|-", help="where the JSON lines go (- : stdout)")
def demo_data(customers: int, seed: int, months: int, end_text: str | None, out: str) -> None:
    """Write a realistic shop history (JSON lines, the generic event format, EUR) for `ladder import`,
    `ladder simulate` and `ladder backtest`: monthly buyers, discount hunters, one-off buyers, B2B
    buyers on payment terms, image clients and visitors, with seasons, refunds, cancellations,
    complaints, reviews, referrals, line costs and taxes. Deterministic for a seed and --end;
    streamed month by month in time order (memory stays flat); progress and a summary on stderr."""
    from ..demo_data import DemoShop, Stats

    end = _end(end_text)
    try:
        shop = DemoShop(customers, seed=seed, months=months, end=end)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--months' / '--end'") from None
    path = _target(out)
    stats = Stats()
    began = time.monotonic()

    def progress(m: int, done: Stats) -> None:
        click.echo(f"demo-data: month {m + 1}/{months} ({datetime.fromtimestamp(shop.bounds[m], UTC):%Y-%m}) "
                   f"done: {done.events:,} events, {done.orders:,} orders, {time.monotonic() - began:.0f} s",
                   err=True)

    lines = shop.lines(stats, progress if customers >= PROGRESS_FROM else None)
    if path is None:
        try:
            _write(lines, sys.stdout)
            sys.stdout.flush()
        except BrokenPipeError:  # `ladder demo-data … | head`: the reader has all it wanted
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):  # pragma: no cover - not a real file descriptor
                pass
            sys.exit(1)
        where = "stdout"
    else:
        partial = path.with_name(path.name + ".part")  # never a half-written FILE under its name
        try:
            with open(partial, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as stream:
                _write(lines, stream)
            os.replace(partial, path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise click.BadParameter(f"cannot write {out}: {exc.strerror or exc}", param_hint="--out") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        where = f"{path} ({path.stat().st_size / 1e6:.1f} MB)"
    click.echo(f"demo-data: {stats.customers:,} customers, {stats.events:,} events, {stats.orders:,} orders, "
               f"{stats.first_at or '-'} … {stats.last_at or '-'} (seed {seed}, end "
               f"{shop.end.isoformat().replace('+00:00', 'Z')}), written to {where} in "
               f"{time.monotonic() - began:.1f} s", err=True)
