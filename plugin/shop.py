"""One connected shop: :class:`ShopConfig`, the value every layer passes around.

A leaf module (it imports nothing of ours), so the adapters can take a ShopConfig while the shops
file (:mod:`.shops`) is validated *through* the adapters.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

#: a platform key whose name says credential is hidden from repr even when no adapter said so
#: (a ShopConfig built by hand in a test or an embedding app)
_CREDENTIAL_WORDS = ("secret", "token", "password", "key")


@dataclass(frozen=True)
class VipManager:
    """A personal manager of a shop's VIP customers (the shops file's ``vip_managers``)."""

    id: str
    name: str
    email: str | None = None


@dataclass(frozen=True, init=False)
class ShopConfig:
    """One connected shop, as the shops file describes it (secrets already resolved).

    The common keys are fields; the platform's own keys are in :attr:`settings` (every key its
    adapter declares, ``None`` when not given), read with :meth:`option` or, for existing
    callers, as attributes (``shop.access_token``).  Keyword arguments that are not common keys
    become settings, so ``ShopConfig(id=…, platform="shopify", access_token=…)`` keeps working.
    """

    id: str
    platform: str
    domain: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    previous_webhook_secret: str | None = field(default=None, repr=False)
    api_url: str | None = None
    programme: Path | None = None
    currency: str = "EUR"
    timezone: str = "UTC"
    mode: str = "live"
    capabilities: tuple[str, ...] = ()
    notify_webhook_url: str | None = None
    #: who may be a VIP customer's personal manager, in the order ties are broken (see vip.py)
    vip_managers: tuple[VipManager, ...] = ()
    #: the platform's own keys (from its adapter's settings schema)
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False)
    #: which of :attr:`settings` are secrets (hidden from repr)
    secret_settings: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __init__(self, id: str, platform: str, domain: str | None = None, webhook_secret: str | None = None,
                 previous_webhook_secret: str | None = None, api_url: str | None = None,
                 programme: Path | None = None, currency: str = "EUR", timezone: str = "UTC", mode: str = "live",
                 capabilities: tuple[str, ...] = (), notify_webhook_url: str | None = None,
                 vip_managers: Iterable[VipManager | Mapping[str, Any]] = (),
                 settings: Mapping[str, Any] | None = None, secret_settings: frozenset[str] = frozenset(),
                 **platform_settings: Any) -> None:
        values = {"id": id, "platform": platform, "domain": domain, "webhook_secret": webhook_secret,
                  "previous_webhook_secret": previous_webhook_secret, "api_url": api_url, "programme": programme,
                  "currency": currency, "timezone": timezone, "mode": mode, "capabilities": tuple(capabilities),
                  "notify_webhook_url": notify_webhook_url,
                  "vip_managers": tuple(m if isinstance(m, VipManager) else VipManager(**m) for m in vip_managers),
                  "settings": {**(settings or {}), **platform_settings},
                  "secret_settings": frozenset(secret_settings)}
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: a platform key read as an attribute
        settings = self.__dict__.get("settings")
        if settings is not None and not name.startswith("_") and name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def option(self, key: str, default: Any = None) -> Any:
        """A platform key's value (``shop.option("access_token")``); ``default`` when unset."""
        value = self.settings.get(key)
        return default if value is None else value

    def __repr__(self) -> str:  # secrets never end up in logs via repr()
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr]
        for key, value in self.settings.items():
            hidden = key in self.secret_settings or any(word in key.lower() for word in _CREDENTIAL_WORDS)
            shown.append(f"{key}={'***' if hidden and value else repr(value)}")
        return f"ShopConfig({', '.join(shown)})"

    @property
    def shadow(self) -> bool:
        """Compute everything, deliver nothing."""
        return self.mode == "shadow"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


DEFAULT_SHOP = ShopConfig(id="default", platform="generic")
