"""The initial schema: shops, turns, programme versions, the event ledger, customers, awards,
the award log and the webhook inbox.

Hand-written to match ``loyalty_ladder.store.metadata`` (tests/test_store.py compares them).
Plain SQLAlchemy types on purpose: a migration must not change when application types do.
``UTCDateTime`` is ``DateTime(timezone=True)`` underneath and ``Money`` is ``String(40)``.

Revision ID: 0001
Revises:
Create Date: 2026-03-01
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "shops",
        sa.Column("shop_id", sa.String(64), nullable=False),
        _time("live_from", nullable=True),
        sa.Column("active_version", sa.String(12), nullable=True),
        _time("created_at"),
        sa.PrimaryKeyConstraint("shop_id", name="pk_shops"),
    )

    op.create_table(
        "shop_turns",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        _time("started_at"),
        sa.Column("reason", sa.Text, nullable=True),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_shop_turns"),
    )
    op.create_index("ix_shop_turns_shop_id_started_at", "shop_turns", ["shop_id", "started_at"])

    op.create_table(
        "programme_versions",
        sa.Column("version", sa.String(12), nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("canonical", sa.Text, nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("version", name="pk_programme_versions"),
    )

    op.create_table(
        "events",
        sa.Column("pk", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        _time("occurred_at"),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        _time("received_at"),
        _time("applied_at", nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_events"),
        sa.UniqueConstraint("shop_id", "event_id", name="uq_events_shop_id_event_id"),
    )
    op.create_index("ix_events_shop_id_customer_id", "events", ["shop_id", "customer_id"])
    op.create_index(
        "ix_events_pending",
        "events",
        ["received_at"],
        sqlite_where=sa.text("applied_at IS NULL"),
        postgresql_where=sa.text("applied_at IS NULL"),
    )

    op.create_table(
        "customers",
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("stage", sa.String(64), nullable=True),
        sa.Column("subgroup", sa.String(64), nullable=True),
        sa.Column("lapsed", sa.Boolean, nullable=False),
        sa.Column("turn", sa.Integer, nullable=False),
        _time("since", nullable=True),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("rule_version", sa.String(12), nullable=True),
        _time("next_wake_at", nullable=True),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("shop_id", "customer_id", name="pk_customers"),
    )
    op.create_index("ix_customers_next_wake_at", "customers", ["next_wake_at"])

    op.create_table(
        "awards",
        sa.Column("pk", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("reward_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("scope_ref", sa.String(255), nullable=False),
        sa.Column("stage", sa.String(64), nullable=True),
        sa.Column("turn", sa.Integer, nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("value", sa.String(40), nullable=True),
        sa.Column("rule_version", sa.String(12), nullable=False),
        _time("granted_at"),
        _time("created_at"),
        _time("updated_at"),
        _time("reversed_at", nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_awards"),
        sa.UniqueConstraint("key", name="uq_awards_key"),
    )
    op.create_index("ix_awards_shop_id_customer_id", "awards", ["shop_id", "customer_id"])
    op.create_index("ix_awards_status", "awards", ["status"])

    op.create_table(
        "award_log",
        sa.Column("pk", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("award_key", sa.String(512), nullable=False),
        _time("at"),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("rule_version", sa.String(12), nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_award_log"),
        sa.ForeignKeyConstraint(["award_key"], ["awards.key"], name="fk_award_log_award_key_awards"),
    )
    op.create_index("ix_award_log_award_key", "award_log", ["award_key"])

    op.create_table(
        "inbox",
        sa.Column("pk", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=True),
        sa.Column("delivery_id", sa.String(255), nullable=True),
        sa.Column("topic", sa.String(128), nullable=True),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        _time("received_at"),
        sa.Column("status", sa.String(16), nullable=False),
        _time("processed_at", nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_inbox"),
        sa.UniqueConstraint("platform", "shop_id", "delivery_id", name="uq_inbox_platform_shop_id_delivery_id"),
    )
    op.create_index("ix_inbox_status_received_at", "inbox", ["status", "received_at"])


def downgrade() -> None:
    op.drop_table("inbox")
    op.drop_table("award_log")
    op.drop_table("awards")
    op.drop_table("customers")
    op.drop_table("events")
    op.drop_table("programme_versions")
    op.drop_table("shop_turns")
    op.drop_table("shops")
