"""The words of rule-file problems, shared by every part of the validator.

How a value is described ("nothing (null)", "a list"), "did you mean" hints, and :class:`AtKey`
(a message that belongs at the key, not the value), so that every module says it the same way.
"""
from __future__ import annotations

import difflib
from typing import Any

#: marshmallow-style nested errors: key or list index -> messages or nested errors
Errors = dict[Any, Any]


class AtKey(str):
    """An error message that belongs at the *key* of its path, not at the value.

    Used for unknown, duplicate and surplus keys: the key is what the author must fix.
    """


def describe(value: Any) -> str:
    """A value as an author would recognise it in their file ("got nothing (null)", "got a list")."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if isinstance(value, str) else str(value)


def did_you_mean(name: Any, candidates: list[str] | tuple[str, ...]) -> str:
    """A " — did you mean 'x'?" hint for a near-miss, or nothing: typos are the commonest mistake."""
    match = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f" — did you mean '{match[0]}'?" if match else ""


def unknown_key(key: str, candidates: list[str] | tuple[str, ...]) -> AtKey:
    """An unknown key, at the key, with the closest allowed one or else all of them."""
    hint = did_you_mean(key, candidates)
    if not hint:
        hint = "; allowed: " + ", ".join(candidates)
    return AtKey(f"unknown key '{key}'{hint}")

