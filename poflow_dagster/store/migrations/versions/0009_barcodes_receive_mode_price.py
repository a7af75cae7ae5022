"""Barcodes on PO lines and drafts; per-merchant receive mode and price updates; supplier SKUs as metafields

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 11:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from poflow_dagster.store.types import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (a batch rebuild of a table on SQLite would trip the foreign keys).
    op.add_column("line_items", sa.Column("barcode", sa.String(length=64), nullable=True))
    op.add_column("product_drafts", sa.Column("barcode", sa.String(length=64), nullable=True))
    op.add_column("merchants", sa.Column("receive_on", sa.String(length=10), server_default="manual", nullable=False))
    op.add_column("merchants", sa.Column("update_price", sa.Boolean(), server_default=sa.false(), nullable=False))
    # Merchants who received stock before this revision received it when the PO synced: keep that.
    op.execute("UPDATE merchants SET receive_on = 'sync' WHERE receive_stock")
    op.add_column("catalog_variants", sa.Column("supplier_skus", sa.Text(), nullable=True))
    op.add_column("supplier_sku_map", sa.Column("metafield_written_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("supplier_sku_map", "metafield_written_at")
    op.drop_column("catalog_variants", "supplier_skus")
    op.drop_column("merchants", "update_price")
    op.drop_column("merchants", "receive_on")
    op.drop_column("product_drafts", "barcode")
    op.drop_column("line_items", "barcode")
