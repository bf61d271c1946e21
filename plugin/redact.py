"""Secrets never printed: URLs with their passwords masked, and a log filter that masks every
known secret (the admin token, the secret key, the SMTP, database and queue passwords, each shop's
webhook secrets and API credentials) wherever it appears in a log line.

* :func:`mask_url` — ``postgresql+psycopg://ladder:***@db/ladder``, ``redis://:***@cache:6379/0``;
  SQLAlchemy URLs through ``make_url(...).render_as_string(hide_password=True)``, anything else
  (redis, smtp, https) through :mod:`urllib.parse`; a password-less URL is unchanged.
* :func:`mask_text` — a text with every ``scheme://user:password@`` password and every known
  secret replaced by ``***``.
* :class:`SecretFilter` — a :class:`logging.Filter` doing that to a record's message, arguments
  and traceback.  :func:`install` registers the secrets of a set of settings and shops and puts
  the filter in front of *every* record of the process (through the log-record factory, so a
  handler added later — gunicorn's, a test's — is covered too).  Idempotent; secrets add up.

A leaf: it knows settings and shops only by attribute names, so the CLI, ``create_app`` and
anything below may use it.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
#: a secret shorter than this is not masked in free text (it would mask ordinary words)
MIN_SECRET_LENGTH = 4
#: ``scheme://user:password@`` in free text: the password part
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<password>[^\s@/]+)(?P<tail>@)")
#: the setting names whose values are secrets themselves, and those that are URLs with a password
SECRET_SETTINGS = ("admin_token", "secret_key")
URL_SETTINGS = ("database_url", "queue_url", "smtp_url")
#: a shop's keys whose values are secrets (besides the ones its adapter marks ``secret``)
SECRET_SHOP_KEYS = ("webhook_secret", "previous_webhook_secret")
_CREDENTIAL_WORDS = ("secret", "token", "password", "key")
#: URL schemes rendered by SQLAlchemy (the rest, redis, smtp, https …, by urllib)
DATABASE_BACKENDS = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def mask_url(url: Any) -> str:
    """The URL with its password (and nothing else) replaced by ``***``; ``""`` for None."""
    if url is None:
        return ""
    text = str(url)
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError
        try:
            parsed = make_url(text)
        except (ArgumentError, ValueError):
            parsed = None
        if parsed is not None and parsed.get_backend_name() in DATABASE_BACKENDS:
            return parsed.render_as_string(hide_password=True) if parsed.password is not None else text
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        pass
    try:
        parts = urlsplit(text)
    except ValueError:
        return mask_text(text)
    if parts.password is None:
        return text
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    return urlunsplit((parts.scheme, f"{user}:{MASK}@{host}{port}", parts.path, parts.query, parts.fragment))


def url_password(url: Any) -> str | None:
    """The password of a URL (decoded), or None."""
    if not url:
        return None
    try:
        password = urlsplit(str(url)).password
    except ValueError:
        return None
    return unquote(password) if password else None


class SecretFilter(logging.Filter):
    """Masks known secrets and URL passwords in a record's message and traceback (never drops it)."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *secrets: Any) -> None:
        with self._lock:
            for secret in secrets:
                if isinstance(secret, str) and len(secret) >= MIN_SECRET_LENGTH:
                    self._secrets.add(secret)

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    def mask(self, text: str) -> str:
        return mask_text(text, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001  (a broken format string, a failing __str__: logging reports it)
            return True
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords and each of ``secrets`` (longest first) replaced by ``***``."""
    out = _USERINFO.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", str(text))
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in out:
            out = out.replace(secret, MASK)
    return out


#: the process's one filter (records of every logger pass it once :func:`install` ran)
FILTER = SecretFilter()
_installed = False
_install_lock = threading.Lock()


def secrets_of(settings: Any = None, shops: Mapping[str, Any] | Iterable[Any] | None = None) -> list[str]:
    """Every secret a set of settings and shops holds (empty values left out)."""
    found: list[Any] = []
    for name in SECRET_SETTINGS:
        found.append(getattr(settings, name, None))
    for name in URL_SETTINGS:
        found.append(url_password(getattr(settings, name, None)))
    for shop in (shops.values() if isinstance(shops, Mapping) else shops or ()):
        found.extend(getattr(shop, name, None) for name in SECRET_SHOP_KEYS)
        hidden = set(getattr(shop, "secret_settings", ()) or ())
        for key, value in (getattr(shop, "settings", None) or {}).items():
            if key in hidden or any(word in key.lower() for word in _CREDENTIAL_WORDS):
                found.append(value)
    return [s for s in found if isinstance(s, str) and s]


def install(settings: Any = None, shops: Mapping[str, Any] | Iterable[Any] | None = None,
            extra: Iterable[str] = ()) -> SecretFilter:
    """Register the secrets of ``settings`` and ``shops`` (and ``extra``) with :data:`FILTER` and
    make every log record of the process pass it (once); returns the filter."""
    global _installed
    FILTER.add(*secrets_of(settings, shops), *extra)
    with _install_lock:
        if not _installed:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                FILTER.filter(record)
                return record

            logging.setLogRecordFactory(factory)
            _installed = True
    return FILTER
