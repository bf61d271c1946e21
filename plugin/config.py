"""Settings (defaults ← settings file ← ``LADDER_*`` environment ← CLI flags) and the shops file.

Relative paths
--------------
* In the **settings file**, relative paths (``rules``, ``shops_file`` and the file path of a
  ``sqlite:///…`` ``database_url`` or ``queue_url``) are relative to *the settings file's own
  directory*, so a file pointed at by ``LADDER_CONFIG=/etc/ladder/ladder.yaml`` means the same
  thing whatever the working directory of the process.
* In the **environment** and in **CLI flags**, relative paths are relative to the working
  directory, as a shell user expects.
* In the **shops file**, a shop's ``programme`` is relative to the shops file's directory.

Empty environment variables count as unset.
"""
from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from marshmallow import RAISE, Schema, ValidationError, validate
from marshmallow import fields as mf
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///ladder.db"
DEFAULT_CONFIG_FILE = Path("config/ladder.yaml")
DEFAULT_SHOPS_FILE = Path("config/shops.yaml")
DEFAULT_RULES_DIR = Path("rules")
QUEUE_FILE_NAME = "ladder-queue.db"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
QUEUE_SCHEMES = ("sqlite:///", "redis://", "rediss://")


@dataclass(frozen=True)
class Settings:
    """Process-wide settings; build with :func:`load_settings`."""

    database_url: str = DEFAULT_DATABASE_URL
    # A programme directory; None means the default programme shipped inside the package.
    rules: Path | None = None
    shops_file: Path | None = None
    # None: a SQLite queue file next to the SQLite database (see :func:`default_queue_file`).
    queue_url: str | None = None
    admin_token: str | None = None
    smtp_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    auto_migrate: bool = True
    # The consumer polls an idle SQLite queue this often: an accepted event must be applied
    # within 1 s (p95), and a poll costs one indexed SELECT.
    queue_poll_seconds: float = 0.1
    config_file: Path | None = None

    def __repr__(self) -> str:  # secrets never end up in logs via repr()
        shown = {
            f.name: ("***" if f.name in ("admin_token", "smtp_url") and getattr(self, f.name) else getattr(self, f.name))
            for f in fields(self)
        }
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


SETTING_NAMES = tuple(f.name for f in fields(Settings) if f.name != "config_file")
# Environment variable → setting.
ENV_VARS = {f"LADDER_{name.upper()}": name for name in SETTING_NAMES}


def default_queue_file(database_url: str) -> Path:
    """Where the default SQLite queue lives: beside a SQLite database file, else ``./ladder-queue.db``."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and _sqlite_file(url.database):
        return Path(url.database or "").parent / QUEUE_FILE_NAME
    return Path(QUEUE_FILE_NAME)


def _sqlite_file(database: str | None) -> bool:
    return bool(database) and database != ":memory:" and not (database or "").startswith("file:")


# ---------------------------------------------------------------- coercion of single values
def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected true/false/1/0, got {raw!r}")


def _parse_int(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    try:  # str(True) is "True", which int() refuses, as it should
        return int(str(raw).strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None


def _parse_float(raw: Any) -> float:
    try:
        return float(raw if isinstance(raw, (int, float)) and not isinstance(raw, bool) else str(raw))
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {raw!r}") from None


def _coerce(name: str, raw: Any) -> Any:
    """Turn one raw value (a string from the environment, or a CLI value) into its setting type."""
    if name in ("rules", "shops_file"):
        return None if raw is None else Path(raw)
    if name == "port":
        return _parse_int(raw)
    if name == "auto_migrate":
        return raw if isinstance(raw, bool) else _parse_bool(str(raw))
    if name == "queue_poll_seconds":
        return _parse_float(raw)
    return None if raw is None else str(raw)


def _check(name: str, value: Any) -> Any:
    """Validate (and normalise) one typed value; raise ValueError with the problem."""
    if name == "port" and not 1 <= value <= 65535:
        raise ValueError(f"must be between 1 and 65535, got {value}")
    if name == "log_level":
        level = str(value).upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return level
    if name == "queue_poll_seconds" and not 0 < value <= 60:
        raise ValueError(f"must be more than 0 and at most 60 seconds, got {value}")
    if name == "database_url":
        try:
            make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {value!r} ({exc})") from None
    if name == "queue_url" and value is not None and not str(value).startswith(QUEUE_SCHEMES):
        raise ValueError(f"must start with one of {', '.join(QUEUE_SCHEMES)}, got {value!r}")
    if name == "host" and not str(value).strip():
        raise ValueError("must not be empty")
    return value


# ---------------------------------------------------------------- the settings file
class _SettingsFileSchema(Schema):
    class Meta:
        unknown = RAISE

    database_url = mf.String()
    rules = mf.String(allow_none=True)
    shops_file = mf.String(allow_none=True)
    queue_url = mf.String(allow_none=True)
    admin_token = mf.String(allow_none=True)
    smtp_url = mf.String(allow_none=True)
    host = mf.String()
    port = mf.Integer(strict=True)
    log_level = mf.String()
    auto_migrate = mf.Boolean()
    queue_poll_seconds = mf.Float()


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", {"file": str(path)}) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}", {"file": str(path)}) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"{mark.line + 1}:{mark.column + 1}: "
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}invalid YAML: {problem}", {"file": str(path)}) from None


def _marshmallow_problems(messages: Any, known: tuple[str, ...], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten marshmallow's error dict into (key, problem) pairs, adding did-you-mean for typos."""
    out: list[tuple[str, str]] = []
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            path = f"{prefix}{key}"
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                for msg in value:
                    if msg == "Unknown field.":
                        msg = "unknown key" + _did_you_mean(str(key), known)
                    out.append((path, msg))
            else:
                out.extend(_marshmallow_problems(value, known, f"{path}."))
    elif isinstance(messages, list):
        out.extend((prefix.rstrip(".") or "(file)", str(m)) for m in messages)
    else:
        out.append((prefix.rstrip(".") or "(file)", str(messages)))
    return out


def _raise_problems(where: str, problems: list[tuple[str, str]]) -> None:
    lines = [f"{where}: {key}: {msg}" for key, msg in problems]
    errors: dict[str, list[str]] = {}
    for key, msg in problems:
        errors.setdefault(key, []).append(msg)
    raise ConfigError("\n".join(lines), errors)


def _resolve_sqlite_url(url: str, base: Path) -> str:
    """Make the file of a relative ``sqlite:///file`` URL relative to ``base``."""
    if not url.startswith("sqlite"):
        return url
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # reported by _check
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not _sqlite_file(db) or Path(db or "").is_absolute():
        return url
    return parsed.set(database=str(base / (db or ""))).render_as_string(hide_password=False)


def _load_settings_file(path: Path) -> dict[str, Any]:
    data = _read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping of settings, got {type(data).__name__}", {"file": str(path)}
        )
    try:
        loaded: dict[str, Any] = _SettingsFileSchema().load(data)
    except ValidationError as exc:
        _raise_problems(str(path), _marshmallow_problems(exc.messages, SETTING_NAMES))
    base = path.parent
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for name, raw in loaded.items():
        if name in ("rules", "shops_file"):
            value: Any = None if raw is None else base / Path(raw)
        elif name in ("database_url", "queue_url") and raw is not None:
            value = _resolve_sqlite_url(raw, base)
        else:
            value = raw
        try:
            values[name] = _check(name, value)
        except ValueError as exc:
            problems.append((name, str(exc)))
    if problems:
        _raise_problems(str(path), problems)
    return values


# ---------------------------------------------------------------- load_settings
def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build the settings: defaults ← settings file ← ``LADDER_*`` environment ← ``overrides``.

    The settings file is ``LADDER_CONFIG``, else ``config/ladder.yaml`` when present.  Every
    setting has its variable, ``LADDER_`` + the name in upper case (``LADDER_DATABASE_URL``,
    ``LADDER_RULES``, ``LADDER_SHOPS_FILE``, ``LADDER_QUEUE_URL``, ``LADDER_ADMIN_TOKEN``,
    ``LADDER_SMTP_URL``, ``LADDER_HOST``, ``LADDER_PORT``, ``LADDER_LOG_LEVEL``,
    ``LADDER_AUTO_MIGRATE``, ``LADDER_QUEUE_POLL_SECONDS``).  ``overrides`` are CLI flags keyed
    by setting name; ``None`` values mean "flag not given".  Discovered defaults (``./rules``,
    ``config/shops.yaml``) are made absolute, so a later ``chdir`` does not change them.
    Raises :class:`ConfigError` naming the file / variable / flag, the key and the problem.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}

    config_file: Path | None
    explicit = env.get("LADDER_CONFIG") or None
    if explicit:
        config_file = Path(explicit)
        if not config_file.is_file():
            raise ConfigError(f"LADDER_CONFIG: settings file {config_file} not found", {"LADDER_CONFIG": [explicit]})
    else:
        config_file = DEFAULT_CONFIG_FILE.resolve() if DEFAULT_CONFIG_FILE.is_file() else None
    if config_file is not None:
        values.update(_load_settings_file(config_file))

    problems: list[tuple[str, str]] = []
    for var, name in ENV_VARS.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        try:
            values[name] = _check(name, _coerce(name, raw))
        except ValueError as exc:
            problems.append((var, str(exc)))
    if problems:
        _raise_problems("environment", problems)

    for name, raw in (overrides or {}).items():
        if name not in SETTING_NAMES:
            raise ConfigError(
                f"unknown setting {name!r}{_did_you_mean(name, SETTING_NAMES)}", {name: ["unknown setting"]}
            )
        if raw is None:
            continue
        try:
            values[name] = _check(name, _coerce(name, raw))
        except ValueError as exc:
            problems.append((f"--{name.replace('_', '-')}", str(exc)))
    if problems:
        _raise_problems("command line", problems)

    # Discovered defaults, only where nobody said anything (an explicit null keeps None).
    if "rules" not in values and DEFAULT_RULES_DIR.is_dir():
        values["rules"] = DEFAULT_RULES_DIR.resolve()
    if "shops_file" not in values and DEFAULT_SHOPS_FILE.is_file():
        values["shops_file"] = DEFAULT_SHOPS_FILE.resolve()
    return replace(Settings(), config_file=config_file, **values)


# ================================================================ the shops file
# A shop entry has common keys (below) and its platform's own keys, which the platform's adapter
# declares (``Adapter.settings_schema``: credentials, API version …).  This module knows no
# platform: it asks the adapter registry, lazily, because the adapters import ShopConfig.
SHOP_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ENV_REF = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")
#: a platform key whose name says credential is hidden from repr even when no adapter said so
#: (a ShopConfig built by hand in a test or an embedding app)
_CREDENTIAL_WORDS = ("secret", "token", "password", "key")


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
    #: the platform's own keys (from its adapter's settings schema)
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False, hash=False)
    #: which of :attr:`settings` are secrets (hidden from repr)
    secret_settings: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __init__(self, id: str, platform: str, domain: str | None = None, webhook_secret: str | None = None,
                 previous_webhook_secret: str | None = None, api_url: str | None = None,
                 programme: Path | None = None, currency: str = "EUR", timezone: str = "UTC", mode: str = "live",
                 capabilities: tuple[str, ...] = (), notify_webhook_url: str | None = None,
                 settings: Mapping[str, Any] | None = None, secret_settings: frozenset[str] = frozenset(),
                 **platform_settings: Any) -> None:
        values = {"id": id, "platform": platform, "domain": domain, "webhook_secret": webhook_secret,
                  "previous_webhook_secret": previous_webhook_secret, "api_url": api_url, "programme": programme,
                  "currency": currency, "timezone": timezone, "mode": mode, "capabilities": tuple(capabilities),
                  "notify_webhook_url": notify_webhook_url,
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


_url = validate.URL(schemes={"http", "https"}, require_tld=False)
_SECRET = {"secret": True}


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


#: the common keys of a shop entry
SHOP_KEYS = tuple(_ShopSchema._declared_fields)


def _registered_adapters() -> dict[str, Any]:
    # imported late: the adapters import this module for ShopConfig
    from .adapters.registry import load_adapters

    return load_adapters()


def _adapter_load_error(platform: str) -> str | None:
    from .adapters.registry import load_errors

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


def _shop_problems(item: dict[str, Any], env: Mapping[str, str], schema: Schema,
                   adapter: Any) -> list[tuple[str, str]]:
    """Checks the schema cannot express; resolves ``env:NAME`` secrets in place."""
    problems: list[tuple[str, str]] = []
    if not SHOP_ID_RE.match(item["id"]):
        problems.append(("id", "must be lower-case letters, digits, '-' or '_', starting with a letter or digit"))
    for key, declared in schema.fields.items():
        if not declared.metadata.get("secret"):
            continue
        raw = item.get(key)
        ref = _ENV_REF.match(raw) if isinstance(raw, str) else None
        if ref:
            value = env.get(ref.group(1))
            if not value:
                problems.append((key, f"environment variable {ref.group(1)} is not set"))
            else:
                item[key] = value
        elif raw is not None and raw == "":
            problems.append((key, "must not be empty"))
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
    has = tuple(adapter.capabilities)
    for cap in item.get("capabilities", ()):
        if cap not in has:
            problems.append(
                ("capabilities", f"{platform} has no capability {cap!r} (it has: {', '.join(has) or 'none'})")
            )
    return problems


def load_shops(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> dict[str, ShopConfig]:
    """Read and validate the shops file; without one, a single generic shop ``default``.

    Each entry is validated by the common schema merged with its platform adapter's settings
    schema, so the platform's own keys get the same treatment as the common ones: unknown keys
    (with did-you-mean), required keys, ``env:NAME`` secrets, defaults.
    """
    if path is None:
        return {DEFAULT_SHOP.id: DEFAULT_SHOP}
    env = os.environ if env is None else env
    path = Path(path)
    data = _read_yaml(path)
    if data is None or data == []:
        raise ConfigError(f"{path}: lists no shops (remove the file to use the default generic shop)")
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of shops, got {type(data).__name__}", {"file": str(path)})

    shops: dict[str, ShopConfig] = {}
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
            _raise_problems(where, _marshmallow_problems(exc.messages, tuple(schema.fields)))
        assert adapter is not None  # an unregistered platform fails the schema
        problems = _shop_problems(item, env, schema, adapter)
        if item["id"] in shops:
            problems.append(("id", "duplicate shop id"))
        if problems:
            _raise_problems(where, problems)
        if "programme" in item:
            item["programme"] = path.parent / item["programme"]
        item["capabilities"] = tuple(item.get("capabilities", adapter.capabilities))
        own = {key: item.pop(key, None) for key in adapter.settings_schema._declared_fields}
        shops[item["id"]] = ShopConfig(**item, settings=own, secret_settings=adapter.secret_keys())
    return shops
