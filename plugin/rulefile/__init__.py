"""Rule files (YAML) → a validated :class:`~loyalty_ladder.programme.Programme`.

A programme is every ``*.yaml``/``*.yml`` file of one directory (sorted by name, not recursive,
hidden files skipped) or a single file; every problem is reported as ``path:line:col: message``
with a hint, all of them at once, as :class:`~loyalty_ladder.errors.RuleFileError`.  The format
is documented in ``docs/rules.md``.

One concept per module, in reading order:

* ``positions`` – YAML composed into data plus the line/column of every path (``Source``);
* (``loyalty_ladder.rulewords``) – how values and hints are worded, ``AtKey`` for problems at a
  key; ids, float-free decimals, money and times as typed values; the scalar fields;
* ``conditions`` / ``triggers`` – the recursive ``when:`` and the ``on:`` of rewards, parsed by hand;
* ``fields`` / ``schemas`` – marshmallow fields and the schemas (``unknown=RAISE``); each reward
  type's params schema lives with its type in :mod:`loyalty_ladder.rewards`;
* ``report`` – marshmallow's nested errors → positioned problems;
* ``crosscheck`` – ids, references and order across items and files;
* ``limits`` – what the rule engine would refuse, positioned;
* ``version`` – the built ``Programme`` and the normalised data its version hash covers;
* ``loader`` – reading a directory, a file or uploaded texts ({name: text}), merging, the public
  entry points; a stored version's normalised JSON back into a programme (``load_canonical``);
* ``lint`` – static checks of a valid programme (unreachable stages, conditions that never hold,
  shadowed subgroups, overlapping rewards, discount stacks, yearly face value per stage):
  ``load_programme_checked(path)`` → ``Checked(programme, warnings, notes)``, each warning a
  :class:`~.lint.RuleFileWarning` printed ``path:line:col: warning: message``.

Everything importable from ``loyalty_ladder.rulefile`` before it became a package still is, except
the reward types' params schemas and constants (``DiscountParams``, ``NET_DAYS`` …), which moved
to their types in :mod:`loyalty_ladder.rewards`; the literals and messages moved to
:mod:`loyalty_ladder.rulewords` (a leaf the reward types share) and are re-exported here.
"""
from __future__ import annotations

from loyalty_ladder.rulewords import DECIMAL_PATTERN, ID_PATTERN, MAX_DECIMAL_PLACES, AtKey, Errors, parse_decimal

from .conditions import COMPARISON_OPS, LOGIC_KEYS, parse_condition
from .lint import Checked, RuleFileWarning, load_programme_checked
from .loader import (
    RULE_SUFFIXES,
    TOP_KEYS,
    default_programme_path,
    file_name_problem,
    load_canonical,
    load_programme,
    load_programme_files,
    load_programme_items,
    load_text,
    load_texts,
    rule_file_data,
    validate,
    validate_texts,
)
from .positions import Path_
from .schemas import (
    CURRENCY_PATTERN,
    PARAMS_SCHEMAS,
    RewardSchema,
    SettingsSchema,
    StageSchema,
    SubgroupSchema,
)
from .triggers import parse_trigger
from .version import programme_data

__all__ = [
    "COMPARISON_OPS",
    "CURRENCY_PATTERN",
    "DECIMAL_PATTERN",
    "ID_PATTERN",
    "LOGIC_KEYS",
    "MAX_DECIMAL_PLACES",
    "PARAMS_SCHEMAS",
    "RULE_SUFFIXES",
    "TOP_KEYS",
    "AtKey",
    "Checked",
    "Errors",
    "Path_",
    "RewardSchema",
    "RuleFileWarning",
    "SettingsSchema",
    "StageSchema",
    "SubgroupSchema",
    "default_programme_path",
    "file_name_problem",
    "load_canonical",
    "load_programme",
    "load_programme_checked",
    "load_programme_files",
    "load_programme_items",
    "load_text",
    "load_texts",
    "parse_condition",
    "parse_decimal",
    "parse_trigger",
    "programme_data",
    "rule_file_data",
    "validate",
    "validate_texts",
]

