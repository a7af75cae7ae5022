"""What the API reads from the app database, always within one merchant."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.stages import UploadStatus, WorkflowStatus
from poflow_dagster.status_view import status_json
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Upload, WorkflowExecution
from poflow_dagster.store.workflow import status_report

#: ``?status=`` values: the upload's own statuses, plus ``pending`` (received, not started yet).
LIST_STATUSES = frozenset({"pending", *(s.value for s in UploadStatus)})

#: The stats' buckets; an upload's status maps to one of them (duplicates are counted apart).
_BUCKET = {
    UploadStatus.RECEIVED: "pending", UploadStatus.APPROVED: "pending", UploadStatus.PROCESSING: "processing",
    UploadStatus.COMPLETED: "completed", UploadStatus.FAILED: "failed", UploadStatus.NEEDS_REVIEW: "needs_review",
    UploadStatus.DUPLICATE: "duplicate",
}


def merchant_upload_status(db: Database, merchant_id: str, upload_id: str) -> dict:
    """``poflow status ID --format json`` of the merchant's own upload; another merchant's upload is
    ``unknown_upload`` exactly like one that does not exist."""
    try:
        report = status_report(db, upload_id)
    except PoflowError as error:
        if error.code == "unknown_upload":
            raise PoflowError("unknown_upload", f"no upload with id {upload_id!r}") from None
        raise
    if report.upload.merchant_id != merchant_id:
        raise PoflowError("unknown_upload", f"no upload with id {upload_id!r}")
    return status_json(report)


def list_uploads(
    db: Database, merchant_id: str, *, status: str | None = None, since: dt.datetime | None = None, limit: int = 50
) -> list[dict]:
    """The merchant's uploads, newest first, each with its workflow's progress and live ETA."""
    query = (
        select(Upload, WorkflowExecution)
        .outerjoin(WorkflowExecution, WorkflowExecution.upload_id == Upload.id)
        .where(Upload.merchant_id == merchant_id)
        .order_by(Upload.seq.desc())
        .limit(limit)
    )
    if status == "pending":
        query = query.where(Upload.status.in_([UploadStatus.RECEIVED, UploadStatus.APPROVED]))
    elif status:
        query = query.where(Upload.status == status)
    if since is not None:
        query = query.where(Upload.created_at >= since)
    with db.session() as session:
        return [upload_row(upload, workflow) for upload, workflow in session.execute(query)]


def upload_row(upload: Upload, workflow: WorkflowExecution | None) -> dict:
    """One upload as the list (and the web page) shows it."""
    terminal_percent = 100 if upload.status in (UploadStatus.COMPLETED, UploadStatus.DUPLICATE) else 0
    return {
        "upload_id": upload.id,
        "file": upload.original_filename,
        "size_bytes": upload.size_bytes,
        "status": upload.status,
        "workflow_status": workflow.status if workflow else None,
        "current_stage": workflow.current_stage if workflow else None,
        "progress_percent": workflow.progress_percent if workflow else terminal_percent,
        "eta_seconds": workflow.eta_seconds if workflow else None,
        "eta_at": workflow.eta_at.isoformat() if workflow and workflow.eta_at else None,
        "duplicate_of": upload.duplicate_of,
        "error_code": upload.error_code,
        "error_message": upload.error_message,
        "run_id": workflow.run_id if workflow else None,
        "created_at": upload.created_at.isoformat(),
        "completed_at": workflow.completed_at.isoformat() if workflow and workflow.completed_at else None,
    }


def merchant_stats(db: Database, merchant_id: str, *, now: dt.datetime) -> dict:
    """The queue view: uploads by status, runs in progress, and POs completed in the last 5 and 60 minutes."""
    counts = {"pending": 0, "processing": 0, "completed": 0, "failed": 0, "needs_review": 0, "duplicate": 0}
    with db.session() as session:
        by_status = session.execute(
            select(Upload.status, func.count()).where(Upload.merchant_id == merchant_id).group_by(Upload.status)
        )
        for status, count in by_status:
            bucket = _BUCKET.get(status, status)
            counts[bucket] = counts.get(bucket, 0) + count
        active = session.scalar(
            select(func.count()).select_from(WorkflowExecution).join(Upload, Upload.id == WorkflowExecution.upload_id)
            .where(Upload.merchant_id == merchant_id, WorkflowExecution.status == WorkflowStatus.PROCESSING)
        )
        completed = {
            minutes: session.scalar(
                select(func.count()).select_from(WorkflowExecution)
                .join(Upload, Upload.id == WorkflowExecution.upload_id)
                .where(
                    Upload.merchant_id == merchant_id,
                    WorkflowExecution.status == WorkflowStatus.COMPLETED,
                    Upload.status == UploadStatus.COMPLETED,
                    WorkflowExecution.completed_at >= now - dt.timedelta(minutes=minutes),
                )
            )
            for minutes in (5, 60)
        }
    return {
        "merchant_id": merchant_id,
        "counts": counts,
        "total": sum(counts.values()),
        "active_runs": int(active or 0),
        "throughput": {
            "completed_last_5_min": int(completed[5] or 0),
            "completed_last_60_min": int(completed[60] or 0),
            "per_minute_last_5_min": round((completed[5] or 0) / 5, 2),
            "per_minute_last_60_min": round((completed[60] or 0) / 60, 2),
        },
        "at": now.isoformat(),
    }
