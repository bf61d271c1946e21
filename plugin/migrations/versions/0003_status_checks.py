"""CHECK constraints: every status, action and channel column holds one of its enum's values.

The values come from :mod:`loyalty_ladder.statuses` as they were when this revision was
written (copied here: a migration must not change when the code moves on).  SQLite cannot add
a constraint to a table in place; batch mode recreates the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AWARD = ("due", "delivered", "needs_manual_action", "failed", "withheld", "reversed", "historical")
INBOX = ("received", "processed", "ignored", "failed")
ACTION = ("grant", "revoke", "notify")
DELIVERY = ("pending", "delivered", "failed", "needs_manual_action", "shadow", "cancelled")
CHANNEL = ("email", "webhook")

#: (table, constraint name, column, values); the database name is ``ck_<table>_<name>`` (store.NAMING_CONVENTION)
CHECKS = (
    ("awards", "status", "status", AWARD),
    ("award_log", "status", "status", AWARD),
    ("inbox", "status", "status", INBOX),
    ("deliveries", "action", "action", ACTION),
    ("deliveries", "status", "status", DELIVERY),
    ("deliveries", "channel", "channel", CHANNEL),
)


def _sql(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    for table in dict.fromkeys(t for t, *_ in CHECKS):
        with op.batch_alter_table(table) as batch:
            for t, name, column, values in CHECKS:
                if t == table:
                    batch.create_check_constraint(name, _sql(column, values))  # named by the convention


def downgrade() -> None:
    for table in dict.fromkeys(t for t, *_ in CHECKS):
        with op.batch_alter_table(table) as batch:
            for t, name, _column, _values in CHECKS:
                if t == table:
                    batch.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
