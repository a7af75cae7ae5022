"""The one upload list: ``GET /api/uploads`` and ``poflow uploads`` both read it (each only formats the rows).

An upload's list status is one word of ``LIST_STATUSES``:

- ``received`` — registered, no run requested for it yet;
- ``pending`` — its run is requested (or it was approved after review) and has not started;
- ``processing`` / ``completed`` / ``failed`` / ``needs_review`` — its workflow's status;
- ``duplicate`` — the same bytes as an earlier upload of the merchant (never runs).

As a *filter*, ``pending`` means "not started yet" and also matches ``received`` (like the stats' ``pending``
bucket); every other status matches itself only. Uploads come newest first (by ``uploads.seq``); a page's
``next_cursor`` passed back as ``cursor`` gives the next, older page (keyset pagination: stable while new uploads
arrive, no offset scan).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import sqlalchemy as sa

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Upload, WorkflowExecution

#: The list's status vocabulary (see the module's docstring).
LIST_STATUSES = ("received", "pending", "processing", "completed", "failed", "needs_review", "duplicate")
#: Statuses after which nothing more happens to an upload (100 %, no ETA for the finished ones).
DONE_STATUSES = frozenset({"completed", "duplicate"})
DEFAULT_LIMIT = 50
MAX_LIMIT = 500

#: The list status as SQL: duplicate and approved come from the upload, the rest from its workflow if any.
_LIST_STATUS = sa.case(
    (Upload.status == "duplicate", "duplicate"),
    (Upload.status == "approved", "pending"),
    else_=sa.func.coalesce(WorkflowExecution.status, Upload.status),
)


@dataclasses.dataclass(frozen=True)
class UploadListEntry:
    """One upload as lists show it."""

    upload_id: str
    merchant_id: str
    file: str
    size_bytes: int
    status: str
    workflow_status: str | None
    stage: str | None
    percent: int
    eta_seconds: float | None
    eta_at: dt.datetime | None
    run_id: str | None
    duplicate_of: str | None
    error_code: str | None
    error_message: str | None
    created_at: dt.datetime | None
    completed_at: dt.datetime | None
    #: The keyset position: pass it as ``cursor`` to continue after this entry.
    cursor: str


@dataclasses.dataclass(frozen=True)
class UploadPage:
    entries: list[UploadListEntry]
    #: ``cursor`` for the next (older) page; ``None`` when this page is the last.
    next_cursor: str | None


def list_uploads(
    db: Database,
    *,
    merchant_id: str | None = None,
    status: str | None = None,
    since: dt.datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> UploadPage:
    """Uploads newest first, filtered by merchant, list status (``LIST_STATUSES``), created at or after ``since``
    (tz-aware), and older than ``cursor`` (a ``next_cursor`` of an earlier page); at most ``limit``.

    Raises ``PoflowError`` ``invalid_status`` / ``invalid_cursor`` for a status or cursor it does not know."""
    if status is not None and status not in LIST_STATUSES:
        raise PoflowError("invalid_status", f"status must be one of {', '.join(LIST_STATUSES)}")
    limit = max(1, min(int(limit), MAX_LIMIT))
    query = (
        sa.select(Upload, WorkflowExecution, _LIST_STATUS.label("list_status"))
        .outerjoin(WorkflowExecution, WorkflowExecution.upload_id == Upload.id)
        .order_by(Upload.seq.desc())
        .limit(limit + 1)
    )
    if merchant_id is not None:
        query = query.where(Upload.merchant_id == merchant_id)
    if status == "pending":
        query = query.where(_LIST_STATUS.in_(["pending", "received"]))
    elif status is not None:
        query = query.where(_LIST_STATUS == status)
    if since is not None:
        query = query.where(Upload.created_at >= since)
    if cursor is not None:
        query = query.where(Upload.seq < _parse_cursor(cursor))
    with db.session() as session:
        rows = session.execute(query).all()
    entries = [_entry(upload, workflow, state) for upload, workflow, state in rows[:limit]]
    return UploadPage(entries, entries[-1].cursor if len(rows) > limit else None)


def _parse_cursor(cursor: str) -> int:
    text = str(cursor).strip()
    if not text.isdigit() or len(text) > 18:
        raise PoflowError("invalid_cursor", f"{text[:40]!r} is not a cursor this list returned")
    return int(text)


def _entry(upload: Upload, workflow: WorkflowExecution | None, state: str) -> UploadListEntry:
    done = state in DONE_STATUSES
    return UploadListEntry(
        upload_id=upload.id,
        merchant_id=upload.merchant_id,
        file=upload.original_filename,
        size_bytes=upload.size_bytes,
        status=state,
        workflow_status=workflow.status if workflow is not None else None,
        stage=workflow.current_stage if workflow is not None else None,
        percent=100 if done else ((workflow.progress_percent or 0) if workflow is not None else 0),
        eta_seconds=workflow.eta_seconds if workflow is not None and not done else None,
        eta_at=workflow.eta_at if workflow is not None and not done else None,
        run_id=workflow.run_id if workflow is not None else None,
        duplicate_of=upload.duplicate_of,
        error_code=(workflow.error_code if workflow is not None else None) or upload.error_code,
        error_message=(workflow.error_message if workflow is not None else None) or upload.error_message,
        created_at=upload.created_at,
        completed_at=workflow.completed_at if workflow is not None else None,
        cursor=str(upload.seq),
    )


def iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
