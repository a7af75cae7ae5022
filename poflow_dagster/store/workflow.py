"""Workflow status (one row per upload) and per-stage metrics (one row per run and stage)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from poflow_dagster.domain.stages import STAGE_PROGRESS, Stage, UploadStatus, WorkflowStatus
from poflow_dagster.store.db import Database
from poflow_dagster.store.eta import clear_eta
from poflow_dagster.store.schema import StageMetric, Upload, WorkflowExecution
from poflow_dagster.store.types import utcnow
from poflow_dagster.store.uploads import get_upload, set_upload_status


def _workflow(session: Session, upload_id: str) -> WorkflowExecution:
    workflow = session.scalar(select(WorkflowExecution).where(WorkflowExecution.upload_id == upload_id))
    if workflow is None:
        get_upload(session, upload_id)  # unknown upload -> clear error
        workflow = WorkflowExecution(upload_id=upload_id, status=WorkflowStatus.PENDING, progress_percent=0)
        session.add(workflow)
        session.flush()
    return workflow


def stage_started(db: Database, upload_id: str, run_id: str, stage: Stage, attempt: int) -> bool:
    """A stage (op) began: the workflow shows it; its metrics row counts the attempt. Returns whether it is the
    first stage of a new run of the PO (its ``started`` progress event)."""

    def work(session: Session) -> bool:
        now = utcnow()
        new_run = False
        if stage in STAGE_PROGRESS:  # side stages (images) run after completion and leave the workflow alone
            new_run = _enter_stage(session, upload_id, run_id, stage, now)
        metric = _metric(session, run_id, stage)
        if metric is None:
            session.add(
                StageMetric(
                    upload_id=upload_id, run_id=run_id, stage=stage.value, started_at=now,
                    attempts=attempt, outcome="running",
                )
            )
        else:
            metric.started_at = now
            metric.attempts = attempt
            metric.outcome = "running"
            metric.ended_at = None
            metric.error_code = None
        return new_run

    return bool(db.retry_on_conflict(work))


def _enter_stage(session: Session, upload_id: str, run_id: str, stage: Stage, now: dt.datetime) -> bool:
    workflow = _workflow(session, upload_id)
    new_run = workflow.run_id != run_id
    if new_run:  # a new run (first run, re-run, re-execution from failure)
        workflow.run_id = run_id
        workflow.started_at = now
        workflow.progress_percent = 0
    if workflow.status != WorkflowStatus.PROCESSING:
        workflow.status = WorkflowStatus.PROCESSING
        workflow.error_code = None
        workflow.error_message = None
        workflow.completed_at = None
        set_upload_status(session, upload_id, UploadStatus.PROCESSING)
    workflow.current_stage = stage.value
    return new_run


def stage_finished(
    db: Database,
    upload_id: str,
    run_id: str,
    stage: Stage,
    *,
    outcome: str,
    items: int | None = None,
    bytes_: int | None = None,
    error_code: str | None = None,
    signals: dict[str, int | float] | None = None,
) -> int:
    """Close the stage's metrics row (with what the stage measured, ``signals``); on success advance the
    workflow's progress. Returns duration in ms."""
    with db.session() as session:
        now = utcnow()
        metric = _metric(session, run_id, stage)
        if metric is None:  # finished without a recorded start (should not happen): record a zero-length stage
            metric = StageMetric(upload_id=upload_id, run_id=run_id, stage=stage.value, started_at=now, attempts=1)
            session.add(metric)
        metric.ended_at = now
        metric.duration_ms = max(0, int((now - metric.started_at).total_seconds() * 1000))
        metric.outcome = outcome
        metric.items = items
        metric.bytes = bytes_
        metric.error_code = error_code
        metric.signals = dict(signals) if signals else None
        if outcome in ("success", "skipped", "reused") and stage in STAGE_PROGRESS:
            workflow = _workflow(session, upload_id)
            workflow.progress_percent = max(workflow.progress_percent, STAGE_PROGRESS[stage])
        return metric.duration_ms


def mark_completed(db: Database, upload_id: str, run_id: str) -> None:
    with db.session() as session:
        workflow = _workflow(session, upload_id)
        workflow.run_id = run_id
        workflow.status = WorkflowStatus.COMPLETED
        workflow.current_stage = Stage.STATUS_UPDATE.value
        workflow.progress_percent = 100
        workflow.completed_at = utcnow()
        workflow.error_code = None
        workflow.error_message = None
        clear_eta(workflow)
        set_upload_status(session, upload_id, UploadStatus.COMPLETED)


def mark_failed(
    db: Database, upload_id: str, *, run_id: str | None, stage: str | None, code: str, message: str
) -> None:
    """The upload and its workflow failed at ``stage`` for a one-line reason. Idempotent."""
    with db.session() as session:
        _fail(session, _workflow(session, upload_id), run_id=run_id, stage=stage, code=code, message=message)


def _fail(
    session: Session, workflow: WorkflowExecution, *, run_id: str | None, stage: str | None, code: str, message: str
) -> None:
    message = " ".join(message.split())[:2000]
    workflow.run_id = run_id or workflow.run_id
    workflow.status = WorkflowStatus.FAILED
    workflow.current_stage = stage or workflow.current_stage
    workflow.error_code = code
    workflow.error_message = message
    workflow.completed_at = utcnow()
    clear_eta(workflow)
    set_upload_status(
        session, workflow.upload_id, UploadStatus.FAILED, error_code=code,
        error_message=f"{stage or workflow.current_stage or 'run'}: {message}",
    )


@dataclass(frozen=True)
class StageRow:
    stage: str
    run_id: str
    outcome: str
    attempts: int
    duration_ms: int | None
    items: int | None
    error_code: str | None
    started_at: dt.datetime


@dataclass(frozen=True)
class StatusReport:
    upload: Upload
    workflow: WorkflowExecution | None
    stages: list[StageRow]


def status_report(db: Database, upload_id: str) -> StatusReport:
    """Everything ``poflow status`` shows: the upload, its workflow row and the latest run's stages."""
    with db.session() as session:
        upload = get_upload(session, upload_id)
        workflow = session.scalar(select(WorkflowExecution).where(WorkflowExecution.upload_id == upload_id))
        metrics = list(
            session.scalars(
                select(StageMetric).where(StageMetric.upload_id == upload_id).order_by(StageMetric.started_at, StageMetric.id)
            )
        )
        latest_run = workflow.run_id if workflow is not None else None
        latest_side = {m.stage: m for m in metrics if m.stage not in _PO_STAGES}  # last image run etc.
        shown = [m for m in metrics if m.stage in _PO_STAGES and m.run_id == latest_run] + list(latest_side.values())
        stages = [
            StageRow(m.stage, m.run_id, m.outcome, m.attempts, m.duration_ms, m.items, m.error_code, m.started_at)
            for m in shown
        ]
        return StatusReport(upload=upload, workflow=workflow, stages=stages)


_PO_STAGES = frozenset(stage.value for stage in STAGE_PROGRESS)


def _metric(session: Session, run_id: str, stage: Stage) -> StageMetric | None:
    return session.scalar(select(StageMetric).where(StageMetric.run_id == run_id, StageMetric.stage == stage.value))


def record_run_failure(
    db: Database,
    upload_id: str,
    run_id: str,
    step_key: str | None,
    error_text: str | None,
    *,
    run_started_at: dt.datetime | None = None,
    canceled: bool = False,
) -> bool:
    """What ``po_failure_sensor``, the reconciler and local runs do with a failed PO run: mark the workflow
    failed, with stage and reason — but only if that run is still the upload's latest.

    The latest run is the one the workflow row names (``run_id``). A failure of another run counts only if
    that run started after the recorded run entered its first stage (``run_started_at``, when known);
    a newer successful run is never flipped back. A failing check step never fails a PO its own run
    already completed. Returns whether the workflow changed.
    """
    from poflow_dagster.domain.failures import failure_reason, run_failure_reason

    if step_key:
        reason = failure_reason(step_key, error_text)
    else:
        reason = run_failure_reason(error_text, canceled=canceled)
    with db.session() as session:
        workflow = _workflow(session, upload_id)
        if not _is_latest(workflow, run_id, run_started_at):
            return False
        if (
            workflow.run_id == run_id
            and workflow.status in _FINISHED_OK
            and (reason.stage or "") not in _PO_STAGES
        ):
            return False  # e.g. a check after status_update: the PO itself completed
        if workflow.status == WorkflowStatus.FAILED and workflow.run_id == run_id:
            return False  # recorded already (the stage itself, the sensor, or the reconciler)
        stage = reason.stage if reason.stage in _PO_STAGES else None
        _fail(session, workflow, run_id=run_id, stage=stage, code=reason.code, message=reason.message)
    # The ``failed`` progress event (best effort), after the commit: frontends may read the status at once.
    from poflow_dagster.store.progress_bus import publish_upload_event

    publish_upload_event(db, upload_id, "failed", run_id=run_id, stage=stage, message=reason.message[:500])
    return True


_FINISHED_OK = frozenset({WorkflowStatus.COMPLETED, WorkflowStatus.NEEDS_REVIEW})


def _is_latest(workflow: WorkflowExecution, run_id: str, run_started_at: dt.datetime | None) -> bool:
    if workflow.run_id is None or workflow.run_id == run_id:
        return True
    if run_started_at is None or workflow.started_at is None:
        return False
    return run_started_at > workflow.started_at


def mark_needs_review(db: Database, upload_id: str, run_id: str, reasons: list[str]) -> None:
    """The PO stopped before Shopify sync: a person must look at ``reasons`` and approve it."""
    message = "; ".join(reasons)[:2000]
    with db.session() as session:
        workflow = _workflow(session, upload_id)
        workflow.run_id = run_id
        workflow.status = WorkflowStatus.NEEDS_REVIEW
        workflow.current_stage = Stage.STATUS_UPDATE.value
        workflow.error_code = "needs_review"
        workflow.error_message = message
        workflow.completed_at = utcnow()
        clear_eta(workflow)
        set_upload_status(session, upload_id, UploadStatus.NEEDS_REVIEW, error_code="needs_review", error_message=message)


def mark_duplicate_po(
    db: Database, upload_id: str, run_id: str, original_upload_id: str, *, stage: Stage = Stage.AI_PARSING
) -> None:
    """Same supplier and PO number as an earlier upload: recorded as its duplicate, no second PO.

    ``stage`` is where it was noticed: ``ai_parsing`` (the PO was already saved) or ``database_save``
    (both were saved at once and the database's unique constraint chose the other one).
    """
    message = f"same supplier and PO number as upload {original_upload_id}; no second PO was created"
    with db.session() as session:
        upload = get_upload(session, upload_id)
        upload.status = UploadStatus.DUPLICATE
        upload.duplicate_of = original_upload_id
        upload.error_code = "duplicate_po"
        upload.error_message = message
        workflow = _workflow(session, upload_id)
        workflow.run_id = run_id
        workflow.status = WorkflowStatus.COMPLETED
        workflow.current_stage = stage.value
        workflow.progress_percent = 100
        workflow.error_code = "duplicate_po"
        workflow.error_message = message
        workflow.completed_at = utcnow()
        clear_eta(workflow)


def set_progress(db: Database, upload_id: str, percent: int) -> None:
    """Progress inside a stage (e.g. LLM windows done); never goes backwards within a run."""
    with db.session() as session:
        workflow = _workflow(session, upload_id)
        workflow.progress_percent = max(workflow.progress_percent, min(percent, 100))
