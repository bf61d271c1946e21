"""One shop's Admin GraphQL endpoint: ``{api_url}/admin/api/{api_version}/graphql.json``.

HTTP failures are translated once, by :func:`loyalty_ladder.adapters.http.send`; GraphQL adds
its own failures at HTTP 200, translated here: ``THROTTLED`` → ``RateLimited`` (with the wait
the cost extension implies), ``INTERNAL_SERVER_ERROR`` → ``Unavailable``, other ``errors`` and
a mutation's ``userErrors`` → ``Rejected``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import requests

from ...errors import NotSupported, RateLimited, Rejected, Unavailable
from ...shop import ShopConfig
from ..http import send

__all__ = ["ShopifyClient"]

#: Retry-After when Shopify's 429 names none (its REST/GraphQL leaky bucket refills in ~1-2 s)
DEFAULT_RETRY_AFTER = 2.0
#: connect timeout; the read timeout is the adapter's ``timeout``
CONNECT_TIMEOUT = 5.0


class ShopifyClient:
    """Admin GraphQL calls for one shop, with our ``DeliveryError`` tree for every failure."""

    def __init__(self, shop: ShopConfig, session: requests.Session, timeout: float):
        self.shop = shop
        self.session = session
        self.timeout = timeout

    @property
    def graphql_url(self) -> str:
        api_version = self.shop.option("api_version")
        if not self.shop.api_url or not api_version:
            raise NotSupported(f"shop {self.shop.id} has no api_url/api_version: Shopify calls need manual action")
        return f"{self.shop.api_url.rstrip('/')}/admin/api/{api_version}/graphql.json"

    def query(self, document: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """POST one GraphQL document; the ``data`` object, or our DeliveryError for every failure."""
        resp = send(self.session, "POST", self.graphql_url, who="Shopify",
                    timeout=(min(CONNECT_TIMEOUT, self.timeout), self.timeout),
                    default_retry_after=DEFAULT_RETRY_AFTER,
                    json={"query": document, "variables": dict(variables)},
                    headers={"X-Shopify-Access-Token": self.shop.option("access_token", ""),
                             "Accept": "application/json"})
        try:
            payload = resp.json()
        except ValueError:
            raise Unavailable(f"Shopify answered HTTP {resp.status_code} without JSON") from None
        if not isinstance(payload, dict):
            raise Unavailable("Shopify answered an unexpected JSON document")
        errors = payload.get("errors")
        if errors:
            _raise_graphql_errors(errors, payload.get("extensions") or {})
        data = payload.get("data")
        if not isinstance(data, dict):
            raise Unavailable("Shopify answered without data")
        return data

    def mutate(self, name: str, document: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """A mutation's result object; ``userErrors`` (HTTP 200) are a permanent refusal."""
        result = self.query(document, variables).get(name)
        if not isinstance(result, dict):
            raise Unavailable(f"Shopify answered {name} without a result")
        user_errors = result.get("userErrors") or []
        if user_errors:
            messages = [f"{'.'.join(str(f) for f in e.get('field') or []) or name}: {e.get('message')}"
                        for e in user_errors]
            raise Rejected(f"Shopify rejected {name}: " + "; ".join(messages), {"userErrors": user_errors})
        return result


def _raise_graphql_errors(errors: Sequence[Any], extensions: Mapping[str, Any]) -> None:
    codes = [((e.get("extensions") or {}).get("code") if isinstance(e, dict) else None) for e in errors]
    messages = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
    if "THROTTLED" in codes:
        raise RateLimited(f"Shopify GraphQL throttled: {messages}", _throttle_wait(extensions))
    if "INTERNAL_SERVER_ERROR" in codes:
        raise Unavailable(f"Shopify GraphQL failed: {messages}")
    raise Rejected(f"Shopify GraphQL refused the request: {messages}", {"errors": list(errors)})


def _throttle_wait(extensions: Mapping[str, Any]) -> float:
    """Seconds until the bucket holds the query's cost: (requested − available) / restore rate."""
    cost = extensions.get("cost") or {}
    status = cost.get("throttleStatus") or {}
    try:
        requested = float(cost["requestedQueryCost"])
        available = float(status["currentlyAvailable"])
        rate = float(status["restoreRate"])
    except (KeyError, TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    if rate <= 0:
        return DEFAULT_RETRY_AFTER
    return max((requested - available) / rate, 0.1)
