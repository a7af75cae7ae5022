"""analytics.report and charts: build_report's stable JSON contract on SQLite and PostgreSQL (rows inserted in
stage_runs, real workflow rows), and every chart writes a PNG, also with no data."""

from __future__ import annotations

import datetime as dt
import json
import math

import pandas as pd
import pytest

from poflow_dagster.analytics import charts
from poflow_dagster.analytics.bottlenecks import bottleneck_report, slow_stages
from poflow_dagster.analytics.eta import backtest_eta, fit_eta_model
from poflow_dagster.analytics.live_eta import MODEL_STATE, clear_model_cache
from poflow_dagster.analytics.merchants import merchant_health, merchant_health_parts
from poflow_dagster.analytics.performance import stage_performance
from poflow_dagster.analytics.report import build_report, clean
from poflow_dagster_tests.test_analytics_eta import size_history
from poflow_dagster.store.analytics_state import save_json
from poflow_dagster_tests.test_analytics_frame import BASE_DURATIONS, NOW, frame, insert_stage_runs, run_rows
from poflow_dagster_tests.test_analytics_merchants import add_workflow

STAGE_KEYS = {"stage", "runs", "skipped", "reused", "p50_s", "p90_s", "p95_s", "share", "throughput_items_per_s",
              "failure_rate", "retry_rate"}


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

    # The stored model the live ETA uses (fitted on other data than the report would fit): its basis is shown.
    stored = fit_eta_model(frame(size_history(40, days=20, seed=11)), now=NOW - dt.timedelta(days=3))
    save_json(db, MODEL_STATE, stored.to_json())
    clear_model_cache()

    report = build_report(db, now=NOW)
    text = json.dumps(report)  # no default= needed
    assert json.loads(text) == report
    assert set(report) == {"generated_at", "window", "stages", "waits", "checks", "end_to_end", "bottlenecks",
                           "merchants", "merchants_total", "eta"}
    assert report["generated_at"] == "2026-12-01T21:00:00+00:00"
    assert report["window"] == {"since": "2026-11-24T21:00:00+00:00", "until": "2026-12-01T21:00:00+00:00"}
    assert [s["stage"] for s in report["stages"]] == ["ai_parsing", "database_save", "product_draft_creation",
                                                      "shopify_sync", "status_update"]
    assert [w["stage"] for w in report["waits"]] == ["sensor_wait", "queue_wait", "launch_wait"]
    assert [c["stage"] for c in report["checks"]] == ["checks"]
    assert all(set(item) == STAGE_KEYS for item in report["stages"] + report["waits"] + report["checks"])
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
    assert set(merchants) == {"m0", "m1", "m2", "m9"}
    assert merchants["m9"]["failed"] == 1 and merchants["m9"]["success_rate"] == 0.0
    total = report["merchants_total"]
    assert set(total) == {"uploads", "runs", "success_rate", "avg_s", "p95_s", "failed", "stuck",
                          "needs_review_share"}
    assert total["stuck"] == 1 and total["failed"] == 1 and total["runs"] == in_window
    assert merchants["m1"]["needs_review_share"] == 1.0
    assert set(report["eta"]) == {"n", "within_15s", "within_15pct", "mae_s", "baseline_within_15s",
                                  "baseline_within_15pct", "baseline_mae_s", "basis"}
    assert report["eta"]["n"] > 0 and report["eta"]["basis"] == stored.basis
    assert stored.basis != fit_eta_model(frame(rows), now=NOW).basis  # not a model fitted for the report
    _assert_rounded(report)

    one = build_report(db, now=NOW, since=NOW - dt.timedelta(days=1), merchant_id="m9")
    assert one["window"]["since"] == "2026-11-30T21:00:00+00:00"
    assert one["end_to_end"]["runs"] == 1
    assert {m["merchant_id"] for m in one["merchants"]} == {"m9"} and one["merchants_total"]["runs"] == 1


def test_build_report_on_an_empty_database(db):
    report = build_report(db, now=NOW)
    json.dumps(report)
    assert report["stages"] == [] and report["waits"] == [] and report["bottlenecks"] == []
    assert report["end_to_end"] == {"runs": 0, "p50_s": None, "p90_s": None, "p95_s": None}
    assert report["merchants"] == [] and report["checks"] == []
    assert report["merchants_total"]["runs"] == 0 and report["merchants_total"]["success_rate"] is None
    assert report["eta"]["n"] == 0 and report["eta"]["within_15s"] is None
    clear_model_cache()
    assert build_report(db, now=NOW)["eta"]["basis"] == "defaults: no history yet"  # DEFAULT_MODEL's


def _awkward_history() -> list[dict]:
    """History that used to breed NaN and inf: a ~0 s baseline, a stage only ever skipped, a continuation,
    a run with no end_to_end, a merchant with workflows only."""
    rows, skipped_sync = [], {"shopify_sync": {"outcome": "skipped"}}
    for day in range(1, 7):
        for k in range(6):
            rows += run_rows(f"d{day}-{k}", ended_at=NOW - dt.timedelta(days=day, hours=k),
                             durations={**BASE_DURATIONS, "sensor_wait": 0.0},
                             extra=skipped_sync)
    for k in range(6):
        rows += run_rows(f"now-{k}", ended_at=NOW - dt.timedelta(minutes=5 + k),
                         durations={**BASE_DURATIONS, "sensor_wait": 0.3}, extra=skipped_sync)
    rows += run_rows("cont", ended_at=NOW - dt.timedelta(minutes=2), first_run=False, upload_id="up-now-0",
                     durations={"ai_parsing": 0.0}, extra={"ai_parsing": {"outcome": "reused", "items": 50}})
    cut = run_rows("cut", ended_at=NOW - dt.timedelta(hours=3), extra=skipped_sync)
    rows += [r for r in cut if r["stage"] != "end_to_end"]
    return rows


def _assert_finite(value, where=""):
    if isinstance(value, float):
        assert math.isfinite(value), where
    elif isinstance(value, dict):
        for key, item in value.items():
            _assert_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _assert_finite(item, f"{where}[{i}]")


def test_no_nan_or_inf_leaves_any_output(db):
    rows = _awkward_history()
    df = frame(rows)
    workflows = pd.DataFrame({"upload_id": ["w1"], "merchant_id": ["quiet"], "status": ["processing"],
                              "updated_at": [NOW], "created_at": [NOW]})
    outputs = {
        "performance": stage_performance(df, now=NOW).to_dict("records"),
        "bottlenecks": bottleneck_report(df, now=NOW).to_dict("records"),
        "merchant_health": merchant_health(df, workflows, now=NOW).to_dict("records"),
        "merchants": merchant_health_parts(df, workflows, now=NOW).merchants.to_dict("records"),
        "merchants_total": merchant_health_parts(df, workflows, now=NOW).total,
        "slow_stages": slow_stages(df, now=NOW, recent=dt.timedelta(minutes=30)),
    }
    for name, value in outputs.items():
        _assert_finite(value, name)
    bottlenecks = {row["stage"]: row for row in outputs["bottlenecks"]}
    assert bottlenecks["sensor_wait"]["factor"] is None  # 0 s baseline, 0.3 s now
    sync = next(r for r in outputs["performance"] if r["slice"] == "all" and r["stage"] == "shopify_sync")
    assert sync["runs"] == 0 and sync["skipped"] == 43 and sync["p50_s"] is None
    insert_stage_runs(db, rows)
    report = build_report(db, now=NOW)
    _assert_finite(report, "report")
    json.dumps(report, allow_nan=False)


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
