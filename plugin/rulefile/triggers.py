"""Reward triggers (``on:``) from rule-file data into :class:`~loyalty_ladder.programme.Trigger`.

Parsed by hand like conditions (a trigger's keys depend on its kind), answering with
marshmallow-style nested errors for the schema field to position.
"""
from __future__ import annotations

from typing import Any

from loyalty_ladder.programme import EVENT_TRIGGERS, PERIODS, TRIGGERS, Trigger
from loyalty_ladder.rulewords import ID_PATTERN, AtKey, Errors, describe, did_you_mean, unknown_key

_STAGE_LIST_KINDS = ("stage", "order", "lapse")


def parse_trigger(raw: Any) -> tuple[Trigger | None, Errors]:
    """A reward's ``on:`` trigger from rule-file data, or nested errors (never both)."""
    if not isinstance(raw, dict):
        return None, {"_schema": [(
            f"'on' must be a mapping with one of {', '.join(TRIGGERS)}, such as {{stage: regular}}, "
            f"got {describe(raw)}"
        )]}
    errors: Errors = {}
    kinds = [k for k in raw if k in TRIGGERS]
    for key in raw:
        if key not in TRIGGERS and key != "stages":
            errors[key] = [unknown_key(key, (*TRIGGERS, "stages"))]
    if not kinds:
        if not errors:
            errors["_schema"] = [f"a trigger needs one of {', '.join(TRIGGERS)}"]
        return None, errors
    for extra in kinds[1:]:
        errors[extra] = [AtKey(f"a trigger has exactly one of {', '.join(TRIGGERS)}; found '{kinds[0]}' "
                               f"and '{extra}': write two rewards")]
    kind = kinds[0]
    value = raw[kind]
    stages: tuple[str, ...] = ()
    every: str | None = None
    event: str | None = None
    if kind in _STAGE_LIST_KINDS:
        if "stages" in raw:
            errors["stages"] = [AtKey(f"'stages' does not go with '{kind}': list the stages in '{kind}' itself")]
        if kind != "stage" and value == "any":
            stages = ()
        else:
            stages, sub = _stage_ids(value, allow_any=kind != "stage", key=kind)
            if sub:
                errors[kind] = sub
    else:
        if kind == "period":
            if value in PERIODS:
                every = value
            else:
                hint = did_you_mean(value, PERIODS) or "; one of " + ", ".join(PERIODS)
                errors[kind] = [f"unknown period {describe(value)}{hint}"]
        else:
            if value in EVENT_TRIGGERS:
                event = value
            else:
                hint = did_you_mean(value, EVENT_TRIGGERS) or "; one of " + ", ".join(EVENT_TRIGGERS)
                errors[kind] = [f"unknown event {describe(value)}{hint}"]
        if "stages" in raw:
            stages, sub = _stage_ids(raw["stages"], allow_any=False, key="stages", require_list=True)
            if sub:
                errors["stages"] = sub
    if errors:
        return None, errors
    return Trigger(kind=kind, stages=stages, every=every, event=event), {}


def _stage_ids(value: Any, allow_any: bool, key: str, require_list: bool = False) -> tuple[tuple[str, ...], Any]:
    form = "a stage id or a list of stage ids" if not require_list else "a list of stage ids"
    if allow_any:
        form = "any, " + form
    if isinstance(value, str) and not require_list:
        if ID_PATTERN.match(value):
            return (value,), None
        return (), [f"'{key}' needs {form}, got {describe(value)}"]
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else describe(value)
        return (), [f"'{key}' needs {form}, got {got}"]
    errors = {i: [f"a stage id must match {ID_PATTERN.pattern}, got {describe(item)}"]
              for i, item in enumerate(value) if not isinstance(item, str) or not ID_PATTERN.match(item)}
    if errors:
        return (), errors
    return tuple(value), None

