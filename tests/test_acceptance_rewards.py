"""Issue 11's acceptance, through the real server (``ladder serve``: web + the real queue
consumer) with a Shopify shop pointed at the fake Admin API on 127.0.0.1:

a customer earns points over orders, redeems part of them through the API (store credit at the
fake Shopify), a partial refund claws back in proportion, a batch expires; the promoted customer
carries only the tag of their current stage in the shop; the worklist lists a gift and staff mark
it done."""
from __future__ import annotations

import copy
import json
import math
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import yaml

from .conftest import ADMIN_TOKEN
from .fakeshop import FakeShop, graphql_calls
from .test_shop_e2e import SECRET, fixture, iso, programme_in, signature

NOW = datetime.now(UTC).replace(microsecond=0)
CID = 8801
GID = f"gid://shopify/Customer/{CID}"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: (days ago, total): the first three make the customer regular (the third earns points that
#: expired by now: a year's validity); two recent ones earn the points spent and refunded
ORDERS = ((420, "80.00"), (382, "90.00"), (372, "100.00"), (20, "150.00"), (10, "200.00"))


def customer_created(t: datetime) -> dict:
    customer = fixture("shopify", "customers_create.json")
    customer.update(id=CID, email="ana@example.com", accepts_marketing=True, created_at=iso(t), updated_at=iso(t),
                    admin_graphql_api_id=GID)
    return customer


def order_paid(n: int, t: datetime, total: str) -> dict:
    order = copy.deepcopy(fixture("shopify", "orders_paid.json"))
    order_id = 770000 + n
    money = {"amount": total, "currency_code": "HKD"}
    order.update(id=order_id, admin_graphql_api_id=f"gid://shopify/Order/{order_id}", created_at=iso(t),
                 processed_at=iso(t), updated_at=iso(t), financial_status="paid", cancelled_at=None, refunds=[],
                 email="ana@example.com", name=f"#ACC{n}", total_price=total,
                 total_price_set={"shop_money": money, "presentment_money": money}, discount_codes=[])
    order["customer"] = {**(order.get("customer") or {}), "id": CID, "email": "ana@example.com"}
    return order


def refund_created(n: int, t: datetime, amount: str) -> dict:
    refund = fixture("shopify", "refunds_create.json")
    refund.update(id=660000 + n, order_id=770000 + n, created_at=iso(t), processed_at=iso(t))
    refund["transactions"] = [{**refund["transactions"][0], "amount": amount, "order_id": 770000 + n,
                               "kind": "refund", "status": "success"}]
    return refund


@pytest.fixture
def server(tmp_path):
    """``ladder serve`` on a free port, its Shopify shop at the fake Admin API."""
    with FakeShop() as fake:
        shops = tmp_path / "shops.yaml"
        shops.write_text(yaml.safe_dump([{
            "id": "acc", "platform": "shopify", "domain": "acc.myshopify.com", "webhook_secret": SECRET,
            "api_url": fake.url, "api_version": "2025-07", "access_token": fake.access_token, "currency": "HKD",
            "programme": str(programme_in("HKD", tmp_path))}]))
        for n, _ in enumerate(ORDERS):
            fake.orders[str(770000 + n)] = (str(CID), "ana@example.com")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LADDER_")}
        env.update(LADDER_SHOPS_FILE=str(shops), LADDER_DATABASE_URL=f"sqlite:///{tmp_path / 'ladder.db'}",
                   LADDER_ADMIN_TOKEN=ADMIN_TOKEN)
        proc = subprocess.Popen([str(Path(sys.executable).parent / "ladder"), "serve", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            wait(lambda: _up(base), "the server to answer")
            yield base, fake
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def _up(base: str) -> bool:
    try:
        return requests.get(base + "/healthz", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def wait(condition, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def webhook(base: str, topic: str, payload: dict, webhook_id: str) -> None:
    body = json.dumps(payload).encode()
    response = requests.post(base + "/webhooks/shopify", data=body, timeout=5, headers={
        "Content-Type": "application/json", "X-Shopify-Topic": topic, "X-Shopify-Hmac-Sha256": signature(body),
        "X-Shopify-Shop-Domain": "acc.myshopify.com", "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-API-Version": "2025-07"})
    assert response.status_code == 200, response.text


def customer(base: str) -> dict:
    response = requests.get(f"{base}/api/v1/shops/acc/customers/{CID}", headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def settled(base: str, orders: int) -> dict | None:
    """The customer document once every event is applied and every delivery has run."""
    try:
        doc = customer(base)
    except AssertionError:
        return None
    due = requests.get(f"{base}/api/v1/shops/acc/deliveries?status=pending", headers=AUTH, timeout=5).json()
    if doc["pending_events"] or doc["facts"]["orders_count"] != orders or due["items"]:
        return None
    return doc


def batches(doc: dict) -> dict[str, dict]:
    return {b["key"].rsplit("/", 1)[-1]: b for b in doc["points"]["batches"]}


def test_points_earned_redeemed_clawed_back_and_expired_tags_and_the_worklist(server):
    base, fake = server
    webhook(base, "customers/create", customer_created(NOW - timedelta(days=425)), "acc-0")
    for n, (days, total) in enumerate(ORDERS):
        webhook(base, "orders/paid", order_paid(n, NOW - timedelta(days=days), total), f"acc-order-{n}")
    doc = wait(lambda: settled(base, len(ORDERS)), "the orders to be applied")
    assert doc["stage"] == "regular"

    # earned: a point per currency unit of each order made while regular; the third order's
    # batch (a year's validity) has expired by now, the two recent ones are there to spend
    points = {r["scope_ref"]: r for r in doc["rewards"] if r["reward"] == "order-points"}
    assert {ref: r["params"]["points"] for ref, r in points.items()} == {"770002": 100, "770003": 150, "770004": 200}
    assert {r["status"] for r in points.values()} == {"delivered"}  # credited to the ledger
    live = batches(doc)
    assert set(live) == {"770003", "770004"}  # 770002 expired
    assert doc["points"]["balance"] == 350 and doc["points"]["value"] == "3.50" and doc["points"]["debt"] == 0

    # redeemed: 120 points through the API, first-expiring-first, paid out as store credit
    answer = requests.post(f"{base}/api/v1/shops/acc/customers/{CID}/points/redemptions",
                           json={"id": "checkout-42", "points": 120}, headers=AUTH, timeout=10)
    assert answer.status_code == 201, answer.text
    redemption = answer.json()
    assert (redemption["points"], redemption["value"], redemption["currency"]) == (120, "1.20", "HKD")
    wait(lambda: fake.store_credit_balance(str(CID), "HKD") == Decimal("1.20"), "the store credit")
    [credit] = graphql_calls(fake, "storeCreditAccountCredit")
    assert credit["id"] == GID and credit["creditInput"]["creditAmount"] == {"amount": "1.20", "currencyCode": "HKD"}
    doc = wait(lambda: settled(base, len(ORDERS)), "the redemption to settle")
    assert doc["points"]["balance"] == 230
    assert {k: b["remaining"] for k, b in batches(doc).items()} == {"770003": 30, "770004": 200}
    award = next(r for r in doc["rewards"] if r["key"] == redemption["award"]["key"])
    assert award["type"] == "points_redemption" and award["status"] == "delivered"
    # the same id again is the same redemption: nothing paid twice
    again = requests.post(f"{base}/api/v1/shops/acc/customers/{CID}/points/redemptions",
                          json={"id": "checkout-42", "points": 120}, headers=AUTH, timeout=10)
    assert again.status_code == 201 and again.json()["duplicate"] is True
    too_much = requests.post(f"{base}/api/v1/shops/acc/customers/{CID}/points/redemptions",
                             json={"id": "checkout-43", "points": 231}, headers=AUTH, timeout=10)
    assert too_much.status_code == 409 and too_much.json()["code"] == "insufficient_points"

    # a partial refund of the last order (a quarter) claws back a quarter of its batch
    webhook(base, "refunds/create", refund_created(4, NOW - timedelta(days=1), "50.00"), "acc-refund")
    doc = wait(lambda: (d := settled(base, len(ORDERS))) and d["facts"]["refunds_count"] == 1 and d, "the refund")
    assert batches(doc)["770004"]["points"] == math.floor(200 * 150 / 200) == 150
    assert doc["points"]["balance"] == 180 and doc["points"]["debt"] == 0
    assert fake.store_credit_balance(str(CID), "HKD") == Decimal("1.20")  # a redemption is never taken back

    # the promoted customer carries only the tag of their stage in the shop
    assert fake.customer_tags[GID] == {"ladder-regular"}
    added = [t for c in graphql_calls(fake, "tagsAdd") for t in c["tags"]]
    assert added.count("ladder-regular") == 1

    # the worklist: a complaint earns an apology gift no shop API carries; staff hand it over
    complaint = {"id": "acc-complaint", "type": "complaint", "customer_id": str(CID),
                 "occurred_at": iso(NOW - timedelta(hours=1)), "reason": "the parcel arrived torn"}
    assert requests.post(f"{base}/api/v1/shops/acc/events", json=[complaint], headers=AUTH,
                         timeout=5).status_code in (200, 202)

    def gift():
        listed = requests.get(f"{base}/api/v1/shops/acc/awards?status=needs_manual_action", headers=AUTH,
                              timeout=5).json()["items"]
        return next((a for a in listed if a["reward_id"] == "apology"), None)

    apology = wait(gift, "the apology gift on the worklist")
    done = requests.post(f"{base}/api/v1/shops/acc/awards/{apology['pk']}/done", json={"note": "sent with parcel 9"},
                         headers={**AUTH, "X-Ladder-Author": "maria"}, timeout=5)
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["done_by"], done.json()["done_note"]) == (
        "delivered", "maria", "sent with parcel 9")
