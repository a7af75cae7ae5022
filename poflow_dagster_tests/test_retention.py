"""Partition hygiene: old, ended uploads lose their Dagster partition; their history stays (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from dagster._core.test_utils import create_run_for_test

from poflow_dagster.analytics.eta import run_table
from poflow_dagster.analytics.frame import load_stage_runs
from poflow_dagster.analytics.performance import stage_performance
from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.pipeline.retention import (
    DEFAULT_RETENTION_DAYS,
    partition_retention_job,
    partition_retention_schedule,
    retention_days,
    retire_partitions,
)
from poflow_dagster.pipeline.run_history import refresh_stage_runs
from poflow_dagster.resources import DatabaseResource
from poflow_dagster.store.merchants import ensure_merchant
from poflow_dagster.store.retention import partition_retirement, retired_count
from poflow_dagster.store.schema import RetiredPartition, Upload, WorkflowExecution

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
OLD = NOW - dt.timedelta(days=120)
RECENT = NOW - dt.timedelta(days=10)


def _add_uploads(db, rows: list[tuple[str, str, dt.datetime]]) -> None:
    """Uploads (id, status, last change) with a workflow row each, as the pipeline leaves them."""
    with db.session() as session:
        ensure_merchant(session, "acme")
        for upload_id, status, changed in rows:
            session.add(Upload(id=upload_id, merchant_id="acme", original_filename=f"{upload_id}.csv",
                               sha256=upload_id.ljust(64, "0"), size_bytes=10, mime_type="text/csv",
                               stored_path=f"/nowhere/{upload_id}.csv", status=status,
                               created_at=changed - dt.timedelta(minutes=1), updated_at=changed))
            session.add(WorkflowExecution(upload_id=upload_id, status=status if status != "duplicate" else "completed",
                                          progress_percent=100, updated_at=changed))


def test_only_old_ended_uploads_without_a_live_run_lose_their_partition(db, instance):
    rows = [
        ("up-old-completed", "completed", OLD), ("up-old-failed", "failed", OLD), ("up-old-duplicate", "duplicate", OLD),
        ("up-old-review", "needs_review", OLD), ("up-old-approved", "approved", OLD),
        ("up-old-processing", "processing", OLD), ("up-recent-completed", "completed", RECENT),
        ("up-old-rerunning", "completed", OLD), ("up-old-verified", "completed", OLD),
    ]
    _add_uploads(db, rows)
    with db.session() as session:  # its workflow row changed lately (a late verification): not ended long ago
        session.execute(sa.update(WorkflowExecution).where(WorkflowExecution.upload_id == "up-old-verified")
                        .values(updated_at=RECENT))
    keys = [r[0] for r in rows] + ["up-unknown-elsewhere"]
    instance.add_dynamic_partitions(po_uploads.name, keys)
    create_run_for_test(instance, job_name="po_job", status=dg.DagsterRunStatus.STARTED,
                        tags={"dagster/partition": "up-old-rerunning"})

    dry = retire_partitions(instance, db, days=90, now=NOW, dry_run=True, batch_size=3)
    assert dry.removed == 3 and set(instance.get_dynamic_partitions(po_uploads.name)) == set(keys)
    assert retired_count(db) == 0

    result = retire_partitions(instance, db, days=90, now=NOW, batch_size=3)  # four batches of up to three
    gone = {"up-old-completed", "up-old-failed", "up-old-duplicate"}
    assert set(instance.get_dynamic_partitions(po_uploads.name)) == set(keys) - gone
    assert (result.removed, result.in_flight, result.not_ended, result.recent, result.unknown) == (3, 1, 3, 2, 1)
    assert result.batches == 4 and result.kept == len(keys) - 3
    assert result.oldest_kept is not None and result.oldest_kept[0] != "up-unknown-elsewhere"
    record = partition_retirement(db, "up-old-failed")
    assert record is not None and record.upload_status == "failed" and record.retention_days == 90
    assert record.retired_at == NOW and partition_retirement(db, "up-old-review") is None

    again = retire_partitions(instance, db, days=90, now=NOW)  # idempotent: nothing left to retire
    assert again.removed == 0 and retired_count(db) == 3

    # Recorded but not yet deleted (a pass that died midway): the next pass finishes it.
    instance.add_dynamic_partitions(po_uploads.name, ["up-old-completed"])
    assert retire_partitions(instance, db, days=90, now=NOW).removed == 1
    assert not instance.has_dynamic_partition(po_uploads.name, "up-old-completed") and retired_count(db) == 3


def test_retention_days_from_the_environment(monkeypatch):
    monkeypatch.delenv("POFLOW_PARTITION_RETENTION_DAYS", raising=False)
    assert retention_days() == DEFAULT_RETENTION_DAYS == 90
    monkeypatch.setenv("POFLOW_PARTITION_RETENTION_DAYS", "30")
    assert retention_days() == 30
    for bad in ("0", "-5", "ninety"):
        monkeypatch.setenv("POFLOW_PARTITION_RETENTION_DAYS", bad)
        assert retention_days() == DEFAULT_RETENTION_DAYS


def test_the_job_reports_what_it_removed_and_the_schedule_never_piles_up(db, instance):
    _add_uploads(db, [("up-a", "completed", OLD), ("up-b", "completed", dt.datetime.now(dt.UTC))])
    instance.add_dynamic_partitions(po_uploads.name, ["up-a", "up-b"])
    assert partition_retention_job.tags["poflow/kind"] == "maintenance"
    assert defs.resolve_job_def("partition_retention_job") is not None

    result = partition_retention_job.execute_in_process(
        instance=instance, resources={"db": DatabaseResource(url=db.url)},
    )
    assert result.success
    assert result.output_for_node("retire_po_partitions") == {"removed": 1, "kept": 1, "dry_run": False}
    outputs = [e for e in result.events_for_node("retire_po_partitions") if e.is_successful_output]
    meta = {k: v.value for k, v in outputs[0].step_output_data.metadata.items()}
    assert meta["removed"] == 1 and meta["kept"] == 1 and meta["kept_recent"] == 1 and meta["oldest_kept"] == "up-b"
    assert instance.get_dynamic_partitions(po_uploads.name) == ["up-b"]
    assert partition_retention_schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    context = dg.build_schedule_context(instance=instance)
    assert len(partition_retention_schedule.evaluate_tick(context).run_requests) == 1
    create_run_for_test(instance, job_name="partition_retention_job", status=dg.DagsterRunStatus.STARTED)
    assert not partition_retention_schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests


def _history(db) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The analytics inputs: stage_runs as loaded for stage_performance / eta_model, the per-run table the ETA is
    fitted on, and stage_performance itself."""
    frame = load_stage_runs(db, since=NOW - dt.timedelta(days=3650), until=dt.datetime.now(dt.UTC))
    frame = frame.drop(columns=[c for c in ("id", "recorded_at") if c in frame.columns])
    frame = frame.sort_values(["run_id", "stage"]).reset_index(drop=True)
    perf = stage_performance(frame, now=dt.datetime.now(dt.UTC), window=dt.timedelta(days=3650))
    return frame, run_table(frame).sort_index(axis=1), perf


def test_analytics_history_is_unchanged_after_retention(home, db, shop, instance, samples):
    first = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    second = upload_file(db, home, "acme", samples["nordwind-bestellung-2002.tsv"])
    for upload in (first, second):
        assert run_upload(defs, instance, db, upload.id).success
    refresh_stage_runs(instance, db)
    before = _history(db)
    assert set(before[0]["upload_id"]) >= {first.id, second.id}

    # Both ended long ago as far as retention is concerned: a cutoff in the future.
    result = retire_partitions(instance, db, days=1, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    assert result.removed == 2 and instance.get_dynamic_partitions(po_uploads.name) == []
    refresh_stage_runs(instance, db)  # a refresh after the partitions went changes nothing
    after = _history(db)
    pd.testing.assert_frame_equal(before[0], after[0])
    pd.testing.assert_frame_equal(before[1], after[1])
    pd.testing.assert_frame_equal(before[2], after[2])

    # New work still flows and is added to the same history; the retired uploads keep their records.
    third = upload_file(db, home, "acme", samples["iberia-pedido-4004.csv"])
    assert run_upload(defs, instance, db, third.id).success
    assert refresh_stage_runs(instance, db).new_runs >= 1
    grown = _history(db)[0]
    assert set(grown["upload_id"]) == set(before[0]["upload_id"]) | {third.id}
    pd.testing.assert_frame_equal(grown[grown["upload_id"] != third.id].reset_index(drop=True), before[0])
    with db.session() as session:
        assert set(session.scalars(sa.select(RetiredPartition.upload_id))) == {first.id, second.id}
