"""API tokens per merchant, progress events without Redis, a per-upload event sequence

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from poflow_dagster.store.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merchant_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"], name=op.f("fk_merchant_tokens_merchant_id_merchants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_tokens")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_merchant_tokens_token_sha256")),
    )
    op.create_index(op.f("ix_merchant_tokens_merchant_id"), "merchant_tokens", ["merchant_id"], unique=False)
    op.create_table(
        "progress_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("upload_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_progress_events")),
        sa.UniqueConstraint("upload_id", "seq", name="uq_progress_events_upload_seq"),
    )
    op.create_index("ix_progress_events_merchant_id_id", "progress_events", ["merchant_id", "id"], unique=False)
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_seq", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.drop_column("event_seq")
    op.drop_index("ix_progress_events_merchant_id_id", table_name="progress_events")
    op.drop_table("progress_events")
    op.drop_index(op.f("ix_merchant_tokens_merchant_id"), table_name="merchant_tokens")
    op.drop_table("merchant_tokens")
