"""What the API reads from the app database, always within one merchant."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.stages import UploadStatus, WorkflowStatus
from poflow_dagster.images.status import upload_image_status
from poflow_dagster.status_view import status_json
from poflow_dagster.store import upload_list
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Upload, WorkflowExecution
from poflow_dagster.store.upload_list import DEFAULT_LIMIT, UploadListEntry
from poflow_dagster.store.workflow import status_report

#: ``?status=`` values (``store.upload_list``: ``pending`` also matches ``received``, i.e. not started yet).
LIST_STATUSES = upload_list.LIST_STATUSES

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
    return status_json(report, upload_image_status(db, upload_id))


def list_uploads(
    db: Database, merchant_id: str, *, status: str | None = None, since: dt.datetime | None = None,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> dict:
    """``GET /api/uploads``: the merchant's uploads, newest first, each with its workflow's progress and live ETA
    (``store.upload_list``: the statuses and filters ``poflow uploads`` uses), and ``next_cursor`` for the next page."""
    page = upload_list.list_uploads(db, merchant_id=merchant_id, status=status, since=since, limit=limit,
                                    cursor=cursor)
    return {"uploads": [upload_row(entry) for entry in page.entries], "next_cursor": page.next_cursor}


def upload_row(entry: UploadListEntry) -> dict:
    """One upload as the API's list (and the web page) shows it; the field names are stable."""
    return {
        "upload_id": entry.upload_id,
        "file": entry.file,
        "size_bytes": entry.size_bytes,
        "status": entry.status,
        "workflow_status": entry.workflow_status,
        "current_stage": entry.stage,
        "progress_percent": entry.percent,
        "eta_seconds": entry.eta_seconds,
        "eta_at": upload_list.iso(entry.eta_at),
        "duplicate_of": entry.duplicate_of,
        "error_code": entry.error_code,
        "error_message": entry.error_message,
        "run_id": entry.run_id,
        "created_at": upload_list.iso(entry.created_at),
        "completed_at": upload_list.iso(entry.completed_at),
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
