"""The latest Shopify read-back of an upload, kept beside (never instead of) its workflow status."""

from __future__ import annotations

from sqlalchemy import update

from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import WorkflowExecution
from poflow_dagster.store.types import utcnow

__all__ = ["VERIFICATION_STATUSES", "record_verification"]

#: passed: Shopify holds what the drafts say; failed: it does not (see the message); error: the read-back
#: itself could not finish (Shopify unreachable, throttled too long, bad settings); skipped: nothing to check.
VERIFICATION_STATUSES = frozenset({"passed", "failed", "error", "skipped"})

_MAX_MESSAGE = 2000


def record_verification(db: Database, upload_id: str, status: str, message: str | None) -> bool:
    """Record the read-back result on the upload's workflow row; ``False`` if the upload has no workflow yet.

    Only the ``verification_*`` columns change: the workflow status of a completed PO never depends on a
    check. ``message`` is kept to one line (and at most 2,000 characters).
    """
    if status not in VERIFICATION_STATUSES:
        raise ValueError(f"verification status must be one of {sorted(VERIFICATION_STATUSES)}, got {status!r}")
    text = " ".join(message.split())[:_MAX_MESSAGE] if message else None
    with db.session() as session:
        result = session.execute(
            update(WorkflowExecution)
            .where(WorkflowExecution.upload_id == upload_id)
            .values(verification_status=status, verification_message=text, verified_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)
