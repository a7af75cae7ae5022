"""Sensors: uploads start PO runs; finished runs start image runs; failed runs mark the upload failed."""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import dagster as dg

from poflow_dagster.domain.stages import UploadStatus
from poflow_dagster.intake import ingest_inbox
from poflow_dagster.pipeline.jobs import image_job, po_job
from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.resources import DatabaseResource, StorageResource
from poflow_dagster.store.review import pending_approvals
from poflow_dagster.store.uploads import uploads_after
from poflow_dagster.store.workflow import mark_pending, record_run_failure

#: Uploads handled per tick; the cursor carries the rest to the next tick.
UPLOAD_BATCH = 50
PARTITION_TAG = "dagster/partition"


def upload_requests(db, after_seq: int, limit: int = UPLOAD_BATCH) -> tuple[list[str], int]:
    """Upload ids that need a PO run (duplicates need none) and the new cursor."""
    uploads = uploads_after(db, after_seq, limit)
    ids = [u.id for u in uploads if u.status == UploadStatus.RECEIVED]
    return ids, max((u.seq for u in uploads), default=after_seq)


@dg.sensor(job=po_job, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=1)
def upload_sensor(context: dg.SensorEvaluationContext, db: DatabaseResource, storage: StorageResource):
    """Turns inbox files into uploads, then adds one ``po_uploads`` partition and requests one run
    (run key = upload id) per new upload. Duplicates of earlier uploads get no run. Approved POs
    (``poflow approve``) get one continuation run each."""
    database = db.database
    inbox = ingest_inbox(database, storage.root)
    for path, reason in inbox.rejected:
        context.log.warning(f"inbox file rejected ({reason}); moved to {path}")
    upload_ids, cursor = upload_requests(database, int(context.cursor or 0))
    for upload_id in upload_ids:
        mark_pending(database, upload_id)
    # Approved POs continue in a new run of their partition (run key per approval: requested once).
    approvals = pending_approvals(database, UPLOAD_BATCH)
    if not upload_ids and not approvals and str(cursor) == (context.cursor or "0"):
        return dg.SkipReason("no new uploads or approvals")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=uid, run_key=uid) for uid in upload_ids]
        + [dg.RunRequest(partition_key=a.upload_id, run_key=a.run_key) for a in approvals],
        dynamic_partitions_requests=[po_uploads.build_add_request(upload_ids)] if upload_ids else [],
        cursor=str(cursor),
    )


@dg.run_failure_sensor(monitored_jobs=[po_job], default_status=dg.DefaultSensorStatus.RUNNING)
def po_failure_sensor(context: dg.RunFailureSensorContext, db: DatabaseResource) -> None:
    """A failed PO run marks its upload and workflow failed, with the failing stage and the error."""
    upload_id = context.dagster_run.tags.get(PARTITION_TAG)
    if not upload_id:
        return
    step_failures = context.get_step_failure_events()
    if step_failures:
        event = step_failures[0]
        text = root_error_message(event.step_failure_data.error) or event.message
        record_run_failure(db.database, upload_id, context.dagster_run.run_id, event.step_key, text)
    else:
        record_run_failure(db.database, upload_id, context.dagster_run.run_id, None, context.failure_event.message)


def root_error_message(error) -> str | None:
    """The innermost error's message: Dagster wraps user errors in a 'while executing op' error."""
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message.strip() if error is not None else None


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[po_job],
    request_job=image_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def image_attachment_sensor(context: dg.RunStatusSensorContext):
    """When a PO run succeeds, start that partition's image run (images never hold the PO back)."""
    upload_id = context.dagster_run.tags.get(PARTITION_TAG)
    if upload_id:
        return dg.RunRequest(partition_key=upload_id, run_key=f"images:{context.dagster_run.run_id}")
    return None
