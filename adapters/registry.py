"""The adapter registry: platform name → adapter class, filled from an entry-point group.

A third party adds a platform by shipping a distribution with, in its setup.cfg::

    [options.entry_points]
    loyalty_ladder.adapters =
        myplatform = my_package.adapter:MyPlatformAdapter

The entry point's name is the platform (``platform:`` in the shops file, ``/webhooks/<name>``)
and must equal the class's ``platform``.  When the group is empty (a checkout not reinstalled
since the group was added), the three built-in adapters are used.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

import requests

from ..errors import ConfigError
from ..plugins import entry_points, load_object
from ..shop import ShopConfig
from .base import Adapter

log = logging.getLogger(__name__)

GROUP = "loyalty_ladder.adapters"

#: what ``setup.cfg`` registers; used only when the entry-point group is empty
BUILTIN: dict[str, str] = {
    "generic": "loyalty_ladder.adapters.generic:GenericAdapter",
    "shopify": "loyalty_ladder.adapters.shopify:ShopifyAdapter",
    "woocommerce": "loyalty_ladder.adapters.woocommerce:WooCommerceAdapter",
}


def _entry_points() -> Iterable[Any]:
    """The group's entry points (a seam for tests)."""
    return entry_points(GROUP)


_import = load_object


def _checked(name: str, value: str, obj: Any) -> type[Adapter]:
    if not (isinstance(obj, type) and issubclass(obj, Adapter)):
        raise TypeError(f"{value} is not a subclass of loyalty_ladder.adapters.base.Adapter")
    platform = getattr(obj, "platform", None)
    if platform != name:
        raise TypeError(f"{obj.__name__}.platform is {platform!r}, not the entry point's name {name!r}")
    return obj


@functools.lru_cache(maxsize=1)
def _load() -> tuple[dict[str, type[Adapter]], dict[str, str]]:
    found: dict[str, tuple[str, type[Adapter]]] = {}
    errors: dict[str, str] = {}
    seen: dict[str, str] = {}
    entry_points = list(_entry_points())
    if entry_points:
        sources = [(ep.name, ep.value, ep.load) for ep in entry_points]
    else:
        log.debug("entry-point group %s is empty; using the built-in adapters", GROUP)
        sources = [(name, value, functools.partial(_import, value)) for name, value in BUILTIN.items()]
    for name, value, load in sources:
        if seen.get(name) == value:
            continue  # the same distribution seen twice on sys.path
        if name in seen:
            errors[name] = f"two adapters register platform {name!r}: {seen[name]} and {value}"
            found.pop(name, None)
            continue
        seen[name] = value
        try:
            found[name] = (value, _checked(name, value, load()))
        except Exception as exc:  # noqa: BLE001 - any import-time failure of a plugin is reported alike
            errors[name] = f"adapter entry point {name} = {value} cannot be loaded: {type(exc).__name__}: {exc}"
    for message in errors.values():
        log.error("%s", message)
    return {name: cls for name, (_, cls) in sorted(found.items())}, errors


def load_adapters() -> dict[str, type[Adapter]]:
    """Every registered adapter class by platform, loaded once per process.

    An entry point that cannot be imported, is not an Adapter, declares another platform, or
    clashes with another distribution's entry point of the same name is logged and left out:
    a broken plugin disables its own platform (whose shops then fail with a ConfigError naming
    the cause, see :func:`adapter_class`), not every other one.
    """
    return dict(_load()[0])


def load_errors() -> dict[str, str]:
    """Why each platform whose entry point failed is missing, by platform."""
    return dict(_load()[1])


def clear_cache() -> None:
    """Forget the loaded adapters (tests; a process that installed a plugin at run time)."""
    _load.cache_clear()


def adapter_class(platform: str) -> type[Adapter]:
    """The adapter class of ``platform``; ConfigError when no adapter is registered for it."""
    adapters, errors = _load()
    cls = adapters.get(platform)
    if cls is not None:
        return cls
    if platform in errors:
        raise ConfigError(errors[platform], {"platform": [errors[platform]]})
    raise ConfigError(f"no adapter for platform {platform!r} (registered: {', '.join(adapters) or 'none'})",
                      {"platform": [f"install the adapter providing {platform!r} or fix the shops file"]})


def adapter_for(shop: ShopConfig, session: requests.Session | None = None) -> Adapter:
    """A ready adapter for one configured shop."""
    return adapter_class(shop.platform)(shop, session=session)
