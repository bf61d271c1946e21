"""A fake shop Admin API on 127.0.0.1 for end-to-end tests: a real HTTP server.

It is strict where a shop is strict — it refuses wrong credentials (401), unknown
mutations and malformed bodies (400) — and records every call it accepted, so a
test can require each discount code and tag call exactly once.  A WooCommerce coupon
whose code exists already is refused as WooCommerce does, and recorded too (with its
``status``), so a second create of the same code still shows.

Shopify customer metafields (``metafieldsSet``, ``metafieldsDelete``) are checked against the
schema's input types (a ``json`` value must be JSON) and kept per owner, namespace and key
(:meth:`FakeShop.metafield`); a WooCommerce customer ``PUT`` must carry ``meta_data`` as a list
of ``{key, value}`` objects.

Shopify store credit (``storeCreditAccountCredit``) keeps a balance per customer and
currency (:meth:`FakeShop.store_credit_balance`); ``store_credit_enabled = False`` or
``store_credit_currencies`` make it answer the userErrors of a shop without store credit.
"""
from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

MUTATION = re.compile(r"mutation\s*(?:\w+\s*)?(?:\([^)]*\))?\s*\{\s*(\w+)", re.DOTALL)
CUSTOMER_GID = re.compile(r"^gid://shopify/Customer/(\d+)$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
#: what a shop without store credit answers: the API's enum names no code for it, so this
#: message is our stand-in (the adapter also knows UNSUPPORTED_CURRENCY, the documented code)
STORE_CREDIT_DISABLED = "Store credit is not enabled for this shop."
WOO_DISCOUNT_TYPES = ("percent", "fixed_cart", "fixed_product")


@dataclass
class Call:
    name: str  # GraphQL mutation name or "METHOD /path"
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    #: the HTTP status answered (a refused duplicate coupon is recorded with its 400)
    status: int = 200


class FakeShop:
    """Shopify Admin GraphQL and WooCommerce REST v3, both on one local server."""

    def __init__(self, access_token: str = "shpat_test", consumer_key: str = "ck_test",
                 consumer_secret: str = "cs_test"):
        self.access_token = access_token
        self.basic = "Basic " + base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode()
        self.calls: list[Call] = []
        self.customers_meta: dict[str, list[dict[str, Any]]] = {}
        #: what the shop knows of its orders: order id -> (customer id, e-mail), for orderOwner queries
        self.orders: dict[str, tuple[str | None, str | None]] = {}
        #: WooCommerce REST resources served page by page (GET /customers, GET /orders)
        self.woo: dict[str, list[dict[str, Any]]] = {"customers": [], "orders": []}
        self.per_page_seen: list[int] = []
        #: Shopify discount codes created: code (case-folded) -> discount gid, for codeDiscountNodeByCode
        self.discount_codes: dict[str, str] = {}
        #: the tags each Shopify customer carries (gid → tags), as tagsAdd and tagsRemove leave them
        self.customer_tags: dict[str, set[str]] = {}
        #: Shopify customer ids the fake does not know (customerTags answers null)
        self.unknown_customers: set[str] = set()
        #: Shopify store credit: (customer gid, currency) -> balance; use store_credit_balance()
        self.store_credit: dict[tuple[str, str], Decimal] = {}
        self.store_credit_accounts: dict[tuple[str, str], str] = {}
        #: False: every storeCreditAccountCredit answers the userError of a shop without store credit
        self.store_credit_enabled = True
        #: the currencies store credit takes (None: any); others answer UNSUPPORTED_CURRENCY
        self.store_credit_currencies: set[str] | None = None
        #: Shopify customers that exist (legacy ids); None: any well-formed customer gid exists
        self.shopify_customers: set[str] | None = None
        #: mutations carried out but answered HTTP 502, as when the answer is lost on the way
        self.answer_lost: set[str] = set()
        #: WooCommerce coupons created: code (lower-cased, as WooCommerce stores it) -> coupon
        self.coupons: dict[str, dict[str, Any]] = {}
        #: Shopify metafields: (owner gid, namespace, key) -> {id, type, value}; see metafield()
        self.metafields: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        self.app = self._build()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeShop:  # noqa: PYI034 (typing.Self needs Python 3.11)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def metafield(self, customer_id: str, key: str, namespace: str = "loyalty_ladder") -> Any:
        """A Shopify customer's JSON metafield, parsed (None when it does not exist)."""
        found = self.metafields.get((f"gid://shopify/Customer/{customer_id}", namespace, key))
        return None if found is None else json.loads(found["value"])

    def _metafields(self, name: str, query: str, variables: Any):
        """metafieldsSet / metafieldsDelete, checked as Shopify's schema types them."""
        def invalid(message: str):
            return jsonify({"errors": [{"message": message, "extensions": {"code": "INVALID_VARIABLE"}}]})

        setting = name == "metafieldsSet"
        input_type = "MetafieldsSetInput" if setting else "MetafieldIdentifierInput"
        if not re.search(rf"\$metafields:\s*\[{input_type}!\]!", query) \
                or not re.search(rf"{name}\s*\(\s*metafields:\s*\$metafields\s*\)", query):
            return invalid(f"{name} takes (metafields: [{input_type}!]!)")
        exact = isinstance(variables, dict) and set(variables) == {"metafields"}
        items = variables.get("metafields") if exact else None
        if not isinstance(items, list) or not 1 <= len(items) <= 25:
            return invalid(f"{name}: variables must be exactly metafields, a list of 1 to 25 inputs")
        allowed = {"ownerId", "namespace", "key", "type", "value", "compareDigest"} if setting else \
            {"ownerId", "namespace", "key"}
        errors: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            required = {"ownerId", "key", "value"} if setting else {"ownerId", "namespace", "key"}
            if not isinstance(item, dict) or not set(item) <= allowed or not required <= set(item) \
                    or not all(isinstance(v, str) for v in item.values()):
                return invalid(f"{name}: metafields[{i}] must be a {input_type} of strings, got {item!r}")
            if not CUSTOMER_GID.match(item["ownerId"]):
                return invalid(f"Invalid global id '{item['ownerId']}' (the fake takes customer gids)")
            namespace = item.get("namespace", "")
            if not 3 <= len(namespace) <= 255 or not re.match(r"^[A-Za-z0-9_-]+$", namespace):
                errors.append({"field": ["metafields", str(i), "namespace"], "code": "INVALID",
                               "message": "Namespace is invalid."})
            if not 2 <= len(item["key"]) <= 64 or not re.match(r"^[A-Za-z0-9_-]+$", item["key"]):
                errors.append({"field": ["metafields", str(i), "key"], "code": "INVALID", "message": "Key is invalid."})
            if setting:
                if item.get("type") != "json":  # the only type this fake knows
                    errors.append({"field": ["metafields", str(i), "type"], "code": "INVALID_TYPE",
                                   "message": "Type is invalid."})
                else:
                    try:
                        json.loads(item["value"])
                    except ValueError:
                        errors.append({"field": ["metafields", str(i), "value"], "code": "INVALID_VALUE",
                                       "message": "Value is invalid JSON."})
        if errors:
            result_key = "metafields" if setting else "deletedMetafields"
            return jsonify({"data": {name: {result_key: None, "userErrors": errors}}})
        out: list[Any] = []
        with self._lock:
            for item in items:
                where = (item["ownerId"], item["namespace"], item["key"])
                if setting:
                    stored = self.metafields.setdefault(where, {"id": f"gid://shopify/Metafield/{next(self._ids)}"})
                    stored.update(type=item["type"], value=item["value"])
                    out.append({"id": stored["id"], "namespace": where[1], "key": where[2]})
                else:
                    gone = self.metafields.pop(where, None)
                    out.append(None if gone is None else {"ownerId": where[0], "namespace": where[1], "key": where[2]})
        if setting:
            return jsonify({"data": {name: {"metafields": out, "userErrors": []}}})
        return jsonify({"data": {name: {"deletedMetafields": out, "userErrors": []}}})

    def store_credit_balance(self, customer_id: str, currency: str) -> Decimal:
        """A Shopify customer's store credit in ``currency`` (0 when never credited)."""
        return self.store_credit.get((f"gid://shopify/Customer/{customer_id}", currency), Decimal(0))

    def _record(self, name: str, body: Any, status: int = 200) -> None:
        with self._lock:
            self.calls.append(Call(name, body, dict(request.headers), status))

    def _store_credit_credit(self, query: str, variables: Any):
        """storeCreditAccountCredit: checked as Shopify's schema types it, then credited."""
        def invalid(message: str):
            return jsonify({"errors": [{"message": message, "extensions": {"code": "INVALID_VARIABLE"}}]})

        def user_error(field_path: list[str] | None, code: str | None, message: str):
            return jsonify({"data": {"storeCreditAccountCredit": {
                "storeCreditAccountTransaction": None,
                "userErrors": [{"field": field_path, "code": code, "message": message}]}}})

        if not re.search(r"\$id:\s*ID!", query) or not re.search(r"\$creditInput:\s*StoreCreditAccountCreditInput!", query) \
                or not re.search(r"storeCreditAccountCredit\s*\(\s*id:\s*\$id\s*,\s*creditInput:\s*\$creditInput\s*\)", query):
            return invalid("storeCreditAccountCredit takes (id: ID!, creditInput: StoreCreditAccountCreditInput!)")
        if not isinstance(variables, dict) or set(variables) != {"id", "creditInput"}:
            return invalid(f"variables must be exactly id and creditInput, got {sorted(variables or {})}")
        owner = variables["id"]
        credit = variables["creditInput"]
        if not isinstance(owner, str) or not CUSTOMER_GID.match(owner):
            return invalid(f"Invalid global id '{owner}' (the fake takes customer gids)")
        if not isinstance(credit, dict) or not set(credit) <= {"creditAmount", "expiresAt", "notify"} \
                or not isinstance(credit.get("creditAmount"), dict) \
                or set(credit["creditAmount"]) != {"amount", "currencyCode"}:
            return invalid(f"creditInput must be {{creditAmount: {{amount, currencyCode}}}}, got {credit!r}")
        money = credit["creditAmount"]
        try:
            amount = Decimal(str(money["amount"])) if isinstance(money["amount"], (str, int, float)) else None
        except InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite():
            return invalid(f"creditAmount.amount {money['amount']!r} is not a Decimal")
        currency = money["currencyCode"]
        if not isinstance(currency, str) or not CURRENCY.match(currency):
            return invalid(f"creditAmount.currencyCode {currency!r} is not a CurrencyCode")
        if not self.store_credit_enabled:
            return user_error(None, None, STORE_CREDIT_DISABLED)
        if self.store_credit_currencies is not None and currency not in self.store_credit_currencies:
            return user_error(["creditInput", "creditAmount", "currencyCode"], "UNSUPPORTED_CURRENCY",
                              "The currency provided is not currently supported.")
        if amount <= 0:
            return user_error(["creditInput", "creditAmount", "amount"], "NEGATIVE_OR_ZERO_AMOUNT",
                              "A positive amount must be used to credit a store credit account.")
        legacy = CUSTOMER_GID.match(owner).group(1)  # type: ignore[union-attr]
        if self.shopify_customers is not None and legacy not in self.shopify_customers:
            return user_error(["id"], "OWNER_NOT_FOUND", "Owner does not exist.")
        with self._lock:
            key = (owner, currency)
            balance = self.store_credit.get(key, Decimal(0)) + amount
            self.store_credit[key] = balance
            account = self.store_credit_accounts.setdefault(key, f"gid://shopify/StoreCreditAccount/{next(self._ids)}")
            transaction = f"gid://shopify/StoreCreditAccountCreditTransaction/{next(self._ids)}"
        if "storeCreditAccountCredit" in self.answer_lost:
            return jsonify({"errors": "Bad Gateway"}), 502
        return jsonify({"data": {"storeCreditAccountCredit": {"storeCreditAccountTransaction": {
            "id": transaction, "amount": {"amount": str(amount), "currencyCode": currency},
            "balanceAfterTransaction": {"amount": str(balance), "currencyCode": currency},
            "account": {"id": account}}, "userErrors": []}}})

    def _build(self) -> Flask:
        app = Flask("fakeshop")

        @app.post("/admin/api/<version>/graphql.json")
        def graphql(version: str):
            if request.headers.get("X-Shopify-Access-Token") != self.access_token:
                return jsonify({"errors": "[API] Invalid API key or access token"}), 401
            payload = request.get_json(silent=True)
            if not isinstance(payload, dict) or "query" not in payload:
                return jsonify({"errors": "bad request"}), 400
            owner = re.search(r"query\s+orderOwner", payload["query"])
            if owner:
                gid = (payload.get("variables") or {}).get("id", "")
                order_id = gid.rsplit("/", 1)[-1]
                self._record("orderOwner", payload.get("variables"))
                if order_id not in self.orders:
                    return jsonify({"data": {"order": None}})
                customer_id, email = self.orders[order_id]
                customer = {"legacyResourceId": customer_id, "email": email} if customer_id else None
                return jsonify({"data": {"order": {"legacyResourceId": order_id, "email": email,
                                                   "customer": customer}}})
            if re.search(r"query\s+customerTags", payload["query"]):
                gid = (payload.get("variables") or {}).get("id")
                if not isinstance(gid, str) or not gid.startswith("gid://shopify/Customer/"):
                    return jsonify({"errors": [{"message": "Variable $id of type ID! was provided invalid value"}]})
                self._record("customerTags", payload.get("variables"))
                if gid.rsplit("/", 1)[-1] in self.unknown_customers:
                    return jsonify({"data": {"customer": None}})
                return jsonify({"data": {"customer": {"id": gid, "tags": sorted(self.customer_tags.get(gid, ()))}}})
            if re.search(r"query\s+codeDiscountNodeByCode", payload["query"]):
                code = (payload.get("variables") or {}).get("code")
                if not isinstance(code, str) or not code:
                    return jsonify({"errors": [{"message": "Variable $code of type String! was provided invalid value"}]})
                self._record("codeDiscountNodeByCode", payload.get("variables"))
                found = self.discount_codes.get(code.casefold())
                return jsonify({"data": {"codeDiscountNodeByCode": {"id": found} if found else None}})
            match = MUTATION.search(payload["query"])
            if not match:
                return jsonify({"errors": [{"message": "only mutations are served here"}]}), 400
            name = match.group(1)
            variables = payload.get("variables") or {}
            self._record(name, variables)
            new_id = next(self._ids)
            if name == "storeCreditAccountCredit":
                return self._store_credit_credit(payload["query"], variables)
            if name in ("metafieldsSet", "metafieldsDelete"):
                return self._metafields(name, payload["query"], variables)
            if name == "discountCodeBasicCreate":
                code = ((variables.get("basicCodeDiscount") or {}) if isinstance(variables, dict) else {}).get("code")
                if isinstance(code, str) and code:
                    self.discount_codes[code.casefold()] = f"gid://shopify/DiscountCodeNode/{new_id}"
                return jsonify({"data": {name: {"codeDiscountNode": {"id": f"gid://shopify/DiscountCodeNode/{new_id}"},
                                                "userErrors": []}}})
            if name in ("tagsAdd", "tagsRemove"):
                gid = variables.get("id") if isinstance(variables, dict) else None
                tags = variables.get("tags") if isinstance(variables, dict) else None
                if not isinstance(gid, str) or not gid.startswith("gid://shopify/Customer/") \
                        or not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags):
                    return jsonify({"errors": [{"message": f"Variable $id or $tags of {name} invalid"}]})
                held = self.customer_tags.setdefault(gid, set())
                if name == "tagsAdd":
                    held.update(tags)
                else:
                    held.difference_update(tags)
                return jsonify({"data": {name: {"node": {"id": gid}, "userErrors": []}}})
            if name == "discountCodeDelete":
                for code, discount_id in list(self.discount_codes.items()):
                    if discount_id == variables.get("id"):
                        del self.discount_codes[code]
                return jsonify({"data": {name: {"deletedCodeDiscountId": variables.get("id"), "userErrors": []}}})
            if name == "discountCodeDeactivate":
                return jsonify({"data": {name: {"codeDiscountNode": {"id": variables.get("id")}, "userErrors": []}}})
            return jsonify({"errors": [{"message": f"Field '{name}' doesn't exist on type 'Mutation'"}]}), 200

        def woo_auth():
            if request.headers.get("Authorization") != self.basic:
                return jsonify({"code": "woocommerce_rest_cannot_view", "message": "Sorry, you cannot list resources.",
                                "data": {"status": 401}}), 401
            return None

        @app.post("/wp-json/wc/v3/coupons")
        def create_coupon():
            denied = woo_auth()
            if denied:
                return denied
            body = request.get_json(silent=True)
            if not isinstance(body, dict) or not body.get("code"):
                return jsonify({"code": "woocommerce_rest_missing_code", "message": "code is required"}), 400
            problems = coupon_problems(body)
            if problems:
                return jsonify({"code": "rest_invalid_param", "message": f"Invalid parameter(s): {', '.join(problems)}",
                                "data": {"status": 400, "params": problems}}), 400
            code = str(body["code"]).lower()
            with self._lock:
                if code in self.coupons:
                    duplicate = True
                else:
                    duplicate = False
                    coupon = {"id": next(self._ids), **body}
                    self.coupons[code] = coupon
            if duplicate:
                self._record("POST /coupons", body, status=400)
                return jsonify({"code": "woocommerce_rest_coupon_code_already_exists",
                                "message": "The coupon code already exists", "data": {"status": 400}}), 400
            self._record("POST /coupons", body)
            return jsonify(coupon), 201

        @app.get("/wp-json/wc/v3/coupons")
        def list_coupons():
            denied = woo_auth()
            if denied:
                return denied
            self._record("GET /coupons", dict(request.args))
            code = request.args.get("code")
            found = [c for k, c in self.coupons.items() if code is None or k == code.lower()]
            return jsonify(found)

        @app.delete("/wp-json/wc/v3/coupons/<int:coupon_id>")
        def delete_coupon(coupon_id: int):
            denied = woo_auth()
            if denied:
                return denied
            self._record(f"DELETE /coupons/{coupon_id}", dict(request.args))
            with self._lock:
                for code, coupon in list(self.coupons.items()):
                    if coupon["id"] == coupon_id:
                        del self.coupons[code]
            return jsonify({"id": coupon_id})

        @app.get("/wp-json/wc/v3/<any(customers, orders):resource>")
        def list_resource(resource: str):
            denied = woo_auth()
            if denied:
                return denied
            per_page = int(request.args.get("per_page", 10))
            page = int(request.args.get("page", 1))
            self.per_page_seen.append(per_page)
            items = self.woo[resource]
            pages = max(1, -(-len(items) // per_page))
            self._record(f"GET /{resource}", dict(request.args))
            response = jsonify(items[(page - 1) * per_page:page * per_page])
            response.headers["X-WP-Total"] = str(len(items))
            response.headers["X-WP-TotalPages"] = str(pages)
            return response

        @app.get("/wp-json/wc/v3/customers/<int:customer_id>")
        def get_customer(customer_id: int):
            denied = woo_auth()
            if denied:
                return denied
            return jsonify({"id": customer_id, "meta_data": self.customers_meta.get(str(customer_id), [])})

        @app.put("/wp-json/wc/v3/customers/<int:customer_id>")
        def put_customer(customer_id: int):
            denied = woo_auth()
            if denied:
                return denied
            body = request.get_json(silent=True)
            meta_data = body.get("meta_data", []) if isinstance(body, dict) else None
            if not isinstance(meta_data, list) or not all(
                    isinstance(m, dict) and isinstance(m.get("key"), str) and m["key"] and "value" in m
                    and isinstance(m["value"], (str, int, float, bool, dict, list)) for m in meta_data):
                return jsonify({"code": "rest_invalid_param", "message": "Invalid parameter(s): meta_data",
                                "data": {"status": 400, "params": {"meta_data": "meta_data is not a list of "
                                                                                "{key, value} objects."}}}), 400
            self._record(f"PUT /customers/{customer_id}", body)
            meta = {m["key"]: m for m in self.customers_meta.get(str(customer_id), [])}
            for item in body.get("meta_data", []):
                meta[item["key"]] = item
            self.customers_meta[str(customer_id)] = list(meta.values())
            return jsonify({"id": customer_id, "meta_data": list(meta.values())})

        return app


def coupon_problems(body: dict[str, Any]) -> dict[str, str]:
    """What WooCommerce's coupon schema refuses in ``body`` (param -> why); a fixed_cart coupon is
    checked in full: a positive decimal string amount, positive usage limits, valid e-mails."""
    problems: dict[str, str] = {}
    kind = body.get("discount_type", "fixed_cart")
    if kind not in WOO_DISCOUNT_TYPES:
        problems["discount_type"] = f"discount_type is not one of {', '.join(WOO_DISCOUNT_TYPES)}."
    for key in ("individual_use", "free_shipping", "exclude_sale_items"):
        if key in body and not isinstance(body[key], bool):
            problems[key] = f"{key} is not of type boolean."
    if kind != "fixed_cart":
        return problems
    amount = body.get("amount")
    try:
        value = Decimal(amount) if isinstance(amount, str) else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value <= 0:
        problems["amount"] = f"amount {amount!r} is not a positive decimal string."
    for key in ("usage_limit", "usage_limit_per_user"):
        if key in body and body[key] is not None and (not isinstance(body[key], int) or isinstance(body[key], bool)
                                                      or body[key] < 1):
            problems[key] = f"{key} is not a positive integer."
    emails = body.get("email_restrictions", [])
    if not isinstance(emails, list) or not all(isinstance(e, str) and re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", e)
                                               for e in emails):
        problems["email_restrictions"] = "email_restrictions is not a list of e-mail addresses."
    return problems


def graphql_calls(shop: FakeShop, name: str) -> list[Any]:
    return [c.body for c in shop.calls if c.name == name]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()
