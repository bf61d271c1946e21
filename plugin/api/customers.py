"""Customer documents: where a customer stands, and why; the shop's customers page by page and
its counts (admin token)."""
from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, pre_load, validate

from .. import customer_lists, store
from ..clock import utcnow
from ..documents import CustomerDocumentSchema, CustomerPageSchema, ExplanationSchema, ShopStatsSchema
from ..events import AwareTime
from ..globals import ladder
from .auth import ADMIN_SECURITY, require_admin
from .responses import error_responses

URL_PREFIX = "/api/v1/shops"
blp = Blueprint("customers", __name__, description="Where a customer stands on the ladder, and why")
blp.before_request(require_admin)

ERRORS = error_responses(_400="an id in the URL that no event can carry (blank, control characters)",
                         _401="missing or wrong admin token",
                         _404="unknown shop, or a customer with no accepted event")


@blp.route("/<string:shop>/customers/<string:customer_id>")
class Customer(MethodView):
    @blp.doc(security=ADMIN_SECURITY, responses=ERRORS)
    @blp.response(200, CustomerDocumentSchema, description="the customer's stage, history, facts, rewards and next step")
    def get(self, shop: str, customer_id: str):
        """The customer's stage, history, facts, rewards and next step."""
        return ladder().service.customer(shop, customer_id)


class ExplainArgs(Schema):
    """``GET …/explain``'s query: the instant to explain (default now)."""

    as_of = AwareTime(metadata={"type": "string", "format": "date-time",
                                "description": "explain the customer as of this time (default now), under the "
                                               "version active then; awards granted by then, with today's status"})


@blp.route("/<string:shop>/customers/<string:customer_id>/explain")
class Explain(MethodView):
    @blp.doc(security=ADMIN_SECURITY, responses=ERRORS)
    @blp.arguments(ExplainArgs, location="query", as_kwargs=True)
    @blp.response(200, ExplanationSchema, description="why this stage, what gets to the next, when lapse would "
                  "come, each reward granted / withheld / reversed with its reason")
    def get(self, shop: str, customer_id: str, as_of=None):
        """Explain the customer's position, with the trace of every comparison."""
        return ladder().service.explanation(shop, customer_id, as_of)


# ---------------------------------------------------------------- seeing customers: lists and counts
class CustomerListArgs(Schema):
    """The filters of ``GET …/customers`` (combined with AND); an empty value is no filter."""

    stage = fields.String(validate=validate.Length(max=store.NAME), metadata={
        "description": "only customers in this stage (a stage the programme does not have finds nobody)"})
    subgroup = fields.String(validate=validate.Length(max=store.NAME), metadata={
        "description": "only customers in this subgroup"})
    lapsed = fields.Boolean(metadata={"description": "true: only lapsed customers; false: only the others"})
    email = fields.String(validate=validate.Length(max=320), metadata={
        "description": "the customer with this e-mail address (case-insensitive exact match); a guest "
                       "linked to an account shows the account"})
    limit = fields.Integer(load_default=customer_lists.PAGE_DEFAULT,
                           validate=validate.Range(min=1, max=customer_lists.PAGE_MAX),
                           metadata={"description": f"at most this many customers (default "
                                                    f"{customer_lists.PAGE_DEFAULT}, at most {customer_lists.PAGE_MAX})"})
    cursor = fields.String(validate=lambda value: _valid_cursor(value), metadata={
        "description": "next_cursor of the previous page"})

    @pre_load
    def _empty_is_absent(self, data: Any, **kwargs: Any) -> Any:
        # webargs hands a MultiDict proxy: keep only the non-empty values
        return {key: data[key] for key in data if data[key] != ""} if hasattr(data, "keys") else data


def _valid_cursor(value: str) -> None:
    try:
        customer_lists.decode_cursor(value)
    except customer_lists.BadCursor as exc:
        raise ValidationError(str(exc)) from None


LIST_ERRORS = error_responses(_400="an invalid shop id in the URL", _401="missing or wrong admin token",
                              _404="unknown shop")


@blp.route("/<string:shop>/customers")
class CustomerList(MethodView):
    @blp.doc(security=ADMIN_SECURITY, responses=LIST_ERRORS)
    @blp.arguments(CustomerListArgs, location="query", as_kwargs=True)
    @blp.response(200, CustomerPageSchema, description="a page of the shop's customers in customer_id order")
    def get(self, shop: str, limit: int, **filters: Any):
        """The shop's customers, filtered by stage, subgroup, lapse or e-mail, page by page."""
        service = ladder().service
        service.shop(shop)
        page = customer_lists.list_customers(service.db, shop, limit=limit, **filters)
        return {"items": page.items, "limit": page.limit, "next_cursor": page.next_cursor}


@blp.route("/<string:shop>/stats")
class ShopStats(MethodView):
    @blp.doc(security=ADMIN_SECURITY, responses=LIST_ERRORS)
    @blp.response(200, ShopStatsSchema, description="customers per stage × subgroup × lapsed, awards per status")
    def get(self, shop: str):
        """Customers per stage × subgroup × lapsed (stage null: not on the ladder yet), awards per
        status and per reward, and the programme version active now."""
        service = ladder().service
        service.shop(shop)
        programme = service.programme(shop)[0]
        return customer_lists.stats(service.db, shop, programme_version=programme.version,
                                    stage_order=[s.id for s in programme.stages],
                                    subgroup_order=[g.id for g in programme.subgroups], as_of=utcnow())
