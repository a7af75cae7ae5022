"""Dagster's run history into ``stage_runs``, incrementally (the reader half of ``analytics/history.py``).

Reads the run-status event log by cursor, one cursor per event type (``cursor:<EVENT_TYPE>`` in
``analytics_state``), so nothing is read twice:

1. launch events ``RUN_ENQUEUED``, ``RUN_STARTING``, ``RUN_START`` → ``run_launches``;
2. terminal events ``RUN_SUCCESS``, ``RUN_FAILURE``, ``RUN_CANCELED`` up to the event-log position seen before
   step 1 (so every finished run's launch events are already recorded) → one ``get_run_records`` per page for
   create time, job, partition and parent, and one for the partitions' earlier PO runs → ``stage_runs``.

Only ``po_job`` runs count (images are a step of it); the analytics job's own runs are skipped. (SQLite event storage
ignores the filter's ``job_names``, so job names are filtered here.) No per-run query, ever.

Cursors belong to one Dagster instance (``cursor:<instance>:<EVENT_TYPE>``): ``dagster dev`` without
``DAGSTER_HOME`` starts a fresh instance each time, whose event ids start again at 1, and must not be read from
another instance's position. And a safety net: on PostgreSQL an event can commit after one with a higher id was
read; every refresh also ingests runs that ended since the last refresh of this instance (minus
:data:`SWEEP_MARGIN`, at most :data:`SWEEP_MAX` back; :data:`SWEEP_WINDOW` on its first refresh) but have no rows
yet: run ids only (a query per tracked job), and run records for the missing ones alone.

``first_run`` has one definition (:func:`is_first_run`): the upload's earliest ``po_job`` run without a parent,
by the run records — the same for ``stage_runs`` and for the PO asset's timeline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.event_api import EventLogRecord

from poflow_dagster.analytics.history import (
    TRACKED_JOBS,
    LaunchEvent,
    RunFact,
    count_stage_runs,
    ingest_finished_runs,
    known_runs,
    prune_launches,
    record_launch_events,
)
from poflow_dagster.analytics.timeline import TimelineRow, build_timeline, stage_seconds
from poflow_dagster.store.analytics_state import load_state, save_state
from poflow_dagster.store.db import Database
from poflow_dagster.store.stage_metrics import stage_metrics_for_run, upload_created_at
from poflow_dagster.store.types import utcnow

__all__ = [
    "HistoryRefresh", "is_first_run", "po_timeline_metadata", "refresh_stage_runs",
    "run_timeline_so_far", "timeline_metadata",
]

LAUNCH_EVENTS: dict[dg.DagsterEventType, str] = {
    dg.DagsterEventType.RUN_ENQUEUED: "enqueued",
    dg.DagsterEventType.RUN_STARTING: "starting",
    dg.DagsterEventType.RUN_START: "started",
}
TERMINAL_EVENTS: dict[dg.DagsterEventType, str] = {
    dg.DagsterEventType.RUN_SUCCESS: "success",
    dg.DagsterEventType.RUN_FAILURE: "failure",
    dg.DagsterEventType.RUN_CANCELED: "canceled",
}
#: How far back the first refresh of an instance looks for finished runs the cursors may have passed.
SWEEP_WINDOW = dt.timedelta(minutes=30)
#: Later refreshes sweep from the last successful refresh minus this margin (late commits, clock skew)...
SWEEP_MARGIN = dt.timedelta(minutes=10)
#: ...but never further back than this (an instance not refreshed for days is read by its cursors anyway).
SWEEP_MAX = dt.timedelta(days=1)
#: A run must have ended this long before the refresh to be swept (its events are committed by then).
SWEEP_SETTLE = dt.timedelta(seconds=10)
PARTITION_TAG = "dagster/partition"
PARENT_TAG = "dagster/parent_run_id"


@dataclass(frozen=True)
class HistoryRefresh:
    """What one refresh did: finished runs ingested, rows written, rows in the table, event pages read, time."""

    new_runs: int
    rows_written: int
    total_rows: int
    pages_read: int
    seconds: float


def refresh_stage_runs(
    instance: dg.DagsterInstance, db: Database, *, page_size: int = 1000, sweep_settle: dt.timedelta = SWEEP_SETTLE
) -> HistoryRefresh:
    """Bring ``stage_runs`` up to date with the runs that finished since the last refresh."""
    started = time.perf_counter()
    began_at = utcnow()
    prefix = instance_key(instance)
    # Terminal events are read only up to here: their launch events (always earlier) are then recorded below.
    horizon = instance.event_log_storage.get_maximum_record_id() or 0
    pages = new_runs = rows = 0
    for event_type, kind in LAUNCH_EVENTS.items():
        for page in _pages(instance, db, prefix, event_type, page_size, before=None):
            pages += 1
            record_launch_events(
                db, [LaunchEvent(r.event_log_entry.run_id, kind, _at(r.timestamp)) for r in page if _tracked(r)]
            )
    for event_type, status in TERMINAL_EVENTS.items():
        for page in _pages(instance, db, prefix, event_type, page_size, before=horizon + 1):
            pages += 1
            tracked = [r for r in page if _tracked(r)]
            ended = {r.event_log_entry.run_id: _at(r.timestamp) for r in tracked}
            facts = _run_facts(instance, ended, dict.fromkeys(ended, status))
            new_runs += len(facts)
            rows += ingest_finished_runs(db, facts)
    settled = began_at - sweep_settle
    stragglers = _stragglers(instance, db, _sweep_since(db, prefix, settled), settled)
    new_runs += len(stragglers)
    rows += ingest_finished_runs(db, stragglers)
    prune_launches(db, now=began_at)
    save_state(db, _sweep_state(prefix), began_at.isoformat())
    return HistoryRefresh(
        new_runs=new_runs, rows_written=rows, total_rows=count_stage_runs(db), pages_read=pages,
        seconds=round(time.perf_counter() - started, 3),
    )


def instance_key(instance: dg.DagsterInstance) -> str:
    """A short, stable name for where this instance keeps its event log (a SQLite folder or a PostgreSQL
    database), so cursors from one instance are never applied to another."""
    storage = instance.event_log_storage
    where = getattr(storage, "_base_dir", None) or getattr(storage, "postgres_url", None) or instance.root_directory
    if isinstance(where, str) and "@" in where:  # a database URL: keep host and database, never a password
        where = where.rsplit("@", 1)[1]
    return hashlib.sha256(f"{type(storage).__name__}:{where}".encode()).hexdigest()[:12]


def _pages(
    instance: dg.DagsterInstance, db: Database, prefix: str, event_type: dg.DagsterEventType, page_size: int,
    before: int | None,
) -> Iterator[list[EventLogRecord]]:
    """Pages of ``event_type`` records after this type's cursor; the cursor is saved once a page was handled."""
    name = f"cursor:{prefix}:{event_type.name}"
    cursor = load_state(db, name)
    while True:
        result = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=event_type, before_storage_id=before),
            limit=page_size, cursor=cursor, ascending=True,
        )
        if not result.records:
            return
        yield list(result.records)
        cursor = result.cursor
        save_state(db, name, cursor)
        if not result.has_more:
            return


_TERMINAL_STATUSES = {
    dg.DagsterRunStatus.SUCCESS: "success",
    dg.DagsterRunStatus.FAILURE: "failure",
    dg.DagsterRunStatus.CANCELED: "canceled",
}


def _sweep_state(prefix: str) -> str:
    return f"sweep:{prefix}:last_refresh"


def _sweep_since(db: Database, prefix: str, settled: dt.datetime) -> dt.datetime:
    """Where this refresh's sweep starts: the last successful refresh of this instance minus
    :data:`SWEEP_MARGIN` (:data:`SWEEP_WINDOW` before ``settled`` on the first), at most :data:`SWEEP_MAX` back."""
    last = load_state(db, _sweep_state(prefix))
    try:
        since = dt.datetime.fromisoformat(last) - SWEEP_MARGIN if last else settled - SWEEP_WINDOW
    except ValueError:
        since = settled - SWEEP_WINDOW
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    return max(since, settled - SWEEP_MAX)


def _stragglers(instance: dg.DagsterInstance, db: Database, since: dt.datetime, settled: dt.datetime) -> list[RunFact]:
    """Tracked runs that ended between ``since`` and ``settled`` but have no ``stage_runs`` rows: their terminal
    event committed behind the cursor. Reads run ids only; run records just for the missing runs."""
    ids: list[str] = []
    for job in sorted(TRACKED_JOBS):
        ids += instance.get_run_ids(
            filters=dg.RunsFilter(job_name=job, statuses=list(_TERMINAL_STATUSES), updated_after=since,
                                  updated_before=settled)
        )
    missing = sorted(set(ids) - known_runs(db, ids))
    if not missing:
        return []
    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=missing))
    ended = {r.dagster_run.run_id: _at(r.end_time) for r in records
             if r.end_time and r.dagster_run.status in _TERMINAL_STATUSES and _at(r.end_time) < settled}
    statuses = {r.dagster_run.run_id: _TERMINAL_STATUSES[r.dagster_run.status] for r in records
                if r.dagster_run.run_id in ended}
    return _run_facts(instance, ended, statuses)


def _run_facts(instance: dg.DagsterInstance, ended: dict[str, dt.datetime], statuses: dict[str, str]) -> list[RunFact]:
    """Finished runs (ended at, status) as :class:`RunFact` (one run-records query, one for the partitions' PO
    runs)."""
    if not ended:
        return []
    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=list(ended)))
    records = [r for r in records if r.dagster_run.job_name in TRACKED_JOBS]
    firsts = _first_po_runs(instance, {r.dagster_run.tags.get(PARTITION_TAG) for r in records} - {None})
    facts = []
    for record in records:
        run = record.dagster_run
        partition = run.tags.get(PARTITION_TAG)
        parent = run.tags.get(PARENT_TAG) or run.parent_run_id
        facts.append(
            RunFact(
                run_id=run.run_id,
                job_name=run.job_name,
                upload_id=partition,
                status=statuses[run.run_id],
                created_at=record.create_timestamp.astimezone(dt.UTC),
                ended_at=ended[run.run_id],
                started_at=_at(record.start_time) if record.start_time else None,
                parent_run_id=parent,
                first_run=is_first_run(run.job_name, run.run_id, parent, firsts.get(partition)),
            )
        )
    return facts


def is_first_run(job_name: str, run_id: str, parent_run_id: str | None, first_of_upload: str | None) -> bool:
    """The one rule for ``first_run``: a ``po_job`` run without a parent that is its upload's earliest such run
    (``first_of_upload``, from :func:`_first_po_runs`). A first run that died before recording any stage is still
    the first: the upload's received time then starts a later run's clock no more."""
    return job_name == "po_job" and not parent_run_id and first_of_upload == run_id


def _first_po_runs(instance: dg.DagsterInstance, partitions: set[str]) -> dict[str, str]:
    """Each partition's earliest ``po_job`` run (its first run), in one run-storage query."""
    if not partitions:
        return {}
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name="po_job", tags={PARTITION_TAG: sorted(partitions)})
    )
    first: dict[str, tuple[dt.datetime, str]] = {}
    for record in records:
        partition = record.dagster_run.tags.get(PARTITION_TAG)
        if partition is None or record.dagster_run.tags.get(PARENT_TAG):
            continue
        candidate = (record.create_timestamp, record.dagster_run.run_id)
        if partition not in first or candidate < first[partition]:
            first[partition] = candidate
    return {partition: run_id for partition, (_, run_id) in first.items()}


def _tracked(record: EventLogRecord) -> bool:
    return record.event_log_entry.job_name in TRACKED_JOBS


def _at(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


# --- one run's timeline while it runs (the PO asset's metadata) ---------------------------------------------


@dataclass(frozen=True)
class RunTimeline:
    """A running PO run's rows so far, and where its end-to-end clock started."""

    rows: list[TimelineRow]
    clock_started_at: dt.datetime | None  # upload received (first run) or run created
    first_run: bool


def run_timeline_so_far(instance: dg.DagsterInstance, db: Database, run_id: str, upload_id: str) -> RunTimeline:
    """This run's waits and stages so far: its run record and launch events (one run-scoped query each) joined
    with its ``stage_metrics``."""
    record = instance.get_run_record_by_id(run_id)
    created = record.create_timestamp.astimezone(dt.UTC) if record is not None else None
    parent = None
    if record is not None:
        parent = record.dagster_run.tags.get(PARENT_TAG) or record.dagster_run.parent_run_id
    launched: dict[str, dt.datetime] = {}
    events = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.RUN_ENQUEUED, dg.DagsterEventType.RUN_STARTING}
    ).records
    for event in events:
        event_type = event.event_log_entry.dagster_event_type
        if event_type is not None and event_type in LAUNCH_EVENTS:
            launched.setdefault(LAUNCH_EVENTS[event_type], _at(event.timestamp))
    received = upload_created_at(db, upload_id)
    job = record.dagster_run.job_name if record is not None else "po_job"
    first_run = is_first_run(job, run_id, parent, _first_po_runs(instance, {upload_id}).get(upload_id))
    rows = build_timeline(
        upload_created_at=received,
        run_created_at=created,
        enqueued_at=launched.get("enqueued"),
        starting_at=launched.get("starting"),
        started_at=_at(record.start_time) if record is not None and record.start_time else None,
        ended_at=None,
        stage_metrics=stage_metrics_for_run(db, run_id),
        first_run=first_run,
    )
    return RunTimeline(rows=rows, clock_started_at=received if first_run else created, first_run=first_run)


TIMELINE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("stage", "string"),
        dg.TableColumn("kind", "string", description="stage | wait"),
        dg.TableColumn("started", "string", description="UTC"),
        dg.TableColumn("duration_s", "float"),
        dg.TableColumn("attempts", "int"),
        dg.TableColumn("outcome", "string"),
        dg.TableColumn("items", "int"),
    ]
)


def po_timeline_metadata(
    instance: dg.DagsterInstance, db: Database, run_id: str, upload_id: str, log: logging.Logger | Any
) -> dict[str, dg.RawMetadataValue]:
    """The PO asset's timeline metadata; ``{}`` (and a warning) if it cannot be read: a report never fails a
    PO that is already marked completed."""
    try:
        return timeline_metadata(run_timeline_so_far(instance, db, run_id, upload_id))
    except Exception as error:  # noqa: BLE001 - metadata only
        log.warning(f"run timeline unavailable ({type(error).__name__}: {error})")
        return {}


def timeline_metadata(timeline: RunTimeline) -> dict[str, dg.RawMetadataValue]:
    """``timeline`` (a table of every wait and stage so far), ``end_to_end_s_so_far``, ``waits_s`` and
    ``<stage>_s`` per row."""
    rows = timeline.rows
    table = dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "stage": row.stage,
                    "kind": row.kind,
                    "started": row.started_at.isoformat(timespec="milliseconds") if row.started_at else None,
                    "duration_s": row.duration_s,
                    "attempts": row.attempts,
                    "outcome": row.outcome,
                    "items": row.items,
                }
            )
            for row in rows
        ],
        schema=TIMELINE_SCHEMA,
    )
    meta: dict[str, dg.RawMetadataValue] = {
        "timeline": table,
        "first_run": timeline.first_run,
        "waits_s": round(sum(row.duration_s or 0.0 for row in rows if row.kind == "wait"), 3),
    }
    if timeline.clock_started_at is not None:
        meta["end_to_end_s_so_far"] = round(max(0.0, (utcnow() - timeline.clock_started_at).total_seconds()), 3)
    for stage, seconds in stage_seconds(rows).items():
        meta[f"{stage}_s"] = round(seconds, 3)
    return meta
