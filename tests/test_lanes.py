"""The lanes: a shop whose API hangs delays neither another shop's deliveries nor anybody's
events; each shop's deliveries are rate-limited; several lanes on PostgreSQL share the work."""
from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from loyalty_ladder import lanes, store
from loyalty_ladder.service import LadderService
from loyalty_ladder.shop import ShopConfig

NOW = datetime.now(UTC)


def _shopify(shop_id: str) -> ShopConfig:
    return ShopConfig(id=shop_id, platform="shopify", domain=f"{shop_id}.myshopify.com", webhook_secret="x",
                      api_url=f"https://{shop_id}.myshopify.com", api_version="2025-07", access_token="shpat_x",
                      capabilities=("discount_codes", "tags"))


SHOPS = {"slow": _shopify("slow"), "fast": _shopify("fast"), "default": ShopConfig(id="default", platform="generic")}


def _subscribed(customer: str) -> dict:
    return {"id": f"{customer}-created", "type": "customer_created", "customer_id": customer,
            "occurred_at": (NOW - timedelta(days=1)).isoformat(),
            "customer": {"email": f"{customer}@example.com", "accepts_marketing": True}}


@pytest.fixture
def service(ladder_settings):
    made = LadderService(ladder_settings, shops=SHOPS)
    made.bind_queue(lambda *_: None, lambda *_: None)  # as the web process: the lanes find the rows
    yield made
    made.db.dispose()


def _wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _stage(service, shop: str, customer: str) -> str | None:
    with service.db.connect() as conn:
        return conn.execute(sa.select(store.customers.c.stage).where(
            store.customers.c.shop_id == shop, store.customers.c.customer_id == customer)).scalar()


def test_a_hanging_shop_api_delays_only_that_shops_deliveries(service, monkeypatch):
    hang = threading.Event()
    started: dict[str, float] = {}
    shop_of: dict[int, str] = {}

    def run_delivery(pk, now=None):
        with service.db.connect() as conn:
            shop_of[pk] = conn.execute(sa.select(store.deliveries.c.shop_id)
                                       .where(store.deliveries.c.pk == pk)).scalar_one()
        started.setdefault(shop_of[pk], time.monotonic())
        if shop_of[pk] == "slow":
            hang.wait(10)  # the slow shop's API does not answer
        with store.begin_write(service.db) as conn:  # stand-in for the shop's success
            conn.execute(store.deliveries.update().where(store.deliveries.c.pk == pk).values(status="delivered"))

    monkeypatch.setattr(service, "run_delivery", run_delivery)
    running = lanes.start_lanes(service)
    try:
        service.accept_events("slow", _subscribed("s-1"))
        assert _wait(lambda: "slow" in started, 3), "the slow shop's delivery never started"
        t0 = time.monotonic()
        service.accept_events("fast", _subscribed("f-1"))
        service.accept_events("default", _subscribed("g-1"))
        assert _wait(lambda: _stage(service, "default", "g-1") == "potential", 1.5), \
            "an event waited behind a hanging shop API"
        assert _wait(lambda: "fast" in started, 3), "another shop's delivery waited behind the hanging one"
        assert started["fast"] - t0 < 3
    finally:
        hang.set()
        lanes.stop_lanes(running)


def test_one_shops_deliveries_run_in_order_at_the_configured_rate(service, monkeypatch):
    calls: list[float] = []
    monkeypatch.setattr(service, "run_delivery", lambda pk, now=None: calls.append(time.monotonic()))
    lane = lanes.DeliveryLane(service, poll_seconds=0.05, workers=2, rate_per_shop=10.0)
    lane._run_shop("fast", [1, 2, 3, 4, 5])
    lane.stop()
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(calls) == 5 and min(gaps) >= 0.095  # at most 10 calls a second to one shop


@pytest.mark.postgres
def test_on_postgresql_a_claim_is_held_by_one_process_at_a_time(pg_engine):
    with (lanes.claim(pg_engine, "customer", "default", "c-1") as first,
          lanes.claim(pg_engine, "customer", "default", "c-1") as second,
          lanes.claim(pg_engine, "customer", "default", "c-2") as other):
        assert (first, second, other) == (True, False, True)
    with lanes.claim(pg_engine, "customer", "default", "c-1") as again:
        assert again  # released at the end of the block


def test_a_step_that_fails_is_logged_and_the_lane_goes_on(service, monkeypatch, caplog):
    calls = []

    def boom():
        calls.append(1)
        raise RuntimeError("a bug in one step")

    lane = lanes.LiveLane(service, poll_seconds=0.01)
    monkeypatch.setattr(lane, "step", boom)
    lane.start()
    assert _wait(lambda: len(calls) >= 3, 2)
    assert lane.stop() and "a step failed" in caplog.text
