"""Customer documents: where a customer stands, and why (admin token)."""
from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from ..documents import CustomerDocumentSchema, ExplanationSchema
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


@blp.route("/<string:shop>/customers/<string:customer_id>/explain")
class Explain(MethodView):
    @blp.doc(security=ADMIN_SECURITY, responses=ERRORS)
    @blp.response(200, ExplanationSchema, description="why this stage, what gets to the next, when lapse would "
                  "come, each reward granted / withheld / reversed with its reason")
    def get(self, shop: str, customer_id: str):
        """Explain the customer's position, with the trace of every comparison."""
        return ladder().service.explanation(shop, customer_id)
