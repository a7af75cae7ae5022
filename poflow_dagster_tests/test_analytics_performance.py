"""analytics.performance: percentiles, shares, throughput, failure/retry rates, window and slices."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from poflow_dagster.analytics.frame import STAGE_ORDER
from poflow_dagster.analytics.performance import PERFORMANCE_COLUMNS, stage_performance
from poflow_dagster_tests.test_analytics_frame import NOW, frame, run_rows

PARSE_SECONDS = [3.0, 7.0, 1.0, 12.0, 5.0, 9.0, 4.0, 20.0, 6.0, 2.0]


def _history():
    rows = []
    for i, parse in enumerate(PARSE_SECONDS):
        durations = {"sensor_wait": 2.0, "queue_wait": 1.0, "launch_wait": 3.0, "ai_parsing": parse,
                     "database_save": 1.0, "shopify_sync": 4.0, "checks": 1.0}
        fmt = "pdf" if i % 2 == 0 else "csv"
        extra = {"ai_parsing": {"items": 10 * (i + 1)}}
        if i == 3:
            extra["shopify_sync"] = {"outcome": "failed", "attempts": 3}
        if i == 5:
            extra["database_save"] = {"outcome": "interrupted"}
        rows += run_rows(f"r{i}", ended_at=NOW - dt.timedelta(hours=i + 1), durations=durations, source_format=fmt,
                         lines=5 if i < 4 else 100, merchant_id="m1" if i < 7 else "m2",
                         run_status="failure" if i == 3 else "success", extra=extra)
    # Old runs outside the 7-day window must not count.
    rows += run_rows("old", ended_at=NOW - dt.timedelta(days=8), durations={"ai_parsing": 1000.0})
    # A run ending after `now` is not in the window either.
    rows += run_rows("future", ended_at=NOW + dt.timedelta(minutes=1), durations={"ai_parsing": 1000.0})
    return frame(rows)


def test_percentiles_match_numpy_and_window_excludes_old_rows():
    perf = stage_performance(_history(), now=NOW)
    assert list(perf.columns) == PERFORMANCE_COLUMNS
    row = perf[(perf["slice"] == "all") & (perf["stage"] == "ai_parsing")].iloc[0]
    assert row["runs"] == len(PARSE_SECONDS)
    for q, column in [(50, "p50_s"), (90, "p90_s"), (95, "p95_s")]:
        assert row[column] == pytest.approx(np.percentile(PARSE_SECONDS, q))
    assert row["mean_s"] == pytest.approx(np.mean(PARSE_SECONDS))
    assert row["kind"] == "stage"


def test_shares_throughput_failure_and_retry_rates():
    perf = stage_performance(_history(), now=NOW)
    overall = perf[perf["slice"] == "all"].set_index("stage")
    e2e_total = sum(PARSE_SECONDS) + 10 * (2 + 1 + 3 + 1 + 4 + 1)
    assert overall.loc["end_to_end", "share"] == 1.0
    assert overall.loc["ai_parsing", "share"] == pytest.approx(sum(PARSE_SECONDS) / e2e_total)
    assert overall.loc["queue_wait", "share"] == pytest.approx(10 / e2e_total)
    assert overall.loc["launch_wait", "kind"] == "wait" and overall.loc["checks", "kind"] == "check"
    items = sum(10 * (i + 1) for i in range(10))
    assert overall.loc["ai_parsing", "throughput_items_per_s"] == pytest.approx(items / sum(PARSE_SECONDS))
    assert overall.loc["database_save", "throughput_items_per_s"] is None
    assert overall.loc["shopify_sync", "failure_rate"] == pytest.approx(0.1)
    assert overall.loc["shopify_sync", "retry_rate"] == pytest.approx(0.1)
    assert overall.loc["ai_parsing", "failure_rate"] == 0
    assert overall.loc["database_save", "failure_rate"] == pytest.approx(0.1)  # interrupted counts
    assert overall.loc["end_to_end", "failure_rate"] == pytest.approx(0.1)
    # Waits and end_to_end are rows like stages, in timeline order.
    assert list(overall.index) == [s for s in STAGE_ORDER if s in overall.index]
    assert list(overall.index)[:3] == ["sensor_wait", "queue_wait", "launch_wait"]


def test_slices_by_format_merchant_and_size():
    perf = stage_performance(_history(), now=NOW)
    parse = perf[perf["stage"] == "ai_parsing"].set_index(["slice", "slice_value"])
    pdf = [p for i, p in enumerate(PARSE_SECONDS) if i % 2 == 0]
    assert parse.loc[("source_format", "pdf"), "runs"] == 5
    assert parse.loc[("source_format", "pdf"), "p50_s"] == pytest.approx(np.median(pdf))
    assert parse.loc[("merchant_id", "m2"), "runs"] == 3
    assert parse.loc[("size_bucket", "1-10"), "runs"] == 4
    assert parse.loc[("size_bucket", "51-250"), "runs"] == 6
    m2 = perf[(perf["slice"] == "merchant_id") & (perf["slice_value"] == "m2")].set_index("stage")
    m2_e2e = sum(PARSE_SECONDS[7:]) + 3 * 12
    assert m2.loc["ai_parsing", "share"] == pytest.approx(sum(PARSE_SECONDS[7:]) / m2_e2e)
    only_all = stage_performance(_history(), now=NOW, slices=())
    assert set(only_all["slice"]) == {"all"}


def test_window_and_empty():
    assert stage_performance(frame([]), now=NOW).empty
    perf = stage_performance(_history(), now=NOW, window=dt.timedelta(hours=3, minutes=30))
    assert perf[(perf["slice"] == "all") & (perf["stage"] == "ai_parsing")].iloc[0]["runs"] == 3


def test_images_in_the_po_run_are_a_stage_but_no_part_of_its_end_to_end():
    from poflow_dagster.analytics.bottlenecks import tail_contributions
    from poflow_dagster.analytics.frame import prepare_frame

    durations = {"sensor_wait": 1.0, "launch_wait": 2.0, "ai_parsing": 5.0, "status_update": 1.0, "checks": 1.0,
                 "image_attachment": 7.0}
    po_time = sum(durations.values()) - durations["image_attachment"]  # the PO ended where images started
    rows = run_rows("po", ended_at=NOW - dt.timedelta(hours=1), durations=durations,
                    extra={"end_to_end": {"duration_s": po_time}})
    overall = stage_performance(frame(rows), now=NOW, slices=()).set_index("stage")
    assert overall.loc["image_attachment", "runs"] == 1 and overall.loc["image_attachment", "p50_s"] == 7.0
    assert overall.loc["end_to_end", "runs"] == 1 and overall.loc["end_to_end", "p50_s"] == po_time
    shares = tail_contributions(prepare_frame(frame(rows)))
    assert "image_attachment" not in shares and shares["ai_parsing"] == 5.0 / po_time


def test_skipped_and_reused_stages_are_counted_not_timed():
    rows = []
    for i in range(4):  # real work: shopify_sync 4 s, ai_parsing 10 s for 100 items
        rows += run_rows(f"r{i}", ended_at=NOW - dt.timedelta(hours=i + 1),
                         durations={"ai_parsing": 10.0, "shopify_sync": 4.0},
                         extra={"ai_parsing": {"items": 100}, "shopify_sync": {"items": 20}})
    for i in range(6):  # Shopify sync off / held for review: a 0.05 s skipped shopify_sync with 0 items
        rows += run_rows(f"held{i}", ended_at=NOW - dt.timedelta(hours=i + 1, minutes=30),
                         durations={"ai_parsing": 10.0, "shopify_sync": 0.05},
                         extra={"ai_parsing": {"items": 100}, "shopify_sync": {"outcome": "skipped", "items": 0}})
    # A continuation reuses the parse: 100 items in ~0 s must not inflate the throughput.
    rows += run_rows("cont", ended_at=NOW - dt.timedelta(minutes=20), first_run=False, upload_id="up-r0",
                     durations={"ai_parsing": 0.01, "shopify_sync": 4.0},
                     extra={"ai_parsing": {"outcome": "reused", "items": 100}})
    overall = stage_performance(frame(rows), now=NOW, slices=()).set_index("stage")
    sync = overall.loc["shopify_sync"]
    assert (sync["runs"], sync["skipped"], sync["reused"]) == (5, 6, 0)
    assert sync["p50_s"] == pytest.approx(4.0) and sync["p95_s"] == pytest.approx(4.0)
    assert sync["throughput_items_per_s"] == pytest.approx(20 / 4.0)  # the continuation's sync has no items
    parse = overall.loc["ai_parsing"]
    assert (parse["runs"], parse["skipped"], parse["reused"]) == (10, 0, 1)
    assert parse["throughput_items_per_s"] == pytest.approx(10.0)
    assert parse["p50_s"] == pytest.approx(10.0)


def test_end_to_end_is_the_first_runs_clock():
    rows = []
    for i in range(5):
        rows += run_rows(f"r{i}", ended_at=NOW - dt.timedelta(hours=i + 1),
                         durations={"sensor_wait": 2.0, "ai_parsing": 20.0, "shopify_sync": 8.0})
    # Continuations (run created → end, a different clock): short, they must not pull end_to_end down.
    for i in range(5):
        rows += run_rows(f"c{i}", ended_at=NOW - dt.timedelta(minutes=30 + i), first_run=False,
                         upload_id=f"up-r{i}", durations={"shopify_sync": 1.0})
    overall = stage_performance(frame(rows), now=NOW, slices=()).set_index("stage")
    e2e = overall.loc["end_to_end"]
    assert e2e["runs"] == 5 and e2e["p50_s"] == pytest.approx(30.0) and e2e["p95_s"] == pytest.approx(30.0)
    # Shares: the first runs' own stage seconds over their own end-to-end seconds.
    assert overall.loc["shopify_sync", "share"] == pytest.approx(8.0 / 30.0)
    assert overall.loc["shopify_sync", "runs"] == 10  # the continuations' syncs are real work, timed


def test_a_run_crossing_the_window_edge_counts_whole():
    # Began 20 s before the window's start, ended 10 s after it: all its stages are in the window.
    edge = NOW - dt.timedelta(days=7) + dt.timedelta(seconds=10)
    rows = run_rows("edge", ended_at=edge, durations={"sensor_wait": 15.0, "ai_parsing": 15.0})
    # Ended 5 s before the window's start: none of it is.
    rows += run_rows("before", ended_at=NOW - dt.timedelta(days=7, seconds=5),
                     durations={"sensor_wait": 1.0, "ai_parsing": 1.0})
    overall = stage_performance(frame(rows), now=NOW, slices=()).set_index("stage")
    assert overall.loc["sensor_wait", "runs"] == 1 and overall.loc["sensor_wait", "p50_s"] == 15.0
    assert overall.loc["end_to_end", "runs"] == 1
    assert overall.loc["sensor_wait", "share"] == pytest.approx(0.5)
