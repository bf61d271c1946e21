"""Acceptance: signed webhooks built from real payloads move a customer up the default ladder,
and the shop's API (a real fake server on 127.0.0.1) receives each discount and tag call
exactly once — even when every webhook is delivered twice and out of order."""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loyalty_ladder.app import EXTENSION, create_app
from loyalty_ladder.service import LadderService
from loyalty_ladder.shop import ShopConfig

from .conftest import ADMIN_TOKEN
from .fakeshop import FakeShop, graphql_calls

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NOW = datetime.now(UTC).replace(microsecond=0)
SECRET = "shop-webhook-secret"


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def fixture(platform: str, name: str) -> dict:
    return json.loads((FIXTURES / platform / name).read_text())


def programme_in(currency: str, tmp_path: Path) -> Path:
    """The default programme, in the shop's currency (the recorded payloads are in HKD / USD), its
    codes valid for a year: the histories here are a hundred days old and delivered now, and a code
    whose validity passed before it was delivered is expired, never sent."""
    folder = tmp_path / f"rules-{currency}"
    folder.mkdir(exist_ok=True)
    text = (ROOT / "rules" / "ladder.yaml").read_text()
    assert "currency: EUR" in text and "expires_days: 30" in text and "expires_days: 14" in text
    text = text.replace("expires_days: 30", "expires_days: 365").replace("expires_days: 14", "expires_days: 365")
    (folder / "ladder.yaml").write_text(text.replace("currency: EUR", f"currency: {currency}"))
    return folder


def signature(body: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()


def make_app(ladder_settings, shop: ShopConfig):
    service = LadderService(ladder_settings, shops={shop.id: shop})
    app = create_app(ladder_settings, service=service, immediate_queue=True)
    app.testing = True
    return app, service


def customer_doc(client, shop: str, customer_id: str) -> dict:
    response = client.get(f"/api/v1/shops/{shop}/customers/{customer_id}",
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# ------------------------------------------------------------------ Shopify
CID = 7001


def shopify_webhooks(t0: datetime, refund_amount: str = "30.00") -> list[tuple[str, dict]]:
    """customer created, a checkout, three paid orders over months, a refund — real payloads, our dates."""
    customer = fixture("shopify", "customers_create.json")
    customer.update(id=CID, email="ana@example.com", accepts_marketing=True, created_at=iso(t0), updated_at=iso(t0),
                    admin_graphql_api_id=f"gid://shopify/Customer/{CID}")
    checkout = fixture("shopify", "checkouts_create.json")
    checkout.update(token="chk-e2e-1", created_at=iso(t0 + timedelta(days=1)), updated_at=iso(t0 + timedelta(days=1)),
                    email="ana@example.com")
    checkout["customer"] = {**(checkout.get("customer") or {}), "id": CID, "email": "ana@example.com"}
    hooks = [("customers/create", customer), ("checkouts/create", checkout)]
    base_order = fixture("shopify", "orders_paid.json")
    for n, days in enumerate((2, 40, 80), start=1):
        order = copy.deepcopy(base_order)
        order_id = 900000 + n
        when = iso(t0 + timedelta(days=days))
        order.update(id=order_id, admin_graphql_api_id=f"gid://shopify/Order/{order_id}", created_at=when,
                     processed_at=when, updated_at=when, financial_status="paid", cancelled_at=None, refunds=[],
                     email="ana@example.com", name=f"#E2E{n}")
        order["customer"] = {**(order.get("customer") or {}), "id": CID, "email": "ana@example.com"}
        hooks.append(("orders/paid", order))
    refund = fixture("shopify", "refunds_create.json")
    refund.update(id=880001, order_id=900003, created_at=iso(t0 + timedelta(days=85)),
                  processed_at=iso(t0 + timedelta(days=85)))
    refund["transactions"] = [{**refund["transactions"][0], "amount": refund_amount, "order_id": 900003,
                               "kind": "refund", "status": "success"}]
    hooks.append(("refunds/create", refund))
    return hooks


def post_shopify(client, topic: str, payload: dict, webhook_id: str):
    body = json.dumps(payload).encode()
    return client.post("/webhooks/shopify", data=body, headers={
        "Content-Type": "application/json", "X-Shopify-Topic": topic, "X-Shopify-Hmac-Sha256": signature(body),
        "X-Shopify-Shop-Domain": "e2e.myshopify.com", "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-API-Version": "2025-07"})


@pytest.fixture
def shopify(ladder_settings, tmp_path):
    with FakeShop() as fake:
        shop = ShopConfig(id="e2e", platform="shopify", domain="e2e.myshopify.com", webhook_secret=SECRET,
                          api_url=fake.url, api_version="2025-07", access_token=fake.access_token,
                          programme=programme_in("HKD", tmp_path), currency="HKD",
                          capabilities=("discount_codes", "tags", "store_credit", "payment_terms"))
        app, service = make_app(ladder_settings, shop)
        for n in (1, 2, 3):  # the shop knows its orders (refunds/create names only the order)
            fake.orders[str(900000 + n)] = (str(CID), "ana@example.com")
        yield app.test_client(), fake, service


def test_shopify_webhooks_twice_and_shuffled_climb_and_deliver_exactly_once(shopify):
    client, fake, _ = shopify
    t0 = NOW - timedelta(days=100)
    hooks = shopify_webhooks(t0)
    deliveries = [(topic, payload, f"wh-{i}") for i, (topic, payload) in enumerate(hooks)] * 2
    random.Random(7).shuffle(deliveries)
    for topic, payload, webhook_id in deliveries:
        response = post_shopify(client, topic, payload, webhook_id)
        assert response.status_code == 200, response.get_json()

    doc = customer_doc(client, "e2e", str(CID))
    assert [h["stage"] for h in doc["history"]] == ["potential", "visitor", "first_purchase", "regular"]
    assert doc["facts"]["orders_count"] == 3
    assert doc["facts"]["net_spent"] == str(sum(__import__("decimal").Decimal(o["total_price"])
                                               for t, o in hooks if t == "orders/paid") - 30)
    codes = graphql_calls(fake, "discountCodeBasicCreate")
    # the customer carries exactly the tag of their stage: a passed stage's tag was never added,
    # or added and removed once (which, depends on the order the webhooks were processed in)
    added = [tag for call in graphql_calls(fake, "tagsAdd") for tag in call["tags"]]
    removed = [tag for call in graphql_calls(fake, "tagsRemove") for tag in call["tags"]]
    assert len(added) == len(set(added)) and len(removed) == len(set(removed)) and set(removed) <= set(added)
    assert set(added) - set(removed) == {"ladder-regular"}
    assert fake.customer_tags[f"gid://shopify/Customer/{CID}"] == {"ladder-regular"}  # the shop's own state
    by_reward = {r["reward"]: r for r in doc["rewards"]}
    expected_codes = sorted(by_reward[r]["params"]["code"] for r in ("welcome", "first-order", "second-order"))
    assert sorted(c["basicCodeDiscount"]["code"] for c in codes) == expected_codes
    for call in codes:
        selection = call["basicCodeDiscount"]["customerSelection"]["customers"]["add"]
        assert selection == [f"gid://shopify/Customer/{CID}"]
    assert "discountCodeDelete" not in fake.names()
    for reward in ("welcome", "first-order", "second-order", "tag-regular"):
        assert by_reward[reward]["status"] == "delivered"
    for reward in ("tag-potential", "tag-visitor", "tag-first-purchase"):
        assert by_reward[reward]["status"] == "ended"
    # points are credited to the ledger loyalty-ladder keeps: no Shopify call, no staff
    assert by_reward["order-points"]["status"] == "delivered"
    assert all(call.headers["X-Shopify-Access-Token"] == fake.access_token for call in fake.calls)


def test_shopify_full_refund_inside_the_window_revokes_exactly_what_it_earned(shopify):
    client, fake, _ = shopify
    t0 = NOW - timedelta(days=100)
    hooks = shopify_webhooks(t0)
    third_total = [o for t, o in hooks if t == "orders/paid"][2]["total_price"]
    for i, (topic, payload) in enumerate(hooks):
        if topic == "refunds/create":
            payload["transactions"][0]["amount"] = third_total  # the whole third order, 5 days after it
        assert post_shopify(client, topic, payload, f"wh-{i}").status_code == 200
    doc = customer_doc(client, "e2e", str(CID))
    assert doc["stage"] == "first_purchase"  # the step to regular was never earned
    by_reward = {r["reward"]: r for r in doc["rewards"]}
    assert by_reward["tag-regular"]["status"] == "reversed"
    # the climb that ended the first-purchase tag never counted: it is held (and in the shop) again
    assert by_reward["tag-first-purchase"]["status"] == "delivered"
    added = [tag for call in graphql_calls(fake, "tagsAdd") for tag in call["tags"]]
    removed = [tag for call in graphql_calls(fake, "tagsRemove") for tag in call["tags"]]
    assert "ladder-regular" in removed and added.count("ladder-regular") == 1
    net = {tag: added.count(tag) - removed.count(tag) for tag in set(added)}
    assert {tag for tag, n in net.items() if n > 0} == {"ladder-first-purchase"}
    assert all(n in (0, 1) for n in net.values())


def test_shopify_bad_signature_and_unknown_shop_store_nothing(shopify):
    client, fake, service = shopify
    body = json.dumps(shopify_webhooks(NOW)[0][1]).encode()
    bad = client.post("/webhooks/shopify", data=body, headers={
        "X-Shopify-Topic": "customers/create", "X-Shopify-Hmac-Sha256": signature(body + b" "),
        "X-Shopify-Shop-Domain": "e2e.myshopify.com", "X-Shopify-Webhook-Id": "x"})
    assert bad.status_code == 401 and set(bad.get_json()) == {"code", "message", "errors"}
    unknown = client.post("/webhooks/shopify", data=body, headers={
        "X-Shopify-Topic": "customers/create", "X-Shopify-Hmac-Sha256": signature(body),
        "X-Shopify-Shop-Domain": "other.myshopify.com", "X-Shopify-Webhook-Id": "y"})
    assert unknown.status_code == 401
    import sqlalchemy as sa

    from loyalty_ladder import store

    with service.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.inbox)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(store.events)).scalar() == 0
    assert fake.calls == []


# ------------------------------------------------------------------ WooCommerce
WOO_CID = 4242


def woo_webhooks(t0: datetime) -> list[tuple[str, dict]]:
    customer = fixture("woocommerce", "customer_created.json")
    customer.update(id=WOO_CID, email="ben@example.com", date_created_gmt=iso(t0)[:-1],
                    date_modified_gmt=iso(t0)[:-1])
    hooks = [("customer.created", customer)]
    base = fixture("woocommerce", "order_updated_completed.json")
    for n, days in enumerate((2, 40, 80), start=1):
        order = copy.deepcopy(base)
        when = iso(t0 + timedelta(days=days))[:-1]
        order.update(id=5000 + n, number=str(5000 + n), customer_id=WOO_CID, status="processing",
                     date_created_gmt=when, date_paid_gmt=when, date_modified_gmt=when, refunds=[])
        order["billing"] = {**order.get("billing", {}), "email": "ben@example.com"}
        hooks.append(("order.created", order))
        completed = copy.deepcopy(order)
        completed.update(status="completed", date_completed_gmt=when,
                         date_modified_gmt=iso(t0 + timedelta(days=days, hours=5))[:-1])
        hooks.append(("order.updated", completed))  # processing → completed: not a second payment
    refunded = copy.deepcopy(completed)  # a partial refund on the third order, five days later
    refunded.update(refunds=[{"id": 9001, "reason": "damaged", "total": "-10.00"}],
                    date_modified_gmt=iso(t0 + timedelta(days=85))[:-1])
    hooks.append(("order.updated", refunded))
    return hooks


def post_woo(client, topic: str, payload: dict, source: str = "https://boutique.example"):
    body = json.dumps(payload).encode()
    return client.post("/webhooks/woocommerce", data=body, headers={
        "Content-Type": "application/json", "X-WC-Webhook-Topic": topic, "X-WC-Webhook-Signature": signature(body),
        "X-WC-Webhook-Source": source + "/", "X-WC-Webhook-Delivery-ID": str(random.randint(1, 10**9))})


@pytest.fixture
def woo(ladder_settings, tmp_path):
    with FakeShop() as fake:
        currency = fixture("woocommerce", "order_updated_completed.json").get("currency", "EUR")
        shop = ShopConfig(id="boutique", platform="woocommerce", domain="https://boutique.example",
                          webhook_secret=SECRET, api_url=fake.url, consumer_key="ck_test", consumer_secret="cs_test",
                          programme=programme_in(currency, tmp_path), currency=currency,
                          capabilities=("discount_codes", "tags"))
        app, service = make_app(ladder_settings, shop)
        yield app.test_client(), fake, service


def test_woocommerce_webhooks_twice_and_shuffled_climb_and_deliver_exactly_once(woo):
    client, fake, _ = woo
    t0 = NOW - timedelta(days=100)
    deliveries = woo_webhooks(t0) * 2
    random.Random(11).shuffle(deliveries)
    for topic, payload in deliveries:
        response = post_woo(client, topic, payload)
        assert response.status_code == 200, response.get_json()
    doc = customer_doc(client, "boutique", str(WOO_CID))
    assert [h["stage"] for h in doc["history"]] == ["potential", "visitor", "first_purchase", "regular"]
    assert doc["facts"]["orders_count"] == 3  # processing → completed never counted twice
    totals = [o["total"] for t, o in woo_webhooks(t0) if t == "order.created"]
    assert doc["facts"]["net_spent"] == str(sum(__import__("decimal").Decimal(x) for x in totals) - 10)
    assert doc["facts"]["refunds_count"] == 1  # the refund seen twice counts once
    coupons = [c.body for c in fake.calls if c.name == "POST /coupons"]
    by_reward = {r["reward"]: r for r in doc["rewards"]}
    granted_discounts = [r for r in doc["rewards"] if r["type"] == "discount"]
    assert sorted(c["code"] for c in coupons) == sorted(r["params"]["code"] for r in granted_discounts)
    assert all(c["email_restrictions"] == ["ben@example.com"] for c in coupons)
    meta = {m["key"]: m["value"] for m in fake.customers_meta[str(WOO_CID)]}
    assert set(meta["loyalty_ladder_tags"].split(",")) == {"ladder-regular"}  # only the current stage's
    assert by_reward["tag-regular"]["status"] == "delivered"


def test_woocommerce_creation_ping_gets_200_and_is_stored_nowhere(woo):
    client, _, service = woo
    response = client.post("/webhooks/woocommerce", data="webhook_id=17",
                           headers={"Content-Type": "application/x-www-form-urlencoded",
                                    "X-WC-Webhook-Source": "https://boutique.example/"})
    assert response.status_code == 200
    import sqlalchemy as sa

    from loyalty_ladder import store

    with service.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.inbox)).scalar() == 0


def test_extension_state_is_per_app(shopify, woo):
    (c1, _, s1), (c2, _, s2) = shopify, woo
    assert s1 is not s2
    assert c1.application.extensions[EXTENSION].service is s1
    assert c2.application.extensions[EXTENSION].service is s2


def test_shopify_customers_redact_pseudonymises_without_touching_rewards_or_totals(shopify):
    """Compliance: personal fields go, the history stays under a random id, nothing is revoked."""
    import sqlalchemy as sa

    from loyalty_ladder import store

    client, fake, service = shopify
    for i, (topic, payload) in enumerate(shopify_webhooks(NOW - timedelta(days=100))):
        assert post_shopify(client, topic, payload, f"wh-{i}").status_code == 200
    other = {**fixture("shopify", "customers_create.json"), "id": 7002, "email": "zoe@example.com"}
    assert post_shopify(client, "customers/create", other, "wh-other").status_code == 200
    before = customer_doc(client, "e2e", str(CID))
    calls_before = len(fake.calls)
    redact = {**fixture("shopify", "customers_redact.json"), "customer": {"id": CID, "email": "ana@example.com"}}
    assert post_shopify(client, "customers/redact", redact, "wh-redact").status_code == 200

    assert len(fake.calls) == calls_before  # nothing revoked, nothing re-granted
    gone = client.get(f"/api/v1/shops/e2e/customers/{CID}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert gone.status_code == 404
    with service.db.connect() as conn:
        new_id = conn.execute(sa.select(store.customers.c.customer_id)
                              .where(store.customers.c.customer_id.like("redacted:%"))).scalar_one()
        bodies = [r.body for r in conn.execute(sa.select(store.events.c.body))]
        inbox = {r.delivery_id: r.body for r in conn.execute(sa.select(store.inbox.c.delivery_id, store.inbox.c.body))}
    after = customer_doc(client, "e2e", new_id)
    assert after["facts"]["net_spent"] == before["facts"]["net_spent"]
    assert after["stage"] == before["stage"] and [h["stage"] for h in after["history"]] == [
        h["stage"] for h in before["history"]]
    assert sorted((r["reward"], r["status"]) for r in after["rewards"]) == sorted(
        (r["reward"], r["status"]) for r in before["rewards"])
    assert not any("ana@example.com" in json.dumps(b) for b in bodies)
    assert inbox["wh-0"] == "{}" and inbox["wh-other"] != "{}"  # only this customer's webhooks erased
    assert customer_doc(client, "e2e", "7002")["stage"] == "potential"  # others unaffected


def test_real_server_and_queue_deliver_a_signed_webhooks_rewards(tmp_path):
    """`ladder serve` (web + the real Huey consumer) with a Shopify shop pointed at the fake API."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import requests
    import yaml

    with FakeShop() as fake:
        shops = tmp_path / "shops.yaml"
        shops.write_text(yaml.safe_dump([{
            "id": "e2e", "platform": "shopify", "domain": "e2e.myshopify.com", "webhook_secret": SECRET,
            "api_url": fake.url, "api_version": "2025-07", "access_token": fake.access_token, "currency": "HKD",
            "programme": str(programme_in("HKD", tmp_path))}]))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LADDER_")}
        env.update(LADDER_SHOPS_FILE=str(shops), LADDER_DATABASE_URL=f"sqlite:///{tmp_path / 'ladder.db'}",
                   LADDER_ADMIN_TOKEN=ADMIN_TOKEN)
        proc = subprocess.Popen([str(Path(sys.executable).parent / "ladder"), "serve", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    requests.get(base + "/healthz", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            for i, (topic, payload) in enumerate(shopify_webhooks(NOW - timedelta(days=100))[:3]):
                body = json.dumps(payload).encode()
                response = requests.post(base + "/webhooks/shopify", data=body, timeout=5, headers={
                    "Content-Type": "application/json", "X-Shopify-Topic": topic,
                    "X-Shopify-Hmac-Sha256": signature(body), "X-Shopify-Shop-Domain": "e2e.myshopify.com",
                    "X-Shopify-Webhook-Id": f"real-{i}"})
                assert response.status_code == 200
            def carried() -> set[str]:  # the tags the shop holds: added and not removed since
                tags: set[str] = set()
                for c in fake.calls:
                    if c.name in ("tagsAdd", "tagsRemove"):
                        (tags.update if c.name == "tagsAdd" else tags.difference_update)(c.body["tags"])
                return tags

            while time.monotonic() < deadline:
                if carried() == {"ladder-first-purchase"} and len(graphql_calls(fake, "discountCodeBasicCreate")) >= 3:
                    break
                time.sleep(0.1)
            assert carried() == {"ladder-first-purchase"}
            assert len(graphql_calls(fake, "discountCodeBasicCreate")) == 3
        finally:
            proc.terminate()
            proc.wait(timeout=20)
