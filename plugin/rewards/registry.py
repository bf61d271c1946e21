"""The reward-type registry: type name → :class:`~loyalty_ladder.rewards.base.RewardType`.

The built-in types are always there; a third party adds one by shipping a distribution with, in
its setup.cfg::

    [options.entry_points]
    loyalty_ladder.reward_types =
        sample_box = my_package.rewards:SampleBox

(the entry point's name must equal the type's ``name``; the value is a ``RewardType`` subclass
or instance), or by calling :func:`register` (an embedding application, a test).  A type that
cannot be loaded is logged and left out, like a broken adapter: it disables itself, not the
programme's other types.

The built-in modules are imported on first use, not when this module is, so the rule-file
package (which the types' schemas use) can ask the registry without an import cycle.
"""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..plugins import entry_points, load_object
from .base import Kind, RewardType, UnregisteredType, params_of

log = logging.getLogger(__name__)

GROUP = "loyalty_ladder.reward_types"

#: the built-in types, in the order rule-file messages list them
BUILTIN: tuple[str, ...] = (
    "loyalty_ladder.rewards.discount:Discount",
    "loyalty_ladder.rewards.tag:Tag",
    "loyalty_ladder.rewards.points:Points",
    "loyalty_ladder.rewards.gift:Gift",
    "loyalty_ladder.rewards.free_service:FreeService",
    "loyalty_ladder.rewards.vip_service:VipService",
    "loyalty_ladder.rewards.deferred_payment:DeferredPayment",
    "loyalty_ladder.rewards.debt_forgiveness:DebtForgiveness",
    "loyalty_ladder.rewards.greeting:Greeting",
    "loyalty_ladder.rewards.points_redemption:PointsRedemption",
    "loyalty_ladder.rewards.points_reminder:PointsReminder",
)
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

_registered: dict[str, RewardType] = {}  # by register(), after the loaded ones
_merged: dict[str, RewardType] | None = None  # loaded + registered, rebuilt on change
_unregistered: dict[str, UnregisteredType] = {}


def _entry_points() -> Iterable[Any]:
    """The group's entry points (a seam for tests)."""
    return entry_points(GROUP)


_import = load_object


def _instance(obj: Any) -> RewardType:
    """A checked instance of a RewardType subclass or instance; TypeError says what is wrong."""
    if isinstance(obj, type) and issubclass(obj, RewardType):
        obj = obj()
    if not isinstance(obj, RewardType):
        raise TypeError(f"{obj!r} is not a loyalty_ladder.rewards.RewardType (subclass or instance)")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise TypeError(f"{type(obj).__name__}.name must match {NAME_PATTERN.pattern}, got {name!r}")
    if not isinstance(getattr(obj, "kind", None), Kind):
        raise TypeError(f"reward type {name!r}: kind must be a Kind (grant or privilege)")
    return obj


@functools.lru_cache(maxsize=1)
def _load() -> tuple[dict[str, RewardType], dict[str, str]]:
    found: dict[str, RewardType] = {}
    errors: dict[str, str] = {}
    for value in BUILTIN:
        reward_type = _instance(_import(value))  # a broken built-in is a bug: let it raise
        found[reward_type.name] = reward_type
    seen: dict[str, str] = {}
    for ep in _entry_points():
        if seen.get(ep.name) == ep.value:
            continue  # the same distribution seen twice on sys.path
        if ep.name in found or ep.name in seen:
            errors[ep.name] = f"two reward types are named {ep.name!r}: {seen.get(ep.name, 'built-in')} and {ep.value}"
            continue
        seen[ep.name] = ep.value
        try:
            reward_type = _instance(ep.load())
            if reward_type.name != ep.name:
                raise TypeError(f"its name is {reward_type.name!r}, not the entry point's name {ep.name!r}")
        except Exception as exc:  # noqa: BLE001 - any import-time failure of a plugin is reported alike
            errors[ep.name] = f"reward type entry point {ep.name} = {ep.value} cannot be loaded: {type(exc).__name__}: {exc}"
            continue
        found[ep.name] = reward_type
    for message in errors.values():
        log.error("%s", message)
    return found, errors


def _types() -> dict[str, RewardType]:
    global _merged
    if _merged is None:
        _merged = {**_load()[0], **_registered}
    return _merged


def register(reward_type: RewardType | type[RewardType], *, replace: bool = False) -> RewardType:
    """Add a type (a subclass or an instance) for this process; returns the registered instance.

    A name already taken is a ``ValueError`` unless ``replace`` (which may shadow a built-in).
    """
    global _merged
    instance = _instance(reward_type)
    if instance.name in _types() and not replace:
        raise ValueError(f"a reward type named {instance.name!r} is already registered")
    _registered[instance.name] = instance
    _merged = None
    return instance


def unregister(name: str) -> None:
    """Remove a type added by :func:`register` (built-ins and entry points stay)."""
    global _merged
    if _registered.pop(name, None) is None:
        raise KeyError(f"reward type {name!r} was not added by register()")
    _merged = None


def clear_cache() -> None:
    """Reload built-ins and entry points on next use (tests; a plugin installed at run time);
    types added by :func:`register` stay."""
    global _merged
    _load.cache_clear()
    _merged = None


def names() -> tuple[str, ...]:
    """Every registered type's name: built-ins first (in their order), then the others."""
    return tuple(_types())


def rule_names() -> tuple[str, ...]:
    """The names a rule file may use: every registered type but the core's internal ones."""
    return tuple(name for name, reward_type in _types().items() if not reward_type.internal)


def types() -> tuple[RewardType, ...]:
    return tuple(_types().values())


def find(name: str) -> RewardType | None:
    """The registered type of this name, or None."""
    return _types().get(name)


def get(name: str) -> RewardType:
    """The registered type of this name; ``KeyError`` naming the registered ones otherwise."""
    found = _types().get(name)
    if found is None:
        why = _load()[1].get(name)
        raise KeyError(why or f"no reward type {name!r} (registered: {', '.join(names())})")
    return found


def of(name: str) -> RewardType:
    """The type of a recorded award: the registered one, or a plain stand-in for a name no
    longer registered (an award outlives its type's plugin: it is then handled by staff)."""
    found = _types().get(name)
    if found is not None:
        return found
    stand_in = _unregistered.get(name)
    if stand_in is None:
        stand_in = _unregistered[name] = UnregisteredType(name)
    return stand_in


def load_errors() -> dict[str, str]:
    """Why each reward-type entry point that failed is missing, by name."""
    return dict(_load()[1])


def capability_of(award: Mapping[str, Any]) -> str | None:
    """The shop capability that delivers ``award`` (a row or award document), or None."""
    return of(str(award.get("type") or "")).capability(params_of(award))
