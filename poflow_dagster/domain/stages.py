"""Stage names are fixed: op names, the status table, progress events and reports all use them."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    AI_PARSING = "ai_parsing"
    DATABASE_SAVE = "database_save"
    PRODUCT_DRAFT_CREATION = "product_draft_creation"
    IMAGE_ATTACHMENT = "image_attachment"
    SHOPIFY_SYNC = "shopify_sync"
    STATUS_UPDATE = "status_update"


#: Progress percent reported when a stage of the PO graph has finished.
STAGE_PROGRESS: dict[Stage, int] = {
    Stage.AI_PARSING: 20,
    Stage.DATABASE_SAVE: 40,
    Stage.PRODUCT_DRAFT_CREATION: 60,
    Stage.SHOPIFY_SYNC: 90,
    Stage.STATUS_UPDATE: 100,
}


class WorkflowStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    NEEDS_REVIEW = "needs_review"


class UploadStatus(StrEnum):
    RECEIVED = "received"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    NEEDS_REVIEW = "needs_review"
    APPROVED = "approved"  # reviewed; its continuation run is about to start
