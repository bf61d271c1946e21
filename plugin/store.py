"""Storage: SQLAlchemy 2 Core tables, engine creation, Alembic upgrade, per-customer locking.

The ``events`` table is the append-only ledger (the source of truth); ``customers`` is derived
from it and can be rebuilt; ``awards`` + ``award_log`` are the reward ledger and its audit trail;
``inbox`` holds raw shop webhooks until they are turned into events.

One module although it is over 400 lines: the tables are one schema (Alembic compares the
migrations against this one ``metadata``), and the transaction rules below belong beside them.

Transactions on SQLite
----------------------
pysqlite (Python < 3.12) emits its own ``BEGIN`` lazily, only before DML, which makes SELECTs
in a "transaction" unrepeatable and DDL non-transactional.  :func:`make_engine` therefore uses
the recipe from the SQLAlchemy SQLite docs ("Enabling Non-Legacy SQLite Transactional Modes"):
a ``connect`` listener sets ``isolation_level = None`` so the driver never emits ``BEGIN``, and
a ``begin`` listener emits it ourselves: ``BEGIN IMMEDIATE`` when the connection carries the
execution option ``ladder_write=True`` (see :func:`begin_write`), plain deferred ``BEGIN``
otherwise.  ``BEGIN IMMEDIATE`` takes SQLite's single write lock at the start (waiting up to
``busy_timeout``), so two read-modify-write transactions on the same file run one after the
other instead of one failing with ``SQLITE_BUSY`` when it upgrades its read snapshot.  That is
how per-customer work is serialised on SQLite; on PostgreSQL :func:`lock_customer` takes a row
lock instead, so different customers proceed in parallel.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Dialect, Engine, RowMapping, make_url
from sqlalchemy.types import TypeDecorator

from . import migrations as _migrations_package
from .errors import ConfigError
from .statuses import AwardStatus, DeliveryAction, DeliveryStatus, InboxStatus, NotifyChannel, check_in

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
# Serialises concurrent `upgrade()` calls of several processes on PostgreSQL (any constant works).
_MIGRATION_LOCK_ID = 0x6C61646465  # "ladde"
SQLITE_BUSY_TIMEOUT_MS = 5000
# Alembic's `context` and `op` are module-level proxies: two upgrades in one process at once
# (even on different databases) would step on each other.
_ALEMBIC_LOCK = threading.Lock()

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


# ---------------------------------------------------------------- column types
class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime.  Naive datetimes are refused: their zone would be a guess.

    SQLite stores the UTC wall time as text (sortable); PostgreSQL a ``timestamptz``.  Values
    always come back aware, in UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"UTCDateTime needs a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: give it a time zone")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """An exact decimal amount stored as its string (``"120.00"`` stays ``"120.00"``).

    Floats are refused (money is Decimal everywhere), as are NaN and infinities.
    """

    impl = sa.String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | int | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, (float, bool)):
            raise TypeError(f"Money needs a Decimal, got {type(value).__name__} {value!r}")
        try:
            amount = Decimal(value)
        except (InvalidOperation, TypeError, ValueError):
            raise ValueError(f"not a money amount: {value!r}") from None
        if not amount.is_finite():
            raise ValueError(f"not a money amount: {value!r}")
        return str(amount)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


def _now() -> datetime:
    return datetime.now(UTC)


# String sizes: shop ids are short and URL-safe; shop-side ids (customers, events, orders)
# are opaque strings; award keys join several of them.
SHOP_ID = 64
EXTERNAL_ID = 255
NAME = 64
AWARD_KEY = 512
VERSION = 12

# ---------------------------------------------------------------- tables
shops = sa.Table(
    "shops",
    metadata,
    sa.Column("shop_id", sa.String(SHOP_ID), primary_key=True),
    # Awards implied by the state before this instant are `historical`, never delivered.
    sa.Column("live_from", UTCDateTime(), nullable=True),
    # The mode (live | shadow) the shop's configuration had when last seen; a change from
    # shadow to live sets live_from to that instant (migration 0005).
    sa.Column("mode", sa.String(16), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, default=_now),
)

#: Shop-wide inputs of every customer's fold, with a deterministic id, author and reason
#: (migration 0005; they replace ``shop_turns``): ``turn_started`` (an admin turn: every customer
#: on the ladder starts a new turn at ``occurred_at``) and ``exclusions_set`` (the full list of
#: tag and e-mail patterns whose customers are never evaluated from ``occurred_at`` on).
shop_events = sa.Table(
    "shop_events",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("shop_id", sa.String(SHOP_ID), nullable=False),
    sa.Column("event_id", sa.String(EXTERNAL_ID), nullable=False),
    sa.Column("type", sa.String(NAME), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("body", sa.JSON, nullable=False, default=dict),  # {author, reason, ...data of the type}
    sa.Column("created_at", UTCDateTime(), nullable=False, default=_now),
    sa.UniqueConstraint("shop_id", "event_id"),
    sa.Index(None, "shop_id", "occurred_at"),
)

programme_versions = sa.Table(
    "programme_versions",
    metadata,
    sa.Column("version", sa.String(VERSION), primary_key=True),
    sa.Column("source", sa.String(1024), nullable=False),  # where it was read from
    sa.Column("canonical", sa.Text, nullable=False),  # the normalised programme the version hashes
    # the rule files' text, {name: text} (migration 0005; NULL for versions stored before: their
    # canonical JSON is itself a rule file of the same version)
    sa.Column("files", sa.JSON, nullable=True),
    sa.Column("author", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, default=_now),
)

#: A shop's timeline of programme versions (migration 0005): each row makes ``version`` the one
#: that decides every wake-up at or after ``active_from`` (NULL: from the beginning), until the
#: next row's ``active_from``; ties are broken by ``pk``.  ``stage_map`` maps stage ids the new
#: version dropped to the ones customers move to.  Rows are never updated or deleted: a rollback
#: is a new row activating an older version.
programme_activations = sa.Table(
    "programme_activations",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("shop_id", sa.String(SHOP_ID), nullable=False),
    sa.Column("version", sa.String(VERSION), sa.ForeignKey("programme_versions.version"), nullable=False),
    sa.Column("active_from", UTCDateTime(), nullable=True),
    sa.Column("stage_map", sa.JSON, nullable=False, default=dict),
    sa.Column("author", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, default=_now),
    sa.Index(None, "shop_id", "active_from"),
)

#: The fold's semantics on a timeline (migration 0005): a release that changes what the fold
#: means records its ``version`` from the instant the database is upgraded to it (NULL: from the
#: beginning, for a database created by it), so a code upgrade is no more retroactive than an
#: activation (``loyalty_ladder.timeline``).
semantics_versions = sa.Table(
    "semantics_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("active_from", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False, default=_now),
)

#: Every admin action (activations, turns, adjustments, exclusions, retries …), who did it and
#: why (migration 0005); read through ``GET /api/v1/shops/<shop>/audit`` and ``ladder audit``.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("shop_id", sa.String(SHOP_ID), nullable=True),
    sa.Column("author", sa.String(255), nullable=False),
    sa.Column("action", sa.String(NAME), nullable=False),
    sa.Column("target", sa.String(EXTERNAL_ID), nullable=True),  # a customer, a version, a row …
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("detail", sa.JSON, nullable=False, default=dict),
    sa.Index(None, "shop_id", "at"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("shop_id", sa.String(SHOP_ID), nullable=False),
    sa.Column("event_id", sa.String(EXTERNAL_ID), nullable=False),
    sa.Column("customer_id", sa.String(EXTERNAL_ID), nullable=False),
    sa.Column("type", sa.String(NAME), nullable=False),
    sa.Column("occurred_at", UTCDateTime(), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),  # the accepted event, as JSON
    sa.Column("body_hash", sa.String(64), nullable=False),  # sha256 of the canonical body
    sa.Column("source", sa.String(32), nullable=False),  # api | import | shopify | woocommerce | replay
    sa.Column("received_at", UTCDateTime(), nullable=False, default=_now),
    # Set once the customer's fold has included this event; NULL = pending.
    sa.Column("applied_at", UTCDateTime(), nullable=True),
    # Set when the event made its customer's fold or save fail (poison isolation, migration
    # 0004): never folded, never pending, shown on the customer document with the reason.
    sa.Column("set_aside_at", UTCDateTime(), nullable=True),
    sa.Column("set_aside_reason", sa.Text, nullable=True),
    sa.UniqueConstraint("shop_id", "event_id"),
    sa.Index(None, "shop_id", "customer_id"),
)
# The live lane looks for events accepted but never applied; a partial index keeps that cheap
# however long the ledger grows (both SQLite and PostgreSQL support partial indexes).
sa.Index(
    "ix_events_pending",
    events.c.received_at,
    sqlite_where=events.c.applied_at.is_(None),
    postgresql_where=events.c.applied_at.is_(None),
)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("shop_id", sa.String(SHOP_ID), primary_key=True),
    sa.Column("customer_id", sa.String(EXTERNAL_ID), primary_key=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("stage", sa.String(NAME), nullable=True),
    sa.Column("subgroup", sa.String(NAME), nullable=True),
    sa.Column("lapsed", sa.Boolean, nullable=False, default=False),
    sa.Column("turn", sa.Integer, nullable=False, default=1),
    sa.Column("since", UTCDateTime(), nullable=True),
    sa.Column("state", sa.JSON, nullable=False, default=dict),  # history, facts, next, lapse_at
    sa.Column("rule_version", sa.String(VERSION), nullable=True),
    sa.Column("next_wake_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False, default=_now, onupdate=_now),
    # Processing failures in a row (reset by a successful save), the last one's text, and when
    # the customer may be tried again (backoff; migration 0004, see processing.py).
    sa.Column("failures", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("retry_at", UTCDateTime(), nullable=True),
    sa.Index(None, "next_wake_at"),
)

AWARD_STATUSES = tuple(AwardStatus)

# `GET …/customers?email=` and `ladder customers --email` find a customer by address, in any case
# (migration 0005): an expression index on both SQLite and PostgreSQL.
sa.Index("ix_customers_shop_id_lower_email", customers.c.shop_id, sa.func.lower(customers.c.email))

awards = sa.Table(
    "awards",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(AWARD_KEY), nullable=False, unique=True),
    sa.Column("shop_id", sa.String(SHOP_ID), nullable=False),
    sa.Column("customer_id", sa.String(EXTERNAL_ID), nullable=False),
    sa.Column("reward_id", sa.String(NAME), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),  # stage | order | event | period | lapse
    sa.Column("scope_ref", sa.String(EXTERNAL_ID), nullable=False),
    sa.Column("stage", sa.String(NAME), nullable=True),
    sa.Column("turn", sa.Integer, nullable=True),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("params", sa.JSON, nullable=False, default=dict),
    sa.Column("value", Money(), nullable=True),
    sa.Column("rule_version", sa.String(VERSION), nullable=False),
    sa.Column("granted_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False, default=_now),
    sa.Column("updated_at", UTCDateTime(), nullable=False, default=_now, onupdate=_now),
    sa.Column("reversed_at", UTCDateTime(), nullable=True),
    # staff carried it out by hand (the worklist): who, when, their note
    sa.Column("done_by", sa.String(255), nullable=True),
    sa.Column("done_at", UTCDateTime(), nullable=True),
    sa.Column("done_note", sa.Text, nullable=True),
    sa.Index(None, "shop_id", "customer_id"),
    sa.Index(None, "status"),
    sa.CheckConstraint(check_in("status", AwardStatus), name="status"),
)

award_log = sa.Table(
    "award_log",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("award_key", sa.String(AWARD_KEY), sa.ForeignKey("awards.key"), nullable=False, index=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("rule_version", sa.String(VERSION), nullable=True),
    sa.CheckConstraint(check_in("status", AwardStatus), name="status"),
)

INBOX_STATUSES = tuple(InboxStatus)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("platform", sa.String(32), nullable=False),
    sa.Column("shop_id", sa.String(SHOP_ID), nullable=True),
    # NULLs are distinct in a unique constraint (SQLite and PostgreSQL alike): rows without a
    # delivery id are never deduplicated by the database.
    sa.Column("delivery_id", sa.String(EXTERNAL_ID), nullable=True),
    sa.Column("topic", sa.String(128), nullable=True),
    sa.Column("headers", sa.JSON, nullable=False, default=dict),
    sa.Column("body", sa.Text, nullable=False),  # the raw body, exactly as signed
    sa.Column("received_at", UTCDateTime(), nullable=False, default=_now),
    sa.Column("status", sa.String(16), nullable=False, default=InboxStatus.RECEIVED.value),
    sa.Column("processed_at", UTCDateTime(), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    # Failed processing attempts of a row still ``received`` and when the next is due (backoff);
    # after inbox.MAX_ATTEMPTS the row is ``failed`` (migration 0004).
    sa.Column("attempts", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("retry_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("platform", "shop_id", "delivery_id"),
    sa.Index(None, "status", "received_at"),
    sa.CheckConstraint(check_in("status", InboxStatus), name="status"),
)


# ---------------------------------------------------------------- engine
def _sqlite_file(url: URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:") or url.query.get("uri"):
        return None
    return Path(db)


def _missing_driver(url: URL, exc: ModuleNotFoundError) -> ConfigError:
    backend = url.get_backend_name()
    extra = {"postgresql": "postgres"}.get(backend)
    hint = (f"pip install 'loyalty-ladder[{extra}]'" if extra
            else f"install the {url.get_driver_name() or backend} driver")
    return ConfigError(f"the database URL {url.render_as_string(hide_password=True)} needs the Python module "
                       f"{exc.name!r}, which is not installed: {hint}", {"database_url": [hint]})


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an Engine; on SQLite: WAL, ``synchronous=FULL``, busy timeout, foreign keys,
    and our own ``BEGIN`` handling (see the module docstring).  ``kwargs`` go to ``create_engine``.
    """
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        try:
            return sa.create_engine(url, **kwargs)
        except ModuleNotFoundError as exc:  # the driver of an extra that is not installed
            raise _missing_driver(url, exc) from None

    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver must not emit BEGIN itself; the "begin" listener below does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            # FULL, not NORMAL: a webhook we answered 200 must survive a power cut (the shop will
            # not send it again); in WAL mode that costs one fsync per commit, and the accept
            # path is one commit.  NORMAL would survive a crash of the process, not of the machine.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("ladder_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@contextlib.contextmanager
def begin_write(engine: Engine) -> Iterator[Connection]:
    """A transaction meant to write: ``BEGIN IMMEDIATE`` on SQLite (the write lock is taken
    up front, waiting up to the busy timeout), a plain transaction elsewhere.  Commits on
    success, rolls back on an exception.
    """
    with engine.connect() as conn:
        conn.execution_options(ladder_write=True)
        with conn.begin():
            yield conn


#: an operator's listing: rows returned unless told otherwise, and at most
PAGE_DEFAULT = 50
PAGE_MAX = 500


def encode_cursor(**position: str | int) -> str:
    """An opaque, URL-safe page cursor holding where the next page starts (``after=…``, ``pk=…``)."""
    raw = json.dumps(position, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *names: str) -> dict[str, Any]:
    """The position an :func:`encode_cursor` cursor holds, with exactly the keys ``names``;
    ``ValueError`` for anything else (another listing's cursor, an edited or made-up one)."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("not a cursor") from None
    if not isinstance(data, dict) or set(data) != set(names):
        raise ValueError("not a cursor of this listing")
    return data


def newest_rows(db: Engine, table: sa.Table, columns: list[sa.Column], *, shop_id: str | None = None,
                status: str | None = None, before: int | None = None, limit: int = PAGE_DEFAULT) -> list[dict[str, Any]]:
    """A page of ``table`` for an operator, newest first: rows of ``shop_id`` with ``status``,
    pk below ``before`` (the next page), at most ``limit`` (clamped to 1…PAGE_MAX)."""
    where = []
    if shop_id is not None:
        where.append(table.c.shop_id == shop_id)
    if status is not None:
        where.append(table.c.status == status)
    if before is not None:
        where.append(table.c.pk < before)
    with db.connect() as conn:
        rows = conn.execute(sa.select(*columns).where(*where).order_by(table.c.pk.desc())
                            .limit(max(1, min(limit, PAGE_MAX)))).mappings().all()
    return [dict(r) for r in rows]


@dataclasses.dataclass(frozen=True)
class RetryResult:
    """What an operator's retry did (inbox rows, deliveries): the rows sent round again, and the
    rows left alone with why."""

    retried: tuple[int, ...]
    skipped: tuple[tuple[int, str], ...]


def insert_new(conn: Connection, table: sa.Table, values: dict[str, Any], unique: list[str]) -> Any:
    """``INSERT … ON CONFLICT (unique) DO NOTHING RETURNING pk``: the new row's pk, or None when
    a row with the same ``unique`` columns exists.  One statement, so two writers racing on the
    same new key need no retry and no second transaction (SQLite ≥ 3.35 and PostgreSQL)."""
    statement = (_dialect_insert(conn)(table).values(**values).on_conflict_do_nothing(index_elements=unique)
                 .returning(table.c.pk))
    return conn.execute(statement).scalar()


def insert_new_many(conn: Connection, table: sa.Table, unique: list[str], returning: str) -> Any:
    """The statement ``INSERT … ON CONFLICT (unique) DO NOTHING RETURNING returning``, to execute
    with a list of rows: the returned values are those of the rows actually inserted."""
    dialect_insert = _dialect_insert(conn)
    return (dialect_insert(table).on_conflict_do_nothing(index_elements=unique)
            .returning(table.c[returning], sort_by_parameter_order=True))


def _dialect_insert(conn: Connection) -> Any:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"{dialect} is not supported")
    return insert


def wake_customers(conn: Connection, shop_id: str, at: datetime, *, on_ladder_only: bool) -> int:
    """Make the shop's customers (``on_ladder_only``: those with a stage) due at ``at`` where no
    earlier wake-up is set, so the sweep re-decides them at that instant (an activation, an admin
    turn, new exclusions); returns how many are due by ``at`` now (made due here or already).
    ``updated_at`` stays: it says when a customer was last processed."""
    cu = customers
    concerned = [cu.c.shop_id == shop_id]
    if on_ladder_only:
        concerned.append(cu.c.stage.is_not(None))
    conn.execute(cu.update().where(*concerned, sa.or_(cu.c.next_wake_at.is_(None), cu.c.next_wake_at > at))
                 .values(next_wake_at=at, updated_at=cu.c.updated_at))
    return int(conn.execute(sa.select(sa.func.count()).select_from(cu)
                            .where(*concerned, cu.c.next_wake_at <= at)).scalar() or 0)


def lock_customer(conn: Connection, shop_id: str, customer_id: str) -> RowMapping:
    """Serialise work on one customer until the end of ``conn``'s transaction; return its row.

    The ``customers`` row is created first when missing (an empty, stage-less row), so there is
    always something to lock.  PostgreSQL: ``INSERT … ON CONFLICT DO NOTHING`` then
    ``SELECT … FOR UPDATE`` (a row lock; other customers are not blocked).  SQLite has no row
    locks: the insert takes the database's write lock, which is held to the end of the
    transaction — call this inside :func:`begin_write` so that lock is taken at ``BEGIN``.
    """
    dialect = conn.dialect.name
    values = {
        "shop_id": shop_id,
        "customer_id": customer_id,
        "lapsed": False,
        "turn": 1,
        "state": {},
        "updated_at": _now(),
    }
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(customers).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(customers).values(**values).on_conflict_do_nothing())
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"lock_customer does not support {dialect}")
    query = sa.select(customers).where(
        customers.c.shop_id == shop_id, customers.c.customer_id == customer_id
    )
    if dialect == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).mappings().one()


# ---------------------------------------------------------------- migrations
MIGRATIONS_DIR = Path(_migrations_package.__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic Config for the packaged migrations, independent of the working directory."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision shipped with the package."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the packaged migrations have no head"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine_or_url: Engine | str | URL, revision: str = "head") -> None:
    """Run ``alembic upgrade`` with the packaged migrations, in one transaction.

    Several processes may call this at start-up at the same time: SQLite serialises them with
    ``BEGIN IMMEDIATE``, PostgreSQL with a transaction-scoped advisory lock, and the later ones
    find the database already at head.
    """
    from alembic import command

    engine = engine_or_url if isinstance(engine_or_url, Engine) else make_engine(engine_or_url)
    try:
        with _ALEMBIC_LOCK, engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # SQLite's way to change a table (recreate it, batch mode): foreign keys off
                # outside the transaction, checked before the commit (sqlite.org/lang_altertable)
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # no BEGIN before it
            conn.execution_options(ladder_write=True)
            try:
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
                    command.upgrade(alembic_config(conn), revision)
                    if sqlite:
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                        if broken:
                            raise RuntimeError(f"the migration broke {len(broken)} foreign key(s): {broken[:5]}")
            finally:
                if sqlite:
                    conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")
    finally:
        if engine is not engine_or_url:
            engine.dispose()


# ---------------------------------------------------------------- the outbox
DELIVERY_ACTIONS = tuple(DeliveryAction)
DELIVERY_STATUSES = tuple(DeliveryStatus)
NOTIFY_CHANNELS = tuple(NotifyChannel)

#: One row per (award, action, channel): the job that carries an award to the shop (``grant``),
#: undoes it (``revoke``) or tells the customer (``notify`` by ``email`` / ``webhook``).  A row is
#: re-armed, never duplicated, when the same award is granted or reversed again.  A pending row
#: with ``next_attempt_at`` NULL waits for something else (a notice waits for its grant).
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("award_key", sa.String(AWARD_KEY), sa.ForeignKey("awards.key"), nullable=False),
    sa.Column("shop_id", sa.String(SHOP_ID), nullable=False),
    sa.Column("customer_id", sa.String(EXTERNAL_ID), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(16), nullable=True),  # notify only
    sa.Column("status", sa.String(24), nullable=False, default=DeliveryStatus.PENDING.value),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("external_id", sa.String(EXTERNAL_ID), nullable=True),  # the shop's id of what we created
    sa.Column("detail", sa.JSON, nullable=False, default=dict),
    sa.Column("created_at", UTCDateTime(), nullable=False, default=_now),
    sa.Column("updated_at", UTCDateTime(), nullable=False, default=_now, onupdate=_now),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("award_key", "action", "channel"),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "shop_id", "customer_id"),
    sa.CheckConstraint(check_in("action", DeliveryAction), name="action"),
    sa.CheckConstraint(check_in("status", DeliveryStatus), name="status"),
    # NULL passes a CHECK: grants and revokes have no channel
    sa.CheckConstraint(check_in("channel", NotifyChannel), name="channel"),
)
# NULLs are distinct in a unique constraint, so (award, "grant", NULL) could repeat: a partial
# unique index closes that gap on both SQLite and PostgreSQL.
sa.Index(
    "uq_deliveries_award_key_action_unchannelled",
    deliveries.c.award_key,
    deliveries.c.action,
    unique=True,
    sqlite_where=deliveries.c.channel.is_(None),
    postgresql_where=deliveries.c.channel.is_(None),
)

#: A guest id (``guest:<hash>``, ``guest-order:<id>``) that turned out to be an account: the
#: account's fold includes the guest's events.
customer_links = sa.Table(
    "customer_links",
    metadata,
    sa.Column("shop_id", sa.String(SHOP_ID), primary_key=True),
    sa.Column("alias_id", sa.String(EXTERNAL_ID), primary_key=True),
    sa.Column("customer_id", sa.String(EXTERNAL_ID), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False, default=_now),
    sa.Index(None, "shop_id", "customer_id"),
)

#: A VIP customer's personal manager (migration 0008, :mod:`.vip`): one row per customer who
#: holds VIP service and has a manager; released when they stop holding it.  ``manager_id`` is an
#: id of the shop's ``vip_managers`` (shops file); counting rows per manager is the load.
vip_assignments = sa.Table(
    "vip_assignments",
    metadata,
    sa.Column("shop_id", sa.String(SHOP_ID), primary_key=True),
    sa.Column("customer_id", sa.String(EXTERNAL_ID), primary_key=True),
    sa.Column("manager_id", sa.String(NAME), nullable=False),
    sa.Column("assigned_at", UTCDateTime(), nullable=False),
    sa.Index(None, "shop_id", "manager_id"),
)
