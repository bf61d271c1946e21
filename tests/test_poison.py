"""Poison isolation: one bad inbox row, event or customer ends in a recorded failure with its
reason after bounded retries, and never blocks other customers or a customer's later events —
on SQLite and on PostgreSQL.

* keys and ids fit their columns (a customer or event id of 100 ``é`` encodes to 600 characters);
* absurd amounts in a signed Shopify or WooCommerce webhook are invalid input (the row fails);
* an event that crashes the fold or the save is set aside after ``processing.MAX_FAILURES``;
* an inbox row that keeps failing is ``failed`` after ``inbox.MAX_ATTEMPTS``.
"""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from loyalty_ladder import awards, identity, inbox, ledger, processing, store
from loyalty_ladder.clock import utcnow
from loyalty_ladder.events import parse_events
from loyalty_ladder.facts import FactsAccumulator
from loyalty_ladder.shop import ShopConfig

from .conftest import app_with_shops
from .test_api import at, journey, order

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LONG = "é" * 100  # 100 characters (fits every id column), 600 once percent-encoded


def _events_of(service, customer_id: str) -> list:
    with service.db.connect() as conn:
        return conn.execute(sa.select(store.events).where(store.events.c.customer_id == customer_id)
                            .order_by(store.events.c.pk)).all()


def _awards_of(service) -> list:
    with service.db.connect() as conn:
        return conn.execute(sa.select(store.awards).order_by(store.awards.c.pk)).all()


# ================================================================ 1. keys fit their columns
def test_a_customer_and_event_id_of_100_accented_letters_is_processed(client, auth, service):
    body = [{"id": LONG, "type": "customer_created", "customer_id": LONG, "occurred_at": at(0),
             "customer": {"email": "long@example.com", "accepts_marketing": True}},
            order(f"{LONG}-o", LONG, 2, "80.00", customer=LONG)]
    response = client.post("/api/v1/shops/default/events", json=body, headers=auth)
    assert response.status_code in (200, 202), response.get_json()
    doc = client.get(f"/api/v1/shops/default/customers/{quote(LONG, safe='')}", headers=auth).get_json()
    assert doc["customer_id"] == LONG
    assert doc["stage"] == "first_purchase" and doc["pending_events"] == 0
    assert doc["set_aside_events"] == [] and doc["processing_failure"] is None
    keys = [a.key for a in _awards_of(service)]
    assert keys and all(len(k) <= store.AWARD_KEY for k in keys)
    # the customer part is hashed (its encoding is 600 characters), the rest is as always
    hashed = awards._component(LONG)
    assert hashed.startswith("~") and len(hashed) == 41
    assert all(k.startswith(f"default/{hashed}/") for k in keys)
    assert doc["rewards"] and {r["key"] for r in doc["rewards"]} == set(keys)


def test_pseudonymising_a_customer_with_a_long_id_keeps_their_awards(client, auth, service):
    body = [{"id": "long-e1", "type": "customer_created", "customer_id": LONG, "occurred_at": at(0),
             "customer": {"email": "long@example.com"}},
            order("long-e2", "o-1", 2, "80.00", customer=LONG)]
    assert client.post("/api/v1/shops/default/events", json=body, headers=auth).status_code in (200, 202)
    before = {a.reward_id: a.status for a in _awards_of(service)}
    new_id = service.redact_customer("default", LONG)  # processed again at once (immediate queue)
    after = _awards_of(service)
    assert {a.customer_id for a in after} == {new_id}
    # the moved keys are the keys the new id's fold implies: nothing reversed, nothing granted twice
    assert {a.reward_id: a.status for a in after} == before
    assert all(a.key.startswith(f"default/{awards._component(new_id)}/") for a in after)


def test_award_keys_short_parts_are_unchanged_and_long_parts_hashed(backend):
    assert awards.award_key("s", "c/1", "welcome", "stage", ("potential", 1)) == "s/c%2F1/welcome/stage/potential/1"
    assert awards.award_key("s", "c-1", "points", "order", "ü" * 26) == "s/c-1/points/order/" + "%C3%BC" * 26
    long_key = awards.award_key("s", "x" * 200, "points", "order", "ü" * 200)
    assert long_key == awards.award_key("s", "x" * 200, "points", "order", "ü" * 200)  # deterministic
    assert len(long_key) <= store.AWARD_KEY
    assert awards._component("x" * 200) != awards._component("x" * 201)
    # a literal id shaped like a hashed part can never equal another id's hash
    lookalike = awards._component("x" * 200)
    assert awards._component(lookalike) == "%7E" + lookalike[1:]
    assert awards.AWARD_KEY == store.AWARD_KEY
    # the id columns take the longest ids the event schema accepts, and the derived ones
    assert identity.guest_id(None, "o" * 200).__len__() <= store.EXTERNAL_ID


# ================================================================ shops with webhooks
SHOPS = {
    "shopify-demo": ShopConfig(id="shopify-demo", platform="shopify", domain="ladder-demo.myshopify.com",
                               webhook_secret="shpss_test", mode="shadow", api_version="2025-07"),
    "woo-demo": ShopConfig(id="woo-demo", platform="woocommerce", domain="https://woo.example/",
                           webhook_secret="woo-secret", mode="shadow"),
    "default": ShopConfig(id="default", platform="generic", webhook_secret="generic-secret"),
}


@pytest.fixture
def webhook_app(ladder_settings):
    yield from app_with_shops(ladder_settings, SHOPS)


def _inbox_rows(db) -> list:
    with db.connect() as conn:
        return conn.execute(sa.select(store.inbox).order_by(store.inbox.c.pk)).all()


# ================================================================ 3. poison isolation
def _store(service, events):
    return ledger.store_events(service.db, "default", parse_events(events), "api")


@pytest.fixture
def poison(monkeypatch):
    """Folding the event with id "poison" crashes (as a bug in a fact computation would)."""
    real_apply = FactsAccumulator.apply

    def apply(self, event):
        if event.id == "poison":
            raise RuntimeError("boom: cannot fold this event")
        return real_apply(self, event)

    monkeypatch.setattr(FactsAccumulator, "apply", apply)


def _pending_customers(service) -> list[tuple[str, str]]:
    """What the consumers look for: the live lane's unapplied customers, the sweeper's due ones."""
    now = utcnow() + timedelta(minutes=1)  # any backoff before isolation has ended by then
    return sorted({*ledger.customers_with_unapplied(service.db),
                   *processing.wakeups_due(service.db, now)})


def test_an_event_that_crashes_the_fold_is_set_aside_and_the_rest_processed(service, client, auth, poison):
    events = journey("c-1")[:3]  # created, checkout, first order
    _store(service, events)
    service.process_customer("default", "c-1")
    _store(service, [order("poison", "o-bad", 5, "50.00"),
                     order("c-1-late", "o-late", 6, "60.00")])  # a later valid event of the same customer
    _store(service, journey("c-2")[:3])
    for attempt in range(1, processing.MAX_FAILURES):
        with pytest.raises(RuntimeError, match="boom"):
            service.process_customer("default", "c-1")
        doc = client.get("/api/v1/shops/default/customers/c-1", headers=auth).get_json()
        assert doc["processing_failure"]["failures"] == attempt
        assert "boom" in doc["processing_failure"]["error"]
        # backing off: the consumers leave c-1 alone for now; other customers go on
        assert ("default", "c-1") not in ledger.customers_with_unapplied(service.db)
        assert ("default", "c-2") in ledger.customers_with_unapplied(service.db)
    service.process_customer("default", "c-2")  # another customer is unaffected
    assert service.customer("default", "c-2")["stage"] == "first_purchase"

    state = service.process_customer("default", "c-1")  # the MAX_FAILURES-th: isolated, then processed
    assert state.facts["orders_count"] == 2  # the first order and the later valid one, not the poison
    doc = client.get("/api/v1/shops/default/customers/c-1", headers=auth).get_json()
    assert doc["pending_events"] == 0 and doc["processing_failure"] is None
    [aside] = doc["set_aside_events"]
    assert aside["id"] == "poison" and aside["at"]
    assert aside["reason"] == "RuntimeError: boom: cannot fold this event"
    applied = {r.event_id: (r.applied_at is not None, r.set_aside_at is not None) for r in _events_of(service, "c-1")}
    assert applied["c-1-late"] == (True, False) and applied["poison"] == (False, True)
    # nobody looks for the poison again, and processing again changes nothing
    assert _pending_customers(service) == []
    assert service.process_customer("default", "c-1").facts["orders_count"] == 2
    # a data request still lists the set-aside event (everything stored about the customer)
    assert "poison" in json.dumps(service.customer_data("default", "c-1"))


def test_a_poisoned_guest_event_backs_off_and_is_set_aside_on_its_account(service, poison):
    guest = identity.guest_id("ana@example.com")
    _store(service, [*journey("c-1")[:3], {**order("poison", "o-guest", 5, "50.00"), "customer_id": guest}])
    identity.link_all(service.db, "default", [(guest, "c-1")])
    for _ in range(1, processing.MAX_FAILURES):
        with pytest.raises(RuntimeError):
            service.process_customer("default", guest)  # a guest is processed as its account
        # the account backs off, and so do the guest's own events (the live lane looks by event)
        assert ledger.customers_with_unapplied(service.db) == []
    assert service.process_customer("default", guest).facts["orders_count"] == 1  # c-1 without the poison
    assert [e["id"] for e in service.customer("default", "c-1")["set_aside_events"]] == ["poison"]
    assert _pending_customers(service) == []


def test_an_event_that_makes_the_save_fail_is_set_aside(service, monkeypatch):
    """A database error inside the save transaction (PostgreSQL aborts the transaction)."""
    real_save_customer = processing._save_customer

    def save_customer(conn, shop_id, customer_id, state, evs, now):
        if any(e.id == "poison" for e in evs):  # a real constraint violation, on both backends
            conn.execute(store.shops.insert().values(shop_id=None))
        return real_save_customer(conn, shop_id, customer_id, state, evs, now)

    monkeypatch.setattr(processing, "_save_customer", save_customer)
    _store(service, [*journey("c-1")[:3], order("poison", "o-bad", 5, "50.00")])
    for _ in range(1, processing.MAX_FAILURES):
        with pytest.raises(sa.exc.IntegrityError):
            service.process_customer("default", "c-1")
    assert service.process_customer("default", "c-1").facts["orders_count"] == 1
    [aside] = service.customer("default", "c-1")["set_aside_events"]
    assert aside["id"] == "poison" and aside["reason"].startswith("IntegrityError: ")
    assert "INSERT" not in aside["reason"]  # the driver's message, not our SQL and parameters
    assert _pending_customers(service) == []


def test_a_customer_failing_without_any_new_event_is_a_dead_letter(service, monkeypatch):
    _store(service, journey("c-1")[:3])
    service.process_customer("default", "c-1")
    _store(service, [order("c-1-e9", "o-9", 7, "70.00")])
    real_fold = processing.fold

    def broken(timeline, inputs, as_of, shop_id, customer_id):
        if customer_id == "c-1":
            raise ValueError("the programme cannot fold this customer")
        return real_fold(timeline, inputs, as_of, shop_id, customer_id)

    monkeypatch.setattr(processing, "fold", broken)
    for _ in range(processing.MAX_FAILURES):
        with pytest.raises(ValueError):
            service.process_customer("default", "c-1")
    doc = service.customer("default", "c-1")
    assert doc["processing_failure"]["failures"] == processing.MAX_FAILURES
    assert "cannot fold" in doc["processing_failure"]["error"]
    [aside] = doc["set_aside_events"]
    assert aside["id"] == "c-1-e9" and "fails even without it" in aside["reason"]
    with service.db.connect() as conn:
        wake = conn.execute(sa.select(store.customers.c.next_wake_at)).scalar()
    assert wake is None  # no wake-up keeps retrying it
    assert _pending_customers(service) == []
    # fixed (the monkeypatch gone), a new event brings the customer back
    monkeypatch.setattr(processing, "fold", real_fold)
    _store(service, [order("c-1-e10", "o-10", 8, "70.00")])
    assert service.process_customer("default", "c-1").facts["orders_count"] == 2
    assert service.customer("default", "c-1")["processing_failure"] is None


# ---------------------------------------------------------------- the inbox
def test_an_inbox_row_that_keeps_failing_is_failed_after_max_attempts(webhook_app, monkeypatch):
    from loyalty_ladder.adapters.generic import GenericAdapter

    service = webhook_app.extensions["loyalty_ladder"].service
    monkeypatch.setattr(GenericAdapter, "parse", lambda self, topic, headers, body: (_ for _ in ()).throw(
        ConnectionError("the shop's API is down")))
    raw = json.dumps(journey("c-9")[:1]).encode()
    with store.begin_write(service.db) as conn:
        pk = conn.execute(store.inbox.insert().values(
            platform="generic", shop_id="default", delivery_id="d-9", topic="events", headers={},
            body=raw.decode(), received_at=utcnow() - timedelta(minutes=5), status="received")).inserted_primary_key[0]
    for attempt in range(1, inbox.MAX_ATTEMPTS):
        with pytest.raises(ConnectionError):
            service.process_inbox(pk)
        [row] = _inbox_rows(service.db)
        assert (row.status, row.attempts) == ("received", attempt)
        # the sweeper waits for the backoff, then offers it again
        assert inbox.sweep(service.db, older_than=timedelta(0)) == []
        assert inbox.sweep(service.db, older_than=timedelta(0), now=row.retry_at + timedelta(seconds=1)) == [pk]
    assert service.process_inbox(pk) == []  # the last attempt: given up, no exception
    [row] = _inbox_rows(service.db)
    assert row.status == "failed" and row.attempts == inbox.MAX_ATTEMPTS
    assert row.error == f"gave up after {inbox.MAX_ATTEMPTS} attempts: ConnectionError: the shop's API is down"
    assert inbox.sweep(service.db, older_than=timedelta(0), now=utcnow() + timedelta(days=1)) == []
