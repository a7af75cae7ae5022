"""Run history into the ``stage_runs`` fact table (core: plain inputs, no Dagster).

``pipeline/run_history.py`` reads Dagster's run-status events and run records by cursor and hands them here as
plain values: launch events (:func:`record_launch_events`, kept in ``run_launches`` for
:data:`LAUNCH_RETENTION` so a run ingested again still has its queue and launch waits; :func:`prune_launches`
drops older ones) and finished runs (:func:`ingest_finished_runs`). A finished run becomes its timeline rows
(``analytics.timeline.build_timeline``) joined with the upload's merchant and the PO's shape.

Built for thousands of runs a page: a fixed number of queries per call (never one per run) and bulk inserts.
A run seen again replaces its rows, so nothing is counted twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from poflow_dagster.analytics.timeline import build_timeline
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import LineItem, PurchaseOrder, RunLaunch, StageMetric, StageRun, Upload
from poflow_dagster.store.types import utcnow

__all__ = [
    "LaunchEvent",
    "RunFact",
    "TRACKED_JOBS",
    "count_stage_runs",
    "ingest_finished_runs",
    "known_runs",
    "prune_launches",
    "record_launch_events",
]

#: The jobs whose runs are history (the analytics job's own runs are not). Images are a step of ``po_job``.
TRACKED_JOBS: frozenset[str] = frozenset(("po_job",))
#: Launch event kinds and the ``run_launches`` column each fills.
LAUNCH_COLUMNS = {"enqueued": "enqueued_at", "starting": "starting_at", "started": "started_at"}
#: How long a run's launch events are kept after it was launched (a run ingested again within it keeps its waits).
LAUNCH_RETENTION = dt.timedelta(days=7)
#: Keeps each IN (...) list well below SQLite's bound-parameter limit.
_CHUNK = 900


@dataclass(frozen=True)
class LaunchEvent:
    """``RUN_ENQUEUED`` (``enqueued``), ``RUN_STARTING`` (``starting``) or ``RUN_START`` (``started``) of a run."""

    run_id: str
    kind: str
    at: dt.datetime


@dataclass(frozen=True)
class RunFact:
    """A finished run, as Dagster recorded it (its run record).

    The queue and launch times come from ``run_launches`` (recorded earlier from the events); ``started_at``
    (the record's start time) stands in for a missing ``RUN_START`` event. ``first_run`` follows
    ``pipeline.run_history.is_first_run``: the upload's earliest ``po_job`` run without a parent.
    """

    run_id: str
    job_name: str
    upload_id: str | None
    status: str  # success | failure | canceled
    created_at: dt.datetime
    ended_at: dt.datetime
    first_run: bool
    started_at: dt.datetime | None = None
    parent_run_id: str | None = None


def record_launch_events(db: Database, events: Iterable[LaunchEvent]) -> int:
    """Upsert launch events into ``run_launches`` (one row per run; the earliest time of each kind wins)."""
    by_run: dict[str, dict[str, dt.datetime]] = {}
    for event in events:
        column = LAUNCH_COLUMNS[event.kind]
        times = by_run.setdefault(event.run_id, {})
        times[column] = min(times.get(column, event.at), event.at)
    if not by_run:
        return 0
    return db.retry_on_conflict(lambda session: _record_launch_events(session, by_run))


def _record_launch_events(session: Session, by_run: dict[str, dict[str, dt.datetime]]) -> int:
    existing = {
        row.run_id: row
        for chunk in _chunks(list(by_run))
        for row in session.scalars(select(RunLaunch).where(RunLaunch.run_id.in_(chunk)))
    }
    fresh = []
    for run_id, times in by_run.items():
        row = existing.get(run_id)
        if row is None:
            fresh.append({"run_id": run_id, **{c: times.get(c) for c in LAUNCH_COLUMNS.values()}})
            continue
        for column, at in times.items():
            known = getattr(row, column)
            setattr(row, column, at if known is None else min(known, at))
    if fresh:
        session.execute(insert(RunLaunch.__table__), fresh)  # Core: one executemany
    return len(by_run)


def ingest_finished_runs(db: Database, facts: Sequence[RunFact]) -> int:
    """Build and write the ``stage_runs`` rows of finished runs; returns the number of rows written.

    Rows of a run already in the table are replaced (no double counting); its ``run_launches`` row stays (a
    second ingest of the run, e.g. two refreshes racing, rebuilds the same waits). Runs of jobs other than
    :data:`TRACKED_JOBS` are ignored.
    """
    facts = list({fact.run_id: fact for fact in facts if fact.job_name in TRACKED_JOBS}.values())
    if not facts:
        return 0
    # Two refreshes at once (the stage_runs asset and the CLI) may race on the same runs: the loser tries again.
    return db.retry_on_conflict(lambda session: _ingest(session, facts))


def _ingest(session: Session, facts: list[RunFact]) -> int:
    run_ids = [fact.run_id for fact in facts]
    launches = _launches(session, run_ids)
    metrics = _stage_metrics(session, run_ids)
    uploads = _uploads(session, {fact.upload_id for fact in facts if fact.upload_id})
    rows: list[dict[str, Any]] = []
    recorded_at = utcnow()
    for fact in facts:
        rows += _rows_for(fact, launches.get(fact.run_id), metrics.get(fact.run_id, []),
                          uploads.get(fact.upload_id or ""), recorded_at)
    for chunk in _chunks(run_ids):
        session.execute(delete(StageRun).where(StageRun.run_id.in_(chunk)))
    if rows:
        session.execute(insert(StageRun.__table__), rows)  # Core: one executemany
    return len(rows)


def prune_launches(db: Database, *, now: dt.datetime | None = None, keep: dt.timedelta = LAUNCH_RETENTION) -> int:
    """Drop the ``run_launches`` rows of runs launched more than ``keep`` ago (one DELETE); returns how many."""
    cutoff = (now or utcnow()) - keep
    launched = func.coalesce(RunLaunch.enqueued_at, RunLaunch.starting_at, RunLaunch.started_at)
    with db.session() as session:
        return session.execute(delete(RunLaunch).where(launched < cutoff)).rowcount or 0


def known_runs(db: Database, run_ids: Iterable[str]) -> set[str]:
    """Which of ``run_ids`` already have rows in ``stage_runs``."""
    ids = list(dict.fromkeys(run_ids))
    with db.session() as session:
        return {
            run_id
            for chunk in _chunks(ids)
            for run_id in session.scalars(select(StageRun.run_id).where(StageRun.run_id.in_(chunk)).distinct())
        }


def count_stage_runs(db: Database) -> int:
    """Rows in ``stage_runs``."""
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(StageRun)) or 0


@dataclass(frozen=True)
class _UploadShape:
    created_at: dt.datetime
    merchant_id: str
    file_bytes: int
    source_format: str | None
    lines: int | None


def _rows_for(
    fact: RunFact,
    launch: RunLaunch | None,
    metrics: list[Any],
    upload: _UploadShape | None,
    recorded_at: dt.datetime,
) -> list[dict[str, Any]]:
    timeline = build_timeline(
        upload_created_at=upload.created_at if upload else None,
        run_created_at=fact.created_at,
        enqueued_at=launch.enqueued_at if launch else None,
        starting_at=launch.starting_at if launch else None,
        started_at=fact.started_at or (launch.started_at if launch else None),
        ended_at=fact.ended_at,
        stage_metrics=metrics,
        first_run=fact.first_run,
    )
    items = {row.stage: row.items for row in timeline if row.kind == "stage"}
    signals = {m.stage: (m.signals or {}) for m in metrics}
    lines = items.get("ai_parsing") if items.get("ai_parsing") is not None else items.get("database_save")
    skus = signals.get("product_draft_creation", {}).get("skus", items.get("product_draft_creation"))
    shared = {
        "run_id": fact.run_id,
        "upload_id": fact.upload_id,
        "merchant_id": upload.merchant_id if upload else None,
        "job": fact.job_name,
        "run_status": fact.status,
        "source_format": upload.source_format if upload else None,
        "file_bytes": upload.file_bytes if upload else None,
        "lines": lines if lines is not None else (upload.lines if upload else None),
        "skus": skus,
        "first_run": fact.first_run,
        "run_created_at": fact.created_at,
        "recorded_at": recorded_at,
    }
    return [{**shared, **row.as_dict()} for row in timeline]


def _launches(session: Session, run_ids: list[str]) -> dict[str, RunLaunch]:
    return {
        row.run_id: row
        for chunk in _chunks(run_ids)
        for row in session.scalars(select(RunLaunch).where(RunLaunch.run_id.in_(chunk)))
    }


def _stage_metrics(session: Session, run_ids: list[str]) -> dict[str, list[Any]]:
    """The ``stage_metrics`` rows of these runs, by run (one query per chunk of runs)."""
    by_run: dict[str, list[Any]] = {}
    columns = (
        StageMetric.run_id, StageMetric.stage, StageMetric.started_at, StageMetric.ended_at, StageMetric.duration_ms,
        StageMetric.attempts, StageMetric.outcome, StageMetric.error_code, StageMetric.items, StageMetric.bytes,
        StageMetric.signals,
    )
    for chunk in _chunks(run_ids):
        for row in session.execute(select(*columns).where(StageMetric.run_id.in_(chunk))):
            by_run.setdefault(row.run_id, []).append(row)
    return by_run


def _uploads(session: Session, upload_ids: set[str]) -> dict[str, _UploadShape]:
    """Merchant, received time and the PO's shape of these uploads (one query per chunk)."""
    lines = (
        select(func.count(LineItem.id)).where(LineItem.po_id == PurchaseOrder.id).correlate(PurchaseOrder)
        .scalar_subquery().label("lines")
    )
    shapes: dict[str, _UploadShape] = {}
    for chunk in _chunks(sorted(upload_ids)):
        query = (
            select(Upload.id, Upload.created_at, Upload.merchant_id, Upload.size_bytes, PurchaseOrder.source_format,
                   lines)
            .outerjoin(PurchaseOrder, PurchaseOrder.upload_id == Upload.id)
            .where(Upload.id.in_(chunk))
        )
        for row in session.execute(query):
            shapes[row.id] = _UploadShape(row.created_at, row.merchant_id, row.size_bytes, row.source_format,
                                          row.lines)
    return shapes


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
