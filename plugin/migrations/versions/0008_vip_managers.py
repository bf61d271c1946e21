"""VIP service: a VIP customer's personal manager.

* ``vip_assignments``: (shop, customer) → the id of one of the shop's ``vip_managers`` (shops
  file) and when they were assigned; a customer has a row while they hold VIP service and the
  shop lists managers.  The rows per manager are the manager's load.  Empty after the upgrade:
  each VIP customer gets their manager when next processed.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "vip_assignments",
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("manager_id", sa.String(64), nullable=False),
        sa.Column("assigned_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("shop_id", "customer_id", name="pk_vip_assignments"),
    )
    op.create_index("ix_vip_assignments_shop_id_manager_id", "vip_assignments", ["shop_id", "manager_id"])


def downgrade() -> None:
    op.drop_index("ix_vip_assignments_shop_id_manager_id", table_name="vip_assignments")
    op.drop_table("vip_assignments")
