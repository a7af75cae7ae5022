"""Stage performance: how long each stage, wait and the whole PO journey take, overall and per slice.

Durations, percentiles and throughput count only stages that did their work: a ``skipped`` stage (Shopify
sync off, a PO held for review) or a ``reused`` one (a continuation reusing an earlier parse) is counted in
its own ``skipped``/``reused`` column instead. ``end_to_end`` is measured on first runs only — the PO's own
clock from its upload; a continuation or re-execution run's ``end_to_end`` starts at its own creation, so
mixing the two would blend two clocks. Shares use the same first-run rows on both sides of the fraction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd

from poflow_dagster.analytics.frame import (
    NOT_WORKED_OUTCOMES,
    finite_or_none,
    first_run_clock,
    in_window,
    po_view,
    prepare_frame,
    stage_sort_key,
    worked,
)

PERFORMANCE_COLUMNS = [
    "slice",
    "slice_value",
    "stage",
    "kind",
    "runs",
    "skipped",
    "reused",
    "p50_s",
    "p90_s",
    "p95_s",
    "mean_s",
    "share",
    "throughput_items_per_s",
    "failure_rate",
    "retry_rate",
]
DEFAULT_SLICES = ("source_format", "merchant_id", "size_bucket")
#: Columns that may have no value (no runs, no items, no end-to-end time): ``None``, never NaN or inf.
NULLABLE_COLUMNS = ["p50_s", "p90_s", "p95_s", "mean_s", "share", "throughput_items_per_s", "failure_rate",
                    "retry_rate"]


#: Stage outcomes that count as a failure (``interrupted``: the run ended while the stage was running).
FAILED_OUTCOMES = ("failed", "interrupted")


def failed_mask(df: pd.DataFrame) -> pd.Series:
    """Rows where the work failed: the stage's outcome is ``failed`` or ``interrupted``; for ``end_to_end`` the
    run failed; for a wait or check with no outcome, an error code was recorded."""
    outcome_failed = df["outcome"].isin(FAILED_OUTCOMES)
    run_failed = (df["kind"] == "total") & (df["run_status"] == "failure")
    unexplained = df["outcome"].isna() & df["error_code"].notna()
    return outcome_failed | run_failed | unexplained


def stage_performance(
    df: pd.DataFrame,
    *,
    now: dt.datetime,
    window: dt.timedelta = dt.timedelta(days=7),
    slices: Sequence[str] = DEFAULT_SLICES,
) -> pd.DataFrame:
    """Per stage (waits, checks and ``end_to_end`` included): runs, skipped and reused counts, p50/p90/p95/mean
    seconds, share of the end-to-end time, throughput, failure and retry rates — for all runs (``slice``
    ``all``) and per value of each slice (source format, merchant, PO size). The runs that ended in
    ``(now - window, now]``.

    ``runs`` and every statistic count only rows that did their work (not ``skipped``/``reused``);
    ``end_to_end`` counts first runs only (the PO's clock from its upload), and ``share`` is a stage's seconds
    over the end-to-end seconds of those same first runs. Missing numbers are ``None``."""
    data = po_view(in_window(prepare_frame(df), now - window, now))
    data = data[data["duration_s"].notna() | data["outcome"].isin(NOT_WORKED_OUTCOMES)]
    data = data[(data["stage"] != "end_to_end") | data["first_run"]]
    parts = [_slice_stats(data.assign(slice="all", slice_value="all"))]
    for name in slices:
        values = data[name].astype(object).where(data[name].notna(), "unknown").astype(str)
        parts.append(_slice_stats(data.assign(slice=name, slice_value=values)))
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=PERFORMANCE_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    slice_rank = {name: i for i, name in enumerate(["all", *slices])}
    out = out.assign(_slice=out["slice"].map(slice_rank), _stage=stage_sort_key(out["stage"]))
    out = out.sort_values(["_slice", "slice_value", "_stage", "stage"], kind="stable")
    return finite_or_none(out[PERFORMANCE_COLUMNS].reset_index(drop=True), NULLABLE_COLUMNS)


def _slice_stats(data: pd.DataFrame) -> pd.DataFrame:
    if data.empty:
        return pd.DataFrame(columns=PERFORMANCE_COLUMNS)
    keys = ["slice", "slice_value", "stage"]
    done = worked(data)
    data = data.assign(
        _done=done.astype(float),
        _skipped=(data["outcome"] == "skipped").astype(int),
        _reused=(data["outcome"] == "reused").astype(int),
        _seconds=data["duration_s"].where(done),
        _failed=failed_mask(data).astype(float).where(done),
        _retried=(data["attempts"] > 1).astype(float).where(done),
        _items=data["items"].where(data["items"].notna() & done),
        _item_s=data["duration_s"].where(data["items"].notna() & done),
        _clock_s=data["duration_s"].where(done & first_run_clock(data)),
    )
    grouped = data.groupby(keys, sort=False, dropna=False)
    stats = grouped.agg(
        kind=("kind", "first"),
        runs=("_seconds", "count"),
        skipped=("_skipped", "sum"),
        reused=("_reused", "sum"),
        mean_s=("_seconds", "mean"),
        clock_s=("_clock_s", "sum"),
        failure_rate=("_failed", "mean"),
        retry_rate=("_retried", "mean"),
        items=("_items", "sum"),
        item_s=("_item_s", "sum"),
        with_items=("_items", "count"),
    )
    quantiles = grouped["_seconds"].quantile([0.5, 0.9, 0.95]).unstack()
    quantiles.columns = ["p50_s", "p90_s", "p95_s"]
    stats = stats.join(quantiles).reset_index()
    e2e_total = stats[stats["stage"] == "end_to_end"].set_index("slice_value")["clock_s"]
    denominator = stats["slice_value"].map(e2e_total)
    stats["share"] = (stats["clock_s"] / denominator).where(denominator > 0)
    stats.loc[(stats["stage"] == "end_to_end") & (stats["runs"] > 0), "share"] = 1.0
    throughput = (stats["items"] / stats["item_s"]).where((stats["with_items"] > 0) & (stats["item_s"] > 0))
    stats["throughput_items_per_s"] = throughput
    for column in ("runs", "skipped", "reused"):
        stats[column] = stats[column].astype(int)
    return stats[PERFORMANCE_COLUMNS]
