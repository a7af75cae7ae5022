"""Product images: stored images, known image URLs (the ETag cache), each draft's image candidates; merchants'
image feed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from poflow_dagster.store.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("merchants", sa.Column("image_feed_url", sa.Text(), nullable=True))
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("phash", sa.String(length=16), nullable=False),
        sa.Column("mime_type", sa.String(length=50), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("byte_size", sa.Integer(), nullable=False),
        sa.Column("storage_path", sa.String(length=500), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"], name=op.f("fk_images_merchant_id_merchants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("merchant_id", "sha256", name="uq_images_merchant_sha256"),
    )
    op.create_table(
        "image_urls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("url_sha256", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("etag", sa.String(length=500), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=True),
        sa.Column("fetched_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"], name=op.f("fk_image_urls_merchant_id_merchants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_urls")),
        sa.UniqueConstraint("merchant_id", "url_sha256", name="uq_image_urls_merchant_url_sha256"),
    )
    op.create_table(
        "draft_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("draft_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("merchant_id", sa.String(length=64), nullable=False),
        sa.Column("upload_id", sa.String(length=64), nullable=True),
        sa.Column("candidate_key", sa.String(length=80), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("duplicate_of", sa.String(length=64), nullable=True),
        sa.Column("media_gid", sa.String(length=100), nullable=True),
        sa.Column("attached_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["draft_id"], ["product_drafts.id"], name=op.f("fk_draft_images_draft_id_product_drafts"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_draft_images_image_id_images")),
        sa.ForeignKeyConstraint(["upload_id"], ["uploads.id"], name=op.f("fk_draft_images_upload_id_uploads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_draft_images")),
        sa.UniqueConstraint("draft_id", "candidate_key", name="uq_draft_images_draft_candidate"),
    )
    op.create_index(op.f("ix_draft_images_draft_id"), "draft_images", ["draft_id"])
    op.create_index(op.f("ix_draft_images_upload_id"), "draft_images", ["upload_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_draft_images_upload_id"), table_name="draft_images")
    op.drop_index(op.f("ix_draft_images_draft_id"), table_name="draft_images")
    op.drop_table("draft_images")
    op.drop_table("image_urls")
    op.drop_table("images")
    op.drop_column("merchants", "image_feed_url")
