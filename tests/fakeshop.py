"""A fake shop Admin API on 127.0.0.1 for end-to-end tests: a real HTTP server.

It is strict where a shop is strict — it refuses wrong credentials (401), unknown
mutations and malformed bodies (400) — and records every call it accepted, so a
test can require each discount code and tag call exactly once.
"""
from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

MUTATION = re.compile(r"mutation\s*(?:\w+\s*)?(?:\([^)]*\))?\s*\{\s*(\w+)", re.DOTALL)


@dataclass
class Call:
    name: str  # GraphQL mutation name or "METHOD /path"
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


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
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        self.app = self._build()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeShop:  # noqa: PYI034 (typing.Self needs Python 3.11)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def _record(self, name: str, body: Any) -> None:
        with self._lock:
            self.calls.append(Call(name, body, dict(request.headers)))

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
            match = MUTATION.search(payload["query"])
            if not match:
                return jsonify({"errors": [{"message": "only mutations are served here"}]}), 400
            name = match.group(1)
            variables = payload.get("variables") or {}
            self._record(name, variables)
            new_id = next(self._ids)
            if name == "discountCodeBasicCreate":
                return jsonify({"data": {name: {"codeDiscountNode": {"id": f"gid://shopify/DiscountCodeNode/{new_id}"},
                                                "userErrors": []}}})
            if name in ("tagsAdd", "tagsRemove"):
                return jsonify({"data": {name: {"node": {"id": variables.get("id")}, "userErrors": []}}})
            if name == "discountCodeDelete":
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
            self._record("POST /coupons", body)
            return jsonify({"id": next(self._ids), **body}), 201

        @app.delete("/wp-json/wc/v3/coupons/<int:coupon_id>")
        def delete_coupon(coupon_id: int):
            denied = woo_auth()
            if denied:
                return denied
            self._record(f"DELETE /coupons/{coupon_id}", dict(request.args))
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
            body = request.get_json(silent=True) or {}
            self._record(f"PUT /customers/{customer_id}", body)
            meta = {m["key"]: m for m in self.customers_meta.get(str(customer_id), [])}
            for item in body.get("meta_data", []):
                meta[item["key"]] = item
            self.customers_meta[str(customer_id)] = list(meta.values())
            return jsonify({"id": customer_id, "meta_data": list(meta.values())})

        return app


def graphql_calls(shop: FakeShop, name: str) -> list[Any]:
    return [c.body for c in shop.calls if c.name == name]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()
