"""The staff worklist: who carried an award out by hand, when, and their note.

* ``awards.done_by`` / ``done_at`` / ``done_note``: an award that waited for staff
  (``needs_manual_action``, or a grant that ``failed``) and that staff marked done is
  ``delivered`` with these set; NULL for every other award.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("awards", sa.Column("done_by", sa.String(255), nullable=True))
    op.add_column("awards", sa.Column("done_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("awards", sa.Column("done_note", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("awards") as batch:
        batch.drop_column("done_note")
        batch.drop_column("done_at")
        batch.drop_column("done_by")
