"""analytics/timeline.py: a run's waits, stages, checks and end to end from plain timestamps."""

from __future__ import annotations

import datetime as dt

from poflow_dagster.analytics.timeline import STAGE_ORDER, build_timeline, stage_seconds
from poflow_dagster.store.stage_metrics import StageMetricRecord

T0 = dt.datetime(2026, 3, 2, 9, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def metric(stage: str, start: float, end: float | None, **extra) -> StageMetricRecord:
    values = dict(
        stage=stage, started_at=at(start), ended_at=None if end is None else at(end),
        duration_ms=None if end is None else int((end - start) * 1000), attempts=1,
        outcome="success" if end is not None else "running", error_code=None, items=None, bytes=None, signals=None,
    )
    values.update(extra)
    return StageMetricRecord(**values)


PO_METRICS = [
    metric("shopify_sync", 14.0, 20.0, items=4, signals={"shopify_requests": 6, "shopify_points": 71.5,
                                                         "shopify_throttled_s": 2.25}),
    metric("ai_parsing", 10.0, 11.5, items=5, bytes=900, signals={"pages": 3, "llm_windows": 2, "llm_seconds": 1.2}),
    metric("database_save", 11.5, 12.0, items=5),
    metric("product_draft_creation", 12.0, 14.0, items=4, signals={"skus": 4}),
    metric("status_update", 20.0, 20.5, items=1),
]


def test_first_run_with_every_event_has_all_rows_in_order():
    rows = build_timeline(
        upload_created_at=at(0), run_created_at=at(2), enqueued_at=at(2.1), starting_at=at(6), started_at=at(8),
        ended_at=at(23), stage_metrics=PO_METRICS, first_run=True,
    )
    by_stage = {row.stage: row for row in rows}
    assert [row.stage for row in rows] == [s for s in STAGE_ORDER if s != "image_attachment"]
    assert (by_stage["sensor_wait"].kind, by_stage["sensor_wait"].duration_s) == ("wait", 2.0)
    assert by_stage["queue_wait"].duration_s == 4.0  # run created -> RUN_STARTING
    assert by_stage["launch_wait"].duration_s == 4.0  # RUN_STARTING -> first stage started
    assert (by_stage["checks"].kind, by_stage["checks"].started_at, by_stage["checks"].duration_s) == ("check", at(20.5), 2.5)
    assert (by_stage["end_to_end"].kind, by_stage["end_to_end"].started_at, by_stage["end_to_end"].duration_s) == (
        "total", at(0), 23.0)
    parsing, sync = by_stage["ai_parsing"], by_stage["shopify_sync"]
    assert (parsing.kind, parsing.duration_s, parsing.pages, parsing.llm_windows, parsing.llm_seconds) == (
        "stage", 1.5, 3, 2, 1.2)
    assert (sync.shopify_requests, sync.shopify_points, sync.shopify_throttled_s, sync.items) == (6, 71.5, 2.25, 4)
    # The parts add up: waits + stages + checks is the whole end to end (stages here run back to back).
    parts = sum(row.duration_s for row in rows if row.kind != "total")
    assert abs(parts - by_stage["end_to_end"].duration_s) < 1e-9
    assert stage_seconds(rows)["ai_parsing"] == 1.5


def test_rerun_has_no_sensor_wait_and_measures_from_run_created():
    rows = build_timeline(
        upload_created_at=at(-3600), run_created_at=at(2), enqueued_at=None, starting_at=at(6), started_at=at(8),
        ended_at=at(23), stage_metrics=PO_METRICS, first_run=False,
    )
    by_stage = {row.stage: row for row in rows}
    assert "sensor_wait" not in by_stage
    assert (by_stage["end_to_end"].started_at, by_stage["end_to_end"].duration_s) == (at(2), 21.0)


def test_without_launch_events_only_what_is_measurable():
    # execute_in_process: no RUN_ENQUEUED / RUN_STARTING; RUN_START is there.
    rows = build_timeline(
        upload_created_at=at(0), run_created_at=at(9.9), enqueued_at=None, starting_at=None, started_at=at(9.95),
        ended_at=at(21), stage_metrics=PO_METRICS, first_run=True,
    )
    by_stage = {row.stage: row for row in rows}
    assert "queue_wait" not in by_stage
    assert by_stage["launch_wait"].started_at == at(9.95) and round(by_stage["launch_wait"].duration_s, 6) == 0.05
    # A queued run whose RUN_STARTING is missing: its queue ended by RUN_START at the latest.
    queued = build_timeline(
        upload_created_at=at(0), run_created_at=at(2), enqueued_at=at(2), starting_at=None, started_at=at(7),
        ended_at=at(21), stage_metrics=PO_METRICS, first_run=True,
    )
    assert {r.stage: r.duration_s for r in queued}["queue_wait"] == 5.0
    # No events at all and no stages: just the total.
    bare = build_timeline(upload_created_at=None, run_created_at=at(0), enqueued_at=None, starting_at=None,
                          started_at=None, ended_at=at(1), stage_metrics=[], first_run=False)
    assert [(r.stage, r.duration_s) for r in bare] == [("end_to_end", 1.0)]


def test_run_still_going_has_stages_so_far_and_no_checks_or_total():
    metrics = [*PO_METRICS[1:3], metric("product_draft_creation", 12.0, None)]
    rows = build_timeline(
        upload_created_at=at(0), run_created_at=at(2), enqueued_at=None, starting_at=at(6), started_at=at(8),
        ended_at=None, stage_metrics=metrics, first_run=True,
    )
    assert [row.stage for row in rows] == ["sensor_wait", "queue_wait", "launch_wait", "ai_parsing", "database_save",
                                           "product_draft_creation"]
    running = rows[-1]
    assert (running.outcome, running.ended_at, running.duration_s) == ("running", None, None)


def test_stage_cut_off_by_the_run_ending_is_interrupted_and_failed_stage_keeps_its_code():
    metrics = [
        metric("ai_parsing", 10.0, 11.0),
        metric("database_save", 11.0, 11.2, outcome="failed", error_code="OperationalError", attempts=3),
        metric("product_draft_creation", 11.2, None),
    ]
    rows = {r.stage: r for r in build_timeline(
        upload_created_at=at(0), run_created_at=at(2), enqueued_at=None, starting_at=None, started_at=at(9),
        ended_at=at(15), stage_metrics=metrics, first_run=True,
    )}
    assert (rows["database_save"].outcome, rows["database_save"].error_code, rows["database_save"].attempts) == (
        "failed", "OperationalError", 3)
    cut = rows["product_draft_creation"]
    assert (cut.outcome, cut.ended_at, round(cut.duration_s, 6)) == ("interrupted", at(15), 3.8)
    assert rows["checks"].started_at == at(15)  # the last stage "ended" with the run


def test_images_in_the_po_run_end_its_checks_and_end_to_end_where_they_start():
    metrics = [*PO_METRICS, metric("image_attachment", 22.0, 22.5, outcome="skipped", items=0)]
    rows = build_timeline(
        upload_created_at=at(0), run_created_at=at(2), enqueued_at=at(2.1), starting_at=at(6), started_at=at(8),
        ended_at=at(23), stage_metrics=metrics, first_run=True,
    )
    assert [row.stage for row in rows] == list(STAGE_ORDER)  # images after checks, before the total
    by_stage = {row.stage: row for row in rows}
    assert (by_stage["image_attachment"].kind, by_stage["image_attachment"].duration_s) == ("stage", 0.5)
    assert (by_stage["checks"].started_at, by_stage["checks"].ended_at) == (at(20.5), at(22.0))
    assert (by_stage["end_to_end"].ended_at, by_stage["end_to_end"].duration_s) == (at(22.0), 22.0)
    # Waits + PO stages + checks still add up to the PO's end to end; images are outside it.
    parts = sum(r.duration_s for r in rows if r.kind != "total" and r.stage != "image_attachment")
    assert abs(parts - by_stage["end_to_end"].duration_s) < 1e-9
    # An image step cut off by the run's end (a killed run) never lengthens the PO either.
    cut = build_timeline(
        upload_created_at=at(0), run_created_at=at(2), enqueued_at=None, starting_at=None, started_at=at(8),
        ended_at=at(30), stage_metrics=[*PO_METRICS, metric("image_attachment", 22.0, None)], first_run=True,
    )
    assert {r.stage: r.ended_at for r in cut}["end_to_end"] == at(22.0)
    assert {r.stage: r.outcome for r in cut}["image_attachment"] == "interrupted"


def test_clock_skew_never_gives_negative_durations():
    rows = build_timeline(
        upload_created_at=at(5), run_created_at=at(4.99), enqueued_at=None, starting_at=None, started_at=at(10.2),
        ended_at=at(21), stage_metrics=PO_METRICS, first_run=True,
    )
    assert all(row.duration_s is None or row.duration_s >= 0 for row in rows)
    assert {r.stage: r.duration_s for r in rows}["sensor_wait"] == 0.0
