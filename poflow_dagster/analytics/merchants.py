"""Merchant health: per merchant (and overall) how many POs ran, how many succeeded, how long they took,
and how many workflows are stuck or waiting for review — the stuck-workflow rate is a headline number."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from poflow_dagster.analytics.frame import in_window, prepare_frame, prepare_workflows

MERCHANT_COLUMNS = [
    "merchant_id",
    "uploads",
    "runs",
    "success_rate",
    "avg_s",
    "p95_s",
    "failed",
    "workflows",
    "stuck",
    "stuck_rate",
    "needs_review_share",
]
OPEN_STATUSES = ("pending", "processing")


def merchant_health(
    df: pd.DataFrame,
    workflows: pd.DataFrame,
    *,
    now: dt.datetime,
    window: dt.timedelta = dt.timedelta(days=7),
    stuck_after: dt.timedelta = dt.timedelta(minutes=30),
) -> pd.DataFrame:
    """One row per merchant plus ``merchant_id`` ``all``: uploads (that ran, or were received, in the window),
    ``po_job`` runs ended in the window,
    success rate, end-to-end mean and p95, failed runs; workflows (created in the window, or still open),
    stuck ones (pending/processing, not updated for ``stuck_after``), their rate and the needs-review share."""
    runs = _run_table(in_window(prepare_frame(df), now - window, now))
    flows = _workflow_table(prepare_workflows(workflows), now=now, window=window, stuck_after=stuck_after)
    merchants = sorted(set(runs["merchant_id"].dropna()) | set(flows["merchant_id"].dropna()))
    rows = [_health(str(m), runs[runs["merchant_id"] == m], flows[flows["merchant_id"] == m]) for m in merchants]
    rows.append(_health("all", runs, flows))
    return pd.DataFrame(rows, columns=MERCHANT_COLUMNS)


def _run_table(data: pd.DataFrame) -> pd.DataFrame:
    """One row per ``po_job`` run: merchant, upload, run status and end-to-end seconds (if recorded)."""
    po = data[data["job"] == "po_job"]
    if po.empty:
        return pd.DataFrame(columns=["run_id", "merchant_id", "upload_id", "run_status", "e2e_s"])
    firsts = po.groupby("run_id", sort=False).agg(
        merchant_id=("merchant_id", "first"), upload_id=("upload_id", "first"), run_status=("run_status", "first")
    )
    e2e = po[po["stage"] == "end_to_end"].groupby("run_id")["duration_s"].first()
    return firsts.join(e2e.rename("e2e_s")).reset_index()


def _workflow_table(
    flows: pd.DataFrame, *, now: dt.datetime, window: dt.timedelta, stuck_after: dt.timedelta
) -> pd.DataFrame:
    open_ = flows["status"].isin(OPEN_STATUSES)
    recent = flows["created_at"] > pd.Timestamp(now - window)
    flows = flows[open_ | recent]
    stuck = flows["status"].isin(OPEN_STATUSES) & (flows["updated_at"] < pd.Timestamp(now - stuck_after))
    return flows.assign(stuck=stuck, needs_review=flows["status"] == "needs_review", recent=recent[flows.index])


def _health(merchant_id: str, runs: pd.DataFrame, flows: pd.DataFrame) -> dict:
    n_runs = len(runs)
    durations = runs["e2e_s"].dropna().to_numpy(dtype=float)
    n_flows = len(flows)
    stuck = int(flows["stuck"].sum()) if n_flows else 0
    uploads = set(runs["upload_id"].dropna()) | set(flows.loc[flows["recent"], "upload_id"].dropna())
    return {
        "merchant_id": merchant_id,
        "uploads": len(uploads),
        "runs": n_runs,
        "success_rate": float((runs["run_status"] == "success").mean()) if n_runs else None,
        "avg_s": float(durations.mean()) if durations.size else None,
        "p95_s": float(np.percentile(durations, 95)) if durations.size else None,
        "failed": int((runs["run_status"] == "failure").sum()),
        "workflows": n_flows,
        "stuck": stuck,
        "stuck_rate": stuck / n_flows if n_flows else None,
        "needs_review_share": float(flows["needs_review"].mean()) if n_flows else None,
    }
