"""Absurd amounts in a signed Shopify or WooCommerce webhook are invalid input: the inbox row
ends ``failed`` with the reason and is never retried (was: ``decimal.InvalidOperation`` in the
money parsing, the row left ``received`` and retried for days) — on SQLite and on PostgreSQL."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from loyalty_ladder import inbox, store
from loyalty_ladder.adapters.base import hmac_sha256_base64
from loyalty_ladder.shop import ShopConfig

from .conftest import app_with_shops

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HUGE = "111111111111111111111111111111"  # 30 integer digits: beyond the decimal context's precision

SHOPS = {
    "shopify-demo": ShopConfig(id="shopify-demo", platform="shopify", domain="ladder-demo.myshopify.com",
                               webhook_secret="shpss_test", mode="shadow", api_version="2025-07"),
    "woo-demo": ShopConfig(id="woo-demo", platform="woocommerce", domain="https://woo.example/",
                           webhook_secret="woo-secret", mode="shadow"),
}


@pytest.fixture
def webhook_app(ladder_settings):
    yield from app_with_shops(ladder_settings, SHOPS)


def _inbox_rows(db) -> list:
    with db.connect() as conn:
        return conn.execute(sa.select(store.inbox).order_by(store.inbox.c.pk)).all()


def test_an_absurd_shopify_amount_fails_the_row_for_good(webhook_app):
    payload = json.loads((FIXTURES / "shopify" / "orders_paid.json").read_text())
    payload["total_price"] = HUGE
    raw = json.dumps(payload).encode()
    headers = {"X-Shopify-Topic": "orders/paid", "X-Shopify-Shop-Domain": "ladder-demo.myshopify.com",
               "X-Shopify-Hmac-Sha256": hmac_sha256_base64("shpss_test", raw), "X-Shopify-Webhook-Id": "w-huge",
               "X-Shopify-API-Version": "2025-07", "Content-Type": "application/json"}
    client = webhook_app.test_client()
    assert client.post("/webhooks/shopify", data=raw, headers=headers).status_code == 200
    service = webhook_app.extensions["loyalty_ladder"].service
    [row] = _inbox_rows(service.db)
    assert row.status == "failed", (row.status, row.error)
    assert "too large" in row.error and "total_price" in row.error
    assert inbox.sweep(service.db, older_than=timedelta(0)) == []  # never retried


def test_an_absurd_woocommerce_amount_fails_the_row_for_good(webhook_app):
    payload = json.loads((FIXTURES / "woocommerce" / "order_updated_completed.json").read_text())
    payload["total"] = HUGE
    raw = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-WC-Webhook-Source": "https://woo.example/",
               "X-WC-Webhook-Topic": "order.updated", "X-WC-Webhook-Resource": "order",
               "X-WC-Webhook-Event": "updated", "X-WC-Webhook-Signature": hmac_sha256_base64("woo-secret", raw),
               "X-WC-Webhook-ID": "7", "X-WC-Webhook-Delivery-ID": "d-huge"}
    client = webhook_app.test_client()
    assert client.post("/webhooks/woocommerce", data=raw, headers=headers).status_code == 200
    service = webhook_app.extensions["loyalty_ladder"].service
    [row] = _inbox_rows(service.db)
    assert row.status == "failed", (row.status, row.error)
    assert "amount too large" in row.error
    assert inbox.sweep(service.db, older_than=timedelta(0)) == []
