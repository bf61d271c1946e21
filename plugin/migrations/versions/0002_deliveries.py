"""The outbox (``deliveries``) and guest-to-account links (``customer_links``).

Hand-written to match ``loyalty_ladder.store.metadata`` (tests/test_store.py compares them).

Revision ID: 0002
Revises: 0001
Create Date: 2026-03-20
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("pk", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("award_key", sa.String(512), nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _time("next_attempt_at", nullable=True),
        _time("delivered_at", nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_deliveries"),
        sa.ForeignKeyConstraint(["award_key"], ["awards.key"], name="fk_deliveries_award_key_awards"),
        sa.UniqueConstraint("award_key", "action", "channel", name="uq_deliveries_award_key_action_channel"),
    )
    op.create_index("ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_shop_id_customer_id", "deliveries", ["shop_id", "customer_id"])
    op.create_index(
        "uq_deliveries_award_key_action_unchannelled",
        "deliveries",
        ["award_key", "action"],
        unique=True,
        sqlite_where=sa.text("channel IS NULL"),
        postgresql_where=sa.text("channel IS NULL"),
    )

    op.create_table(
        "customer_links",
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("alias_id", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("shop_id", "alias_id", name="pk_customer_links"),
    )
    op.create_index("ix_customer_links_shop_id_customer_id", "customer_links", ["shop_id", "customer_id"])


def downgrade() -> None:
    op.drop_table("customer_links")
    op.drop_table("deliveries")
