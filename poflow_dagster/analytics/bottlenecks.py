"""Where the time goes and what changed: a ranked bottleneck report with a cause and a setting to turn.

Contribution ranks stages by their share of the slowest runs' time (the tail, end-to-end ≥ its p90).
The trend factor compares the recent window's p95 with the median of the baseline before it; the cause is
read from the signals the stages recorded (LLM wall time per window — the extraction's windows run in
parallel, so this is wall time, not LLM compute —, windows/pages/lines per run, Shopify throttled seconds),
and the recommendation names a real setting.

Only stages that did their work count: ``skipped`` and ``reused`` stages (near-zero seconds) are left out.
The tail is chosen by first runs' ``end_to_end`` (the PO's own clock from its upload). A stage whose usual
time is ~0 s (``MIN_BASELINE_S``) has no trend factor: a ratio to ~0 means nothing and would be infinite.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from poflow_dagster.analytics.frame import (
    KIND_OF,
    finite_or_none,
    first_run_clock,
    in_window,
    po_view,
    prepare_frame,
    run_ended_at,
    stage_sort_key,
    worked,
)
from poflow_dagster.analytics.timeline import SIDE_STAGES

#: Fewer runs than this on either side of the trend: no factor ("not enough history").
MIN_HISTORY = 5
CRITICAL, WARNING = 3.0, 2.0
#: A baseline (usual p95 or median) at or under this many seconds gives no trend factor (no ratio to ~0).
MIN_BASELINE_S = 0.01
#: A signal that moved less than this ratio did not cause anything.
SIGNAL_MOVED = 1.25
BOTTLENECK_COLUMNS = [
    "rank",
    "stage",
    "kind",
    "runs",
    "p95_s",
    "contribution",
    "factor",
    "severity",
    "cause",
    "recommendation",
    "message",
]

RECOMMENDATIONS: dict[str, str] = {
    "llm_latency": "raise POFLOW_LLM_CONCURRENCY (windows are sent in parallel) or choose a faster POFLOW_LLM_MODEL",
    "llm_size": "raise POFLOW_LLM_WINDOW_CHARS (fewer, larger LLM windows) and POFLOW_LLM_CONCURRENCY",
    "shopify_throttle": "the Shopify plan's restore rate is the limit: a higher plan restores faster; "
    "send large POs through a bulk path (bulkOperationRunMutation)",
    "shopify_size": "large POs cost many Shopify requests: send them through a bulk path (bulkOperationRunMutation)",
    "shopify_latency": "Shopify time grows with SKUs: a bulk path (bulkOperationRunMutation) batches large POs; "
    "the plan's restore rate caps the request rate",
    "queue": "the run queue is full: raise dagster.yaml run_queue.max_concurrent_runs (or add run workers)",
    "launch": "every run starts a new worker process: long-lived run workers (CeleryRunLauncher, issue 9) skip it",
    "database": "use PostgreSQL via POFLOW_DATABASE_URL (SQLite serialises writers)",
    "sensor": "submit the run directly at upload (upload_sensor is only the safety net) or lower the sensor interval",
    "checks": "asset checks and teardown: keep shopify_matches_drafts batched; PostgreSQL via POFLOW_DATABASE_URL",
    "images": "images are the PO run's last step, after the PO is marked completed: they never hold it back; "
    "no action for the PO ETA",
}
_DATABASE_STAGES = {"database_save", "product_draft_creation", "status_update"}


@dataclass(frozen=True)
class Cause:
    """Why a stage is slow (or slower than before) and the setting that addresses it."""

    text: str
    recommendation: str


def bottleneck_report(
    df: pd.DataFrame,
    *,
    now: dt.datetime,
    window: dt.timedelta = dt.timedelta(days=7),
    recent: dt.timedelta = dt.timedelta(days=1),
) -> pd.DataFrame:
    """Stages (waits and checks included, ``end_to_end`` not) ranked by their share of the slowest runs' time,
    each with its trend factor (recent p95 / baseline median), severity, cause, recommendation and a message.

    Runs that ended in ``(now - window, now]``; only stages that did their work (not ``skipped``/``reused``).
    ``factor`` and ``severity`` are ``None`` without a trend: too little history, or a baseline of ~0 s."""
    data = _worked_rows(df, start=now - window, end=now)
    if data.empty:
        return pd.DataFrame(columns=BOTTLENECK_COLUMNS)
    contributions = tail_contributions(data)
    recent_start = now - recent
    baseline_days = max((window - recent).total_seconds() / 86400, 0)
    rows = []
    for stage, rows_of_stage in data[data["stage"] != "end_to_end"].groupby("stage", sort=False):
        recent_rows = rows_of_stage[rows_of_stage["_run_end"] > pd.Timestamp(recent_start)]
        base_rows = rows_of_stage[rows_of_stage["_run_end"] <= pd.Timestamp(recent_start)]
        contribution = contributions.get(str(stage), 0.0)
        rows.append(_stage_row(str(stage), rows_of_stage, recent_rows, base_rows, contribution, baseline_days, recent))
    out = pd.DataFrame(rows, columns=[c for c in BOTTLENECK_COLUMNS if c != "rank"])
    out = out.assign(_order=stage_sort_key(out["stage"]))
    out = out.sort_values(["contribution", "_order"], ascending=[False, True], kind="stable")
    out.insert(0, "rank", range(1, len(out) + 1))
    out = finite_or_none(out[BOTTLENECK_COLUMNS].reset_index(drop=True), ["p95_s", "contribution", "factor"])
    severity = out["severity"].astype(object)
    out["severity"] = severity.where(severity.notna(), None)  # pandas 3 would make a missing str NaN
    return out


def _worked_rows(df: pd.DataFrame, *, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """The PO-journey rows of the runs that ended in ``(start, end]`` that did their work (a duration, not
    ``skipped``/``reused``); ``end_to_end`` from first runs only. ``_run_end``: when each row's run ended."""
    data = po_view(in_window(prepare_frame(df), start, end))
    data = data[worked(data) & ((data["stage"] != "end_to_end") | data["first_run"])]
    return data.assign(_run_end=run_ended_at(data))


def tail_contributions(data: pd.DataFrame, *, tail_quantile: float = 0.9) -> dict[str, float]:
    """Per stage: mean stage seconds / mean end-to-end seconds among the slowest runs (the top
    ``1 - tail_quantile`` of first runs by end-to-end time — the PO's clock from upload —, at least one).
    Stages absent from a tail run count as 0 s there; skipped and reused stages count as absent. Side stages
    (images) are no part of ``end_to_end`` and so contribute nothing."""
    data = data[worked(data) & first_run_clock(data)]
    totals = data[data["stage"] == "end_to_end"].groupby("run_id")["duration_s"].sum()
    if totals.empty:
        return {}
    tail_size = max(1, int(np.ceil(len(totals) * (1 - tail_quantile) - 1e-9)))
    tail_runs = totals.sort_values(ascending=False, kind="stable").iloc[:tail_size]
    mean_total = float(tail_runs.mean())
    if mean_total <= 0:
        return {}
    tail = data[data["run_id"].isin(tail_runs.index) & (data["stage"] != "end_to_end")
                & ~data["stage"].isin(SIDE_STAGES)]
    per_stage = tail.groupby("stage")["duration_s"].sum() / len(tail_runs)
    return {str(stage): float(seconds / mean_total) for stage, seconds in per_stage.items()}


def _stage_row(
    stage: str,
    rows: pd.DataFrame,
    recent_rows: pd.DataFrame,
    base_rows: pd.DataFrame,
    contribution: float,
    baseline_days: float,
    period: dt.timedelta,
) -> dict:
    p95 = float(np.percentile(rows["duration_s"], 95))
    enough = len(recent_rows) >= MIN_HISTORY and len(base_rows) >= MIN_HISTORY
    factor, near_zero = None, False
    if enough:
        baseline = baseline_p95_median(base_rows, period)
        recent_p95 = float(np.percentile(recent_rows["duration_s"], 95))
        near_zero = not baseline > MIN_BASELINE_S
        factor = None if near_zero else recent_p95 / baseline
    severity = _severity(factor)
    if near_zero:
        cause = Cause("no trend: its usual time is ~0 s", _default_cause(stage).recommendation)
    elif enough:
        cause = stage_cause(stage, recent_rows, base_rows)
    else:
        cause = Cause("not enough history", _default_cause(stage).recommendation)
    return {
        "stage": stage,
        "kind": rows["kind"].iloc[0] or KIND_OF.get(stage),
        "runs": len(rows),
        "p95_s": p95,
        "contribution": contribution,
        "factor": factor,
        "severity": severity,
        "cause": cause.text,
        "recommendation": cause.recommendation,
        "message": _message(stage, p95, contribution, factor, severity, cause, baseline_days),
    }


def baseline_p95_median(base_rows: pd.DataFrame, period: dt.timedelta, *, min_rows: int = 3) -> float:
    """The stage's usual p95: the median of its p95 per ``period`` (e.g. per day) over the baseline, so a stage
    whose durations are naturally spread (by PO size) is compared with its own usual tail, not its median.
    Periods with fewer than ``min_rows`` rows are skipped; with none left, the baseline's overall p95."""
    seconds = period.total_seconds() or 86400.0
    latest = base_rows["ended_at"].max()
    buckets = ((latest - base_rows["ended_at"]).dt.total_seconds() // seconds).astype(int)
    per_period = base_rows.groupby(buckets)["duration_s"].agg(["size", lambda v: float(np.percentile(v, 95))])
    per_period.columns = ["size", "p95"]
    usable = per_period[per_period["size"] >= min_rows]["p95"]
    return float(usable.median()) if len(usable) else float(np.percentile(base_rows["duration_s"], 95))


def _severity(factor: float | None) -> str | None:
    """``critical`` (≥ 3×), ``warning`` (≥ 2×), ``ok``; ``None`` when there is no trend factor to judge."""
    if factor is None:
        return None
    if factor >= CRITICAL:
        return "critical"
    if factor >= WARNING:
        return "warning"
    return "ok"


def _message(
    stage: str, p95: float, contribution: float, factor: float | None, severity: str, cause: Cause, days: float
) -> str:
    share = f"{contribution:.0%} of the slowest runs' time"
    if factor is None:
        return f"{stage} p95 {p95:.1f} s, {share} ({cause.text}) — {cause.recommendation}"
    trend = f"{stage} p95 is {factor:.1f}× its {days:g}-day median"
    if severity == "ok":
        return f"{trend}, {share} ({cause.text})"
    return f"{trend} ({cause.text}) — {cause.recommendation}"


def _ratio(recent: float | None, base: float | None) -> float | None:
    if recent is None or base is None or not np.isfinite(recent) or not np.isfinite(base) or base <= 0:
        return None
    return recent / base


def _per(rows: pd.DataFrame, numerator: str, denominator: str) -> float | None:
    both = rows[rows[numerator].notna() & rows[denominator].notna()]
    total = float(both[denominator].sum())
    return float(both[numerator].sum()) / total if total > 0 else None


def _mean(rows: pd.DataFrame, column: str) -> float | None:
    values = rows[column].dropna()
    return float(values.mean()) if len(values) else None


def _size_moved(recent: pd.DataFrame, base: pd.DataFrame, columns: list[str]) -> tuple[str, float, float, float] | None:
    """The size signal (per run) that grew most, if it grew by at least ``SIGNAL_MOVED``."""
    best = None
    for column in columns:
        now_value, before = _mean(recent, column), _mean(base, column)
        ratio = _ratio(now_value, before)
        if ratio is not None and ratio >= SIGNAL_MOVED and (best is None or ratio > best[1]):
            best = (column, ratio, now_value, before)
    return best


_SIZE_LABEL = {"llm_windows": "LLM windows", "pages": "pages", "lines": "lines", "skus": "SKUs"}


def _bigger(size: tuple[str, float, float, float]) -> str:
    column, _ratio_value, now_value, before = size
    return f"bigger documents: {now_value:.1f} {_SIZE_LABEL.get(column, column)} per run vs {before:.1f}"


def stage_cause(stage: str, recent: pd.DataFrame, base: pd.DataFrame) -> Cause:
    """The recorded signal that explains the recent window against the baseline, per stage."""
    if stage == "ai_parsing":
        return _parsing_cause(recent, base)
    if stage == "shopify_sync":
        return _shopify_cause(recent, base)
    if stage in _DATABASE_STAGES:
        size = _size_moved(recent, base, ["lines", "skus"])
        if size is not None:
            return Cause(f"database time, {_bigger(size)}", RECOMMENDATIONS["database"])
    return _default_cause(stage)


def _default_cause(stage: str) -> Cause:
    key = {
        "ai_parsing": ("LLM time", "llm_latency"),
        "shopify_sync": ("Shopify API time", "shopify_latency"),
        "queue_wait": ("queue wait: runs waiting for a free run-queue slot", "queue"),
        "launch_wait": ("launch wait: run-worker process start", "launch"),
        "sensor_wait": ("sensor interval: upload received → run created", "sensor"),
        "checks": ("asset checks and teardown", "checks"),
        "image_attachment": ("image fetching", "images"),
    }.get(stage)
    if key is None:
        key = ("database time", "database") if stage in _DATABASE_STAGES else ("no recorded signal moved", "database")
    return Cause(key[0], RECOMMENDATIONS[key[1]])


def _parsing_cause(recent: pd.DataFrame, base: pd.DataFrame) -> Cause:
    latency_now, latency_before = _per(recent, "llm_seconds", "llm_windows"), _per(base, "llm_seconds", "llm_windows")
    latency = _ratio(latency_now, latency_before)
    size = _size_moved(recent, base, ["llm_windows", "pages", "lines"])
    if latency is not None and latency >= SIGNAL_MOVED and (size is None or latency >= size[1]):
        text = f"LLM latency: {latency_now:.1f} s LLM wall time per window vs {latency_before:.1f} s"
        return Cause(text, RECOMMENDATIONS["llm_latency"])
    if size is not None:
        return Cause(_bigger(size), RECOMMENDATIONS["llm_size"])
    return _default_cause("ai_parsing")


def _shopify_cause(recent: pd.DataFrame, base: pd.DataFrame) -> Cause:
    share_now = _per(recent, "shopify_throttled_s", "duration_s") or 0.0
    share_before = _per(base, "shopify_throttled_s", "duration_s") or 0.0
    if share_now >= 0.2 and share_now >= SIGNAL_MOVED * share_before:
        text = f"Shopify throttling: {share_now:.0%} of shopify_sync time throttled vs {share_before:.0%}"
        return Cause(text, RECOMMENDATIONS["shopify_throttle"])
    size = _size_moved(recent, base, ["skus", "shopify_points", "lines"])
    if size is not None:
        return Cause(_bigger(size), RECOMMENDATIONS["shopify_size"])
    return _default_cause("shopify_sync")


def slow_stages(
    df: pd.DataFrame,
    *,
    now: dt.datetime,
    factor: float = 2.0,
    recent: dt.timedelta = dt.timedelta(hours=1),
    baseline: dt.timedelta = dt.timedelta(days=7),
    min_recent: int = 3,
) -> list[dict]:
    """Stages whose recent p50 exceeds ``factor`` × their baseline median (for a warning asset check).

    Recent = runs that ended in ``(now - recent, now]``; baseline = the ``baseline`` before that. A stage needs
    ``min_recent`` recent runs and ``MIN_HISTORY`` baseline runs to be judged, and a baseline median above
    ``MIN_BASELINE_S`` (a ratio to ~0 s means nothing). Skipped and reused stages are not runs of the stage;
    ``end_to_end`` is judged on first runs (the PO's clock from upload). Every factor is finite."""
    data = _worked_rows(df, start=now - recent - baseline, end=now)
    cut = pd.Timestamp(now - recent)
    found = []
    for stage, rows in data.groupby("stage", sort=False):
        recent_rows, base_rows = rows[rows["_run_end"] > cut], rows[rows["_run_end"] <= cut]
        if len(recent_rows) < min_recent or len(base_rows) < MIN_HISTORY:
            continue
        recent_p50, base_median = float(recent_rows["duration_s"].median()), float(base_rows["duration_s"].median())
        if base_median > MIN_BASELINE_S and recent_p50 > factor * base_median:
            ratio = recent_p50 / base_median
            found.append(
                {
                    "stage": str(stage),
                    "recent_p50_s": recent_p50,
                    "baseline_median_s": base_median,
                    "factor": ratio,
                    "runs": len(recent_rows),
                }
            )
    return sorted(found, key=lambda item: -item["factor"])
