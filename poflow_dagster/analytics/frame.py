"""The ``stage_runs`` fact table as a pandas DataFrame, and the vocabulary the analytics share.

One row per finished run × stage. ``kind`` is ``stage`` (an op), ``wait`` (orchestration time no op sees),
``check`` (asset checks + teardown) or ``total`` (``end_to_end``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import pandas as pd
from sqlalchemy import or_, select

from poflow_dagster.analytics.timeline import PO_STAGES, SIDE_STAGES, STAGE_ORDER, WAIT_STAGES
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import StageRun, Upload, WorkflowExecution

# The stage vocabulary (timeline order, waits, PO stages) has one source: analytics.timeline.
KIND_OF: dict[str, str] = {
    **{stage: "wait" for stage in WAIT_STAGES},
    **{stage: "stage" for stage in [*PO_STAGES, *SIDE_STAGES]},
    "checks": "check",
    "end_to_end": "total",
}

DATETIME_COLUMNS = ["started_at", "ended_at", "run_created_at", "recorded_at"]
FLOAT_COLUMNS = [
    "duration_s",
    "attempts",
    "items",
    "bytes",
    "pages",
    "llm_windows",
    "llm_seconds",
    "shopify_requests",
    "shopify_points",
    "shopify_throttled_s",
    "file_bytes",
    "lines",
    "skus",
]
STAGE_RUN_COLUMNS: list[str] = [column.name for column in StageRun.__table__.columns]
COLUMNS: list[str] = [*STAGE_RUN_COLUMNS, "size_bucket"]
#: Outcomes of a stage that did no work of its own (Shopify sync off or a PO held for review; a continuation
#: reusing an earlier run's parse): they count as ``skipped``/``reused``, never as a duration or a throughput.
NOT_WORKED_OUTCOMES = ("skipped", "reused")
#: Workflow statuses still open (a workflow in one of them for long is stuck).
OPEN_STATUSES = ("pending", "processing")
#: How far before ``since`` ``load_stage_runs`` reads, so a run that began before the window edge and ended
#: after it comes whole (its early rows ended before ``since``).
RUN_SPAN_MARGIN = dt.timedelta(days=1)

_BUCKETS = [(10, "1-10"), (50, "11-50"), (250, "51-250"), (1000, "251-1000")]


def size_bucket(lines: float | int | None) -> str:
    """The PO size slice by line count: ``1-10``, ``11-50``, ``51-250``, ``251-1000``, ``>1000`` or ``unknown``."""
    if lines is None or pd.isna(lines) or lines < 1:
        return "unknown"
    for upper, name in _BUCKETS:
        if lines <= upper:
            return name
    return ">1000"


def _size_buckets(lines: pd.Series) -> pd.Series:
    values = lines.to_numpy(dtype=float, na_value=np.nan)
    conditions = [values <= 10, values <= 50, values <= 250, values <= 1000]
    out = np.select(conditions, [name for _, name in _BUCKETS], default=">1000").astype(object)
    out[np.isnan(values) | (values < 1)] = "unknown"
    return pd.Series(out, index=lines.index, dtype=object)


def prepare_frame(df: pd.DataFrame | None) -> pd.DataFrame:
    """Give any stage-runs frame (loaded or built in a test) every column with the expected types.

    Datetimes become tz-aware UTC, numbers float, ``first_run`` bool; ``size_bucket`` is added.
    Idempotent, and it never modifies its input."""
    df = pd.DataFrame(columns=STAGE_RUN_COLUMNS) if df is None else df.copy()
    for column in STAGE_RUN_COLUMNS:
        if column not in df.columns:
            df[column] = None
    for column in DATETIME_COLUMNS:
        df[column] = pd.to_datetime(df[column], utc=True, format="mixed").dt.as_unit("us")
    for column in FLOAT_COLUMNS:
        df[column] = pd.to_numeric(df[column], errors="coerce").astype(float)
    df["attempts"] = df["attempts"].fillna(1.0)
    df["first_run"] = df["first_run"].fillna(False).astype(bool)
    for column in ["run_id", "upload_id", "merchant_id", "job", "stage", "kind", "run_status", "outcome",
                   "error_code", "source_format"]:
        df[column] = df[column].astype(object).where(df[column].notna(), None)
    missing_kind = df["kind"].isna()
    if missing_kind.any():
        df.loc[missing_kind, "kind"] = df.loc[missing_kind, "stage"].map(KIND_OF)
    df["size_bucket"] = _size_buckets(df["lines"])
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]].reset_index(drop=True)


def po_view(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that describe a PO's journey: every ``po_job`` row (its waits, stages — ``image_attachment``
    included, a step of the same run — checks and ``end_to_end``)."""
    return df[df["job"] == "po_job"]


def worked(df: pd.DataFrame) -> pd.Series:
    """Rows that measured real work: a duration, and not a ``skipped`` or ``reused`` stage."""
    return df["duration_s"].notna() & ~df["outcome"].isin(NOT_WORKED_OUTCOMES)


def first_run_clock(df: pd.DataFrame) -> pd.Series:
    """Rows on the PO's own clock (from its upload): every row except those of a continuation or re-execution
    ``po_job`` run (``first_run`` False), whose ``end_to_end`` starts at its own run's creation instead."""
    return ~((df["job"] == "po_job") & ~df["first_run"].astype(bool))


def run_ended_at(df: pd.DataFrame) -> pd.Series:
    """For each row, when its run ended: the ``ended_at`` of the run's ``end_to_end`` row, else of its latest
    row (a row without a ``run_id`` stands for itself). Aligned with ``df``'s index."""
    if df.empty:
        return df["ended_at"].copy()
    keyed = df[df["run_id"].notna()]
    latest = keyed.groupby("run_id", sort=False)["ended_at"].max()
    e2e = keyed[keyed["stage"] == "end_to_end"].groupby("run_id", sort=False)["ended_at"].max()
    run_end = e2e.reindex(latest.index).fillna(latest)
    per_row = df["run_id"].map(run_end)
    return per_row.where(df["run_id"].notna(), df["ended_at"]).astype(df["ended_at"].dtype)


def in_window(df: pd.DataFrame, start: dt.datetime | None, end: dt.datetime | None) -> pd.DataFrame:
    """Every row of the runs that ended in ``(start, end]`` (either bound may be open). A run is in the window
    by its ``end_to_end`` row's ``ended_at`` (else its latest row's), so a run that crossed the window edge is
    never split: all its rows or none."""
    ended = run_ended_at(df)
    mask = ended.notna()
    if start is not None:
        mask &= ended > pd.Timestamp(start)
    if end is not None:
        mask &= ended <= pd.Timestamp(end)
    return df[mask]


def finite_or_none(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """``df`` with NaN and ±inf in ``columns`` replaced by ``None`` (those columns become ``object``), so
    nothing that cannot be JSON or a GraphQL Float reaches metadata or a report."""
    df = df.copy()
    for column in columns:
        if column not in df.columns:
            continue
        values = pd.to_numeric(df[column], errors="coerce").astype(float)
        ok = np.isfinite(values.to_numpy())
        df[column] = pd.Series([float(v) if keep else None for v, keep in zip(values, ok, strict=True)],
                               index=df.index, dtype=object)
    return df


def stage_sort_key(stages: pd.Series) -> pd.Series:
    """Position in ``STAGE_ORDER`` (unknown stages after, alphabetically by a stable sort)."""
    order = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    return stages.map(lambda stage: order.get(stage, len(order)))


def load_stage_runs(
    db: Database,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    merchant_id: str | None = None,
) -> pd.DataFrame:
    """Every ``stage_runs`` row of the runs that ended in ``(since, until]`` (see ``in_window``): one Core
    select, no ORM objects, that reads ``RUN_SPAN_MARGIN`` beyond each bound so a run crossing an edge is
    seen whole, then trimmed to the runs of the window in pandas."""
    table = StageRun.__table__
    query = select(table)
    if since is not None:
        query = query.where(table.c.ended_at > since - RUN_SPAN_MARGIN)
    if until is not None:
        query = query.where(table.c.ended_at <= until + RUN_SPAN_MARGIN)
    if merchant_id is not None:
        query = query.where(table.c.merchant_id == merchant_id)
    with db.engine.connect() as connection:
        rows = connection.execute(query).fetchall()
    df = prepare_frame(pd.DataFrame.from_records(rows, columns=STAGE_RUN_COLUMNS))
    if since is None and until is None:
        return df
    return in_window(df, since, until).reset_index(drop=True)


WORKFLOW_COLUMNS = ["upload_id", "merchant_id", "status", "updated_at", "created_at"]


def load_workflow_states(
    db: Database, *, merchant_id: str | None = None, since: dt.datetime | None = None
) -> pd.DataFrame:
    """One row per upload's workflow: ``upload_id, merchant_id, status, updated_at, created_at`` (UTC).

    With ``since``, only the workflows merchant health can use, filtered in SQL: still open (pending,
    processing — they may be stuck), or created or updated after ``since``."""
    wf, up = WorkflowExecution.__table__, Upload.__table__
    query = select(
        wf.c.upload_id, up.c.merchant_id, wf.c.status, wf.c.updated_at, up.c.created_at
    ).join(up, up.c.id == wf.c.upload_id)
    if since is not None:
        query = query.where(
            or_(wf.c.status.in_(OPEN_STATUSES), wf.c.updated_at > since, up.c.created_at > since)
        )
    if merchant_id is not None:
        query = query.where(up.c.merchant_id == merchant_id)
    with db.engine.connect() as connection:
        rows = connection.execute(query).fetchall()
    return prepare_workflows(pd.DataFrame.from_records(rows, columns=WORKFLOW_COLUMNS))


def prepare_workflows(df: pd.DataFrame | None) -> pd.DataFrame:
    """A workflow-states frame with every column and UTC datetimes (idempotent)."""
    df = pd.DataFrame(columns=WORKFLOW_COLUMNS) if df is None else df.copy()
    for column in WORKFLOW_COLUMNS:
        if column not in df.columns:
            df[column] = None
    for column in ("updated_at", "created_at"):
        df[column] = pd.to_datetime(df[column], utc=True, format="mixed").dt.as_unit("us")
    for column in ("upload_id", "merchant_id", "status"):
        df[column] = df[column].astype(object)
    return df
