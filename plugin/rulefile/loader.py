"""Reading a programme: a directory's rule files (or one file) → a validated ``Programme``.

A programme is every ``*.yaml``/``*.yml`` file of one directory (sorted by name, not recursive,
hidden files skipped) or a single file.  The files are merged (each top-level section defined
once, lists concatenated), every item is validated on its own so all its problems are found,
then across items, then against the engine's limits.  All problems are collected, sorted and
raised together as :class:`~loyalty_ladder.errors.RuleFileError`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from marshmallow import ValidationError

import loyalty_ladder
from loyalty_ladder.errors import RuleFileError, RuleFileProblem
from loyalty_ladder.programme import Programme, Settings, Trigger
from loyalty_ladder.rewards import registry as reward_types
from loyalty_ladder.rulewords import AtKey, describe, unknown_key

from .crosscheck import cross_check
from .limits import check_limits
from .positions import Item, Source, parse_text, read_file
from .report import report_errors
from .schemas import (
    RewardSchema,
    RuleSchema,
    SettingsSchema,
    StageSchema,
    SubgroupSchema,
    json_friendly,
)
from .version import build

RULE_SUFFIXES = (".yaml", ".yml")
TOP_KEYS = ("programme", "stages", "subgroups", "rewards")


def default_programme_path() -> Path:
    """The default programme shipped inside the installed package."""
    return Path(loyalty_ladder.__file__).parent / "data" / "rules"


def validate(path: str | Path) -> list[RuleFileProblem]:
    """Every problem of the programme at ``path`` (a directory or a file); empty when valid."""
    _, problems = _load_path(Path(path))
    return problems


def load_programme(path: str | Path) -> Programme:
    """The programme at ``path`` (a directory or a file); raises ``RuleFileError``."""
    programme, problems = _load_path(Path(path))
    if problems or programme is None:
        raise RuleFileError(problems)
    return programme


def load_text(text: str, name: str = "<string>") -> Programme:
    """The programme of one file's ``text`` (for tests and docs); raises ``RuleFileError``."""
    programme, problems = _load_sources([parse_text(name, text)], source=name)
    if problems or programme is None:
        raise RuleFileError(problems)
    return programme


def _load_path(path: Path) -> tuple[Programme | None, list[RuleFileProblem]]:
    """The rule files of a directory (non-recursive) or the one file, loaded as one programme."""
    display = str(path)
    if path.is_dir():
        try:
            files = sorted(
                p for p in path.iterdir()
                if p.suffix in RULE_SUFFIXES and p.is_file() and not p.name.startswith(".")
            )
        except OSError as exc:
            return None, [RuleFileProblem(display, 1, 1, f"cannot read directory: {exc.strerror or exc}")]
        if not files:
            return None, [RuleFileProblem(
                display, 1, 1, "no rule files in this directory (a programme is its *.yaml and *.yml files)"
            )]
    elif path.exists():
        files = [path]
    else:
        return None, [RuleFileProblem(display, 1, 1, "no such file or directory")]
    return _load_sources([read_file(p) for p in files], source=display)


def _load_sources(sources: list[Source], source: str) -> tuple[Programme | None, list[RuleFileProblem]]:
    """Merge parsed files into one programme; every problem of every file, or the programme."""
    settings_raw: tuple[Source, Any] | None = None
    stages_defined: Source | None = None
    items: dict[str, list[Item]] = {"stages": [], "subgroups": [], "rewards": []}
    schemas: dict[str, type[RuleSchema]] = {"stages": StageSchema, "subgroups": SubgroupSchema, "rewards": RewardSchema}

    for src in sources:
        if not isinstance(src.data, dict):
            continue
        if not src.data:
            src.problem((), "empty rule file: expected a mapping with programme, stages, subgroups or rewards")
        for key, value in src.data.items():
            if key not in TOP_KEYS:
                src.problem((key,), unknown_key(key, TOP_KEYS), at_key=True)
                continue
            if key == "programme":
                if settings_raw is not None:
                    src.problem((key,), AtKey(f"'programme' is already defined at {settings_raw[0].where(('programme',))}"
                                              "; only one file of a programme may define it"))
                    continue
                settings_raw = (src, value)
                continue
            if key == "stages":
                if stages_defined is not None:
                    src.problem((key,), AtKey(f"'stages' is already defined at {stages_defined.where(('stages',))}"
                                              "; only one file of a programme may define them"))
                    continue
                stages_defined = src
                if not isinstance(value, list) or not value:
                    got = "an empty list" if value == [] else describe(value)
                    src.problem((key,), f"'stages' must be a non-empty list of stages, got {got}")
                    continue
            elif value is None:
                continue  # an empty `rewards:` section is harmless
            elif not isinstance(value, list):
                src.problem((key,), f"'{key}' must be a list, got {describe(value)}")
                continue
            for i, raw in enumerate(value):
                items[key].append(Item(src, (key, i), raw))

    if stages_defined is None and sources and all(not s.problems for s in sources):
        first = sources[0]
        first.problem((), "no stages: a programme needs a 'stages' list with at least one stage")

    # -- settings
    # Always through the schema, so a default and the same value written out are one programme.
    settings = Settings(**SettingsSchema().load({}))
    if settings_raw is not None:
        src, raw = settings_raw
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            src.problem(("programme",), f"'programme' must be a mapping, got {describe(raw)}")
        else:
            schema = SettingsSchema()
            try:
                settings = Settings(**schema.load(raw))
            except ValidationError as exc:
                report_errors(src, exc.messages, ("programme",), schema)

    # -- stages, subgroups, rewards, one item at a time so every item's problems are found
    for kind, kind_items in items.items():
        for item in kind_items:
            schema = schemas[kind]()
            if not isinstance(item.raw, dict):
                item.source.problem(item.path, f"each of '{kind}' must be a mapping with an 'id', "
                                               f"got {describe(item.raw)}")
                continue
            try:
                item.loaded = schema.load(item.raw)
            except ValidationError as exc:
                report_errors(item.source, exc.messages, item.path, schema)
    for reward in items["rewards"]:
        _load_params(reward)

    cross_check(items)

    problems = sorted(
        (p for s in sources for p in s.problems),
        key=lambda p: (p.path, p.line, p.column, p.message),
    )
    if problems:
        return None, problems
    programme = build(settings, items, source)
    limit_problems = check_limits(programme, items, sources)
    if limit_problems:
        return None, sorted(limit_problems, key=lambda p: (p.path, p.line, p.column, p.message))
    return programme, []


def _load_params(reward: Item) -> None:
    """Validate a reward's params by its type, even when the reward has other problems."""
    raw = reward.raw
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        return
    reward_type = reward_types.find(raw["type"])
    if reward_type is None:
        return  # RewardSchema already reported it
    params = raw.get("params", {})
    if not isinstance(params, dict):
        return  # RewardSchema already reported it
    schema = reward_type.params_schema()
    path = (*reward.path, "params")
    try:
        loaded = schema.load(params)
    except ValidationError as exc:
        report_errors(reward.source, exc.messages, path, schema)
        if reward.loaded is not None:
            reward.loaded = None
        return
    loaded = reward_type.rule_defaults(loaded, reward.id or "")
    if reward.loaded is not None:
        trigger: Trigger = reward.loaded["on"]
        problems = reward_type.trigger_problems(loaded, trigger)
        if problems:
            for key, message in problems.items():
                reward.source.problem((*path, key), AtKey(message))
            reward.loaded = None
            return
        reward.loaded["params"] = json_friendly(loaded)
