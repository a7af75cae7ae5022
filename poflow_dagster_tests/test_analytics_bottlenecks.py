"""analytics.bottlenecks: tail contribution ranking, trend factor and severity, signal-based causes with a
recommendation naming a real setting, and slow_stages for the slowdown check."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from poflow_dagster.analytics.bottlenecks import BOTTLENECK_COLUMNS, bottleneck_report, slow_stages
from poflow_dagster_tests.test_analytics_frame import BASE_DURATIONS, NOW, frame, run_rows

PER_DAY = 6


def steady_history(
    *, days: int = 7, recent: dict[str, Any] | None = None, recent_extra: dict[str, dict] | None = None,
    extra: dict[str, dict] | None = None, recent_runs: int = PER_DAY, recent_lines: int = 20,
) -> list[dict]:
    """``PER_DAY`` identical runs per day for the days before the last one; the last day's runs may differ."""
    rows = []
    for day in range(1, days):
        for k in range(PER_DAY):
            ended = NOW - dt.timedelta(days=day, hours=k * 3 + 1)
            rows += run_rows(f"d{day}-{k}", ended_at=ended, extra=extra)
    for k in range(recent_runs):
        ended = NOW - dt.timedelta(hours=k * 3 + 1)
        durations = {**BASE_DURATIONS, **(recent or {})}
        rows += run_rows(f"now-{k}", ended_at=ended, durations=durations, extra=recent_extra or extra,
                         lines=recent_lines, skus=recent_lines)
    return rows


LLM = {"ai_parsing": {"llm_windows": 2, "llm_seconds": 8.0, "pages": 6}}


def test_report_columns_and_empty():
    assert list(bottleneck_report(frame([]), now=NOW).columns) == BOTTLENECK_COLUMNS
    report = bottleneck_report(frame(steady_history()), now=NOW)
    assert list(report.columns) == BOTTLENECK_COLUMNS
    assert "end_to_end" not in set(report["stage"])
    assert list(report["rank"]) == list(range(1, len(report) + 1))


def test_stage_slow_in_the_tail_ranks_first():
    rows = steady_history()
    # Four of ~42 runs have a 120 s database_save: they are the tail, and database_save dominates it.
    for k in range(4):
        rows += run_rows(f"slow-{k}", ended_at=NOW - dt.timedelta(days=2, minutes=k * 10),
                         durations={**BASE_DURATIONS, "database_save": 120.0})
    report = bottleneck_report(frame(rows), now=NOW)
    assert report.iloc[0]["stage"] == "database_save"
    # The tail is the slowest 10 % of 46 runs: the 4 slow ones and one ordinary run.
    normal = sum(BASE_DURATIONS.values())
    tail_e2e = 4 * (normal - 0.5 + 120.0) + normal
    assert report.iloc[0]["contribution"] == pytest.approx((4 * 120.0 + 0.5) / tail_e2e)
    assert report["contribution"].is_monotonic_decreasing
    # Without the slow runs ai_parsing (10 s of ~20.6 s) leads.
    assert bottleneck_report(frame(steady_history()), now=NOW).iloc[0]["stage"] == "ai_parsing"


def test_trend_factor_llm_latency():
    # Same documents (2 windows), the LLM answers slower: 21 s instead of 10 s.
    rows = steady_history(
        recent={"ai_parsing": 21.0}, extra=LLM,
        recent_extra={"ai_parsing": {"llm_windows": 2, "llm_seconds": 19.0, "pages": 6}},
    )
    row = bottleneck_report(frame(rows), now=NOW).set_index("stage").loc["ai_parsing"]
    assert row["factor"] == pytest.approx(2.1)
    assert row["severity"] == "warning"
    assert row["cause"].startswith("LLM latency") and "9.5 s LLM wall time per window vs 4.0 s" in row["cause"]
    assert "POFLOW_LLM_CONCURRENCY" in row["recommendation"]
    assert row["message"].startswith("ai_parsing p95 is 2.1× its 6-day median (LLM latency")
    assert "POFLOW_LLM_CONCURRENCY" in row["message"]


def test_trend_factor_bigger_documents():
    # The LLM is as fast per window as before, but documents have 5 windows instead of 2.
    rows = steady_history(
        recent={"ai_parsing": 35.0}, extra=LLM,
        recent_extra={"ai_parsing": {"llm_windows": 5, "llm_seconds": 20.0, "pages": 15}},
    )
    row = bottleneck_report(frame(rows), now=NOW).set_index("stage").loc["ai_parsing"]
    assert row["factor"] == pytest.approx(3.5)
    assert row["severity"] == "critical"
    assert row["cause"].startswith("bigger documents") and "LLM windows" in row["cause"]
    assert "POFLOW_LLM_WINDOW_CHARS" in row["recommendation"]


def test_shopify_throttling_cause():
    rows = steady_history(
        recent={"shopify_sync": 7.5},
        extra={"shopify_sync": {"shopify_throttled_s": 0.0, "shopify_requests": 20}},
        recent_extra={"shopify_sync": {"shopify_throttled_s": 4.5, "shopify_requests": 20}},
    )
    row = bottleneck_report(frame(rows), now=NOW).set_index("stage").loc["shopify_sync"]
    assert row["factor"] == pytest.approx(2.5) and row["severity"] == "warning"
    assert row["cause"].startswith("Shopify throttling") and "60%" in row["cause"]
    assert "restore rate" in row["recommendation"] and "bulk" in row["recommendation"]


def test_waits_and_database_causes_name_their_settings():
    rows = steady_history(recent={"queue_wait": 4.0, "launch_wait": 9.0, "database_save": 1.5})
    report = bottleneck_report(frame(rows), now=NOW).set_index("stage")
    assert report.loc["queue_wait", "severity"] == "critical"  # 4×
    assert "run_queue.max_concurrent_runs" in report.loc["queue_wait", "recommendation"]
    assert report.loc["launch_wait", "severity"] == "warning"  # 2.25×
    assert "CeleryRunLauncher" in report.loc["launch_wait", "recommendation"]
    assert report.loc["database_save", "severity"] == "critical"  # 3×
    assert "POFLOW_DATABASE_URL" in report.loc["database_save", "recommendation"]
    assert report.loc["sensor_wait", "severity"] == "ok"
    assert report.loc["sensor_wait", "factor"] == pytest.approx(1.0)
    assert "sensor" in report.loc["sensor_wait", "recommendation"]


def test_not_enough_history():
    rows = steady_history(days=2, recent={"ai_parsing": 50.0}, recent_runs=3)
    row = bottleneck_report(frame(rows), now=NOW).set_index("stage").loc["ai_parsing"]
    assert row["factor"] is None and row["severity"] is None
    assert row["cause"] == "not enough history"


def test_zero_baseline_gives_no_factor_and_no_severity():
    # sensor_wait clamped to 0 s every day before; 0.2 s today: a ratio to 0 would be infinite.
    rows = steady_history(extra={"sensor_wait": {"duration_s": 0.0}},
                          recent={**BASE_DURATIONS, "sensor_wait": 0.2})
    report = bottleneck_report(frame(rows), now=NOW)
    row = report.set_index("stage").loc["sensor_wait"]
    assert row["factor"] is None and row["severity"] is None
    assert "~0 s" in row["cause"] and "~0 s" in row["message"]
    assert report["factor"].dropna().map(math.isfinite).all()
    # The slowdown check does not judge a stage against a ~0 s median either.
    hot = steady_history(recent_runs=0, extra={"sensor_wait": {"duration_s": 0.0}})
    for k in range(3):
        hot += run_rows(f"hot-{k}", ended_at=NOW - dt.timedelta(minutes=10 + k),
                        durations={**BASE_DURATIONS, "sensor_wait": 0.5})
    slow = slow_stages(frame(hot), now=NOW)
    assert "sensor_wait" not in {s["stage"] for s in slow}
    assert all(math.isfinite(s["factor"]) for s in slow)


def test_skipped_and_reused_stages_are_not_durations():
    # Every day before: shopify_sync takes 3 s. Today the same 3 s runs, plus as many POs held for review whose
    # shopify_sync was skipped in 0.05 s: its p95 and trend must not move, nor its contribution to the tail.
    rows = steady_history()
    for k in range(PER_DAY):
        rows += run_rows(f"held-{k}", ended_at=NOW - dt.timedelta(hours=k * 3 + 2),
                         durations={**BASE_DURATIONS, "shopify_sync": 0.05},
                         extra={"shopify_sync": {"outcome": "skipped", "items": 0}})
    report = bottleneck_report(frame(rows), now=NOW).set_index("stage")
    assert report.loc["shopify_sync", "runs"] == 6 * PER_DAY + PER_DAY
    assert report.loc["shopify_sync", "p95_s"] == pytest.approx(3.0)
    assert report.loc["shopify_sync", "factor"] == pytest.approx(1.0)


def test_tail_and_trend_use_first_runs_and_whole_runs():
    rows = steady_history()
    # A continuation run's end_to_end starts at its own creation: short, and it must not enter the tail.
    rows += run_rows("cont", ended_at=NOW - dt.timedelta(hours=2), first_run=False, upload_id="up-now-0",
                     durations={"queue_wait": 500.0})
    contributions = bottleneck_report(frame(rows), now=NOW).set_index("stage")["contribution"]
    baseline = bottleneck_report(frame(steady_history()), now=NOW).set_index("stage")["contribution"]
    assert contributions["queue_wait"] == pytest.approx(baseline["queue_wait"])
    # A run that began before the window's start and ended inside it counts whole (all its stages).
    edge = run_rows("edge", ended_at=NOW - dt.timedelta(days=7) + dt.timedelta(seconds=5),
                    durations={**BASE_DURATIONS, "ai_parsing": 60.0})
    report = bottleneck_report(frame(edge), now=NOW).set_index("stage")
    assert report.loc["ai_parsing", "runs"] == 1 and report.loc["sensor_wait", "runs"] == 1


def test_slow_stages():
    rows = steady_history(recent_runs=0)
    for k in range(3):
        rows += run_rows(f"hot-{k}", ended_at=NOW - dt.timedelta(minutes=10 + k),
                         durations={**BASE_DURATIONS, "ai_parsing": 25.0, "shopify_sync": 5.0})
    slow = slow_stages(frame(rows), now=NOW)
    assert [s["stage"] for s in slow] == ["ai_parsing"]  # shopify_sync 5/3 = 1.7× is under the factor
    assert slow[0]["factor"] == pytest.approx(2.5)
    assert slow[0]["recent_p50_s"] == 25.0 and slow[0]["baseline_median_s"] == 10.0 and slow[0]["runs"] == 3
    lenient = slow_stages(frame(rows), now=NOW, factor=1.5)
    # end_to_end: 37.6 s vs 20.6 s (1.8×); shopify_sync 1.7×; ordered by factor.
    assert [s["stage"] for s in lenient] == ["ai_parsing", "end_to_end", "shopify_sync"]
    # Two hours later the hot runs are outside the recent hour.
    assert slow_stages(frame(rows), now=NOW + dt.timedelta(hours=2)) == []
    assert slow_stages(frame([]), now=NOW) == []
