"""The uploads table: registering files, finding new ones, recording their outcome."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.stages import UploadStatus, WorkflowStatus
from poflow_dagster.store.db import Database
from poflow_dagster.store.merchants import ensure_merchant
from poflow_dagster.store.schema import Upload, WorkflowExecution
from poflow_dagster.store.types import utcnow


@dataclass(frozen=True)
class StoredFile:
    """A file already written to the content-addressed store."""

    sha256: str
    size_bytes: int
    mime_type: str
    stored_path: str
    original_filename: str


def new_upload_id(now: dt.datetime | None = None) -> str:
    """Sortable, globally unique, readable in the Dagster UI: ``up-20261122T203611-3f9a1c2b``."""
    now = now or dt.datetime.now(dt.UTC)
    return f"up-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def register_upload(db: Database, merchant_id: str, stored: StoredFile, *, source: str = "cli") -> Upload:
    """Insert an uploads row. The same bytes for the same merchant become a duplicate of the first.

    Safe under concurrency: the database's unique index decides which copy is the original.
    """
    for _attempt in range(3):
        try:
            with db.session() as session:
                ensure_merchant(session, merchant_id)
                original = _original_with_sha(session, merchant_id, stored.sha256)
                upload = Upload(
                    id=new_upload_id(),
                    merchant_id=merchant_id,
                    original_filename=stored.original_filename,
                    sha256=stored.sha256,
                    size_bytes=stored.size_bytes,
                    mime_type=stored.mime_type,
                    stored_path=stored.stored_path,
                    source=source,
                    status=UploadStatus.RECEIVED,
                )
                if original is not None:
                    upload.status = UploadStatus.DUPLICATE
                    upload.duplicate_of = original.id
                    upload.error_code = "duplicate_upload"
                    upload.error_message = f"same bytes as upload {original.id}"
                session.add(upload)
                session.flush()
                return upload
        except IntegrityError:
            continue  # another process registered the same bytes first: we are the duplicate now
    raise PoflowError("upload_conflict", "could not register the upload after concurrent conflicts; try again")


def _original_with_sha(session: Session, merchant_id: str, sha256: str) -> Upload | None:
    return session.scalar(
        select(Upload).where(
            Upload.merchant_id == merchant_id, Upload.sha256 == sha256, Upload.duplicate_of.is_(None)
        )
    )


def get_upload(session: Session, upload_id: str) -> Upload:
    upload = session.scalar(select(Upload).where(Upload.id == upload_id))
    if upload is None:
        raise PoflowError("unknown_upload", f"no upload with id {upload_id!r}")
    return upload


def claim_uploads_for_runs(db: Database, limit: int) -> list[str]:
    """Uploads nobody has requested a PO run for yet, oldest first, at most ``limit``: each is marked
    requested now (``run_requested_at``) and gets its workflow row (``pending``). Returns their ids.

    The caller must then request the runs (run key = upload id, so asking twice is harmless). Selection is
    by state, not by a ``seq`` cursor: an upload whose transaction commits late, with a lower ``seq`` than
    one already seen, is still picked up. On PostgreSQL, concurrent callers skip each other's rows.
    """
    for attempt in range(3):
        try:
            with db.session() as session:
                query = (
                    select(Upload)
                    .where(Upload.status == UploadStatus.RECEIVED, Upload.run_requested_at.is_(None))
                    .order_by(Upload.seq)
                    .limit(limit)
                )
                if session.get_bind().dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                uploads = list(session.scalars(query))
                now = utcnow()
                for upload in uploads:
                    upload.run_requested_at = now
                    _ensure_workflow(session, upload.id)
                return [upload.id for upload in uploads]
        except IntegrityError:  # a workflow row was created concurrently (direct submit): select again
            if attempt == 2:
                raise
    return []


def mark_run_requested(db: Database, upload_id: str) -> bool:
    """Record that a PO run was requested for ``upload_id`` by a direct submit (``poflow run``, API).

    Returns False if someone had already requested one (then the caller need not submit again). The
    workflow row exists afterwards (``pending`` unless a run already moved it on).
    """
    for attempt in range(3):
        try:
            with db.session() as session:
                get_upload(session, upload_id)
                # Compare-and-set, not read-then-write: a concurrent claim (upload_sensor's FOR UPDATE) that
                # commits first makes this update match no row, so only one of them requests the run.
                first = session.execute(
                    update(Upload)
                    .where(Upload.id == upload_id, Upload.run_requested_at.is_(None))
                    .values(run_requested_at=utcnow())
                    .execution_options(synchronize_session=False)
                ).rowcount == 1
                _ensure_workflow(session, upload_id)
            if first:  # the ``queued`` progress event (best effort), once the request is committed
                from poflow_dagster.store.progress_bus import publish_upload_event

                publish_upload_event(db, upload_id, "queued", percent=0, message="Waiting for a run to start")
            return first
        except IntegrityError:
            if attempt == 2:
                raise
    return False


def clear_run_request(db: Database, upload_id: str) -> bool:
    """Forget a run request that never became a run (the reconciler's repair): ``upload_sensor`` asks again.

    Only an upload still ``received`` is reset; returns whether it was.
    """
    with db.session() as session:
        upload = get_upload(session, upload_id)
        if upload.status != UploadStatus.RECEIVED or upload.run_requested_at is None:
            return False
        upload.run_requested_at = None
        return True


def _ensure_workflow(session: Session, upload_id: str) -> None:
    exists = session.scalar(select(WorkflowExecution.id).where(WorkflowExecution.upload_id == upload_id))
    if exists is None:
        session.add(WorkflowExecution(upload_id=upload_id, status=WorkflowStatus.PENDING, progress_percent=0))
        session.flush()


def set_upload_status(
    session: Session, upload_id: str, status: str, *, error_code: str | None = None, error_message: str | None = None
) -> None:
    upload = get_upload(session, upload_id)
    upload.status = status
    upload.error_code = error_code
    upload.error_message = error_message


@dataclass(frozen=True)
class UploadInfo:
    """What a stage needs to know about an upload (detached from any session)."""

    id: str
    merchant_id: str
    original_filename: str
    stored_path: str
    size_bytes: int
    sha256: str
    status: str
    duplicate_of: str | None


def upload_info(db: Database, upload_id: str) -> UploadInfo:
    with db.session() as session:
        upload = get_upload(session, upload_id)
        return UploadInfo(
            id=upload.id,
            merchant_id=upload.merchant_id,
            original_filename=upload.original_filename,
            stored_path=upload.stored_path,
            size_bytes=upload.size_bytes,
            sha256=upload.sha256,
            status=upload.status,
            duplicate_of=upload.duplicate_of,
        )


def merchant_for_upload(db: Database, upload_id: str):
    """The upload's merchant settings (a detached ``Merchant``)."""
    from poflow_dagster.store.schema import Merchant

    with db.session() as session:
        upload = get_upload(session, upload_id)
        merchant = session.get(Merchant, upload.merchant_id)
        assert merchant is not None  # FK guarantees it
        return merchant
