"""Review: POs with error-severity issues wait for a person; approval lets them continue."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.stages import UploadStatus, WorkflowStatus
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Upload, WorkflowExecution
from poflow_dagster.store.types import utcnow
from poflow_dagster.store.uploads import get_upload


@dataclass(frozen=True)
class Approval:
    upload_id: str
    approved_at: dt.datetime

    @property
    def run_key(self) -> str:
        """One run per approval (approving again later asks for another run)."""
        return f"{self.upload_id}:approved:{self.approved_at:%Y%m%dT%H%M%S%f}"


def approve_upload(db: Database, upload_id: str, approved_by: str) -> Approval:
    """Let a PO that is waiting for review continue to Shopify sync (a new run picks it up)."""
    with db.session() as session:
        upload = get_upload(session, upload_id)
        if upload.status != UploadStatus.NEEDS_REVIEW:
            raise PoflowError("not_awaiting_review", f"upload {upload_id} is {upload.status}, not needs_review")
        upload.approved_at = utcnow()
        upload.approved_by = approved_by[:200]
        upload.status = UploadStatus.APPROVED
        upload.error_code = upload.error_message = None
        workflow = session.scalar(select(WorkflowExecution).where(WorkflowExecution.upload_id == upload_id))
        if workflow is not None:
            workflow.status = WorkflowStatus.PENDING
        return Approval(upload_id, upload.approved_at)


def awaiting_review(db: Database, upload_id: str) -> bool:
    """Whether the upload is held for review (``needs_review``); an unknown upload raises ``unknown_upload``."""
    with db.session() as session:
        return get_upload(session, upload_id).status == UploadStatus.NEEDS_REVIEW


def pending_approvals(db: Database, limit: int) -> list[Approval]:
    """Approved uploads whose continuation run has not started yet."""
    with db.session() as session:
        rows = session.execute(
            select(Upload.id, Upload.approved_at)
            .where(Upload.status == UploadStatus.APPROVED)
            .order_by(Upload.approved_at)
            .limit(limit)
        )
        return [Approval(upload_id, approved_at) for upload_id, approved_at in rows]


def is_approved(db: Database, upload_id: str) -> bool:
    with db.session() as session:
        return get_upload(session, upload_id).approved_at is not None
