"""The staff worklist, and awards that say they were decided in shadow mode.

* ``awards.done_by`` / ``done_at`` / ``done_note``: an award that waited for staff
  (``needs_manual_action``, or a grant that ``failed``) and that staff marked done is
  ``delivered`` with these set; NULL for every other award.
* award status ``shadow``: decided in a shadow-mode shop, never delivered.  Until now such an
  award read ``due`` like a live one; the ``due`` awards of shops last seen in shadow mode
  (``shops.mode``) become ``shadow``, each with an ``award_log`` row.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


#: the award statuses before and after this revision, copied: a migration must not change when the
#: code moves on
AWARD_BEFORE = ("due", "delivered", "needs_manual_action", "failed", "withheld", "reversed", "historical", "ended")
AWARD_AFTER = (*AWARD_BEFORE, "shadow")
SHADOW_REASON = "decided in shadow mode: recorded, never delivered"


def _award_checks(values: Sequence[str]) -> None:
    # SQLite: batch mode recreates the tables (store.upgrade runs migrations with foreign keys
    # off and checks them all before committing)
    for table in ("awards", "award_log"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_status"), type_="check")
            batch.create_check_constraint("status", f"status IN ({', '.join(repr(v) for v in values)})")


def upgrade() -> None:
    op.add_column("awards", sa.Column("done_by", sa.String(255), nullable=True))
    op.add_column("awards", sa.Column("done_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("awards", sa.Column("done_note", sa.Text, nullable=True))
    _award_checks(AWARD_AFTER)
    conn = op.get_bind()
    awards = sa.table("awards", sa.column("key"), sa.column("shop_id"), sa.column("status"), sa.column("reason"),
                      sa.column("rule_version"), sa.column("updated_at"))
    log = sa.table("award_log", sa.column("award_key"), sa.column("at"), sa.column("status"), sa.column("reason"),
                   sa.column("rule_version"))
    shops = sa.table("shops", sa.column("shop_id"), sa.column("mode"))
    shadow_shops = sa.select(shops.c.shop_id).where(shops.c.mode == "shadow")
    now = datetime.now(UTC)
    rows = conn.execute(sa.select(awards.c.key, awards.c.rule_version)
                        .where(awards.c.status == "due", awards.c.shop_id.in_(shadow_shops))).all()
    for i in range(0, len(rows), 500):
        chunk = rows[i:i + 500]
        conn.execute(awards.update().where(awards.c.key.in_([r.key for r in chunk]))
                     .values(status="shadow", reason=SHADOW_REASON, updated_at=now))
        conn.execute(log.insert(), [{"award_key": r.key, "at": now, "status": "shadow", "reason": SHADOW_REASON,
                                     "rule_version": r.rule_version} for r in chunk])


def downgrade() -> None:
    conn = op.get_bind()
    awards = sa.table("awards", sa.column("status"))
    log = sa.table("award_log", sa.column("status"))
    conn.execute(awards.update().where(awards.c.status == "shadow").values(status="due"))
    conn.execute(log.delete().where(log.c.status == "shadow"))
    _award_checks(AWARD_BEFORE)
    with op.batch_alter_table("awards") as batch:
        batch.drop_column("done_note")
        batch.drop_column("done_at")
        batch.drop_column("done_by")
