"""Small PNG charts of the analytics (matplotlib, no display). Each draws "no data" on an empty input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import pandas as pd  # noqa: E402

from poflow_dagster.analytics.frame import stage_sort_key  # noqa: E402


def _figure(title: str, height: float = 3.5):
    fig, ax = plt.subplots(figsize=(8, height), dpi=100)
    ax.set_title(title)
    return fig, ax


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=14, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def stage_duration_chart(perf_df: pd.DataFrame, path: str | Path) -> Path:
    """Horizontal bars of p50 and p95 seconds per stage (slice ``all``), in timeline order."""
    fig, ax = _figure("Stage durations (p50 / p95, seconds)")
    data = perf_df[perf_df["slice"] == "all"] if len(perf_df) and "slice" in perf_df else perf_df.iloc[0:0]
    if data.empty:
        _no_data(ax)
        return _save(fig, path)
    data = data.assign(_order=stage_sort_key(data["stage"])).sort_values("_order", ascending=False)
    positions = range(len(data))
    ax.barh([p + 0.2 for p in positions], data["p95_s"].astype(float), height=0.4, label="p95", color="#d62728")
    ax.barh([p - 0.2 for p in positions], data["p50_s"].astype(float), height=0.4, label="p50", color="#1f77b4")
    ax.set_yticks(list(positions), list(data["stage"]))
    ax.set_xlabel("seconds")
    ax.legend(loc="lower right")
    return _save(fig, path)


def bottleneck_chart(report_df: pd.DataFrame, path: str | Path) -> Path:
    """Each stage's share of the slowest runs' time, coloured by severity."""
    fig, ax = _figure("Share of the slowest runs' time")
    if report_df.empty:
        _no_data(ax)
        return _save(fig, path)
    colours = {"critical": "#d62728", "warning": "#ff7f0e", "ok": "#2ca02c"}
    data = report_df.iloc[::-1]
    ax.barh(list(data["stage"]), data["contribution"].astype(float) * 100,
            color=[colours.get(s, "#7f7f7f") for s in data["severity"]])
    ax.set_xlabel("% of end-to-end time (runs ≥ p90)")
    return _save(fig, path)


def eta_backtest_chart(backtest: Any, path: str | Path) -> Path:
    """Histogram of held-out ETA errors (model at upload vs the old size-median baseline), ±15 s marked."""
    fig, ax = _figure("ETA error on held-out runs (seconds)")
    errors = list(getattr(backtest, "errors_s", None) or [])
    baseline = list(getattr(backtest, "baseline_errors_s", None) or [])
    if not errors:
        _no_data(ax)
        return _save(fig, path)
    ax.hist(baseline, bins=30, alpha=0.5, label="baseline (±20 % size median)", color="#7f7f7f")
    ax.hist(errors, bins=30, alpha=0.7, label="eta_model at upload", color="#1f77b4")
    for limit in (-15, 15):
        ax.axvline(limit, color="#d62728", linestyle="--", linewidth=1)
    ax.set_xlabel("predicted − actual end-to-end seconds")
    ax.legend()
    return _save(fig, path)


def merchant_chart(df: pd.DataFrame, path: str | Path) -> Path:
    """Per merchant: success rate (per PO) and stuck rate (%). Takes ``MerchantHealth.merchants``, or
    ``merchant_health``'s one-frame form, whose overall row (last, flagged in ``attrs``) is left out."""
    fig, ax = _figure("Merchant health")
    data = df.iloc[:-1] if len(df) and df.attrs.get("total_row") else df
    if data.empty:
        _no_data(ax)
        return _save(fig, path)
    positions = range(len(data))
    success = pd.to_numeric(data["success_rate"], errors="coerce").fillna(0) * 100
    stuck = pd.to_numeric(data.get("stuck_rate", pd.Series(0, index=data.index)), errors="coerce").fillna(0) * 100
    ax.bar([p - 0.2 for p in positions], success, width=0.4, label="success %", color="#2ca02c")
    ax.bar([p + 0.2 for p in positions], stuck, width=0.4, label="stuck %", color="#d62728")
    ax.set_xticks(list(positions), list(data["merchant_id"]), rotation=30, ha="right")
    ax.set_ylim(0, 105)
    ax.legend()
    return _save(fig, path)
