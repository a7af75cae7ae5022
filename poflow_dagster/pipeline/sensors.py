"""Sensors: uploads start PO runs; failed runs mark the upload failed (never because of its images).

The reconciler that repairs workflows whose run ended or vanished is in ``pipeline/reconciler.py``."""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import datetime as dt

import dagster as dg

from poflow_dagster.domain.failures import stage_of_step
from poflow_dagster.domain.stages import STAGE_PROGRESS, Stage
from poflow_dagster.intake import ingest_inbox
from poflow_dagster.pipeline.jobs import po_job
from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.pipeline.run_tags import upload_run_tags
from poflow_dagster.resources import DatabaseResource, StorageResource
from poflow_dagster.store.review import pending_approvals
from poflow_dagster.store.uploads import claim_uploads_for_runs
from poflow_dagster.store.workflow import record_run_failure

#: Uploads handled per tick; the rest wait for the next tick (oldest first).
UPLOAD_BATCH = 50
PARTITION_TAG = "dagster/partition"
#: Stages of the PO run outside its progress (images): they run after the PO is finished and never decide its
#: outcome (the stage runner leaves the workflow alone for them, too).
SIDE_STAGES = frozenset(stage.value for stage in Stage if stage not in STAGE_PROGRESS)
#: Dagster tags a failed run that its run-retry daemon will re-execute (an infrastructure failure).
WILL_RETRY_TAG = "dagster/will_retry"


@dg.sensor(job=po_job, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=1)
def upload_sensor(context: dg.SensorEvaluationContext, db: DatabaseResource, storage: StorageResource):
    """Turns inbox files into uploads, then adds one ``po_uploads`` partition and requests one run
    (run key = upload id) per upload that has no run requested yet — chosen by state, oldest first, so
    an upload committed late is never skipped. Duplicates of earlier uploads get no run. Approved POs
    (``poflow approve``) get one continuation run each."""
    database = db.database
    inbox = ingest_inbox(database, storage.root)
    for path, reason in inbox.rejected:
        context.log.warning(f"inbox file rejected ({reason}); moved to {path}")
    # Marked requested (and pending) before the requests are returned; if this tick dies in between,
    # workflow_reconciler forgets the request after a grace period and the next tick asks again.
    upload_ids = claim_uploads_for_runs(database, UPLOAD_BATCH)
    # Approved POs continue in a new run of their partition (run key per approval: requested once).
    approvals = pending_approvals(database, UPLOAD_BATCH)
    if not upload_ids and not approvals:
        return dg.SkipReason("no new uploads or approvals")
    publish_queued(database, upload_ids, [a.upload_id for a in approvals])
    tags = upload_run_tags(database, [*upload_ids, *(a.upload_id for a in approvals)])  # merchant and file
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=uid, run_key=uid, tags=tags.get(uid, {})) for uid in upload_ids]
        + [dg.RunRequest(partition_key=a.upload_id, run_key=a.run_key, tags=tags.get(a.upload_id, {}))
           for a in approvals],
        dynamic_partitions_requests=[po_uploads.build_add_request(upload_ids)] if upload_ids else [],
    )


def publish_queued(database, upload_ids: list[str], approved_ids: list[str]) -> None:
    """The ``queued`` progress event of each upload whose run is being requested (best effort: never fails the
    sensor)."""
    from poflow_dagster.store.progress_bus import publish_upload_event

    for upload_id in upload_ids:
        publish_upload_event(database, upload_id, "queued", percent=0, message="Waiting for a run to start")
    for upload_id in approved_ids:
        publish_upload_event(database, upload_id, "queued", message="Approved; waiting for its run")


@dg.run_failure_sensor(monitored_jobs=[po_job], default_status=dg.DefaultSensorStatus.RUNNING)
def po_failure_sensor(context: dg.RunFailureSensorContext, db: DatabaseResource) -> None:
    """A failed PO run marks its upload and workflow failed, with the failing stage and the error — unless
    Dagster will retry the run (then the retry decides), or the failing step is a side stage (images, which run
    after the PO is finished), and only if it is still the upload's latest run (a newer run's outcome is never
    overwritten). If this tick errors (e.g. the database is down),
    ``workflow_reconciler`` repairs the workflow later."""
    run = context.dagster_run
    upload_id = run.tags.get(PARTITION_TAG)
    if not upload_id:
        return
    if run.tags.get(WILL_RETRY_TAG) == "true":  # run retries start a new run: that run's outcome counts
        context.log.info(f"{upload_id}: run {run.run_id} failed and will be retried; the workflow waits for the retry")
        return
    latest = context.instance.get_run_records(
        dg.RunsFilter(job_name=run.job_name, tags={PARTITION_TAG: upload_id}), limit=1
    )
    if latest and latest[0].dagster_run.run_id != run.run_id:
        context.log.info(f"{upload_id}: run {run.run_id} failed, but a newer run exists; left to that run")
        return
    started = latest[0].start_time if latest else None
    started_at = dt.datetime.fromtimestamp(started, dt.UTC) if started else None
    step_key, text = run_failure_text(context.instance, run.run_id)  # the first step failure, else the run's reason
    if is_side_step(step_key):  # images never fail the PO (the op catches its own errors; this is the backstop)
        context.log.warning(f"{upload_id}: run {run.run_id} failed in {step_key}; the PO's workflow is left alone")
        return
    record_run_failure(db.database, upload_id, run.run_id, step_key, text or context.failure_event.message,
                       run_started_at=started_at)


def is_side_step(step_key: str | None) -> bool:
    """Whether ``step_key`` is a side stage of the PO run (``product_images.image_attachment``), whose failure
    must never mark the upload failed: the PO was completed (or held for review) before it ran."""
    return stage_of_step(step_key) in SIDE_STAGES


def run_failure_text(instance: dg.DagsterInstance, run_id: str) -> tuple[str | None, str | None]:
    """(step key, text) of the run's first step failure (innermost error); without one, ``(None, reason)``
    with Dagster's run-level reason — e.g. the code server's "Run execution process for … was terminated
    by signal 9 (SIGKILL)". A few small queries for one run (only runs being marked failed)."""
    wanted = {
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.RUN_CANCELED,
        dg.DagsterEventType.ENGINE_EVENT,
    }
    engine_reason = run_reason = None
    for record in instance.get_records_for_run(run_id, of_type=wanted, limit=500).records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        message = event.message or record.event_log_entry.user_message or ""
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            return event.step_key, root_error_message(event.step_failure_data.error) or message
        if event.event_type == dg.DagsterEventType.ENGINE_EVENT:
            if "Run execution process" in message or "Detected run worker status" in message:
                engine_reason = message.removeprefix("[DagsterApiServer] ")
        elif event.event_type in (dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED):
            run_reason = message
    if run_reason and _GENERIC_RUN_FAILURE not in run_reason:  # e.g. "Exceeded maximum runtime of 1800 seconds."
        return None, run_reason
    return None, engine_reason or run_reason


_GENERIC_RUN_FAILURE = "marked as failed from outside the execution context"


def root_error_message(error) -> str | None:
    """The innermost error's message: Dagster wraps user errors in a 'while executing op' error."""
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message.strip() if error is not None else None
