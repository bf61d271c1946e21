"""The staff worklist: awards no shop API carries wait as needs_manual_action, are listed by
status, and marked done by hand — delivered, with who, when and a note, the customer told.

Through the real app and a fake Shopify (a real server on 127.0.0.1): the default programme's
apology gift after a complaint is something Shopify cannot send, so it waits for staff."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from loyalty_ladder import store
from loyalty_ladder.cli import main

from .conftest import ADMIN_TOKEN
from .test_shop_e2e import CID, NOW, iso, post_shopify, shopify, shopify_webhooks  # noqa: F401 - the fixture

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STAFF = {**AUTH, "X-Ladder-Author": "maria"}


@pytest.fixture
def gift(shopify):  # noqa: F811 - the fixture imported above
    """A regular customer of the fake Shopify who complained: the apology gift waits for staff."""
    client, fake, service = shopify
    for i, (topic, payload) in enumerate(shopify_webhooks(NOW - timedelta(days=100))):
        assert post_shopify(client, topic, payload, f"wh-{i}").status_code == 200
    complaint = {"id": "complaint-1", "type": "complaint", "customer_id": str(CID),
                 "occurred_at": iso(NOW - timedelta(days=3)), "reason": "the parcel arrived torn"}
    answer = client.post("/api/v1/shops/e2e/events", json=[complaint], headers=AUTH)
    assert answer.status_code in (200, 202), answer.get_json()
    listed = client.get("/api/v1/shops/e2e/awards?status=needs_manual_action", headers=AUTH)
    assert listed.status_code == 200, listed.get_json()
    items = listed.get_json()["items"]
    apology = [a for a in items if a["reward_id"] == "apology"]
    assert len(apology) == 1 and apology[0]["type"] == "gift" and apology[0]["value"] == "5.00"
    assert all(a["status"] == "needs_manual_action" and a["done_by"] is None for a in items)
    return client, fake, service, apology[0]


def test_the_worklist_lists_a_gift_and_staff_mark_it_done(gift):
    client, fake, service, award = gift
    before = set(fake.names())
    done = client.post(f"/api/v1/shops/e2e/awards/{award['pk']}/done", json={"note": "sent with parcel 4711"},
                       headers=STAFF)
    assert done.status_code == 200, done.get_json()
    doc = done.get_json()
    assert doc["status"] == "delivered" and doc["done_by"] == "maria" and doc["done_note"] == "sent with parcel 4711"
    assert doc["done_at"] is not None
    # nothing was asked of the shop: staff did it
    assert set(fake.names()) == before
    waiting = client.get("/api/v1/shops/e2e/awards?status=needs_manual_action", headers=AUTH).get_json()["items"]
    assert award["pk"] not in [a["pk"] for a in waiting]
    customer = client.get(f"/api/v1/shops/e2e/customers/{CID}", headers=AUTH).get_json()
    assert {r["reward"]: r["status"] for r in customer["rewards"]}["apology"] == "delivered"
    with service.db.connect() as conn:
        grant = conn.execute(sa.select(store.deliveries.c.status, store.deliveries.c.delivered_at).where(
            store.deliveries.c.award_key == award["key"], store.deliveries.c.action == "grant")).one()
        log = [r.status for r in conn.execute(sa.select(store.award_log.c.status).where(
            store.award_log.c.award_key == award["key"]).order_by(store.award_log.c.pk))]
    assert grant.status == "delivered" and grant.delivered_at is not None
    assert log[-2:] == ["needs_manual_action", "delivered"]
    # a later fold keeps what staff did
    service.process_customer("e2e", str(CID))
    again = {r["reward"]: r for r in client.get(f"/api/v1/shops/e2e/customers/{CID}", headers=AUTH).get_json()["rewards"]}
    assert (again["apology"]["status"], again["apology"]["done_by"], again["apology"]["done_note"]) == (
        "delivered", "maria", "sent with parcel 4711")
    entries = client.get("/api/v1/shops/e2e/audit?action=award_done", headers=AUTH).get_json()["items"]
    assert [(e["author"], e["target"], e["reason"]) for e in entries] == [("maria", award["key"],
                                                                         "sent with parcel 4711")]


def test_marking_done_again_changes_nothing_and_only_waiting_awards_can_be_done(gift):
    client, _fake, service, award = gift
    url = f"/api/v1/shops/e2e/awards/{award['pk']}/done"
    first = client.post(url, json={"note": "sent"}, headers=STAFF).get_json()
    again = client.post(url, json={"note": "sent"}, headers=STAFF)
    assert again.status_code == 200 and again.get_json() == first
    other = client.post(url, json={"note": "sent twice?"}, headers=STAFF)
    assert other.status_code == 409 and other.get_json()["code"] == "conflict"
    assert "is delivered: only awards waiting for staff" in other.get_json()["message"]
    delivered = client.get("/api/v1/shops/e2e/awards?status=delivered", headers=AUTH).get_json()["items"]
    assert client.post(f"/api/v1/shops/e2e/awards/{delivered[0]['pk']}/done", json={"note": "x"},
                       headers=STAFF).status_code == 409
    assert client.post("/api/v1/shops/e2e/awards/999999/done", json={"note": "x"}, headers=STAFF).status_code == 404
    assert client.post(f"/api/v1/shops/e2e/awards/{2**64}/done", json={"note": "x"}, headers=STAFF).status_code == 404
    assert client.post(url, json={"note": "x"}, headers=AUTH).status_code == 400  # who did it?
    assert client.post(url, json={}, headers=STAFF).status_code == 422
    assert client.post(url, json={"note": "x"}, headers={"X-Ladder-Author": "maria"}).status_code == 401
    assert client.get("/api/v1/shops/e2e/awards?status=nonsense", headers=AUTH).status_code == 422
    with service.db.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(store.audit_log).where(
            store.audit_log.c.action == "award_done")).scalar()
    assert count == 1


def test_the_worklist_pages_newest_first(gift):
    client, *_ = gift
    everything = client.get("/api/v1/shops/e2e/awards?limit=500", headers=AUTH).get_json()["items"]
    first = client.get("/api/v1/shops/e2e/awards?limit=2", headers=AUTH).get_json()
    assert [a["pk"] for a in first["items"]] == [a["pk"] for a in everything[:2]]
    second = client.get(f"/api/v1/shops/e2e/awards?limit=2&before={first['next_before']}", headers=AUTH).get_json()
    assert [a["pk"] for a in second["items"]] == [a["pk"] for a in everything[2:4]]
    assert [a["pk"] for a in everything] == sorted((a["pk"] for a in everything), reverse=True)


def test_ladder_awards_list_and_done(gift, monkeypatch, tmp_path):
    _client, _fake, service, award = gift
    shops = tmp_path / "shops.yaml"
    shops.write_text(json.dumps([{"id": "e2e", "platform": "generic", "currency": "HKD",
                                  "programme": str(service.shops["e2e"].programme)}]))
    env = {"LADDER_DATABASE_URL": service.settings.database_url, "LADDER_SHOPS_FILE": str(shops)}
    runner = CliRunner()
    listed = runner.invoke(main, ["awards", "list", "e2e", "--status", "needs_manual_action"], env=env)
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["pk", "status", "customer_id", "reward_id"]
    assert any(line.startswith(f"{award['pk']}\tneeds_manual_action\t{CID}\tapology\tgift\t5.00") for line in lines)
    done = runner.invoke(main, ["awards", "done", "e2e", str(award["pk"]), "--note", "handed over in the shop",
                                "--author", "li"], env=env)
    assert done.exit_code == 0, done.output
    assert f"award {award['pk']} (apology for customer {CID}): delivered, done by li" in done.stdout
    again = runner.invoke(main, ["awards", "done", "e2e", str(award["pk"]), "--note", "handed over in the shop",
                                 "--author", "li"], env=env)
    assert again.exit_code == 0 and "nothing changed" in again.stdout
    refused = runner.invoke(main, ["awards", "done", "e2e", str(award["pk"]), "--note", "again", "--author", "li"],
                            env=env)
    assert refused.exit_code == 1 and "only awards waiting for staff" in refused.stderr
    as_json = runner.invoke(main, ["awards", "list", "e2e", "--status", "delivered", "--json"], env=env)
    docs = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {d["pk"]: d["done_by"] for d in docs}[award["pk"]] == "li"


def test_an_award_done_by_hand_and_then_revoked_is_taken_back_by_hand(gift):
    """Nothing of a hand-over exists in the shop's API: its reversal asks staff, never the shop."""
    client, fake, service, award = gift
    assert client.post(f"/api/v1/shops/e2e/awards/{award['pk']}/done", json={"note": "sent"},
                       headers=STAFF).status_code == 200
    calls = list(fake.names())
    revoked = client.post(f"/api/v1/shops/e2e/customers/{CID}/adjustments", headers=STAFF,
                          json={"action": "revoke", "award_key": award["key"], "reason": "sent to the wrong person"})
    assert revoked.status_code == 201, revoked.get_json()
    assert list(fake.names()) == calls
    with service.db.connect() as conn:
        revoke = conn.execute(sa.select(store.deliveries.c.status, store.deliveries.c.last_error).where(
            store.deliveries.c.award_key == award["key"], store.deliveries.c.action == "revoke")).one()
    assert revoke.status == "needs_manual_action"
    assert revoke.last_error == "award reversed: it was handed over by hand, take it back by hand"
