"""Under load, on loopback: never a 500, and every accepted event applied exactly once.

A real threaded server (the app with its live and deliveries lanes, as ``ladder serve`` runs it)
on 127.0.0.1; 32 client threads post events while the live lane folds a customer with 1,000
orders.  Bounded in count and time; SQLite (the embedded default) and PostgreSQL.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
import sqlalchemy as sa
from werkzeug.serving import make_server

from loyalty_ladder import store
from loyalty_ladder.app import EXTENSION, create_app
from loyalty_ladder.lanes import start_lanes, stop_lanes

from .conftest import ADMIN_TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)]

WRITERS = 32
REQUESTS_PER_WRITER = 6
EVENTS_PER_REQUEST = 3
BIG_ORDERS = 1000
T0 = datetime.now(UTC) - timedelta(days=300)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _order(customer: str, n: int) -> dict:
    return {"id": f"{customer}-o{n}", "type": "order_paid", "customer_id": customer,
            "occurred_at": (T0 + timedelta(hours=n)).isoformat().replace("+00:00", "Z"),
            "order": {"id": f"{customer}-{n}", "total": "20.00", "currency": "EUR"}}


@pytest.fixture
def server(ladder_settings):
    app = create_app(ladder_settings)  # a real queue: the accept path stores, the lanes process
    service = app.extensions[EXTENSION].service
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    lanes = start_lanes(service)
    yield f"http://127.0.0.1:{httpd.server_port}", service
    httpd.shutdown()
    stop_lanes(lanes)
    service.db.dispose()


def _post(session: requests.Session, url: str, body: list[dict]) -> list[int]:
    """Post until accepted; a 503 is retried after its Retry-After (at most 20 times).
    Returns every status seen."""
    seen = []
    for _ in range(20):
        response = session.post(f"{url}/api/v1/shops/default/events", json=body, headers=AUTH, timeout=30)
        seen.append(response.status_code)
        if response.status_code != 503:
            return seen
        assert response.headers.get("Retry-After"), "a 503 must say when to retry"
        time.sleep(min(float(response.headers["Retry-After"]), 0.5))
    return seen


def test_32_writers_while_a_big_customer_folds_get_no_500_and_every_event_is_applied_once(server):
    url, service = server
    with requests.Session() as session:
        assert _post(session, url, [_order("big", n) for n in range(BIG_ORDERS)]) == [202]

    def writer(w: int) -> list[int]:
        statuses = []
        with requests.Session() as session:
            for r in range(REQUESTS_PER_WRITER):
                body = [_order(f"w{w}", r * EVENTS_PER_REQUEST + i) for i in range(EVENTS_PER_REQUEST)]
                statuses += _post(session, url, body)
        return statuses

    started = time.monotonic()
    with ThreadPoolExecutor(WRITERS) as pool:
        statuses = [s for result in pool.map(writer, range(WRITERS)) for s in result]
    assert 500 not in statuses
    assert statuses.count(202) == WRITERS * REQUESTS_PER_WRITER
    assert set(statuses) <= {202, 503}
    assert time.monotonic() - started < 60

    expected = BIG_ORDERS + WRITERS * REQUESTS_PER_WRITER * EVENTS_PER_REQUEST
    deadline = time.monotonic() + 90
    while True:
        with service.db.connect() as conn:
            total, pending = conn.execute(sa.select(
                sa.func.count(), sa.func.count().filter(store.events.c.applied_at.is_(None)))).one()
        if pending == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (total, pending) == (expected, 0)
    with requests.Session() as session:
        for customer, orders in [("big", BIG_ORDERS), *((f"w{w}", REQUESTS_PER_WRITER * EVENTS_PER_REQUEST)
                                                         for w in range(WRITERS))]:
            doc = session.get(f"{url}/api/v1/shops/default/customers/{customer}", headers=AUTH, timeout=30).json()
            assert (doc["facts"]["orders_count"], doc["pending_events"]) == (orders, 0), customer


def test_a_store_that_is_briefly_unavailable_answers_503_with_retry_after(ladder_settings, monkeypatch):
    """Load, not bad input: the events API and the webhooks answer 503 + Retry-After, never 500,
    and nothing is stored (the client's retry stores it)."""
    from loyalty_ladder import ledger

    app = create_app(ladder_settings)  # not testing mode: the 500 handler is on
    service = app.extensions[EXTENSION].service
    client = app.test_client()

    def locked(*args, **kwargs):
        raise sa.exc.OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

    with monkeypatch.context() as m:
        m.setattr(ledger, "store_events", locked)
        response = client.post("/api/v1/shops/default/events", json=[_order("c", 1)], headers=AUTH)
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert response.get_json()["code"] == "unavailable"
    with service.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.events)).scalar() == 0
    assert client.post("/api/v1/shops/default/events", json=[_order("c", 1)], headers=AUTH).status_code == 202
    service.db.dispose()
