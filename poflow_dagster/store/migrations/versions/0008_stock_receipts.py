"""Incoming stock: merchants opt in to receiving (with a location); received PO quantities per line

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from poflow_dagster.store.types import Quantity, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: a batch rebuild of ``merchants`` on SQLite would trip the foreign keys
    # that point at it.
    op.add_column("merchants", sa.Column("receive_stock", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("merchants", sa.Column("stock_location_gid", sa.String(length=100), nullable=True))
    op.create_table(
        "stock_receipts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.String(length=64), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("receipt_no", sa.Integer(), nullable=False),
        sa.Column("quantity", Quantity(), nullable=False),
        sa.Column("variant_gid", sa.String(length=100), nullable=True),
        sa.Column("inventory_item_gid", sa.String(length=100), nullable=False),
        sa.Column("location_gid", sa.String(length=100), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("adjustment_key", sa.String(length=64), nullable=True),
        sa.Column("change_from_quantity", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("applied_at", UTCDateTime(), nullable=True),
        sa.Column("applied_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["upload_id"], ["uploads.id"], name=op.f("fk_stock_receipts_upload_id_uploads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_receipts")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_stock_receipts_idempotency_key")),
        sa.UniqueConstraint("upload_id", "line_no", "receipt_no", name="uq_stock_receipts_upload_line_receipt"),
    )
    op.create_index(op.f("ix_stock_receipts_upload_id"), "stock_receipts", ["upload_id"])
    op.create_index(op.f("ix_stock_receipts_adjustment_key"), "stock_receipts", ["adjustment_key"])


def downgrade() -> None:
    op.drop_index(op.f("ix_stock_receipts_adjustment_key"), table_name="stock_receipts")
    op.drop_index(op.f("ix_stock_receipts_upload_id"), table_name="stock_receipts")
    op.drop_table("stock_receipts")
    op.drop_column("merchants", "stock_location_gid")
    op.drop_column("merchants", "receive_stock")
