"""Plug-in points: objects named ``module:attr`` and the entry points of a group.

The adapter registry (``loyalty_ladder.adapters``) and the reward-type registry
(``loyalty_ladder.reward_types``) both load built-ins by name and third parties by entry point;
this is the one place that knows how.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib import metadata
from typing import Any


def entry_points(group: str) -> Iterable[metadata.EntryPoint]:
    """The installed entry points of ``group``."""
    return metadata.entry_points(group=group)


def load_object(value: str) -> Any:
    """The object ``value`` names: ``"package.module:Class"`` (or ``"module:Outer.Inner"``)."""
    module_name, _, attr = value.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj
