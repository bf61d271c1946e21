"""Settings: defaults ← settings file ← ``LADDER_*`` environment ← CLI flags (the shops file is
:mod:`.shops`, one connected shop :class:`.shop.ShopConfig`).

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
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml
from marshmallow import RAISE, Schema, ValidationError
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
    # Largest request body read (webhooks, the events API); larger → 413 before it is read.
    max_body_bytes: int = 4 * 1024 * 1024
    # The deliveries lane: shops served in parallel, and calls per second to one shop's API.
    delivery_workers: int = 4
    delivery_rate_per_shop: float = 2.0
    # Signs the links of promotional e-mails (unsubscribe); None: derived from admin_token.  The
    # server and every worker need the same one.
    secret_key: str | None = None
    # The server's address as customers reach it (unsubscribe links); None: http://host:port.
    public_url: str | None = None
    config_file: Path | None = None

    def __repr__(self) -> str:  # secrets never end up in logs via repr()
        shown = {
            f.name: ("***" if f.name in ("admin_token", "smtp_url", "secret_key") and getattr(self, f.name) else getattr(self, f.name))
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
def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
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
    if name in ("port", "max_body_bytes", "delivery_workers"):
        return _parse_int(raw)
    if name == "auto_migrate":
        return raw if isinstance(raw, bool) else _parse_bool(str(raw))
    if name in ("queue_poll_seconds", "delivery_rate_per_shop"):
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
    if name == "max_body_bytes" and not 1024 <= value <= 1024 ** 3:
        raise ValueError(f"must be between 1024 and {1024 ** 3} bytes, got {value}")
    if name == "delivery_workers" and not 1 <= value <= 64:
        raise ValueError(f"must be between 1 and 64, got {value}")
    if name == "delivery_rate_per_shop" and not 0 < value <= 1000:
        raise ValueError(f"must be more than 0 and at most 1000 calls per second, got {value}")
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
    secret_key = mf.String(allow_none=True)
    public_url = mf.String(allow_none=True)
    max_body_bytes = mf.Integer(strict=True)
    delivery_workers = mf.Integer(strict=True)
    delivery_rate_per_shop = mf.Float()


def read_yaml(path: Path) -> Any:
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


def marshmallow_problems(messages: Any, known: tuple[str, ...], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten marshmallow's error dict into (key, problem) pairs, adding did-you-mean for typos."""
    out: list[tuple[str, str]] = []
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            path = f"{prefix}{key}"
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                for msg in value:
                    if msg == "Unknown field.":
                        msg = "unknown key" + did_you_mean(str(key), known)
                    out.append((path, msg))
            else:
                out.extend(marshmallow_problems(value, known, f"{path}."))
    elif isinstance(messages, list):
        out.extend((prefix.rstrip(".") or "(file)", str(m)) for m in messages)
    else:
        out.append((prefix.rstrip(".") or "(file)", str(messages)))
    return out


def raise_problems(where: str, problems: list[tuple[str, str]]) -> None:
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
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping of settings, got {type(data).__name__}", {"file": str(path)}
        )
    try:
        loaded: dict[str, Any] = _SettingsFileSchema().load(data)
    except ValidationError as exc:
        raise_problems(str(path), marshmallow_problems(exc.messages, SETTING_NAMES))
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
        raise_problems(str(path), problems)
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
        raise_problems("environment", problems)

    for name, raw in (overrides or {}).items():
        if name not in SETTING_NAMES:
            raise ConfigError(
                f"unknown setting {name!r}{did_you_mean(name, SETTING_NAMES)}", {name: ["unknown setting"]}
            )
        if raw is None:
            continue
        try:
            values[name] = _check(name, _coerce(name, raw))
        except ValueError as exc:
            problems.append((f"--{name.replace('_', '-')}", str(exc)))
    if problems:
        raise_problems("command line", problems)

    # Discovered defaults, only where nobody said anything (an explicit null keeps None).
    if "rules" not in values and DEFAULT_RULES_DIR.is_dir():
        values["rules"] = DEFAULT_RULES_DIR.resolve()
    if "shops_file" not in values and DEFAULT_SHOPS_FILE.is_file():
        values["shops_file"] = DEFAULT_SHOPS_FILE.resolve()
    return replace(Settings(), config_file=config_file, **values)
