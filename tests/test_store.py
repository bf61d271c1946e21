"""Tables, column types, engine set-up, migrations and per-customer locking (SQLite and PostgreSQL)."""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError, StatementError

from loyalty_ladder import store

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


# ---------------------------------------------------------------- fixtures
# sqlite_engine, pg_engine and engine (both stores) live in conftest.py


def _event(event_id: str = "e-1", customer: str = "c-1", shop: str = "s", **extra) -> dict:
    row = {
        "shop_id": shop, "event_id": event_id, "customer_id": customer, "type": "order_paid",
        "occurred_at": T0, "body": {"id": event_id, "order": {"total": "108.00"}}, "body_hash": "0" * 64,
        "source": "api",
    }
    row.update(extra)
    return row


def _award(key: str = "s/c-1/welcome/stage/first_purchase/1", **extra) -> dict:
    row = {
        "key": key, "shop_id": "s", "customer_id": "c-1", "reward_id": "welcome", "type": "discount",
        "scope": "stage", "scope_ref": "first_purchase", "stage": "first_purchase", "turn": 1,
        "status": "due", "params": {"percent": "10"}, "value": Decimal("12.50"), "rule_version": "abc123def456",
        "granted_at": T0,
    }
    row.update(extra)
    return row


# ---------------------------------------------------------------- migrations
def _schema_diff(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), store.metadata)


def test_migrated_sqlite_schema_matches_metadata(sqlite_engine):
    assert store.current_revision(sqlite_engine) == store.head_revision()
    assert _schema_diff(sqlite_engine) == []


@pytest.mark.postgres
def test_migrated_postgres_schema_matches_metadata(pg_engine):
    assert store.current_revision(pg_engine) == store.head_revision()
    assert _schema_diff(pg_engine) == []


def test_schema_comparison_notices_a_difference(sqlite_engine):
    """The comparison above would fail on a real mismatch (a migration missing a column)."""
    with sqlite_engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_customers_next_wake_at")
        conn.exec_driver_sql("ALTER TABLE customers DROP COLUMN next_wake_at")
    diffs = _schema_diff(sqlite_engine)
    assert any(d[0] == "add_column" and d[3].name == "next_wake_at" for d in diffs)


def test_upgrade_from_url_and_twice_is_a_no_op(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    store.upgrade(url)
    store.upgrade(url)
    engine = store.make_engine(url)
    try:
        assert store.current_revision(engine) == store.head_revision()
        assert set(sa.inspect(engine).get_table_names()) == set(store.metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = store.make_engine(f"sqlite:///{tmp_path / 'cwd.db'}")
    try:
        assert store.current_revision(engine) is None
        store.upgrade(engine)
        assert store.current_revision(engine) == store.head_revision()
    finally:
        engine.dispose()


def _upgrade_concurrently(url: str | sa.URL, n: int = 3) -> list[Exception]:
    errors: list[Exception] = []

    def run() -> None:
        try:
            store.upgrade(url)
        except Exception as exc:  # noqa: BLE001 - collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_concurrent_upgrades_on_sqlite(tmp_path):
    assert _upgrade_concurrently(f"sqlite:///{tmp_path / 'race.db'}") == []


@pytest.mark.postgres
def test_concurrent_upgrades_on_postgres(pg_url):
    assert _upgrade_concurrently(pg_url) == []
    engine = store.make_engine(pg_url)
    try:
        assert store.current_revision(engine) == store.head_revision()
    finally:
        engine.dispose()


# ---------------------------------------------------------------- engine
def test_sqlite_engine_pragmas_and_parent_directory(tmp_path):
    engine = store.make_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'ladder.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: an acknowledged webhook survives a power cut
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (tmp_path / "a" / "b" / "ladder.db").exists()
    finally:
        engine.dispose()


def test_sqlite_reads_in_a_transaction_are_repeatable(sqlite_engine):
    """Our BEGIN starts every transaction, SELECT included (pysqlite alone would not): a reader
    keeps its snapshot while another connection commits."""
    with sqlite_engine.connect() as reader:
        with reader.begin():
            assert reader.exec_driver_sql("SELECT count(*) FROM shops").scalar() == 0
            with sqlite_engine.begin() as writer:
                writer.execute(store.shops.insert().values(shop_id="new"))
            assert reader.exec_driver_sql("SELECT count(*) FROM shops").scalar() == 0
        assert reader.exec_driver_sql("SELECT count(*) FROM shops").scalar() == 1


def test_sqlite_ddl_is_transactional(sqlite_engine):
    with pytest.raises(RuntimeError), sqlite_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
        raise RuntimeError("roll back")
    assert "scratch" not in sa.inspect(sqlite_engine).get_table_names()


def test_begin_write_takes_the_sqlite_write_lock_at_begin(sqlite_engine):
    """While a begin_write transaction is open, another writer waits (it does not fail)."""
    order: list[str] = []
    inside = threading.Event()

    def second() -> None:
        inside.wait(5)
        with store.begin_write(sqlite_engine) as conn:
            order.append("second")
            conn.execute(store.shops.insert().values(shop_id="b"))

    t = threading.Thread(target=second)
    t.start()
    with store.begin_write(sqlite_engine) as conn:
        # No statement yet: BEGIN IMMEDIATE alone must hold the lock.
        inside.set()
        time.sleep(0.3)
        order.append("first")
        conn.execute(store.shops.insert().values(shop_id="a"))
    t.join(10)
    assert order == ["first", "second"]


# ---------------------------------------------------------------- column types
def test_utc_datetime_round_trip(engine):
    vilnius = timezone(timedelta(hours=2))
    local = datetime(2026, 3, 2, 12, 0, 0, 123456, tzinfo=vilnius)
    with engine.begin() as conn:
        conn.execute(store.shops.insert().values(shop_id="s", live_from=local))
        back = conn.execute(sa.select(store.shops.c.live_from, store.shops.c.created_at)).one()
    assert back.live_from == local
    assert back.live_from.tzinfo == UTC and back.live_from.hour == 10
    assert back.created_at.tzinfo == UTC


def test_utc_datetime_refuses_naive(engine):
    with pytest.raises(StatementError, match="naive"), engine.begin() as conn:
        conn.execute(store.shops.insert().values(shop_id="s", live_from=datetime(2026, 3, 2)))


def test_utc_datetime_comparisons_in_sql(engine):
    with engine.begin() as conn:
        conn.execute(store.events.insert(), [
            _event("e-1", occurred_at=T0),
            _event("e-2", occurred_at=T0 + timedelta(hours=1)),
        ])
        # The same instant written in another zone must compare equal after conversion.
        cutoff = (T0 + timedelta(minutes=30)).astimezone(timezone(timedelta(hours=-5)))
        later = conn.execute(sa.select(store.events.c.event_id).where(store.events.c.occurred_at > cutoff)).scalars()
        assert list(later) == ["e-2"]


def test_money_is_exact(engine):
    with engine.begin() as conn:
        conn.execute(store.awards.insert().values(**_award(value=Decimal("0.10"))))
        value = conn.execute(sa.select(store.awards.c.value)).scalar_one()
    assert value == Decimal("0.10") and str(value) == "0.10"


@pytest.mark.parametrize("bad", [0.1, Decimal("NaN"), "ten"])
def test_money_refuses_floats_and_non_numbers(sqlite_engine, bad):
    with pytest.raises(StatementError), sqlite_engine.begin() as conn:
        conn.execute(store.awards.insert().values(**_award(value=bad)))


def test_json_columns_round_trip(engine):
    body = {"id": "e-1", "order": {"total": "108.00", "lines": [{"sku": "A-1", "quantity": 2}]}, "x": None}
    with engine.begin() as conn:
        conn.execute(store.events.insert().values(**_event(body=body)))
        assert conn.execute(sa.select(store.events.c.body)).scalar_one() == body


# ---------------------------------------------------------------- constraints
def test_event_ids_are_unique_per_shop(engine):
    with engine.begin() as conn:
        conn.execute(store.events.insert().values(**_event("e-1", shop="s")))
        conn.execute(store.events.insert().values(**_event("e-1", shop="other")))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(store.events.insert().values(**_event("e-1", shop="s")))


def test_award_keys_are_unique_and_the_log_refers_to_them(engine):
    with engine.begin() as conn:
        conn.execute(store.awards.insert().values(**_award("k1")))
        conn.execute(store.award_log.insert().values(award_key="k1", at=T0, status="due", rule_version="v"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(store.awards.insert().values(**_award("k1")))
    # Foreign keys are enforced on SQLite too.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(store.award_log.insert().values(award_key="nope", at=T0, status="due"))


def test_inbox_deliveries_are_unique_per_platform_and_shop(engine):
    row = {"platform": "shopify", "shop_id": "s", "delivery_id": "d-1", "topic": "orders/paid",
           "headers": {"X-Shopify-Topic": "orders/paid"}, "body": '{"id": 1}'}
    with engine.begin() as conn:
        conn.execute(store.inbox.insert().values(**row))
        conn.execute(store.inbox.insert().values(**{**row, "platform": "woocommerce"}))
        status = conn.execute(sa.select(store.inbox.c.status)).scalars().first()
    assert status == "received"
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(store.inbox.insert().values(**row))


def test_pending_event_index_is_partial(sqlite_engine):
    with sqlite_engine.connect() as conn:
        sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'ix_events_pending'").scalar()
    assert "WHERE applied_at IS NULL" in sql


# ---------------------------------------------------------------- lock_customer
def test_lock_customer_creates_the_row_once(engine):
    with store.begin_write(engine) as conn:
        row = store.lock_customer(conn, "s", "c-1")
        assert (row["shop_id"], row["customer_id"], row["stage"], row["lapsed"], row["turn"]) == ("s", "c-1", None,
                                                                                                   False, 1)
        conn.execute(store.customers.update().values(stage="regular"))
    with store.begin_write(engine) as conn:
        assert store.lock_customer(conn, "s", "c-1")["stage"] == "regular"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM customers").scalar() == 1


def _contend(engine: sa.Engine, customers: tuple[str, str], hold: float = 0.4) -> float:
    """Two transactions lock customers[0] / customers[1]; return how long the second took to get its lock."""
    locked = threading.Event()
    waited: list[float] = []

    def second() -> None:
        locked.wait(5)
        start = time.monotonic()
        with store.begin_write(engine) as conn:
            store.lock_customer(conn, "s", customers[1])
            waited.append(time.monotonic() - start)

    t = threading.Thread(target=second)
    t.start()
    with store.begin_write(engine) as conn:
        store.lock_customer(conn, "s", customers[0])
        locked.set()
        time.sleep(hold)
    t.join(10)
    return waited[0]


def test_lock_customer_serialises_the_same_customer(engine):
    assert _contend(engine, ("c-1", "c-1")) >= 0.3


@pytest.mark.postgres
def test_lock_customer_lets_other_customers_proceed_on_postgres(pg_engine):
    with store.begin_write(pg_engine) as conn:  # both rows exist: the test is about the row lock
        store.lock_customer(conn, "s", "c-1")
        store.lock_customer(conn, "s", "c-2")
    assert _contend(pg_engine, ("c-1", "c-2")) < 0.2


def test_lock_customer_read_modify_write_loses_no_update(engine):
    """Concurrent increments of a counter in the customer's state all survive."""
    with store.begin_write(engine) as conn:
        store.lock_customer(conn, "s", "c-1")

    def bump() -> None:
        for _ in range(5):
            with store.begin_write(engine) as conn:
                row = store.lock_customer(conn, "s", "c-1")
                conn.execute(store.customers.update().where(
                    store.customers.c.shop_id == "s", store.customers.c.customer_id == "c-1",
                ).values(turn=row["turn"] + 1))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with engine.connect() as conn:
        assert conn.execute(sa.select(store.customers.c.turn)).scalar_one() == 1 + 4 * 5


# ---------------------------------------------------------------- status CHECK constraints
def _check_names(engine: sa.Engine) -> dict[str, set[str]]:
    inspector = sa.inspect(engine)
    return {t: {c["name"] for c in inspector.get_check_constraints(t)}
            for t in ("awards", "award_log", "inbox", "deliveries")}


def test_every_status_column_has_its_check_constraint(engine):
    assert _check_names(engine) == {
        "awards": {"ck_awards_status"}, "award_log": {"ck_award_log_status"}, "inbox": {"ck_inbox_status"},
        "deliveries": {"ck_deliveries_action", "ck_deliveries_status", "ck_deliveries_channel"},
    }


def test_the_migration_checks_list_exactly_the_enums_values():
    """Migrations copy the values (0003, then 0005, 0006 and 0010 for the award statuses); a new
    status needs a new migration, and this says so."""
    import importlib

    from loyalty_ladder.statuses import AwardStatus, DeliveryAction, DeliveryStatus, InboxStatus, NotifyChannel

    m = importlib.import_module("loyalty_ladder.migrations.versions.0003_status_checks")
    timeline = importlib.import_module("loyalty_ladder.migrations.versions.0005_timeline")
    worklist = importlib.import_module("loyalty_ladder.migrations.versions.0006_worklist")
    latest = importlib.import_module("loyalty_ladder.migrations.versions.0010_holdings")
    assert set(latest.AWARD_AFTER) == set(AwardStatus) and set(latest.AWARD_BEFORE) == set(worklist.AWARD_AFTER)
    assert set(worklist.AWARD_BEFORE) == set(timeline.AWARD_AFTER)
    assert set(m.AWARD) == set(timeline.AWARD_BEFORE)
    assert set(m.INBOX) == set(InboxStatus)
    assert set(m.ACTION) == set(DeliveryAction) and set(m.DELIVERY) == set(DeliveryStatus)
    assert set(m.CHANNEL) == set(NotifyChannel)


def test_a_status_outside_its_enum_is_refused_by_the_database(engine):
    from loyalty_ladder.statuses import AwardStatus

    with store.begin_write(engine) as conn:
        conn.execute(store.awards.insert().values(**_award(key="k-ok", status=AwardStatus.DELIVERED)))
    with pytest.raises(sa.exc.IntegrityError), store.begin_write(engine) as conn:
        conn.execute(store.awards.insert().values(**_award(key="k-bad", status="deliverd")))
    with pytest.raises(sa.exc.IntegrityError), store.begin_write(engine) as conn:
        conn.execute(store.awards.update().where(store.awards.c.key == "k-ok").values(status="lost"))
    with pytest.raises(sa.exc.IntegrityError), store.begin_write(engine) as conn:
        conn.execute(store.inbox.insert().values(platform="shopify", shop_id="s", delivery_id="d", topic="t",
                                                 headers={}, body="{}", status="done"))
    with engine.connect() as conn:
        assert conn.execute(sa.select(store.awards.c.status)).scalars().all() == ["delivered"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_the_due_awards_of_a_shop_last_seen_in_shadow_mode_become_shadow_on_upgrade(database_url):
    """Migration 0006: before it, an award decided in shadow mode read `due` like a live one."""
    fresh = sa.create_engine(database_url)
    store.upgrade(fresh, "0005")
    try:
        with fresh.begin() as conn:
            conn.execute(sa.text("INSERT INTO shops (shop_id, mode, created_at) VALUES ('watch', 'shadow', :t), "
                                 "('live', 'live', :t)"), {"t": T0})
            for shop in ("watch", "live"):
                conn.execute(sa.text(
                    "INSERT INTO awards (key, shop_id, customer_id, reward_id, type, scope, scope_ref, status, params, "
                    "rule_version, granted_at, created_at, updated_at) VALUES (:key, :shop, 'c', 'welcome', "
                    "'discount', 'stage', 'potential/1', 'due', '{}', 'abc123def456', :t, :t, :t)"),
                    {"key": f"{shop}/c/welcome/stage/potential/1", "shop": shop, "t": T0})
        store.upgrade(fresh)
        with fresh.connect() as conn:
            statuses = dict(conn.execute(sa.select(store.awards.c.shop_id, store.awards.c.status)).all())
            log = conn.execute(sa.select(store.award_log.c.award_key, store.award_log.c.status,
                                         store.award_log.c.reason)).all()
        assert statuses == {"watch": "shadow", "live": "due"}
        assert [tuple(r) for r in log] == [("watch/c/welcome/stage/potential/1", "shadow",
                                            "decided in shadow mode: recorded, never delivered")]
    finally:
        fresh.dispose()
