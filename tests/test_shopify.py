"""Shopify adapter: signed real payloads in, Admin GraphQL calls out (``responses``), sync pages."""
from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from loyalty_ladder.adapters.base import Delivery, hmac_sha256_base64
from loyalty_ladder.adapters.shopify import ShopifyAdapter
from loyalty_ladder.errors import (
    BadRequest,
    NotSupported,
    RateLimited,
    Rejected,
    SignatureError,
    Unavailable,
)
from loyalty_ladder.events import parse_events
from loyalty_ladder.shop import ShopConfig

FIXTURES = Path(__file__).parent / "fixtures" / "shopify"
SECRET = "shpss_current"
PREVIOUS = "shpss_previous"
TOKEN = "shpat_test_token"
API = "https://demo.myshopify.com"
VERSION = "2025-07"
GRAPHQL = f"{API}/admin/api/{VERSION}/graphql.json"
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

TOPICS = {
    "orders_create.json": "orders/create",
    "orders_paid.json": "orders/paid",
    "orders_updated.json": "orders/updated",
    "orders_cancelled.json": "orders/cancelled",
    "refunds_create.json": "refunds/create",
    "customers_create.json": "customers/create",
    "customers_update.json": "customers/update",
    "checkouts_create.json": "checkouts/create",
    "customers_data_request.json": "customers/data_request",
    "customers_redact.json": "customers/redact",
    "shop_redact.json": "shop/redact",
}


@pytest.fixture
def shop() -> ShopConfig:
    return ShopConfig(id="demo", platform="shopify", domain="demo.myshopify.com", webhook_secret=SECRET,
                      previous_webhook_secret=PREVIOUS, api_url=API, api_version=VERSION, access_token=TOKEN,
                      currency="HKD")


@pytest.fixture
def adapter(shop: ShopConfig) -> ShopifyAdapter:
    a = ShopifyAdapter(shop, timeout=3)
    a.now = lambda: NOW  # type: ignore[method-assign]
    a.sleep = lambda seconds: None  # type: ignore[method-assign]
    return a


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def signed(body: bytes, topic: str, secret: str = SECRET) -> dict[str, str]:
    return {"X-Shopify-Hmac-Sha256": hmac_sha256_base64(secret, body), "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": "demo.myshopify.com", "X-Shopify-Webhook-Id": f"wh-{topic}"}


def receive(adapter: ShopifyAdapter, payload: dict[str, Any] | bytes, topic: str):
    """Sign, verify and parse as the inbox does; every event must pass our schema."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
    headers = signed(body, topic)
    adapter.verify(headers, body)
    inbound = adapter.parse(adapter.topic(headers, body), headers, body)
    parse_events(list(inbound.events))
    return inbound


def guest(email: str) -> str:
    return "guest:" + hashlib.sha256(email.lower().encode()).hexdigest()[:16]


# ================================================================ headers and signatures
def test_headers(adapter: ShopifyAdapter) -> None:
    body = b"{}"
    headers = {"x-shopify-shop-domain": "demo.myshopify.com", "x-shopify-topic": "orders/paid",
               "x-shopify-webhook-id": "b54557e4"}
    assert ShopifyAdapter.shop_hint(headers) == "demo.myshopify.com"
    assert adapter.topic(headers, body) == "orders/paid"
    assert adapter.delivery_id(headers, body) == "b54557e4"
    assert adapter.delivery_id({"X-Shopify-Event-Id": "evt-9"}, body) == "evt-9"
    assert adapter.delivery_id({}, body) is None
    assert ShopifyAdapter.shop_hint({}) is None


def test_verify_accepts_current_and_previous_secret_only(adapter: ShopifyAdapter) -> None:
    body = (FIXTURES / "orders_paid.json").read_bytes()
    adapter.verify(signed(body, "orders/paid", SECRET), body)
    adapter.verify(signed(body, "orders/paid", PREVIOUS), body)
    with pytest.raises(SignatureError):
        adapter.verify(signed(body, "orders/paid", "someone-else"), body)
    with pytest.raises(SignatureError):
        adapter.verify(signed(body, "orders/paid", SECRET), body + b" ")
    with pytest.raises(SignatureError):
        adapter.verify({"X-Shopify-Topic": "orders/paid"}, body)
    with pytest.raises(SignatureError):
        adapter.verify({"X-Shopify-Hmac-Sha256": "not base64!"}, body)


# ================================================================ every fixture parses into valid events
@pytest.mark.parametrize("name", sorted(TOPICS))
def test_every_fixture_is_signed_parsed_and_valid(adapter: ShopifyAdapter, name: str) -> None:
    adapter.order_owner_lookup = lambda order_id: "8658316394796"
    inbound = receive(adapter, (FIXTURES / name).read_bytes(), TOPICS[name])
    assert not inbound.empty


def test_fixture_files_cover_every_topic() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(TOPICS)


# ================================================================ orders
def test_orders_create_paid_guest_without_email(adapter: ShopifyAdapter) -> None:
    (event,) = receive(adapter, load("orders_create.json"), "orders/create").events
    assert event == {
        "id": "shopify:order:6198424240428:paid", "type": "order_paid",
        "customer_id": "guest-order:6198424240428", "occurred_at": "2025-01-23T06:56:00Z",
        "order": {"id": "6198424240428", "total": "439.00", "currency": "HKD", "discount_total": "15.00",
                  "shipping": "55.00", "discount_codes": ["Alan Test 0123A"], "payment": {"method": "card"},
                  "lines": [{"quantity": 1, "price": "99.00", "gift_card": False},
                            {"quantity": 1, "price": "100.00", "gift_card": False},
                            {"quantity": 1, "price": "100.00", "gift_card": False},
                            {"quantity": 1, "price": "100.00", "gift_card": False}]},
    }


def test_orders_create_pending_waits_for_paid(adapter: ShopifyAdapter) -> None:
    order = load("orders_create.json")
    order["financial_status"] = "pending"
    inbound = receive(adapter, order, "orders/create")
    assert inbound.events == ()
    assert "waits for orders/paid" in inbound.note


def test_orders_create_on_payment_terms_is_placed(adapter: ShopifyAdapter) -> None:
    order = load("orders_paid.json")
    order["financial_status"] = "pending"
    order["payment_gateway_names"] = []
    order["payment_terms"] = {"id": 306184247, "payment_terms_name": "Net 30", "payment_terms_type": "net",
                              "due_in_days": 30,
                              "payment_schedules": [{"id": 1, "issued_at": "2025-01-23T05:18:47-05:00",
                                                     "due_at": "2025-02-22T05:18:47-05:00", "completed_at": None,
                                                     "amount": "99.00", "currency": "HKD"}]}
    (event,) = receive(adapter, order, "orders/create").events
    assert event["id"] == "shopify:order:6198821716268:placed"
    assert event["type"] == "order_placed"
    assert event["customer_id"] == "8658316394796"
    assert event["order"]["payment"] == {"method": "terms", "due_at": "2025-02-22T10:18:47Z"}
    assert event["order"]["total"] == "99.00"


def test_orders_paid_and_updated_give_the_same_paid_event(adapter: ShopifyAdapter) -> None:
    (paid,) = receive(adapter, load("orders_paid.json"), "orders/paid").events
    assert paid["id"] == "shopify:order:6198821716268:paid"
    assert paid["customer_id"] == "8658316394796"
    assert paid["occurred_at"] == "2025-01-23T10:18:47Z"  # processed_at, not the delivery time
    assert "customer" not in paid  # an account: the e-mail lives on customer events
    updated = receive(adapter, load("orders_updated.json"), "orders/updated").events
    assert [e["type"] for e in updated] == ["order_paid", "order_cancelled", "order_refunded"]
    assert updated[0] == paid  # the same state twice is a duplicate, never a second payment


def test_orders_updated_pending_order_has_nothing_yet(adapter: ShopifyAdapter) -> None:
    order = load("orders_paid.json")
    order["financial_status"] = "pending"
    inbound = receive(adapter, order, "orders/updated")
    assert inbound.events == () and inbound.note


def test_orders_cancelled_carries_its_refund(adapter: ShopifyAdapter) -> None:
    cancelled, refunded = receive(adapter, load("orders_cancelled.json"), "orders/cancelled").events
    assert cancelled == {"id": "shopify:order:6198821716268:cancelled", "type": "order_cancelled",
                         "customer_id": "8658316394796", "occurred_at": "2025-01-24T02:57:18Z",
                         "order": {"id": "6198821716268"}}
    assert refunded["id"] == "shopify:refund:982959849772"
    assert refunded["refund"] == {"id": "982959849772", "amount": "99.00", "reason": "訂單已取消"}


def test_gift_card_payment(adapter: ShopifyAdapter) -> None:
    order = load("orders_paid.json")
    order["payment_gateway_names"] = ["gift_card"]
    (event,) = receive(adapter, order, "orders/paid").events
    assert event["order"]["payment"] == {"method": "gift_card"}


def test_presentment_currency_is_ignored_for_shop_money(adapter: ShopifyAdapter) -> None:
    order = load("orders_paid.json")
    order["total_price"] = "12.70"  # presentment money in the REST field …
    order["total_price_set"]["presentment_money"] = {"amount": "12.70", "currency_code": "EUR"}
    (event,) = receive(adapter, order, "orders/paid").events
    assert (event["order"]["total"], event["order"]["currency"]) == ("99.00", "HKD")  # … the shop's wins


# ================================================================ guests and links
def test_guest_order_then_account_links_by_email(adapter: ShopifyAdapter) -> None:
    order = load("orders_create.json")
    order["email"] = "Ana.Guest@Example.com"
    (paid,) = receive(adapter, order, "orders/create").events
    assert paid["customer_id"] == guest("ana.guest@example.com")
    assert paid["customer"] == {"email": "Ana.Guest@Example.com"}

    customer = load("customers_create.json")
    customer["email"] = "ana.guest@example.com"
    inbound = receive(adapter, customer, "customers/create")
    assert inbound.links == ((paid["customer_id"], "1073339478"),)
    assert inbound.events[0]["customer_id"] == "1073339478"


# ================================================================ refunds
def test_refunds_create_sums_successful_refund_transactions(adapter: ShopifyAdapter) -> None:
    adapter.order_owner_lookup = {"6198821716268": "8658316394796"}.get
    refund = load("refunds_create.json")
    failed = copy.deepcopy(refund["transactions"][0])
    failed.update(id=1, status="failure", amount="50.00")
    sale = copy.deepcopy(refund["transactions"][0])
    sale.update(id=2, kind="sale", amount="30.00")
    partial = copy.deepcopy(refund["transactions"][0])
    partial.update(id=3, amount="0.50")
    refund["transactions"] += [failed, sale, partial]
    (event,) = receive(adapter, refund, "refunds/create").events
    assert event == {"id": "shopify:refund:982959849772", "type": "order_refunded",
                     "customer_id": "8658316394796", "occurred_at": "2025-01-24T02:57:17Z",
                     "order": {"id": "6198821716268"},
                     "refund": {"id": "982959849772", "amount": "99.50", "reason": "訂單已取消"}}
    # the same refund inside orders/cancelled maps to the same event content
    cancelled = load("orders_cancelled.json")
    assert receive(adapter, cancelled, "orders/cancelled").events[1]["refund"]["amount"] == "99.00"


@pytest.mark.parametrize("transactions", [
    [],
    [{"id": 7, "kind": "refund", "status": "failure", "amount": "99.00", "currency": "HKD"}],
    [{"id": 8, "kind": "refund", "status": "pending", "amount": "99.00", "currency": "HKD"}],
], ids=["no-transaction", "failed", "pending"])
def test_refunds_create_without_money_moved_is_no_event(adapter: ShopifyAdapter, transactions) -> None:
    refund = load("refunds_create.json")
    refund["transactions"] = transactions
    inbound = receive(adapter, refund, "refunds/create")
    assert inbound.events == ()
    assert "no money moved" in inbound.note


@responses.activate(assert_all_requests_are_fired=True)
def test_refunds_create_asks_the_api_for_the_orders_customer(adapter: ShopifyAdapter) -> None:
    responses.post(GRAPHQL, match=[graphql("orderOwner", {"id": "gid://shopify/Order/6198821716268"}),
                                   token_header()],
                   json={"data": {"order": {"legacyResourceId": "6198821716268", "email": "it@akastudio.com.hk",
                                            "customer": {"legacyResourceId": "8658316394796",
                                                         "email": "it@akastudio.com.hk"}}}})
    (event,) = receive(adapter, load("refunds_create.json"), "refunds/create").events
    assert event["customer_id"] == "8658316394796"


# ================================================================ customers and checkouts
def test_customers_create_legacy_marketing_flag(adapter: ShopifyAdapter) -> None:
    (event,) = receive(adapter, load("customers_create.json"), "customers/create").events
    assert event == {"id": "shopify:customer:1073339478:created", "type": "customer_created",
                     "customer_id": "1073339478", "occurred_at": "2023-07-11T22:31:10Z",
                     "customer": {"email": "steve.lastnameson@example.com", "tags": [],
                                  "accepts_marketing": False}}


def test_customers_update_tags_and_consent(adapter: ShopifyAdapter) -> None:
    customer = load("customers_update.json")
    (event,) = receive(adapter, customer, "customers/update").events
    assert event["id"] == "shopify:customer:207119551:updated:2023-10-03T17:46:47Z"
    assert event["occurred_at"] == "2023-10-03T17:46:47Z"
    assert event["customer"] == {"email": "bob.norman@mail.example.com", "tags": ["Léon", "Noël"],
                                 "accepts_marketing": False}
    customer["email_marketing_consent"]["state"] = "subscribed"
    customer["accepts_marketing"] = False  # the consent object wins over the legacy flag
    (event,) = receive(adapter, customer, "customers/update").events
    assert event["customer"]["accepts_marketing"] is True


def test_checkouts_create(adapter: ShopifyAdapter) -> None:
    (event,) = receive(adapter, load("checkouts_create.json"), "checkouts/create").events
    assert event == {"id": "shopify:checkout:2a1ace52255252df566af0faaedfbfa7", "type": "checkout_started",
                     "customer_id": "207119551", "occurred_at": "2012-10-12T11:05:27Z",
                     "customer": {"email": "bob.norman@mail.example.com"}}
    anonymous = load("checkouts_create.json")
    anonymous.update(customer=None, email=None)
    inbound = receive(adapter, anonymous, "checkouts/create")
    assert inbound.events == () and "anonymous" in inbound.note


# ================================================================ compliance, unknown, malformed
def test_compliance_topics(adapter: ShopifyAdapter) -> None:
    assert receive(adapter, load("customers_data_request.json"), "customers/data_request").data_request == "191167"
    assert receive(adapter, load("customers_redact.json"), "customers/redact").redact_customer == "191167"
    assert receive(adapter, load("shop_redact.json"), "shop/redact").redact_shop is True


def test_unknown_topic_is_noted(adapter: ShopifyAdapter) -> None:
    inbound = receive(adapter, {"id": 1}, "products/update")
    assert inbound.empty and inbound.note == "topic not handled"


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b'{"id": null}'])
def test_malformed_body_is_bad_request(adapter: ShopifyAdapter, body: bytes) -> None:
    with pytest.raises(BadRequest):
        adapter.parse("orders/paid", {}, body)


# ================================================================ outbound helpers
def graphql(operation: str, variables: dict[str, Any]):
    """A ``responses`` matcher: the GraphQL document declares ``operation`` and the variables are exact."""

    def match(request) -> tuple[bool, str]:
        body = json.loads(request.body)
        head = body["query"].split("(", 1)[0].split()
        if head[-1] != operation:
            return False, f"operation {head[-1]!r} != {operation!r}"
        if body["variables"] != variables:
            return False, f"variables {body['variables']!r} != {variables!r}"
        return True, ""

    return match


def token_header():
    return responses.matchers.header_matcher({"X-Shopify-Access-Token": TOKEN})


def delivery(kind: str, params: dict[str, Any], action: str = "grant", customer_id: str = "207119551",
             external_id: str | None = None) -> Delivery:
    return Delivery(pk=1, action=action,
                    award={"key": f"demo/{customer_id}/welcome/stage/first_purchase/1", "reward": "welcome",
                           "type": kind, "params": params, "customer_id": customer_id},
                    customer={"customer_id": customer_id, "email": "bob.norman@mail.example.com"},
                    external_id=external_id)


DISCOUNT = {"code": "WELCOME-1A2B3C4D", "percent": "10", "usage_limit": 1,
            "expires_at": "2026-04-01T10:00:00Z", "minimum_order": "50.00"}
DISCOUNT_VARIABLES = {"basicCodeDiscount": {
    "title": "welcome WELCOME-1A2B3C4D", "code": "WELCOME-1A2B3C4D", "startsAt": "2026-03-02T10:00:00Z",
    "endsAt": "2026-04-01T10:00:00Z", "usageLimit": 1, "appliesOncePerCustomer": True,
    "customerSelection": {"customers": {"add": ["gid://shopify/Customer/207119551"]}},
    "customerGets": {"value": {"percentage": 0.1}, "items": {"all": True}},
    "minimumRequirement": {"subtotal": {"greaterThanOrEqualToSubtotal": "50.00"}}}}
CREATED = {"data": {"discountCodeBasicCreate": {"codeDiscountNode": {"id": "gid://shopify/DiscountCodeNode/1057"},
                                                "userErrors": []}}}


def discount_call(**kwargs: Any) -> None:
    responses.post(GRAPHQL, match=[graphql("discountCodeBasicCreate", DISCOUNT_VARIABLES), token_header()],
                   **kwargs)


# ================================================================ deliver: discounts
@responses.activate(assert_all_requests_are_fired=True)
def test_discount_grant_returns_the_discount_id(adapter: ShopifyAdapter) -> None:
    discount_call(json=CREATED)
    result = adapter.deliver(delivery("discount", DISCOUNT))
    assert result.external_id == "gid://shopify/DiscountCodeNode/1057"
    assert "WELCOME-1A2B3C4D" in result.detail


@responses.activate(assert_all_requests_are_fired=True)
def test_fixed_amount_discount_variables(adapter: ShopifyAdapter) -> None:
    variables = {"basicCodeDiscount": {
        "title": "welcome W-5", "code": "W-5", "startsAt": "2026-03-02T10:00:00Z", "usageLimit": 2,
        "appliesOncePerCustomer": True,
        "customerSelection": {"customers": {"add": ["gid://shopify/Customer/207119551"]}},
        "customerGets": {"value": {"discountAmount": {"amount": "5.00", "appliesOnEachItem": False}},
                         "items": {"all": True}}}}
    responses.post(GRAPHQL, match=[graphql("discountCodeBasicCreate", variables), token_header()], json=CREATED)
    result = adapter.deliver(delivery("discount", {"code": "W-5", "amount": "5.00", "currency": "HKD",
                                                   "usage_limit": 2}))
    assert result.external_id == "gid://shopify/DiscountCodeNode/1057"


@responses.activate(assert_all_requests_are_fired=True)
def test_rate_limited_with_retry_after(adapter: ShopifyAdapter) -> None:
    discount_call(status=429, headers={"Retry-After": "4.0"}, json={"errors": "Exceeded 2 calls per second"})
    with pytest.raises(RateLimited) as err:
        adapter.deliver(delivery("discount", DISCOUNT))
    assert err.value.retry_after == 4.0


@responses.activate(assert_all_requests_are_fired=True)
def test_rate_limited_without_retry_after_waits_two_seconds(adapter: ShopifyAdapter) -> None:
    discount_call(status=429, json={"errors": "Throttled"})
    with pytest.raises(RateLimited) as err:
        adapter.deliver(delivery("discount", DISCOUNT))
    assert err.value.retry_after == 2.0


@responses.activate(assert_all_requests_are_fired=True)
def test_graphql_throttled_computes_the_wait(adapter: ShopifyAdapter) -> None:
    discount_call(json={"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                        "extensions": {"cost": {"requestedQueryCost": 1000, "actualQueryCost": None,
                                                "throttleStatus": {"maximumAvailable": 2000.0,
                                                                   "currentlyAvailable": 100,
                                                                   "restoreRate": 100.0}}}})
    with pytest.raises(RateLimited) as err:
        adapter.deliver(delivery("discount", DISCOUNT))
    assert err.value.retry_after == pytest.approx(9.0)  # (1000 - 100) / 100


@pytest.mark.parametrize("status", [500, 502, 503])
@responses.activate(assert_all_requests_are_fired=True)
def test_server_errors_are_unavailable(adapter: ShopifyAdapter, status: int) -> None:
    discount_call(status=status, body="upstream trouble")
    with pytest.raises(Unavailable):
        adapter.deliver(delivery("discount", DISCOUNT))


@pytest.mark.parametrize("exc", [requests.exceptions.ConnectTimeout("connect timed out"),
                                 requests.exceptions.ReadTimeout("read timed out"),
                                 requests.exceptions.ConnectionError("refused")])
@responses.activate(assert_all_requests_are_fired=True)
def test_timeouts_and_connection_errors_are_unavailable(adapter: ShopifyAdapter, exc: Exception) -> None:
    discount_call(body=exc)
    with pytest.raises(Unavailable):
        adapter.deliver(delivery("discount", DISCOUNT))


@pytest.mark.parametrize(("status", "body", "message"), [
    (401, {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"},
     "Invalid API key or access token"),
    (403, {"errors": "Access denied for discountCodeBasicCreate field. Required access: `write_discounts`"},
     "write_discounts"),
    (404, {"errors": "Not Found"}, "Not Found"),
    (422, {"errors": {"base": ["Unprocessable"]}}, "Unprocessable"),
])
@responses.activate(assert_all_requests_are_fired=True)
def test_permanent_4xx_is_rejected_with_the_shops_message(adapter: ShopifyAdapter, status, body, message) -> None:
    discount_call(status=status, json=body)
    with pytest.raises(Rejected) as err:
        adapter.deliver(delivery("discount", DISCOUNT))
    assert message in err.value.message
    assert not isinstance(err.value, (RateLimited, Unavailable))


TAKEN = {"data": {"discountCodeBasicCreate": {"codeDiscountNode": None, "userErrors": [
    {"field": ["basicCodeDiscount", "code"], "code": "TAKEN", "message": "Code must be unique."}]}}}


@responses.activate(assert_all_requests_are_fired=True)
def test_user_errors_at_http_200_are_rejected(adapter: ShopifyAdapter) -> None:
    discount_call(json=TAKEN)
    # the code is taken, but not by a discount of ours we could adopt: still a rejection
    responses.post(GRAPHQL, match=[graphql("codeDiscountNodeByCode", {"code": "WELCOME-1A2B3C4D"}), token_header()],
                   json={"data": {"codeDiscountNodeByCode": None}})
    with pytest.raises(Rejected) as err:
        adapter.deliver(delivery("discount", DISCOUNT))
    assert "basicCodeDiscount.code: Code must be unique." in err.value.message


@responses.activate(assert_all_requests_are_fired=True)
def test_a_retry_after_a_lost_success_adopts_the_existing_code(adapter: ShopifyAdapter) -> None:
    """The first create timed out after Shopify made the code: the retry finds it, not fails."""
    discount_call(json=TAKEN)
    responses.post(GRAPHQL, match=[graphql("codeDiscountNodeByCode", {"code": "WELCOME-1A2B3C4D"}), token_header()],
                   json={"data": {"codeDiscountNodeByCode": {"id": "gid://shopify/DiscountCodeNode/77"}}})
    result = adapter.deliver(delivery("discount", DISCOUNT))
    assert result.external_id == "gid://shopify/DiscountCodeNode/77"


@responses.activate(assert_all_requests_are_fired=True)
def test_other_graphql_errors_are_rejected(adapter: ShopifyAdapter) -> None:
    discount_call(json={"errors": [{"message": "Field 'nope' doesn't exist on type 'Mutation'",
                                    "extensions": {"code": "undefinedField"}}]})
    with pytest.raises(Rejected, match="doesn't exist"):
        adapter.deliver(delivery("discount", DISCOUNT))


@responses.activate(assert_all_requests_are_fired=True)
def test_discount_revoke_deletes_exactly_the_granted_object(adapter: ShopifyAdapter) -> None:
    responses.post(GRAPHQL, match=[graphql("discountCodeDelete", {"id": "gid://shopify/DiscountCodeNode/1057"}),
                                   token_header()],
                   json={"data": {"discountCodeDelete": {"deletedCodeDiscountId":
                                                         "gid://shopify/DiscountCodeNode/1057", "userErrors": []}}})
    result = adapter.deliver(delivery("discount", DISCOUNT, action="revoke",
                                      external_id="gid://shopify/DiscountCodeNode/1057"))
    assert result.external_id == "gid://shopify/DiscountCodeNode/1057"


@responses.activate(assert_all_requests_are_fired=True)
def test_discount_revoke_without_external_id_finds_the_code(adapter: ShopifyAdapter) -> None:
    responses.post(GRAPHQL, match=[graphql("codeDiscountNodeByCode", {"code": "WELCOME-1A2B3C4D"})],
                   json={"data": {"codeDiscountNodeByCode": {"id": "gid://shopify/DiscountCodeNode/77"}}})
    responses.post(GRAPHQL, match=[graphql("discountCodeDelete", {"id": "gid://shopify/DiscountCodeNode/77"})],
                   json={"data": {"discountCodeDelete": {"deletedCodeDiscountId": "gid://shopify/DiscountCodeNode/77",
                                                         "userErrors": []}}})
    assert adapter.deliver(delivery("discount", DISCOUNT, action="revoke")).external_id == \
        "gid://shopify/DiscountCodeNode/77"


@responses.activate(assert_all_requests_are_fired=True)
def test_guest_cannot_get_a_customer_limited_code(adapter: ShopifyAdapter) -> None:
    with pytest.raises(NotSupported):
        adapter.deliver(delivery("discount", DISCOUNT, customer_id=guest("ana@example.com")))


# ================================================================ deliver: tags and the rest
@responses.activate(assert_all_requests_are_fired=True)
def test_tag_grant_and_revoke(adapter: ShopifyAdapter) -> None:
    gid = "gid://shopify/Customer/207119551"
    responses.post(GRAPHQL, match=[graphql("tagsAdd", {"id": gid, "tags": ["ladder-regular"]}), token_header()],
                   json={"data": {"tagsAdd": {"node": {"id": gid}, "userErrors": []}}})
    responses.post(GRAPHQL, match=[graphql("tagsRemove", {"id": gid, "tags": ["ladder-regular"]}), token_header()],
                   json={"data": {"tagsRemove": {"node": {"id": gid}, "userErrors": []}}})
    assert adapter.deliver(delivery("tag", {"tag": "ladder-regular"})).external_id == gid
    assert adapter.deliver(delivery("tag", {"tag": "ladder-regular"}, action="revoke")).external_id == gid


@responses.activate(assert_all_requests_are_fired=True)
def test_vip_service_with_a_tag_is_a_tag(adapter: ShopifyAdapter) -> None:
    gid = "gid://shopify/Customer/207119551"
    responses.post(GRAPHQL, match=[graphql("tagsAdd", {"id": gid, "tags": ["VIP"]})],
                   json={"data": {"tagsAdd": {"node": {"id": gid}, "userErrors": []}}})
    # the customer document carries no VIP service: its metafield goes (tests/test_vip.py has the rest)
    where = {"ownerId": gid, "namespace": "loyalty_ladder", "key": "vip"}
    responses.post(GRAPHQL, match=[graphql("metafieldsDelete", {"metafields": [where]})],
                   json={"data": {"metafieldsDelete": {"deletedMetafields": [None], "userErrors": []}}})
    adapter.deliver(delivery("vip_service", {"level": "vip", "tag": "VIP"}))


@responses.activate(assert_all_requests_are_fired=True)
def test_tag_user_errors_are_rejected(adapter: ShopifyAdapter) -> None:
    responses.post(GRAPHQL, match=[graphql("tagsAdd", {"id": "gid://shopify/Customer/207119551",
                                                       "tags": ["x"]})],
                   json={"data": {"tagsAdd": {"node": None, "userErrors": [
                       {"field": ["id"], "message": "Customer does not exist"}]}}})
    with pytest.raises(Rejected, match="Customer does not exist"):
        adapter.deliver(delivery("tag", {"tag": "x"}))


@pytest.mark.parametrize(("kind", "params"), [
    ("points", {"points": 100}), ("gift", {"description": "mug"}),
    ("deferred_payment", {"net_days": 30, "credit_limit": "500.00"}), ("greeting", {"occasion": "birthday"}),
])
@responses.activate(assert_all_requests_are_fired=True)
def test_other_rewards_need_manual_action(adapter: ShopifyAdapter, kind: str, params: dict[str, Any]) -> None:
    with pytest.raises(NotSupported, match="manual action"):
        adapter.deliver(delivery(kind, params))


# ================================================================ sync
def customer_node(n: int) -> dict[str, Any]:
    return {"legacyResourceId": str(n), "email": f"c{n}@example.com", "createdAt": "2025-01-02T10:00:00Z",
            "updatedAt": "2025-01-05T10:00:00Z", "tags": ["vip"], "locale": "en",
            "emailMarketingConsent": {"marketingState": "SUBSCRIBED"}}


ORDER_NODE = {
    "legacyResourceId": "6198821716268", "email": "it@akastudio.com.hk",
    "createdAt": "2025-01-23T10:18:47Z", "processedAt": "2025-01-23T10:18:47Z",
    "updatedAt": "2025-01-24T02:57:18Z", "cancelledAt": "2025-01-24T02:57:18Z",
    "displayFinancialStatus": "REFUNDED", "currencyCode": "HKD", "paymentGatewayNames": ["manual"],
    "discountCodes": [],
    "totalPriceSet": {"shopMoney": {"amount": "99.0", "currencyCode": "HKD"}},
    "totalDiscountsSet": {"shopMoney": {"amount": "0.0", "currencyCode": "HKD"}},
    "totalShippingPriceSet": {"shopMoney": {"amount": "0.0", "currencyCode": "HKD"}},
    "paymentTerms": None,
    "customer": {"legacyResourceId": "8658316394796", "email": "it@akastudio.com.hk"},
    "lineItems": {"nodes": [{"sku": "", "quantity": 1, "isGiftCard": False,
                             "originalUnitPriceSet": {"shopMoney": {"amount": "99.0", "currencyCode": "HKD"}}}]},
    "refunds": [{"id": "gid://shopify/Refund/982959849772", "createdAt": "2025-01-24T02:57:17Z", "note": "訂單已取消",
                 "transactions": {"nodes": [{"id": "gid://shopify/OrderTransaction/7555197403436", "kind": "REFUND",
                                             "status": "SUCCESS",
                                             "amountSet": {"shopMoney": {"amount": "99.0",
                                                                         "currencyCode": "HKD"}}}]}}],
}


def page(field: str, nodes: list[dict[str, Any]], cursor: str | None) -> dict[str, Any]:
    return {"data": {field: {"pageInfo": {"hasNextPage": cursor is not None, "endCursor": cursor},
                             "nodes": nodes}}}


@responses.activate(assert_all_requests_are_fired=True)
def test_sync_pages_through_customers_and_orders(adapter: ShopifyAdapter) -> None:
    search = "updated_at:>='2025-01-01T00:00:00Z'"
    responses.post(GRAPHQL, match=[graphql("customersPage", {"first": 100, "after": None, "query": search}),
                                   token_header()],
                   json=page("customers", [customer_node(1), customer_node(2)], "c-cursor-1"))
    responses.post(GRAPHQL, match=[graphql("customersPage", {"first": 100, "after": "c-cursor-1", "query": search})],
                   json=page("customers", [customer_node(3)], None))
    responses.post(GRAPHQL, match=[graphql("ordersPage", {"first": 100, "after": None, "query": search})],
                   json={"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]})
    responses.post(GRAPHQL, match=[graphql("ordersPage", {"first": 100, "after": None, "query": search})],
                   json=page("orders", [ORDER_NODE], None))
    lines: list[str] = []
    events = list(adapter.sync(datetime(2025, 1, 1, tzinfo=UTC), lines.append))
    parse_events(events)
    assert [e["id"] for e in events[:2]] == ["shopify:customer:1:created",
                                            "shopify:customer:1:updated:2025-01-05T10:00:00Z"]
    assert events[0]["customer"] == {"email": "c1@example.com", "tags": ["vip"], "accepts_marketing": True,
                                     "locale": "en"}
    assert len([e for e in events if e["type"].startswith("customer_")]) == 6
    assert lines == ["customers: page 1, 2 records", "customers: page 2, 1 records", "orders: page 1, 1 records"]

    # the same order through a webhook and through sync: identical events, so they dedupe
    order_events = [e for e in events if not e["type"].startswith("customer_")]
    webhook = receive(adapter, load("orders_updated.json"), "orders/updated").events
    assert order_events == list(webhook)


@responses.activate(assert_all_requests_are_fired=True)
def test_sync_without_since_has_no_filter(adapter: ShopifyAdapter) -> None:
    responses.post(GRAPHQL, match=[graphql("customersPage", {"first": 100, "after": None, "query": None})],
                   json=page("customers", [], None))
    responses.post(GRAPHQL, match=[graphql("ordersPage", {"first": 100, "after": None, "query": None})],
                   json=page("orders", [], None))
    assert list(adapter.sync(None)) == []


def test_the_tax_in_the_total_is_the_orders_tax(adapter: ShopifyAdapter) -> None:
    """It earns no points and is no profit: the shop-currency ``total_tax_set`` wins over ``total_tax``."""
    order = load("orders_create.json")
    order["total_tax_set"] = {"shop_money": {"amount": "39.91", "currency_code": "HKD"},
                              "presentment_money": {"amount": "5.10", "currency_code": "EUR"}}
    order["total_tax"] = "5.10"
    (event,) = receive(adapter, order, "orders/create").events
    assert event["order"]["tax"] == "39.91"
