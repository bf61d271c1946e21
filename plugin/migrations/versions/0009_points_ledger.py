"""Fold semantics 3 and the points ledger.

* Semantics 3 (points earn on the net spend without tax, gift cards and the part paid with points)
  starts at the instant of this upgrade for a database that already holds events, which is a
  wake-up for every customer on the ladder; orders granted points before keep their points.  A new,
  empty database runs semantics 3 from the beginning.
* Points are kept by loyalty-ladder now (``RewardType.kept_here``): a points award that waited for
  staff (``needs_manual_action``, or ``failed``) or for a generic shop's integrator (``due``) is
  credited to the ledger — ``delivered`` — and its grant job waiting for staff is cancelled.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
VERSION = 3
KEPT_HERE_REASON = "credited to the customer's points ledger"
WAITING = ("needs_manual_action", "failed")
#: the points awards credited to the ledger by this upgrade
CREDITED_FROM = (*WAITING, "due")


def upgrade() -> None:
    conn = op.get_bind()
    now = datetime.now(UTC)
    semantics = sa.table("semantics_versions", sa.column("version", sa.Integer), sa.column("active_from", TZ),
                         sa.column("created_at", TZ))
    has_events = conn.execute(sa.text("SELECT 1 FROM events LIMIT 1")).first() is not None
    if has_events:
        conn.execute(semantics.insert().values(version=VERSION, active_from=now, created_at=now))
        customers = sa.table("customers", sa.column("stage", sa.String), sa.column("next_wake_at", TZ))
        conn.execute(customers.update().where(customers.c.stage.is_not(None),
                                              sa.or_(customers.c.next_wake_at.is_(None), customers.c.next_wake_at > now))
                     .values(next_wake_at=now))
    else:
        conn.execute(semantics.delete())
        conn.execute(semantics.insert().values(version=VERSION, active_from=None, created_at=now))

    awards = sa.table("awards", sa.column("key"), sa.column("type"), sa.column("status"), sa.column("reason"),
                      sa.column("rule_version"), sa.column("updated_at"))
    log = sa.table("award_log", sa.column("award_key"), sa.column("at"), sa.column("status"), sa.column("reason"),
                   sa.column("rule_version"))
    deliveries = sa.table("deliveries", sa.column("award_key"), sa.column("action"), sa.column("status"),
                          sa.column("last_error"), sa.column("next_attempt_at"), sa.column("updated_at"))
    rows = conn.execute(sa.select(awards.c.key, awards.c.rule_version)
                        .where(awards.c.type == "points", awards.c.status.in_(CREDITED_FROM))).all()
    for i in range(0, len(rows), 500):
        chunk = rows[i:i + 500]
        keys = [r.key for r in chunk]
        conn.execute(awards.update().where(awards.c.key.in_(keys))
                     .values(status="delivered", updated_at=now))  # the reason stays the fold's
        conn.execute(log.insert(), [{"award_key": r.key, "at": now, "status": "delivered", "reason": KEPT_HERE_REASON,
                                     "rule_version": r.rule_version} for r in chunk])
        conn.execute(deliveries.update().where(deliveries.c.award_key.in_(keys), deliveries.c.action == "grant",
                                               deliveries.c.status.in_(WAITING))
                     .values(status="cancelled", last_error=KEPT_HERE_REASON, next_attempt_at=None, updated_at=now))


def downgrade() -> None:
    conn = op.get_bind()
    semantics = sa.table("semantics_versions", sa.column("version", sa.Integer), sa.column("active_from", TZ),
                         sa.column("created_at", TZ))
    conn.execute(semantics.delete().where(semantics.c.version == VERSION))
    if conn.execute(sa.select(sa.func.count()).select_from(semantics)).scalar() == 0:
        conn.execute(semantics.insert().values(version=2, active_from=None, created_at=datetime.now(UTC)))
