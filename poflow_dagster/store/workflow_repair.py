"""The reconciler's core: workflows left ``pending``/``processing`` whose Dagster run ended or vanished.

No Dagster here: the caller (``pipeline/reconciler.py``) says what Dagster knows about each upload's
runs (``RunState``); ``plan_repair`` decides, ``apply_repair`` writes. Every workflow gets the outcome
its latest run really had:

- latest run SUCCESS → the state its ops leave (``completed``, ``needs_review``, duplicate);
- latest run FAILURE / CANCELED → ``failed`` with the run's reason (only if it is still the latest);
- no run at all, ``RUN_REQUEST_GRACE`` after it was requested → that request (compared by its time, so a
  newer request made meanwhile stands) is forgotten, so ``upload_sensor`` asks again (run key = upload id: the
  daemon skips the request if a run with that key exists by then);
- a run the workflow names but Dagster does not know, unchanged for ``LOST_AFTER`` → ``failed``
  (``run_lost``).
- any run still queued or in progress → nothing (Dagster ends it; run monitoring / the code server
  fail runs whose worker died).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Literal

from sqlalchemy import select, update

from poflow_dagster.domain.stages import UploadStatus, WorkflowStatus
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import PurchaseOrder, StageMetric, Upload, WorkflowExecution
from poflow_dagster.store.workflow import (
    mark_completed,
    mark_duplicate_po,
    mark_failed,
    mark_needs_review,
    record_run_failure,
)

#: A requested run that Dagster still does not know after this long was never created.
RUN_REQUEST_GRACE = dt.timedelta(seconds=60)
#: A workflow naming a run this Dagster instance does not know (deleted, or run on another instance)
#: is declared lost only after it has not changed for this long.
LOST_AFTER = dt.timedelta(minutes=30)

OPEN_STATUSES = (WorkflowStatus.PENDING, WorkflowStatus.PROCESSING)
ENDED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


@dataclass(frozen=True)
class OpenWorkflow:
    """A workflow that is not finished, with what the reconciler needs of its upload."""

    id: int
    upload_id: str
    run_id: str | None
    status: str
    upload_status: str
    run_requested_at: dt.datetime | None
    approved_at: dt.datetime | None
    started_at: dt.datetime | None
    updated_at: dt.datetime


@dataclass(frozen=True)
class RunState:
    """What Dagster knows about one PO run (status is the ``DagsterRunStatus`` name)."""

    run_id: str
    status: str
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None


@dataclass(frozen=True)
class Repair:
    upload_id: str
    action: Literal["succeeded", "failed", "canceled", "rerequest", "lost"]
    run: RunState | None = None
    note: str = ""
    #: The workflow's ``updated_at`` when the repair was planned: the repair is written only if the workflow
    #: has not changed since (a new run may have entered a stage meanwhile; then that run decides).
    seen_updated_at: dt.datetime | None = None
    #: The upload's ``run_requested_at`` when the repair was planned: a ``rerequest`` withdraws only that request.
    seen_requested_at: dt.datetime | None = None


def open_workflows(db: Database, *, after_id: int = 0, limit: int = 100) -> list[OpenWorkflow]:
    """Unfinished workflows with ``id > after_id``, in id order, at most ``limit`` (a cheap indexed scan)."""
    with db.session() as session:
        rows = session.execute(
            select(WorkflowExecution, Upload.status, Upload.run_requested_at, Upload.approved_at)
            .join(Upload, Upload.id == WorkflowExecution.upload_id)
            .where(WorkflowExecution.status.in_(OPEN_STATUSES), WorkflowExecution.id > after_id)
            .order_by(WorkflowExecution.id)
            .limit(limit)
        ).all()
        return [
            OpenWorkflow(
                id=w.id, upload_id=w.upload_id, run_id=w.run_id, status=w.status, upload_status=upload_status,
                run_requested_at=requested, approved_at=approved, started_at=w.started_at, updated_at=w.updated_at,
            )
            for w, upload_status, requested, approved in rows
        ]


def plan_repair(workflow: OpenWorkflow, runs: list[RunState], now: dt.datetime) -> Repair | None:
    """What to do with ``workflow`` given all PO runs Dagster has for its partition (None: leave it)."""
    repair = _plan(workflow, runs, now)
    if repair is None:
        return None
    return replace(repair, seen_updated_at=workflow.updated_at, seen_requested_at=workflow.run_requested_at)


def _plan(workflow: OpenWorkflow, runs: list[RunState], now: dt.datetime) -> Repair | None:
    if workflow.approved_at is not None and workflow.upload_status == UploadStatus.APPROVED:
        # Approved after review: only the continuation run counts, and until it exists upload_sensor
        # requests it on every tick (run key per approval) — nothing to repair.
        runs = [run for run in runs if run.created_at >= workflow.approved_at]
        if not runs:
            return None
    if any(run.status not in ENDED for run in runs):
        return None  # queued or in progress: Dagster will end it
    if runs:
        latest = max(runs, key=lambda run: run.created_at)
        if workflow.run_id is not None and workflow.run_id not in {run.run_id for run in runs}:
            if _started_before(latest, workflow):  # the workflow's own run is unknown to this instance
                return _lost(workflow, now)
        if latest.status == "SUCCESS":
            return Repair(workflow.upload_id, "succeeded", latest)
        return Repair(workflow.upload_id, "canceled" if latest.status == "CANCELED" else "failed", latest)
    if workflow.run_id is not None:
        return _lost(workflow, now)
    if workflow.upload_status == UploadStatus.RECEIVED and workflow.run_requested_at is not None:
        if now - workflow.run_requested_at >= RUN_REQUEST_GRACE:
            return Repair(workflow.upload_id, "rerequest", note="no Dagster run was created for the request")
    return None


def _started_before(run: RunState, workflow: OpenWorkflow) -> bool:
    started = run.started_at or run.created_at
    return workflow.started_at is None or started <= workflow.started_at


def _lost(workflow: OpenWorkflow, now: dt.datetime) -> Repair | None:
    if now - workflow.updated_at < LOST_AFTER:
        return None
    return Repair(workflow.upload_id, "lost", note=f"Dagster has no record of run {workflow.run_id}")


def apply_repair(
    db: Database, repair: Repair, *, step_key: str | None = None, error_text: str | None = None
) -> bool:
    """Write the repair. For failed runs, ``step_key``/``error_text`` are the run's first step failure
    (or, without one, Dagster's run-level message). Returns whether anything changed."""
    run = repair.run
    if repair.action == "rerequest":
        return _withdraw_request(db, repair.upload_id, repair.seen_requested_at)
    if repair.seen_updated_at is not None and not _unchanged_since(db, repair.upload_id, repair.seen_updated_at):
        return False
    if repair.action == "lost":
        mark_failed(db, repair.upload_id, run_id=None, stage=None, code="run_lost",
                    message=f"{repair.note}; re-run the partition to process it again")
        return True
    assert run is not None
    if repair.action in ("failed", "canceled"):
        if step_key is None:
            error_text = _with_stage(db, repair.upload_id, run.run_id, error_text)
        return record_run_failure(
            db, repair.upload_id, run.run_id, step_key, error_text,
            run_started_at=run.started_at or run.created_at, canceled=repair.action == "canceled",
        )
    return _repair_succeeded(db, repair.upload_id, run.run_id)


def _withdraw_request(db: Database, upload_id: str, seen: dt.datetime | None) -> bool:
    """Forget the run request made at ``seen`` (compare-and-set): a request made since — a direct submit or a
    sensor claim after an earlier withdrawal, whose run may be on its way — is left standing."""
    if seen is None:
        return False
    with db.session() as session:
        result = session.execute(
            update(Upload)
            .where(Upload.id == upload_id, Upload.status == UploadStatus.RECEIVED, Upload.run_requested_at == seen)
            .values(run_requested_at=None)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1


def _unchanged_since(db: Database, upload_id: str, seen: dt.datetime) -> bool:
    """The workflow is still open and nobody wrote to it since the repair was planned."""
    with db.session() as session:
        row = session.execute(
            select(WorkflowExecution.status, WorkflowExecution.updated_at).where(WorkflowExecution.upload_id == upload_id)
        ).first()
    return row is not None and row.status in OPEN_STATUSES and row.updated_at == seen


def _with_stage(db: Database, upload_id: str, run_id: str, error_text: str | None) -> str:
    """A run that died outside any step failure: say which stage it was in (the one left running)."""
    with db.session() as session:
        running = session.scalar(
            select(StageMetric.stage)
            .where(StageMetric.run_id == run_id, StageMetric.outcome == "running")
            .order_by(StageMetric.started_at.desc())
            .limit(1)
        )
    text = " ".join((error_text or "the run failed").split())
    return f"{text} (during {running})" if running else text


def _repair_succeeded(db: Database, upload_id: str, run_id: str) -> bool:
    """A successful run whose ops' final write is missing: the state they leave, derived from the database
    (its duplicate record, or its saved PO: ``needs_review`` while error issues wait for approval)."""
    with db.session() as session:
        upload = session.scalar(select(Upload).where(Upload.id == upload_id))
        po = session.scalar(select(PurchaseOrder).where(PurchaseOrder.upload_id == upload_id))
        duplicate_of = upload.duplicate_of if upload is not None else None
        approved = upload is not None and upload.approved_at is not None
        errors = [
            f"{issue.get('code')}: {issue.get('message')}"
            for issue in (po.issues if po is not None else [])
            if issue.get("severity") == "error"
        ]
    if duplicate_of:
        mark_duplicate_po(db, upload_id, run_id, duplicate_of)
    elif po is None:
        mark_failed(db, upload_id, run_id=run_id, stage=None, code="run_incomplete",
                    message=f"run {run_id} succeeded without saving the PO; re-run the partition")
    elif errors and not approved:
        mark_needs_review(db, upload_id, run_id, errors)
    else:
        mark_completed(db, upload_id, run_id)
    return True
