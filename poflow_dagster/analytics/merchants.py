"""Merchant health: per merchant (and overall) how many POs ran, how many succeeded, how long they took,
and how many workflows are stuck or waiting for review — the stuck-workflow rate is a headline number.

Success is counted per PO, not per run: an upload succeeded when its latest ``po_job`` run in the window
succeeded, so a PO that failed once and then succeeded on re-execution is a success (its failed run still
shows in ``failed``, a count of runs). The end-to-end average and p95 use first runs only — the PO's own
clock from its upload; a continuation's ``end_to_end`` starts at its own run's creation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from poflow_dagster.analytics.frame import (
    OPEN_STATUSES,
    finite_or_none,
    in_window,
    prepare_frame,
    prepare_workflows,
)

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
NULLABLE_COLUMNS = ["success_rate", "avg_s", "p95_s", "stuck_rate", "needs_review_share"]
#: The ``merchant_id`` of the overall row in ``merchant_health``'s one-frame form.
TOTAL_ID = "all"
__all__ = ["MERCHANT_COLUMNS", "OPEN_STATUSES", "MerchantHealth", "merchant_health", "merchant_health_parts"]


@dataclass(frozen=True)
class MerchantHealth:
    """Per-merchant rows (``MERCHANT_COLUMNS``, one per merchant, sorted) and the overall numbers (the same
    fields without ``merchant_id``), kept apart so no merchant's id can collide with the total."""

    merchants: pd.DataFrame
    total: dict[str, Any]


def merchant_health_parts(
    df: pd.DataFrame,
    workflows: pd.DataFrame,
    *,
    now: dt.datetime,
    window: dt.timedelta = dt.timedelta(days=7),
    stuck_after: dt.timedelta = dt.timedelta(minutes=30),
) -> MerchantHealth:
    """Per merchant and overall: uploads (that ran, or were received, in the window); ``po_job`` runs that
    ended in the window; success rate per upload (its latest run's outcome); first-run end-to-end mean and
    p95; failed runs; workflows (created in the window, or still open), stuck ones (pending/processing, not
    updated for ``stuck_after``), their rate and the needs-review share. Missing numbers are ``None``."""
    runs = _run_table(in_window(prepare_frame(df), now - window, now))
    flows = _workflow_table(prepare_workflows(workflows), now=now, window=window, stuck_after=stuck_after)
    merchants = _per_merchant(runs, flows)
    total = finite_or_none(pd.DataFrame([_health(TOTAL_ID, runs, flows)], columns=MERCHANT_COLUMNS),
                           NULLABLE_COLUMNS).iloc[0].to_dict()
    total.pop("merchant_id")
    return MerchantHealth(merchants=merchants, total=total)


def merchant_health(
    df: pd.DataFrame,
    workflows: pd.DataFrame,
    *,
    now: dt.datetime,
    window: dt.timedelta = dt.timedelta(days=7),
    stuck_after: dt.timedelta = dt.timedelta(minutes=30),
) -> pd.DataFrame:
    """``merchant_health_parts`` as one frame: a row per merchant, then the overall row (``merchant_id``
    ``all``, always last; ``attrs["total_row"]`` says it is there). Prefer the parts where a merchant could be
    named ``all``."""
    parts = merchant_health_parts(df, workflows, now=now, window=window, stuck_after=stuck_after)
    total = pd.DataFrame([{"merchant_id": TOTAL_ID, **parts.total}], columns=MERCHANT_COLUMNS)
    out = pd.concat([parts.merchants, total], ignore_index=True) if len(parts.merchants) else total
    out = finite_or_none(out[MERCHANT_COLUMNS], NULLABLE_COLUMNS)
    out.attrs["total_row"] = True
    return out


def _run_table(data: pd.DataFrame) -> pd.DataFrame:
    """One row per ``po_job`` run: merchant, upload, run status, first run, when it ended and its
    end-to-end seconds (if recorded)."""
    po = data[data["job"] == "po_job"]
    columns = ["run_id", "merchant_id", "upload_id", "run_status", "first_run", "ended_at", "e2e_s"]
    if po.empty:
        return pd.DataFrame(columns=columns)
    runs = po.groupby("run_id", sort=False).agg(
        merchant_id=("merchant_id", "first"), upload_id=("upload_id", "first"), run_status=("run_status", "first"),
        first_run=("first_run", "max"), ended_at=("ended_at", "max"),
    )
    e2e = po[po["stage"] == "end_to_end"].groupby("run_id")[["duration_s", "ended_at"]].max()
    runs = runs.join(e2e.rename(columns={"duration_s": "e2e_s", "ended_at": "e2e_end"}))
    runs["ended_at"] = runs["e2e_end"].fillna(runs["ended_at"])
    return runs.reset_index()[columns]


def _workflow_table(
    flows: pd.DataFrame, *, now: dt.datetime, window: dt.timedelta, stuck_after: dt.timedelta
) -> pd.DataFrame:
    open_ = flows["status"].isin(OPEN_STATUSES)
    recent = flows["created_at"] > pd.Timestamp(now - window)
    flows = flows[open_ | recent]
    stuck = flows["status"].isin(OPEN_STATUSES) & (flows["updated_at"] < pd.Timestamp(now - stuck_after))
    return flows.assign(stuck=stuck, needs_review=flows["status"] == "needs_review", recent=recent[flows.index])


def _per_merchant(runs: pd.DataFrame, flows: pd.DataFrame) -> pd.DataFrame:
    """One ``_health`` row per merchant, each merchant's runs and workflows found by one ``groupby`` each."""
    run_groups = dict(iter(runs.dropna(subset=["merchant_id"]).groupby("merchant_id", sort=False)))
    flow_groups = dict(iter(flows.dropna(subset=["merchant_id"]).groupby("merchant_id", sort=False)))
    merchants = sorted({str(m) for m in run_groups} | {str(m) for m in flow_groups})
    empty_runs, empty_flows = runs.iloc[0:0], flows.iloc[0:0]
    rows = [_health(m, run_groups.get(m, empty_runs), flow_groups.get(m, empty_flows)) for m in merchants]
    return finite_or_none(pd.DataFrame(rows, columns=MERCHANT_COLUMNS), NULLABLE_COLUMNS)


def _upload_outcomes(runs: pd.DataFrame) -> pd.Series:
    """Per upload that ran: did its latest ``po_job`` run (by end time) succeed?"""
    keyed = runs[runs["upload_id"].notna()].sort_values("ended_at", kind="stable")
    latest = keyed.groupby("upload_id", sort=False)["run_status"].last()
    return latest == "success"


def _health(merchant_id: str, runs: pd.DataFrame, flows: pd.DataFrame) -> dict:
    durations = runs.loc[runs["first_run"].astype(bool), "e2e_s"].dropna().to_numpy(dtype=float)
    outcomes = _upload_outcomes(runs)
    n_flows = len(flows)
    stuck = int(flows["stuck"].sum()) if n_flows else 0
    uploads = set(runs["upload_id"].dropna()) | set(flows.loc[flows["recent"], "upload_id"].dropna())
    return {
        "merchant_id": merchant_id,
        "uploads": len(uploads),
        "runs": len(runs),
        "success_rate": float(outcomes.mean()) if len(outcomes) else None,
        "avg_s": float(durations.mean()) if durations.size else None,
        "p95_s": float(np.percentile(durations, 95)) if durations.size else None,
        "failed": int((runs["run_status"] == "failure").sum()),
        "workflows": n_flows,
        "stuck": stuck,
        "stuck_rate": stuck / n_flows if n_flows else None,
        "needs_review_share": float(flows["needs_review"].mean()) if n_flows else None,
    }
