"""``ladder init``, ``validate``, ``simulate``: programmes on disk and what-ifs (nothing stored)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TextIO

import click

from ..errors import LadderError, RuleFileError
from .base import (
    cli_settings,
    main,
    parse_time,
    read_labelled,
)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="overwrite existing files")
def init(directory: Path, force: bool) -> None:
    """Write the default programme (rules/) and example settings (config/) into DIRECTORY."""
    package = Path(__file__).resolve().parent.parent / "data"  # loyalty_ladder/data
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
@click.option("--strict", is_flag=True, help="fail (exit 1) on warnings of the static checks too")
def validate(paths: tuple[Path, ...], strict: bool) -> None:
    """Validate programmes (a directory = one programme, non-recursive; or one file).

    Exit 0 when every programme is valid, 1 otherwise, with `path:line:col: message` on stderr.
    The static checks (docs/rules.md, "Static checks") print `path:line:col: warning: message`
    on stderr, which fail the programme only with --strict, and a note per stage (the most its
    rewards are worth a year) on stdout.
    """
    from .. import rulefile

    if not paths:
        settings = cli_settings()
        paths = (settings.rules or rulefile.default_programme_path(),)
    failed = False
    for path in paths:
        try:
            checked = rulefile.load_programme_checked(path)
        except RuleFileError as exc:
            failed = True
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            continue
        for warning in checked.warnings:
            click.echo(str(warning), err=True)
        if strict and checked.warnings:
            failed = True
            continue
        programme = checked.programme
        click.echo(f"{path}: valid — version {programme.version}, {len(programme.stages)} stages, "
                   f"{len(programme.subgroups)} subgroups, {len(programme.rewards)} rewards")
        for note in checked.notes:
            click.echo(note)
    if failed:
        sys.exit(1)



@main.command()
@click.argument("events", type=click.File("r"), default="-")
@click.option("--rules", "rules_path", type=click.Path(exists=True, path_type=Path),
              help="programme directory or file (default: LADDER_RULES, ./rules, the shipped one)")
@click.option("--as-of", "as_of", help="evaluate at this time (default: the latest event's time)")
@click.option("--trace", is_flag=True, help="include the explanation with every comparison")
def simulate(events: TextIO, rules_path: Path | None, as_of: str | None, trace: bool) -> None:
    """Run EVENTS (JSON lines or a JSON array; - for stdin) through a programme; nothing is stored."""
    from .. import rulefile
    from ..documents import SIMULATION
    from ..engine import get_engine
    from ..views import simulate as run

    path = rules_path or cli_settings().rules or rulefile.default_programme_path()
    programme = rulefile.load_programme(path)
    compiled = get_engine().compile(programme)
    labels, items = read_labelled(events, events.name)
    result = run(programme, compiled, items, parse_time(as_of, "--as-of"), trace, labels=labels)
    click.echo(json.dumps(SIMULATION.dump(result), indent=2, ensure_ascii=False))
