"""YAML with positions: rule-file text as plain data plus the line and column of every path.

PyYAML's loaders drop positions, so files are *composed* into nodes and turned into data here,
recording for each path (mapping keys and list indices) the mark of its key and of its value.
Every problem can then be reported as ``path:line:col``, at the key or at the value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from loyalty_ladder.errors import RuleFileProblem
from loyalty_ladder.rulewords import AtKey, describe

Path_ = tuple[Any, ...]  # a path into one file's data: mapping keys (str) and list indices (int)


@dataclass
class Source:
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
            return START
        key_mark, value_mark = self.positions[p]
        if at_key and p == path and key_mark is not None:
            return key_mark
        return value_mark

    def where(self, path: Path_) -> str:
        mark = self.mark(path)
        return f"{self.path}:{mark.line + 1}:{mark.column + 1}"


START = yaml.Mark("", 0, 0, 0, None, None)


@dataclass
class Item:
    """One stage, subgroup or reward as written, with its file and path."""

    source: Source
    path: Path_
    raw: Any
    loaded: dict[str, Any] | None = None

    @property
    def id(self) -> str | None:
        value = self.raw.get("id") if isinstance(self.raw, dict) else None
        return value if isinstance(value, str) else None


def read_file(path: Path) -> Source:
    """One rule file from disk; unreadable or non-UTF-8 files become a problem at 1:1."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        source = Source(str(path))
        source.problems.append(RuleFileProblem(str(path), 1, 1, f"not UTF-8 text: {exc.reason}"))
        return source
    except OSError as exc:
        source = Source(str(path))
        source.problems.append(RuleFileProblem(str(path), 1, 1, f"cannot read file: {exc.strerror or exc}"))
        return source
    return parse_text(str(path), text)


def parse_text(name: str, text: str) -> Source:
    """Compose one file into plain data plus positions; syntax errors become problems."""
    source = Source(name)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark or START
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
                           f"not {describe(source.data)}")
        source.data = None
    return source


def _node_data(node: Node, path: Path_, source: Source, constructor: SafeConstructor) -> Any:
    """Plain data of ``node``, recording the position of every path below ``path``."""
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


def _node_problem(source: Source, node: Node, message: str) -> RuleFileProblem:
    return RuleFileProblem(source.path, node.start_mark.line + 1, node.start_mark.column + 1, message)

