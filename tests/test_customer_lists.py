"""Seeing customers: ``GET …/customers`` (filters, keyset pages, e-mail search through guest
links), ``GET …/stats``, and ``ladder customers`` / ``ladder stats`` — through the real app, the
real command and a real database."""
from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from loyalty_ladder import customer_lists, identity, store
from loyalty_ladder.cli import main

pytestmark = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

NOW = datetime.now(UTC).replace(microsecond=0)


def at(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")


def created(customer: str, days_ago: float, email: str | None = None, marketing: bool = True) -> dict:
    return {"id": f"{customer}-created", "type": "customer_created", "customer_id": customer,
            "occurred_at": at(days_ago),
            "customer": {"email": email or f"{customer}@example.com", "accepts_marketing": marketing}}


def paid(customer: str, n: int, days_ago: float, total: str = "80.00", email: str | None = None) -> dict:
    body = {"id": f"{customer}-paid-{n}", "type": "order_paid", "customer_id": customer, "occurred_at": at(days_ago),
            "order": {"id": f"{customer}-o{n}", "total": total, "currency": "EUR", "discount_codes": [],
                      "discount_total": "0.00"}}
    if email:
        body["customer"] = {"email": email}
    return body


def post(client, auth, events, shop="default"):
    response = client.post(f"/api/v1/shops/{shop}/events", json=events, headers=auth)
    assert response.status_code == 202, response.get_json()


def listing(client, auth, shop="default", **query):
    return client.get(f"/api/v1/shops/{shop}/customers", query_string=query, headers=auth)


@pytest.fixture
def shop(client, auth):
    """Customers at several places on the default ladder:

    * p-1, p-2, p-3: potential (created, no order);
    * v-1: visitor (a checkout);
    * f-1: first purchase (an order a week ago);
    * l-1: first purchase and lapsed (one order 200 days ago; the stage lapses after 180);
    * a guest (bo@example.com) with one order, not linked to any account.
    """
    post(client, auth, [created("p-1", 3), created("p-2", 3), created("p-3", 3, marketing=False)])
    post(client, auth, [created("v-1", 5),
                        {"id": "v-1-checkout", "type": "checkout_started", "customer_id": "v-1",
                         "occurred_at": at(4)}])
    post(client, auth, [created("f-1", 10), paid("f-1", 1, 7)])
    post(client, auth, [created("l-1", 220), paid("l-1", 1, 200)])
    post(client, auth, [paid(identity.guest_id("bo@example.com"), 1, 2, email="Bo@Example.com")])
    return ["f-1", identity.guest_id("bo@example.com"), "l-1", "p-1", "p-2", "p-3", "v-1"]


def ids(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [item["customer_id"] for item in response.get_json()["items"]]


# ------------------------------------------------------------------ the list
def test_pages_walk_every_customer_once_in_id_order(client, auth, shop):
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 3} if cursor is None else {"limit": 3, "cursor": cursor}
        response = listing(client, auth, **query)
        body = response.get_json()
        seen += ids(response)
        pages += 1
        assert body["limit"] == 3 and len(body["items"]) <= 3
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(shop) and pages == 3
    # a page that ends exactly at the last customer says there is no more
    exact = listing(client, auth, limit=len(shop)).get_json()
    assert len(exact["items"]) == len(shop) and exact["next_cursor"] is None


def test_a_summary_says_where_the_customer_stands(client, auth, shop, service):
    item = {i["customer_id"]: i for i in listing(client, auth).get_json()["items"]}["f-1"]
    assert set(item) == {"customer_id", "email", "stage", "subgroup", "lapsed", "turn", "since", "rule_version",
                         "next_wake_at", "updated_at"}
    document = client.get("/api/v1/shops/default/customers/f-1", headers=auth).get_json()
    for key in ("stage", "subgroup", "lapsed", "turn", "since", "rule_version"):
        assert item[key] == document[key], key
    assert item["stage"] == "first_purchase" and item["email"] == "f-1@example.com"
    assert item["since"] == at(7) and item["next_wake_at"].endswith("Z") and item["updated_at"].endswith("Z")


def test_filters_combine_and_an_unknown_stage_finds_nobody(client, auth, shop):
    assert ids(listing(client, auth, stage="potential")) == ["p-1", "p-2", "p-3"]
    assert ids(listing(client, auth, stage="first_purchase")) == ["f-1", shop[1], "l-1"]
    assert ids(listing(client, auth, stage="first_purchase", lapsed="true")) == ["l-1"]
    assert ids(listing(client, auth, stage="first_purchase", lapsed="false")) == ["f-1", shop[1]]
    assert ids(listing(client, auth, lapsed="1")) == ["l-1"]
    subgroup = listing(client, auth).get_json()["items"][0]["subgroup"]
    assert subgroup and "f-1" in ids(listing(client, auth, subgroup=subgroup))
    assert ids(listing(client, auth, stage="no-such-stage")) == []
    assert ids(listing(client, auth, stage="potential", subgroup="no-such-subgroup")) == []
    # an empty value is no filter (a form that leaves a field blank)
    assert ids(listing(client, auth, stage="", lapsed="", email="", cursor="")) == sorted(shop)


@pytest.mark.parametrize(("query", "field"), [
    ({"lapsed": "maybe"}, "lapsed"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": customer_lists.encode_cursor("x")[:-2] + "!!"}, "cursor"),
    ({"stage": "s" * 65}, "stage"),
])
def test_bad_query_arguments_are_refused_with_the_error_schema(client, auth, shop, query, field):
    response = listing(client, auth, **query)
    assert response.status_code == 422
    body = response.get_json()
    assert set(body) == {"code", "message", "errors"} and field in body["errors"], body


def test_unknown_shop_bad_shop_id_and_missing_token(client, auth, shop):
    assert listing(client, auth, shop="nowhere").status_code == 404
    assert listing(client, auth, shop="bad\x01id").status_code == 400
    assert client.get("/api/v1/shops/default/customers").status_code == 401
    assert client.get("/api/v1/shops/default/stats").status_code == 401
    assert client.get("/api/v1/shops/nowhere/stats", headers=auth).get_json()["code"] == "not_found"


def test_the_limit_defaults_to_50_and_a_cursor_is_opaque(client, auth, shop):
    body = listing(client, auth).get_json()
    assert body["limit"] == customer_lists.PAGE_DEFAULT == 50 and body["next_cursor"] is None
    cursor = listing(client, auth, limit=2).get_json()["next_cursor"]
    assert "p-1" not in cursor and customer_lists.decode_cursor(cursor) == shop[1]


# ------------------------------------------------------------------ e-mail
def test_email_finds_an_account_case_insensitively(client, auth, shop):
    assert ids(listing(client, auth, email="F-1@EXAMPLE.com")) == ["f-1"]
    assert ids(listing(client, auth, email="  f-1@example.com ")) == ["f-1"]
    assert ids(listing(client, auth, email="nobody@example.com")) == []
    assert ids(listing(client, auth, email="f-1@example.co")) == []  # exact, never a prefix
    assert ids(listing(client, auth, email="f-1@example.com", stage="potential")) == []  # with the others: AND


def test_email_finds_a_guest_and_a_linked_guest_shows_its_account(client, auth, shop, service):
    guest = identity.guest_id("bo@example.com")
    assert ids(listing(client, auth, email="BO@example.com")) == [guest]
    # Bo opens an account and later changes its address: the guest sale is the account's now
    post(client, auth, [created("7001", 1, email="bo@example.com")])
    identity.link_all(service.db, "default", [(guest, "7001")])
    service.process_customer("default", guest)
    post(client, auth, [{"id": "7001-updated", "type": "customer_updated", "customer_id": "7001",
                         "occurred_at": at(0.5), "customer": {"email": "bo.new@example.com"}}])
    assert ids(listing(client, auth, email="bo@example.com")) == ["7001"]
    assert ids(listing(client, auth, email="Bo.New@example.com")) == ["7001"]
    everyone = ids(listing(client, auth))
    assert guest not in everyone and "7001" in everyone
    account = {i["customer_id"]: i for i in listing(client, auth).get_json()["items"]}["7001"]
    assert account["stage"] == "first_purchase"  # the guest's order counts for the account


def test_a_linked_guest_whose_row_remains_is_neither_listed_nor_counted(client, auth, shop, service):
    guest = identity.guest_id("bo@example.com")
    post(client, auth, [created("7001", 1, email="bo@example.com")])
    identity.link_all(service.db, "default", [(guest, "7001")])  # linked, the guest not processed again yet
    assert guest not in ids(listing(client, auth))
    assert ids(listing(client, auth, email="bo@example.com")) == ["7001"]
    stats = client.get("/api/v1/shops/default/stats", headers=auth).get_json()
    assert stats["customers"]["total"] == len(shop)  # 7001 in, the guest out


# ------------------------------------------------------------------ stats
def test_stats_count_customers_per_stage_subgroup_and_lapse_and_awards_per_status(client, auth, shop, service):
    with store.begin_write(service.db) as conn:  # a customer whose first fold failed: a row, no stage
        store.lock_customer(conn, "default", "n-1")
    response = client.get("/api/v1/shops/default/stats", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["shop"] == "default" and body["as_of"].endswith("Z")
    assert body["programme_version"] == service.programme("default")[0].version
    people = body["customers"]
    assert people["total"] == len(shop) + 1 and people["on_ladder"] == len(shop) and people["lapsed"] == 1
    per_stage: dict = {}
    for group in people["by_stage"]:
        per_stage[group["stage"], group["lapsed"]] = per_stage.get((group["stage"], group["lapsed"]), 0) + group["count"]
    assert per_stage == {(None, False): 1, ("potential", False): 3, ("visitor", False): 1,
                         ("first_purchase", False): 2, ("first_purchase", True): 1}
    # the programme's order: not on the ladder first, then potential … first_purchase
    order = [g["stage"] for g in people["by_stage"]]
    assert order.index(None) < order.index("potential") < order.index("visitor") < order.index("first_purchase")

    with service.db.connect() as conn:
        recorded = conn.execute(sa.select(store.awards.c.reward_id, store.awards.c.status)
                                .where(store.awards.c.shop_id == "default")).all()
    awards = body["awards"]
    assert awards["total"] == len(recorded) > 0
    assert set(awards["by_status"]) == {"due", "delivered", "needs_manual_action", "failed", "withheld", "reversed",
                                        "historical", "ended", "shadow", "suspended", "expired"}
    assert awards["by_status"]["due"] == sum(1 for r in recorded if r.status == "due")
    welcome = [a for a in awards["by_reward"] if a["reward"] == "welcome"]
    # every subscribed account: p-1, p-2, v-1, f-1, l-1 (p-3 is not subscribed, the guest has no account)
    # (a welcome code of a customer created long enough ago has expired unsent)
    assert {a["status"] for a in welcome} <= {"due", "expired"} and sum(a["count"] for a in welcome) == 5
    assert welcome == sorted(({"reward": "welcome", "status": s, "count": n} for s, n in Counter(
        r.status for r in recorded if r.reward_id == "welcome").items()), key=lambda a: a["status"])


def test_stats_of_a_shop_with_nobody(client, auth):
    body = client.get("/api/v1/shops/default/stats", headers=auth).get_json()
    assert body["customers"] == {"total": 0, "on_ladder": 0, "lapsed": 0, "by_stage": []}
    assert body["awards"]["total"] == 0 and body["awards"]["by_reward"] == []
    assert set(body["awards"]["by_status"].values()) == {0}


# ------------------------------------------------------------------ the queries use the primary key
def test_the_queries_are_range_scans_of_the_primary_key(service, backend):
    def plan(statement) -> str:
        compiled = statement.compile(dialect=service.db.dialect, compile_kwargs={"literal_binds": True})
        with service.db.connect() as conn:
            if backend == "sqlite":
                return " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
            # an empty table's statistics favour a sequential scan: forbid it, and an index must serve
            conn.exec_driver_sql("SET enable_seqscan = off")
            return " | ".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}"))

    for statement in (customer_lists.page_query("default", after="c-1", limit=50),
                      customer_lists.page_query("default", stage="regular", lapsed=True, limit=50),
                      customer_lists.customer_counts_query("default")):
        text = plan(statement)
        if backend == "sqlite":
            assert "SEARCH customers USING" in text and "SCAN customers" not in text, text
        else:
            assert "Index" in text and "Seq Scan on customers" not in text, text
        assert "TEMP B-TREE FOR ORDER BY" not in text, text  # the page comes in key order
    assert "SCAN awards" not in plan(customer_lists.award_counts_query("default"))


# ------------------------------------------------------------------ the command line
def cli(*args: str, env: dict):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_ladder_customers_lists_filters_and_pages(shop, ladder_settings):
    env = {"LADDER_DATABASE_URL": ladder_settings.database_url}
    table = cli("customers", "default", "--stage", "potential", env=env)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["customer_id", "email", "stage", "subgroup", "lapsed", "turn", "since",
                                "next_wake_at", "rule_version"]
    assert [line.split()[0] for line in lines[1:]] == ["p-1", "p-2", "p-3"]
    assert "more:" not in table.stderr

    lapsed = cli("customers", "default", "--lapsed", "--json", env=env)
    assert [json.loads(line)["customer_id"] for line in lapsed.stdout.splitlines()] == ["l-1"]
    not_lapsed = cli("customers", "default", "--not-lapsed", "--stage", "first_purchase", "--json", env=env)
    assert [json.loads(line)["customer_id"] for line in not_lapsed.stdout.splitlines()] == ["f-1", shop[1]]
    by_email = cli("customers", "default", "--email", "F-1@example.com", "--json", env=env)
    assert json.loads(by_email.stdout)["stage"] == "first_purchase"

    first = cli("customers", "default", "--limit", "4", "--json", env=env)
    cursor = first.stderr.split("more: --cursor ", 1)[1].split()[0]
    rest = cli("customers", "default", "--limit", "4", "--cursor", cursor, "--json", env=env)
    assert rest.exit_code == 0 and "more:" not in rest.stderr
    walked = [json.loads(line)["customer_id"] for line in first.stdout.splitlines() + rest.stdout.splitlines()]
    assert walked == sorted(shop)

    nobody = cli("customers", "default", "--stage", "no-such-stage", env=env)
    assert nobody.exit_code == 0 and nobody.stdout == "" and "(no customers)" in nobody.stderr


def test_ladder_customers_refuses_what_it_cannot_read(shop, ladder_settings):
    env = {"LADDER_DATABASE_URL": ladder_settings.database_url}
    bad_cursor = cli("customers", "default", "--cursor", "garbage", env=env)
    assert bad_cursor.exit_code == 2 and "--cursor" in bad_cursor.output
    assert cli("customers", "default", "--limit", "501", env=env).exit_code == 2
    unknown = cli("customers", "nowhere", env=env)
    assert unknown.exit_code == 3 and "error: unknown shop 'nowhere'" in unknown.stderr
    assert "Traceback" not in unknown.output


def test_ladder_stats_prints_a_table_and_json(shop, ladder_settings, service):
    env = {"LADDER_DATABASE_URL": ladder_settings.database_url}
    table = cli("stats", "default", env=env)
    assert table.exit_code == 0, table.output
    text = table.stdout
    assert f"programme {service.programme('default')[0].version}" in text
    assert f"customers: {len(shop)} ({len(shop)} on the ladder, 1 lapsed)" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["stage", "subgroup", "lapsed", "customers"] in rows
    assert sum(int(r[3]) for r in rows if r[:1] == ["potential"]) == 3
    assert [r[2:] for r in rows if r[:1] == ["first_purchase"] and r[2] == "yes"] == [["yes", "1"]]
    assert "awards per reward:" in text and any(r[:2] == ["welcome", "due"] for r in rows)

    as_json = cli("stats", "default", "--json", env=env)
    doc = json.loads(as_json.stdout)
    assert doc["customers"]["total"] == len(shop) and doc["programme_version"] == service.programme("default")[0].version
    assert cli("stats", "nowhere", env=env).exit_code == 3
