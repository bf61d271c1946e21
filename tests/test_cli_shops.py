"""The shop commands through the real `ladder` executable: sync, replay, inbox-export, customer-data."""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from pathlib import Path

import yaml

from .fakeshop import FakeShop
from .test_cli import run
from .test_shop_e2e import SECRET, fixture, programme_in


def shops_file(tmp_path: Path, fake_url: str, currency: str) -> Path:
    path = tmp_path / "shops.yaml"
    path.write_text(yaml.safe_dump([
        {"id": "boutique", "platform": "woocommerce", "domain": "https://boutique.example",
         "webhook_secret": SECRET, "api_url": fake_url, "consumer_key": "ck_test", "consumer_secret": "cs_test",
         "currency": currency, "programme": str(programme_in(currency, tmp_path))},
        {"id": "demo", "platform": "shopify", "domain": "demo.myshopify.com", "webhook_secret": SECRET,
         "api_url": fake_url, "api_version": "2025-07", "access_token": "shpat_test", "currency": "USD",
         "programme": str(programme_in("USD", tmp_path))},
    ]))
    return path


def test_sync_pulls_history_pages_then_a_second_sync_adds_nothing(tmp_path):
    order = fixture("woocommerce", "order_updated_completed.json")
    currency = order.get("currency", "EUR")
    with FakeShop() as fake:
        customer = fixture("woocommerce", "customer_created.json")
        fake.woo["customers"] = [customer]
        orders = []
        for n in range(150):  # two pages of 100
            item = copy.deepcopy(order)
            item.update(id=10000 + n, customer_id=customer["id"], refunds=[])
            orders.append(item)
        fake.woo["orders"] = orders
        env = {"LADDER_SHOPS_FILE": str(shops_file(tmp_path, fake.url, currency)),
               "LADDER_DATABASE_URL": f"sqlite:///{tmp_path / 'ladder.db'}"}
        first = run("sync", "boutique", cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stderr
        # the customer (created, then updated: date_modified differs) and 150 orders
        assert "synced 152 new events (0 already known) for 1 customers" in first.stdout
        assert "page 2/2" in first.stderr  # progress while paging
        second = run("sync", "boutique", cwd=tmp_path, env=env)
        assert second.returncode == 0, second.stderr
        assert "synced 0 new events (152 already known)" in second.stdout
        data = run("customer-data", "boutique", str(customer["id"]), cwd=tmp_path, env=env)
        doc = json.loads(data.stdout)
        assert doc["customer"]["facts"]["orders_count"] == 150
        # history is recorded, never paid: nothing reached the shop but the reads; the privileges
        # the customer holds now (their stage tag) are due: a worker delivers them from now on
        assert {c.name for c in fake.calls} == {"GET /customers", "GET /orders"}
        statuses = {a["key"]: a["status"] for a in doc["customer"]["rewards"]}
        held = {k for k, a in statuses.items() if a == "due"}
        stage = doc["customer"]["stage"]
        assert held and all("/privilege/" in k or "/stage/" in k for k in held)
        assert any(k.endswith(f"tag-{stage.replace('_', '-')}/privilege/{stage}/1") for k in held), held
        assert set(statuses.values()) == {"historical", "due"}


def test_replay_verifies_again_and_is_idempotent_then_exports(tmp_path):
    body = json.dumps(fixture("shopify", "customers_create.json"))
    signature = base64.b64encode(hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).digest()).decode()
    headers = {"X-Shopify-Topic": "customers/create", "X-Shopify-Hmac-Sha256": signature,
               "X-Shopify-Shop-Domain": "demo.myshopify.com", "X-Shopify-Webhook-Id": "replay-1",
               "Content-Type": "application/json"}
    forged = {**headers, "X-Shopify-Hmac-Sha256": base64.b64encode(b"x" * 32).decode(), "X-Shopify-Webhook-Id": "f"}
    records = tmp_path / "webhooks.jsonl"
    records.write_text(json.dumps({"platform": "shopify", "headers": headers, "body": body}) + "\n"
                       + json.dumps({"platform": "shopify", "headers": forged, "body": body}) + "\n")
    with FakeShop() as fake:
        env = {"LADDER_SHOPS_FILE": str(shops_file(tmp_path, fake.url, "USD")),
               "LADDER_DATABASE_URL": f"sqlite:///{tmp_path / 'ladder.db'}"}
        first = run("replay", str(records), cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stderr
        assert "accepted: 1" in first.stdout and "rejected: 1" in first.stdout
        assert "record 2" in first.stderr  # the forged one, named
        again = run("replay", str(records), cwd=tmp_path, env=env)
        assert "accepted: 0" in again.stdout and "duplicates: 1" in again.stdout
        exported = run("inbox-export", cwd=tmp_path, env=env)
        lines = [json.loads(line) for line in exported.stdout.splitlines()]
        assert len(lines) == 1 and lines[0]["body"] == body and lines[0]["platform"] == "shopify"
        assert lines[0]["headers"]["X-Shopify-Hmac-Sha256"] == signature
