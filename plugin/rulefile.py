"""Rule files (YAML) → a validated :class:`~loyalty_ladder.programme.Programme`.

A programme is every ``*.yaml``/``*.yml`` file of one directory (sorted by name,
not recursive, hidden files skipped) or a single file.  Files are composed into
YAML nodes so every value keeps its position; each part is validated with a
marshmallow schema (``unknown=RAISE``) or a hand-written parser for the
recursive parts (conditions, triggers), and every error is reported as
``path:line:col: message`` with a hint.  All problems are collected, sorted and
raised together as :class:`~loyalty_ladder.errors.RuleFileError`.

The format is documented in ``docs/rules.md``.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

import loyalty_ladder
from loyalty_ladder import factspec
from loyalty_ladder.errors import RuleFileError, RuleFileProblem
from loyalty_ladder.programme import (
    EVENT_TRIGGERS,
    PERIODS,
    REWARD_TYPES,
    TRIGGERS,
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    Not,
    Programme,
    Reward,
    Settings,
    Stage,
    Subgroup,
    Trigger,
    canonical_json,
    condition_to_data,
)

__all__ = ["RULE_SUFFIXES", "default_programme_path", "load_programme", "load_text", "validate"]

RULE_SUFFIXES = (".yaml", ".yml")
TOP_KEYS = ("programme", "stages", "subgroups", "rewards")
ID_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")
CODE_PREFIX_PATTERN = re.compile(r"^[A-Z0-9-]{1,20}$")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
# "float-free": plain digits with an optional fraction, no exponent, no NaN/Infinity.
DECIMAL_PATTERN = re.compile(r"^[+-]?\d+(\.\d+)?$")
MAX_DECIMAL_PLACES = 4
NET_DAYS = (7, 15, 30, 45, 60, 90)
OCCASIONS = ("birthday", "holiday", "anniversary")
COMPARISON_OPS = factspec.ORDER_OPS + factspec.TAG_OPS
LOGIC_KEYS = ("all", "any", "not")

Path_ = tuple[Any, ...]  # a path into one file's data: mapping keys (str) and list indices (int)


class AtKey(str):
    """An error message that belongs at the *key* of its path, not at the value.

    Used for unknown, duplicate and surplus keys: the key is what the author must fix.
    """


# ============================================================ public API
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
    programme, problems = _load_sources([_parse_text(name, text)], source=name)
    if problems or programme is None:
        raise RuleFileError(problems)
    return programme


# ============================================================ reading files
@dataclass
class _Source:
    """One parsed rule file: its data and the YAML position of every path in it."""

    path: str
    data: Any = None
    positions: dict[Path_, tuple[yaml.Mark | None, yaml.Mark]] = field(default_factory=dict)
    problems: list[RuleFileProblem] = field(default_factory=list)

    def problem(self, path: Path_, message: str, at_key: bool = False) -> None:
        self.problems.append(self.problem_at(path, message, at_key))

    def problem_at(self, path: Path_, message: str, at_key: bool = False) -> RuleFileProblem:
        mark = self.mark(path, at_key or isinstance(message, AtKey))
        return RuleFileProblem(self.path, mark.line + 1, mark.column + 1, str(message))

    def mark(self, path: Path_, at_key: bool = False) -> yaml.Mark:
        """The mark of ``path``, or of its nearest ancestor present in the file."""
        p = path
        while p and p not in self.positions:
            p = p[:-1]
        if p not in self.positions:
            return _START
        key_mark, value_mark = self.positions[p]
        if at_key and p == path and key_mark is not None:
            return key_mark
        return value_mark

    def where(self, path: Path_) -> str:
        mark = self.mark(path)
        return f"{self.path}:{mark.line + 1}:{mark.column + 1}"


_START = yaml.Mark("", 0, 0, 0, None, None)


def _load_path(path: Path) -> tuple[Programme | None, list[RuleFileProblem]]:
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
    return _load_sources([_read_file(p) for p in files], source=display)


def _read_file(path: Path) -> _Source:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        source = _Source(str(path))
        source.problems.append(RuleFileProblem(str(path), 1, 1, f"not UTF-8 text: {exc.reason}"))
        return source
    except OSError as exc:
        source = _Source(str(path))
        source.problems.append(RuleFileProblem(str(path), 1, 1, f"cannot read file: {exc.strerror or exc}"))
        return source
    return _parse_text(str(path), text)


def _parse_text(name: str, text: str) -> _Source:
    """Compose one file into plain data plus positions; syntax errors become problems."""
    source = _Source(name)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark or _START
        message = f"YAML syntax error: {exc.problem or exc.context}"
        if exc.problem and exc.context and exc.context.startswith("expected"):
            # "expected a single document in the stream, but found another document"
            message = f"YAML syntax error: {exc.context}, {exc.problem}"
        elif exc.problem and exc.context:
            where = exc.context_mark
            message += f" ({exc.context}" + (f" at line {where.line + 1}" if where else "") + ")"
        source.problems.append(RuleFileProblem(name, mark.line + 1, mark.column + 1, message))
        return source
    except yaml.YAMLError as exc:  # a reader error without a mark (e.g. a control character)
        source.problems.append(RuleFileProblem(name, 1, 1, f"YAML syntax error: {exc}"))
        return source
    if node is None:
        source.problems.append(RuleFileProblem(
            name, 1, 1, "empty rule file: expected a mapping with programme, stages, subgroups or rewards"
        ))
        return source
    source.positions[()] = (None, node.start_mark)
    source.data = _node_data(node, (), source, SafeConstructor())
    if not isinstance(node, MappingNode):
        source.problem((), f"the top level must be a mapping with programme, stages, subgroups or rewards, "
                           f"not {_describe(source.data)}")
        source.data = None
    return source


def _node_data(node: Node, path: Path_, source: _Source, constructor: SafeConstructor) -> Any:
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                source.problems.append(_node_problem(source, key_node, "a key must be a plain name"))
                continue
            # The source text, not the resolved value: YAML 1.1 reads a bare `on` as true.
            key = key_node.value
            sub = (*path, key)
            if key in out:
                first = source.positions[sub][0] or source.positions[sub][1]
                source.problems.append(_node_problem(
                    source, key_node, f"duplicate key '{key}' (first at line {first.line + 1})"
                ))
                continue
            source.positions[sub] = (key_node.start_mark, value_node.start_mark)
            out[key] = _node_data(value_node, sub, source, constructor)
        return out
    if isinstance(node, SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            source.positions[(*path, i)] = (None, item.start_mark)
            items.append(_node_data(item, (*path, i), source, constructor))
        return items
    try:
        return constructor.construct_object(node, deep=True)
    except (ConstructorError, ValueError) as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        source.problems.append(_node_problem(source, node, f"cannot read this value: {problem}"))
        return None


def _node_problem(source: _Source, node: Node, message: str) -> RuleFileProblem:
    return RuleFileProblem(source.path, node.start_mark.line + 1, node.start_mark.column + 1, message)


# ============================================================ small helpers
def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if isinstance(value, str) else str(value)


def _did_you_mean(name: Any, candidates: list[str] | tuple[str, ...]) -> str:
    match = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f" — did you mean '{match[0]}'?" if match else ""


def _unknown_key(key: str, candidates: list[str] | tuple[str, ...]) -> AtKey:
    hint = _did_you_mean(key, candidates)
    if not hint:
        hint = "; allowed: " + ", ".join(candidates)
    return AtKey(f"unknown key '{key}'{hint}")


def _title(identifier: str) -> str:
    return identifier.replace("_", " ").replace("-", " ").title()


def _normal(d: Decimal) -> Decimal:
    """One representation per number ("300.00", 300 and 300.0 are all 300) so the version
    hash covers meaning, not spelling."""
    return Decimal(format(d.normalize(), "f"))


def _money(d: Decimal) -> Decimal:
    """Money with at least two decimal places ("5" → "5.00"), still one spelling per amount."""
    exponent = d.as_tuple().exponent
    return d.quantize(Decimal("0.01")) if isinstance(exponent, int) and exponent > -2 else d


def parse_decimal(value: Any) -> Decimal:
    """A Decimal from an int, a float-free decimal string or a YAML number (via ``str``).

    Raises ``ValueError`` with the reason; at most four decimal places.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError("not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError("not a number")  # noqa: TRY004 - callers report every bad literal alike
    if not DECIMAL_PATTERN.match(text):
        raise ValueError("not a plain decimal number")
    try:
        number = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already excludes it
        raise ValueError("not a number") from exc
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        raise ValueError(f"more than {MAX_DECIMAL_PLACES} decimal places")
    return _normal(number)


def _parse_time(value: Any) -> datetime:
    """An aware UTC datetime from a date or date-time (YAML timestamp or ISO string)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
    else:
        raise ValueError("not a date")  # noqa: TRY004 - callers report every bad literal alike
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _reason(value: Any, exc: ValueError) -> str:
    """Why a number-looking value was refused (" (more than 4 decimal places)"); nothing for the
    obviously wrong ones such as a list."""
    return f" ({exc})" if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ============================================================ marshmallow fields
class _Field(fields.Field):
    """A field whose messages name the key, in the rule files' words."""

    def key(self) -> str:
        return self.data_key or self.name or "value"


class _Int(_Field):
    def __init__(self, minimum: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.minimum = minimum

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> int:
        if not _is_int(value) or value < self.minimum:
            raise ValidationError(f"'{self.key()}' must be a whole number >= {self.minimum}, got {_describe(value)}")
        return int(value)


class _Number(_Field):
    """Money, ratio or any decimal number; kept as a normalised ``Decimal``."""

    def __init__(self, what: str = "an amount of money such as \"120.00\"", low: Decimal | None = None,
                 high: Decimal | None = None, low_open: bool = False, money: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.what, self.low, self.high, self.low_open, self.money = what, low, high, low_open, money

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Decimal:
        try:
            number = parse_decimal(value)
        except ValueError as exc:
            raise ValidationError(f"'{self.key()}' must be {self.what}, got {_describe(value)}{_reason(value, exc)}") from exc
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            bound = "greater than" if self.low_open else "at least"
            raise ValidationError(f"'{self.key()}' must be {bound} {self.low}, got {_describe(value)}")
        if self.high is not None and number > self.high:
            raise ValidationError(f"'{self.key()}' must be at most {self.high}, got {_describe(value)}")
        return _money(number) if self.money else number


class _Text(_Field):
    def __init__(self, pattern: re.Pattern[str] | None = None, what: str = "a non-empty text",
                 no_commas: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.pattern, self.what, self.no_commas = pattern, what, no_commas

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"'{self.key()}' must be {self.what}, got {_describe(value)}")
        if self.pattern is not None and not self.pattern.match(value):
            raise ValidationError(f"'{self.key()}' must be {self.what}, got {_describe(value)}")
        if self.no_commas and "," in value:
            raise ValidationError(f"'{self.key()}' must not contain commas (shops separate tags with them), "
                                  f"got {_describe(value)}")
        return value


class _Choice(_Field):
    def __init__(self, choices: tuple[Any, ...], what: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.choices, self.what = choices, what

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if value in self.choices and type(value) is type(self.choices[0]):
            return value
        listed = ", ".join(str(c) for c in self.choices)
        if self.what:
            hint = _did_you_mean(value, [str(c) for c in self.choices]) or f"; one of {listed}"
            raise ValidationError(f"unknown {self.what} {_describe(value)}{hint}")
        raise ValidationError(f"'{self.key()}' must be one of {listed}, got {_describe(value)}")


def _id_field(what: str, **kwargs: Any) -> _Text:
    return _Text(pattern=ID_PATTERN, what=f"{what} matching {ID_PATTERN.pattern} "
                                          "(lower-case letters, digits, '_' and '-')", **kwargs)


class _IdList(_Field):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> tuple:
        if not isinstance(value, list):
            raise ValidationError(f"'{self.key()}' must be a list of ids, got {_describe(value)}")
        errors: dict[int, list[str]] = {}
        for i, item in enumerate(value):
            if not isinstance(item, str) or not ID_PATTERN.match(item):
                errors[i] = [f"an id must match {ID_PATTERN.pattern}, got {_describe(item)}"]
        if errors:
            raise ValidationError(errors)
        return tuple(value)


class _ConditionField(_Field):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Condition:
        condition, errors = parse_condition(value)
        if errors:
            raise ValidationError(errors)
        assert condition is not None
        return condition


class _TriggerField(_Field):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Trigger:
        trigger, errors = parse_trigger(value)
        if errors:
            raise ValidationError(errors)
        assert trigger is not None
        return trigger


class _Mapping(_Field):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> dict:
        if not isinstance(value, dict):
            raise ValidationError(f"'{self.key()}' must be a mapping, got {_describe(value)}")
        return value


# ============================================================ schemas
class _Schema(Schema):
    class Meta:
        unknown = RAISE


class SettingsSchema(_Schema):
    name = _Text(load_default="")
    currency = _Text(pattern=CURRENCY_PATTERN, what="an ISO 4217 code of 3 upper-case letters such as EUR",
                     load_default="EUR")
    refund_window_days = _Int(minimum=0, load_default=30)
    default_margin = _Number(what="a share from 0 to 1 such as \"0.30\"", low=Decimal(0), high=Decimal(1),
                             money=False, load_default=Decimal("0.3"))
    image_client_tag = _Text(no_commas=True, load_default="image-client")


class StageSchema(_Schema):
    id = _id_field("a stage id", required=True)
    name = _Text()
    when = _ConditionField()
    min_stay_days = _Int(minimum=0, load_default=0)
    lapse_after_days = _Int(minimum=1, allow_none=True, load_default=None)


class SubgroupSchema(_Schema):
    id = _id_field("a subgroup id", required=True)
    name = _Text()
    when = _ConditionField()


class RewardSchema(_Schema):
    id = _id_field("a reward id", required=True)
    name = _Text()
    type = _Choice(REWARD_TYPES, what="reward type", required=True)
    on = _TriggerField(required=True)
    when = _ConditionField()
    subgroups = _IdList(load_default=())
    params = _Mapping(load_default=dict)


_POSITIVE = {"low": Decimal(0), "low_open": True}
NOTIFY_KINDS = ("promotional", "transactional")


class _Params(_Schema):
    """Keys every reward type accepts: ``notify`` says whether telling the customer is
    marketing (needs their consent) or a transactional notice of what they earned."""

    notify = _Choice(NOTIFY_KINDS)


class DiscountParams(_Params):
    percent = _Number(what="a percentage such as 10", high=Decimal(100), money=False, **_POSITIVE)
    amount = _Number(**_POSITIVE)
    expires_days = _Int(minimum=1, load_default=30)
    usage_limit = _Int(minimum=1, load_default=1)
    minimum_order = _Number(low=Decimal(0))
    code_prefix = _Text(pattern=CODE_PREFIX_PATTERN,
                        what=f"1 to 20 upper-case letters, digits or '-' ({CODE_PREFIX_PATTERN.pattern})")

    # The original data, not the loaded one: a key with a bad value still counts as given.
    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _one_of(self, data: dict[str, Any], original: dict[str, Any], **kwargs: Any) -> None:
        if "percent" in original and "amount" in original:
            raise ValidationError(AtKey("a discount is either 'percent' or 'amount', not both"), "amount")
        if "percent" not in original and "amount" not in original:
            raise ValidationError("a discount needs 'percent' (e.g. 10) or 'amount' (e.g. \"5.00\")")


class TagParams(_Params):
    tag = _Text(no_commas=True, required=True)


class PointsParams(_Params):
    points = _Int(minimum=1)
    points_per_unit = _Number(what="a number of points per currency unit such as \"1\"", money=False,
                              **_POSITIVE)
    expires_days = _Int(minimum=1, load_default=365)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _one_of(self, data: dict[str, Any], original: dict[str, Any], **kwargs: Any) -> None:
        if "points" in original and "points_per_unit" in original:
            raise ValidationError(AtKey("points are either 'points' or 'points_per_unit', not both"),
                                  "points_per_unit")
        if "points" not in original and "points_per_unit" not in original:
            raise ValidationError("a points reward needs 'points' (a fixed number) or 'points_per_unit' "
                                  "(per currency unit of an order)")


class GiftParams(_Params):
    description = _Text(required=True)
    value = _Number(low=Decimal(0), load_default=Decimal("0.00"))


class FreeServiceParams(_Params):
    service = _Text(required=True)
    value = _Number(low=Decimal(0))


class VipServiceParams(_Params):
    level = _Text(load_default="vip")
    tag = _Text(no_commas=True)


class DeferredPaymentParams(_Params):
    net_days = _Choice(NET_DAYS, required=True)
    credit_limit = _Number(required=True, **_POSITIVE)


class DebtForgivenessParams(_Params):
    max_amount = _Number(required=True, **_POSITIVE)


class GreetingParams(_Params):
    occasion = _Choice(OCCASIONS, load_default="birthday")
    message = _Text()


PARAMS_SCHEMAS: dict[str, type[_Schema]] = {
    "discount": DiscountParams,
    "tag": TagParams,
    "points": PointsParams,
    "gift": GiftParams,
    "free_service": FreeServiceParams,
    "vip_service": VipServiceParams,
    "deferred_payment": DeferredPaymentParams,
    "debt_forgiveness": DebtForgivenessParams,
    "greeting": GreetingParams,
}
assert set(PARAMS_SCHEMAS) == set(REWARD_TYPES)


def _json_friendly(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in params.items()}


# ============================================================ conditions
Errors = dict[Any, Any]


def parse_condition(raw: Any) -> tuple[Condition | None, Errors]:
    """A condition from rule-file data, or marshmallow-style nested errors (never both)."""
    if isinstance(raw, list):
        return _logic("all", raw, errors_key="_schema")
    if not isinstance(raw, dict):
        return None, {"_schema": [(
            f"a condition is a mapping such as {{fact: orders_count, gte: 1}} or all/any/not, "
            f"got {_describe(raw)}"
        )]}
    logic = [k for k in raw if k in LOGIC_KEYS]
    if logic:
        errors: Errors = {}
        for extra in raw:
            if extra in ("fact", *COMPARISON_OPS):
                errors[extra] = [AtKey(f"'{extra}' cannot sit beside '{logic[0]}': "
                                       "put the comparison inside the list")]
            elif extra not in LOGIC_KEYS:
                errors[extra] = [_unknown_key(extra, LOGIC_KEYS)]
        for extra in logic[1:]:
            errors[extra] = [AtKey(f"one condition holds one of all, any, not; found '{logic[0]}' and "
                                   f"'{extra}': nest them")]
        key = logic[0]
        if key == "not":
            item, sub = parse_condition(raw["not"])
            if sub:
                errors["not"] = sub
            return (None, errors) if errors else (Not(item), {})  # type: ignore[arg-type]
        condition, sub = _logic(key, raw[key], errors_key=key)
        errors.update(sub)
        return (None, errors) if errors else (condition, {})
    if "fact" in raw:
        return _comparison(raw)
    errors = {}
    for key in raw:
        if key not in COMPARISON_OPS:
            errors[key] = [_unknown_key(key, ("fact", *LOGIC_KEYS))]
    if not errors:
        errors["_schema"] = ["a condition needs 'fact' (a comparison) or one of all, any, not"]
    return None, errors


def _logic(key: str, raw: Any, errors_key: str) -> tuple[Condition | None, Errors]:
    if not isinstance(raw, list) or not raw:
        what = "an empty list" if raw == [] else _describe(raw)
        return None, {errors_key: [f"'{key}' needs a non-empty list of conditions, got {what}"]}
    items: list[Condition] = []
    errors: Errors = {}
    for i, item in enumerate(raw):
        condition, sub = parse_condition(item)
        if sub:
            errors[i] = sub
        elif condition is not None:
            items.append(condition)
    if errors:
        return None, ({errors_key: errors} if errors_key != "_schema" else errors)
    return (AllOf(tuple(items)) if key == "all" else AnyOf(tuple(items))), {}


_KIND_LABELS = {
    "count": "a count", "days": "a number of days", "money": "money", "number": "a number",
    "ratio": "a ratio", "bool": "true/false", "time": "a time", "tags": "a set of tags",
}
_KIND_WORDS = {
    "count": "a count: compare it with a whole number >= 0",
    "days": "a number of days: compare it with a whole number >= 0",
    "money": "money: compare it with an amount such as \"300.00\"",
    "number": "a number: compare it with a decimal number such as \"4.5\"",
    "ratio": "a ratio: compare it with a number from 0 to 1 such as \"0.6\"",
    "bool": "true/false: compare it with true or false",
    "time": "a time: compare it with an ISO date or date-time such as \"2026-01-31\"",
    "tags": "a set of tags: use contains with a tag name",
}


def _comparison(raw: dict[str, Any]) -> tuple[Condition | None, Errors]:
    errors: Errors = {}
    fact = raw["fact"]
    spec: factspec.FactSpec | None = None
    if not isinstance(fact, str):
        errors["fact"] = [f"'fact' must be a fact name, got {_describe(fact)}"]
    elif fact not in factspec.FACTS:
        hint = _did_you_mean(fact, list(factspec.FACTS)) or " (the facts are listed in docs/rules.md)"
        errors["fact"] = [f"unknown fact '{fact}'{hint}"]
    else:
        spec = factspec.FACTS[fact]
    allowed = spec.ops if spec else COMPARISON_OPS
    ops: list[str] = []
    for key in raw:
        if key == "fact":
            continue
        if key not in COMPARISON_OPS:
            hint = _did_you_mean(key, allowed) or "; operators: " + ", ".join(allowed)
            errors[key] = [AtKey(f"unknown operator '{key}'{hint}")]
        else:
            ops.append(key)
    if len(ops) > 1:
        for extra in ops[1:]:
            errors[extra] = [AtKey(f"a comparison takes exactly one operator, found '{ops[0]}' and '{extra}': "
                                   "write two comparisons inside all")]
    if not ops:
        if not any(k != "fact" for k in raw):
            errors["_schema"] = [f"the comparison on '{fact}' needs an operator: one of {', '.join(allowed)}"]
        return None, errors
    op = ops[0]
    if spec is None:
        return None, errors
    if op not in spec.ops:
        errors[op] = [AtKey(f"operator '{op}' does not apply to fact '{fact}' ({_KIND_LABELS[spec.kind]}): "
                            f"use {' or '.join(spec.ops)}")]
        return None, errors
    try:
        value = _literal(spec, raw[op])
    except ValueError as exc:
        errors[op] = [f"fact '{fact}' is {_KIND_WORDS[spec.kind]}, got {_describe(raw[op])}{exc}"]
        return None, errors
    if errors:
        return None, errors
    return Comparison(fact, op, value), {}


def _literal(spec: factspec.FactSpec, value: Any) -> Decimal | int | bool | str | datetime:
    """The typed literal of a comparison; ``ValueError`` carries an extra reason (or nothing)."""
    kind = spec.kind
    if kind in ("count", "days"):
        if not _is_int(value) or value < 0:
            raise ValueError("")
        return int(value)
    if kind in ("money", "number", "ratio"):
        try:
            number = parse_decimal(value)
        except ValueError as exc:
            raise ValueError(_reason(value, exc)) from exc
        if kind == "ratio" and not Decimal(0) <= number <= Decimal(1):
            raise ValueError(" (out of range)")
        return _money(number) if kind == "money" else number
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("")
        return value
    if kind == "time":
        try:
            return _parse_time(value)
        except ValueError as exc:
            raise ValueError("") from exc
    if kind == "tags":
        if not isinstance(value, str) or not value.strip() or "," in value:
            raise ValueError("")
        return value
    raise AssertionError(f"unhandled fact kind {kind}")  # pragma: no cover - factspec.KINDS is closed


# ============================================================ triggers
_STAGE_LIST_KINDS = ("stage", "order", "lapse")


def parse_trigger(raw: Any) -> tuple[Trigger | None, Errors]:
    """A reward's ``on:`` trigger from rule-file data, or nested errors (never both)."""
    if not isinstance(raw, dict):
        return None, {"_schema": [(
            f"'on' must be a mapping with one of {', '.join(TRIGGERS)}, such as {{stage: regular}}, "
            f"got {_describe(raw)}"
        )]}
    errors: Errors = {}
    kinds = [k for k in raw if k in TRIGGERS]
    for key in raw:
        if key not in TRIGGERS and key != "stages":
            errors[key] = [_unknown_key(key, (*TRIGGERS, "stages"))]
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
                hint = _did_you_mean(value, PERIODS) or "; one of " + ", ".join(PERIODS)
                errors[kind] = [f"unknown period {_describe(value)}{hint}"]
        else:
            if value in EVENT_TRIGGERS:
                event = value
            else:
                hint = _did_you_mean(value, EVENT_TRIGGERS) or "; one of " + ", ".join(EVENT_TRIGGERS)
                errors[kind] = [f"unknown event {_describe(value)}{hint}"]
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
        return (), [f"'{key}' needs {form}, got {_describe(value)}"]
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else _describe(value)
        return (), [f"'{key}' needs {form}, got {got}"]
    errors = {i: [f"a stage id must match {ID_PATTERN.pattern}, got {_describe(item)}"]
              for i, item in enumerate(value) if not isinstance(item, str) or not ID_PATTERN.match(item)}
    if errors:
        return (), errors
    return tuple(value), None


# ============================================================ the programme
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


def _report(source: _Source, errors: Any, prefix: Path_, schema: Schema) -> None:
    """Record marshmallow ``errors`` of ``schema`` loaded from ``prefix`` as problems."""
    known = [f.data_key or name for name, f in schema.load_fields.items()]
    for path, message in _flatten(errors, prefix):
        key = path[-1] if path else ""
        if message == "Unknown field.":
            source.problem(path, _unknown_key(str(key), known), at_key=True)
        elif message == "Missing data for required field.":
            source.problem(path, _missing(source, path))
        elif message == "Field may not be null.":
            source.problem(path, f"'{key}' needs a value")
        elif isinstance(message, str) and message[:1].isupper():  # another marshmallow default
            source.problem(path, f"'{key}': {message[0].lower()}{message[1:]}")
        else:
            source.problem(path, message)


def _missing(source: _Source, path: Path_) -> str:
    p = path
    while p and p not in source.positions:
        p = p[:-1]
    rest = ".".join(str(k) for k in path[len(p):])
    return f"missing required key '{rest}'"


@dataclass
class _Item:
    """One stage, subgroup or reward as written, with its file and path."""

    source: _Source
    path: Path_
    raw: Any
    loaded: dict[str, Any] | None = None

    @property
    def id(self) -> str | None:
        value = self.raw.get("id") if isinstance(self.raw, dict) else None
        return value if isinstance(value, str) else None


def _load_sources(sources: list[_Source], source: str) -> tuple[Programme | None, list[RuleFileProblem]]:
    settings_raw: tuple[_Source, Any] | None = None
    stages_defined: _Source | None = None
    items: dict[str, list[_Item]] = {"stages": [], "subgroups": [], "rewards": []}
    schemas: dict[str, type[_Schema]] = {"stages": StageSchema, "subgroups": SubgroupSchema, "rewards": RewardSchema}

    for src in sources:
        if not isinstance(src.data, dict):
            continue
        if not src.data:
            src.problem((), "empty rule file: expected a mapping with programme, stages, subgroups or rewards")
        for key, value in src.data.items():
            if key not in TOP_KEYS:
                src.problem((key,), _unknown_key(key, TOP_KEYS), at_key=True)
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
                    got = "an empty list" if value == [] else _describe(value)
                    src.problem((key,), f"'stages' must be a non-empty list of stages, got {got}")
                    continue
            elif value is None:
                continue  # an empty `rewards:` section is harmless
            elif not isinstance(value, list):
                src.problem((key,), f"'{key}' must be a list, got {_describe(value)}")
                continue
            for i, raw in enumerate(value):
                items[key].append(_Item(src, (key, i), raw))

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
            src.problem(("programme",), f"'programme' must be a mapping, got {_describe(raw)}")
        else:
            schema = SettingsSchema()
            try:
                settings = Settings(**schema.load(raw))
            except ValidationError as exc:
                _report(src, exc.messages, ("programme",), schema)

    # -- stages, subgroups, rewards, one item at a time so every item's problems are found
    for kind, kind_items in items.items():
        for item in kind_items:
            schema = schemas[kind]()
            if not isinstance(item.raw, dict):
                item.source.problem(item.path, f"each of '{kind}' must be a mapping with an 'id', "
                                               f"got {_describe(item.raw)}")
                continue
            try:
                item.loaded = schema.load(item.raw)
            except ValidationError as exc:
                _report(item.source, exc.messages, item.path, schema)
    for reward in items["rewards"]:
        _load_params(reward)

    _cross_check(items)

    problems = sorted(
        (p for s in sources for p in s.problems),
        key=lambda p: (p.path, p.line, p.column, p.message),
    )
    if problems:
        return None, problems
    programme = _build(settings, items, source)
    limit_problems = _check_limits(programme, items, sources)
    if limit_problems:
        return None, sorted(limit_problems, key=lambda p: (p.path, p.line, p.column, p.message))
    return programme, []


def _load_params(reward: _Item) -> None:
    """Validate a reward's params by its type, even when the reward has other problems."""
    raw = reward.raw
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or raw["type"] not in PARAMS_SCHEMAS:
        return
    params = raw.get("params", {})
    if not isinstance(params, dict):
        return  # RewardSchema already reported it
    schema = PARAMS_SCHEMAS[raw["type"]]()
    path = (*reward.path, "params")
    try:
        loaded = schema.load(params)
    except ValidationError as exc:
        _report(reward.source, exc.messages, path, schema)
        if reward.loaded is not None:
            reward.loaded = None
        return
    if raw["type"] == "discount" and "code_prefix" not in loaded and reward.id:
        loaded["code_prefix"] = reward.id.upper().replace("_", "-")[:20]
    if reward.loaded is not None:
        trigger: Trigger = reward.loaded["on"]
        if "points_per_unit" in loaded and trigger.kind != "order":
            reward.source.problem((*path, "points_per_unit"), AtKey(
                f"'points_per_unit' needs an 'order' trigger (points per currency unit of an order), "
                f"not '{trigger.kind}'; use 'points' for a fixed number"
            ))
            reward.loaded = None
            return
        reward.loaded["params"] = _json_friendly(loaded)


def _cross_check(items: dict[str, list[_Item]]) -> None:
    """Checks across items and files: ids, references, catch-all order, lapse."""
    first_seen: dict[str, dict[str, _Item]] = {}
    for kind, kind_items in items.items():
        seen = first_seen.setdefault(kind, {})
        for item in kind_items:
            if item.id is None:
                continue
            if item.id in seen:
                first = seen[item.id]
                item.source.problem((*item.path, "id"), f"duplicate {kind[:-1]} id '{item.id}' "
                                                        f"(first defined at {first.source.where((*first.path, 'id'))})")
            else:
                seen[item.id] = item
    stage_ids = list(first_seen["stages"])
    subgroup_ids = list(first_seen["subgroups"])
    lapsing = {i.id for i in items["stages"] if isinstance(i.raw, dict) and i.raw.get("lapse_after_days")}

    # catch-all subgroup must be last
    subgroups = items["subgroups"]
    for n, item in enumerate(subgroups[:-1]):
        if isinstance(item.raw, dict) and "when" not in item.raw and item.id:
            later = ", ".join(f"'{s.id}'" for s in subgroups[n + 1:] if s.id)
            item.source.problem(item.path, f"subgroup '{item.id}' has no 'when' (a catch-all) but is not last: "
                                           f"{later} could never be chosen; move it to the end")

    for reward in items["rewards"]:
        raw = reward.raw
        if not isinstance(raw, dict):
            continue
        label = f"reward '{reward.id}'" if reward.id else "this reward"
        trigger = raw.get("on")
        if isinstance(trigger, dict):
            for key in ("stage", "order", "lapse", "stages"):
                for path, ref in _refs(trigger.get(key), (*reward.path, "on", key)):
                    if ref == "any" and key in ("order", "lapse"):
                        if key == "lapse" and not lapsing and stage_ids:
                            reward.source.problem(path, f"{label} is triggered on lapse, but no stage has "
                                                        "'lapse_after_days', so nobody can lapse")
                        continue
                    if ref not in stage_ids:
                        if stage_ids:
                            hint = _did_you_mean(ref, stage_ids) or "; stages: " + ", ".join(stage_ids)
                            reward.source.problem(path, f"unknown stage '{ref}'{hint}")
                    elif key == "lapse" and ref not in lapsing:
                        reward.source.problem(path, f"{label} is triggered on lapse in stage '{ref}', which has "
                                                    "no 'lapse_after_days', so it can never lapse")
        for path, ref in _refs(raw.get("subgroups"), (*reward.path, "subgroups")):
            if ref not in subgroup_ids:
                hint = _did_you_mean(ref, subgroup_ids) or (
                    "; subgroups: " + ", ".join(subgroup_ids) if subgroup_ids else "; the programme has no subgroups"
                )
                reward.source.problem(path, f"unknown subgroup '{ref}'{hint}")


def _refs(value: Any, path: Path_) -> Iterator[tuple[Path_, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, ref in enumerate(value):
            if isinstance(ref, str):
                yield (*path, i), ref


def _build(settings: Settings, items: dict[str, list[_Item]], source: str) -> Programme:
    stages = tuple(
        Stage(id=d["id"], name=d.get("name") or _title(d["id"]), when=d.get("when"),
              min_stay_days=d["min_stay_days"], lapse_after_days=d["lapse_after_days"])
        for d in (i.loaded for i in items["stages"] if i.loaded is not None)
    )
    subgroups = tuple(
        Subgroup(id=d["id"], name=d.get("name") or _title(d["id"]), when=d.get("when"))
        for d in (i.loaded for i in items["subgroups"] if i.loaded is not None)
    )
    rewards = tuple(
        Reward(id=d["id"], type=d["type"], trigger=d["on"], when=d.get("when"), subgroups=d["subgroups"],
               params=d["params"], name=d.get("name") or _title(d["id"]))
        for d in (i.loaded for i in items["rewards"] if i.loaded is not None)
    )
    programme = Programme(settings=settings, stages=stages, subgroups=subgroups, rewards=rewards, source=source)
    return Programme(settings=settings, stages=stages, subgroups=subgroups, rewards=rewards, source=source,
                     canonical=canonical_json(programme_data(programme)))


def programme_data(programme: Programme) -> dict[str, Any]:
    """The normalised data of a programme: what its version hash covers.

    Defaults are filled in; comments, formatting, file boundaries, number spelling and
    the order of rewards (which has no meaning) are not part of it.
    """
    s = programme.settings
    return {
        "programme": {
            "name": s.name, "currency": s.currency, "refund_window_days": s.refund_window_days,
            "default_margin": str(s.default_margin), "image_client_tag": s.image_client_tag,
        },
        "stages": [
            {"id": st.id, "name": st.name, "when": condition_to_data(st.when), "min_stay_days": st.min_stay_days,
             "lapse_after_days": st.lapse_after_days}
            for st in programme.stages
        ],
        "subgroups": [
            {"id": sg.id, "name": sg.name, "when": condition_to_data(sg.when)} for sg in programme.subgroups
        ],
        "rewards": sorted(
            (
                {"id": r.id, "name": r.name, "type": r.type,
                 "on": {"kind": r.trigger.kind, "stages": sorted(r.trigger.stages), "every": r.trigger.every,
                        "event": r.trigger.event},
                 "when": condition_to_data(r.when), "subgroups": sorted(r.subgroups), "params": dict(r.params)}
                for r in programme.rewards
            ),
            key=lambda r: r["id"],
        ),
    }


# ============================================================ engine limits
def _check_limits(programme: Programme, items: dict[str, list[_Item]],
                  sources: list[_Source]) -> list[RuleFileProblem]:
    """Refuse programmes the engine cannot compile safely.

    durable_rules freezes (GIL held, 100 % CPU) building a ruleset with about 512 tests on
    one field, and rejects facts with 254+ properties: ``engine.LIMITS`` keeps well below.
    """
    # Imported here: the engine (and durable_rules) is only needed once the file is valid.
    from loyalty_ladder import engine

    limits = engine.LIMITS
    problems: list[RuleFileProblem] = []
    first_use = _comparison_positions(items)
    fallback = sources[0]
    per_field = engine.tests_per_fact(programme)
    for name, count in sorted(per_field.items()):
        if count > limits["tests_per_field"]:
            fact = _fact_of_field(name)
            src, path = first_use.get(fact, (fallback, ()))
            subject = f"fact '{fact}'" if fact in factspec.FACTS else f"engine field '{name}'"
            problems.append(src.problem_at(path, (
                f"{subject} needs {count} engine tests (field '{name}'), more than the limit of "
                f"{limits['tests_per_field']}: the rule engine freezes compiling ~512 tests on one field; "
                "use fewer distinct thresholds on this fact"
            )))
    all_items = [i for kind in ("stages", "subgroups", "rewards") for i in items[kind]]
    if len(all_items) > limits["conditions"]:
        over = all_items[limits["conditions"]]
        problems.append(over.source.problem_at(over.path, (
            f"the programme has {len(all_items)} stages, subgroups and rewards, more than the engine limit of "
            f"{limits['conditions']} conditions; split it into several programmes"
        )))
    if len(per_field) > limits["fields"]:
        problems.append(fallback.problem_at((), (
            f"the programme posts {len(per_field)} fields to the engine, more than the limit of "
            f"{limits['fields']} (durable_rules rejects facts with 254 or more properties); "
            "use fewer distinct tags in 'contains'"
        )))
    # Whatever else the engine would refuse (e.g. two literals of one fact that are the same
    # double), so that a programme that validates also compiles. The limits are reported above,
    # with positions.
    for message in engine.check_programme(programme):
        if _LIMIT_MESSAGE.match(message):
            continue
        named = re.search(r"of '([a-z0-9_]+)'", message)
        src, path = first_use.get(named.group(1), (fallback, ())) if named else (fallback, ())
        problems.append(src.problem_at(path, f"the rule engine cannot compile this programme: {message}"))
    return problems


_LIMIT_MESSAGE = re.compile(r"^(field '[^']*' needs \d+ engine tests|the programme (has|posts) \d+ )")


def _fact_of_field(name: str) -> str:
    """The fact behind an engine field: ``has__<fact>`` and ``tag__<tag>`` are derived fields."""
    if name.startswith("has__"):
        return name[len("has__"):]
    if name.startswith("tag__"):
        return "tags"
    return name


def _comparison_positions(items: dict[str, list[_Item]]) -> dict[str, tuple[_Source, Path_]]:
    """The first comparison naming each fact, for pointing at it."""
    out: dict[str, tuple[_Source, Path_]] = {}

    def walk(src: _Source, raw: Any, path: Path_) -> None:
        if isinstance(raw, dict):
            fact = raw.get("fact")
            if isinstance(fact, str):
                out.setdefault(fact, (src, (*path, "fact")))
            for key in LOGIC_KEYS:
                if key in raw:
                    walk(src, raw[key], (*path, key))
        elif isinstance(raw, list):
            for i, sub in enumerate(raw):
                walk(src, sub, (*path, i))

    for kind in ("stages", "subgroups", "rewards"):
        for item in items[kind]:
            if isinstance(item.raw, dict) and "when" in item.raw:
                walk(item.source, item.raw["when"], (*item.path, "when"))
    return out
