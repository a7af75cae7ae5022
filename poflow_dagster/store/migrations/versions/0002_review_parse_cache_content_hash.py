"""review, parse cache, content hash

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 21:09:17.694937
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from poflow_dagster.store.types import Money, Quantity, UTCDateTime


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('parse_results',
    sa.Column('upload_id', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('extractor', sa.String(length=40), nullable=False),
    sa.Column('parsed_json', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['upload_id'], ['uploads.id'], name=op.f('fk_parse_results_upload_id_uploads')),
    sa.PrimaryKeyConstraint('upload_id', name=op.f('pk_parse_results'))
    )
    with op.batch_alter_table('purchase_orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_hash', sa.String(length=64), nullable=True))
        batch_op.drop_index(batch_op.f('ix_purchase_orders_merchant_id'))
        batch_op.create_index('ix_purchase_orders_merchant_po_number', ['merchant_id', 'po_number'], unique=False)

    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approved_at', UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('approved_by', sa.String(length=200), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_column('approved_by')
        batch_op.drop_column('approved_at')

    with op.batch_alter_table('purchase_orders', schema=None) as batch_op:
        batch_op.drop_index('ix_purchase_orders_merchant_po_number')
        batch_op.create_index(batch_op.f('ix_purchase_orders_merchant_id'), ['merchant_id'], unique=False)
        batch_op.drop_column('content_hash')

    op.drop_table('parse_results')
