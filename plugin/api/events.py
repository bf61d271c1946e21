"""Generic events: ``POST /api/v1/shops/<shop>/events`` (admin token), all-or-nothing."""
from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from ..documents import AcceptResultSchema
from ..errors import BadRequest
from ..globals import ladder
from .auth import ADMIN_SECURITY, require_admin
from .boundary import json_body
from .responses import error_responses

URL_PREFIX = "/api/v1/shops"
blp = Blueprint("events", __name__, description="Customer events from any shop (the generic JSON API)")
blp.before_request(require_admin)

EVENT_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"oneOf": [
        {"$ref": "#/components/schemas/Event"},
        {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"$ref": "#/components/schemas/Event"}},
    ]}}},
}


@blp.route("/<string:shop>/events")
class Events(MethodView):
    @blp.doc(requestBody=EVENT_BODY, security=ADMIN_SECURITY, responses=error_responses(
        _400="invalid JSON, a repeated key, an invalid item (per-item errors) or an invalid shop id in the URL; "
             "nothing stored",
        _401="missing or wrong admin token",
        _404="unknown shop",
        _409="an id reused with other content; nothing stored",
        _413="the body is larger than the limit (max_body_bytes); nothing stored",
        _503="the store is briefly busy or unavailable (Retry-After); nothing stored",
    ))
    @blp.response(202, AcceptResultSchema, description="every event persisted (or already known with the same content)")
    def post(self, shop: str):
        """Accept one event or a list of events for a shop.

        An id already seen with the same content is a no-op; if any item is invalid (400)
        or reuses an id with other content (409), nothing of the request is stored.
        """
        if not request.is_json:
            raise BadRequest("the body must be JSON (Content-Type: application/json)",
                             {"_schema": ["expected an event object or a list of events"]})
        try:
            payload = json_body()  # None when malformed; 400 for a repeated key
        except RecursionError:  # nested deeper than the JSON parser goes
            payload = None
        if payload is None:
            raise BadRequest("the body is not valid JSON", {"_schema": ["malformed JSON"]})
        if not isinstance(payload, (dict, list)):
            raise BadRequest("expected an event object or a list of events",
                             {"_schema": ["expected an object or a list"]})
        return ladder().service.accept_events(shop, payload, source="api")
