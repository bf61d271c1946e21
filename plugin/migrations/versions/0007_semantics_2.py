"""Fold semantics 2: a customer holds the privileges of the stage they are in.

A database that already holds events was folded with semantics 1 until now: semantics 2 starts at
the instant of this upgrade, which is a wake-up for every customer on the ladder (the privileges
of stages they have left end then, taken back in the shop; nothing before changes).  A new,
empty database runs semantics 2 from the beginning.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
VERSION = 2


def upgrade() -> None:
    conn = op.get_bind()
    now = datetime.now(UTC)
    semantics = sa.table("semantics_versions", sa.column("version", sa.Integer), sa.column("active_from", TZ),
                         sa.column("created_at", TZ))
    has_events = conn.execute(sa.text("SELECT 1 FROM events LIMIT 1")).first() is not None
    if has_events:
        conn.execute(semantics.insert().values(version=VERSION, active_from=now, created_at=now))
        # the upgrade instant is a wake-up for every customer on the ladder (like an activation)
        customers = sa.table("customers", sa.column("stage", sa.String), sa.column("next_wake_at", TZ))
        conn.execute(customers.update().where(customers.c.stage.is_not(None),
                                              sa.or_(customers.c.next_wake_at.is_(None), customers.c.next_wake_at > now))
                     .values(next_wake_at=now))
    else:
        conn.execute(semantics.delete())
        conn.execute(semantics.insert().values(version=VERSION, active_from=None, created_at=now))


def downgrade() -> None:
    conn = op.get_bind()
    semantics = sa.table("semantics_versions", sa.column("version", sa.Integer), sa.column("active_from", TZ),
                         sa.column("created_at", TZ))
    conn.execute(semantics.delete().where(semantics.c.version == VERSION))
    if conn.execute(sa.select(sa.func.count()).select_from(semantics)).scalar() == 0:
        conn.execute(semantics.insert().values(version=1, active_from=None, created_at=datetime.now(UTC)))
