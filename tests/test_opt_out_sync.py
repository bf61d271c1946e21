"""An unsubscribe through our link is told to the shop where its API has a consent field:
Shopify's ``customerEmailMarketingConsentUpdate``, as a Huey job on the bulk lane (never in the
request), retried when rate limited or unavailable.  WooCommerce, guests and shadow-mode shops
send nothing; the opt-out event is recorded in every case.  Through the real app, with
`responses` playing Shopify."""
from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timedelta

import pytest
import responses
import sqlalchemy as sa
from responses import matchers

from loyalty_ladder import store
from loyalty_ladder.adapters.registry import adapter_for
from loyalty_ladder.app import create_app
from loyalty_ladder.clock import utcnow
from loyalty_ladder.errors import NotSupported
from loyalty_ladder.service import LadderService
from loyalty_ladder.shop import ShopConfig
from loyalty_ladder.tasks import OPT_OUT_RETRIES
from loyalty_ladder.unsubscribe_links import unsubscribe_secret, unsubscribe_token

on_both = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

SHOPIFY = ShopConfig(id="s", platform="shopify", domain="s.myshopify.com", webhook_secret="x",
                     api_url="https://s.myshopify.com", api_version="2025-07", access_token="shpat_x",
                     capabilities=("discount_codes", "tags"))
SHADOW = dataclasses.replace(SHOPIFY, id="sh", domain="sh.myshopify.com", api_url="https://sh.myshopify.com",
                             mode="shadow")
WOO = ShopConfig(id="w", platform="woocommerce", domain="https://w.example", webhook_secret="x",
                 api_url="https://w.example", consumer_key="ck", consumer_secret="cs",
                 capabilities=("discount_codes", "tags"))
GRAPHQL = "https://s.myshopify.com/admin/api/2025-07/graphql.json"
GUEST = "guest:0123456789abcdef0123456789abcdef"


def consent_update(customer: str):
    """A body matcher: exactly the consent mutation, unsubscribing this customer's gid."""
    def match(request) -> tuple[bool, str]:
        body = json.loads(request.body)
        query = body.get("query", "")
        wanted = {"input": {"customerId": f"gid://shopify/Customer/{customer}",
                            "emailMarketingConsent": {"marketingState": "UNSUBSCRIBED",
                                                      "marketingOptInLevel": "SINGLE_OPT_IN"}}}
        ok = ("customerEmailMarketingConsentUpdate(input: $input)" in query
              and "userErrors" in query and body.get("variables") == wanted)
        return ok, "" if ok else f"not the consent update of {customer}: {body}"
    return [match, matchers.header_matcher({"X-Shopify-Access-Token": "shpat_x"})]


def updated(customer: str) -> dict:
    return {"data": {"customerEmailMarketingConsentUpdate": {
        "customer": {"id": f"gid://shopify/Customer/{customer}"}, "userErrors": []}}}


def make_app(settings, immediate: bool = True):
    service = LadderService(settings, shops={s.id: s for s in (SHOPIFY, SHADOW, WOO)})
    app = create_app(settings, service=service, immediate_queue=immediate)
    app.testing = True
    return app, service


@pytest.fixture
def programme(ladder_settings, tmp_path):
    """A programme without rewards: the only call to the shop is the consent update."""
    rules = tmp_path / "opt-out-rules"
    rules.mkdir()
    (rules / "ladder.yaml").write_text("programme:\n  currency: EUR\nstages:\n  - id: potential\n")
    return dataclasses.replace(ladder_settings, rules=rules)


@pytest.fixture
def world(programme):
    app, service = make_app(programme)
    yield app.test_client(), service, app.extensions["loyalty_ladder"].huey
    service.db.dispose()


def subscribe(service: LadderService, shop: str, customer: str) -> None:
    service.accept_events(shop, {"id": f"c-{shop}-{customer}", "type": "customer_created", "customer_id": customer,
                                 "occurred_at": (utcnow() - timedelta(days=1)).isoformat(),
                                 "customer": {"email": "ana@example.com", "accepts_marketing": True}})


def unsubscribe(client, service: LadderService, shop: str, customer: str):
    token = unsubscribe_token(unsubscribe_secret(service.settings), shop, customer)
    response = client.post(f"/unsubscribe/{token}")
    assert response.status_code == 200 and "unsubscribed" in response.get_data(as_text=True)
    return response


def assert_recorded(service: LadderService, shop: str, customer: str) -> None:
    ev = store.events
    with service.db.connect() as conn:
        rows = conn.execute(sa.select(ev.c.body).where(ev.c.shop_id == shop, ev.c.customer_id == customer,
                                                       ev.c.source == "unsubscribe")).all()
    assert [r.body["customer"] for r in rows] == [{"accepts_marketing": False}]
    assert service.customer(shop, customer)["facts"]["accepts_marketing"] is False


def run_scheduled(huey) -> int:
    """What the bulk lane's consumer does when a retry is due: run every scheduled job."""
    due = huey.read_schedule(datetime.max)
    for task in due:
        huey.execute(task, timestamp=task.eta)
    return len(due)


@on_both
def test_an_unsubscribe_tells_shopify_once(world):
    client, service, huey = world
    subscribe(service, "s", "7001")
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(GRAPHQL, match=consent_update("7001"), json=updated("7001"))
        unsubscribe(client, service, "s", "7001")
        assert len(rsps.calls) == 1
        unsubscribe(client, service, "s", "7001")  # a second click: no consent left, nothing new
        assert len(rsps.calls) == 1
    assert_recorded(service, "s", "7001")
    assert huey.scheduled_count() == 0


def test_a_429_is_retried_after_retry_after(world):
    client, service, huey = world
    subscribe(service, "s", "7002")
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(GRAPHQL, match=consent_update("7002"), status=429, headers={"Retry-After": "7"})
        rsps.post(GRAPHQL, match=consent_update("7002"), json=updated("7002"))
        before = datetime.utcnow()  # noqa: DTZ003 (Huey's own naive UTC)
        unsubscribe(client, service, "s", "7002")
        assert len(rsps.calls) == 1  # the page answered; the retry waits on the bulk lane
        (retry,) = huey.scheduled()
        assert retry.name == "ladder.report_opt_out" and retry.args == ("s", "7002")
        assert timedelta(seconds=6) < retry.eta - before < timedelta(seconds=60)
        assert retry.retries == OPT_OUT_RETRIES - 1
        assert run_scheduled(huey) == 1
        assert len(rsps.calls) == 2
    assert huey.scheduled_count() == 0
    assert_recorded(service, "s", "7002")


def test_a_shop_that_stays_down_is_logged_as_failed_after_a_few_attempts(world, caplog):
    client, service, huey = world
    subscribe(service, "s", "7003")
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(GRAPHQL, match=consent_update("7003"), status=503, body="upstream down")
        with caplog.at_level(logging.INFO, logger="loyalty_ladder.tasks"):
            unsubscribe(client, service, "s", "7003")
            while run_scheduled(huey):
                pass
        assert len(rsps.calls) == OPT_OUT_RETRIES + 1
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failed) == 1 and "failed after 5 attempts" in failed[0].getMessage()
    assert "HTTP 503" in failed[0].getMessage() and "s/7003" in failed[0].getMessage()
    assert_recorded(service, "s", "7003")


def test_a_refusal_is_logged_and_not_retried(world, caplog):
    client, service, huey = world
    subscribe(service, "s", "7004")
    refused = {"data": {"customerEmailMarketingConsentUpdate": {"customer": None, "userErrors": [
        {"field": ["input", "customerId"], "code": "INVALID", "message": "Customer must have an email address"}]}}}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(GRAPHQL, match=consent_update("7004"), json=refused)
        with caplog.at_level(logging.WARNING, logger="loyalty_ladder.tasks"):
            unsubscribe(client, service, "s", "7004")
        assert len(rsps.calls) == 1
    assert huey.scheduled_count() == 0
    (warning,) = [r for r in caplog.records if r.name == "loyalty_ladder.tasks"]
    assert warning.levelno == logging.WARNING and "must have an email address" in warning.getMessage()
    assert_recorded(service, "s", "7004")


@pytest.mark.parametrize("shop, customer", [("w", "42"), ("s", GUEST), ("sh", "7005")],
                         ids=["woocommerce", "guest", "shadow"])
def test_nothing_is_sent_for_woocommerce_a_guest_or_a_shadow_shop(world, shop, customer):
    client, service, huey = world
    subscribe(service, shop, customer)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        unsubscribe(client, service, shop, customer)
        assert len(rsps.calls) == 0  # any call would reach the mock and be refused
    assert huey.scheduled_count() == 0
    assert_recorded(service, shop, customer)


def test_never_in_the_request_with_a_real_queue(programme):
    """With a real Huey (not immediate) the request only enqueues; the consumer reports later."""
    app, service = make_app(programme, immediate=False)
    huey = app.extensions["loyalty_ladder"].huey
    try:
        subscribe(service, "s", "7006")
        with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
            rsps.post(GRAPHQL, match=consent_update("7006"), json=updated("7006"))
            unsubscribe(app.test_client(), service, "s", "7006")
            assert len(rsps.calls) == 0
            (job,) = huey.pending()
            assert job.name == "ladder.report_opt_out" and job.args == ("s", "7006")
            huey.execute(huey.dequeue())  # the bulk lane's consumer
            assert len(rsps.calls) == 1
    finally:
        huey.flush()
        service.db.dispose()


def test_the_adapters_say_what_they_can_report():
    for shop in (WOO, ShopConfig(id="g", platform="generic")):
        with pytest.raises(NotSupported):
            adapter_for(shop).report_marketing_opt_out("42")
    with pytest.raises(NotSupported, match="no Shopify account"):
        adapter_for(SHOPIFY).report_marketing_opt_out(GUEST)
