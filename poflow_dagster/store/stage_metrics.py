"""Reading ``stage_metrics``: one run's stages (for its live timeline) and when its upload was received."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import StageMetric, Upload

__all__ = ["StageMetricRecord", "stage_metrics_for_run", "upload_created_at"]


@dataclass(frozen=True)
class StageMetricRecord:
    """One stage of one run, detached from any session (fits ``analytics.timeline.StageMetricLike``)."""

    stage: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    duration_ms: int | None
    attempts: int
    outcome: str
    error_code: str | None
    items: int | None
    bytes: int | None
    signals: dict[str, Any] | None


def stage_metrics_for_run(db: Database, run_id: str) -> list[StageMetricRecord]:
    """The stages run ``run_id`` has started so far, in the order they started."""
    with db.session() as session:
        rows = session.execute(
            select(
                StageMetric.stage, StageMetric.started_at, StageMetric.ended_at, StageMetric.duration_ms,
                StageMetric.attempts, StageMetric.outcome, StageMetric.error_code, StageMetric.items,
                StageMetric.bytes, StageMetric.signals,
            )
            .where(StageMetric.run_id == run_id)
            .order_by(StageMetric.started_at, StageMetric.id)
        ).all()
    return [StageMetricRecord(*row) for row in rows]


def upload_created_at(db: Database, upload_id: str) -> dt.datetime | None:
    """When the upload was received (``None`` for an unknown upload)."""
    with db.session() as session:
        return session.scalar(select(Upload.created_at).where(Upload.id == upload_id))
