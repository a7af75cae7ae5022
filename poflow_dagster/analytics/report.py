"""The analytics report as one JSON-ready dict (``poflow report --format json``): stage performance, waits,
checks, end-to-end, bottlenecks, merchant health (per merchant, and the total apart) and the ETA's measured
accuracy. Its keys are a stable contract."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd

from poflow_dagster.analytics.bottlenecks import bottleneck_report
from poflow_dagster.analytics.eta import backtest_eta
from poflow_dagster.analytics.frame import in_window, load_stage_runs, load_workflow_states
from poflow_dagster.analytics.live_eta import load_model, model_basis
from poflow_dagster.analytics.merchants import merchant_health_parts
from poflow_dagster.analytics.performance import stage_performance
from poflow_dagster.store.db import Database

#: History the ETA part fits and backtests on (at least; more if the report's window is longer).
ETA_HISTORY = dt.timedelta(days=30)
STAGE_FIELDS = ["stage", "runs", "skipped", "reused", "p50_s", "p90_s", "p95_s", "share", "throughput_items_per_s",
                "failure_rate", "retry_rate"]
BOTTLENECK_FIELDS = ["stage", "severity", "factor", "cause", "recommendation", "message"]
MERCHANT_FIELDS = ["merchant_id", "uploads", "runs", "success_rate", "avg_s", "p95_s", "failed", "stuck",
                   "needs_review_share"]
ETA_FIELDS = ["n", "within_15s", "within_15pct", "mae_s", "baseline_within_15s", "baseline_within_15pct",
              "baseline_mae_s"]


def clean(value: Any) -> Any:
    """A JSON-ready scalar: NaN/NaT → None, numpy → Python, floats rounded to 3 places, times ISO 8601."""
    if value is None:
        return None
    if isinstance(value, (dt.datetime, pd.Timestamp)):
        return None if pd.isna(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 3)
    if isinstance(value, (int, str)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def records(df: pd.DataFrame, fields: list[str]) -> list[dict[str, Any]]:
    """``df``'s rows as dicts of ``fields`` (missing columns → None), every value ``clean``."""
    return [{name: clean(row.get(name)) for name in fields} for row in df.to_dict("records")]


def recent_period(window: dt.timedelta) -> dt.timedelta:
    """The trend's recent period: a day, or a quarter of a window of two days or less."""
    return dt.timedelta(days=1) if window > dt.timedelta(days=2) else window / 4


def build_report(
    db: Database,
    *,
    now: dt.datetime,
    since: dt.timedelta | dt.datetime = dt.timedelta(days=7),
    merchant_id: str | None = None,
) -> dict[str, Any]:
    """Everything the analytics know about ``(since, now]`` (``since`` a datetime, or a span before ``now``),
    optionally for one merchant. Stable keys: ``generated_at, window, stages, waits`` (sensor, queue and launch
    waits), ``checks`` (asset checks and teardown), ``end_to_end`` (first runs: the PO's clock from upload),
    ``bottlenecks, merchants`` (one row per merchant), ``merchants_total`` (the same numbers over all of them),
    ``eta`` (backtest scores, and the basis of the stored model the live ETA uses); floats rounded to 3
    places, missing numbers ``null``; ``json.dumps`` works as is."""
    start = now - since if isinstance(since, dt.timedelta) else since
    window = now - start
    history = load_stage_runs(db, since=min(start, now - ETA_HISTORY), until=now, merchant_id=merchant_id)
    current = in_window(history, start, now)
    perf = stage_performance(current, now=now, window=window, slices=())
    bottlenecks = bottleneck_report(current, now=now, window=window, recent=recent_period(window))
    workflows = load_workflow_states(db, merchant_id=merchant_id, since=start)
    health = merchant_health_parts(current, workflows, now=now, window=window)
    return {
        "generated_at": clean(pd.Timestamp(now)),
        "window": {"since": clean(pd.Timestamp(start)), "until": clean(pd.Timestamp(now))},
        "stages": records(perf[perf["kind"] == "stage"], STAGE_FIELDS),
        "waits": records(perf[perf["kind"] == "wait"], STAGE_FIELDS),
        "checks": records(perf[perf["kind"] == "check"], STAGE_FIELDS),
        "end_to_end": _end_to_end(perf),
        "bottlenecks": records(bottlenecks, BOTTLENECK_FIELDS),
        "merchants": records(health.merchants, MERCHANT_FIELDS),
        "merchants_total": {name: clean(health.total.get(name)) for name in MERCHANT_FIELDS[1:]},
        "eta": _eta(db, history, now=now),
    }


def _end_to_end(perf: pd.DataFrame) -> dict[str, Any]:
    rows = perf[perf["stage"] == "end_to_end"]
    if rows.empty:
        return {"runs": 0, "p50_s": None, "p90_s": None, "p95_s": None}
    row = rows.iloc[0]
    return {name: clean(row[name]) for name in ["runs", "p50_s", "p90_s", "p95_s"]}


def _eta(db: Database, history: pd.DataFrame, *, now: dt.datetime) -> dict[str, Any]:
    """The backtest's scores on the last ``ETA_HISTORY`` and the basis of the stored ``model:eta`` — the model
    the live ETA uses (``DEFAULT_MODEL``'s basis when none is stored yet), not a model fitted here."""
    recent = in_window(history, now - ETA_HISTORY, now)
    scores = backtest_eta(recent, now=now).as_dict()
    out = {name: clean(scores.get(name)) for name in ETA_FIELDS}
    out["basis"] = model_basis(load_model(db, max_age_s=0))
    return out
