"""The HTTP API through the real app: generic events in, customer documents out."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from .conftest import due_unless_expired

# Every API test runs on SQLite and, when it answers, on PostgreSQL: the same code, both stores.
pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(days=200)


def at(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat().replace("+00:00", "Z")


def order(event_id: str, order_id: str, days: float, total: str, codes=(), customer="c-1", **extra):
    body = {"id": event_id, "type": "order_paid", "customer_id": customer, "occurred_at": at(days),
            "order": {"id": order_id, "total": total, "currency": "EUR", "discount_codes": list(codes),
                      "discount_total": "10.00" if codes else "0.00"}}
    body.update(extra)
    return body


def journey(customer: str = "c-1") -> list[dict]:
    """A customer who climbs the whole default ladder, one step at a time."""
    return [
        {"id": f"{customer}-e1", "type": "customer_created", "customer_id": customer, "occurred_at": at(0),
         "customer": {"email": f"{customer}@example.com", "accepts_marketing": True}},
        {"id": f"{customer}-e2", "type": "checkout_started", "customer_id": customer, "occurred_at": at(1)},
        order(f"{customer}-e3", f"{customer}-o1", 2, "80.00", codes=["FIRST10"], customer=customer),
        order(f"{customer}-e4", f"{customer}-o2", 40, "100.00", customer=customer),
        order(f"{customer}-e5", f"{customer}-o3", 45, "120.00", customer=customer),
        {"id": f"{customer}-e6", "type": "referral", "customer_id": customer, "occurred_at": at(80),
         "referred_customer_id": f"{customer}-friend"},
        order(f"{customer}-e7", f"{customer}-o4", 90, "150.00", customer=customer),
        order(f"{customer}-e8", f"{customer}-o5", 100, "200.00", customer=customer),
    ]


def post(client, auth, body, shop="default"):
    return client.post(f"/api/v1/shops/{shop}/events", json=body, headers=auth)


def get_customer(client, auth, customer="c-1", shop="default"):
    return client.get(f"/api/v1/shops/{shop}/customers/{customer}", headers=auth)


def test_customer_climbs_the_whole_ladder_one_step_at_a_time(client, auth):
    seen_stages = []
    for event in journey():
        assert post(client, auth, event).status_code == 202
        doc = get_customer(client, auth).get_json()
        if not seen_stages or seen_stages[-1] != doc["stage"]:
            seen_stages.append(doc["stage"])
    assert seen_stages == ["potential", "visitor", "first_purchase", "regular", "advocate"]
    doc = get_customer(client, auth).get_json()
    assert [h["stage"] for h in doc["history"]] == seen_stages
    assert [h["at"] for h in doc["history"]] == [at(0), at(1), at(2), at(45), at(100)]
    assert doc["lapsed"] is False and doc["turn"] == 1 and doc["pending_events"] == 0
    assert doc["next"] is None  # the top of the ladder
    assert doc["rule_version"] and doc["facts"]["orders_count"] == 5
    due = {r["reward"] for r in doc["rewards"] if r["status"] == due_unless_expired(r)}
    assert {"welcome", "first-order", "second-order", "tag-advocate"} <= due
    assert {r["status"] for r in doc["rewards"] if r["reward"] == "welcome"} == {"expired"}  # 30 days, long ago
    # points are credited to the ledger loyalty-ladder keeps: delivered, nothing for the integrator
    assert {r["status"] for r in doc["rewards"] if r["reward"] == "order-points"} == {"delivered"}
    points = {r["scope_ref"]: r["params"]["points"] for r in doc["rewards"] if r["reward"] == "order-points"}
    # points only for orders made while regular or advocate (o3 made them regular)
    assert points == {"c-1-o3": 120, "c-1-o4": 150, "c-1-o5": 200}
    for reward in doc["rewards"]:
        assert reward["key"].startswith("default/c-1/") and reward["rule_version"] == doc["rule_version"]


def test_replaying_every_event_changes_nothing(client, auth):
    events = journey()
    assert post(client, auth, events).status_code == 202
    before = get_customer(client, auth).get_json()
    replay = post(client, auth, list(reversed(events)))
    assert replay.status_code == 202
    assert replay.get_json() == {"accepted": 0, "duplicates": len(events), "customers": []}
    assert get_customer(client, auth).get_json() == before


def test_refund_inside_the_window_reverses_what_the_order_earned(client, auth):
    assert post(client, auth, journey()).status_code == 202
    late = order("c-1-e9", "c-1-o6", 190, "90.00")
    assert post(client, auth, late).status_code == 202
    rewards = {r["key"]: r for r in get_customer(client, auth).get_json()["rewards"]}
    key = "default/c-1/order-points/order/c-1-o6"
    assert rewards[key]["status"] == "delivered" and rewards[key]["params"]["points"] == 90
    refund = {"id": "c-1-e10", "type": "order_refunded", "customer_id": "c-1", "occurred_at": at(195),
              "order": {"id": "c-1-o6"}, "refund": {"id": "r-1", "amount": "90.00", "reason": "damaged"}}
    assert post(client, auth, refund).status_code == 202
    doc = get_customer(client, auth).get_json()
    rewards = {r["key"]: r for r in doc["rewards"]}
    assert rewards[key]["status"] == "reversed" and rewards[key]["reason"]
    assert doc["facts"]["orders_count"] == 5 and doc["stage"] == "advocate"


def test_invalid_item_rejects_the_whole_batch(client, auth):
    events = journey()
    bad = dict(events[2], occurred_at="2026-01-01T10:00:00")  # no time zone
    response = post(client, auth, [events[0], bad])
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "bad_request" and "1" in body["errors"]
    assert get_customer(client, auth).status_code == 404  # nothing half-written


def test_reused_id_with_other_content_is_409_and_stores_nothing(client, auth):
    first = journey()[0]
    assert post(client, auth, first).status_code == 202
    changed = dict(first, occurred_at=at(3))
    other = journey("c-2")[0]
    response = post(client, auth, [other, changed])
    assert response.status_code == 409
    assert response.get_json()["code"] == "conflict"
    assert get_customer(client, auth, "c-2").status_code == 404


def test_same_id_same_content_is_a_noop_202(client, auth):
    first = journey()[0]
    assert post(client, auth, first).get_json()["accepted"] == 1
    again = post(client, auth, first)
    assert again.status_code == 202 and again.get_json()["duplicates"] == 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}])
def test_admin_token_required(client, headers):
    response = client.post("/api/v1/shops/default/events", json=journey()[0], headers=headers)
    assert response.status_code == 401
    assert set(response.get_json()) == {"code", "message", "errors"}


def test_malformed_json_is_400_not_500(client, auth):
    response = client.post("/api/v1/shops/default/events", data="{not json",
                           headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["code"] == "bad_request"


def test_non_json_body_is_400(client, auth):
    response = client.post("/api/v1/shops/default/events", data="id=1", headers=auth)
    assert response.status_code == 400


def test_unknown_shop_is_404(client, auth):
    assert post(client, auth, journey()[0], shop="nope").status_code == 404


def test_unknown_customer_is_404(client, auth):
    response = get_customer(client, auth, "ghost")
    assert response.status_code == 404 and response.get_json()["code"] == "not_found"


def test_wrong_currency_is_400(client, auth):
    event = order("x-1", "o-x", 1, "10.00")
    event["order"]["currency"] = "USD"
    response = post(client, auth, event)
    assert response.status_code == 400
    assert "currency" in str(response.get_json()["errors"])


def test_unknown_route_and_method_answer_json(client, auth):
    response = client.get("/nowhere")
    assert response.status_code == 404 and response.get_json()["code"] == "not_found"
    response = client.delete("/api/v1/shops/default/events", headers=auth)
    assert response.status_code == 405 and set(response.get_json()) == {"code", "message", "errors"}


def test_explain_says_why_and_what_next(client, auth):
    assert post(client, auth, journey()[:3]).status_code == 202
    response = client.get("/api/v1/shops/default/customers/c-1/explain", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["stage"] == "first_purchase"
    assert body["next"]["stage"] == "regular"
    missing = {m["fact"] for m in body["next"]["missing"]}
    assert "orders_count" in missing
    rewards = {r["reward"]: r for r in body["rewards"]}
    assert rewards["second-order"]["awards"][0]["status"] in ("due", "expired")  # a code of long ago: expired
    assert rewards["vip"]["awards"] == []
    assert "advocate" in rewards["vip"]["withheld_because"]
    stage = {s["stage"]: s for s in body["stages"]}
    assert stage["first_purchase"]["holds"] is True
    assert any(c["fact"] == "orders_count" and c["result"] is False for c in stage["regular"]["condition"])


def test_healthz_and_openapi(client):
    assert client.get("/healthz").get_json()["status"] == "ok"
    spec = client.get("/openapi.json").get_json()
    assert "/api/v1/shops/{shop}/events" in spec["paths"]
    assert "/api/v1/shops/{shop}/customers/{customer_id}" in spec["paths"]
    assert "Event" in spec["components"]["schemas"]


def test_the_app_runs_on_the_backend_it_claims(service, backend):
    assert service.db.dialect.name == {"sqlite": "sqlite", "postgres": "postgresql"}[backend]


@pytest.mark.parametrize("body,where", [
    ({"id": "s\ud800", "type": "checkout_started", "customer_id": "c-1", "occurred_at": "2026-01-01T00:00:00Z"}, "id"),
    ({"id": "n", "type": "checkout_started", "customer_id": "c\u0000", "occurred_at": "2026-01-01T00:00:00Z"},
     "customer_id"),
    ({"id": "o", "type": "checkout_started", "customer_id": "c-1", "occurred_at": "0001-01-01T00:00:00+14:00"},
     "occurred_at"),
    ({"id": "p", "type": "checkout_started", "customer_id": "c-1", "occurred_at": "9999-12-31T23:59:59-12:00"},
     "occurred_at"),
    ({"id": "f", "type": "checkout_started", "customer_id": "c-1",
      "occurred_at": (NOW + timedelta(days=2)).isoformat()}, "occurred_at"),
])
def test_unstorable_or_impossible_input_is_400_never_500(client, auth, body, where):
    import json as _json

    response = client.post("/api/v1/shops/default/events", data=_json.dumps(body),
                           headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 400, response.get_json()
    assert where in response.get_json()["errors"]["0"]


def test_json_nested_too_deep_is_400(client, auth):
    response = client.post("/api/v1/shops/default/events", data="[" * 100000 + "]" * 100000,
                           headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 400


def test_a_non_ascii_token_is_401_not_500(client):
    response = client.get("/api/v1/shops/default/customers/c-1",
                          headers={"Authorization": "Bearer \u017e\u017e".encode().decode("latin-1")})
    assert response.status_code == 401


def test_an_event_slightly_ahead_of_our_clock_waits_for_its_time(service):
    """Clock skew: accepted, not applied yet, and the customer wakes when its time comes."""
    soon = datetime.now(UTC) + timedelta(minutes=2)  # not NOW: a long suite may be past NOW + 2 minutes
    event = {"id": "skew-1", "type": "customer_created", "customer_id": "skew",
             "occurred_at": soon.isoformat().replace("+00:00", "Z")}
    service.accept_events("default", event)
    doc = service.customer_view("default", "skew")
    assert doc["stage"] is None and doc["pending_events"] == 1
    import sqlalchemy as sa

    from loyalty_ladder import store

    with service.db.connect() as conn:
        wake = conn.execute(sa.select(store.customers.c.next_wake_at)
                            .where(store.customers.c.customer_id == "skew")).scalar_one()
    assert wake == soon
    service.process_customer("default", "skew", as_of=soon + timedelta(seconds=1))
    doc = service.customer_view("default", "skew")
    assert doc["stage"] == "potential" and doc["pending_events"] == 0


def test_the_same_new_event_posted_concurrently_is_stored_once(service, backend):
    """A client retrying while its first request is in flight: one accepted, the rest duplicates."""
    from concurrent.futures import ThreadPoolExecutor

    event = journey("race")[0]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: service.accept_events("default", event), range(8)))
    assert sum(r.accepted for r in results) == 1
    assert sum(r.duplicates for r in results) == 7


def test_explain_names_a_stage_passed_through(client, auth):
    guest = [order("g-1", "g-o1", 5, "80.00", customer="guest-1")]  # first event: a paid order
    assert post(client, auth, guest).status_code == 202
    body = client.get("/api/v1/shops/default/customers/guest-1/explain", headers=auth).get_json()
    rewards = {r["reward"]: r for r in body["rewards"]}
    assert "passed through stage visitor" in rewards["first-order"]["withheld_because"]
