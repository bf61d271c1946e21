"""The layering of the line (``.importlinter``), checked with import-linter on every run.

import-linter reads a package from one directory, but ours is two (``plugin/`` is
``loyalty_ladder``, ``adapters/`` is ``loyalty_ladder.adapters``).  So each test lays out the
installed shape in a temporary directory under another name (``ll_layers``, so the editable
install of the real package cannot shadow it) and runs ``lint-imports`` there with our contracts.
The tests that break a contract on purpose show that the check can fail.
"""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAME = "ll_layers"
CONFIG = ROOT / ".importlinter"
LINT = Path(sys.executable).with_name("lint-imports")



@pytest.fixture(autouse=True)
def _import_linter_installed():
    # part of the test extra: missing means a broken install, never a reason to skip
    assert LINT.exists(), f"{LINT} not found: install the project with its [test] extra"


def _layout(tmp_path: Path) -> Path:
    """The installed package shape under ``NAME``, with its contracts; returns the directory."""
    package = tmp_path / NAME
    skip = shutil.ignore_patterns("__pycache__", "data", "templates")
    shutil.copytree(ROOT / "plugin", package, ignore=skip)
    shutil.copytree(ROOT / "adapters", package / "adapters", ignore=skip)
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "loyalty_ladder" in text:
            path.write_text(text.replace("loyalty_ladder", NAME), encoding="utf-8")
    (tmp_path / ".importlinter").write_text(CONFIG.read_text(encoding="utf-8").replace("loyalty_ladder", NAME),
                                            encoding="utf-8")
    return tmp_path


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run([str(LINT), "--config", str(where / ".importlinter"), "--no-cache"], cwd=where, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _add_line(where: Path, module: str, line: str) -> None:
    path = where / NAME / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_the_contracts_hold(tmp_path):
    result = _lint(_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_every_module_of_the_package_has_a_layer():
    """A new module must be placed on the line, or the layers contract would not look at it."""
    parser = configparser.ConfigParser()
    parser.read(CONFIG, encoding="utf-8")
    layers = {name.strip() for line in parser["importlinter:contract:line"]["layers"].split("\n")
              for name in line.split("|") if name.strip()}
    modules = {p.stem for p in (ROOT / "plugin").glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in (ROOT / "plugin").iterdir() if (p / "__init__.py").exists()}
    modules.add("adapters")
    assert modules == layers


def test_an_upward_import_breaks_the_line(tmp_path):
    where = _layout(tmp_path)
    _add_line(where, "ledger", "from . import processing  # the ledger calling back up the line")
    result = _lint(where)
    assert result.returncode == 1
    assert "The line: webhook" in result.stdout and "BROKEN" in result.stdout
    assert f"{NAME}.ledger -> {NAME}.processing" in result.stdout


def test_a_new_cycle_between_siblings_is_refused(tmp_path):
    where = _layout(tmp_path)
    _add_line(where, "outbox.planning", "from . import running  # planning and running would import each other")
    result = _lint(where)
    assert result.returncode == 1
    assert "No import cycles between sibling modules, at any depth BROKEN" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("processing", "import requests", "Outbound HTTP (requests) only in the adapters and the notifier BROKEN"),
    ("views", "import durable.engine", "durable_rules is imported by the engine only BROKEN"),
])
def test_external_libraries_stay_in_their_modules(tmp_path, module, line, contract):
    where = _layout(tmp_path)
    _add_line(where, module, line)
    result = _lint(where)
    assert result.returncode == 1
    assert contract in result.stdout


def test_the_internals_module_map_names_every_module():
    """docs/internals.md is the map of the line: every module of the layers has its row."""
    parser = configparser.ConfigParser()
    parser.read(CONFIG, encoding="utf-8")
    layers = {name.strip() for line in parser["importlinter:contract:line"]["layers"].split("\n")
              for name in line.split("|") if name.strip()}
    text = (ROOT / "docs" / "internals.md").read_text(encoding="utf-8")
    table = text[text.index("## Module map"):text.index("## The path of one webhook")]
    missing = sorted(m for m in layers if f"`{m}.py`" not in table and f"`{m}/`" not in table)
    assert not missing, f"docs/internals.md's module map lacks: {', '.join(missing)}"
