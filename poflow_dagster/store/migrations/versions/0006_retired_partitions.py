"""Retired Dagster partitions: uploads whose po_uploads partition the retention job removed

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 05:35:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from poflow_dagster.store.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_partitions",
        sa.Column("upload_id", sa.String(length=64), nullable=False),
        sa.Column("retired_at", UTCDateTime(), nullable=False),
        sa.Column("upload_status", sa.String(length=20), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["upload_id"], ["uploads.id"], name=op.f("fk_retired_partitions_upload_id_uploads")),
        sa.PrimaryKeyConstraint("upload_id", name=op.f("pk_retired_partitions")),
    )


def downgrade() -> None:
    op.drop_table("retired_partitions")
