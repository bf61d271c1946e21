"""A customer's points spent and adjusted (admin token):

* ``POST /api/v1/shops/<shop>/customers/<customer_id>/points/redemptions`` ``{"id", "points"}`` —
  spend points now; the value is paid out in the shop (store credit, or a one-time code);
* ``POST …/points/adjustments`` ``{"points", "reason", "expires_days"}`` — add or remove points by
  hand (``X-Ladder-Author`` required).

The customer's balance is in the customer document (``points``).  See :mod:`..redemptions`.
"""
from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from .. import adjustments
from ..documents import PointsInputSchema
from ..events import MAX_ID, MAX_POINTS
from ..globals import ladder
from .auth import ADMIN_SECURITY, require_admin
from .boundary import AUTHOR_HEADER, json_body, require_author
from .responses import error_responses

URL_PREFIX = "/api/v1/shops"
blp = Blueprint("points", __name__, description="Points customers spend: redemptions and manual adjustments")

#: who redeems when the request does not say (a storefront calling on the customer's behalf)
DEFAULT_REDEEMER = "api"


@blp.before_request
def _check_request() -> None:
    require_admin()
    if request.content_length or request.is_json:
        json_body()  # 400 for a repeated key; malformed JSON is the arguments parser's 400


class RedemptionBodySchema(Schema):
    id = fields.String(required=True, validate=validate.Length(min=1, max=MAX_ID), metadata={
        "description": "your idempotency key for this redemption: the same id again answers the same redemption"})
    points = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_POINTS))


class PointsAdjustmentBodySchema(Schema):
    points = fields.Integer(required=True, strict=True, validate=[
        validate.Range(min=-MAX_POINTS, max=MAX_POINTS), validate.NoneOf([0], error="Must not be 0.")],
        metadata={"description": "points added (> 0) or removed (< 0; not more than the balance)"})
    reason = fields.String(required=True, validate=validate.Length(min=1, max=adjustments.MAX_REASON))
    expires_days = fields.Integer(strict=True, validate=validate.Range(min=1, max=36_500), metadata={
        "description": "points added last this many days (default: they never expire)"})


_ERRORS = {"_400": "a bad id or number, JSON with a repeated key, or an invalid id in the URL; nothing changed",
           "_401": "missing or wrong admin token",
           "_404": "unknown shop, or a customer with no accepted event",
           "_422": "the body does not match the schema; nothing changed"}


@blp.route("/<string:shop>/customers/<string:customer_id>/points/redemptions")
class Redemptions(MethodView):
    @blp.doc(security=ADMIN_SECURITY, parameters=[
        {"in": "header", "name": AUTHOR_HEADER, "required": False,
         "description": f"who redeems (default {DEFAULT_REDEEMER!r}), kept in the audit log",
         "schema": {"type": "string", "minLength": 1, "maxLength": 255}}],
        responses=error_responses(**_ERRORS, _409="insufficient_points (more than the balance), "
                                  "idempotency_conflict (the id was used with other points), points_have_no_value "
                                  "(the programme sets no point_value), or a shop in shadow mode; nothing changed"))
    @blp.arguments(RedemptionBodySchema)
    @blp.response(201, PointsInputSchema, description="the redemption (the same id again: the same redemption, "
                                                      "duplicate true), its award and the points after it")
    def post(self, body: dict[str, Any], shop: str, customer_id: str):
        """Spend a customer's points now; the value reaches the shop as store credit or a one-time code."""
        author = require_author() if request.headers.get(AUTHOR_HEADER, "").strip() else DEFAULT_REDEEMER
        result = ladder().service.redeem_points(shop, customer_id, body["id"], body["points"], author=author)
        return result, 201


@blp.route("/<string:shop>/customers/<string:customer_id>/points/adjustments")
class PointsAdjustments(MethodView):
    @blp.doc(security=ADMIN_SECURITY, parameters=[
        {"in": "header", "name": AUTHOR_HEADER, "required": True,
         "description": "who adjusts (kept with the input and in the audit log)",
         "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
        {"in": "header", "name": "Idempotency-Key", "required": False,
         "description": "names this request: a retry with the same key and content answers 200 with what was "
                        "stored, with other content 409",
         "schema": {"type": "string", "minLength": 1, "maxLength": adjustments.MAX_KEY}}],
        responses=error_responses(**_ERRORS, _409="insufficient_points (removing more than the balance) or "
                                  "idempotency_conflict; nothing changed"))
    @blp.arguments(PointsAdjustmentBodySchema)
    @blp.response(201, PointsInputSchema, description="the adjustment as stored and the points after it")
    @blp.alt_response(200, schema=PointsInputSchema, success=True,
                      description="a retry (same Idempotency-Key and content): the adjustment stored the first time")
    def post(self, body: dict[str, Any], shop: str, customer_id: str):
        """Add or remove a customer's points by hand, with the reason."""
        result = ladder().service.adjust_points(
            shop, customer_id, body["points"], author=require_author(), reason=body["reason"],
            expires_days=body.get("expires_days"),
            idempotency_key=adjustments.check_idempotency_key(request.headers.get("Idempotency-Key")))
        return result, 200 if result["duplicate"] else 201
