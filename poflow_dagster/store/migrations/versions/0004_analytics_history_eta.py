"""analytics: stage signals, stage_runs, run launches, analytics state, live ETA on the workflow

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from poflow_dagster.store.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stage_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signals", sa.JSON(), nullable=True))
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("eta_seconds", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("eta_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("eta_basis", sa.String(length=200), nullable=True))

    op.create_table(
        "stage_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("upload_id", sa.String(length=64), nullable=True),
        sa.Column("merchant_id", sa.String(length=64), nullable=True),
        sa.Column("job", sa.String(length=40), nullable=False),
        sa.Column("stage", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("run_status", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=True),
        sa.Column("bytes", sa.Integer(), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.Column("llm_windows", sa.Integer(), nullable=True),
        sa.Column("llm_seconds", sa.Float(), nullable=True),
        sa.Column("shopify_requests", sa.Integer(), nullable=True),
        sa.Column("shopify_points", sa.Float(), nullable=True),
        sa.Column("shopify_throttled_s", sa.Float(), nullable=True),
        sa.Column("source_format", sa.String(length=20), nullable=True),
        sa.Column("file_bytes", sa.Integer(), nullable=True),
        sa.Column("lines", sa.Integer(), nullable=True),
        sa.Column("skus", sa.Integer(), nullable=True),
        sa.Column("first_run", sa.Boolean(), nullable=False),
        sa.Column("run_created_at", UTCDateTime(), nullable=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_runs")),
        sa.UniqueConstraint("run_id", "stage", name="uq_stage_runs_run_stage"),
    )
    op.create_index("ix_stage_runs_ended_at", "stage_runs", ["ended_at"], unique=False)
    op.create_index("ix_stage_runs_stage_ended_at", "stage_runs", ["stage", "ended_at"], unique=False)
    op.create_index(op.f("ix_stage_runs_upload_id"), "stage_runs", ["upload_id"], unique=False)
    op.create_index(op.f("ix_stage_runs_merchant_id"), "stage_runs", ["merchant_id"], unique=False)

    op.create_table(
        "run_launches",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("enqueued_at", UTCDateTime(), nullable=True),
        sa.Column("starting_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_launches")),
    )
    op.create_table(
        "analytics_state",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_analytics_state")),
    )


def downgrade() -> None:
    op.drop_table("analytics_state")
    op.drop_table("run_launches")
    op.drop_index(op.f("ix_stage_runs_merchant_id"), table_name="stage_runs")
    op.drop_index(op.f("ix_stage_runs_upload_id"), table_name="stage_runs")
    op.drop_index("ix_stage_runs_stage_ended_at", table_name="stage_runs")
    op.drop_index("ix_stage_runs_ended_at", table_name="stage_runs")
    op.drop_table("stage_runs")
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.drop_column("eta_basis")
        batch_op.drop_column("eta_at")
        batch_op.drop_column("eta_seconds")
    with op.batch_alter_table("stage_metrics", schema=None) as batch_op:
        batch_op.drop_column("signals")
