"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 20:40:38.523140
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from poflow_dagster.store.types import Money, Quantity, UTCDateTime


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('merchants',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('markup_percent', Money(), nullable=False),
    sa.Column('shopify_sync_enabled', sa.Boolean(), nullable=False),
    sa.Column('shop_url', sa.String(length=500), nullable=True),
    sa.Column('shopify_token_env', sa.String(length=200), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_merchants'))
    )
    op.create_table('suppliers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('normalized_name', sa.String(length=300), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], name=op.f('fk_suppliers_merchant_id_merchants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suppliers')),
    sa.UniqueConstraint('merchant_id', 'normalized_name', name='uq_suppliers_merchant_name')
    )
    op.create_table('uploads',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('original_filename', sa.String(length=500), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('mime_type', sa.String(length=200), nullable=False),
    sa.Column('stored_path', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('duplicate_of', sa.String(length=64), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['duplicate_of'], ['uploads.id'], name=op.f('fk_uploads_duplicate_of_uploads')),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], name=op.f('fk_uploads_merchant_id_merchants')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_uploads')),
    sa.UniqueConstraint('id', name=op.f('uq_uploads_id'))
    )
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_uploads_merchant_id'), ['merchant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_uploads_status'), ['status'], unique=False)
        batch_op.create_index('uq_uploads_merchant_sha256_original', ['merchant_id', 'sha256'], unique=True, sqlite_where=sa.text('duplicate_of IS NULL'), postgresql_where=sa.text('duplicate_of IS NULL'))

    op.create_table('product_drafts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('sku', sa.String(length=100), nullable=False),
    sa.Column('title', sa.String(length=500), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('unit_cost', Money(), nullable=False),
    sa.Column('price', Money(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('source_upload_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], name=op.f('fk_product_drafts_merchant_id_merchants')),
    sa.ForeignKeyConstraint(['source_upload_id'], ['uploads.id'], name=op.f('fk_product_drafts_source_upload_id_uploads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_product_drafts')),
    sa.UniqueConstraint('merchant_id', 'sku', name='uq_product_drafts_merchant_sku')
    )
    op.create_table('purchase_orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('upload_id', sa.String(length=64), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('supplier_id', sa.Integer(), nullable=True),
    sa.Column('po_number', sa.String(length=100), nullable=True),
    sa.Column('order_date', sa.Date(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('subtotal', Money(), nullable=True),
    sa.Column('tax', Money(), nullable=True),
    sa.Column('shipping', Money(), nullable=True),
    sa.Column('total', Money(), nullable=True),
    sa.Column('source_format', sa.String(length=20), nullable=False),
    sa.Column('extractor', sa.String(length=40), nullable=False),
    sa.Column('issues', sa.JSON(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.id'], name=op.f('fk_purchase_orders_merchant_id_merchants')),
    sa.ForeignKeyConstraint(['supplier_id'], ['suppliers.id'], name=op.f('fk_purchase_orders_supplier_id_suppliers')),
    sa.ForeignKeyConstraint(['upload_id'], ['uploads.id'], name=op.f('fk_purchase_orders_upload_id_uploads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_purchase_orders')),
    sa.UniqueConstraint('upload_id', name=op.f('uq_purchase_orders_upload_id'))
    )
    with op.batch_alter_table('purchase_orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_purchase_orders_merchant_id'), ['merchant_id'], unique=False)

    op.create_table('stage_metrics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('upload_id', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('stage', sa.String(length=40), nullable=False),
    sa.Column('started_at', UTCDateTime(), nullable=False),
    sa.Column('ended_at', UTCDateTime(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.Column('items', sa.Integer(), nullable=True),
    sa.Column('bytes', sa.Integer(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['upload_id'], ['uploads.id'], name=op.f('fk_stage_metrics_upload_id_uploads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stage_metrics')),
    sa.UniqueConstraint('run_id', 'stage', name='uq_stage_metrics_run_stage')
    )
    with op.batch_alter_table('stage_metrics', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stage_metrics_upload_id'), ['upload_id'], unique=False)

    op.create_table('workflow_executions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('upload_id', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('current_stage', sa.String(length=40), nullable=True),
    sa.Column('progress_percent', sa.Integer(), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('started_at', UTCDateTime(), nullable=True),
    sa.Column('completed_at', UTCDateTime(), nullable=True),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['upload_id'], ['uploads.id'], name=op.f('fk_workflow_executions_upload_id_uploads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workflow_executions')),
    sa.UniqueConstraint('upload_id', name=op.f('uq_workflow_executions_upload_id'))
    )
    with op.batch_alter_table('workflow_executions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workflow_executions_status'), ['status'], unique=False)

    op.create_table('line_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('po_id', sa.Integer(), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('sku', sa.String(length=100), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('quantity', Quantity(), nullable=True),
    sa.Column('unit_cost', Money(), nullable=True),
    sa.Column('line_total', Money(), nullable=True),
    sa.ForeignKeyConstraint(['po_id'], ['purchase_orders.id'], name=op.f('fk_line_items_po_id_purchase_orders'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_line_items')),
    sa.UniqueConstraint('po_id', 'line_no', name='uq_line_items_po_line')
    )
    with op.batch_alter_table('line_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_line_items_po_id'), ['po_id'], unique=False)

    op.create_table('shopify_products',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('draft_id', sa.Integer(), nullable=False),
    sa.Column('shop_url', sa.String(length=500), nullable=False),
    sa.Column('handle', sa.String(length=255), nullable=False),
    sa.Column('product_gid', sa.String(length=100), nullable=False),
    sa.Column('variant_gid', sa.String(length=100), nullable=False),
    sa.Column('synced_price', Money(), nullable=False),
    sa.Column('synced_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['draft_id'], ['product_drafts.id'], name=op.f('fk_shopify_products_draft_id_product_drafts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shopify_products')),
    sa.UniqueConstraint('draft_id', name=op.f('uq_shopify_products_draft_id'))
    )


def downgrade() -> None:
    op.drop_table('shopify_products')
    with op.batch_alter_table('line_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_line_items_po_id'))

    op.drop_table('line_items')
    with op.batch_alter_table('workflow_executions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workflow_executions_status'))

    op.drop_table('workflow_executions')
    with op.batch_alter_table('stage_metrics', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stage_metrics_upload_id'))

    op.drop_table('stage_metrics')
    with op.batch_alter_table('purchase_orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_purchase_orders_merchant_id'))

    op.drop_table('purchase_orders')
    op.drop_table('product_drafts')
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_index('uq_uploads_merchant_sha256_original', sqlite_where=sa.text('duplicate_of IS NULL'), postgresql_where=sa.text('duplicate_of IS NULL'))
        batch_op.drop_index(batch_op.f('ix_uploads_status'))
        batch_op.drop_index(batch_op.f('ix_uploads_merchant_id'))

    op.drop_table('uploads')
    op.drop_table('suppliers')
    op.drop_table('merchants')
