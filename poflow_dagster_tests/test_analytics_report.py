"""analytics.report and charts: build_report's stable JSON contract on SQLite and PostgreSQL (rows inserted in
stage_runs, real workflow rows), and every chart writes a PNG, also with no data."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from poflow_dagster.analytics import charts
from poflow_dagster.analytics.bottlenecks import bottleneck_report
from poflow_dagster.analytics.eta import backtest_eta
from poflow_dagster.analytics.merchants import merchant_health
from poflow_dagster.analytics.performance import stage_performance
from poflow_dagster.analytics.report import build_report, clean
from poflow_dagster_tests.test_analytics_eta import size_history
from poflow_dagster_tests.test_analytics_frame import NOW, frame, insert_stage_runs, run_rows
from poflow_dagster_tests.test_analytics_merchants import add_workflow

STAGE_KEYS = {"stage", "runs", "p50_s", "p90_s", "p95_s", "share", "throughput_items_per_s", "failure_rate",
              "retry_rate"}


def _assert_rounded(value):
    if isinstance(value, float):
        assert round(value, 3) == value
    elif isinstance(value, dict):
        for item in value.values():
            _assert_rounded(item)
    elif isinstance(value, list):
        for item in value:
            _assert_rounded(item)


def test_build_report_contract(db):
    rows = size_history(150, days=20)
    rows += run_rows("failed", ended_at=NOW - dt.timedelta(hours=2), merchant_id="m9", run_status="failure",
                     extra={"shopify_sync": {"outcome": "failed"}})
    insert_stage_runs(db, rows)
    add_workflow(db, "m0", "processing", updated_at=NOW - dt.timedelta(hours=2))
    add_workflow(db, "m1", "needs_review", updated_at=NOW - dt.timedelta(hours=2))

    report = build_report(db, now=NOW)
    text = json.dumps(report)  # no default= needed
    assert json.loads(text) == report
    assert set(report) == {"generated_at", "window", "stages", "waits", "end_to_end", "bottlenecks", "merchants",
                           "eta"}
    assert report["generated_at"] == "2026-12-01T21:00:00+00:00"
    assert report["window"] == {"since": "2026-11-24T21:00:00+00:00", "until": "2026-12-01T21:00:00+00:00"}
    assert [s["stage"] for s in report["stages"]] == ["ai_parsing", "database_save", "product_draft_creation",
                                                      "shopify_sync", "status_update"]
    assert [w["stage"] for w in report["waits"]] == ["sensor_wait", "queue_wait", "launch_wait", "checks"]
    assert all(set(item) == STAGE_KEYS for item in report["stages"] + report["waits"])
    in_window = 1 + sum(1 for r in rows if r["stage"] == "end_to_end" and r["ended_at"] > NOW - dt.timedelta(days=7)
                        and r["run_id"] != "failed")
    assert report["end_to_end"]["runs"] == in_window
    assert set(report["end_to_end"]) == {"runs", "p50_s", "p90_s", "p95_s"}
    sync = next(s for s in report["stages"] if s["stage"] == "shopify_sync")
    assert sync["failure_rate"] == round(1 / in_window, 3)
    assert report["bottlenecks"] and all(
        set(b) == {"stage", "severity", "factor", "cause", "recommendation", "message"} for b in report["bottlenecks"]
    )
    merchants = {m["merchant_id"]: m for m in report["merchants"]}
    assert set(merchants) == {"m0", "m1", "m2", "m9", "all"}
    assert merchants["m9"]["failed"] == 1 and merchants["m9"]["success_rate"] == 0.0
    assert merchants["all"]["stuck"] == 1
    assert merchants["m1"]["needs_review_share"] == 1.0
    assert set(report["eta"]) == {"n", "within_15s", "within_15pct", "mae_s", "baseline_within_15s",
                                  "baseline_within_15pct", "baseline_mae_s", "basis"}
    assert report["eta"]["n"] > 0 and report["eta"]["basis"].startswith("eta_model fitted on")
    _assert_rounded(report)

    one = build_report(db, now=NOW, since=NOW - dt.timedelta(days=1), merchant_id="m9")
    assert one["window"]["since"] == "2026-11-30T21:00:00+00:00"
    assert one["end_to_end"]["runs"] == 1
    assert {m["merchant_id"] for m in one["merchants"]} == {"m9", "all"}


def test_build_report_on_an_empty_database(db):
    report = build_report(db, now=NOW)
    json.dumps(report)
    assert report["stages"] == [] and report["waits"] == [] and report["bottlenecks"] == []
    assert report["end_to_end"] == {"runs": 0, "p50_s": None, "p90_s": None, "p95_s": None}
    assert report["merchants"][-1]["merchant_id"] == "all"
    assert report["eta"]["n"] == 0 and report["eta"]["within_15s"] is None
    assert "defaults" in report["eta"]["basis"]


def test_clean_values():
    assert clean(float("nan")) is None and clean(None) is None and clean(pd.NaT) is None
    assert clean(1.23456) == 1.235 and clean(pd.Series([2.0]).iloc[0]) == 2.0 and clean(True) is True
    assert isinstance(clean(pd.Series([3]).iloc[0]), int)


@pytest.mark.parametrize("empty", [True, False])
def test_charts_write_pngs(tmp_path, empty):
    df = frame([]) if empty else frame(size_history(80, days=7))
    perf = stage_performance(df, now=NOW)
    report = bottleneck_report(df, now=NOW)
    health = merchant_health(df, pd.DataFrame(), now=NOW)
    backtest = backtest_eta(df)
    paths = [
        charts.stage_duration_chart(perf, tmp_path / "perf.png"),
        charts.bottleneck_chart(report, tmp_path / "bottlenecks.png"),
        charts.eta_backtest_chart(backtest, tmp_path / "eta.png"),
        charts.merchant_chart(health, tmp_path / "merchants.png"),
    ]
    for path in paths:
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
