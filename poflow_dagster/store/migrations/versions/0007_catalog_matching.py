"""Catalog matching: the merchant's Shopify variants, their sync cursor, learned supplier SKUs, line matches

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from poflow_dagster.store.types import Money, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_variants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("shop_url", sa.String(length=500), nullable=False),
        sa.Column("product_gid", sa.String(length=100), nullable=False),
        sa.Column("variant_gid", sa.String(length=100), nullable=False),
        sa.Column("inventory_item_gid", sa.String(length=100), nullable=True),
        sa.Column("sku", sa.String(length=255), nullable=True),
        sa.Column("sku_key", sa.String(length=255), nullable=True),
        sa.Column("barcode", sa.String(length=255), nullable=True),
        sa.Column("barcode_key", sa.String(length=14), nullable=True),
        sa.Column("product_title", sa.String(length=500), nullable=False),
        sa.Column("variant_title", sa.String(length=500), nullable=True),
        sa.Column("vendor", sa.String(length=255), nullable=True),
        sa.Column("vendor_key", sa.String(length=255), nullable=True),
        sa.Column("unit_cost", Money(), nullable=True),
        sa.Column("price", Money(), nullable=False),
        sa.Column("product_status", sa.String(length=20), nullable=False),
        sa.Column("shopify_updated_at", UTCDateTime(), nullable=False),
        sa.Column("synced_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"], name=op.f("fk_catalog_variants_merchant_id_merchants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_variants")),
        sa.UniqueConstraint("shop_url", "variant_gid", name="uq_catalog_variants_shop_variant"),
    )
    op.create_index("ix_catalog_variants_merchant_sku_key", "catalog_variants", ["merchant_id", "sku_key"])
    op.create_index("ix_catalog_variants_merchant_barcode_key", "catalog_variants", ["merchant_id", "barcode_key"])
    op.create_index("ix_catalog_variants_merchant_vendor_key", "catalog_variants", ["merchant_id", "vendor_key"])
    op.create_table(
        "catalog_sync_state",
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("shop_url", sa.String(length=500), nullable=False),
        sa.Column("last_updated_at", UTCDateTime(), nullable=True),
        sa.Column("last_full_sync_at", UTCDateTime(), nullable=True),
        sa.Column("pass_started_at", UTCDateTime(), nullable=True),
        sa.Column("pass_updated_after", UTCDateTime(), nullable=True),
        sa.Column("pass_full", sa.Boolean(), nullable=False),
        sa.Column("pass_cursor", sa.Text(), nullable=True),
        sa.Column("pass_max_updated_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"],
                                name=op.f("fk_catalog_sync_state_merchant_id_merchants")),
        sa.PrimaryKeyConstraint("merchant_id", "shop_url", name=op.f("pk_catalog_sync_state")),
    )
    op.create_table(
        "supplier_sku_map",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("supplier_key", sa.String(length=300), nullable=False),
        sa.Column("supplier_sku_key", sa.String(length=255), nullable=False),
        sa.Column("variant_gid", sa.String(length=100), nullable=False),
        sa.Column("shop_url", sa.String(length=500), nullable=False),
        sa.Column("learned_from_upload_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["learned_from_upload_id"], ["uploads.id"],
                                name=op.f("fk_supplier_sku_map_learned_from_upload_id_uploads")),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"], name=op.f("fk_supplier_sku_map_merchant_id_merchants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_supplier_sku_map")),
        sa.UniqueConstraint("merchant_id", "supplier_key", "supplier_sku_key", "shop_url",
                            name="uq_supplier_sku_map_merchant_supplier_sku_shop"),
    )
    op.create_table(
        "line_matches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("line_item_id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("variant_gid", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("matched_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["line_item_id"], ["line_items.id"],
                                name=op.f("fk_line_matches_line_item_id_line_items"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["upload_id"], ["uploads.id"], name=op.f("fk_line_matches_upload_id_uploads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_line_matches")),
        sa.UniqueConstraint("line_item_id", name=op.f("uq_line_matches_line_item_id")),
    )
    op.create_index(op.f("ix_line_matches_upload_id"), "line_matches", ["upload_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_line_matches_upload_id"), table_name="line_matches")
    op.drop_table("line_matches")
    op.drop_table("supplier_sku_map")
    op.drop_table("catalog_sync_state")
    op.drop_index("ix_catalog_variants_merchant_vendor_key", table_name="catalog_variants")
    op.drop_index("ix_catalog_variants_merchant_barcode_key", table_name="catalog_variants")
    op.drop_index("ix_catalog_variants_merchant_sku_key", table_name="catalog_variants")
    op.drop_table("catalog_variants")
