"""One WooCommerce site's REST API v3 (``{api_url}/wp-json/wc/v3/…``) with Basic auth.

WooCommerce accepts Basic auth only over HTTPS (plain HTTP needs OAuth 1.0a), so a real shop's
``api_url`` must be ``https://``.  HTTP failures are translated once, by
:func:`loyalty_ladder.adapters.http.send`; errors carry WooCommerce's ``code`` (``errors["code"]``)
and status so callers can tell "already exists" or a 404 apart.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from ...errors import Rejected, Unavailable
from ...shop import ShopConfig
from ..http import send

__all__ = ["WooClient"]

#: a rate-limited request without Retry-After waits this long
DEFAULT_RETRY_AFTER = 2.0


class WooClient:
    """REST calls for one site, with our ``DeliveryError`` tree for every failure."""

    def __init__(self, shop: ShopConfig, session: requests.Session, timeout: float):
        self.shop = shop
        self.session = session
        self.timeout = timeout

    @property
    def has_api(self) -> bool:
        """Whether the shop entry gives what REST calls need (a shadow shop may not)."""
        return bool(self.shop.api_url and self.shop.option("consumer_key") and self.shop.option("consumer_secret"))

    def url(self, path: str) -> str:
        return f"{(self.shop.api_url or '').rstrip('/')}/wp-json/wc/v3/{path}"

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
             body: Any = None) -> requests.Response:
        """One REST call; the 2xx response, or our ``DeliveryError``."""
        if not self.has_api:
            raise Rejected(f"shop {self.shop.id} has no api_url / consumer_key / consumer_secret")
        return send(self.session, method, self.url(path), who=f"WooCommerce {method} {path}",
                    timeout=self.timeout, default_retry_after=DEFAULT_RETRY_AFTER,
                    params=params, json=body, headers={"Accept": "application/json"},
                    auth=(self.shop.option("consumer_key", ""), self.shop.option("consumer_secret", "")))

    def json(self, response: requests.Response, where: str) -> Any:
        """The answer's JSON; ``Unavailable`` when it is none."""
        try:
            return response.json()
        except ValueError:
            # an HTML maintenance page or a proxy's answer: the API is not really there
            raise Unavailable(f"{where}: the answer is not JSON (HTTP {response.status_code})") from None

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """``GET path`` as JSON."""
        return self.json(self.call("GET", path, params=params), f"GET {path}")
