"""Awards through the outbox to the shops' real adapters, with `responses` playing the shop:
success, 429 with Retry-After, 5xx then success, timeout then success, permanent 4xx."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses
import sqlalchemy as sa

from loyalty_ladder import store
from loyalty_ladder.service import LadderService
from loyalty_ladder.shop import ShopConfig

NOW = datetime.now(UTC).replace(microsecond=0)
SHOPIFY = ShopConfig(id="s", platform="shopify", domain="s.myshopify.com", webhook_secret="x",
                     api_url="https://s.myshopify.com", api_version="2025-07", access_token="shpat_x",
                     capabilities=("discount_codes", "tags", "store_credit", "payment_terms"))
WOO = ShopConfig(id="w", platform="woocommerce", domain="https://w.example", webhook_secret="x",
                 api_url="https://w.example", consumer_key="ck", consumer_secret="cs",
                 capabilities=("discount_codes", "tags"))
GRAPHQL = "https://s.myshopify.com/admin/api/2025-07/graphql.json"
COUPONS = "https://w.example/wp-json/wc/v3/coupons"


@pytest.fixture
def service(ladder_settings):
    made = LadderService(ladder_settings, shops={"s": SHOPIFY, "w": WOO})
    yield made
    made.db.dispose()


def welcome_delivery(service: LadderService, shop: str) -> int:
    """A subscribed customer: the welcome discount is granted and its delivery planned."""
    service.accept_events(shop, {"id": "e1", "type": "customer_created", "customer_id": "7001",
                                 "occurred_at": (NOW - timedelta(days=1)).isoformat(),
                                 "customer": {"email": "ana@example.com", "accepts_marketing": True}})
    d, a = store.deliveries, store.awards
    with service.db.connect() as conn:
        return conn.execute(sa.select(d.c.pk).join(a, a.c.key == d.c.award_key)
                            .where(a.c.reward_id == "welcome", d.c.action == "grant")).scalar_one()


def state(service: LadderService, pk: int) -> tuple[str, str, str | None, str | None]:
    d, a = store.deliveries, store.awards
    with service.db.connect() as conn:
        row = conn.execute(sa.select(d.c.status, a.c.status.label("award"), d.c.external_id, d.c.last_error)
                           .join(a, a.c.key == d.c.award_key).where(d.c.pk == pk)).one()
    return row.status, row.award, row.external_id, row.last_error


def created(node: int) -> dict:
    return {"data": {"discountCodeBasicCreate": {"codeDiscountNode": {"id": f"gid://shopify/DiscountCodeNode/{node}"},
                                                 "userErrors": []}}}


def is_discount_create(request) -> tuple[bool, str]:
    body = json.loads(request.body)
    ok = "discountCodeBasicCreate" in body["query"] and request.headers["X-Shopify-Access-Token"] == "shpat_x"
    return ok, "" if ok else "not a discountCodeBasicCreate with the shop's token"


@responses.activate(assert_all_requests_are_fired=True)
def test_shopify_success_marks_delivered_with_the_shops_id(service):
    pk = welcome_delivery(service, "s")
    responses.post(GRAPHQL, match=[is_discount_create], json=created(11))
    service.run_delivery(pk)
    assert state(service, pk)[:3] == ("delivered", "delivered", "gid://shopify/DiscountCodeNode/11")


@responses.activate(assert_all_requests_are_fired=True)
def test_shopify_429_waits_for_retry_after(service):
    pk = welcome_delivery(service, "s")
    responses.post(GRAPHQL, match=[is_discount_create], status=429, headers={"Retry-After": "7"})
    outcome = service.run_delivery(pk)
    assert state(service, pk)[:2] == ("pending", "due")
    assert outcome.retry_at is not None
    assert timedelta(seconds=6) <= outcome.retry_at - datetime.now(UTC) <= timedelta(seconds=8)


@responses.activate(assert_all_requests_are_fired=True)
def test_shopify_5xx_then_success(service):
    pk = welcome_delivery(service, "s")
    responses.post(GRAPHQL, match=[is_discount_create], status=503, body="upstream down")
    responses.post(GRAPHQL, match=[is_discount_create], json=created(12))
    first = service.run_delivery(pk)
    assert first.retry_at is not None and state(service, pk)[0] == "pending"
    service.run_delivery(pk, now=first.retry_at)  # the queue runs it again when the backoff is over
    assert state(service, pk)[:3] == ("delivered", "delivered", "gid://shopify/DiscountCodeNode/12")


@responses.activate(assert_all_requests_are_fired=True)
def test_shopify_timeout_then_success(service):
    pk = welcome_delivery(service, "s")
    responses.post(GRAPHQL, match=[is_discount_create], body=requests.exceptions.ReadTimeout("slow"))
    responses.post(GRAPHQL, match=[is_discount_create], json=created(13))
    first = service.run_delivery(pk)
    assert first.retry_at is not None
    service.run_delivery(pk, now=first.retry_at)
    assert state(service, pk)[:3] == ("delivered", "delivered", "gid://shopify/DiscountCodeNode/13")


@responses.activate(assert_all_requests_are_fired=True)
def test_shopify_permanent_4xx_fails_with_the_shops_message(service):
    pk = welcome_delivery(service, "s")
    responses.post(GRAPHQL, match=[is_discount_create], status=403,
                   json={"errors": "Access denied for discountCodeBasicCreate field. Required access: `write_discounts`"})
    service.run_delivery(pk)
    status, award, _, error = state(service, pk)
    assert (status, award) == ("failed", "failed") and "write_discounts" in error


def coupon_matcher(request) -> tuple[bool, str]:
    body = json.loads(request.body)
    ok = body["email_restrictions"] == ["ana@example.com"] and request.headers["Authorization"].startswith("Basic ")
    return ok, "" if ok else "coupon not restricted to the customer's e-mail"


@responses.activate(assert_all_requests_are_fired=True)
def test_woocommerce_5xx_then_success_and_permanent_4xx(service):
    pk = welcome_delivery(service, "w")
    responses.post(COUPONS, match=[coupon_matcher], status=502)
    responses.post(COUPONS, match=[coupon_matcher], status=201, json={"id": 321, "code": "WELCOME-X"})
    first = service.run_delivery(pk)
    assert first.retry_at is not None
    service.run_delivery(pk, now=first.retry_at)
    assert state(service, pk)[:3] == ("delivered", "delivered", "321")


@responses.activate(assert_all_requests_are_fired=True)
def test_woocommerce_429_and_rejection(service):
    pk = welcome_delivery(service, "w")
    responses.post(COUPONS, match=[coupon_matcher], status=429, headers={"Retry-After": "3"})
    responses.post(COUPONS, match=[coupon_matcher], status=400,
                   json={"code": "woocommerce_rest_coupon_code_already_exists", "message": "The coupon code already exists",
                         "data": {"status": 400}})
    responses.get(COUPONS, json=[])  # looking the code up finds nothing of ours
    first = service.run_delivery(pk)
    assert first.retry_at is not None
    service.run_delivery(pk, now=first.retry_at)
    status, award, _, error = state(service, pk)
    assert (status, award) == ("failed", "failed") and "already exists" in error
