"""The audit log: every admin action (manual adjustments, turns, exclusions, retries of inbox rows
and deliveries) is written with its author and reason in the action's own transaction, and read
newest first, filtered and a page at a time through ``audit.entries``, the API and ``ladder audit``."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from loyalty_ladder import audit, inbox_failures, store
from loyalty_ladder.cli import main
from loyalty_ladder.errors import BadRequest
from loyalty_ladder.outbox import failures

from .conftest import ADMIN_TOKEN
from .test_adjustments import STAFF, adjust, seed
from .test_failures_visible import add_inbox_row

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

both = pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                               indirect=True)


def write(db, n: int, *, shop: str = "default", action: str = "stage_set", start: datetime = T0) -> list[int]:
    with store.begin_write(db) as conn:
        return [audit.record(conn, author=f"a{i}", action=action, shop_id=shop, target=f"c{i}", reason=f"r{i}",
                             detail={"i": i}, at=start + timedelta(hours=i)) for i in range(n)]


# ------------------------------------------------------------------ reads
@both
def test_entries_are_newest_first_a_page_at_a_time(service):
    pks = write(service.db, 5)
    first = audit.entries(service.db, limit=2)
    assert [e["pk"] for e in first.items] == pks[:-3:-1] and first.next_cursor is not None
    second = audit.entries(service.db, limit=2, cursor=first.next_cursor)
    assert [e["pk"] for e in second.items] == [pks[2], pks[1]]
    last = audit.entries(service.db, limit=2, cursor=second.next_cursor)
    assert [e["pk"] for e in last.items] == [pks[0]] and last.next_cursor is None
    exact = audit.entries(service.db, limit=5)
    assert len(exact.items) == 5 and exact.next_cursor is None  # a full last page says there is no more
    entry = first.items[0]
    assert (entry["author"], entry["action"], entry["target"], entry["reason"], entry["detail"]) == \
        ("a4", "stage_set", "c4", "r4", {"i": 4})
    assert entry["at"] == T0 + timedelta(hours=4)


def test_entries_filter_by_shop_time_and_action(service):
    write(service.db, 3)
    write(service.db, 2, shop="other", action="turn_started")
    with store.begin_write(service.db) as conn:
        audit.record(conn, author="ops", action="inbox_retried", shop_id=None, target="7", at=T0)
    assert {e["shop_id"] for e in audit.entries(service.db, shop_id="other").items} == {"other"}
    assert len(audit.entries(service.db).items) == 6
    assert [e["target"] for e in audit.entries(service.db, since=T0 + timedelta(hours=1), shop_id="default").items] \
        == ["c2", "c1"]
    assert [e["action"] for e in audit.entries(service.db, action="inbox_retried").items] == ["inbox_retried"]
    assert audit.entries(service.db, action="nothing").items == []


def test_a_cursor_not_made_here_is_refused(service):
    for bad in ("zzz", "!!!", "YTE6eA", "YTE6LTE", "YTI6NQ"):  # "a1:x", "a1:-1", "a2:5"
        with pytest.raises(BadRequest, match="invalid cursor"):
            audit.entries(service.db, cursor=bad)
    assert audit.decode_cursor(audit.encode_cursor(42)) == 42


# ------------------------------------------------------------------ every action writes its row
def test_every_admin_action_is_audited_with_author_and_reason(client, service, ladder_settings):
    before = seed(client)
    welcome = next(r["key"] for r in before["rewards"] if r["reward"] == "welcome")
    assert adjust(client, {"action": "set_stage", "stage": "regular", "reason": "vip"}).status_code == 201
    assert adjust(client, {"action": "start_turn", "reason": "back"}).status_code == 201
    assert adjust(client, {"action": "grant", "reward": "vip", "reason": "goodwill"}).status_code == 201
    assert adjust(client, {"action": "revoke", "award_key": welcome, "reason": "staff"}).status_code == 201
    assert client.post("/api/v1/shops/default/turns", json={"reason": "season"}, headers=STAFF).status_code == 201
    assert client.put("/api/v1/shops/default/exclusions", json={"tags": ["staff"], "reason": "staff"},
                      headers=STAFF).status_code == 200
    row = add_inbox_row(service.db)
    assert inbox_failures.retry(service.db, [row], author="kim", reason="adapter fixed").retried == (row,)

    entries = audit.entries(service.db, shop_id="default").items
    by_action = {e["action"]: e for e in entries}
    assert {"stage_set", "customer_turn_started", "reward_granted", "reward_revoked", "turn_started",
            "exclusions_set", "inbox_retried"} <= set(by_action)
    assert all(by_action[a]["author"] == "maria" for a in
               ("stage_set", "customer_turn_started", "reward_granted", "reward_revoked", "turn_started",
                "exclusions_set"))
    assert by_action["reward_revoked"]["detail"]["award_key"] == welcome
    assert by_action["reward_revoked"]["reason"] == "staff"
    assert (by_action["inbox_retried"]["author"], by_action["inbox_retried"]["target"],
            by_action["inbox_retried"]["reason"]) == ("kim", str(row), "adapter fixed")
    assert by_action["inbox_retried"]["detail"]["status_before"] == "failed"


def test_a_refused_action_writes_no_audit_row(client, service):
    seed(client)
    assert adjust(client, {"action": "set_stage", "stage": "potential", "reason": "x"}).status_code == 409
    assert adjust(client, {"action": "grant", "reward": "nope", "reason": "x"}).status_code == 400
    assert {e["action"] for e in audit.entries(service.db).items} <= {"programme_activated"}


def test_a_retry_without_an_author_writes_no_row_and_one_with_writes_one_per_row(service):
    rows = [add_inbox_row(service.db), add_inbox_row(service.db)]
    assert inbox_failures.retry(service.db, [rows[0]]).retried == (rows[0],)
    assert audit.entries(service.db, action="inbox_retried").items == []
    result = inbox_failures.retry(service.db, [rows[0], rows[1]], author="kim")
    assert result.retried == (rows[1],)  # rows[0] is already received: no row for it
    assert [e["target"] for e in audit.entries(service.db, action="inbox_retried").items] == [str(rows[1])]


def _failed_delivery(db) -> int:
    """An award and its grant delivery, failed (as the deliveries lane leaves one the shop refused)."""
    now = datetime.now(UTC)
    with store.begin_write(db) as conn:
        conn.execute(store.awards.insert().values(
            key="default/ana/welcome/stage/potential/1", shop_id="default", customer_id="ana", reward_id="welcome",
            type="discount", scope="stage", scope_ref="potential/1", stage="potential", turn=1, status="failed",
            params={}, rule_version="v1", granted_at=now, created_at=now, updated_at=now))
        return int(conn.execute(store.deliveries.insert().values(
            award_key="default/ana/welcome/stage/potential/1", shop_id="default", customer_id="ana", action="grant",
            status="failed", attempts=5, last_error="403 write_discounts", detail={}, created_at=now,
            updated_at=now)).inserted_primary_key[0])


def test_a_delivery_retry_is_audited(service):
    pk = _failed_delivery(service.db)
    assert failures.retry(service.db, [pk], author="kim", reason="scope granted").retried == (pk,)
    (entry,) = audit.entries(service.db, action="delivery_retried").items
    assert (entry["shop_id"], entry["author"], entry["target"], entry["reason"]) == ("default", "kim", str(pk),
                                                                                     "scope granted")
    assert entry["detail"] == {"award_key": "default/ana/welcome/stage/potential/1", "action": "grant",
                               "last_error": "403 write_discounts"}


# ------------------------------------------------------------------ API
def test_the_audit_log_through_the_api(client, service):
    pks = write(service.db, 3)
    write(service.db, 1, shop="other")
    page = client.get("/api/v1/shops/default/audit?limit=2", headers=AUTH)
    assert page.status_code == 200
    body = page.get_json()
    assert [e["id"] for e in body["items"]] == [pks[2], pks[1]] and body["limit"] == 2
    assert set(body["items"][0]) == {"id", "at", "shop", "author", "action", "target", "reason", "detail"}
    assert body["items"][0]["at"] == "2026-03-01T11:00:00Z" and body["items"][0]["detail"] == {"i": 2}
    rest = client.get(f"/api/v1/shops/default/audit?limit=2&cursor={body['next_cursor']}", headers=AUTH).get_json()
    assert [e["id"] for e in rest["items"]] == [pks[0]] and rest["next_cursor"] is None
    since = client.get("/api/v1/shops/default/audit?since=2026-03-01T10:00:00Z", headers=AUTH).get_json()
    assert [e["id"] for e in since["items"]] == [pks[2], pks[1]]
    assert client.get("/api/v1/shops/default/audit?action=turn_started", headers=AUTH).get_json()["items"] == []


def test_the_audit_api_refuses_bad_queries(client):
    assert client.get("/api/v1/shops/default/audit").status_code == 401
    assert client.get("/api/v1/shops/nope/audit", headers=AUTH).status_code == 404
    assert client.get("/api/v1/shops/default/audit?limit=0", headers=AUTH).status_code == 422
    assert client.get("/api/v1/shops/default/audit?since=2026-03-01T10:00:00", headers=AUTH).status_code == 422
    bad = client.get("/api/v1/shops/default/audit?cursor=zzz", headers=AUTH)
    assert bad.status_code == 422 and "cursor" in json.dumps(bad.get_json()["errors"])


# ------------------------------------------------------------------ CLI
def cli(*args, env):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_ladder_audit_prints_a_table_or_json_with_filters(service, ladder_settings):
    write(service.db, 3)
    write(service.db, 1, shop="other", action="turn_started")
    env = {"LADDER_DATABASE_URL": ladder_settings.database_url}
    table = cli("audit", env=env)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0] == "id\tat\tshop\tauthor\taction\ttarget\treason"
    assert lines[1].split("\t")[2:] == ["other", "a0", "turn_started", "c0", "r0"]
    assert len(lines) == 5 and "reading database sqlite:///" in table.stderr

    shop = cli("audit", "--shop", "default", "--action", "stage_set", "--since", "2026-03-01T10:00:00Z", "--json",
               env=env)
    docs = [json.loads(line) for line in shop.stdout.splitlines()]
    assert [d["target"] for d in docs] == ["c2", "c1"] and docs[0]["detail"] == {"i": 2}

    paged = cli("audit", "--limit", "2", env=env)
    assert len(paged.stdout.splitlines()) == 3 and "more: --cursor " in paged.stderr
    cursor = paged.stderr.split("more: --cursor ")[1].split()[0]
    rest = cli("audit", "--limit", "2", "--cursor", cursor, env=env)
    assert len(rest.stdout.splitlines()) == 3 and "more:" not in rest.stderr

    assert cli("audit", "--cursor", "zzz", env=env).exit_code == 1
    assert cli("audit", "--since", "yesterday", env=env).exit_code == 2
    empty = cli("audit", "--action", "nothing", env=env)
    assert empty.exit_code == 0 and "(none)" in empty.stderr


def test_the_retry_commands_write_an_audit_row_with_the_author(service, ladder_settings):
    row = add_inbox_row(service.db)
    pk = _failed_delivery(service.db)
    env = {"LADDER_DATABASE_URL": ladder_settings.database_url, "LADDER_AUTHOR": "ops-team"}
    assert cli("inbox", "retry", str(row), "--reason", "adapter upgraded", env=env).exit_code == 0
    assert cli("deliveries", "retry", str(pk), "--author", "kim", env=env).exit_code == 0
    entries = {e["action"]: e for e in audit.entries(service.db).items}
    assert (entries["inbox_retried"]["author"], entries["inbox_retried"]["reason"]) == ("ops-team", "adapter upgraded")
    assert (entries["delivery_retried"]["author"], entries["delivery_retried"]["reason"]) == ("kim", None)
    t = store.audit_log
    with service.db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t)
                            .where(t.c.action.in_(["inbox_retried", "delivery_retried"]))).scalar() == 2
