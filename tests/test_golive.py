"""Shadow to live: a shop watched in ``mode: shadow`` collects awards that never reach the shop;
switching the shops file to ``mode: live`` and starting a service makes those awards
``historical`` (their deliveries cancelled, nothing sent) and pays only what follows.  The shop's
API is played by ``responses``: any call it does not expect fails the test."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
import responses
import sqlalchemy as sa

from loyalty_ladder import golive, store
from loyalty_ladder.clock import iso, utcnow
from loyalty_ladder.service import LadderService
from loyalty_ladder.shop import ShopConfig

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

GRAPHQL = "https://s.myshopify.com/admin/api/2025-07/graphql.json"
COUPONS = "https://w.example/wp-json/wc/v3/coupons"


def make_shop(platform: str, mode: str) -> ShopConfig:
    if platform == "shopify":
        return ShopConfig(id="s", platform="shopify", domain="s.myshopify.com", webhook_secret="x",
                          api_url="https://s.myshopify.com", api_version="2025-07", access_token="shpat_x",
                          capabilities=("discount_codes", "tags"), mode=mode)
    return ShopConfig(id="s", platform="woocommerce", domain="https://w.example", webhook_secret="x",
                      api_url="https://w.example", consumer_key="ck", consumer_secret="cs",
                      capabilities=("discount_codes",), mode=mode)


class Shop:
    """The shop's API as ``responses`` plays it: every call recorded by what it creates."""

    def __init__(self, mock: responses.RequestsMock):
        self.created: list[str] = []  # "discount <code>", "tag <tag>", "untag <tag>"
        self.tags: dict[str, set[str]] = {}  # the tags each customer carries
        self._ids = iter(range(1001, 2000))
        mock.add_callback(responses.POST, GRAPHQL, callback=self._graphql)
        mock.add_callback(responses.POST, COUPONS, callback=self._coupon)

    def _graphql(self, request):
        body = json.loads(request.body)
        variables = body.get("variables") or {}
        if re.search(r"query\s+customerTags", body["query"]):  # the tags the customer carries
            tags = sorted(self.tags.get(variables["id"], ()))
            return 200, {}, json.dumps({"data": {"customer": {"id": variables["id"], "tags": tags}}})
        name = re.search(r"mutation\s+(\w+)", body["query"]).group(1)
        if name == "discountCodeBasicCreate":
            self.created.append(f"discount {variables['basicCodeDiscount']['code']}")
            node = {"id": f"gid://shopify/DiscountCodeNode/{next(self._ids)}"}
            return 200, {}, json.dumps({"data": {name: {"codeDiscountNode": node, "userErrors": []}}})
        if name in ("tagsAdd", "tagsRemove"):
            verb = "tag" if name == "tagsAdd" else "untag"
            self.created.extend(f"{verb} {tag}" for tag in variables["tags"])
            held = self.tags.setdefault(variables["id"], set())
            (held.update if name == "tagsAdd" else held.difference_update)(variables["tags"])
            return 200, {}, json.dumps({"data": {name: {"node": {"id": variables["id"]}, "userErrors": []}}})
        return 400, {}, json.dumps({"errors": f"unexpected {name}"})

    def _coupon(self, request):
        self.created.append(f"discount {json.loads(request.body)['code']}")
        return 201, {}, json.dumps({"id": next(self._ids)})


@pytest.fixture
def shop_api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield Shop(mock)


@pytest.fixture
def start(ladder_settings):
    """Start a service on the one database with the shops file saying ``mode``, as a restart does."""
    started: list[LadderService] = []

    def _start(platform: str, mode: str) -> LadderService:
        service = LadderService(ladder_settings, shops={"s": make_shop(platform, mode)})
        started.append(service)
        return service

    yield _start
    for service in started:
        service.db.dispose()


def created(customer: str, when: datetime) -> dict:
    return {"id": f"{customer}-created", "type": "customer_created", "customer_id": customer,
            "occurred_at": iso(when), "customer": {"email": f"{customer}@example.com", "accepts_marketing": True}}


def paid(customer: str, n: int, when: datetime) -> dict:
    return {"id": f"{customer}-paid-{n}", "type": "order_paid", "customer_id": customer, "occurred_at": iso(when),
            "order": {"id": f"{customer}-o{n}", "total": "80.00", "currency": "EUR", "discount_codes": [],
                      "discount_total": "0.00"}}


def deliver_due(service: LadderService) -> None:
    """What the deliveries lane does: run every due delivery (and what each arms) until none is due."""
    for _ in range(10):
        due = service.due_deliveries()
        if not due:
            return
        for pk in due:
            service.run_delivery(pk)
    raise AssertionError("deliveries keep coming due")


def awards(service: LadderService) -> dict[str, dict]:
    with service.db.connect() as conn:
        return {r["key"]: dict(r) for r in conn.execute(
            sa.select(store.awards).where(store.awards.c.shop_id == "s")).mappings()}


def deliveries(service: LadderService, keys=None) -> list[dict]:
    t = store.deliveries
    query = sa.select(t).where(t.c.shop_id == "s")
    if keys is not None:
        query = query.where(t.c.award_key.in_(list(keys)))
    with service.db.connect() as conn:
        return [dict(r) for r in conn.execute(query.order_by(t.c.pk)).mappings()]


def customers(service: LadderService) -> list[dict]:
    with service.db.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(store.customers).where(
            store.customers.c.shop_id == "s")).mappings()]


def shop_row(service: LadderService):
    with service.db.connect() as conn:
        return conn.execute(sa.select(store.shops).where(store.shops.c.shop_id == "s")).one()


def audit_rows(service: LadderService) -> list[dict]:
    """The shop's audit rows of mode switches (a programme's activation has its own)."""
    t = store.audit_log
    with service.db.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(t).where(
            t.c.shop_id == "s", t.c.action.in_([golive.ACTION_LIVE, golive.ACTION_SHADOW])).order_by(t.c.pk)).mappings()]


def award_log(service: LadderService, key: str) -> list[dict]:
    t = store.award_log
    with service.db.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(t).where(t.c.award_key == key).order_by(t.c.pk)).mappings()]


@pytest.mark.parametrize("platform", ["shopify", "woocommerce"])
def test_shadow_awards_become_historical_and_only_what_follows_is_paid(start, shop_api, platform):
    # 1. watched in shadow mode: awards decided, their deliveries `shadow`, the shop hears nothing
    shadow = start(platform, "shadow")
    shadow.accept_events("s", [created("7001", utcnow() - timedelta(days=2)), created("7002", utcnow())])
    deliver_due(shadow)
    decided = awards(shadow)
    # decided in shadow mode, and saying so (an integrator never takes a shadow award for a due one)
    assert decided and {a["status"] for a in decided.values()} == {"shadow"}
    assert {d["status"] for d in deliveries(shadow)} == {"shadow"}
    assert shop_row(shadow).mode == "shadow" and shop_row(shadow).live_from is None
    assert shop_api.created == []

    # 2. the shops file says live: the next service to start switches the shop, now
    before = utcnow()
    live = start(platform, "live")
    row = shop_row(live)
    assert row.mode == "live" and before <= row.live_from <= utcnow()
    after_switch = awards(live)
    assert set(after_switch) == set(decided)
    went_live = f"decided in shadow mode; the shop went live at {iso(row.live_from)}"
    for key, award in after_switch.items():
        assert award["status"] == "historical", key
        assert award["reason"].endswith("; before the shop went live, recorded only")
        assert award_log(live, key)[-1]["status"] == "historical"
        assert award_log(live, key)[-1]["reason"] == went_live
    cancelled = deliveries(live)
    assert cancelled and {d["status"] for d in cancelled} == {"cancelled"}
    assert all(d["last_error"] == f"{went_live}: never delivered" and d["next_attempt_at"] is None
               for d in cancelled)
    [entry] = audit_rows(live)
    assert (entry["action"], entry["author"], entry["target"]) == ("shop_went_live", "configuration", "s")
    assert entry["detail"]["historical_awards"] == len(decided)
    assert entry["detail"]["cancelled_deliveries"] == len(cancelled)
    assert entry["detail"]["live_from"] == iso(row.live_from)

    # 3. re-folds: what was decided in shadow mode stays history, but the privilege each customer
    #    holds now — the potential stage tag — is delivered from the switch on (the switch made
    #    every customer on the ladder due), once
    assert all(c["next_wake_at"] is not None for c in customers(live))
    for customer in ("7001", "7002"):
        live.process_customer("s", customer)
    deliver_due(live)
    held = {k for k, a in decided.items() if a["reward_id"] == "tag-potential"}
    assert len(held) == 2
    now_live = awards(live)
    carried = "delivered" if platform == "shopify" else "needs_manual_action"  # this WooCommerce has no tags
    assert {k: a["status"] for k, a in now_live.items()} == {k: carried if k in held else "historical" for k in decided}
    assert all("held when the shop went live: delivered from now on" in [r["reason"] for r in award_log(live, k)]
               for k in held)
    assert shop_api.created == (["tag ladder-potential"] * 2 if platform == "shopify" else [])
    rows = deliveries(live)
    for customer in ("7001", "7002"):  # and again: nothing planned, nothing sent
        live.process_customer("s", customer)
    deliver_due(live)
    assert {k: a["status"] for k, a in awards(live).items()} == {k: a["status"] for k, a in now_live.items()}
    assert {k: a for k, a in awards(live).items() if k not in held} == {k: a for k, a in now_live.items()
                                                                       if k not in held}
    assert [(d["pk"], d["status"]) for d in deliveries(live)] == [(d["pk"], d["status"]) for d in rows]
    sent = list(shop_api.created)
    assert sent == (["tag ladder-potential"] * 2 if platform == "shopify" else [])

    # 4. an order after the switch is decided and paid
    live.accept_events("s", [paid("7001", 1, utcnow())])
    deliver_due(live)
    new = {k: a for k, a in awards(live).items() if k not in decided}
    assert new, "the order earned nothing"
    discounts = {k: a for k, a in new.items() if a["type"] == "discount"}
    # a first order passes Visitor in the same instant: the rewards of First purchase are granted
    assert {a["reward_id"] for a in discounts.values()} == {"second-order"}
    assert {a["status"] for a in discounts.values()} == {"delivered"}
    codes = sorted(f"discount {a['params']['code']}" for a in discounts.values())
    assert sorted(c for c in shop_api.created if c.startswith("discount")) == codes  # each once, nothing old
    left = {k for k in held if k.startswith("s/7001/")}  # 7001 left potential: its tag ended
    if platform == "shopify":
        assert shop_api.created[len(sent):].count("tag ladder-first-purchase") == 1
        assert shop_api.created[len(sent):].count("untag ladder-potential") == 1
        assert {a["status"] for a in new.values()} == {"delivered"}
    assert {k: a["status"] for k, a in awards(live).items() if k in decided} == {
        **dict.fromkeys(decided, "historical"), **dict.fromkeys(held, carried), **dict.fromkeys(left, "ended")}


def test_a_restart_in_the_same_mode_changes_nothing(start):
    first = start("shopify", "shadow")
    first.accept_events("s", [created("7001", utcnow())])
    start("shopify", "live")
    row, audited = shop_row(first), audit_rows(first)
    again = start("shopify", "live")
    assert shop_row(again) == row and audit_rows(again) == audited
    assert golive.sync_modes(again.db, again.shops) == []


def test_first_sight_records_the_mode_only(start, ladder_settings):
    shadow = start("shopify", "shadow")
    assert (shop_row(shadow).mode, shop_row(shadow).live_from) == ("shadow", None)
    assert audit_rows(shadow) == []

    # a shop first seen live keeps the live_from an import gave it (and nothing is rewritten)
    service = LadderService(ladder_settings, shops={"w": make_shop("woocommerce", "live")})
    imported = utcnow() - timedelta(days=3)
    with store.begin_write(service.db) as conn:
        conn.execute(store.shops.update().where(store.shops.c.shop_id == "w").values(mode=None, live_from=imported))
    [change] = golive.sync_modes(service.db, service.shops)
    assert (change.old, change.new, change.live_from) == (None, "live", imported)
    with service.db.connect() as conn:
        row = conn.execute(sa.select(store.shops).where(store.shops.c.shop_id == "w")).one()
    assert (row.mode, row.live_from) == ("live", imported)
    service.db.dispose()


def test_live_to_shadow_and_back_pays_neither_the_shadow_awards_nor_twice(start, shop_api):
    live = start("shopify", "live")
    live.accept_events("s", [created("7001", utcnow() - timedelta(days=1))])
    deliver_due(live)
    paid_first = {k: a for k, a in awards(live).items()}
    assert {a["status"] for a in paid_first.values()} == {"delivered"}
    sent = list(shop_api.created)
    assert sent

    shadow = start("shopify", "shadow")
    assert shop_row(shadow).mode == "shadow" and shop_row(shadow).live_from is None
    assert audit_rows(shadow)[-1]["action"] == "shop_went_shadow"
    shadow.accept_events("s", [paid("7001", 1, utcnow())])
    deliver_due(shadow)
    watched = {k for k in awards(shadow) if k not in paid_first}
    assert watched and shop_api.created == sent

    again = start("shopify", "live")
    now_live = awards(again)
    # the customer left potential in shadow mode: its tag ended then (semantics 2), the rest stands
    left = {k for k in paid_first if "/tag-potential/" in k}
    assert left and {k: a["status"] for k, a in now_live.items() if k in paid_first} == {
        **dict.fromkeys(paid_first, "delivered"), **dict.fromkeys(left, "ended")}
    assert {now_live[k]["status"] for k in watched} == {"historical"}
    assert {d["status"] for d in deliveries(again, watched)} == {"cancelled"}
    deliver_due(again)
    assert shop_api.created == sent
    assert [r["action"] for r in audit_rows(again)] == ["shop_went_shadow", "shop_went_live"]
    # the customer is due at the switch: the tag they hold now is delivered, and the one that
    # ended in shadow mode — never taken back then — is removed (privileges as desired state)
    again.process_customer("s", "7001")
    deliver_due(again)
    assert shop_api.created[len(sent):] == ["tag ladder-first-purchase", "untag ladder-potential"]
    assert shop_api.tags["gid://shopify/Customer/7001"] == {"ladder-first-purchase"}


def test_live_from_only_moves_forward(start):
    shadow = start("shopify", "shadow")
    later = utcnow() + timedelta(days=30)
    with store.begin_write(shadow.db) as conn:  # e.g. an import with a --live-from in the future
        conn.execute(store.shops.update().where(store.shops.c.shop_id == "s").values(live_from=later))
    live = start("shopify", "live")
    assert shop_row(live).live_from == later and shop_row(live).mode == "live"


def test_services_starting_at_once_switch_the_shop_once(start, ladder_settings):
    import threading

    shadow = start("shopify", "shadow")
    shadow.accept_events("s", [created("7001", utcnow())])
    shops = {"s": make_shop("shopify", "live")}
    engines = [store.make_engine(ladder_settings.database_url) for _ in range(4)]
    results: list = []
    barrier = threading.Barrier(len(engines))

    def run(engine):
        barrier.wait()
        results.append(golive.sync_modes(engine, shops))

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for engine in engines:
        engine.dispose()
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    assert [r["action"] for r in audit_rows(shadow)] == ["shop_went_live"]
    assert {a["status"] for a in awards(shadow).values()} == {"historical"}
