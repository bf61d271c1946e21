"""What an operator reads when something went wrong (admin token): a shop's inbox rows,
deliveries and awards by status, newest first, so failures — and the staff worklist — are visible
without a database shell.

``GET /api/v1/shops/<shop>/inbox?status=failed``, ``GET …/deliveries?status=failed`` and
``GET …/awards?status=needs_manual_action`` (marking one done is in :mod:`.admin`); at most
``limit`` rows (default 50, at most 500), ``before=<pk>`` for the next page (``next_before`` of
the previous one).  An inbox row never shows the webhook's body or headers (personal data); a
delivery never shows the award document.  Sending them round again is ``ladder inbox retry`` /
``ladder deliveries retry``, after the cause is fixed.
"""
from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from .. import inbox_failures
from ..documents import AwardPageSchema, DeliveryPageSchema, InboxPageSchema
from ..globals import ladder
from ..outbox import failures
from ..statuses import AwardStatus, DeliveryStatus, InboxStatus
from .auth import ADMIN_SECURITY, require_admin
from .responses import error_responses

URL_PREFIX = "/api/v1/shops"
blp = Blueprint("operator", __name__, description="Inbox rows and deliveries by status, for operators")
blp.before_request(require_admin)

ERRORS = error_responses(_400="an invalid shop id in the URL", _401="missing or wrong admin token",
                         _404="unknown shop")


class _ListArgs(Schema):
    limit = fields.Integer(load_default=inbox_failures.LIST_DEFAULT, validate=validate.Range(min=1, max=inbox_failures.LIST_MAX),
                           metadata={"description": f"at most this many rows (default {inbox_failures.LIST_DEFAULT})"})
    before = fields.Integer(validate=validate.Range(min=1, max=2**63 - 1),
                            metadata={"description": "only rows with a smaller pk: the next page"})


class InboxArgs(_ListArgs):
    status = fields.String(validate=validate.OneOf([str(s) for s in InboxStatus]))


class DeliveryArgs(_ListArgs):
    status = fields.String(validate=validate.OneOf([str(s) for s in DeliveryStatus]))


class AwardArgs(_ListArgs):
    status = fields.String(validate=validate.OneOf([str(s) for s in AwardStatus]),
                           metadata={"description": "only awards with this status (the worklist: needs_manual_action)"})


def _page(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    return {"items": rows, "limit": limit, "next_before": rows[-1]["pk"] if len(rows) == limit else None}


@blp.route("/<string:shop>/inbox")
class Inbox(MethodView):
    @blp.doc(security=ADMIN_SECURITY, responses=ERRORS)
    @blp.arguments(InboxArgs, location="query", as_kwargs=True)
    @blp.response(200, InboxPageSchema, description="the shop's inbox rows, newest first")
    def get(self, shop: str, limit: int, before: int | None = None, status: str | None = None):
        """The shop's received webhooks with status and reason (``?status=failed``); no bodies."""
        service = ladder().service
        service.shop(shop)
        return _page(inbox_failures.list_rows(service.db, shop_id=shop, status=status, limit=limit, before=before), limit)


@blp.route("/<string:shop>/deliveries")
class Deliveries(MethodView):
    @blp.doc(security=ADMIN_SECURITY, responses=ERRORS)
    @blp.arguments(DeliveryArgs, location="query", as_kwargs=True)
    @blp.response(200, DeliveryPageSchema, description="the shop's deliveries, newest first")
    def get(self, shop: str, limit: int, before: int | None = None, status: str | None = None):
        """The shop's deliveries (grants, revokes, notices) with status and last error (``?status=failed``)."""
        service = ladder().service
        service.shop(shop)
        return _page(failures.list_rows(service.db, shop_id=shop, status=status, limit=limit, before=before), limit)


@blp.route("/<string:shop>/awards")
class Awards(MethodView):
    @blp.doc(security=ADMIN_SECURITY, responses=ERRORS)
    @blp.arguments(AwardArgs, location="query", as_kwargs=True)
    @blp.response(200, AwardPageSchema, description="the shop's awards, newest first")
    def get(self, shop: str, limit: int, before: int | None = None, status: str | None = None):
        """The shop's awards by status, newest first: ``?status=needs_manual_action`` is the staff worklist."""
        return _page(ladder().service.awards(shop, status=status, before=before, limit=limit), limit)
