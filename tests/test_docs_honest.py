"""The documentation names only what exists.

* Every ``ladder <command>`` written as code (an inline `code span` or a fenced block) in
  README.md and docs/*.md, or inside a comment of the shipped YAML files (rules/, and the
  package data under plugin/data/, which includes the example settings), is a real subcommand
  of ``loyalty_ladder.cli:main``: ``ladder <command> --help`` exits 0.
* Every ``GET|POST|PUT|PATCH|DELETE /path`` that README.md and docs/*.md name matches a route of
  the real app (``<shop>``-style placeholders are filled with a sample value, ``<pk>`` with a number).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from werkzeug.exceptions import MethodNotAllowed, NotFound

from loyalty_ladder.cli import main

ROOT = Path(__file__).resolve().parent.parent

# `ladder` as a word of its own (not loyalty-ladder, loyalty_ladder, ladder.db), then a command.
COMMAND = re.compile(r"(?<![\w.-])ladder[ \t]+([a-z][a-z0-9-]*)")
ROUTE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE)[ \t]+(/[^\s`|,;)\"']*)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
YAML_COMMENT = re.compile(r"(?:^|\s)#(.*)$")
PLACEHOLDER = re.compile(r"<[^<>/]+>")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def yaml_files() -> list[Path]:
    """rules/**, config/* and whatever plugin/data ships (resolved: it may hold symlinks)."""
    bases = [ROOT / "rules", ROOT / "config"]
    data = ROOT / "plugin" / "data"
    if data.is_dir():
        bases += [p.resolve() for p in data.iterdir() if p.is_dir()]
    seen: dict[Path, None] = {}
    for base in bases:
        if base.is_dir():
            for path in sorted([*base.rglob("*.yaml"), *base.rglob("*.yml")]):
                seen.setdefault(path.resolve(), None)
    return list(seen)


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def markdown_code(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, code text) of every fenced block line and inline code span."""
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            yield number, line
        else:
            for span in INLINE_CODE.finditer(line):
                yield number, span.group(1)


def markdown_text(path: Path) -> Iterator[tuple[int, str]]:
    yield from enumerate(path.read_text(encoding="utf-8").splitlines(), 1)


def yaml_comments(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        found = YAML_COMMENT.search(line)
        if found:
            yield number, found.group(1)


def named_commands_in(chunks: Iterable[tuple[str, int, str]]) -> dict[str, list[str]]:
    """command -> the places (file:line) that name it."""
    out: dict[str, list[str]] = {}
    for where, number, text in chunks:
        for match in COMMAND.finditer(text):
            out.setdefault(match.group(1), []).append(f"{where}:{number}")
    return out


def named_commands() -> dict[str, list[str]]:
    chunks = [(rel(p), n, text) for p in markdown_files() for n, text in markdown_code(p)]
    chunks += [(rel(p), n, text) for p in yaml_files() for n, text in yaml_comments(p)]
    return named_commands_in(chunks)


def named_routes() -> dict[tuple[str, str], list[str]]:
    """(method, path) -> the places that name it."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in markdown_files():
        for number, line in markdown_text(path):
            for match in ROUTE.finditer(line):
                route = match.group(2).rstrip(".:")
                out.setdefault((match.group(1), route), []).append(f"{rel(path)}:{number}")
    return out


COMMANDS = named_commands()
ROUTES = named_routes()


def is_subcommand(name: str) -> bool:
    result = CliRunner().invoke(main, [name, "--help"])
    return result.exit_code == 0


def test_the_extraction_finds_what_the_readme_documents():
    # A broken pattern must not make the checks below pass vacuously.
    assert {"serve", "worker", "init", "validate", "simulate", "explain", "import", "sync", "replay",
            "inbox-export", "customer-data"} <= set(COMMANDS)
    assert ("POST", "/api/v1/shops/<shop>/events") in ROUTES
    assert ("GET", "/healthz") in ROUTES


def test_the_extraction_sees_a_missing_command():
    chunks = [("doc.md", 3, "run `ladder no-such-command` first"),
              ("rules/x.yaml", 1, " then `ladder validate` and .venv/bin/ladder serve")]
    found = named_commands_in(chunks)
    assert set(found) == {"no-such-command", "validate", "serve"}
    assert not is_subcommand("no-such-command")
    assert not named_commands_in([("doc.md", 1, "loyalty-ladder 0.1 and loyalty_ladder.app, ladder.db")])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_named_command_exists(command):
    assert is_subcommand(command), (
        f"`ladder {command}` is named in {', '.join(COMMANDS[command])} but is not a subcommand of "
        f"`ladder` (`ladder {command} --help` does not exit 0)")


def test_every_named_route_exists(app):
    adapter = app.url_map.bind("localhost")
    missing = []
    for (method, path), places in sorted(ROUTES.items()):
        # a row id (<pk>) is a number in the URL; every other placeholder a word
        concrete = PLACEHOLDER.sub(lambda m: "1" if m.group(0) == "<pk>" else "sample", path)
        try:
            adapter.match(concrete, method=method)
        except (NotFound, MethodNotAllowed):
            missing.append(f"{method} {path} (named in {', '.join(places)})")
    assert not missing, "routes the documentation names that the app does not have:\n" + "\n".join(missing)
