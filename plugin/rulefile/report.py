"""marshmallow's nested error messages → positioned problems in the rule files' words."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from marshmallow import Schema

from loyalty_ladder.rulewords import unknown_key

from .positions import Path_, Source


def _flatten(errors: Any, path: Path_) -> Iterator[tuple[Path_, Any]]:
    """(path, message) pairs from marshmallow's nested error messages."""
    if isinstance(errors, dict):
        for key, sub in errors.items():
            yield from _flatten(sub, path if key == "_schema" else (*path, key))
    elif isinstance(errors, list):
        for sub in errors:
            yield from _flatten(sub, path)
    else:
        yield path, errors


def report_errors(source: Source, errors: Any, prefix: Path_, schema: Schema) -> None:
    """Record marshmallow ``errors`` of ``schema`` loaded from ``prefix`` as problems."""
    known = [f.data_key or name for name, f in schema.load_fields.items()]
    for path, message in _flatten(errors, prefix):
        key = path[-1] if path else ""
        if message == "Unknown field.":
            source.problem(path, unknown_key(str(key), known), at_key=True)
        elif message == "Missing data for required field.":
            source.problem(path, _missing(source, path))
        elif message == "Field may not be null.":
            source.problem(path, f"'{key}' needs a value")
        elif isinstance(message, str) and message[:1].isupper():  # another marshmallow default
            source.problem(path, f"'{key}': {message[0].lower()}{message[1:]}")
        else:
            source.problem(path, message)


def _missing(source: Source, path: Path_) -> str:
    p = path
    while p and p not in source.positions:
        p = p[:-1]
    rest = ".".join(str(k) for k in path[len(p):])
    return f"missing required key '{rest}'"

