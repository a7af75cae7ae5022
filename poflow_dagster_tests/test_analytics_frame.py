"""analytics.frame: the stage_runs fact table as a DataFrame, plus the synthetic-history helpers the analytics
tests share (deterministic rows with consistent timelines)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import insert

from poflow_dagster.analytics.frame import (
    COLUMNS,
    KIND_OF,
    STAGE_ORDER,
    STAGE_RUN_COLUMNS,
    load_stage_runs,
    load_workflow_states,
    prepare_frame,
    size_bucket,
)
from poflow_dagster.store.schema import StageRun

NOW = dt.datetime(2026, 12, 1, 21, 0, tzinfo=dt.UTC)

BASE_DURATIONS: dict[str, float] = {
    "sensor_wait": 1.0,
    "queue_wait": 1.0,
    "launch_wait": 4.0,
    "ai_parsing": 10.0,
    "database_save": 0.5,
    "product_draft_creation": 0.5,
    "shopify_sync": 3.0,
    "status_update": 0.1,
    "checks": 0.5,
}


def run_rows(
    run_id: str,
    *,
    ended_at: dt.datetime,
    durations: dict[str, float] | None = None,
    merchant_id: str = "m1",
    upload_id: str | None = None,
    job: str = "po_job",
    source_format: str | None = "pdf",
    file_bytes: int | None = 60_000,
    lines: int | None = 20,
    skus: int | None = 20,
    first_run: bool = True,
    run_status: str = "success",
    gap_s: float = 0.0,
    extra: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The stage_runs rows of one finished run: stages back to back (plus ``gap_s`` after each), ending at
    ``ended_at``, and an ``end_to_end`` row spanning them all. ``extra`` overrides columns per stage."""
    durations = dict(BASE_DURATIONS if durations is None else durations)
    if not first_run:
        durations.pop("sensor_wait", None)
    order = [stage for stage in STAGE_ORDER if stage in durations and stage != "end_to_end"]
    total = sum(durations[stage] + gap_s for stage in order)
    start = ended_at - dt.timedelta(seconds=total)
    shared = {
        "run_id": run_id,
        "upload_id": upload_id or f"up-{run_id}",
        "merchant_id": merchant_id,
        "job": job,
        "run_status": run_status,
        "source_format": source_format,
        "file_bytes": file_bytes,
        "lines": lines,
        "skus": skus,
        "first_run": first_run,
        "run_created_at": start if not first_run else start + dt.timedelta(seconds=durations.get("sensor_wait", 0)),
    }
    rows, moment = [], start
    for stage in [*order, "end_to_end"]:
        seconds = total if stage == "end_to_end" else durations[stage]
        began = start if stage == "end_to_end" else moment
        row = {column: None for column in STAGE_RUN_COLUMNS if column not in ("id", "recorded_at")}
        row.update(shared)
        row.update(
            stage=stage,
            kind=KIND_OF[stage],
            outcome="success" if KIND_OF[stage] == "stage" else None,
            started_at=began,
            ended_at=began + dt.timedelta(seconds=seconds),
            duration_s=seconds,
            attempts=1,
        )
        row.update((extra or {}).get(stage, {}))
        rows.append(row)
        if stage != "end_to_end":
            moment += dt.timedelta(seconds=seconds + gap_s)
    return rows


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return prepare_frame(pd.DataFrame(rows))


def insert_stage_runs(db, rows: list[dict[str, Any]]) -> None:
    with db.engine.begin() as connection:
        connection.execute(insert(StageRun.__table__), rows)


# --- tests --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "bucket"),
    [(None, "unknown"), (0, "unknown"), (1, "1-10"), (10, "1-10"), (11, "11-50"), (50, "11-50"), (51, "51-250"),
     (250, "51-250"), (251, "251-1000"), (1000, "251-1000"), (1001, ">1000")],
)
def test_size_bucket(lines, bucket):
    assert size_bucket(lines) == bucket
    assert prepare_frame(pd.DataFrame({"lines": [lines]}))["size_bucket"].iloc[0] == bucket


def test_prepare_frame_empty_has_every_column_and_types():
    df = prepare_frame(None)
    assert list(df.columns) == COLUMNS
    assert str(df["ended_at"].dtype).startswith("datetime64") and str(df["ended_at"].dt.tz) == "UTC"
    assert df["duration_s"].dtype == float


def test_run_rows_timeline_is_consistent():
    rows = run_rows("r1", ended_at=NOW)
    df = frame(rows)
    e2e = df[df["stage"] == "end_to_end"].iloc[0]
    parts = df[df["stage"] != "end_to_end"]
    assert e2e["duration_s"] == pytest.approx(parts["duration_s"].sum())
    assert e2e["ended_at"] == pd.Timestamp(NOW)
    assert parts["ended_at"].max() == pd.Timestamp(NOW)


def test_load_stage_runs_filters_and_types(db):
    rows = run_rows("old", ended_at=NOW - dt.timedelta(days=10)) + run_rows(
        "new", ended_at=NOW - dt.timedelta(hours=1), merchant_id="m2", lines=300
    )
    insert_stage_runs(db, rows)
    everything = load_stage_runs(db)
    assert len(everything) == len(rows)
    assert list(everything.columns) == COLUMNS
    assert str(everything["ended_at"].dt.tz) == "UTC"
    recent = load_stage_runs(db, since=NOW - dt.timedelta(days=7), until=NOW)
    assert set(recent["run_id"]) == {"new"}
    assert set(recent["size_bucket"]) == {"251-1000"}
    e2e = recent[recent["stage"] == "end_to_end"].iloc[0]
    assert e2e["ended_at"] == pd.Timestamp(NOW - dt.timedelta(hours=1))
    assert set(load_stage_runs(db, merchant_id="m1")["run_id"]) == {"old"}
    assert load_stage_runs(db, since=NOW).empty


def test_load_stage_runs_empty_table(db):
    df = load_stage_runs(db)
    assert df.empty and list(df.columns) == COLUMNS


def test_load_workflow_states(db):
    from poflow_dagster_tests.test_analytics_merchants import add_workflow

    add_workflow(db, "m1", "processing", updated_at=NOW - dt.timedelta(hours=2))
    add_workflow(db, "m2", "needs_review", updated_at=NOW)
    states = load_workflow_states(db)
    assert sorted(states["status"]) == ["needs_review", "processing"]
    assert set(states["merchant_id"]) == {"m1", "m2"}
    assert str(states["updated_at"].dt.tz) == "UTC"
    assert list(load_workflow_states(db, merchant_id="m2")["status"]) == ["needs_review"]


def test_in_window_keeps_or_drops_whole_runs():
    from poflow_dagster.analytics.frame import in_window

    start = NOW - dt.timedelta(days=7)
    rows = run_rows("crossing", ended_at=start + dt.timedelta(seconds=5))  # ~21 s long: began before `start`
    rows += run_rows("late", ended_at=NOW + dt.timedelta(seconds=5))  # most of it before `now`, ended after
    df = frame(rows)
    kept = in_window(df, start, NOW)
    assert set(kept["run_id"]) == {"crossing"}
    assert len(kept) == sum(1 for r in rows if r["run_id"] == "crossing")
    assert (kept["ended_at"] <= pd.Timestamp(start)).any()  # its early rows ended before the window


def test_load_stage_runs_reads_a_run_crossing_the_edge_whole(db):
    since = NOW - dt.timedelta(days=7)
    rows = run_rows("crossing", ended_at=since + dt.timedelta(seconds=5))
    rows += run_rows("outside", ended_at=since - dt.timedelta(seconds=1))
    rows += run_rows("far", ended_at=since - dt.timedelta(days=3))
    insert_stage_runs(db, rows)
    loaded = load_stage_runs(db, since=since, until=NOW)
    assert set(loaded["run_id"]) == {"crossing"}
    assert set(loaded["stage"]) == {r["stage"] for r in rows if r["run_id"] == "crossing"}
    # The `until` edge too: a run still going at `until` is left out whole.
    assert set(load_stage_runs(db, since=since - dt.timedelta(days=4), until=since)["run_id"]) == {"outside", "far"}
    assert set(load_stage_runs(db, until=since + dt.timedelta(seconds=1))["run_id"]) == {"outside", "far"}


def test_load_workflow_states_since_filters_in_sql(db):
    from poflow_dagster_tests.test_analytics_merchants import add_workflow

    since = NOW - dt.timedelta(days=7)
    old = dict(updated_at=NOW - dt.timedelta(days=30), created_at=NOW - dt.timedelta(days=30))
    stale_open = add_workflow(db, "m1", "processing", **old)  # open: may be stuck, always read
    add_workflow(db, "m1", "completed", **old)  # long done: not needed
    recent = add_workflow(db, "m1", "completed", updated_at=NOW - dt.timedelta(hours=1))
    touched = add_workflow(db, "m1", "needs_review", updated_at=NOW - dt.timedelta(days=1),
                           created_at=NOW - dt.timedelta(days=30))
    assert len(load_workflow_states(db)) == 4
    states = load_workflow_states(db, since=since)
    assert set(states["upload_id"]) == {stale_open, recent, touched}


def test_finite_or_none():
    from poflow_dagster.analytics.frame import finite_or_none

    df = finite_or_none(pd.DataFrame({"a": [1.5, float("nan"), float("inf")], "b": ["x", "y", "z"]}), ["a", "c"])
    assert df["a"].tolist() == [1.5, None, None] and df["b"].tolist() == ["x", "y", "z"]
