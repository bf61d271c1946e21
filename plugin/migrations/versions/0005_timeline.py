"""Programme versions on a timeline, shop events, the fold's semantics, the audit log, shop mode.

* ``programme_versions.files`` / ``author``: the rule files' text and who stored the version.
* ``programme_activations``: each shop's timeline of versions.  The version a shop had active
  (``shops.active_version``, dropped here) becomes its first activation, from the beginning
  (``active_from`` NULL): what was decided under it stays decided by it.
* ``semantics_versions``: the fold's semantics on a timeline.  A database that already holds
  events was written by the previous release (semantics 0); this release's semantics 1 starts at
  the instant of this upgrade.  A new, empty database runs semantics 1 from the beginning.
* ``shop_events`` replaces ``shop_turns``: every recorded turn becomes a ``turn_started`` event
  (id ``turn-<old id>``, author ``migration``, its reason kept).
* ``audit_log``: every admin action with its author and reason.
* ``shops.mode``: the mode (live | shadow) the shop's configuration had when last seen.
* ``ix_customers_shop_id_lower_email``: customers found by e-mail in any case.
* award status ``ended``: a privilege held, then ended by a later activation.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
#: the award statuses after this revision (0003's plus ``ended``), copied: a migration must not
#: change when the code moves on
AWARD_BEFORE = ("due", "delivered", "needs_manual_action", "failed", "withheld", "reversed", "historical")
AWARD_AFTER = (*AWARD_BEFORE, "ended")


def _award_checks(values: Sequence[str]) -> None:
    # SQLite: batch mode recreates the tables that award_log and deliveries reference;
    # store.upgrade runs migrations with foreign keys off and checks them all before committing
    for table in ("awards", "award_log"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_status"), type_="check")
            batch.create_check_constraint("status", f"status IN ({', '.join(repr(v) for v in values)})")


def upgrade() -> None:
    conn = op.get_bind()
    now = datetime.now(UTC)
    op.add_column("programme_versions", sa.Column("files", sa.JSON, nullable=True))
    op.add_column("programme_versions", sa.Column("author", sa.String(255), nullable=True))
    activations = op.create_table(
        "programme_activations",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("version", sa.String(12), sa.ForeignKey("programme_versions.version",
                  name="fk_programme_activations_version_programme_versions"), nullable=False),
        sa.Column("active_from", TZ, nullable=True),
        sa.Column("stage_map", sa.JSON, nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_programme_activations"),
    )
    op.create_index("ix_programme_activations_shop_id_active_from", "programme_activations",
                    ["shop_id", "active_from"])
    shops = sa.table("shops", sa.column("shop_id", sa.String), sa.column("active_version", sa.String))
    rows = conn.execute(sa.select(shops.c.shop_id, shops.c.active_version)
                        .where(shops.c.active_version.is_not(None))).all()
    if rows:
        op.bulk_insert(activations, [
            {"shop_id": r.shop_id, "version": r.active_version, "active_from": None, "stage_map": {},
             "author": "migration", "reason": "the version active before programme versions were kept on a timeline",
             "created_at": now} for r in rows])

    semantics = op.create_table(
        "semantics_versions",
        sa.Column("version", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("active_from", TZ, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_semantics_versions"),
    )
    has_events = conn.execute(sa.text("SELECT 1 FROM events LIMIT 1")).first() is not None
    if has_events:
        op.bulk_insert(semantics, [{"version": 0, "active_from": None, "created_at": now},
                                   {"version": 1, "active_from": now, "created_at": now}])
        # the upgrade instant is a wake-up for every customer on the ladder (like an activation)
        customers = sa.table("customers", sa.column("stage", sa.String), sa.column("next_wake_at", TZ))
        conn.execute(customers.update().where(customers.c.stage.is_not(None),
                                              sa.or_(customers.c.next_wake_at.is_(None), customers.c.next_wake_at > now))
                     .values(next_wake_at=now))
    else:
        op.bulk_insert(semantics, [{"version": 1, "active_from": None, "created_at": now}])

    shop_events = op.create_table(
        "shop_events",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_shop_events"),
        sa.UniqueConstraint("shop_id", "event_id", name="uq_shop_events_shop_id_event_id"),
    )
    op.create_index("ix_shop_events_shop_id_occurred_at", "shop_events", ["shop_id", "occurred_at"])
    turns = sa.table("shop_turns", sa.column("id", sa.Integer), sa.column("shop_id", sa.String),
                     sa.column("started_at", TZ), sa.column("reason", sa.Text), sa.column("created_at", TZ))
    old = conn.execute(sa.select(turns)).all()
    if old:
        op.bulk_insert(shop_events, [
            {"shop_id": r.shop_id, "event_id": f"turn-{r.id}", "type": "turn_started", "occurred_at": r.started_at,
             "body": {"author": "migration", "reason": r.reason or "a turn recorded before shop events existed"},
             "created_at": r.created_at or now} for r in old])
    op.drop_index("ix_shop_turns_shop_id_started_at", table_name="shop_turns")
    op.drop_table("shop_turns")

    op.create_table(
        "audit_log",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TZ, nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=True),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_shop_id_at", "audit_log", ["shop_id", "at"])

    with op.batch_alter_table("shops") as batch:
        batch.add_column(sa.Column("mode", sa.String(16), nullable=True))
        batch.drop_column("active_version")
    op.create_index("ix_customers_shop_id_lower_email", "customers", ["shop_id", sa.text("lower(email)")])
    _award_checks(AWARD_AFTER)


def downgrade() -> None:
    _award_checks(AWARD_BEFORE)
    op.drop_index("ix_customers_shop_id_lower_email", table_name="customers")
    with op.batch_alter_table("shops") as batch:
        batch.add_column(sa.Column("active_version", sa.String(12), nullable=True))
        batch.drop_column("mode")
    op.drop_index("ix_audit_log_shop_id_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.create_table(
        "shop_turns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_shop_turns"),
    )
    op.create_index("ix_shop_turns_shop_id_started_at", "shop_turns", ["shop_id", "started_at"])
    op.drop_index("ix_shop_events_shop_id_occurred_at", table_name="shop_events")
    op.drop_table("shop_events")
    op.drop_table("semantics_versions")
    op.drop_index("ix_programme_activations_shop_id_active_from", table_name="programme_activations")
    op.drop_table("programme_activations")
    with op.batch_alter_table("programme_versions") as batch:
        batch.drop_column("author")
        batch.drop_column("files")
