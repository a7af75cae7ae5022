"""Partition hygiene: ``partition_retention_job`` removes ended uploads' ``po_uploads`` partitions after a retention.

One partition per upload forever would reach Dagster's documented ceiling (100,000 partitions per asset) and slow
every page and sensor that lists them. Once an upload ended (completed, duplicate or failed; see
``store/retention.py``) and nothing about it changed for ``POFLOW_PARTITION_RETENTION_DAYS`` (default 90) days,
its partition is deleted from Dagster — never while a run of it is queued or running. Dagster keeps the runs and
their events; the app database keeps the upload, PO and stage metrics, ``stage_runs`` (analytics) keeps the
timings, and ``retired_partitions`` records when the partition went. Should the upload ever run again, its run
request re-adds the partition.

``partition_retention_schedule`` runs the job daily at 03:17 UTC, on by default (``POFLOW_PARTITION_RETENTION_CRON``
moves it; stop it in the UI to keep every partition).
"""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import datetime as dt
import logging
import os
from dataclasses import dataclass, field

import dagster as dg

from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.resources import DatabaseResource
from poflow_dagster.store.db import Database
from poflow_dagster.store.retention import record_retired, split_partitions

log = logging.getLogger(__name__)

RETENTION_ENV = "POFLOW_PARTITION_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 90
CRON_ENV = "POFLOW_PARTITION_RETENTION_CRON"
DEFAULT_CRON = "17 3 * * *"
#: Partitions looked at (and deleted) per batch: one app-database query and one record per batch.
BATCH_SIZE = 500
#: The run-queue tag of maintenance runs; dagster.yaml lets one run at a time.
MAINTENANCE_TAG = {"poflow/kind": "maintenance"}
MAX_RUNTIME_SECONDS = 60 * 60
PARTITION_TAG = "dagster/partition"
#: A run in one of these states still needs its partition.
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
]


def retention_days() -> int:
    """``POFLOW_PARTITION_RETENTION_DAYS`` (default 90): a whole number of days ≥ 1; anything else falls back to
    the default with a warning."""
    raw = (os.environ.get(RETENTION_ENV) or "").strip()
    if not raw:
        return DEFAULT_RETENTION_DAYS
    try:
        days = int(raw)
    except ValueError:
        days = 0
    if days < 1:
        log.warning("%s=%r is not a whole number of days >= 1; using %d", RETENTION_ENV, raw, DEFAULT_RETENTION_DAYS)
        return DEFAULT_RETENTION_DAYS
    return days


def retention_cron() -> str:
    """``POFLOW_PARTITION_RETENTION_CRON`` (default daily at 03:17 UTC); an invalid expression falls back."""
    from dagster._utils.schedules import is_valid_cron_string

    raw = (os.environ.get(CRON_ENV) or "").strip()
    if raw and not is_valid_cron_string(raw):
        log.warning("%s=%r is not a cron expression; using %r", CRON_ENV, raw, DEFAULT_CRON)
        return DEFAULT_CRON
    return raw or DEFAULT_CRON


@dataclass
class RetentionResult:
    """What one retention pass did (``removed``) and left (the rest, by reason)."""

    cutoff: dt.datetime
    retention_days: int
    dry_run: bool
    partitions_before: int = 0
    removed: int = 0
    in_flight: int = 0  # old and ended, but a run of it is queued or running
    not_ended: int = 0
    recent: int = 0
    unknown: int = 0
    batches: int = 0
    oldest_kept: tuple[str, dt.datetime] | None = None
    removed_sample: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.partitions_before - self.removed


def in_flight_partitions(instance: dg.DagsterInstance) -> set[str]:
    """Partition keys of every queued or running run (any job)."""
    records = instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT))
    return {key for r in records if (key := r.dagster_run.tags.get(PARTITION_TAG))}


def retire_partitions(
    instance: dg.DagsterInstance,
    database: Database,
    *,
    days: int,
    now: dt.datetime | None = None,
    batch_size: int = BATCH_SIZE,
    dry_run: bool = False,
) -> RetentionResult:
    """Delete the ``po_uploads`` partitions of uploads that ended more than ``days`` days before ``now``, in
    batches; each batch is recorded in ``retired_partitions`` first, then deleted, so a pass that dies midway is
    finished by the next one (idempotent). ``dry_run`` counts without changing anything."""
    now = now or dt.datetime.now(dt.UTC)
    result = RetentionResult(cutoff=now - dt.timedelta(days=days), retention_days=days, dry_run=dry_run)
    keys = list(instance.get_dynamic_partitions(po_uploads.name))
    result.partitions_before = len(keys)
    for start in range(0, len(keys), batch_size):
        batch = keys[start:start + batch_size]
        split = split_partitions(database, batch, result.cutoff)
        busy = in_flight_partitions(instance) if split.retirable else set()  # fresh per batch: a narrow window
        retire = [r for r in split.retirable if r.upload_id not in busy]
        result.in_flight += len(split.retirable) - len(retire)
        result.not_ended += len(split.not_ended)
        result.recent += len(split.recent)
        result.unknown += len(split.unknown)
        kept = [(r.upload_id, r.ended_at) for r in split.retirable if r.upload_id in busy]
        for candidate in ([split.oldest_kept] if split.oldest_kept else []) + kept:
            if result.oldest_kept is None or candidate[1] < result.oldest_kept[1]:
                result.oldest_kept = candidate
        result.batches += 1
        if not retire:
            continue
        if not dry_run:
            record_retired(database, retire, now, days)
            delete_partitions(instance, [item.upload_id for item in retire])
        result.removed += len(retire)
        result.removed_sample.extend(r.upload_id for r in retire[: max(0, 20 - len(result.removed_sample))])
    return result


def delete_partitions(instance: dg.DagsterInstance, keys: list[str]) -> None:
    """Delete these ``po_uploads`` partitions: one statement per batch on Dagster's SQL event storages (SQLite,
    PostgreSQL; the same table ``instance.delete_dynamic_partition`` deletes from, one key and one transaction
    at a time: ~30 ms each on SQLite), else key by key through the public API."""
    from dagster._core.storage.event_log.schema import DynamicPartitionsTable
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    storage = instance.event_log_storage
    if isinstance(storage, SqlEventLogStorage) and storage.has_table(DynamicPartitionsTable.name):
        with storage.index_connection() as conn:
            conn.execute(
                DynamicPartitionsTable.delete().where(
                    DynamicPartitionsTable.c.partitions_def_name == po_uploads.name,
                    DynamicPartitionsTable.c.partition.in_(keys),
                )
            )
        return
    for key in keys:
        instance.delete_dynamic_partition(po_uploads.name, key)


def result_metadata(result: RetentionResult) -> dict[str, object]:
    """The pass as op metadata: counts, the cutoff and the oldest partition kept."""
    oldest = result.oldest_kept
    return {
        "removed": result.removed,
        "kept": result.kept,
        "partitions_before": result.partitions_before,
        "kept_in_flight": result.in_flight,
        "kept_not_ended": result.not_ended,
        "kept_recent": result.recent,
        "kept_unknown_upload": result.unknown,
        "retention_days": result.retention_days,
        "cutoff": result.cutoff.isoformat(timespec="seconds"),
        "dry_run": result.dry_run,
        "batches": result.batches,
        "oldest_kept": oldest[0] if oldest else "",
        "oldest_kept_at": oldest[1].isoformat(timespec="seconds") if oldest else "",
        "removed_sample": dg.MetadataValue.md("\n".join(f"- `{k}`" for k in result.removed_sample) or "none"),
    }


class RetentionConfig(dg.Config):
    retention_days: int = 0
    """Days an ended upload keeps its partition; 0 = ``POFLOW_PARTITION_RETENTION_DAYS`` (default 90)."""
    dry_run: bool = False
    """Count what would be removed, remove nothing."""


@dg.op(tags=MAINTENANCE_TAG)
def retire_po_partitions(context: dg.OpExecutionContext, config: RetentionConfig, db: DatabaseResource) -> dict:
    """Remove the ``po_uploads`` partitions of uploads that ended (completed, duplicate, failed) longer ago than
    the retention, never one with a queued or running run; record each in ``retired_partitions``. Runs, events,
    the app database and the analytics keep the history."""
    days = config.retention_days if config.retention_days >= 1 else retention_days()
    result = retire_partitions(context.instance, db.database, days=days, dry_run=config.dry_run)
    verb = "would remove" if result.dry_run else "removed"
    context.log.info(f"{verb} {result.removed} of {result.partitions_before} po_uploads partitions "
                     f"(ended before {result.cutoff:%Y-%m-%d %H:%M} UTC); {result.in_flight} kept for their runs")
    context.add_output_metadata(result_metadata(result))
    return {"removed": result.removed, "kept": result.kept, "dry_run": result.dry_run}


@dg.job(
    name="partition_retention_job",
    executor_def=dg.in_process_executor,
    tags={**MAINTENANCE_TAG, "dagster/max_runtime": str(MAX_RUNTIME_SECONDS)},
    description="Remove ended uploads' po_uploads partitions older than POFLOW_PARTITION_RETENTION_DAYS "
    "(default 90); history stays in runs, the app database and the analytics.",
)
def partition_retention_job():
    retire_po_partitions()


@dg.schedule(
    cron_schedule=retention_cron(),
    job=partition_retention_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
)
def partition_retention_schedule(context: dg.ScheduleEvaluationContext):
    """Retire old partitions once a day (``POFLOW_PARTITION_RETENTION_CRON``, default 03:17 UTC); skipped while an
    earlier retention run is still queued or running."""
    unfinished = context.instance.get_runs_count(
        dg.RunsFilter(job_name=partition_retention_job.name, statuses=IN_FLIGHT)
    )
    if unfinished:
        return dg.SkipReason(f"{unfinished} partition_retention_job run(s) not finished yet")
    return dg.RunRequest()
