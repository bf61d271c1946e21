"""Every YAML example in docs/rules.md says what it is, and is checked to be so.

Before an example, HTML comments state the claim (see the comment at the top of docs/rules.md):

* ``<!-- expect: valid -->`` — the following block(s) form a programme that validates;
* ``<!-- expect: error "path:line:col: message" -->`` (repeatable) — exactly these problems;
* ``<!-- expect: condition -->`` — each following block is ``when: <condition>`` and parses;
* ``<!-- context: default-programme -->`` — the blocks are extra files beside ``rules/ladder.yaml``;
* ``<!-- expect: simulate … -->`` — a simulation claim, checked by the simulation tests; here it
  only implies the programme validates.

A block's ``title="…"`` is its file name. Blocks following one set of comments without a new
``expect:`` comment are further files of the same programme.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from loyalty_ladder import rulefile

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "rules.md"

COMMENT = re.compile(r"^<!--\s*(expect|context):\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r'^```yaml(?:\s+title="([^"]+)")?\s*$')
ERROR_ARG = re.compile(r'^error\s+"((?:[^"\\]|\\.)*)"$')
KNOWN_KINDS = ("valid", "error", "condition", "simulate")


@dataclass
class Example:
    line: int  # of the first block, for test ids
    kind: str
    errors: list[str] = field(default_factory=list)
    context: str = ""
    files: list[tuple[str, str]] = field(default_factory=list)  # (title, text)
    simulate: list[str] = field(default_factory=list)


def parse_examples(text: str) -> list[Example]:
    """The examples of a markdown text, each with its claims; a block without a claim is an error."""
    examples: list[Example] = []
    pending: list[tuple[str, str]] = []  # (expect|context, argument) comments not yet used
    current: Example | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        comment = COMMENT.match(line)
        fence = FENCE.match(line)
        if comment:
            pending.append((comment.group(1), comment.group(2)))
            current = None
        elif fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            body = "\n".join(lines[i + 1:end]) + "\n"
            title = fence.group(1) or "example.yaml"
            if pending:
                current = _example(pending, i + 1)
                examples.append(current)
                pending = []
            if current is None:
                raise AssertionError(f"docs/rules.md:{i + 1}: a yaml block without an <!-- expect: … --> comment")
            current.files.append((title, body))
            i = end
        elif line.startswith("#"):
            current = None  # a heading ends an example
        i += 1
    assert not pending, f"expectations without a block: {pending}"
    return examples


def _example(comments: list[tuple[str, str]], line: int) -> Example:
    kinds = []
    example = Example(line=line, kind="")
    for what, arg in comments:
        if what == "context":
            assert arg == "default-programme", f"docs/rules.md:{line}: unknown context {arg!r}"
            example.context = arg
            continue
        kind = arg.split(None, 1)[0] if arg else ""
        assert kind in KNOWN_KINDS, f"docs/rules.md:{line}: unknown expectation {arg!r}"
        if kind == "error":
            match = ERROR_ARG.match(arg)
            assert match, f"docs/rules.md:{line}: write errors as error \"path:line:col: message\""
            example.errors.append(match.group(1).replace('\\"', '"').replace("\\\\", "\\"))
        elif kind == "simulate":
            example.simulate.append(arg)
        kinds.append(kind)
    main = {k for k in kinds if k != "simulate"} or {"valid"}
    assert len(main) == 1, f"docs/rules.md:{line}: conflicting expectations {sorted(main)}"
    example.kind = main.pop()
    assert not (example.kind == "error" and example.simulate), "an invalid programme cannot simulate"
    return example


EXAMPLES = parse_examples(DOC.read_text(encoding="utf-8"))


def _write(example: Example, root: Path) -> Path:
    """Write the example's files under ``root``; the path to validate, relative to ``root``."""
    dirs = {str(Path(title).parent) for title, _ in example.files}
    assert len(dirs) == 1, "all files of one example live in one directory"
    for title, body in example.files:
        target = root / title
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    if example.context == "default-programme":
        folder = Path(dirs.pop())
        assert str(folder) != ".", "a default-programme example needs a directory in its title"
        shutil.copy(ROOT / "rules" / "ladder.yaml", root / folder / "ladder.yaml")
        return folder
    if len(example.files) == 1:
        return Path(example.files[0][0])
    return Path(dirs.pop())


def test_the_docs_have_examples_of_every_kind() -> None:
    kinds = {e.kind for e in EXAMPLES}
    assert {"valid", "error", "condition"} <= kinds
    assert any(len(e.files) > 1 for e in EXAMPLES), "a multi-file example"
    assert sum(len(e.errors) for e in EXAMPLES) >= 6


def test_parser_refuses_an_unmarked_block() -> None:
    with pytest.raises(AssertionError, match="without an <!-- expect"):
        parse_examples("# Title\n\n```yaml\nstages: []\n```\n")
    with pytest.raises(AssertionError, match="unknown expectation"):
        parse_examples('<!-- expect: vaild -->\n```yaml\nstages: []\n```\n')


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}-{e.kind}" for e in EXAMPLES])
def test_doc_example(example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if example.kind == "condition":
        for title, body in example.files:
            data = yaml.safe_load(body)
            assert isinstance(data, dict) and set(data) == {"when"}, f"{title}: a condition block is `when: …`"
            condition, errors = rulefile.parse_condition(data["when"])
            assert not errors and condition is not None, f"{title}: {errors}"
        return
    monkeypatch.chdir(tmp_path)
    target = _write(example, tmp_path)
    problems = [str(p) for p in rulefile.validate(target)]
    if example.kind == "valid":
        assert problems == []
        rulefile.load_programme(target)
    else:
        assert problems == example.errors


# ---------------------------------------------------------------- simulation claims
SIMULATE = re.compile(r"^<!--\s*simulate:\s*(.*?)\s*-->\s*$")
JSONL_FENCE = re.compile(r'^```jsonl(?:\s+title="([^"]+)")?\s*$')


def parse_simulations(text: str) -> list[tuple[int, dict[str, str], str, Example]]:
    """Each ``<!-- simulate: k=v … -->`` claim, its events block, and the programme before it."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        match = SIMULATE.match(line)
        if not match:
            continue
        claim = dict(part.split("=", 1) for part in match.group(1).split())
        assert JSONL_FENCE.match(lines[i + 1]), f"docs/rules.md:{i + 1}: a simulate claim needs a jsonl block next"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        events = "\n".join(lines[i + 2:end]) + "\n"
        programme = [e for e in EXAMPLES if e.line < i + 1 and e.kind == "valid"][-1]
        out.append((i + 1, claim, events, programme))
    return out


SIMULATIONS = parse_simulations(DOC.read_text(encoding="utf-8"))


def test_the_docs_have_a_simulation_claim() -> None:
    assert SIMULATIONS


@pytest.mark.parametrize("line,claim,events,example", SIMULATIONS, ids=[f"line{s[0]}" for s in SIMULATIONS])
def test_simulation_claim_holds(tmp_path: Path, line, claim, events, example) -> None:
    """The documented story, run through the real `ladder simulate`, gives what the text claims."""
    import json
    import subprocess
    import sys

    rules = tmp_path / _write(example, tmp_path)
    (tmp_path / "events.jsonl").write_text(events, encoding="utf-8")
    result = subprocess.run([str(Path(sys.executable).parent / "ladder"), "simulate", "--rules", str(rules),
                             "--as-of", claim["as_of"], "events.jsonl"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)["customers"][claim["customer"]]
    assert doc["stage"] == claim["stage"]
    assert doc["lapsed"] is (claim["lapsed"] == "true")
    assert doc["turn"] == int(claim["turn"])
    history = [f"{h['stage']}@{h['at'][:10]}" for h in doc["history"]]
    assert history == claim["history"].split(",")
    got = sorted(f"{r['reward']}:{r['scope_ref']}" if r["scope"] == "order" else r["reward"] for r in doc["rewards"])
    assert got == sorted(claim["rewards"].split(","))
