"""The generic events API as an adapter: our own JSON events, from any shop.

Generic shops send events to ``POST /api/v1/shops/<shop>/events`` with the admin token; that
endpoint does not go through this adapter.  The adapter exists so that generic shops live in
the same registry as the platforms (``adapter_for(shop)`` works for every shop), and so that
recorded generic webhooks can be re-injected through the inbox (``ladder replay``), where they
authenticate like the platforms do:

* ``X-Ladder-Shop``: the shop's ``domain`` from the shops file (or its id, for a shop without
  a domain — like the built-in ``default`` shop);
* ``X-Ladder-Hmac-Sha256``: the base64 HMAC-SHA256 of the raw body with the shop's
  ``webhook_secret`` (or ``previous_webhook_secret``).  A shop without a webhook secret accepts
  no signed webhooks at all: its only way in is the admin-token API;
* ``X-Ladder-Delivery-Id`` (optional): the dedupe key; without it, the SHA-256 of the body, so
  the same body twice is one delivery (the events' own ids deduplicate anyway);
* ``X-Ladder-Topic`` (optional, default ``events``).

The body is one event object or a list of them, exactly as the events API takes them.
Generic shops have no API to deliver to: rewards reach their customers through notifications
and the customer endpoint, so :meth:`GenericAdapter.deliver` raises ``NotSupported``.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from marshmallow import ValidationError

from ..errors import BadRequest, NotSupported, SignatureError
from ..events import parse_events
from ..shop import ShopConfig
from .base import Adapter, Delivery, DeliveryResult, Inbound, get_header, normalise_domain, verify_hmac_base64

SHOP_HEADER = "X-Ladder-Shop"
SIGNATURE_HEADER = "X-Ladder-Hmac-Sha256"
DELIVERY_HEADER = "X-Ladder-Delivery-Id"
TOPIC_HEADER = "X-Ladder-Topic"
DEFAULT_TOPIC = "events"


class GenericAdapter(Adapter):
    """Our own JSON events: no platform keys, no webhook endpoint, no shop API."""

    platform: ClassVar[str] = "generic"
    capabilities: ClassVar[tuple[str, ...]] = ()
    #: generic shops post to the events API (``/api/v1/shops/<shop>/events``), not ``/webhooks/``
    serves_webhooks: ClassVar[bool] = False
    #: nothing to deliver to: awards stay ``due`` for the integrator, who fetches them
    has_shop_api: ClassVar[bool] = False

    @classmethod
    def matches_shop(cls, shop: ShopConfig, hint: str | None) -> bool:
        """By domain, or by id for a shop without a domain (like the built-in ``default``)."""
        if shop.domain:
            return super().matches_shop(shop, hint)
        return shop.id == (normalise_domain(hint) or "")

    @classmethod
    def shop_hint(cls, headers: Mapping[str, str]) -> str | None:
        return get_header(headers, SHOP_HEADER) or None

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        if not self.secrets:
            raise SignatureError(f"shop {self.shop.id!r} has no webhook_secret: send its events to the events API",
                                 {SIGNATURE_HEADER: ["this shop accepts no signed webhooks"]})
        if not verify_hmac_base64(get_header(headers, SIGNATURE_HEADER), body, self.secrets):
            raise SignatureError("missing or wrong webhook signature",
                                 {SIGNATURE_HEADER: ["expected the base64 HMAC-SHA256 of the raw body"]})

    def delivery_id(self, headers: Mapping[str, str], body: bytes) -> str | None:
        return get_header(headers, DELIVERY_HEADER) or f"sha256:{hashlib.sha256(body).hexdigest()}"

    def topic(self, headers: Mapping[str, str], body: bytes) -> str:
        return get_header(headers, TOPIC_HEADER) or DEFAULT_TOPIC

    def parse(self, topic: str, headers: Mapping[str, str], body: bytes) -> Inbound:
        """One event object or a non-empty list of them, validated like the events API does."""
        from ..events import MAX_EVENTS_PER_REQUEST

        if topic != DEFAULT_TOPIC:
            raise BadRequest(f"unknown generic topic {topic!r}", {"topic": [f"expected {DEFAULT_TOPIC!r}"]})
        try:
            payload: Any = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}", {"_schema": ["malformed JSON"]}) from None
        items = payload if isinstance(payload, list) else [payload]
        if not isinstance(payload, (dict, list)) or not items:
            raise BadRequest("expected an event object or a non-empty list of events",
                             {"_schema": ["expected an object or a non-empty list"]})
        if len(items) > MAX_EVENTS_PER_REQUEST:
            raise BadRequest(f"too many events: {len(items)} (at most {MAX_EVENTS_PER_REQUEST})",
                             {"_schema": [f"at most {MAX_EVENTS_PER_REQUEST} events per delivery"]})
        try:
            parse_events(items)
        except ValidationError as exc:
            raise BadRequest("invalid events", exc.normalized_messages()) from None
        return Inbound(events=tuple(items))

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        raise NotSupported(
            f"generic shop {self.shop.id!r} has no shop API: award {delivery.award.get('key')} reaches the "
            "customer through notifications and the customer endpoint")
