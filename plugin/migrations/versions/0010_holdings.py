"""Fold semantics 4: privileges as holdings, suspended while lapsed; grants that expire unused.

* award statuses ``suspended`` (a privilege held but paused: the customer lapsed) and ``expired``
  (a grant whose validity passed before it was used or delivered);
* semantics 4 starts at the instant of this upgrade for a database that already holds events (a
  wake-up for every customer on the ladder; holdings started before keep their keys, grants that
  expired before keep their status); a new, empty database runs semantics 4 from the beginning.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
VERSION = 4
#: the award statuses before and after this revision, copied: a migration must not change when the
#: code moves on
AWARD_BEFORE = ("due", "delivered", "needs_manual_action", "failed", "withheld", "reversed", "historical", "ended",
                "shadow")
AWARD_AFTER = (*AWARD_BEFORE, "suspended", "expired")


def _award_checks(values: Sequence[str]) -> None:
    # SQLite: batch mode recreates the tables (store.upgrade runs migrations with foreign keys
    # off and checks them all before committing)
    for table in ("awards", "award_log"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_status"), type_="check")
            batch.create_check_constraint("status", f"status IN ({', '.join(repr(v) for v in values)})")


def _semantics() -> sa.TableClause:
    return sa.table("semantics_versions", sa.column("version", sa.Integer), sa.column("active_from", TZ),
                    sa.column("created_at", TZ))


def upgrade() -> None:
    _award_checks(AWARD_AFTER)
    conn = op.get_bind()
    now = datetime.now(UTC)
    semantics = _semantics()
    if conn.execute(sa.text("SELECT 1 FROM events LIMIT 1")).first() is not None:
        conn.execute(semantics.insert().values(version=VERSION, active_from=now, created_at=now))
        customers = sa.table("customers", sa.column("stage", sa.String), sa.column("next_wake_at", TZ))
        conn.execute(customers.update().where(customers.c.stage.is_not(None),
                                              sa.or_(customers.c.next_wake_at.is_(None), customers.c.next_wake_at > now))
                     .values(next_wake_at=now))
    else:
        conn.execute(semantics.delete())
        conn.execute(semantics.insert().values(version=VERSION, active_from=None, created_at=now))


def downgrade() -> None:
    conn = op.get_bind()
    awards = sa.table("awards", sa.column("status"))
    log = sa.table("award_log", sa.column("status"))
    # a paused privilege and an expired grant are due again under the older code (re-planned)
    conn.execute(awards.update().where(awards.c.status == "suspended").values(status="due"))
    conn.execute(awards.update().where(awards.c.status == "expired").values(status="due"))
    conn.execute(log.delete().where(log.c.status.in_(("suspended", "expired"))))
    _award_checks(AWARD_BEFORE)
    semantics = _semantics()
    conn.execute(semantics.delete().where(semantics.c.version == VERSION))
    if conn.execute(sa.select(sa.func.count()).select_from(semantics)).scalar() == 0:
        conn.execute(semantics.insert().values(version=3, active_from=None, created_at=datetime.now(UTC)))
