"""run requests, one PO per supplier + PO number, verification beside status

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 18:40:00

Existing databases may already hold the same supplier + PO number twice (the race this migration
closes): the earliest PO is kept, later ones are removed and their uploads recorded as ``duplicate_po``
of the winner, exactly what the pipeline now does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from poflow_dagster.store.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_requested_at", UTCDateTime(), nullable=True))
        batch_op.create_index("ix_uploads_pending_run", ["status", "run_requested_at"], unique=False)
    # Every upload that already left `received` (or has a workflow row) had its run requested.
    op.execute(
        "UPDATE uploads SET run_requested_at = created_at WHERE status <> 'received' "
        "OR id IN (SELECT upload_id FROM workflow_executions)"
    )

    _remove_duplicate_pos()
    # Plain index operations: a batch "recreate" of purchase_orders on SQLite would drop the old table, and
    # with foreign keys on, its ON DELETE CASCADE would empty line_items.
    op.drop_index("ix_purchase_orders_merchant_po_number", table_name="purchase_orders")
    op.create_index(
        "uq_purchase_orders_merchant_supplier_po", "purchase_orders", ["merchant_id", "supplier_id", "po_number"],
        unique=True,
    )

    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verification_status", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("verification_message", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("verified_at", UTCDateTime(), nullable=True))


def _remove_duplicate_pos() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT p.id, p.upload_id, w.upload_id AS winner FROM purchase_orders p "
            "JOIN purchase_orders w ON w.merchant_id = p.merchant_id AND w.supplier_id = p.supplier_id "
            "AND w.po_number = p.po_number AND w.id < p.id "
            "WHERE NOT EXISTS (SELECT 1 FROM purchase_orders e WHERE e.merchant_id = p.merchant_id "
            "AND e.supplier_id = p.supplier_id AND e.po_number = p.po_number AND e.id < w.id)"
        )
    ).all()
    for po_id, upload_id, winner in rows:
        bind.execute(sa.text("DELETE FROM line_items WHERE po_id = :id"), {"id": po_id})
        bind.execute(sa.text("DELETE FROM purchase_orders WHERE id = :id"), {"id": po_id})
        bind.execute(
            sa.text(
                "UPDATE uploads SET status = 'duplicate', duplicate_of = :winner, error_code = 'duplicate_po', "
                "error_message = :message WHERE id = :id"
            ),
            {"winner": winner, "id": upload_id,
             "message": f"same supplier and PO number as upload {winner}; no second PO was created"},
        )
        bind.execute(
            sa.text(
                "UPDATE workflow_executions SET error_code = 'duplicate_po', error_message = :message "
                "WHERE upload_id = :id"
            ),
            {"id": upload_id,
             "message": f"same supplier and PO number as upload {winner}; no second PO was created"},
        )


def downgrade() -> None:
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.drop_column("verified_at")
        batch_op.drop_column("verification_message")
        batch_op.drop_column("verification_status")
    op.drop_index("uq_purchase_orders_merchant_supplier_po", table_name="purchase_orders")
    op.create_index("ix_purchase_orders_merchant_po_number", "purchase_orders", ["merchant_id", "po_number"])
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index("ix_uploads_pending_run")
        batch_op.drop_column("run_requested_at")
