"""One outbound HTTP call, with our error tree instead of the vendor's.

Every call from us to a shop API or a notification receiver goes through :func:`send`, so the
same failure means the same thing everywhere (the outbox decides retries from the class alone):

* a timeout or a connection error → ``Unavailable`` (retried with backoff);
* HTTP 429 → ``RateLimited(retry_after)`` from ``Retry-After`` (seconds or an HTTP date);
* HTTP 5xx and 408 → ``Unavailable``;
* any other non-2xx status → ``Rejected`` (permanent) carrying the shop's own message, its
  status and error code in ``errors`` (``{"status", "code", "message"}``) so a caller can tell a
  404 or "code already exists" apart.

Messages read ``"<who>: HTTP <status>: <the shop's message>"``.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import requests

from ..errors import RateLimited, Rejected, Unavailable
from .base import parse_retry_after, retry_after_seconds

__all__ = ["error_message", "send"]

#: how much of a non-JSON error body is kept in a message
MAX_MESSAGE = 300


def send(session: requests.Session, method: str, url: str, *, who: str,
         timeout: float | tuple[float, float], default_retry_after: float | None = None,
         **kwargs: Any) -> requests.Response:
    """Send one request; the 2xx response, or our ``DeliveryError`` for every failure.

    ``who`` names the call in messages (``"Shopify"``, ``"WooCommerce POST coupons"``).
    ``default_retry_after`` is the wait of a 429 without a usable ``Retry-After``; None leaves
    it to the caller's backoff.  ``kwargs`` go to :meth:`requests.Session.request` unchanged.
    """
    try:
        response = session.request(method, url, timeout=timeout, **kwargs)
    except requests.Timeout as exc:
        raise Unavailable(f"{who}: timed out after {_seconds(timeout)} s ({exc})") from None
    except requests.RequestException as exc:
        raise Unavailable(f"{who}: could not be reached: {type(exc).__name__}: {exc}") from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    message, code = error_message(response)
    if status == 429:
        header = response.headers.get("Retry-After")
        wait = (parse_retry_after(header) if default_retry_after is None
                else retry_after_seconds(header, default_retry_after))
        raise RateLimited(f"{who}: rate limited (HTTP 429): {message}", retry_after=wait)
    if status >= 500 or status == 408:
        raise Unavailable(f"{who}: HTTP {status}: {message}")
    raise Rejected(f"{who}: HTTP {status}: {message}", {"status": status, "code": code, "message": message})


def error_message(response: requests.Response) -> tuple[str, str | None]:
    """The shop's own words for a failed request, and its error code when it names one.

    Understands WooCommerce/WordPress ``{"code", "message"}`` and Shopify ``{"errors": …}``
    (a string, a list of messages or objects, or a field → messages object); anything else is
    the start of the body, else the reason phrase.
    """
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        if body.get("message"):
            return str(body["message"]), (str(body["code"]) if body.get("code") else None)
        errors = body.get("errors")
        if isinstance(errors, str):
            return errors, None
        if isinstance(errors, list):
            return "; ".join(str(e.get("message", e)) if isinstance(e, Mapping) else str(e) for e in errors), None
        if isinstance(errors, Mapping):
            return "; ".join(f"{k}: {v}" for k, v in errors.items()), None
        return json.dumps(body)[:MAX_MESSAGE], None
    text = (response.text or "").strip()[:MAX_MESSAGE]
    if response.is_redirect or response.is_permanent_redirect:
        text = f"redirected to {response.headers.get('Location')}" + (f" {text}" if text else "")
    return text or response.reason or f"HTTP {response.status_code}", None


def _seconds(timeout: float | tuple[float, float]) -> str:
    value = max(timeout) if isinstance(timeout, tuple) else timeout
    return f"{value:g}"
