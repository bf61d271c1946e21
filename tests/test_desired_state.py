"""Privileges as desired state: a tag delivery makes the shop's ladder tags exactly those the
customer holds — the desired ones added, the managed ones not desired removed, every other tag
left alone — so a grant retried after its own end adds nothing.

Against the fake Shopify and WooCommerce (real servers on 127.0.0.1), through each adapter."""
from __future__ import annotations

import pytest

from loyalty_ladder import vip
from loyalty_ladder.adapters.base import Delivery
from loyalty_ladder.adapters.registry import adapter_for
from loyalty_ladder.shop import ShopConfig

from .fakeshop import FakeShop, graphql_calls

GID = "gid://shopify/Customer/7001"


def tag_award(tag: str, key: str = "s/7001/tag-x/privilege/x/1") -> dict:
    return {"key": key, "reward": "tag-x", "type": "tag", "customer_id": "7001", "params": {"tag": tag}}


def delivery(action: str, tag: str, desired: list[str], managed: list[str]) -> Delivery:
    return Delivery(pk=1, action=action, award=tag_award(tag), customer={
        "customer_id": "7001", "email": "ana@example.com", "ladder_tags": {"desired": desired, "managed": managed}})


@pytest.fixture
def shopify():
    with FakeShop() as fake:
        shop = ShopConfig(id="s", platform="shopify", domain="s.myshopify.com", webhook_secret="x", api_url=fake.url,
                          api_version="2025-07", access_token=fake.access_token, capabilities=("tags",))
        yield fake, adapter_for(shop)


def mutations(fake):
    return [(c.name, sorted(c.body["tags"])) for c in fake.calls if c.name in ("tagsAdd", "tagsRemove")]


def test_a_grant_retried_after_its_own_end_adds_nothing(shopify):
    fake, adapter = shopify
    fake.customer_tags[GID] = {"newsletter"}
    # the tag ended before this (stale) grant ran: the customer holds no ladder tag now
    result = adapter.deliver(delivery("grant", "ladder-regular", desired=[], managed=["ladder-regular"]))
    assert mutations(fake) == [] and fake.customer_tags[GID] == {"newsletter"}
    assert "already as desired" in result.detail


def test_a_climb_adds_the_new_tag_and_removes_the_old_one_once(shopify):
    fake, adapter = shopify
    fake.customer_tags[GID] = {"newsletter", "ladder-potential"}
    state = {"desired": ["ladder-first-purchase"], "managed": ["ladder-first-purchase", "ladder-potential"]}
    adapter.deliver(delivery("grant", "ladder-first-purchase", **state))
    assert mutations(fake) == [("tagsAdd", ["ladder-first-purchase"]), ("tagsRemove", ["ladder-potential"])]
    # the end of the old tag, delivered next, finds the shop right: no call
    adapter.deliver(delivery("revoke", "ladder-potential", **state))
    assert len(mutations(fake)) == 2
    assert fake.customer_tags[GID] == {"newsletter", "ladder-first-purchase"}  # the shop's own tag stays
    assert [c["id"] for c in graphql_calls(fake, "customerTags")] == [GID, GID]


def test_a_customer_shopify_does_not_know_is_refused_clearly(shopify):
    from loyalty_ladder.errors import Rejected

    fake, adapter = shopify
    fake.unknown_customers.add("7001")
    with pytest.raises(Rejected, match="knows no customer"):
        adapter.deliver(delivery("grant", "ladder-regular", desired=["ladder-regular"], managed=["ladder-regular"]))
    assert mutations(fake) == []


def test_woocommerce_writes_the_desired_tags_and_keeps_the_others():
    with FakeShop() as fake:
        shop = ShopConfig(id="w", platform="woocommerce", domain="https://w.example", webhook_secret="x",
                          api_url=fake.url, consumer_key="ck_test", consumer_secret="cs_test", capabilities=("tags",))
        fake.customers_meta["7001"] = [{"key": "loyalty_ladder_tags", "value": "wholesale,ladder-potential"}]
        adapter = adapter_for(shop)
        state = {"desired": ["ladder-first-purchase"], "managed": ["ladder-first-purchase", "ladder-potential"]}
        adapter.deliver(delivery("grant", "ladder-first-purchase", **state))
        adapter.deliver(delivery("revoke", "ladder-potential", **state))  # already right: no PUT
        puts = [c for c in fake.calls if c.name.startswith("PUT /customers")]
        assert [c.body for c in puts] == [{"meta_data": [{"key": "loyalty_ladder_tags",
                                                          "value": "wholesale,ladder-first-purchase"}]}]


LAPSING_VIP = """\
programme:
  name: VIP lapse
  currency: EUR
stages:
  - id: member
  - id: vip
    when: {fact: orders_count, gte: 2}
    lapse_after_days: 30
rewards:
  - id: gold
    type: vip_service
    on: {stage: vip}
    params: {level: gold, tag: vip-gold}
"""


def test_a_lapsed_vip_is_suspended_taken_back_once_and_restored_by_the_next_order(ladder_settings, tmp_path):
    from datetime import UTC, datetime, timedelta

    from .test_shop_e2e import make_app
    from .test_vip import iso, post, rules, run_due, shopify_shop, tag_calls

    now = datetime.now(UTC).replace(microsecond=0)
    with FakeShop() as fake:
        app, service = make_app(ladder_settings, shopify_shop(fake, rules(tmp_path, LAPSING_VIP)))
        client = app.test_client()
        events = [{"id": "c", "type": "customer_created", "customer_id": "7001", "occurred_at": iso(now - timedelta(days=40)),
                   "customer": {"email": "a@example.com"}}]
        events += [{"id": f"o{n}", "type": "order_paid", "customer_id": "7001", "occurred_at": iso(now - timedelta(days=d)),
                    "order": {"id": f"o{n}", "total": "50.00", "currency": "EUR"}} for n, d in enumerate((39, 38))]
        post(client, "vipshop", events)  # VIP at day -38, lapsed at day -8: suspended, never carried
        run_due(service)
        doc = service.customer_view("vipshop", "7001")
        [gold] = [r for r in doc["rewards"] if r["reward"] == "gold"]
        assert gold["status"] == "suspended" and gold["reason"] == "suspended: the customer lapsed in stage vip"
        assert doc["vip"] is None
        assert tag_calls(fake, "7001") == []  # paused before it was ever delivered: nothing to take back
        post(client, "vipshop", [{"id": "o9", "type": "order_paid", "customer_id": "7001", "occurred_at": iso(now),
                                  "order": {"id": "o9", "total": "50.00", "currency": "EUR"}}])
        run_due(service)
        [gold] = [r for r in service.customer_view("vipshop", "7001")["rewards"] if r["reward"] == "gold"]
        assert gold["status"] == "delivered"  # restored by the order: a new turn
        assert tag_calls(fake, "7001") == [("tagsAdd", ["vip-gold"])]
        manager = service.customer_view("vipshop", "7001")["vip"]["manager"]["id"]
        # the next lapse takes it back once, and it stays taken back (a month on: run at that time)
        later = now + timedelta(days=31)
        service.process_customer("vipshop", "7001", as_of=later)
        for _ in range(3):
            for pk in pending(service):
                service.run_delivery(pk, now=later)
        assert tag_calls(fake, "7001") == [("tagsAdd", ["vip-gold"]), ("tagsRemove", ["vip-gold"])]
        assert fake.customer_tags[GID] == set() and pending(service) == []
        doc = service.customer_view("vipshop", "7001")
        [gold] = [r for r in doc["rewards"] if r["reward"] == "gold"]
        assert gold["status"] == "suspended" and doc["vip"] is None
        # no VIP while lapsed, but their manager waits for them: the same one when restored
        with service.db.connect() as conn:
            assert vip.assignment(conn, "vipshop", "7001")["manager_id"] == manager


def pending(service) -> list[int]:
    import sqlalchemy as sa

    from loyalty_ladder import store

    with service.db.connect() as conn:
        return [r.pk for r in conn.execute(sa.select(store.deliveries.c.pk).where(
            store.deliveries.c.status == "pending", store.deliveries.c.next_attempt_at.is_not(None)))]


# ------------------------------------------------------------------ any order of webhooks, the same shop state
def _webhooks_of(cid: int, t0):
    """The e2e journey (customer, checkout, three paid orders, a partial refund) for customer ``cid``."""
    import copy

    from .test_shop_e2e import shopify_webhooks

    hooks = []
    for topic, payload in shopify_webhooks(t0):
        payload = copy.deepcopy(payload)
        if topic == "customers/create":
            payload.update(id=cid, admin_graphql_api_id=f"gid://shopify/Customer/{cid}", email=f"{cid}@example.com")
        elif topic == "checkouts/create":
            payload["token"] = f"chk-{cid}"
            payload["customer"] = {**payload["customer"], "id": cid, "email": f"{cid}@example.com"}
            payload["email"] = f"{cid}@example.com"
        elif topic == "orders/paid":
            order_id = payload["id"] - 900000 + cid * 10
            payload.update(id=order_id, admin_graphql_api_id=f"gid://shopify/Order/{order_id}",
                           email=f"{cid}@example.com")
            payload["customer"] = {**payload["customer"], "id": cid, "email": f"{cid}@example.com"}
        else:  # refunds/create
            order_id = payload["order_id"] - 900000 + cid * 10
            payload.update(id=payload["id"] + cid, order_id=order_id)
            payload["transactions"] = [{**t, "order_id": order_id} for t in payload["transactions"]]
        hooks.append((topic, payload))
    return hooks


def test_property_any_order_of_webhooks_leaves_the_shop_with_the_tag_of_the_stage(shopify_app):
    """Replaying and reordering a customer's webhooks: the fake Shopify ends with exactly the
    customer's current stage tag, each ladder tag added at most once and removed at most once."""
    import itertools
    from datetime import timedelta

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from .test_shop_e2e import NOW, post_shopify

    client, fake = shopify_app
    ids = itertools.count(7100)

    @settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
    @given(order=st.permutations(range(12)))
    def run(order):
        cid = next(ids)
        for n in (1, 2, 3):
            fake.orders[str(cid * 10 + n)] = (str(cid), f"{cid}@example.com")
        hooks = _webhooks_of(cid, NOW - timedelta(days=100)) * 2
        for i in order:
            topic, payload = hooks[i]
            assert post_shopify(client, topic, payload, f"wh-{cid}-{i % 6}").status_code == 200
        gid = f"gid://shopify/Customer/{cid}"
        assert fake.customer_tags[gid] == {"ladder-regular"}
        for name in ("tagsAdd", "tagsRemove"):
            changed = [t for c in fake.calls if c.name == name and c.body["id"] == gid for t in c.body["tags"]]
            assert len(changed) == len(set(changed)), (name, changed)

    run()


@pytest.fixture
def shopify_app(ladder_settings, tmp_path):
    from .test_shop_e2e import SECRET, make_app, programme_in

    with FakeShop() as fake:
        shop = ShopConfig(id="e2e", platform="shopify", domain="e2e.myshopify.com", webhook_secret=SECRET,
                          api_url=fake.url, api_version="2025-07", access_token=fake.access_token,
                          programme=programme_in("HKD", tmp_path), currency="HKD", capabilities=("discount_codes", "tags"))
        app, _service = make_app(ladder_settings, shop)
        yield app.test_client(), fake
