"""Stage performance: how long each stage, wait and the whole PO journey take, overall and per slice."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from poflow_dagster.analytics.frame import in_window, po_view, prepare_frame, stage_sort_key

PERFORMANCE_COLUMNS = [
    "slice",
    "slice_value",
    "stage",
    "kind",
    "runs",
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
    """Per stage (waits, checks and ``end_to_end`` included): runs, p50/p90/p95/mean seconds, share of the
    end-to-end time, throughput, failure and retry rates — for all runs (``slice`` ``all``) and per value of
    each slice (source format, merchant, PO size). Rows with ``ended_at`` in ``(now - window, now]``."""
    data = po_view(in_window(prepare_frame(df), now - window, now))
    data = data[data["duration_s"].notna()]
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
    return out[PERFORMANCE_COLUMNS].reset_index(drop=True)


def _slice_stats(data: pd.DataFrame) -> pd.DataFrame:
    if data.empty:
        return pd.DataFrame(columns=PERFORMANCE_COLUMNS)
    data = data.assign(
        _failed=failed_mask(data).astype(float),
        _retried=(data["attempts"] > 1).astype(float),
        _items=data["items"].where(data["items"].notna() & data["duration_s"].notna()),
        _item_s=data["duration_s"].where(data["items"].notna()),
    )
    keys = ["slice", "slice_value", "stage"]
    grouped = data.groupby(keys, sort=False, dropna=False)
    stats = grouped.agg(
        kind=("kind", "first"),
        runs=("duration_s", "size"),
        mean_s=("duration_s", "mean"),
        total_s=("duration_s", "sum"),
        failure_rate=("_failed", "mean"),
        retry_rate=("_retried", "mean"),
        items=("_items", "sum"),
        item_s=("_item_s", "sum"),
        with_items=("_items", "count"),
    )
    quantiles = grouped["duration_s"].quantile([0.5, 0.9, 0.95]).unstack()
    quantiles.columns = ["p50_s", "p90_s", "p95_s"]
    stats = stats.join(quantiles).reset_index()
    e2e_total = stats[stats["stage"] == "end_to_end"].set_index("slice_value")["total_s"]
    denominator = stats["slice_value"].map(e2e_total)
    stats["share"] = (stats["total_s"] / denominator).where(denominator > 0)
    stats.loc[stats["stage"] == "end_to_end", "share"] = 1.0
    throughput = (stats["items"] / stats["item_s"]).where((stats["with_items"] > 0) & (stats["item_s"] > 0))
    stats["throughput_items_per_s"] = throughput.astype(object).where(throughput.notna(), None)
    stats["runs"] = stats["runs"].astype(int)
    return stats[PERFORMANCE_COLUMNS]


def percentile(values: pd.Series | np.ndarray, q: float) -> float | None:
    """The ``q`` percentile (0–100, linear interpolation like numpy) of the non-null values, or ``None``."""
    array = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(dtype=float)
    return float(np.percentile(array, q)) if array.size else None
