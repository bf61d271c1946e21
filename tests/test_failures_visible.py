"""Failures visible and replayable: inbox rows and deliveries by status through the API and the
CLI, retries that send them round again (idempotently), ``/healthz`` degraded when failures pile
up, and a shop whose currency is not its programme's refused at start."""
from __future__ import annotations

import itertools
import json
from datetime import timedelta

import pytest
import responses
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from loyalty_ladder import inbox, inbox_failures, store
from loyalty_ladder.adapters.generic import DEFAULT_TOPIC as GENERIC_TOPIC
from loyalty_ladder.app import create_app
from loyalty_ladder.cli import main
from loyalty_ladder.clock import utcnow
from loyalty_ladder.errors import ConfigError
from loyalty_ladder.outbox import failures
from loyalty_ladder.service import LadderService

from .conftest import ADMIN_TOKEN, ROOT
from .test_delivery import GRAPHQL, SHOPIFY, WOO, is_discount_create, state, welcome_delivery

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
_DELIVERY_IDS = itertools.count(1)


def add_inbox_row(db, *, shop="default", status="failed", error="malformed JSON", body='{"secret": "ana@x"}',
                  received_at=None, topic="orders/paid") -> int:
    now = utcnow()
    with store.begin_write(db) as conn:
        return int(conn.execute(store.inbox.insert().values(
            platform="generic", shop_id=shop, delivery_id=f"d-{next(_DELIVERY_IDS)}", topic=topic,
            headers={"X-Ladder-Topic": "orders/paid"}, body=body, received_at=received_at or now, status=status,
            processed_at=None if status == "received" else now, error=error)).inserted_primary_key[0])


def inbox_status(db, pk):
    with db.connect() as conn:
        return conn.execute(sa.select(store.inbox.c.status, store.inbox.c.error)
                            .where(store.inbox.c.pk == pk)).one()


# ------------------------------------------------------------------ inbox: API
def test_failed_inbox_rows_are_listed_without_their_body(client, service):
    failed = add_inbox_row(service.db)
    add_inbox_row(service.db, status="processed", error=None)
    answer = client.get("/api/v1/shops/default/inbox?status=failed", headers=AUTH)
    assert answer.status_code == 200
    page = answer.get_json()
    assert [row["pk"] for row in page["items"]] == [failed]
    row = page["items"][0]
    assert set(row) == {"pk", "platform", "shop", "topic", "delivery_id", "status", "error", "received_at",
                        "processed_at"}
    assert row["status"] == "failed" and row["error"] == "malformed JSON"
    assert "ana@x" not in answer.get_data(as_text=True)  # the body carries personal data
    assert page["limit"] == 50 and page["next_before"] is None


def test_inbox_listing_pages_newest_first(client, service):
    pks = [add_inbox_row(service.db) for _ in range(5)]
    first = client.get("/api/v1/shops/default/inbox?limit=2", headers=AUTH).get_json()
    assert [r["pk"] for r in first["items"]] == pks[:-3:-1] and first["next_before"] == pks[-2]
    second = client.get(f"/api/v1/shops/default/inbox?limit=2&before={first['next_before']}", headers=AUTH).get_json()
    assert [r["pk"] for r in second["items"]] == [pks[2], pks[1]]


def test_inbox_listing_needs_the_token_a_known_shop_and_a_known_status(client):
    assert client.get("/api/v1/shops/default/inbox").status_code == 401
    assert client.get("/api/v1/shops/nope/inbox", headers=AUTH).status_code == 404
    bad = client.get("/api/v1/shops/default/inbox?status=broken", headers=AUTH)
    assert bad.status_code == 422 and "status" in bad.get_json()["errors"]
    assert client.get("/api/v1/shops/default/inbox?limit=501", headers=AUTH).status_code == 422


# ------------------------------------------------------------------ inbox: retry
def test_retry_sets_failed_rows_back_to_received_once(service):
    failed = add_inbox_row(service.db)
    done = add_inbox_row(service.db, status="processed", error=None)
    first = inbox_failures.retry(service.db, [failed, done, 999])
    assert first.retried == (failed,)
    assert dict(first.skipped) == {done: "processed: only failed or ignored rows are retried",
                                   999: "no such inbox row"}
    assert tuple(inbox_status(service.db, failed)) == ("received", None)
    again = inbox_failures.retry(service.db, [failed])
    assert again.retried == () and "already received" in dict(again.skipped)[failed]


def test_retry_by_status_and_shop_and_never_a_redacted_row(service):
    mine = add_inbox_row(service.db, shop="default")
    other = add_inbox_row(service.db, shop="other")
    redacted = add_inbox_row(service.db, error="redacted")
    result = inbox_failures.retry(service.db, status="failed", shop_id="default")
    assert result.retried == (mine,) and dict(result.skipped) == {redacted: "redacted: its body is gone"}
    assert inbox_status(service.db, other).status == "failed"


def test_a_retried_row_is_processed_again(service):
    """After the cause is fixed, the consumer processes the row like a new one."""
    body = json.dumps({"id": "w1", "type": "customer_created", "customer_id": "ana",
                       "occurred_at": utcnow().isoformat()})
    pk = add_inbox_row(service.db, body=body, topic=GENERIC_TOPIC)
    assert inbox_failures.retry(service.db, [pk]).retried == (pk,)
    service.process_inbox(pk)
    assert inbox_status(service.db, pk).status == "processed"


# ------------------------------------------------------------------ deliveries
@pytest.fixture
def shop_service(ladder_settings):
    made = LadderService(ladder_settings, shops={"s": SHOPIFY, "w": WOO})
    yield made
    made.db.dispose()


@responses.activate
def test_a_failed_grant_is_listed_retried_and_delivered(shop_service):
    pk = welcome_delivery(shop_service, "s")
    responses.post(GRAPHQL, match=[is_discount_create], status=403, json={"errors": "Access denied: write_discounts"})
    shop_service.run_delivery(pk)
    assert state(shop_service, pk)[:2] == ("failed", "failed")
    listed = failures.list_rows(shop_service.db, shop_id="s", status="failed")
    assert [row["pk"] for row in listed] == [pk] and "write_discounts" in listed[0]["last_error"]

    result = failures.retry(shop_service.db, status="failed", shop_id="s")
    assert result.retried == (pk,)
    assert state(shop_service, pk)[:2] == ("pending", "due")  # the award is due again
    assert pk in shop_service.due_deliveries()
    assert failures.retry(shop_service.db, [pk]).skipped == ((pk, "already pending"),)  # idempotent

    responses.replace(responses.POST, GRAPHQL, json={"data": {"discountCodeBasicCreate": {
        "codeDiscountNode": {"id": "gid://shopify/DiscountCodeNode/9"}, "userErrors": []}}})
    shop_service.run_delivery(pk)
    assert state(shop_service, pk)[:2] == ("delivered", "delivered")


def test_deliveries_are_listed_through_the_api(client, service):
    answer = client.get("/api/v1/shops/default/deliveries?status=failed", headers=AUTH)
    assert answer.status_code == 200 and answer.get_json()["items"] == []


# ------------------------------------------------------------------ healthz
def test_healthz_is_degraded_when_failures_pile_up(app, client, service):
    ok = client.get("/healthz").get_json()
    assert ok["status"] == "ok" and ok["failures"] == {"inbox_failed_24h": 0, "deliveries_failed_24h": 0,
                                                        "threshold": 10}
    app.config["LADDER_HEALTH_FAILURE_THRESHOLD"] = 2
    for _ in range(3):
        add_inbox_row(service.db)
    old = add_inbox_row(service.db)
    with store.begin_write(service.db) as conn:  # a failure of the day before yesterday does not count
        conn.execute(store.inbox.update().where(store.inbox.c.pk == old)
                     .values(processed_at=utcnow() - timedelta(days=2)))
    answer = client.get("/healthz")
    assert answer.status_code == 200  # liveness: alive, but look
    body = answer.get_json()
    assert body["status"] == "degraded" and body["failures"]["inbox_failed_24h"] == 3


# ------------------------------------------------------------------ currency
def write_shops(tmp_path, entries) -> str:
    path = tmp_path / "shops.yaml"
    path.write_text(yaml.safe_dump(entries))
    return str(path)


def test_a_shop_in_another_currency_than_its_programme_is_refused_at_start(ladder_settings, tmp_path):
    from dataclasses import replace

    shops = write_shops(tmp_path, [{"id": "default", "platform": "generic"},
                                   {"id": "us", "platform": "generic", "currency": "USD"}])
    with pytest.raises(ConfigError) as info:
        create_app(replace(ladder_settings, shops_file=shops), immediate_queue=True)
    assert "shop 'us' has currency USD but its programme's currency is EUR" in info.value.message


def test_the_implicit_currency_is_named_as_the_default(ladder_settings, tmp_path):
    from dataclasses import replace

    usd_rules = tmp_path / "usd"
    usd_rules.mkdir()
    text = (ROOT / "rules" / "ladder.yaml").read_text().replace("currency: EUR", "currency: USD")
    assert "currency: USD" in text
    (usd_rules / "ladder.yaml").write_text(text)
    shops = write_shops(tmp_path, [{"id": "default", "platform": "generic"}])
    with pytest.raises(ConfigError, match=r"currency EUR \(the default; set currency: in the shops file\) "
                                          r"but its programme's currency is USD"):
        LadderService(replace(ladder_settings, shops_file=shops, rules=usd_rules))
    # without a shops file the implied default shop follows the programme
    LadderService(replace(ladder_settings, rules=usd_rules)).db.dispose()


# ------------------------------------------------------------------ CLI
def cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_inbox_list_and_retry_on_the_command_line(service, ladder_settings):
    pk = add_inbox_row(service.db)
    env = {"LADDER_DATABASE_URL": ladder_settings.database_url}
    listed = cli("inbox", "list", "--status", "failed", env=env)
    assert listed.exit_code == 0, listed.output
    assert f"{pk}\tfailed\tdefault\tgeneric\torders/paid" in listed.stdout
    assert "ana@x" not in listed.output
    assert "reading database sqlite:///" in listed.stderr
    as_json = cli("inbox", "list", "--json", env=env)
    assert json.loads(as_json.stdout.splitlines()[0])["pk"] == pk

    retried = cli("inbox", "retry", str(pk), env=env)
    assert retried.exit_code == 0 and f"inbox row {pk}: retried" in retried.stdout
    again = cli("inbox", "retry", "--status", "failed", env=env)
    assert again.exit_code == 0 and "0 inbox row(s) retried" in again.stdout
    missing = cli("inbox", "retry", "12345", env=env)
    assert missing.exit_code == 3 and "no such inbox row" in missing.stdout
    assert cli("inbox", "retry", env=env).exit_code == 2  # names nothing: a usage error


def test_deliveries_list_on_the_command_line(service, ladder_settings):
    env = {"LADDER_DATABASE_URL": ladder_settings.database_url}
    listed = cli("deliveries", "list", "--status", "failed", env=env)
    assert listed.exit_code == 0 and listed.stdout.startswith("pk\tstatus\tshop")
    retried = cli("deliveries", "retry", "--status", "failed", env=env)
    assert retried.exit_code == 0 and "0 delivery(s) retried" in retried.stdout


def test_an_old_row_is_named_and_retry_now_processes_it(service, ladder_settings):
    body = json.dumps({"id": "w2", "type": "customer_created", "customer_id": "bo",
                       "occurred_at": utcnow().isoformat()})
    old = add_inbox_row(service.db, body=body, topic=GENERIC_TOPIC, received_at=utcnow() - timedelta(days=8))
    env = {"LADDER_DATABASE_URL": ladder_settings.database_url, "LADDER_RULES": str(ladder_settings.rules)}
    warned = cli("inbox", "retry", str(old), env=env)
    assert warned.exit_code == 0 and "sweep no longer looks at it" in warned.stderr
    assert old not in inbox.sweep(service.db)  # received again, but too old for the sweep
    with store.begin_write(service.db) as conn:
        conn.execute(store.inbox.update().where(store.inbox.c.pk == old).values(status="failed", error="x"))
    now = cli("inbox", "retry", "--now", str(old), env=env)
    assert now.exit_code == 0, now.output
    assert f"inbox row {old}: processed" in now.stdout
    assert inbox_status(service.db, old).status == "processed"
