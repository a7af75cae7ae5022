"""The ``stage_runs`` fact table as a pandas DataFrame, and the vocabulary the analytics share.

One row per finished run × stage. ``kind`` is ``stage`` (an op), ``wait`` (orchestration time no op sees),
``check`` (asset checks + teardown) or ``total`` (``end_to_end``).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sqlalchemy import select

from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import StageRun, Upload, WorkflowExecution

#: Timeline order: the waits before a run works, the PO stages, the checks, the image run, the whole.
STAGE_ORDER: list[str] = [
    "sensor_wait",
    "queue_wait",
    "launch_wait",
    "ai_parsing",
    "database_save",
    "product_draft_creation",
    "shopify_sync",
    "status_update",
    "checks",
    "image_attachment",
    "end_to_end",
]
WAIT_STAGES: list[str] = ["sensor_wait", "queue_wait", "launch_wait"]
PO_STAGES: list[str] = ["ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"]
KIND_OF: dict[str, str] = {
    **{stage: "wait" for stage in WAIT_STAGES},
    **{stage: "stage" for stage in [*PO_STAGES, "image_attachment"]},
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
    """The rows that describe a PO's journey: every ``po_job`` row, plus ``image_attachment`` from ``image_job``
    (the image run's own waits would blur the PO's)."""
    return df[(df["job"] == "po_job") | (df["stage"] == "image_attachment")]


def in_window(df: pd.DataFrame, start: dt.datetime | None, end: dt.datetime | None) -> pd.DataFrame:
    """Rows with ``ended_at`` in ``(start, end]`` (either bound may be open)."""
    mask = df["ended_at"].notna()
    if start is not None:
        mask &= df["ended_at"] > pd.Timestamp(start)
    if end is not None:
        mask &= df["ended_at"] <= pd.Timestamp(end)
    return df[mask]


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
    """The ``stage_runs`` rows with ``ended_at`` in ``(since, until]`` (one Core select, no ORM objects)."""
    table = StageRun.__table__
    query = select(table)
    if since is not None:
        query = query.where(table.c.ended_at > since)
    if until is not None:
        query = query.where(table.c.ended_at <= until)
    if merchant_id is not None:
        query = query.where(table.c.merchant_id == merchant_id)
    with db.engine.connect() as connection:
        rows = connection.execute(query).fetchall()
    df = pd.DataFrame.from_records(rows, columns=STAGE_RUN_COLUMNS)
    return prepare_frame(df)


WORKFLOW_COLUMNS = ["upload_id", "merchant_id", "status", "updated_at", "created_at"]


def load_workflow_states(db: Database, *, merchant_id: str | None = None) -> pd.DataFrame:
    """One row per upload's workflow: ``upload_id, merchant_id, status, updated_at, created_at`` (UTC)."""
    wf, up = WorkflowExecution.__table__, Upload.__table__
    query = select(
        wf.c.upload_id, up.c.merchant_id, wf.c.status, wf.c.updated_at, up.c.created_at
    ).join(up, up.c.id == wf.c.upload_id)
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
