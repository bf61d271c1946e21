"""The inbox: receive (identify, verify, persist once), process, sweep, export and replay.

Driven through the generic adapter (signed with ``X-Ladder-Hmac-Sha256``) and a small test
platform with a set-up ping; the Shopify and WooCommerce adapters are tested by their modules.
"""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa

from loyalty_ladder import inbox, store
from loyalty_ladder.adapters.base import Inbound, get_header, hmac_sha256_base64
from loyalty_ladder.adapters.generic import GenericAdapter
from loyalty_ladder.clock import utcnow
from loyalty_ladder.errors import BadRequest, NotFound, SignatureError, Unauthorized
from loyalty_ladder.service import LadderService
from loyalty_ladder.shop import ShopConfig

from .conftest import install_adapters

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


class PingingAdapter(GenericAdapter):
    """A test platform: generic payloads, plus an unsigned form-encoded set-up ping and a
    topic that means nothing to do."""

    platform = "pinging"
    serves_webhooks = True  # GenericAdapter does not; this test platform does

    @classmethod
    def shop_hint(cls, headers):
        return get_header(headers, "X-Pinging-Source")

    def is_ping(self, headers, body):
        return body.startswith(b"webhook_id=") and "x-www-form-urlencoded" in (get_header(headers, "Content-Type") or "")

    def parse(self, topic, headers, body):
        if topic == "noop":
            return Inbound(note="noop deliveries carry nothing")
        return super().parse(topic, headers, body)


SHOPS = {
    "acme": ShopConfig(id="acme", platform="generic", domain="https://Acme.example/",
                       webhook_secret="new-secret", previous_webhook_secret="old-secret"),
    "beta": ShopConfig(id="beta", platform="generic", domain="beta.example", webhook_secret="beta-secret"),
    "default": ShopConfig(id="default", platform="generic"),  # no domain, no secret: API only
    "pings": ShopConfig(id="pings", platform="pinging", domain="pings.example", webhook_secret="ping-secret"),
}


@pytest.fixture(autouse=True)
def adapters(monkeypatch):
    yield from install_adapters(monkeypatch, ("generic", "loyalty_ladder.adapters.generic:GenericAdapter"),
                                ("pinging", f"{__name__}:PingingAdapter"), only=True)


@pytest.fixture
def service(ladder_settings):
    svc = LadderService(ladder_settings, shops=SHOPS)
    yield svc
    svc.db.dispose()


def events(customer: str = "ana", n: int = 1) -> list[dict]:
    out = [{"id": f"{customer}-created", "type": "customer_created", "customer_id": customer,
            "occurred_at": "2026-03-01T09:00:00Z", "customer": {"email": f"{customer}@example.com"}}]
    for i in range(1, n):
        out.append({"id": f"{customer}-order-{i}", "type": "order_paid", "customer_id": customer,
                    "occurred_at": f"2026-03-{i + 1:02d}T10:00:00Z",
                    "order": {"id": f"{customer}-o{i}", "total": "80.00", "currency": "EUR"}})
    return out


def signed(body: bytes | list | dict, secret: str = "new-secret", shop: str = "acme.example",
           delivery: str | None = "d-1", **extra: str) -> tuple[dict[str, str], bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"X-Ladder-Shop": shop, "X-Ladder-Hmac-Sha256": hmac_sha256_base64(secret, raw),
               "Content-Type": "application/json", **extra}
    if delivery is not None:
        headers["X-Ladder-Delivery-Id"] = delivery
    return headers, raw


def rows(service) -> list:
    with service.db.connect() as conn:
        return conn.execute(sa.select(store.inbox).order_by(store.inbox.c.pk)).all()


def ledger(service, shop: str = "acme") -> list[str]:
    with service.db.connect() as conn:
        return [r.event_id for r in conn.execute(sa.select(store.events.c.event_id).where(
            store.events.c.shop_id == shop).order_by(store.events.c.event_id))]


# ---------------------------------------------------------------- receive
def test_a_signed_webhook_is_stored_raw_and_nothing_is_applied_yet(service):
    headers, body = signed(events(), Authorization="Bearer nope", **{"X-Api-Token": "t", "X-Ladder-Topic": "events"})
    result = inbox.receive(service.db, service.shops, "generic", headers, body)
    assert (result.status_code, result.duplicate, result.status, result.shop_id) == (200, False, "accepted", "acme")
    [row] = rows(service)
    assert row.pk == result.inbox_pk
    assert (row.platform, row.shop_id, row.delivery_id, row.topic, row.status) == (
        "generic", "acme", "d-1", "events", "received")
    assert row.body == body.decode()  # exactly the signed bytes, not re-serialised JSON
    assert row.headers["X-Ladder-Hmac-Sha256"] == headers["X-Ladder-Hmac-Sha256"]
    assert row.headers["Content-Type"] == "application/json"
    # credentials never reach the database
    assert "Authorization" not in row.headers and "X-Api-Token" not in row.headers
    assert ledger(service) == []  # processing is the queue's job


def test_the_previous_secret_is_accepted_during_a_rotation(service):
    headers, body = signed(events(), secret="old-secret")
    assert inbox.receive(service.db, service.shops, "generic", headers, body).status == "accepted"


@pytest.mark.parametrize("secret", ["beta-secret", "wrong", ""])
def test_a_bad_signature_is_refused_and_nothing_is_stored(service, secret):
    headers, body = signed(events(), secret=secret)
    with pytest.raises(SignatureError) as err:
        inbox.receive(service.db, service.shops, "generic", headers, body)
    assert err.value.http_status == 401
    assert rows(service) == []


def test_a_missing_signature_is_refused(service):
    headers, body = signed(events())
    del headers["X-Ladder-Hmac-Sha256"]
    with pytest.raises(SignatureError):
        inbox.receive(service.db, service.shops, "generic", headers, body)
    assert rows(service) == []


@pytest.mark.parametrize("shop", ["unknown.example", None])
def test_an_unknown_or_unnamed_shop_is_refused_and_nothing_is_stored(service, shop):
    headers, body = signed(events(), shop="x")
    if shop is None:
        del headers["X-Ladder-Shop"]
    else:
        headers["X-Ladder-Shop"] = shop
    with pytest.raises(Unauthorized) as err:
        inbox.receive(service.db, service.shops, "generic", headers, body)
    assert err.value.http_status == 401 and not isinstance(err.value, SignatureError)
    assert rows(service) == []


def test_shops_are_matched_by_normalised_domain_or_by_id_without_one(service):
    headers, body = signed(events(), secret="beta-secret", shop="HTTPS://BETA.example/")
    assert inbox.receive(service.db, service.shops, "generic", headers, body).shop_id == "beta"
    # a shop without domain is named by its id; without a secret it accepts no signed webhook
    headers, body = signed(events(), secret="", shop="default")
    with pytest.raises(SignatureError, match="events API"):
        inbox.receive(service.db, service.shops, "generic", headers, body)


def test_a_signature_of_another_shop_of_the_same_platform_is_refused(service):
    headers, body = signed(events(), secret="beta-secret", shop="acme.example")
    with pytest.raises(SignatureError):
        inbox.receive(service.db, service.shops, "generic", headers, body)


def test_an_unknown_platform_is_not_found(service):
    headers, body = signed(events())
    with pytest.raises(NotFound):
        inbox.receive(service.db, service.shops, "magento", headers, body)


def test_a_platform_without_configured_shops_refuses_everything(service):
    service.shops = {k: v for k, v in SHOPS.items() if v.platform != "pinging"}
    with pytest.raises(Unauthorized, match="no pinging shop"):
        inbox.receive(service.db, service.shops, "pinging", {"Content-Type": "application/x-www-form-urlencoded"}, b"webhook_id=3")


def test_the_same_delivery_twice_is_a_no_op(service):
    headers, body = signed(events())
    first = inbox.receive(service.db, service.shops, "generic", headers, body)
    again = inbox.receive(service.db, service.shops, "generic", headers, body)
    assert (again.status_code, again.inbox_pk, again.duplicate, again.status) == (200, None, True, "duplicate")
    assert [r.pk for r in rows(service)] == [first.inbox_pk]
    # the same delivery id at another shop is another delivery
    headers, body = signed(events(), secret="beta-secret", shop="beta.example")
    assert inbox.receive(service.db, service.shops, "generic", headers, body).status == "accepted"


def test_the_same_delivery_racing_from_many_threads_is_stored_once(service):
    """One INSERT … ON CONFLICT DO NOTHING: no check-then-insert window, no retry, no error."""
    from concurrent.futures import ThreadPoolExecutor

    headers, body = signed(events())
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: inbox.receive(service.db, service.shops, "generic", headers, body),
                                range(16)))
    assert sorted(r.status for r in results) == ["accepted"] + ["duplicate"] * 15
    assert len(rows(service)) == 1


def test_a_body_that_is_not_utf8_is_a_bad_request_and_nothing_is_stored(service):
    headers, body = signed(b'{"name": "\xff\xfe"}')
    with pytest.raises(BadRequest) as err:
        inbox.receive(service.db, service.shops, "generic", headers, body)
    assert err.value.http_status == 400 and rows(service) == []


def test_a_ping_is_answered_and_stored_nowhere_without_a_signature(service):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    result = inbox.receive(service.db, service.shops, "pinging", form, b"webhook_id=12")
    assert (result.status_code, result.inbox_pk, result.duplicate, result.status) == (200, None, False, "ping")
    assert rows(service) == []
    # anything else unsigned is still refused
    with pytest.raises(Unauthorized):
        inbox.receive(service.db, service.shops, "pinging", {"Content-Type": "application/json"}, b"webhook_id=12")


def test_an_over_long_delivery_id_is_kept_as_a_stable_hash(service):
    long_id = "d" * 300
    headers, body = signed(events(), delivery=long_id)
    inbox.receive(service.db, service.shops, "generic", headers, body)
    assert inbox.receive(service.db, service.shops, "generic", headers, body).duplicate
    [row] = rows(service)
    assert row.delivery_id.startswith("sha256:") and len(row.delivery_id) <= store.EXTERNAL_ID


# ---------------------------------------------------------------- process
def receive_and_process(service, body, **kw) -> int:
    headers, raw = signed(body, **kw)
    pk = inbox.receive(service.db, service.shops, "generic", headers, raw).inbox_pk
    assert pk is not None
    service.process_inbox(pk)
    return pk


def test_processing_applies_the_events_and_marks_the_row_processed(service):
    pk = receive_and_process(service, events(n=3))
    [row] = rows(service)
    assert (row.pk, row.status, row.error) == (pk, "processed", None) and row.processed_at is not None
    assert ledger(service) == ["ana-created", "ana-order-1", "ana-order-2"]
    view = service.customer_view("acme", "ana")
    assert view["stage"] is not None and view["pending_events"] == 0
    # running the job again (a redundant enqueue) changes nothing
    service.process_inbox(pk)
    assert rows(service)[0].processed_at == row.processed_at


def test_a_malformed_body_fails_the_row_permanently(service):
    pk = receive_and_process(service, b"{not json")
    [row] = rows(service)
    assert (row.pk, row.status) == (pk, "failed") and "not valid JSON" in row.error
    assert ledger(service) == []


def test_invalid_events_fail_the_row_with_the_reasons(service):
    bad = events()
    bad[0]["type"] = "teleported"
    receive_and_process(service, bad)
    [row] = rows(service)
    assert row.status == "failed" and "invalid events" in row.error and "type" in row.error


def test_a_delivery_with_nothing_to_do_is_ignored_with_the_adapters_note(service):
    body = b"{}"
    headers = {"X-Pinging-Source": "pings.example", "X-Ladder-Topic": "noop",
               "X-Ladder-Hmac-Sha256": hmac_sha256_base64("ping-secret", body)}
    pk = inbox.receive(service.db, service.shops, "pinging", headers, body).inbox_pk
    service.process_inbox(pk)
    [row] = rows(service)
    assert (row.status, row.error) == ("ignored", "noop deliveries carry nothing")


def test_a_transient_failure_propagates_and_leaves_the_row_for_a_retry(service, monkeypatch):
    headers, raw = signed(events())
    pk = inbox.receive(service.db, service.shops, "generic", headers, raw).inbox_pk

    def down(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))

    with monkeypatch.context() as m:
        m.setattr(inbox, "apply_inbound", down)
        with pytest.raises(sa.exc.OperationalError):
            service.process_inbox(pk)
    assert rows(service)[0].status == "received"
    service.process_inbox(pk)
    assert rows(service)[0].status == "processed"


def test_apply_inbound_gets_the_parsed_inbound_and_the_platform_as_source(service, monkeypatch):
    seen = []
    monkeypatch.setattr(inbox, "apply_inbound",
                        lambda db, shop_id, programme, inbound, source: seen.append((shop_id, inbound, source)) or [])
    receive_and_process(service, events())
    assert seen == [("acme", Inbound(events=tuple(events())), "generic")]


def test_a_row_of_a_shop_no_longer_configured_fails(service):
    headers, raw = signed(events())
    pk = inbox.receive(service.db, service.shops, "generic", headers, raw).inbox_pk
    service.shops = {k: v for k, v in SHOPS.items() if k != "acme"}
    service.process_inbox(pk)
    assert rows(service)[0].status == "failed" and "no longer configured" in rows(service)[0].error


def test_processing_a_missing_row_does_nothing(service):
    service.process_inbox(12345)
    assert rows(service) == []


# ---------------------------------------------------------------- sweep
def test_sweep_finds_rows_left_received(service):
    first = inbox.receive(service.db, service.shops, "generic", *signed(events("ana"), delivery="a")).inbox_pk
    second = inbox.receive(service.db, service.shops, "generic", *signed(events("bob"), delivery="b")).inbox_pk
    now = utcnow()
    assert inbox.sweep(service.db, timedelta(seconds=60), now=now) == []  # too fresh: its job may still run
    later = now + timedelta(minutes=5)
    assert inbox.sweep(service.db, timedelta(seconds=60), now=later) == [first, second]
    service.process_inbox(first)
    assert inbox.sweep(service.db, timedelta(seconds=60), now=later) == [second]


# ---------------------------------------------------------------- export / replay
def test_export_then_replay_into_a_fresh_database_gives_the_same_inbox(service, ladder_settings, tmp_path):
    deliveries = [signed(events("ana", 2), delivery="a"),
                  signed(events("bob"), delivery="b", secret="old-secret"),
                  signed(b"{not json", delivery="c"),
                  signed(events("cy"), secret="beta-secret", shop="beta.example", delivery="a")]
    for headers, raw in deliveries:
        service.process_inbox(inbox.receive(service.db, service.shops, "generic", headers, raw).inbox_pk)
    records = [json.loads(json.dumps(r)) for r in inbox.export(service.db)]  # through JSON lines and back
    assert [r["platform"] for r in records] == ["generic"] * 4
    assert [r["body"] for r in records] == [raw.decode() for _, raw in deliveries]
    assert all(set(r) == {"platform", "headers", "body", "received_at"} for r in records)
    assert records[0]["received_at"].endswith("Z")

    # the same records into the same database: every one is a known delivery
    assert inbox.replay(service.db, service.shops, records) == {"accepted": 0, "duplicates": 4, "pings": 0, "rejected": 0}

    other = LadderService(replace(ladder_settings, database_url=f"sqlite:///{tmp_path / 'other.db'}"), shops=SHOPS)
    try:
        enqueued: list[int] = []
        counts = inbox.replay(other.db, other.shops, records, enqueue=enqueued.append)
        assert counts == {"accepted": 4, "duplicates": 0, "pings": 0, "rejected": 0}
        for pk in enqueued:
            other.process_inbox(pk)
        assert [(r.shop_id, r.delivery_id, r.status) for r in rows(other)] == [
            (r.shop_id, r.delivery_id, r.status) for r in rows(service)]
        assert ledger(other) == ledger(service) and ledger(other, "beta") == ledger(service, "beta") == ["cy-created"]
    finally:
        other.db.dispose()


def test_export_filters_by_time_platform_and_shop(service):
    inbox.receive(service.db, service.shops, "generic", *signed(events("ana"), delivery="a"))
    cut = utcnow()
    inbox.receive(service.db, service.shops, "generic", *signed(events("bob"), delivery="b", secret="beta-secret", shop="beta.example"))
    assert [json.loads(r["body"])[0]["customer_id"] for r in inbox.export(service.db, since=cut)] == ["bob"]
    assert [json.loads(r["body"])[0]["customer_id"] for r in inbox.export(service.db, shop_id="acme")] == ["ana"]
    assert list(inbox.export(service.db, platform="pinging")) == []


def test_export_pages_through_many_rows(service, monkeypatch):
    monkeypatch.setattr(inbox, "_EXPORT_BATCH", 2)
    for i in range(5):
        inbox.receive(service.db, service.shops, "generic", *signed(events(f"c{i}"), delivery=f"d{i}"))
    assert [json.loads(r["body"])[0]["customer_id"] for r in inbox.export(service.db)] == [f"c{i}" for i in range(5)]


def test_replay_verifies_signatures_again_and_reports_refused_records(service):
    headers, raw = signed(events())
    tampered = {"platform": "generic", "headers": headers, "body": raw.decode().replace("ana", "eve")}
    refused: list[tuple[int, str]] = []
    records = [tampered, {"platform": "generic"}, "not an object",
               {"platform": "generic", "headers": headers, "body": raw.decode()},
               {"platform": "pinging", "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                "body": "webhook_id=4"}]
    counts = inbox.replay(service.db, service.shops, records, on_reject=lambda n, msg: refused.append((n, msg)))
    assert counts == {"accepted": 1, "duplicates": 0, "pings": 1, "rejected": 3}
    assert [n for n, _ in refused] == [1, 2, 3]
    assert "signature" in refused[0][1]
    [row] = rows(service)
    assert row.status == "received"  # without a queue, the worker's sweeper processes it


def test_stored_headers_keep_vendor_headers_and_drop_credentials(backend):  # pure; the module is parametrized
    kept = inbox.stored_headers({
        "X-Shopify-Topic": "orders/paid", "X-Shopify-Hmac-Sha256": "abc=", "X-Shopify-Shop-Domain": "d",
        "X-WC-Webhook-Delivery-ID": "9", "Content-Type": "application/json", "User-Agent": "Shopify",
        "Authorization": "Bearer x", "X-Shopify-Access-Token": "shpat", "Cookie": "a=b", "X-Api-Key": "k",
        "X-Client-Secret": "s"})
    assert kept == {"X-Shopify-Topic": "orders/paid", "X-Shopify-Hmac-Sha256": "abc=", "X-Shopify-Shop-Domain": "d",
                    "X-WC-Webhook-Delivery-ID": "9", "Content-Type": "application/json"}


def test_a_webhook_whose_events_are_invalid_leaves_no_guest_link(service):
    from loyalty_ladder.errors import BadRequest as Bad

    programme = service.programme("acme")[0]
    bad = Inbound(events=({"id": "e", "type": "order_paid"},), links=(("guest:abc", "ana"),))
    with pytest.raises(Bad):
        inbox.apply_inbound(service.db, "acme", programme, bad, "generic")
    with service.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.customer_links)).scalar() == 0
