"""Shop webhooks: ``POST /webhooks/<platform>`` (Shopify, WooCommerce, any registered adapter).

Authenticated by the platform's signature, not the admin token.  The request is verified over
the raw bytes, persisted in the inbox and acknowledged at once; processing runs on the queue, so
a slow engine never makes the shop time out and retry.  Answers:

* 200 ``{"status": "accepted"}`` — stored, processing enqueued;
* 200 ``{"status": "duplicate"}`` — this delivery was already received: nothing changes;
* 200 ``{"status": "ping"}`` — a platform's set-up ping (WooCommerce ``webhook_id=N``): stored nowhere;
* 401 — unknown shop, missing or wrong signature: nothing stored;
* 400 — a body that is not UTF-8: nothing stored.

A signed body that is not valid JSON (or not a payload the adapter understands) is still
acknowledged with 200: the shop cannot fix it by retrying, so the inbox row is marked
``failed`` with the reason, for an operator to read.

Generic shops send events to ``POST /api/v1/shops/<shop>/events`` with the admin token; there
is no ``/webhooks/generic``.
"""
from __future__ import annotations

import logging

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from ..adapters.registry import load_adapters
from ..documents import WebhookResultSchema
from ..errors import NotFound
from ..globals import ladder
from ..inbox import served_platforms
from .boundary import body_bytes
from .responses import error_responses

log = logging.getLogger(__name__)

URL_PREFIX = "/webhooks"
blp = Blueprint("webhooks", __name__, description="Shop webhooks (Shopify, WooCommerce), signed by the shop")

WEBHOOK_BODY = {
    "required": True,
    "description": "the platform's webhook payload, exactly as the shop signed it",
    "content": {"application/json": {"schema": {"type": "object"}},
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
}


@blp.route("/<string:platform>")
class Webhook(MethodView):
    @blp.doc(requestBody=WEBHOOK_BODY, security=[], responses=error_responses(
        _400="the body is not UTF-8; nothing stored",
        _401="unknown shop, or a missing or wrong signature; nothing stored",
        _404="no adapter for this platform",
        _413="the body is larger than LADDER_MAX_BODY_BYTES; nothing read, nothing stored",
        _503="the store is briefly busy or unavailable (Retry-After); nothing stored",
    ))
    @blp.response(200, WebhookResultSchema, description="accepted (stored, processing enqueued), duplicate "
                  "(this delivery was already received) or ping (a set-up ping, stored nowhere)")
    def post(self, platform: str):
        """Receive one webhook: verify it, store it, acknowledge it; it is processed on the queue.

        ``platform`` is ``shopify`` or ``woocommerce`` (or a platform a plugin registers).
        """
        cls = load_adapters().get(platform)
        if cls is not None and not cls.serves_webhooks:  # e.g. generic: its shops post to the events API
            raise NotFound(f"no webhook endpoint for platform {platform!r}",
                           {"platform": [(f"webhooks are served for: {', '.join(served_platforms())}; "
                                          f"{platform} shops send events to /api/v1/shops/<shop>/events")]})
        # The raw bytes, before anything parses them: the signature covers exactly these, and
        # form parsing (the WooCommerce ping is form-encoded) must not consume the stream first.
        service = ladder().service
        # The headers name the shop: an unknown one is refused before a byte of the body is read.
        service.check_webhook_headers(platform, request.headers)
        body = body_bytes()  # at most MAX_CONTENT_LENGTH, else 413
        result = service.receive_webhook(platform, request.headers, body)
        return {"status": result.status}
