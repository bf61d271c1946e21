"""Poison isolation: failure counts and backoff on inbox rows and customers, set-aside events.

* ``inbox.attempts`` / ``inbox.retry_at``: failed processing attempts of a row still
  ``received`` and when the next is due; after ``inbox.MAX_ATTEMPTS`` the row is ``failed``.
* ``customers.failures`` / ``last_error`` / ``retry_at``: processing failures in a row, the
  last one's text, and the backoff.
* ``events.set_aside_at`` / ``set_aside_reason``: an event that made its customer's fold or
  save fail; never folded again, shown with its reason on the customer document.

Plain ``ADD COLUMN``s (nullable, or NOT NULL with a server default), which SQLite takes in place;
plain SQLAlchemy types (``UTCDateTime`` is ``DateTime(timezone=True)`` underneath).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("inbox", sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
    op.add_column("inbox", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("customers", sa.Column("failures", sa.Integer, nullable=False, server_default="0"))
    op.add_column("customers", sa.Column("last_error", sa.Text, nullable=True))
    op.add_column("customers", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("events", sa.Column("set_aside_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("events", sa.Column("set_aside_reason", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("set_aside_reason")
        batch.drop_column("set_aside_at")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("last_error")
        batch.drop_column("failures")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("retry_at")
        batch.drop_column("attempts")
