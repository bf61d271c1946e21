"""VIP service: a VIP customer's personal manager (plugin/vip.py), on the customer document, in
the GDPR export and redaction, and in the shop — a Shopify customer metafield, WooCommerce
customer meta — beside the VIP tag.

Through the real app and the fake shops of tests/fakeshop.py (a real server on 127.0.0.1, strict
about what it receives), on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import responses
import sqlalchemy as sa

from loyalty_ladder import store, vip
from loyalty_ladder.adapters.base import Delivery
from loyalty_ladder.adapters.shopify import ShopifyAdapter
from loyalty_ladder.adapters.woocommerce import WooCommerceAdapter
from loyalty_ladder.errors import ConfigError, NotSupported
from loyalty_ladder.service import LadderService
from loyalty_ladder.shop import ShopConfig, VipManager
from loyalty_ladder.shops import load_shops

from .conftest import ADMIN_TOKEN
from .fakeshop import FakeShop
from .test_shop_e2e import make_app

#: the app's database: both backends (tests on the ``engine`` fixture run both by themselves)
BOTH = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                               indirect=True)

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NOW = datetime.now(UTC).replace(microsecond=0)
ANNA = VipManager("anna", "Anna K.", "anna@shop.example")
BOB = VipManager("bob", "Bob M.", "bob@shop.example")
CAROL = VipManager("carol", "Carol D.", None)
GOLD = {"level": "gold", "priority": 2}
PLATINUM = {"level": "platinum", "priority": 1}

PROGRAMME = """\
programme:
  name: VIP test
  currency: EUR
stages:
  - id: member
  - id: vip
    when: {fact: orders_count, gte: 2}
  - id: platinum
    when: {fact: orders_count, gte: 4}
rewards:
  - id: gold
    type: vip_service
    on: {stage: vip}
    params: {level: gold, priority: 2, tag: vip-gold}
  - id: platinum
    type: vip_service
    on: {stage: platinum}
    params: {level: platinum, tag: vip-platinum}
"""
UNTAGGED = PROGRAMME.replace(", tag: vip-gold", "").replace(", tag: vip-platinum", "")


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def rules(tmp_path: Path, text: str = PROGRAMME) -> Path:
    folder = tmp_path / f"rules-{len(list(tmp_path.glob('rules-*')))}"
    folder.mkdir()
    (folder / "ladder.yaml").write_text(text, encoding="utf-8")
    return folder


def shopify_shop(fake: FakeShop, programme: Path, managers: tuple[VipManager, ...] = (ANNA, BOB),
                 capabilities: tuple[str, ...] = ShopifyAdapter.capabilities) -> ShopConfig:
    return ShopConfig(id="vipshop", platform="shopify", domain="vip.myshopify.com", webhook_secret="s",
                      api_url=fake.url, api_version="2025-07", access_token=fake.access_token,
                      programme=programme, currency="EUR", vip_managers=managers, capabilities=capabilities)


def orders(customer_id: str, count: int, start: int = 0, days_ago: int = 60) -> list[dict[str, Any]]:
    """A customer (on the first call) and ``count`` paid orders, a day apart."""
    events = [] if start else [{"id": f"{customer_id}-c", "type": "customer_created", "customer_id": customer_id,
                                "occurred_at": iso(NOW - timedelta(days=days_ago + 1)),
                                "customer": {"email": f"{customer_id}@example.com"}}]
    for n in range(start, start + count):
        events.append({"id": f"{customer_id}-o{n}", "type": "order_paid", "customer_id": customer_id,
                       "occurred_at": iso(NOW - timedelta(days=days_ago - n)),
                       "order": {"id": f"{customer_id}-o{n}", "total": "50.00", "currency": "EUR"}})
    return events


def refund(customer_id: str, n: int, days_ago: int = 60) -> dict[str, Any]:
    """A full refund of order ``n`` the day after it: inside the window, the order never counted."""
    return {"id": f"{customer_id}-r{n}", "type": "order_refunded", "customer_id": customer_id,
            "occurred_at": iso(NOW - timedelta(days=days_ago - n - 1)), "order": {"id": f"{customer_id}-o{n}"},
            "refund": {"id": f"{customer_id}-rf{n}", "amount": "50.00", "reason": "returned"}}


def post(client, shop: str, events: list[dict[str, Any]]) -> None:
    answer = client.post(f"/api/v1/shops/{shop}/events", json=events, headers=AUTH)
    assert answer.status_code == 202, answer.get_json()


def document(client, shop: str, customer_id: str) -> dict[str, Any]:
    answer = client.get(f"/api/v1/shops/{shop}/customers/{customer_id}", headers=AUTH)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def assignments(service: LadderService) -> dict[str, str]:
    t = store.vip_assignments
    with service.db.connect() as conn:
        return dict(conn.execute(sa.select(t.c.customer_id, t.c.manager_id).order_by(t.c.customer_id)).all())


def gid(customer_id: str) -> str:
    return f"gid://shopify/Customer/{customer_id}"


def vip_doc(level: dict[str, Any], manager: VipManager | None) -> dict[str, Any]:
    return {**level, "manager": vip.manager_document(manager)}


def metafield_calls(fake: FakeShop, customer_id: str) -> list[tuple[str, Any]]:
    """The metafield mutations for one customer, in order, with the value each set (parsed)."""
    out = []
    for call in fake.calls:
        if call.name in ("metafieldsSet", "metafieldsDelete"):
            (item,) = call.body["metafields"]
            if item["ownerId"] == gid(customer_id):
                assert (item["namespace"], item["key"]) == ("loyalty_ladder", "vip")
                out.append((call.name, json.loads(item["value"]) if "value" in item else None))
    return out


def tag_calls(fake: FakeShop, customer_id: str) -> list[tuple[str, list[str]]]:
    return [(c.name, c.body["tags"]) for c in fake.calls
            if c.name in ("tagsAdd", "tagsRemove") and c.body["id"] == gid(customer_id)]


def run_due(service: LadderService) -> None:
    """What the lanes do: the due wake-ups, then every due delivery (and what each arms)."""
    for shop_id, customer_id in service.due_wakeups():
        service.process_customer(shop_id, customer_id)
    for _ in range(5):
        due = service.due_deliveries()
        if not due:
            return
        for pk in due:
            service.run_delivery(pk)


@pytest.fixture
def shopify(ladder_settings, tmp_path):
    with FakeShop() as fake:
        app, service = make_app(ladder_settings, shopify_shop(fake, rules(tmp_path)))
        yield app.test_client(), fake, service


# ================================================================ assignment
@BOTH
def test_managers_are_balanced_by_load_and_sticky(shopify):
    client, fake, service = shopify
    for customer_id in ("7001", "7002", "7003"):
        post(client, "vipshop", orders(customer_id, 2))
    # ties go to the earlier manager in the list: anna (0/0), bob (1/0), anna (1/1)
    assert assignments(service) == {"7001": "anna", "7002": "bob", "7003": "anna"}
    for customer_id, manager in (("7001", ANNA), ("7002", BOB), ("7003", ANNA)):
        doc = document(client, "vipshop", customer_id)
        assert doc["vip"] == vip_doc(GOLD, manager)
        assert tag_calls(fake, customer_id) == [("tagsAdd", ["vip-gold"])]
        assert metafield_calls(fake, customer_id) == [("metafieldsSet", vip_doc(GOLD, manager))]
        assert fake.metafield(customer_id, "vip") == vip_doc(GOLD, manager)
        set_call = next(c.body for c in fake.calls if c.name == "metafieldsSet"
                        and c.body["metafields"][0]["ownerId"] == gid(customer_id))
        assert set_call["metafields"][0]["type"] == "json"
    with service.db.connect() as conn:
        before = conn.execute(sa.select(store.vip_assignments).order_by(store.vip_assignments.c.customer_id)).all()
    calls = len(fake.calls)
    # re-processing (and a later event) changes nothing: same managers, same times, nothing sent
    for customer_id in ("7001", "7002", "7003"):
        service.process_customer("vipshop", customer_id)
    post(client, "vipshop", orders("7002", 1, start=2))
    with service.db.connect() as conn:
        after = conn.execute(sa.select(store.vip_assignments).order_by(store.vip_assignments.c.customer_id)).all()
    assert after == before and len(fake.calls) == calls
    with service.db.connect() as conn:
        assert vip.loads(conn, "vipshop") == {"anna": 2, "bob": 1}


@BOTH
def test_a_customer_who_is_not_vip_has_no_manager(shopify):
    client, fake, service = shopify
    post(client, "vipshop", orders("7001", 1))
    assert document(client, "vipshop", "7001")["vip"] is None
    assert assignments(service) == {} and metafield_calls(fake, "7001") == []


@BOTH
def test_the_manager_is_released_when_vip_is_reversed_and_the_shop_forgets_it(shopify):
    client, fake, service = shopify
    post(client, "vipshop", orders("7001", 2) + orders("7002", 2))
    assert assignments(service) == {"7001": "anna", "7002": "bob"}
    post(client, "vipshop", [refund("7001", 1)])  # the second order never counted: not a VIP after all
    doc = document(client, "vipshop", "7001")
    assert doc["vip"] is None and {r["reward"]: r["status"] for r in doc["rewards"]}["gold"] == "reversed"
    assert assignments(service) == {"7002": "bob"}
    assert tag_calls(fake, "7001") == [("tagsAdd", ["vip-gold"]), ("tagsRemove", ["vip-gold"])]
    assert metafield_calls(fake, "7001") == [("metafieldsSet", vip_doc(GOLD, ANNA)), ("metafieldsDelete", None)]
    assert fake.metafield("7001", "vip") is None
    # the released place counts: the next VIP gets anna again (0 against bob's 1)
    post(client, "vipshop", orders("7003", 2))
    assert assignments(service) == {"7002": "bob", "7003": "anna"}


@BOTH
def test_a_climb_to_another_vip_level_keeps_the_manager_and_the_shop_keeps_the_new_level(shopify):
    client, fake, service = shopify
    post(client, "vipshop", orders("7001", 2) + orders("7002", 2))
    post(client, "vipshop", orders("7002", 2, start=2))  # platinum: gold ends, platinum is granted
    doc = document(client, "vipshop", "7002")
    assert {r["reward"]: r["status"] for r in doc["rewards"]} == {"gold": "ended", "platinum": "delivered"}
    assert doc["vip"] == vip_doc(PLATINUM, BOB)
    assert assignments(service) == {"7001": "anna", "7002": "bob"}
    assert sorted(tag_calls(fake, "7002")) == [("tagsAdd", ["vip-gold"]), ("tagsAdd", ["vip-platinum"]),
                                               ("tagsRemove", ["vip-gold"])]
    # the gold revoke writes what is current — platinum — instead of deleting it, whatever ran last
    assert metafield_calls(fake, "7002")[0] == ("metafieldsSet", vip_doc(GOLD, BOB))
    assert metafield_calls(fake, "7002")[1:] == [("metafieldsSet", vip_doc(PLATINUM, BOB))] * 2
    assert fake.metafield("7002", "vip") == vip_doc(PLATINUM, BOB)


@BOTH
def test_a_manager_removed_from_the_list_is_replaced_and_the_shop_learns_it(shopify, ladder_settings, tmp_path):
    client, fake, service = shopify
    for customer_id in ("7001", "7002", "7003"):
        post(client, "vipshop", orders(customer_id, 2))
    assert assignments(service) == {"7001": "anna", "7002": "bob", "7003": "anna"}
    calls = len(fake.calls)
    # anna leaves, carol joins: a restart with the new shops file wakes anna's customers now
    shop = shopify_shop(fake, service.shops["vipshop"].programme, managers=(BOB, CAROL))
    restarted = LadderService(ladder_settings, shops={shop.id: shop})
    assert sorted(c for _s, c in restarted.due_wakeups()) == ["7001", "7003"]
    run_due(restarted)
    # the least loaded of the list now: carol (0), then bob and carol tie at 1 → bob, the earlier
    assert assignments(restarted) == {"7001": "carol", "7002": "bob", "7003": "bob"}
    new = [c for c in fake.calls[calls:] if c.name != "customerTags"]  # the reads of the tags carried
    assert sorted((c.name, c.body.get("id") or c.body["metafields"][0]["ownerId"]) for c in new) == [
        ("metafieldsSet", gid("7001")), ("metafieldsSet", gid("7003"))]  # their tags are carried already
    assert fake.metafield("7001", "vip") == vip_doc(GOLD, CAROL)
    assert fake.metafield("7003", "vip") == vip_doc(GOLD, BOB)
    assert restarted.customer_view("vipshop", "7001")["vip"]["manager"] == {"id": "carol", "name": "Carol D.",
                                                                           "email": None}
    # the grant was delivered again, the award stays delivered, nobody was told twice
    with restarted.db.connect() as conn:
        grant = conn.execute(sa.select(store.deliveries).where(
            store.deliveries.c.customer_id == "7001", store.deliveries.c.action == "grant")).mappings().one()
    assert grant["status"] == "delivered" and grant["detail"]["redelivery"] is True
    assert grant["detail"]["generation"] == 2
    # once more: nothing to do
    calls = len(fake.calls)
    restarted2 = LadderService(ladder_settings, shops={shop.id: shop})
    assert restarted2.due_wakeups() == []
    for customer_id in ("7001", "7002", "7003"):
        restarted2.process_customer("vipshop", customer_id)
    run_due(restarted2)
    assert len(fake.calls) == calls and assignments(restarted2) == {"7001": "carol", "7002": "bob", "7003": "bob"}


@BOTH
def test_vip_ending_before_its_redelivery_ran_still_takes_it_back(shopify, ladder_settings):
    client, fake, service = shopify
    post(client, "vipshop", orders("7001", 2))
    shop = shopify_shop(fake, service.shops["vipshop"].programme, managers=(BOB,))
    restarted = LadderService(ladder_settings, shops={shop.id: shop})  # no queue: deliveries wait
    restarted.process_customer("vipshop", "7001")  # reassigned to bob: the grant is armed again
    assert assignments(restarted) == {"7001": "bob"}
    restarted.accept_events("vipshop", [refund("7001", 1)])
    restarted.process_customer("vipshop", "7001")  # not a VIP any more, before the re-delivery ran
    with restarted.db.connect() as conn:
        rows = {r.action: r for r in conn.execute(sa.select(store.deliveries).where(
            store.deliveries.c.customer_id == "7001"))}
    assert rows["grant"].status == "cancelled" and rows["revoke"].status == "pending"
    run_due(restarted)
    assert tag_calls(fake, "7001") == [("tagsAdd", ["vip-gold"]), ("tagsRemove", ["vip-gold"])]
    assert metafield_calls(fake, "7001") == [("metafieldsSet", vip_doc(GOLD, ANNA)), ("metafieldsDelete", None)]
    assert assignments(restarted) == {} and fake.metafield("7001", "vip") is None


@BOTH
def test_without_managers_a_vip_has_none_and_the_shop_still_learns_the_level(ladder_settings, tmp_path):
    with FakeShop() as fake:
        app, service = make_app(ladder_settings, shopify_shop(fake, rules(tmp_path, UNTAGGED), managers=()))
        client = app.test_client()
        post(client, "vipshop", orders("7001", 2))
        doc = document(client, "vipshop", "7001")
        assert doc["vip"] == vip_doc(GOLD, None)
        assert {r["reward"]: r["status"] for r in doc["rewards"]} == {"gold": "delivered"}
        assert assignments(service) == {}
        # a VIP without a tag is carried too: the metafield alone (capability customer_fields)
        assert tag_calls(fake, "7001") == []
        assert metafield_calls(fake, "7001") == [("metafieldsSet", vip_doc(GOLD, None))]


@BOTH
def test_a_shop_without_the_capability_leaves_an_untagged_vip_to_staff(ladder_settings, tmp_path):
    with FakeShop() as fake:
        shop = shopify_shop(fake, rules(tmp_path, UNTAGGED), capabilities=("discount_codes", "tags"))
        app, service = make_app(ladder_settings, shop)
        client = app.test_client()
        post(client, "vipshop", orders("7001", 2))
        doc = document(client, "vipshop", "7001")
        assert {r["reward"]: r["status"] for r in doc["rewards"]} == {"gold": "needs_manual_action"}
        assert doc["vip"] == vip_doc(GOLD, ANNA)  # a VIP all the same, with a manager
        assert assignments(service) == {"7001": "anna"} and fake.calls == []


# ================================================================ GDPR
@BOTH
def test_customer_data_includes_the_assignment_and_redaction_deletes_it(shopify):
    client, _fake, service = shopify
    post(client, "vipshop", orders("7001", 2) + orders("7002", 2))
    data = service.customer_data("vipshop", "7001")
    assert data["customer"]["vip"] == vip_doc(GOLD, ANNA)
    assert data["vip_assignment"]["manager_id"] == "anna"
    assert data["vip_assignment"]["manager"] == vip.manager_document(ANNA)
    assert datetime.fromisoformat(data["vip_assignment"]["assigned_at"]) <= datetime.now(UTC)
    assert service.customer_data("vipshop", "7002")["vip_assignment"]["manager_id"] == "bob"
    pseudonym = service.redact_customer("vipshop", "7001")  # processed again at once (no queue bound)
    assert pseudonym and pseudonym.startswith("redacted:")
    assert assignments(service) == {"7002": "bob"}  # nobody to serve: the pseudonym gets no manager
    assert service.customer_view("vipshop", pseudonym)["vip"] == vip_doc(GOLD, None)


# ================================================================ WooCommerce
@pytest.fixture
def woo(ladder_settings, tmp_path):
    with FakeShop() as fake:
        shop = ShopConfig(id="woovip", platform="woocommerce", domain="https://woo.example", webhook_secret="s",
                          api_url=fake.url, consumer_key="ck_test", consumer_secret="cs_test",
                          programme=rules(tmp_path), currency="EUR", vip_managers=(ANNA, BOB),
                          capabilities=WooCommerceAdapter.capabilities)
        app, service = make_app(ladder_settings, shop)
        yield app.test_client(), fake, service


def woo_puts(fake: FakeShop, customer_id: str) -> list[list[dict[str, str]]]:
    return [c.body["meta_data"] for c in fake.calls if c.name == f"PUT /customers/{customer_id}"]


@BOTH
def test_woocommerce_keeps_the_vip_document_in_the_customer_meta(woo):
    client, fake, service = woo
    post(client, "woovip", orders("25", 2) + orders("26", 2))
    gold_anna = vip.document({"params": {"level": "gold", "priority": 2}}, ANNA)
    assert woo_puts(fake, "25") == [[{"key": "loyalty_ladder_tags", "value": "vip-gold"},
                                     {"key": "loyalty_ladder_vip", "value": json.dumps(
                                         gold_anna, sort_keys=True, separators=(",", ":"))}]]
    meta = {m["key"]: m["value"] for m in fake.customers_meta["26"]}
    assert json.loads(meta["loyalty_ladder_vip"]) == vip_doc(GOLD, BOB)
    post(client, "woovip", [refund("25", 1)])  # VIP undone: the tag goes, the meta is emptied
    assert woo_puts(fake, "25")[1:] == [[{"key": "loyalty_ladder_tags", "value": ""},
                                         {"key": "loyalty_ladder_vip", "value": ""}]]
    assert assignments(service) == {"26": "bob"}


@BOTH
def test_woocommerce_carries_an_untagged_vip_as_meta_alone(ladder_settings, tmp_path):
    with FakeShop() as fake:
        shop = ShopConfig(id="woovip", platform="woocommerce", domain="https://woo.example", webhook_secret="s",
                          api_url=fake.url, consumer_key="ck_test", consumer_secret="cs_test",
                          programme=rules(tmp_path, UNTAGGED), currency="EUR", vip_managers=(CAROL,),
                          capabilities=WooCommerceAdapter.capabilities)
        app, _service = make_app(ladder_settings, shop)
        client = app.test_client()
        post(client, "woovip", orders("25", 2))
        (put,) = woo_puts(fake, "25")
        assert [m["key"] for m in put] == ["loyalty_ladder_vip"]
        assert json.loads(put[0]["value"]) == vip_doc(GOLD, CAROL)


# ================================================================ concurrency
@pytest.fixture
def two_vips(engine):
    """Two customers each holding a recorded vip_service award, no manager yet."""
    with engine.begin() as conn:
        for customer_id in ("a", "b"):
            conn.execute(store.awards.insert().values(
                key=f"s/{customer_id}/gold/stage/vip/1", shop_id="s", customer_id=customer_id, reward_id="gold",
                type="vip_service", scope="stage", scope_ref="vip", stage="vip", turn=1, status="delivered",
                reason="reached stage vip (turn 1)", params={"level": "gold"}, value=None, rule_version="v1",
                granted_at=NOW, created_at=NOW, updated_at=NOW))
    return engine


def test_two_customers_choosing_at_once_count_one_after_the_other(two_vips):
    shop = ShopConfig(id="s", platform="generic", vip_managers=(ANNA, BOB))
    chosen: dict[str, Any] = {}

    def second() -> None:
        try:
            with store.begin_write(two_vips) as conn:
                store.lock_customer(conn, "s", "b")
                chosen["b"] = vip.ensure(conn, shop, "b", NOW)
        except Exception as exc:  # noqa: BLE001 - reported below
            chosen["error"] = exc

    with store.begin_write(two_vips) as conn:
        store.lock_customer(conn, "s", "a")
        assert vip.ensure(conn, shop, "a", NOW) == ("s/a/gold/stage/vip/1",)
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # waits for the first choice (advisory lock / SQLite's write lock)
    thread.join(timeout=10)
    assert "error" not in chosen and chosen["b"] == ("s/b/gold/stage/vip/1",)
    with two_vips.connect() as conn:
        assert vip.loads(conn, "s") == {"anna": 1, "bob": 1}
        assert vip.current(conn, "s", "b", shop.vip_managers, NOW) == vip_doc({"level": "gold", "priority": 1}, BOB)


def test_held_means_recorded_held_and_not_expired(two_vips):
    shop = ShopConfig(id="s", platform="generic", vip_managers=(ANNA,))
    aw = store.awards
    with store.begin_write(two_vips) as conn:
        conn.execute(aw.update().where(aw.c.customer_id == "a").values(
            params={"level": "gold", "expires_at": iso(NOW - timedelta(days=1))}))
        conn.execute(aw.update().where(aw.c.customer_id == "b").values(status="historical"))
        assert vip.ensure(conn, shop, "a", NOW) == () and vip.ensure(conn, shop, "b", NOW) == ()
        assert vip.current(conn, "s", "a", shop.vip_managers, NOW - timedelta(days=2)) == vip_doc(
            {"level": "gold", "priority": 1}, None)  # not expired then, but no manager assigned
        for status in ("ended", "reversed", "withheld"):
            conn.execute(aw.update().where(aw.c.customer_id == "b").values(status=status))
            assert vip.held(conn, "s", "b", NOW) is None
        conn.execute(aw.update().where(aw.c.customer_id == "b").values(status="needs_manual_action"))
        assert vip.ensure(conn, shop, "b", NOW) == ("s/b/gold/stage/vip/1",)
        assert vip.ensure(conn, shop, "b", NOW) == ()  # idempotent
        assert vip.loads(conn, "s") == {"anna": 1}


# ================================================================ the shops file
def write_shops(tmp_path: Path, managers: str) -> Path:
    path = tmp_path / "shops.yaml"
    path.write_text(f"- id: demo\n  platform: generic\n  vip_managers: {managers}\n", encoding="utf-8")
    return path


def test_the_shops_file_lists_managers_in_order(tmp_path):
    path = write_shops(tmp_path, "[{id: anna, name: Anna K., email: anna@shop.example}, {id: bob, name: Bob M.}]")
    assert load_shops(path)["demo"].vip_managers == (ANNA, VipManager("bob", "Bob M.", None))


@pytest.mark.parametrize(("managers", "key", "message"), [
    ("[{id: anna, name: A}, {id: bob, name: B}, {id: anna, name: C}]", "vip_managers.2.id",
     "duplicate manager id 'anna'"),
    ("[{id: anna, name: A, email: not-an-address}]", "vip_managers.0.email", "Not a valid email address"),
    ("[{id: anna}]", "vip_managers.0.name", "Missing data for required field"),
    ("[{id: anna, name: A, phone: '1'}]", "vip_managers.0.phone", "unknown key"),
    ("[{id: 'anna k', name: A}]", "vip_managers.0.id", "must be 1 to 64 letters"),
    ("anna", "vip_managers", "Not a valid list"),
])
def test_a_bad_manager_list_is_a_clear_error(tmp_path, managers, key, message):
    with pytest.raises(ConfigError) as caught:
        load_shops(write_shops(tmp_path, managers))
    assert key in caught.value.errors and any(message in m for m in caught.value.errors[key]), caught.value.errors
    assert f"shop #1 (id 'demo'): {key}: " in str(caught.value)


# ================================================================ the adapters' exact calls
SHOPIFY_API = "https://vip.myshopify.com"
GRAPHQL = f"{SHOPIFY_API}/admin/api/2025-07/graphql.json"
WOO_REST = "https://woo.example/wp-json/wc/v3"


def vip_delivery(action: str, params: dict[str, Any], vip_now: dict[str, Any] | None,
                 customer_id: str = "207119551") -> Delivery:
    return Delivery(pk=1, action=action, award={"key": f"s/{customer_id}/gold/stage/vip/1", "reward": "gold",
                                                 "type": "vip_service", "params": params,
                                                 "customer_id": customer_id},
                    customer={"customer_id": customer_id, "email": "x@example.com", "vip": vip_now})


def graphql(operation: str, variables: dict[str, Any]):
    def match(request) -> tuple[bool, str]:
        body = json.loads(request.body)
        name = body["query"].split("(", 1)[0].split()[-1]
        if name != operation or body["variables"] != variables:
            return False, f"{name} {body['variables']!r} != {operation} {variables!r}"
        return True, ""
    return match


@responses.activate(assert_all_requests_are_fired=True)
def test_shopify_sets_and_deletes_the_vip_metafield():
    shop = ShopConfig(id="s", platform="shopify", domain="vip.myshopify.com", webhook_secret="x",
                      api_url=SHOPIFY_API, api_version="2025-07", access_token="shpat_x")
    adapter = ShopifyAdapter(shop, timeout=3)
    doc = vip_doc(GOLD, ANNA)
    owner = {"ownerId": gid("207119551"), "namespace": "loyalty_ladder", "key": "vip"}
    value = '{"level":"gold","manager":{"email":"anna@shop.example","id":"anna","name":"Anna K."},"priority":2}'
    responses.post(GRAPHQL, match=[graphql("metafieldsSet", {"metafields": [{**owner, "type": "json",
                                                                             "value": value}]})],
                   json={"data": {"metafieldsSet": {"metafields": [{"id": "gid://shopify/Metafield/1"}],
                                                    "userErrors": []}}})
    responses.post(GRAPHQL, match=[graphql("metafieldsDelete", {"metafields": [owner]})],
                   json={"data": {"metafieldsDelete": {"deletedMetafields": [owner], "userErrors": []}}})
    granted = adapter.deliver(vip_delivery("grant", {"level": "gold", "priority": 2}, doc))
    assert granted.external_id == gid("207119551") and "metafield loyalty_ladder.vip set" in granted.detail
    revoked = adapter.deliver(vip_delivery("revoke", {"level": "gold", "priority": 2}, None))
    assert "deleted" in revoked.detail
    with pytest.raises(NotSupported):  # a guest has no account to keep it on
        adapter.deliver(vip_delivery("grant", {"level": "gold"}, doc, customer_id="guest:0123456789abcdef"))


@responses.activate(assert_all_requests_are_fired=True)
def test_woocommerce_writes_the_vip_meta_once_and_not_again():
    shop = ShopConfig(id="w", platform="woocommerce", domain="https://woo.example", webhook_secret="x",
                      api_url="https://woo.example", consumer_key="ck", consumer_secret="cs")
    adapter = WooCommerceAdapter(shop, timeout=3)
    doc = vip_doc(GOLD, ANNA)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    responses.get(f"{WOO_REST}/customers/25", json={"id": 25, "meta_data": []})
    responses.put(f"{WOO_REST}/customers/25", json={"id": 25},
                  match=[responses.matchers.json_params_matcher(
                      {"meta_data": [{"key": "loyalty_ladder_vip", "value": text}]})])
    assert "written" in adapter.deliver(vip_delivery("grant", {"level": "gold"}, doc, customer_id="25")).detail
    responses.get(f"{WOO_REST}/customers/26", json={"id": 26, "meta_data": [{"key": "loyalty_ladder_vip",
                                                                             "value": text}]})
    # the same value already there: no PUT (none is registered: one would fail)
    assert "already written" in adapter.deliver(vip_delivery("grant", {"level": "gold"}, doc, "26")).detail
