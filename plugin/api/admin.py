"""Manual inputs by staff and the audit log (admin token; who acts is the required
``X-Ladder-Author`` header of every change):

* ``POST /api/v1/shops/<shop>/turns`` — an admin turn: every customer on the ladder starts a new turn;
* ``POST /api/v1/shops/<shop>/customers/<customer_id>/adjustments`` — set a stage, start a turn,
  grant or revoke a reward for one customer;
* ``GET|PUT /api/v1/shops/<shop>/exclusions`` — customers never evaluated, by tag or e-mail pattern;
* ``GET /api/v1/shops/<shop>/audit`` — every admin action, newest first, a page at a time;
* ``POST /api/v1/shops/<shop>/awards/<pk>/done`` — staff carried out by hand an award of the worklist
  (``GET …/awards?status=needs_manual_action``, in :mod:`.operator`).

Each change is stored as an event (see :mod:`..adjustments`) with its author, reason and audit
row, and takes effect now.  A client that retries sends an ``Idempotency-Key`` header: the same
key with the same content answers 200 with what was stored the first time; with other content,
409.
"""
from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from .. import adjustments, audit
from ..documents import (
    AdjustmentEventSchema,
    AuditPageSchema,
    AwardRowSchema,
    ExclusionsSchema,
    ShopTurnSchema,
)
from ..errors import BadRequest
from ..events import AwareTime
from ..globals import ladder
from ..outbox import worklist
from .auth import ADMIN_SECURITY, require_admin
from .boundary import AUTHOR_HEADER, json_body, require_author
from .responses import error_responses

URL_PREFIX = "/api/v1/shops"
blp = Blueprint("admin", __name__, description="Manual adjustments, admin turns, exclusions, the audit log and the "
                                              "staff worklist")

#: the optional header that names one request, so a retry of it is not a second input
IDEMPOTENCY_HEADER = "Idempotency-Key"

#: the headers of every changing call
CHANGE_HEADERS = [
    {"in": "header", "name": AUTHOR_HEADER, "required": True,
     "description": "who performs this action (kept with the input and in the audit log)",
     "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
    {"in": "header", "name": IDEMPOTENCY_HEADER, "required": False,
     "description": "names this request: a retry with the same key and content answers 200 with what was "
                    "stored, with other content 409",
     "schema": {"type": "string", "minLength": 1, "maxLength": adjustments.MAX_KEY}},
]


@blp.before_request
def _check_request() -> None:
    """The admin token first; then, for a change, its author, and a JSON body that repeats no key."""
    require_admin()
    if request.method in ("POST", "PUT"):
        require_author()
        if request.content_length or request.is_json:
            json_body()  # 400 for a repeated key; malformed JSON is the arguments parser's 400


def _idempotency_key() -> str | None:
    return adjustments.check_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))


_REASON = fields.String(required=True, validate=validate.Length(min=1, max=adjustments.MAX_REASON),
                        metadata={"description": "why, in words"})


class TurnBodySchema(Schema):
    reason = _REASON


#: the field each action needs, and the fields it allows besides action and reason
_NEEDS = {"set_stage": "stage", "grant": "reward", "revoke": "award_key", "start_turn": None}
class _JsonBoolean(fields.Boolean):
    """A JSON ``true`` or ``false``, nothing that merely looks like one."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


_ALLOWS = {"set_stage": {"stage", "force"}, "grant": {"reward"}, "revoke": {"award_key"}, "start_turn": set()}


class AdjustmentBodySchema(Schema):
    """One manual adjustment: ``set_stage`` (``stage``, ``force`` to move below the current
    stage), ``start_turn``, ``grant`` (``reward``: an id of the active programme) or ``revoke``
    (``award_key``: one of the customer's awards)."""

    action = fields.String(required=True, validate=validate.OneOf(list(adjustments.ACTIONS)))
    stage = fields.String(validate=validate.Length(min=1, max=64))
    # JSON true/false only: forcing a customer down a stage is not inferred from "yes" or 1
    force = _JsonBoolean(metadata={"description": "set_stage: allow a stage below the current one"})
    reward = fields.String(validate=validate.Length(min=1, max=64))
    award_key = fields.String(validate=validate.Length(min=1, max=512))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=adjustments.MAX_REASON))

    @validates_schema
    def _per_action(self, data: dict[str, Any], **kwargs: Any) -> None:
        action = data.get("action")
        if action not in _NEEDS:
            return
        errors: dict[str, list[str]] = {}
        needed = _NEEDS[action]
        if needed and data.get(needed) is None:
            errors[needed] = [f"Required for {action}."]
        for name in ("stage", "force", "reward", "award_key"):
            if name in data and name not in _ALLOWS[action]:
                errors[name] = [f"Not used by {action}."]
        if errors:
            raise ValidationError(errors)


class ExclusionsBodySchema(Schema):
    tags = fields.List(fields.String(validate=validate.Length(min=1, max=adjustments.MAX_TAG)), load_default=list,
                       validate=validate.Length(max=adjustments.MAX_EXCLUSIONS),
                       metadata={"description": "customers with one of these tags are never evaluated"})
    emails = fields.List(fields.String(validate=validate.Length(min=1, max=adjustments.MAX_PATTERN)),
                         load_default=list, validate=validate.Length(max=adjustments.MAX_EXCLUSIONS),
                         metadata={"description": "shell patterns, case-insensitive: *@myshop.example"})
    reason = _REASON


class AuditArgsSchema(Schema):
    since = AwareTime(metadata={"type": "string", "format": "date-time",
                                "description": "only entries at or after this time"})
    action = fields.String(validate=validate.Length(min=1, max=64), metadata={"description": "only this action"})
    limit = fields.Integer(load_default=audit.PAGE_DEFAULT, validate=validate.Range(min=1, max=audit.PAGE_MAX),
                           metadata={"description": f"at most this many entries (default {audit.PAGE_DEFAULT})"})
    cursor = fields.String(validate=validate.And(validate.Length(min=1, max=200), lambda value: _valid_cursor(value)),
                           metadata={"description": "the next_cursor of the previous page"})


def _valid_cursor(value: str) -> None:
    """A cursor this listing did not make is invalid input (422), as on ``GET …/customers``."""
    try:
        audit.decode_cursor(value)
    except BadRequest as exc:
        raise ValidationError(exc.message) from None


_CHANGE_ERRORS = {
    "_400": f"missing {AUTHOR_HEADER} header, a blank reason, an unknown stage, reward or award, a bad "
            "Idempotency-Key, JSON with a repeated key, or an invalid id in the URL; nothing stored",
    "_401": "missing or wrong admin token",
    "_422": "the body does not match the schema; nothing stored",
}


@blp.route("/<string:shop>/turns")
class Turns(MethodView):
    @blp.doc(security=ADMIN_SECURITY, parameters=CHANGE_HEADERS, responses=error_responses(
        **_CHANGE_ERRORS, _404="unknown shop",
        _409="the Idempotency-Key was used for another request; nothing stored"))
    @blp.arguments(TurnBodySchema)
    @blp.response(201, ShopTurnSchema, description="stored: every customer on the ladder starts a new turn now "
                                                   "(re-decided by the bulk lane's sweep)")
    @blp.alt_response(200, schema=ShopTurnSchema, success=True,
                      description="a retry (same Idempotency-Key and content): the turn stored the first time")
    def post(self, body: dict[str, Any], shop: str):
        """An admin turn: every customer of the shop on the ladder starts a new turn now."""
        stored = ladder().service.start_shop_turn(shop, author=require_author(), reason=body["reason"],
                                                  idempotency_key=_idempotency_key())
        return stored, 200 if stored["duplicate"] else 201


@blp.route("/<string:shop>/customers/<string:customer_id>/adjustments")
class Adjustments(MethodView):
    @blp.doc(security=ADMIN_SECURITY, parameters=CHANGE_HEADERS, responses=error_responses(
        **_CHANGE_ERRORS, _404="unknown shop, or a customer with no accepted event",
        _409="a stage below the current one without force, the customer's current stage, an award already "
             "reversed, a turn for a customer not on the ladder, or an Idempotency-Key used for another request; "
             "nothing stored"))
    @blp.arguments(AdjustmentBodySchema)
    @blp.response(201, AdjustmentEventSchema, description="the adjustment as stored in the customer's ledger; the "
                                                          "customer is re-decided by the live lane")
    @blp.alt_response(200, schema=AdjustmentEventSchema, success=True,
                      description="a retry (same Idempotency-Key and content): the event stored the first time")
    def post(self, body: dict[str, Any], shop: str, customer_id: str):
        """A manual adjustment of one customer, applied from now on and kept by every later reconcile."""
        stored = ladder().service.adjust(shop, customer_id, body["action"], author=require_author(),
                                         reason=body["reason"], stage=body.get("stage"),
                                         force=bool(body.get("force", False)), reward=body.get("reward"),
                                         award_key=body.get("award_key"), idempotency_key=_idempotency_key())
        return stored.event, 200 if stored.duplicate else 201


@blp.route("/<string:shop>/exclusions")
class Exclusions(MethodView):
    @blp.doc(security=ADMIN_SECURITY, responses=error_responses(
        _400="an invalid shop id in the URL", _401="missing or wrong admin token", _404="unknown shop"))
    @blp.response(200, ExclusionsSchema, description="the exclusions in force")
    def get(self, shop: str):
        """The shop's exclusions in force: since when, by whom and why."""
        return ladder().service.exclusions(shop)

    @blp.doc(security=ADMIN_SECURITY, parameters=CHANGE_HEADERS, responses=error_responses(
        **_CHANGE_ERRORS, _404="unknown shop",
        _409="the Idempotency-Key was used for another request; nothing stored"))
    @blp.arguments(ExclusionsBodySchema)
    @blp.response(200, ExclusionsSchema, description="the exclusions in force from now on (`unchanged`: the same "
                                                     "list was in force, nothing stored)")
    def put(self, body: dict[str, Any], shop: str):
        """Replace the shop's exclusions from now on (the full list; empty lists end them)."""
        return ladder().service.set_exclusions(shop, author=require_author(), reason=body["reason"],
                                               tags=body["tags"], emails=body["emails"],
                                               idempotency_key=_idempotency_key())


@blp.route("/<string:shop>/audit")
class Audit(MethodView):
    @blp.doc(security=ADMIN_SECURITY, responses=error_responses(
        _400="an invalid shop id in the URL", _401="missing or wrong admin token", _404="unknown shop"))
    @blp.arguments(AuditArgsSchema, location="query", as_kwargs=True)
    @blp.response(200, AuditPageSchema, description="the shop's audit entries, newest first")
    def get(self, shop: str, limit: int, since: Any = None, action: str | None = None, cursor: str | None = None):
        """Every admin action on the shop — who, when, what, on what and why — newest first."""
        page = ladder().service.audit_entries(shop, since=since, action=action, limit=limit, cursor=cursor)
        return {"items": page.items, "limit": page.limit, "next_cursor": page.next_cursor}



class DoneBodySchema(Schema):
    note = fields.String(required=True, validate=validate.Length(min=1, max=worklist.MAX_NOTE),
                         metadata={"description": "what was done (e.g. the parcel number), in words"})


@blp.route("/<string:shop>/awards/<int:pk>/done")
class AwardDone(MethodView):
    @blp.doc(security=ADMIN_SECURITY, parameters=CHANGE_HEADERS[:1], responses=error_responses(
        **_CHANGE_ERRORS, _404="unknown shop or award",
        _409="the award is not waiting for staff (only needs_manual_action and failed ones are marked done); "
             "nothing changed"))
    @blp.arguments(DoneBodySchema)
    @blp.response(200, AwardRowSchema, description="the award, delivered, with done_by, done_at and the note (the "
                                                   "same note again: unchanged)")
    def post(self, body: dict[str, Any], shop: str, pk: int):
        """Staff carried out an award by hand (a gift sent, a service booked): it is delivered, the customer told."""
        return ladder().service.mark_award_done(shop, pk, author=require_author(), note=body["note"]).award
