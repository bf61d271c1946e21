"""Manual inputs as ledger events: adjustments of one customer (set a stage, start a turn, grant or
revoke a reward), a shop's admin turns and exclusions — each stored with a deterministic id, its
author and reason, and an audit row; refused with a clear error when it makes no sense; never
accepted from a shop's own events; and applied by the fold so that a later reconcile keeps it."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from loyalty_ladder import adjustments, identity, store
from loyalty_ladder.cli import main
from loyalty_ladder.errors import BadRequest, Conflict
from loyalty_ladder.timeline import Exclusions

from .conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STAFF = {**AUTH, "X-Ladder-Author": "maria"}
NOW = datetime.now(UTC).replace(microsecond=0)
STAGES = "potential, visitor, first_purchase, regular, advocate"

# the API tests run on SQLite and, when it answers, on PostgreSQL
both = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                               indirect=True)


def at(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")


def first_purchase(customer: str = "ana", email: str | None = None, days_ago: float = 100) -> list[dict]:
    """A customer who bought once: in stage first_purchase of the default programme."""
    return [
        {"id": f"{customer}-e1", "type": "customer_created", "customer_id": customer, "occurred_at": at(days_ago),
         "customer": {"email": email or f"{customer}@example.com", "accepts_marketing": True}},
        {"id": f"{customer}-e2", "type": "order_paid", "customer_id": customer, "occurred_at": at(days_ago - 10),
         "order": {"id": f"{customer}-o1", "total": "80.00", "currency": "EUR"}},
    ]


def just_now(customer: str, email: str | None = None, tags: tuple[str, ...] = ()) -> list[dict]:
    """A customer who signs up and buys now: after any exclusions set before (they are never
    retroactive: what a customer did before them stays decided)."""
    def now() -> str:
        return datetime.now(UTC).isoformat().replace("+00:00", "Z")

    return [
        {"id": f"{customer}-n1", "type": "customer_created", "customer_id": customer, "occurred_at": now(),
         "customer": {"email": email or f"{customer}@example.com", "accepts_marketing": True, "tags": list(tags)}},
        {"id": f"{customer}-n2", "type": "order_paid", "customer_id": customer, "occurred_at": now(),
         "order": {"id": f"{customer}-o9", "total": "80.00", "currency": "EUR"}},
    ]


def seed(client, customer: str = "ana", **kwargs) -> dict:
    assert client.post("/api/v1/shops/default/events", json=first_purchase(customer, **kwargs),
                       headers=AUTH).status_code == 202
    return doc(client, customer)


def doc(client, customer: str = "ana") -> dict:
    answer = client.get(f"/api/v1/shops/default/customers/{customer}", headers=AUTH)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def adjust(client, body: dict, customer: str = "ana", headers: dict | None = None):
    return client.post(f"/api/v1/shops/default/customers/{customer}/adjustments", json=body,
                       headers=STAFF if headers is None else headers)


def ledger_rows(service, customer: str = "ana") -> list:
    ev = store.events
    with service.db.connect() as conn:
        return conn.execute(sa.select(ev.c.event_id, ev.c.type, ev.c.source, ev.c.body)
                            .where(ev.c.customer_id == customer).order_by(ev.c.pk)).all()


def audit_rows(service, action: str | None = None) -> list:
    t = store.audit_log
    query = sa.select(t).order_by(t.c.pk)
    if action is not None:
        query = query.where(t.c.action == action)
    with service.db.connect() as conn:
        return conn.execute(query).all()


def shop_rows(service) -> list:
    se = store.shop_events
    with service.db.connect() as conn:
        return conn.execute(sa.select(se).order_by(se.c.pk)).all()


# ------------------------------------------------------------------ set a stage
@both
def test_a_stage_set_is_an_admin_event_with_author_reason_and_audit_row(client, service):
    assert seed(client)["stage"] == "first_purchase"
    answer = adjust(client, {"action": "set_stage", "stage": "regular", "reason": "VIP from the old programme"})
    assert answer.status_code == 201, answer.get_json()
    event = answer.get_json()
    assert event["id"].startswith("admin-") and len(event["id"]) == len("admin-") + 24
    assert event["type"] == "stage_set" and event["customer_id"] == "ana"
    assert event["adjustment"] == {"author": "maria", "reason": "VIP from the old programme", "stage": "regular",
                                   "force": False}
    occurred = datetime.fromisoformat(event["occurred_at"])
    assert abs((occurred - datetime.now(UTC)).total_seconds()) < 60  # now: never retroactive

    stored = ledger_rows(service)[-1]
    assert (stored.event_id, stored.type, stored.source) == (event["id"], "stage_set", "admin")
    assert stored.body == event
    (row,) = audit_rows(service, "stage_set")
    assert (row.shop_id, row.author, row.target, row.reason) == ("default", "maria", "ana", "VIP from the old programme")
    assert row.detail["event_id"] == event["id"] and row.detail["stage_before"] == "first_purchase"

    after = doc(client)  # processed (the immediate queue of the tests)
    assert after["stage"] == "regular"
    assert after["history"][-1]["stage"] == "regular" and after["pending_events"] == 0


def test_a_stage_below_the_current_one_needs_force(client, service):
    seed(client)
    assert adjust(client, {"action": "set_stage", "stage": "regular", "reason": "VIP"}).status_code == 201
    assert doc(client)["stage"] == "regular"
    refused = adjust(client, {"action": "set_stage", "stage": "first_purchase", "reason": "mistake"})
    assert refused.status_code == 409
    body = refused.get_json()
    assert "below the customer's current stage 'regular'" in body["message"] and "--force" in body["message"]
    assert "force" in body["errors"]
    assert [r.type for r in ledger_rows(service)] == ["customer_created", "order_paid", "stage_set"]  # nothing new
    assert len(audit_rows(service, "stage_set")) == 1

    for loose in ("yes", 1, "true"):  # only JSON true forces a customer down
        assert adjust(client, {"action": "set_stage", "stage": "first_purchase", "force": loose,
                               "reason": "mistake"}).status_code == 422
    forced = adjust(client, {"action": "set_stage", "stage": "first_purchase", "force": True, "reason": "mistake"})
    assert forced.status_code == 201 and forced.get_json()["adjustment"]["force"] is True
    assert doc(client)["stage"] == "first_purchase"
    again = adjust(client, {"action": "set_stage", "stage": "first_purchase", "reason": "again"})
    assert again.status_code == 409 and "already in stage 'first_purchase'" in again.get_json()["message"]


def test_an_unknown_stage_or_reward_lists_the_valid_ids(client):
    seed(client)
    stage = adjust(client, {"action": "set_stage", "stage": "gold", "reason": "x"})
    assert stage.status_code == 400 and f"unknown stage 'gold'; the stages of the active programme are: {STAGES}" \
        in stage.get_json()["message"]
    reward = adjust(client, {"action": "grant", "reward": "champagne", "reason": "x"})
    assert reward.status_code == 400
    assert "unknown reward 'champagne'" in reward.get_json()["message"] and "welcome" in reward.get_json()["message"]


# ------------------------------------------------------------------ ids: deterministic, retries are duplicates
def test_the_id_is_a_hash_of_the_content_and_instant(service):
    data = {"author": "maria", "reason": "r", "stage": "regular", "force": False}
    one = adjustments.input_id("admin", shop_id="default", customer_id="ana", kind="stage_set", data=data,
                               occurred_at=NOW)
    assert one == adjustments.input_id("admin", shop_id="default", customer_id="ana", kind="stage_set",
                                       data=dict(data), occurred_at=NOW)
    assert one != adjustments.input_id("admin", shop_id="default", customer_id="ana", kind="stage_set",
                                       data={**data, "reason": "other"}, occurred_at=NOW)
    assert one != adjustments.input_id("admin", shop_id="default", customer_id="bo", kind="stage_set", data=data,
                                       occurred_at=NOW)
    keyed = adjustments.input_id("admin", shop_id="default", customer_id="ana", kind="stage_set", data=data,
                                 occurred_at=NOW, idempotency_key="k")
    assert keyed == adjustments.input_id("admin", shop_id="default", customer_id="ana", kind="stage_set", data=data,
                                         occurred_at=NOW + timedelta(seconds=5), idempotency_key="k")


def test_the_same_adjustment_at_the_same_instant_is_one_event(client, service):
    seed(client)
    programme, _ = service.programme("default")
    first = adjustments.adjust(service.db, programme, "default", "ana", "grant", author="maria", reason="goodwill",
                               reward="vip", now=NOW)
    again = adjustments.adjust(service.db, programme, "default", "ana", "grant", author="maria", reason="goodwill",
                               reward="vip", now=NOW)
    assert not first.duplicate and again.duplicate and again.event == first.event
    assert [r.type for r in ledger_rows(service)].count("reward_granted") == 1
    assert len(audit_rows(service, "reward_granted")) == 1


@both
def test_a_retry_with_the_same_idempotency_key_is_a_duplicate(client, service):
    seed(client)
    headers = {**STAFF, "Idempotency-Key": "ticket-4711"}
    body = {"action": "grant", "reward": "vip", "reason": "goodwill, ticket 4711"}
    first = adjust(client, body, headers=headers)
    retry = adjust(client, body, headers=headers)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.get_json() == first.get_json()
    assert [r.type for r in ledger_rows(service)].count("reward_granted") == 1
    assert len(audit_rows(service, "reward_granted")) == 1
    manual = [r for r in doc(client)["rewards"] if "/manual/" in r["key"]]
    assert len(manual) == 1  # one grant, not two

    other = adjust(client, {**body, "reason": "something else"}, headers=headers)
    assert other.status_code == 409 and "idempotency_key" in other.get_json()["errors"]
    assert [r.type for r in ledger_rows(service)].count("reward_granted") == 1


# ------------------------------------------------------------------ grant, revoke, turn
def test_a_manual_grant_and_its_revocation(client, service):
    seed(client)
    granted = adjust(client, {"action": "grant", "reward": "vip", "reason": "goodwill"})
    assert granted.status_code == 201
    key = f"default/ana/vip/manual/{granted.get_json()['id']}"
    award = next(r for r in doc(client)["rewards"] if r["key"] == key)
    assert award["status"] == "due" and award["reason"] == "granted by maria: goodwill"

    unknown = adjust(client, {"action": "revoke", "award_key": "default/ana/nope", "reason": "x"})
    assert unknown.status_code == 400
    assert "no award 'default/ana/nope' of customer 'ana'" in unknown.get_json()["message"]
    assert key in unknown.get_json()["message"]  # the revocable keys are named

    revoked = adjust(client, {"action": "revoke", "award_key": key, "reason": "granted by mistake"})
    assert revoked.status_code == 201 and revoked.get_json()["adjustment"]["award_key"] == key
    award = next(r for r in doc(client)["rewards"] if r["key"] == key)
    assert award["status"] == "reversed" and award["reason"] == "revoked by maria: granted by mistake"
    again = adjust(client, {"action": "revoke", "award_key": key, "reason": "x"})
    assert again.status_code == 409 and "already reversed" in again.get_json()["message"]
    assert [r.action for r in audit_rows(service)][-2:] == ["reward_granted", "reward_revoked"]


def test_a_rule_award_is_revoked_with_the_reason(client, service):
    before = seed(client)
    key = next(r["key"] for r in before["rewards"] if r["reward"] == "welcome")
    assert adjust(client, {"action": "revoke", "award_key": key, "reason": "staff account"}).status_code == 201
    award = next(r for r in doc(client)["rewards"] if r["key"] == key)
    assert award["status"] == "reversed" and award["reason"] == "revoked by maria: staff account"


def test_a_customer_turn(client, service):
    assert seed(client)["turn"] == 1
    answer = adjust(client, {"action": "start_turn", "reason": "came back after a long break"})
    assert answer.status_code == 201 and answer.get_json()["type"] == "turn_started"
    after = doc(client)
    assert after["turn"] == 2 and after["stage"] == "first_purchase"
    assert "default/ana/second-order/stage/first_purchase/2" in {r["key"] for r in after["rewards"]}  # earned again
    (row,) = audit_rows(service, "customer_turn_started")
    assert row.target == "ana" and row.detail["turn_before"] == 1

    # a customer not on the ladder (an excluded one) has no turn to restart
    client.put("/api/v1/shops/default/exclusions", json={"tags": ["staff"], "reason": "staff"}, headers=STAFF)
    assert client.post("/api/v1/shops/default/events", json=just_now("bo", tags=("staff",)),
                       headers=AUTH).status_code == 202
    assert doc(client, "bo")["stage"] is None
    refused = adjust(client, {"action": "start_turn", "reason": "x"}, customer="bo")
    assert refused.status_code == 409 and "not on the ladder" in refused.get_json()["message"]


def test_a_guest_id_adjusts_the_account_it_joined(client, service):
    seed(client)
    assert client.post("/api/v1/shops/default/events", headers=AUTH, json={
        "id": "g1", "type": "checkout_started", "customer_id": "guest:abc", "occurred_at": at(50)}).status_code == 202
    identity.link_all(service.db, "default", [("guest:abc", "ana")])
    answer = adjust(client, {"action": "set_stage", "stage": "regular", "reason": "merged"}, customer="guest:abc")
    assert answer.status_code == 201 and answer.get_json()["customer_id"] == "ana"


# ------------------------------------------------------------------ refused requests
def test_a_change_needs_the_author_header_and_a_reason(client, service):
    seed(client)
    body = {"action": "set_stage", "stage": "regular", "reason": "x"}
    missing = adjust(client, body, headers=AUTH)
    assert missing.status_code == 400 and "X-Ladder-Author" in missing.get_json()["errors"]
    blank = adjust(client, body, headers={**AUTH, "X-Ladder-Author": "   "})
    assert blank.status_code == 400
    no_reason = adjust(client, {"action": "set_stage", "stage": "regular"})
    assert no_reason.status_code == 422 and "reason" in no_reason.get_json()["errors"]
    blank_reason = adjust(client, {**body, "reason": "  "})
    assert blank_reason.status_code == 400 and "reason" in blank_reason.get_json()["errors"]
    assert [r.source for r in ledger_rows(service)] == ["api", "api"]
    assert audit_rows(service, "stage_set") == []
    # the admin token comes first
    assert adjust(client, body, headers={"X-Ladder-Author": "maria"}).status_code == 401


def test_each_action_names_what_it_needs_and_nothing_else(client):
    seed(client)
    assert adjust(client, {"action": "set_stage", "reason": "x"}).get_json()["errors"] == {"stage": ["Required for set_stage."]}
    assert adjust(client, {"action": "grant", "reason": "x"}).status_code == 422
    mixed = adjust(client, {"action": "start_turn", "stage": "regular", "reason": "x"})
    assert mixed.status_code == 422 and mixed.get_json()["errors"] == {"stage": ["Not used by start_turn."]}
    assert adjust(client, {"action": "promote", "reason": "x"}).status_code == 422
    assert adjust(client, {"action": "start_turn", "reason": "x", "extra": 1}).status_code == 422
    repeated = client.post("/api/v1/shops/default/customers/ana/adjustments", headers=STAFF,
                           data='{"action": "start_turn", "reason": "a", "reason": "b"}',
                           content_type="application/json")
    assert repeated.status_code == 400 and "repeats the key 'reason'" in repeated.get_json()["message"]


def test_unknown_shop_and_customer_are_404(client):
    seed(client)
    body = {"action": "start_turn", "reason": "x"}
    assert adjust(client, body, customer="nobody").status_code == 404
    assert client.post("/api/v1/shops/nope/customers/ana/adjustments", json=body, headers=STAFF).status_code == 404
    assert client.post("/api/v1/shops/nope/turns", json={"reason": "x"}, headers=STAFF).status_code == 404


def test_shops_cannot_send_manual_adjustments_as_events(client, service):
    seed(client)
    for kind, extra in (("stage_set", {"stage": "regular"}), ("turn_started", {}), ("reward_granted", {"reward": "vip"}),
                        ("reward_revoked", {"award_key": "default/ana/welcome/stage/potential/1"})):
        event = {"id": f"x-{kind}", "type": kind, "customer_id": "ana", "occurred_at": at(1),
                 "adjustment": {"author": "a", "reason": "b", **extra}}
        answer = client.post("/api/v1/shops/default/events", json=event, headers=AUTH)
        assert answer.status_code == 400, kind
        (message,) = answer.get_json()["errors"]["0"]["type"]
        assert message.startswith(f"{kind} is a manual adjustment: use POST /api/v1/shops/<shop>/customers/")
        assert "ladder adjust" in message
    with pytest.raises(BadRequest) as refused:
        service.import_events("default", [{"id": "i1", "type": "stage_set", "customer_id": "ana",
                                           "occurred_at": at(1), "adjustment": {"author": "a", "reason": "b",
                                                                                "stage": "regular"}}],
                              labels=["history.jsonl:1"])
    assert "manual adjustment" in refused.value.errors["history.jsonl:1"]["type"][0]
    assert all(r.source == "api" for r in ledger_rows(service))


# ------------------------------------------------------------------ reconcile keeps manual changes
def test_a_later_reconcile_keeps_the_manual_changes(client, service):
    before = seed(client)
    welcome = next(r["key"] for r in before["rewards"] if r["reward"] == "welcome")
    assert adjust(client, {"action": "set_stage", "stage": "regular", "reason": "VIP"}).status_code == 201
    assert adjust(client, {"action": "revoke", "award_key": welcome, "reason": "staff"}).status_code == 201
    # another event, and processing again from the whole history
    assert client.post("/api/v1/shops/default/events", headers=AUTH, json={
        "id": "ana-e3", "type": "checkout_started", "customer_id": "ana", "occurred_at": at(0)}).status_code == 202
    service.process_customer("default", "ana")
    after = doc(client)
    assert after["stage"] == "regular"
    assert next(r for r in after["rewards"] if r["key"] == welcome)["status"] == "reversed"


# ------------------------------------------------------------------ shop-wide: turns
@both
def test_an_admin_turn_is_a_shop_event_and_wakes_the_customers_on_the_ladder(client, service):
    seed(client)
    seed(client, "bo")
    answer = client.post("/api/v1/shops/default/turns", json={"reason": "new season"}, headers=STAFF)
    assert answer.status_code == 201, answer.get_json()
    turn = answer.get_json()
    assert turn["id"].startswith("turn-") and (turn["author"], turn["reason"]) == ("maria", "new season")
    (row,) = shop_rows(service)
    assert (row.event_id, row.type, row.body) == (turn["id"], "turn_started", {"author": "maria", "reason": "new season"})
    cu = store.customers
    with service.db.connect() as conn:
        wakes = dict(conn.execute(sa.select(cu.c.customer_id, cu.c.next_wake_at)).all())
    assert wakes == {"ana": row.occurred_at, "bo": row.occurred_at}  # due now: the bulk lane's sweep re-decides them
    assert turn["customers_due"] == 2
    (entry,) = audit_rows(service, "turn_started")
    assert entry.reason == "new season" and entry.detail["event_id"] == turn["id"]

    assert ("default", "ana") in service.due_wakeups()
    service.process_customer("default", "ana")
    assert doc(client)["turn"] == 2 and doc(client)["stage"] == "first_purchase"  # stage kept


def test_a_retried_turn_with_the_same_key_is_one_turn(client, service):
    headers = {**STAFF, "Idempotency-Key": "season-2027"}
    first = client.post("/api/v1/shops/default/turns", json={"reason": "new season"}, headers=headers)
    again = client.post("/api/v1/shops/default/turns", json={"reason": "new season"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["id"] == first.get_json()["id"] and again.get_json()["customers_due"] == 0
    assert len(shop_rows(service)) == 1 and len(audit_rows(service, "turn_started")) == 1
    other = client.post("/api/v1/shops/default/turns", json={"reason": "another"}, headers=headers)
    assert other.status_code == 409
    assert client.post("/api/v1/shops/default/turns", json={}, headers=STAFF).status_code == 422
    assert client.post("/api/v1/shops/default/turns", json={"reason": "x"}, headers=AUTH).status_code == 400
    bad_key = client.post("/api/v1/shops/default/turns", json={"reason": "x"},
                          headers={**STAFF, "Idempotency-Key": "a\tb"})
    assert bad_key.status_code == 400


# ------------------------------------------------------------------ shop-wide: exclusions
@both
def test_exclusions_replace_the_list_and_are_shown(client, service):
    empty = client.get("/api/v1/shops/default/exclusions", headers=AUTH).get_json()
    assert empty == {"tags": [], "emails": [], "id": None, "since": None, "author": None, "reason": None}
    body = {"tags": ["staff", "test"], "emails": ["*@myshop.example"], "reason": "staff and test accounts"}
    put = client.put("/api/v1/shops/default/exclusions", json=body, headers=STAFF)
    assert put.status_code == 200, put.get_json()
    stored = put.get_json()
    assert stored["id"].startswith("exclusions-") and stored["unchanged"] is False
    assert (stored["tags"], stored["emails"], stored["author"]) == (["staff", "test"], ["*@myshop.example"], "maria")
    shown = client.get("/api/v1/shops/default/exclusions", headers=AUTH).get_json()
    assert {k: shown[k] for k in ("tags", "emails", "id", "since", "reason")} == \
        {k: stored[k] for k in ("tags", "emails", "id", "since", "reason")}

    same = client.put("/api/v1/shops/default/exclusions", json={**body, "tags": ["test", "staff"]}, headers=STAFF)
    assert same.get_json()["unchanged"] is True and same.get_json()["id"] == stored["id"]
    assert len(shop_rows(service)) == 1 and len(audit_rows(service, "exclusions_set")) == 1

    ended = client.put("/api/v1/shops/default/exclusions", json={"reason": "nobody any more"}, headers=STAFF)
    assert ended.status_code == 200 and (ended.get_json()["tags"], ended.get_json()["emails"]) == ([], [])
    assert [r.type for r in shop_rows(service)] == ["exclusions_set", "exclusions_set"]
    assert client.put("/api/v1/shops/default/exclusions", json={"tags": [""], "reason": "x"},
                      headers=STAFF).status_code == 422
    assert client.put("/api/v1/shops/default/exclusions", json={"tags": ["  "], "reason": "x"},
                      headers=STAFF).status_code == 400
    assert client.put("/api/v1/shops/default/exclusions", json={"tags": ["x"]}, headers=STAFF).status_code == 422


def test_an_excluded_customer_gets_no_award(client, service):
    put = client.put("/api/v1/shops/default/exclusions", headers=STAFF,
                     json={"emails": ["*@MyShop.example"], "reason": "staff"})
    assert put.status_code == 200
    assert client.post("/api/v1/shops/default/events", json=just_now("bo", email="Bo@myshop.example"),
                       headers=AUTH).status_code == 202
    staff = doc(client, "bo")
    assert staff["rewards"] == [] and staff["stage"] is None and staff["facts"]["orders_count"] == 1
    assert client.post("/api/v1/shops/default/events", json=just_now("ana"), headers=AUTH).status_code == 202
    assert doc(client, "ana")["rewards"] != []  # everybody else is evaluated


def test_exclusions_wake_every_customer_of_the_shop_and_are_not_retroactive(client, service):
    before = seed(client)
    answer = client.put("/api/v1/shops/default/exclusions", headers=STAFF,
                        json={"emails": ["ana@example.com"], "reason": "turned out to be staff"})
    assert answer.get_json()["customers_due"] == 1
    assert ("default", "ana") in service.due_wakeups()
    service.process_customer("default", "ana")
    after = doc(client)
    assert after["stage"] == before["stage"]  # what she earned before stays
    assert {(r["key"], r["status"]) for r in after["rewards"]} == {(r["key"], r["status"]) for r in before["rewards"]}


# ------------------------------------------------------------------ the fold's shop inputs
def test_shop_inputs_are_the_turns_and_exclusions_in_time_order(service):
    t0 = NOW - timedelta(days=3)
    adjustments.set_exclusions(service.db, "default", author="a", reason="r", tags=["staff"], now=t0 + timedelta(days=2))
    adjustments.start_shop_turn(service.db, "default", author="a", reason="r", now=t0 + timedelta(days=1))
    adjustments.set_exclusions(service.db, "default", author="a", reason="r", emails=["*@x.example"], now=t0)
    adjustments.start_shop_turn(service.db, "default", author="a", reason="r", now=t0)
    with service.db.connect() as conn:
        inputs = adjustments.shop_inputs(conn, "default")
        other = adjustments.shop_inputs(conn, "elsewhere")
    assert inputs.turns == (t0, t0 + timedelta(days=1))
    assert inputs.exclusions == ((t0, Exclusions((), ("*@x.example",))), (t0 + timedelta(days=2), Exclusions(("staff",))))
    assert inputs.exclusions_at(t0 + timedelta(days=1)).match((), "ana@X.example") == "e-mail matches *@x.example"
    assert inputs.exclusions_at(NOW).match(("staff",), None) == "tag staff"
    assert other.turns == () and other.exclusions == ()


def test_validation_happens_before_anything_is_stored(service):
    with pytest.raises(BadRequest, match="reason is required"):
        adjustments.start_shop_turn(service.db, "default", author="a", reason=" ")
    with pytest.raises(BadRequest, match="author is required"):
        adjustments.set_exclusions(service.db, "default", author="", reason="r")
    with pytest.raises(BadRequest, match="must be a list"):
        adjustments.set_exclusions(service.db, "default", author="a", reason="r", tags="staff")
    with pytest.raises(Conflict):
        adjustments.start_shop_turn(service.db, "default", author="a", reason="r", idempotency_key="k")
        adjustments.start_shop_turn(service.db, "default", author="a", reason="other", idempotency_key="k")
    assert len(shop_rows(service)) == 1


# ------------------------------------------------------------------ CLI
def cli(*args, env):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def env(ladder_settings):
    return {"LADDER_DATABASE_URL": ladder_settings.database_url, "LADDER_RULES": str(ladder_settings.rules),
            "LADDER_AUTHOR": "ops-team"}


def test_ladder_adjust_stores_and_leaves_processing_to_the_lanes(client, service, env):
    seed(client)
    done = cli("adjust", "default", "ana", "--stage", "regular", "--reason", "VIP from the old system", env=env)
    assert done.exit_code == 0, done.output
    assert "stored stage_set admin-" in done.stdout and "by ops-team: stage set to regular" in done.stdout
    assert "`ladder worker` (or `ladder serve`) re-decides the customer" in done.stdout
    assert doc(client)["pending_events"] == 1  # the live lane finds the unapplied event
    service.process_customer("default", "ana")
    assert doc(client)["stage"] == "regular"
    (row,) = audit_rows(service, "stage_set")
    assert row.author == "ops-team"

    down = cli("adjust", "default", "ana", "--stage", "potential", "--reason", "x", env=env)
    assert down.exit_code == 1 and "below the customer's current stage 'regular'" in down.stderr
    forced = cli("adjust", "default", "ana", "--stage", "potential", "--force", "--reason", "x", "--author", "kim",
                 env=env)
    assert forced.exit_code == 0 and "by kim: stage set to potential (forced)" in forced.stdout


def test_ladder_adjust_errors_and_exit_codes(client, env):
    seed(client)
    unknown_stage = cli("adjust", "default", "ana", "--stage", "gold", "--reason", "x", env=env)
    assert unknown_stage.exit_code == 1 and STAGES in unknown_stage.stderr
    unknown_reward = cli("adjust", "default", "ana", "--grant", "champagne", "--reason", "x", env=env)
    assert unknown_reward.exit_code == 1 and "welcome" in unknown_reward.stderr
    assert cli("adjust", "default", "nobody", "--new-turn", "--reason", "x", env=env).exit_code == 3
    assert cli("adjust", "nope", "ana", "--new-turn", "--reason", "x", env=env).exit_code == 3
    none = cli("adjust", "default", "ana", "--reason", "x", env=env)
    assert none.exit_code == 2 and "exactly one of" in none.output
    assert cli("adjust", "default", "ana", "--new-turn", "--grant", "vip", "--reason", "x", env=env).exit_code == 2
    assert cli("adjust", "default", "ana", "--new-turn", "--force", "--reason", "x", env=env).exit_code == 2
    assert cli("adjust", "default", "ana", "--new-turn", env=env).exit_code == 2  # --reason is required


def test_ladder_adjust_with_a_key_runs_once(client, service, env):
    seed(client)
    args = ("adjust", "default", "ana", "--grant", "vip", "--reason", "goodwill", "--idempotency-key", "t-1")
    assert cli(*args, env=env).exit_code == 0
    again = cli(*args, env=env)
    assert again.exit_code == 0 and "already stored" in again.stdout
    assert [r.type for r in ledger_rows(service)].count("reward_granted") == 1


def test_ladder_turn_start_and_exclusions(client, service, env):
    seed(client)
    started = cli("turn", "start", "--shop", "default", "--reason", "new season", env=env)
    assert started.exit_code == 0, started.output
    assert "stored turn turn-" in started.stdout and "1 customer(s) on the ladder are due now" in started.stdout
    assert cli("turn", "start", "--shop", "nope", "--reason", "x", env=env).exit_code == 3
    assert cli("turn", "start", "--shop", "default", env=env).exit_code == 2

    none = cli("exclusions", "show", "--shop", "default", env=env)
    assert none.exit_code == 0 and "has no exclusions" in none.stdout
    done = cli("exclusions", "set", "--shop", "default", "--tag", "staff", "--email", "*@myshop.example",
               "--reason", "staff accounts", env=env)
    assert done.exit_code == 0, done.output
    assert "tag staff, e-mail *@myshop.example" in done.stdout
    shown = cli("exclusions", "show", "--shop", "default", env=env)
    assert "excludes tag staff, e-mail *@myshop.example" in shown.stdout and "set by ops-team: staff accounts" in shown.stdout
    same = cli("exclusions", "set", "--shop", "default", "--email", "*@myshop.example", "--tag", "staff",
               "--reason", "again", env=env)
    assert same.exit_code == 0 and "nothing stored" in same.stdout
    ended = cli("exclusions", "set", "--shop", "default", "--reason", "no more", env=env)
    assert ended.exit_code == 0 and "excludes" not in ended.stdout and ": nobody" in ended.stdout
    assert [r.type for r in shop_rows(service)] == ["turn_started", "exclusions_set", "exclusions_set"]


def test_two_tries_of_one_request_at_once_store_one_event(engine):
    """A client that retries while its first try is still in flight: both carry the same key but
    were made at different instants; exactly one is stored, the other answers as its duplicate
    (on PostgreSQL the customer's lock makes the second wait for the first)."""
    import threading
    from pathlib import Path

    from loyalty_ladder import events as events_mod
    from loyalty_ladder import ledger, rulefile

    programme = rulefile.load_programme(Path(__file__).resolve().parent.parent / "rules")
    ledger.store_events(engine, "default", events_mod.parse_events(first_purchase()), "api")
    barrier = threading.Barrier(2)
    results: list = []

    def attempt(offset: int) -> None:
        barrier.wait()
        results.append(adjustments.adjust(engine, programme, "default", "ana", "grant", author="maria",
                                          reason="goodwill", reward="vip", idempotency_key="same-request",
                                          now=NOW + timedelta(milliseconds=offset)))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.duplicate for r in results) == [False, True]
    assert results[0].event == results[1].event
    ev = store.events
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ev).where(ev.c.type == "reward_granted")).scalar() == 1
        assert conn.execute(sa.select(sa.func.count()).select_from(store.audit_log)).scalar() == 1


def test_a_history_of_manual_adjustments_only_folds_and_lapses_from_the_turn():
    """A customer whose only events are adjustments (no fact to count a lapse from) used to fail
    the fold; the lapse deadline then counts from the stage's turn."""
    from loyalty_ladder import ladder, rulefile
    from loyalty_ladder.engine import get_engine
    from loyalty_ladder.events import parse_event

    programme = rulefile.load_programme(Path(__file__).resolve().parent.parent / "rules")
    at = datetime(2026, 3, 2, 10, tzinfo=UTC)
    event = parse_event({"id": "adj-1", "type": "stage_set", "customer_id": "solo", "occurred_at": at.isoformat(),
                         "adjustment": {"author": "ann", "reason": "met at the fair", "stage": "first_purchase"}})
    state = ladder.fold(programme, get_engine().compile(programme), [event], at + timedelta(days=1))
    assert state.stage == "first_purchase" and not state.lapsed
    assert state.lapse_at == at + timedelta(days=programme.stage("first_purchase").lapse_after_days)
    later = ladder.fold(programme, get_engine().compile(programme), [event], at + timedelta(days=400))
    assert later.lapsed and later.lapsed_at == state.lapse_at
