"""The signed unsubscribe link of promotional e-mails: its token, the secret that signs it, and
where customers reach the server.

A token names the shop and customer and carries an HMAC-SHA256 of them under a server secret
(``LADDER_SECRET_KEY``, else one derived from ``LADDER_ADMIN_TOKEN``), so the link needs no login
and cannot be forged; ``notify`` writes it into e-mails, ``api/unsubscribe.py`` reads it back.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from .config import Settings


def unsubscribe_secret(settings: Settings) -> bytes | None:
    """The key that signs unsubscribe tokens: ``secret_key``, else one derived from the admin
    token (so a server and its workers that share the token agree); None when neither is set."""
    if settings.secret_key:
        return settings.secret_key.encode("utf-8")
    if settings.admin_token:
        return hmac.new(settings.admin_token.encode("utf-8"), b"loyalty-ladder unsubscribe links",
                        hashlib.sha256).digest()
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, shop_id: str, customer_id: str) -> bytes:
    return hmac.new(secret, json.dumps([shop_id, customer_id], separators=(",", ":")).encode("utf-8"),
                    hashlib.sha256).digest()


def unsubscribe_token(secret: bytes, shop_id: str, customer_id: str) -> str:
    """``<shop and customer, base64url>.<HMAC-SHA256 of them, base64url>``: the same for the same
    customer every time, unforgeable without the secret."""
    who = json.dumps([shop_id, customer_id], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return f"{_b64(who)}.{_b64(_mac(secret, shop_id, customer_id))}"


def read_unsubscribe_token(secret: bytes | None, token: str) -> tuple[str, str] | None:
    """``(shop, customer)`` of a genuine token; None for anything else (never an exception)."""
    if not secret or not isinstance(token, str) or token.count(".") != 1 or len(token) > 4096:
        return None
    who_text, _, mac_text = token.partition(".")
    try:
        who = json.loads(_unb64(who_text).decode("utf-8"))
        mac = _unb64(mac_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not (isinstance(who, list) and len(who) == 2 and all(isinstance(part, str) for part in who)):
        return None
    shop_id, customer_id = who
    if not hmac.compare_digest(mac, _mac(secret, shop_id, customer_id)):
        return None
    return shop_id, customer_id


def public_base_url(settings: Settings) -> str:
    """Where customers reach the server: ``public_url``, else ``http://host:port``."""
    return (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
