"""Reading a programme: a directory's rule files (or one file) → a validated ``Programme``.

A programme is every ``*.yaml``/``*.yml`` file of one directory (sorted by name, not recursive,
hidden files skipped) or a single file.  The files are merged (each top-level section defined
once, lists concatenated), every item is validated on its own so all its problems are found,
then across items, then against the engine's limits.  All problems are collected, sorted and
raised together as :class:`~loyalty_ladder.errors.RuleFileError`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
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


def validate_texts(files: Mapping[str, Any], source: str = "<upload>") -> list[RuleFileProblem]:
    """Every problem of the programme made of ``files`` ({file name: text}); empty when valid."""
    _, problems = _load_texts(files, source)
    return problems


def load_texts(files: Mapping[str, Any], source: str = "<upload>") -> Programme:
    """The programme made of ``files`` ({file name: text}, e.g. an upload through the API),
    validated exactly like a directory holding those files: merged in name order, every problem
    as ``name:line:col: message``.  Names are plain ``*.yaml``/``*.yml`` file names (no
    directories, not hidden); raises ``RuleFileError``."""
    programme, problems = _load_texts(files, source)
    if problems or programme is None:
        raise RuleFileError(problems)
    return programme


#: the longest file name an upload may use
MAX_NAME = 255


def file_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a rule file of an upload, or None."""
    if not isinstance(name, str) or not name:
        return "a rule file needs a name such as ladder.yaml"
    if len(name) > MAX_NAME:
        return f"a rule file's name is at most {MAX_NAME} characters"
    if "/" in name or "\\" in name:
        return "a rule file's name is a plain file name, without directories"
    if name.startswith("."):
        return "a rule file's name must not start with '.' (hidden files are not part of a programme)"
    if not name.endswith(RULE_SUFFIXES):
        return "a rule file's name ends with .yaml or .yml"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a rule file's name must not contain control characters"
    return None


def _load_texts(files: Mapping[str, Any], source: str) -> tuple[Programme | None, list[RuleFileProblem]]:
    if not isinstance(files, Mapping) or not files:
        return None, [RuleFileProblem(source, 1, 1, "no rule files: a programme is one or more *.yaml "
                                                    "or *.yml files, {name: text}")]
    problems = []
    for name, text in files.items():
        why = file_name_problem(name)
        if why is not None:
            problems.append(RuleFileProblem(str(name), 1, 1, why))
        elif not isinstance(text, str):
            problems.append(RuleFileProblem(name, 1, 1, "a rule file's content must be text (a string)"))
    if problems:
        return None, sorted(problems, key=lambda p: (p.path, p.message))
    return _load_sources([parse_text(name, files[name]) for name in sorted(files)], source=source)


def rule_file_data(canonical: Mapping[str, Any]) -> dict[str, Any]:
    """The normalised data of a programme (:func:`~.version.programme_data`, as stored in
    ``programme_versions.canonical``) written back as rule-file data: a rule file of the same
    version.  For versions stored before their files' text was kept.

    The normalised form sorts a trigger's stages and a reward's subgroups (their order has no
    meaning); they are written back in ladder order, the way rule files usually list them."""
    def item(raw: Mapping[str, Any], *skip: str) -> dict[str, Any]:
        return {k: v for k, v in raw.items() if k not in skip and not (k == "when" and v is None)
                and not (k == "lapse_after_days" and v is None)}

    def in_order(ids: Any, order: list[str]) -> list[str]:
        return sorted(ids or (), key=lambda i: (order.index(i) if i in order else len(order), i))

    stage_order = [s["id"] for s in canonical.get("stages", ())]
    subgroup_order = [s["id"] for s in canonical.get("subgroups", ())]
    rewards = []
    for raw in canonical.get("rewards", ()):
        on = raw["on"]
        kind, stages = on["kind"], in_order(on.get("stages"), stage_order)
        if kind == "period":
            trigger: dict[str, Any] = {"period": on["every"]}
        elif kind == "event":
            trigger = {"event": on["event"]}
        else:
            trigger = {kind: stages or "any"}
            stages = []
        if stages:
            trigger["stages"] = stages
        reward = item(raw, "on")
        reward["on"] = trigger
        if reward.get("subgroups"):
            reward["subgroups"] = in_order(reward["subgroups"], subgroup_order)
        else:
            reward.pop("subgroups", None)
        rewards.append(reward)
    settings = {k: v for k, v in canonical["programme"].items() if not (k == "name" and v == "")}  # the default
    return {"programme": settings,
            "stages": [item(s) for s in canonical.get("stages", ())],
            "subgroups": [item(s) for s in canonical.get("subgroups", ())],
            "rewards": rewards}


def load_canonical(canonical: str, source: str = "<stored>") -> Programme:
    """The programme of a stored version's normalised JSON (see :func:`rule_file_data`);
    raises ``RuleFileError``."""
    text = json.dumps(rule_file_data(json.loads(canonical)), ensure_ascii=False, indent=1)
    programme, problems = _load_sources([parse_text(source, text)], source=source)
    if problems or programme is None:
        raise RuleFileError(problems)
    return programme


def load_programme_files(path: str | Path) -> tuple[Programme, dict[str, str]]:
    """The programme at ``path`` (a directory or a file) and its rule files' text as read,
    ``{file name: text}`` (what a stored version keeps; :func:`load_texts` loads it back to the
    same version); raises ``RuleFileError``."""
    texts: dict[str, str] = {}
    programme, problems = _load_path(Path(path), texts)
    if problems or programme is None:
        raise RuleFileError(problems)
    return programme, texts


def load_programme_items(path: str | Path) -> tuple[Programme, dict[str, list[Item]]]:
    """The programme at ``path`` and its items as read — each stage, subgroup and reward with its
    file and path, ``{"stages": […], "subgroups": […], "rewards": […]}`` in programme order — for
    checks that report positions after the build (:mod:`.lint`); raises ``RuleFileError``."""
    items: dict[str, list[Item]] = {}
    programme, problems = _load_path(Path(path), items_out=items)
    if problems or programme is None:
        raise RuleFileError(problems)
    return programme, items


def _read(path: Path, texts: dict[str, str] | None) -> Source:
    if texts is None:
        return read_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return read_file(path)  # the same problem, worded once
    name = path.name if file_name_problem(path.name) is None else f"{path.stem or 'rules'}.yaml"
    texts[name] = text
    return parse_text(str(path), text)


def _load_path(path: Path, texts: dict[str, str] | None = None,
               items_out: dict[str, list[Item]] | None = None) -> tuple[Programme | None, list[RuleFileProblem]]:
    """The rule files of a directory (non-recursive) or the one file, loaded as one programme;
    each file's text is kept in ``texts`` when given, the items of a valid one in ``items_out``."""
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
    return _load_sources([_read(p, texts) for p in files], source=display, items_out=items_out)


def _load_sources(sources: list[Source], source: str,
                  items_out: dict[str, list[Item]] | None = None) -> tuple[Programme | None, list[RuleFileProblem]]:
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
    if items_out is not None:
        items_out.update(items)
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
