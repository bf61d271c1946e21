"""The shops file: one entry per connected shop, validated through its platform's adapter.

A shop entry has common keys (:data:`SHOP_KEYS`) and its platform's own keys, which the
platform's adapter declares (``Adapter.settings_schema``: credentials, API version …), so an
entry-point adapter with its own credential keys gets unknown-key errors with did-you-mean,
required keys, ``env:NAME`` secrets and defaults like the built-in ones.
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as mf

from .adapters.registry import load_adapters, load_errors
from .config import marshmallow_problems, raise_problems, read_yaml
from .errors import ConfigError
from .shop import DEFAULT_SHOP, ShopConfig

__all__ = ["DEFAULT_SHOP", "SHOP_KEYS", "ShopConfig", "Shops", "check_currencies", "declared_shop",
           "default_shop_note", "load_shops", "platform_capabilities", "require_secrets"]

SHOP_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ENV_REF = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")


_url = validate.URL(schemes={"http", "https"}, require_tld=False)
_SECRET = {"secret": True}


MANAGER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _VipManagerSchema(Schema):
    """One entry of ``vip_managers``: a personal manager VIP customers may be assigned to."""

    class Meta:
        unknown = RAISE

    id = mf.String(required=True, validate=validate.Regexp(
        MANAGER_ID_RE, error="must be 1 to 64 letters, digits, '.', '-' or '_', starting with a letter or digit"))
    name = mf.String(required=True, validate=validate.Length(min=1, max=255))
    email = mf.Email()


class _ShopSchema(Schema):
    """The common keys of a shop entry; a platform's own keys are merged in (see _entry_schema)."""

    class Meta:
        unknown = RAISE

    id = mf.String(required=True)
    platform = mf.String(required=True, validate=lambda value: _known_platform(value))
    domain = mf.String()
    webhook_secret = mf.String(metadata=_SECRET)
    previous_webhook_secret = mf.String(metadata=_SECRET)
    api_url = mf.String(validate=_url)
    programme = mf.String()
    currency = mf.String(validate=validate.Regexp(r"^[A-Z]{3}$", error="must be a 3-letter upper-case ISO 4217 code"))
    timezone = mf.String()
    mode = mf.String(validate=validate.OneOf(("live", "shadow")))
    capabilities = mf.List(mf.String())
    notify_webhook_url = mf.String(validate=_url)
    vip_managers = mf.List(mf.Nested(_VipManagerSchema))


#: the common keys of a shop entry
SHOP_KEYS = tuple(_ShopSchema._declared_fields)


def _registered_adapters() -> dict[str, Any]:
    return load_adapters()


def _adapter_load_error(platform: str) -> str | None:
    return load_errors().get(platform)


def _known_platform(value: str) -> None:
    """A platform registered in the entry-point group (the built-in ones included)."""
    adapters = _registered_adapters()
    if value in adapters:
        return
    broken = _adapter_load_error(value)
    if broken:
        raise ValidationError(broken)
    raise ValidationError(f"unknown platform {value!r}; known: {', '.join(sorted(adapters)) or 'none'} "
                          "(a third-party platform registers in the 'loyalty_ladder.adapters' entry-point group)")


def platform_capabilities(platform: str) -> tuple[str, ...]:
    """What the platform's adapter can deliver; () for an unknown platform."""
    adapter = _registered_adapters().get(platform)
    return tuple(getattr(adapter, "capabilities", ()))


@functools.cache
def _entry_schema_class(adapter: type) -> type[Schema]:
    """The common keys plus ``adapter.settings_schema``'s, as one ``unknown=RAISE`` schema."""
    own = adapter.settings_schema
    clash = sorted(set(own._declared_fields) & set(SHOP_KEYS))
    if clash:
        raise ConfigError(f"adapter {adapter.__name__} redefines common shop keys: {', '.join(clash)}",
                          {"platform": [f"the {adapter.platform} adapter's settings schema is invalid"]})
    return type(f"{adapter.__name__}ShopSchema", (_ShopSchema, own), {"Meta": _ShopSchema.Meta})


def _secret_problems(item: dict[str, Any], env: Mapping[str, str], schema: Schema, *,
                     resolve: bool = True) -> list[tuple[str, str]]:
    """The secret keys: an empty one is a problem; with ``resolve``, each ``env:NAME`` is replaced
    in place by the variable's value (a variable not set is a problem)."""
    problems: list[tuple[str, str]] = []
    for key, declared in schema.fields.items():
        if not declared.metadata.get("secret"):
            continue
        raw = item.get(key)
        ref = _ENV_REF.match(raw) if isinstance(raw, str) else None
        if ref:
            if not resolve:
                continue
            value = env.get(ref.group(1))
            if not value:
                problems.append((key, f"environment variable {ref.group(1)} is not set"))
            else:
                item[key] = value
        elif raw is not None and raw == "":
            problems.append((key, "must not be empty"))
    return problems


def _shop_problems(item: dict[str, Any], env: Mapping[str, str], schema: Schema,
                   adapter: Any, *, resolve: bool = True) -> list[tuple[str, str]]:
    """Checks the schema cannot express; with ``resolve``, ``env:NAME`` secrets are resolved in place."""
    problems: list[tuple[str, str]] = []
    if not SHOP_ID_RE.match(item["id"]):
        problems.append(("id", "must be lower-case letters, digits, '-' or '_', starting with a letter or digit"))
    problems += _secret_problems(item, env, schema, resolve=resolve)
    platform = item["platform"]
    mode = item.get("mode", "live")
    always = set(adapter.required_settings("shadow"))
    for key in adapter.required_settings(mode):
        if not item.get(key):
            problems.append((key, f"required for platform {platform}"
                                  + ("" if key in always else " (unless mode: shadow)")))
    if "timezone" in item:
        try:
            ZoneInfo(item["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(("timezone", f"unknown time zone {item['timezone']!r}"))
    seen: set[str] = set()
    for index, manager in enumerate(item.get("vip_managers", ())):
        if manager["id"] in seen:
            problems.append((f"vip_managers.{index}.id", f"duplicate manager id {manager['id']!r}"))
        seen.add(manager["id"])
    has = tuple(adapter.capabilities)
    for cap in item.get("capabilities", ()):
        if cap not in has:
            problems.append(
                ("capabilities", f"{platform} has no capability {cap!r} (it has: {', '.join(has) or 'none'})")
            )
    return problems


@dataclass
class _Entry:
    """One validated shops-file entry whose ``env:NAME`` secrets are not resolved yet."""

    where: str
    item: dict[str, Any]
    schema: Schema
    adapter: Any


def _build(item: dict[str, Any], adapter: Any) -> ShopConfig:
    item = dict(item)
    item["capabilities"] = tuple(item.get("capabilities", adapter.capabilities))
    own = {key: item.pop(key, None) for key in adapter.settings_schema._declared_fields}
    return ShopConfig(**item, settings=own, secret_settings=adapter.secret_keys())


class Shops(Mapping[str, ShopConfig]):
    """The shops of a shops file by id, each one's ``env:NAME`` secrets resolved when it is first
    read (``shops["boutique"]``): a command that touches one shop needs only that shop's secrets.
    A missing variable raises the same ConfigError as an eager load, naming file, shop and key.
    Iterating over the ids resolves nothing; ``values()`` / ``items()`` resolve every shop (see
    :func:`require_secrets`).  :meth:`declared` gives a shop without resolving its secrets (they
    are None there): for checks of non-secret keys such as the currency.
    """

    def __init__(self, entries: Mapping[str, _Entry], env: Mapping[str, str], source: Path | None = None):
        self._entries = dict(entries)
        self._env = env
        self._resolved: dict[str, ShopConfig] = {}
        self.source = source

    def __getitem__(self, shop_id: str) -> ShopConfig:
        hit = self._resolved.get(shop_id)
        if hit is not None:
            return hit
        entry = self._entries[shop_id]  # KeyError for an unknown shop, as a dict
        item = dict(entry.item)
        problems = _secret_problems(item, self._env, entry.schema)
        if problems:
            raise_problems(entry.where, problems)
        shop = self._resolved[shop_id] = _build(item, entry.adapter)
        return shop

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, shop_id: object) -> bool:
        return shop_id in self._entries

    def declared(self, shop_id: str) -> ShopConfig:
        """The shop with its ``env:`` secrets unresolved (None): its non-secret keys only."""
        if shop_id in self._resolved:
            return self._resolved[shop_id]
        entry = self._entries[shop_id]
        item = {key: (None if entry.schema.fields[key].metadata.get("secret") else value)
                for key, value in entry.item.items()}
        return _build(item, entry.adapter)

    def currency_declared(self, shop_id: str) -> bool:
        """Whether the shops file gives the shop's ``currency`` (else the default applies)."""
        return "currency" in self._entries[shop_id].item


def declared_shop(shops: Mapping[str, ShopConfig], shop_id: str) -> ShopConfig:
    """The shop without resolving its secrets when ``shops`` is a :class:`Shops`."""
    return shops.declared(shop_id) if isinstance(shops, Shops) else shops[shop_id]


def require_secrets(shops: Mapping[str, ShopConfig]) -> None:
    """Resolve every shop's secrets now (a server or worker serves them all): the first missing
    variable raises ConfigError at start rather than at a shop's first webhook."""
    for shop_id in shops:
        shops[shop_id]


def check_currencies(shops: Mapping[str, ShopConfig], programme_currency: Callable[[ShopConfig], str]) -> None:
    """A shop whose currency differs from its programme's is a configuration error at start, not
    every order refused later: ConfigError naming the shop, its currency and the programme's.
    The implicit ``default`` shop (no shops file) takes the programme's currency and is not checked."""
    problems: list[str] = []
    errors: dict[str, list[str]] = {}
    for shop_id in shops:
        shop = declared_shop(shops, shop_id)
        if shop is DEFAULT_SHOP:
            continue
        wanted = programme_currency(shop)
        if shop.currency != wanted:
            implicit = isinstance(shops, Shops) and not shops.currency_declared(shop_id)
            default = " (the default; set currency: in the shops file)" if implicit else ""
            problems.append(f"shop {shop_id!r} has currency {shop.currency}{default} but its programme's currency "
                            f"is {wanted}: convert, or give the shop a programme in {shop.currency}")
            errors.setdefault(shop_id, []).append(f"currency {shop.currency} != programme currency {wanted}")
    if problems:
        source = getattr(shops, "source", None)
        where = f"{source}: " if source else ""
        raise ConfigError(where + "\n".join(problems), errors)


def default_shop_note(shops: Mapping[str, ShopConfig]) -> str | None:
    """One line for ``serve`` / ``worker`` when the shops file lists no ``default`` shop (the
    README's first requests go to ``/api/v1/shops/default/events``)."""
    if DEFAULT_SHOP.id in shops:
        return None
    return (f"shops file lists no {DEFAULT_SHOP.id!r} shop: the generic events API answers only for: "
            f"{', '.join(shops) or 'no shop'}")


def load_shops(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None, *,
               lazy: bool = False) -> dict[str, ShopConfig] | Shops:
    """Read and validate the shops file; without one, a single generic shop ``default``.

    ``lazy``: every key is validated now, but each shop's ``env:NAME`` secrets are resolved when
    the shop is first read (a :class:`Shops`), so a command needs only the secrets of the shops
    it touches; a server calls :func:`require_secrets` at start.

    Each entry is validated by the common schema merged with its platform adapter's settings
    schema, so the platform's own keys get the same treatment as the common ones: unknown keys
    (with did-you-mean), required keys, ``env:NAME`` secrets, defaults.
    """
    if path is None:
        return {DEFAULT_SHOP.id: DEFAULT_SHOP}
    env = os.environ if env is None else env
    path = Path(path)
    data = read_yaml(path)
    if data is None or data == []:
        raise ConfigError(f"{path}: lists no shops (remove the file to use the default generic shop)")
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of shops, got {type(data).__name__}", {"file": str(path)})

    entries: dict[str, _Entry] = {}
    for index, raw in enumerate(data):
        label = f"shop #{index + 1}"
        if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
            label += f" (id {raw['id']!r})"
        where = f"{path}: {label}"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
        platform = raw.get("platform")
        adapter = _registered_adapters().get(platform) if isinstance(platform, str) else None
        schema = _entry_schema_class(adapter)() if adapter is not None else _ShopSchema()
        try:
            item: dict[str, Any] = schema.load(raw)
        except ValidationError as exc:
            raise_problems(where, marshmallow_problems(exc.messages, tuple(schema.fields)))
        assert adapter is not None  # an unregistered platform fails the schema
        problems = _shop_problems(item, env, schema, adapter, resolve=not lazy)
        if item["id"] in entries:
            problems.append(("id", "duplicate shop id"))
        if problems:
            raise_problems(where, problems)
        if "programme" in item:
            item["programme"] = path.parent / item["programme"]
        entries[item["id"]] = _Entry(where, item, schema, adapter)
    shops = Shops(entries, env, path)
    if lazy:
        return shops
    return {shop_id: shops[shop_id] for shop_id in shops}
