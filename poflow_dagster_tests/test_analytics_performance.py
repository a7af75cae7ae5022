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


def test_image_job_waits_do_not_blur_the_po():
    rows = run_rows("po", ended_at=NOW - dt.timedelta(hours=1))
    rows += run_rows("img", ended_at=NOW - dt.timedelta(minutes=30), job="image_job", first_run=False,
                     durations={"queue_wait": 50.0, "image_attachment": 7.0})
    overall = stage_performance(frame(rows), now=NOW, slices=()).set_index("stage")
    assert overall.loc["queue_wait", "runs"] == 1 and overall.loc["queue_wait", "p50_s"] == 1.0
    assert overall.loc["image_attachment", "p50_s"] == 7.0
    assert overall.loc["end_to_end", "runs"] == 1
