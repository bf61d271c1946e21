"""``POST /webhooks/<platform>`` through the real app (Huey immediate mode).

Most tests use a small test platform registered through the entry-point group, so they test
the endpoint and the inbox, not a vendor's payloads; the last ones send real recorded Shopify
and WooCommerce requests through the platform adapters.
"""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from loyalty_ladder import store
from loyalty_ladder.adapters.base import Inbound, get_header, hmac_sha256_base64
from loyalty_ladder.adapters.generic import GenericAdapter
from loyalty_ladder.shop import ShopConfig

from .conftest import app_with_shops, install_adapters

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


class TestPlatformAdapter(GenericAdapter):
    """Generic payloads under its own platform name, with a WooCommerce-like set-up ping."""

    __test__ = False  # a helper, not a test class
    platform = "testshop"
    serves_webhooks = True  # GenericAdapter does not; this test platform does

    @classmethod
    def shop_hint(cls, headers):
        return get_header(headers, "X-Testshop-Domain")

    def is_ping(self, headers, body):
        return (body.startswith(b"webhook_id=")
                and "x-www-form-urlencoded" in (get_header(headers, "Content-Type") or ""))

    def parse(self, topic, headers, body):
        if topic == "noop":
            return Inbound(note="nothing to do")
        return super().parse(topic, headers, body)


SHOPS = {
    "demo": ShopConfig(id="demo", platform="testshop", domain="demo.example", webhook_secret="new-secret",
                       previous_webhook_secret="old-secret"),
    "shopify-demo": ShopConfig(id="shopify-demo", platform="shopify", domain="ladder-demo.myshopify.com",
                               webhook_secret="shpss_test", mode="shadow", api_version="2025-07"),
    "woo-demo": ShopConfig(id="woo-demo", platform="woocommerce", domain="https://woo.example/",
                           webhook_secret="woo-secret", mode="shadow"),
}


@pytest.fixture(autouse=True)
def adapters(monkeypatch):
    """The installed adapters plus the test platform."""
    yield from install_adapters(monkeypatch, ("testshop", f"{__name__}:TestPlatformAdapter"))


@pytest.fixture
def app(ladder_settings):
    yield from app_with_shops(ladder_settings, SHOPS)


def events(customer: str = "ana") -> list[dict]:
    return [{"id": f"{customer}-created", "type": "customer_created", "customer_id": customer,
             "occurred_at": "2026-03-01T09:00:00Z", "customer": {"email": f"{customer}@example.com"}},
            {"id": f"{customer}-order-1", "type": "order_paid", "customer_id": customer,
             "occurred_at": "2026-03-02T10:00:00Z",
             "order": {"id": f"{customer}-o1", "total": "80.00", "currency": "EUR"}}]


def post(client, body, *, secret: str = "new-secret", domain: str = "demo.example", delivery: str = "d-1",
         content_type: str = "application/json", platform: str = "testshop", **headers: str):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signed = {"X-Testshop-Domain": domain, "X-Ladder-Hmac-Sha256": hmac_sha256_base64(secret, raw),
              "X-Ladder-Delivery-Id": delivery, "Content-Type": content_type, **headers}
    return client.post(f"/webhooks/{platform}", data=raw, headers=signed)


def rows(service) -> list:
    with service.db.connect() as conn:
        return conn.execute(sa.select(store.inbox).order_by(store.inbox.c.pk)).all()


def test_a_signed_webhook_is_accepted_stored_and_processed(client, service, auth):
    response = post(client, events())
    assert response.status_code == 200 and response.get_json() == {"status": "accepted"}
    [row] = rows(service)
    assert (row.platform, row.shop_id, row.delivery_id, row.status) == ("testshop", "demo", "d-1", "processed")
    assert row.body == json.dumps(events())
    # the immediate queue processed it: the customer is on the ladder
    doc = client.get("/api/v1/shops/demo/customers/ana", headers=auth).get_json()
    assert doc["stage"] == "first_purchase" and doc["pending_events"] == 0


def test_webhooks_need_no_admin_token_and_never_store_one(client, service, auth):
    assert post(client, events(), **auth).status_code == 200
    assert "Authorization" not in rows(service)[0].headers


def test_the_previous_secret_is_accepted(client, service):
    assert post(client, events(), secret="old-secret").get_json() == {"status": "accepted"}
    assert len(rows(service)) == 1


@pytest.mark.parametrize("secret", ["wrong", ""])
def test_a_bad_signature_is_401_and_nothing_is_stored(client, service, secret):
    response = post(client, events(), secret=secret)
    assert response.status_code == 401
    assert response.get_json()["code"] == "bad_signature"
    assert rows(service) == []


def test_a_body_changed_after_signing_is_refused(client, service):
    raw = json.dumps(events()).encode()
    headers = {"X-Testshop-Domain": "demo.example", "X-Ladder-Hmac-Sha256": hmac_sha256_base64("new-secret", raw),
               "Content-Type": "application/json"}
    response = client.post("/webhooks/testshop", data=raw.replace(b"80.00", b"8000.00"), headers=headers)
    assert response.status_code == 401 and rows(service) == []


def test_an_unknown_shop_is_401_and_nothing_is_stored(client, service):
    response = post(client, events(), domain="evil.example")
    assert response.status_code == 401
    assert response.get_json()["code"] == "unauthorized"
    assert rows(service) == []


def test_the_same_delivery_twice_is_acknowledged_once(client, service):
    assert post(client, events()).get_json() == {"status": "accepted"}
    again = post(client, events())
    assert again.status_code == 200 and again.get_json() == {"status": "duplicate"}
    assert len(rows(service)) == 1


def test_a_ping_is_200_and_stored_nowhere(client, service):
    response = client.post("/webhooks/testshop", data=b"webhook_id=12",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and response.get_json() == {"status": "ping"}
    assert rows(service) == []


def test_a_form_encoded_body_is_verified_over_its_raw_bytes(client, service):
    # form parsing must not consume the stream before the signature is checked
    raw = b"a=1&b=%C3%A9&c="
    response = post(client, raw, content_type="application/x-www-form-urlencoded", **{"X-Ladder-Topic": "noop"})
    assert response.get_json() == {"status": "accepted"}
    [row] = rows(service)
    assert row.body == raw.decode() and (row.status, row.error) == ("ignored", "nothing to do")


def test_a_body_that_is_not_utf8_is_400_and_nothing_is_stored(client, service):
    response = post(client, b'{"name": "\xff"}')
    assert response.status_code == 400 and response.get_json()["code"] == "bad_request"
    assert rows(service) == []


def test_malformed_json_is_acknowledged_and_the_row_failed(client, service):
    # A signed body we cannot read will not improve by the shop retrying it: acknowledge it and
    # keep it, marked failed with the reason, for an operator.
    response = post(client, b'{"id": "e1", ')
    assert response.status_code == 200 and response.get_json() == {"status": "accepted"}
    [row] = rows(service)
    assert row.status == "failed" and "not valid JSON" in row.error


def test_processing_that_fails_after_the_store_still_acknowledges_and_leaves_the_row(client, service, monkeypatch):
    from loyalty_ladder import inbox

    def down(pk):
        raise ConnectionError("the database went away")

    monkeypatch.setattr(service, "process_inbox", down)
    assert post(client, events()).get_json() == {"status": "accepted"}
    [row] = rows(service)
    assert row.status == "received"
    assert inbox.sweep(service.db, older_than=timedelta(0)) == [row.pk]


@pytest.mark.parametrize("platform", ["generic", "magento"])
def test_generic_and_unknown_platforms_have_no_webhook_endpoint(client, service, platform):
    response = post(client, events(), platform=platform)
    assert response.status_code == 404 and response.get_json()["code"] == "not_found"
    assert rows(service) == []


def test_the_endpoint_is_documented(client):
    spec = client.get("/openapi.json").get_json()
    operation = spec["paths"]["/webhooks/{platform}"]["post"]
    assert {"200", "400", "401", "404"} <= set(operation["responses"])
    assert operation.get("security") == []


# ---------------------------------------------------------------- the real platforms
def shopify_headers(topic: str, raw: bytes, webhook_id: str) -> dict[str, str]:
    return {"X-Shopify-Topic": topic, "X-Shopify-Shop-Domain": "ladder-demo.myshopify.com",
            "X-Shopify-Hmac-Sha256": hmac_sha256_base64("shpss_test", raw), "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Event-Id": webhook_id, "X-Shopify-Triggered-At": "2026-03-01T09:00:00Z",
            "X-Shopify-API-Version": "2025-07", "Content-Type": "application/json"}


def test_a_signed_shopify_webhook_is_accepted_once(client, service):
    raw = (FIXTURES / "shopify" / "customers_create.json").read_bytes()
    headers = shopify_headers("customers/create", raw, "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
    assert client.post("/webhooks/shopify", data=raw, headers=headers).get_json() == {"status": "accepted"}
    assert client.post("/webhooks/shopify", data=raw, headers=headers).get_json() == {"status": "duplicate"}
    [row] = rows(service)
    assert (row.platform, row.shop_id, row.topic) == ("shopify", "shopify-demo", "customers/create")
    headers["X-Shopify-Hmac-Sha256"] = hmac_sha256_base64("other", raw)
    headers["X-Shopify-Webhook-Id"] = headers["X-Shopify-Event-Id"] = "another"
    assert client.post("/webhooks/shopify", data=raw, headers=headers).status_code == 401
    assert len(rows(service)) == 1


def test_the_woocommerce_creation_ping_is_200_and_stored_nowhere(client, service):
    # what WooCommerce sends when a webhook is saved: unsigned, form-encoded, no topic or source
    response = client.post("/webhooks/woocommerce", data=b"webhook_id=15",
                           headers={"Content-Type": "application/x-www-form-urlencoded",
                                    "User-Agent": "WooCommerce/8.9.1 Hookshot (WordPress/6.5.3)"})
    assert response.status_code == 200 and response.get_json() == {"status": "ping"}
    assert rows(service) == []


class _Untouchable:
    """A request body stream that fails the test if anything reads it."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, *args):
        self.reads += 1
        raise AssertionError("the body was read")

    readline = read


def test_an_unknown_shop_is_refused_before_its_body_is_read(client, service):
    stream = _Untouchable()
    response = client.post("/webhooks/testshop", headers={"X-Testshop-Domain": "stranger.example"},
                           environ_overrides={"wsgi.input": stream, "CONTENT_TYPE": "application/json",
                                              "CONTENT_LENGTH": str(200 * 1024 * 1024)})
    assert response.status_code == 401 and response.get_json()["code"] == "unauthorized"
    assert stream.reads == 0 and rows(service) == []


def test_a_body_over_the_limit_is_413_before_it_is_read_and_nothing_is_stored(client, service):
    stream = _Untouchable()
    response = client.post("/webhooks/testshop", headers={"X-Testshop-Domain": "demo.example"},
                           environ_overrides={"wsgi.input": stream, "CONTENT_TYPE": "application/json",
                                              "CONTENT_LENGTH": str(5 * 1024 * 1024)})  # the limit is 4 MiB
    assert response.status_code == 413 and response.get_json()["code"] == "request_entity_too_large"
    assert stream.reads == 0 and rows(service) == []


def test_a_signed_body_over_the_limit_is_refused_and_one_under_it_is_stored(app, client, service):
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    big = [{**events()[0], "customer": {"email": "ana@example.com", "tags": ["x" * 100] * 700}}]
    assert post(client, big).status_code == 413 and rows(service) == []
    assert post(client, events()).status_code == 200 and len(rows(service)) == 1


def test_the_body_limit_is_a_setting_and_a_host_app_keeps_its_own(ladder_settings):
    import dataclasses

    from flask import Flask

    from loyalty_ladder.app import LoyaltyLadder, create_app

    assert create_app(dataclasses.replace(ladder_settings, max_body_bytes=2048)).config["MAX_CONTENT_LENGTH"] == 2048
    host = Flask("shop")
    host.config["MAX_CONTENT_LENGTH"] = 1234
    LoyaltyLadder(host, settings=ladder_settings)
    assert host.config["MAX_CONTENT_LENGTH"] == 1234


def test_a_chunked_body_over_the_limit_is_413_not_a_cut_body(app, client, service):
    """Without Content-Length werkzeug only cuts the stream at the limit; a cut body must not be
    judged (a bad signature, invalid JSON): it is refused as too large."""
    import io

    app.config["MAX_CONTENT_LENGTH"] = 4096
    raw = json.dumps([{**events()[0], "customer": {"email": "ana@example.com", "tags": ["x" * 50] * 200}}]).encode()
    headers = {"X-Testshop-Domain": "demo.example", "X-Ladder-Hmac-Sha256": hmac_sha256_base64("new-secret", raw),
               "X-Ladder-Delivery-Id": "d-big", "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    chunked = {"wsgi.input_terminated": True}  # what a server that decodes chunked bodies says
    response = client.post("/webhooks/testshop", input_stream=io.BytesIO(raw), headers=headers,
                           environ_overrides=chunked)
    assert response.status_code == 413 and rows(service) == []
    events_response = client.post("/api/v1/shops/default/events", input_stream=io.BytesIO(raw),
                                  headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked",
                                           "Authorization": "Bearer test-admin-token"}, environ_overrides=chunked)
    assert events_response.status_code == 413, events_response.get_json()
