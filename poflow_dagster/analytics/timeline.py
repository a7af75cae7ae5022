"""One run's timeline: every stage, and the time around the stages that no op sees.

Pure functions over plain values (no Dagster, no database): the ``stage_runs`` ingestion
(``analytics/history.py``) and the PO asset's ``timeline`` metadata (``status_update``) both build their rows here,
so the partition page and the analytics tell the same story.

Rows, in :data:`STAGE_ORDER`:

* ``wait`` rows (PO runs only): ``sensor_wait`` upload received → run created (the upload's first PO run only),
  ``queue_wait`` run created → Dagster launched it (``RUN_STARTING``), ``launch_wait`` launched → first stage
  started (worker process start, resource init). Without ``RUN_STARTING`` (``execute_in_process``, or an event
  that was not recorded) only what is measurable is kept: a queued run's ``queue_wait`` then ends at
  ``RUN_START`` (queue and launch together), and ``launch_wait`` starts at ``RUN_START`` (the in-worker part).
  A run with none of these events simply has no such rows.
* ``stage`` rows: one per ``stage_metrics`` row of the run (the op's own start, end, attempts, items, signals).
  A stage still marked ``running`` when its run ended was cut off: its outcome is ``interrupted`` and it ends
  with the run. Side stages (:data:`SIDE_STAGES`: ``image_attachment``) are rows like the others, but they run
  after the PO is finished — the run's last step — and are no part of the PO's own time below.
* ``check`` row: ``checks`` = last PO stage ended → the PO's part of the run ended (asset checks and teardown).
* ``total`` row: ``end_to_end`` = upload received → the PO's part of the run ended on a first run; run created →
  that end otherwise.

The PO's part of the run ends when the run ends, or earlier where its first side stage started: images never
lengthen a PO's ``end_to_end`` (nor its ``checks``), so waits + PO stages + checks still add up to it.

A run still going (``ended_at=None``) gets the rows so far and no ``checks`` / ``end_to_end``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "PO_STAGES",
    "SIDE_STAGES",
    "SIGNAL_COLUMNS",
    "STAGE_ORDER",
    "StageMetricLike",
    "TimelineRow",
    "WAIT_STAGES",
    "build_timeline",
    "stage_seconds",
]

#: Every row a run can have, in timeline order (the single source: ``analytics.frame`` and ``analytics.eta`` use
#: these names too).
STAGE_ORDER: tuple[str, ...] = (
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
)
#: The orchestration waits before a PO run's first stage, in order.
WAIT_STAGES: tuple[str, ...] = ("sensor_wait", "queue_wait", "launch_wait")
#: The ops of ``po_job``, in order (the ``checks`` row follows the last of them).
PO_STAGES: tuple[str, ...] = ("ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update")
#: Ops of ``po_job`` that run after the PO is finished (after its checks) and never count in its time.
SIDE_STAGES: tuple[str, ...] = ("image_attachment",)
#: ``stage_metrics.signals`` keys that become ``stage_runs`` columns (integers and floats).
SIGNAL_COLUMNS: dict[str, type] = {
    "pages": int,
    "llm_windows": int,
    "llm_seconds": float,
    "shopify_requests": int,
    "shopify_points": float,
    "shopify_throttled_s": float,
}
_RANK = {stage: rank for rank, stage in enumerate(STAGE_ORDER)}


class StageMetricLike(Protocol):
    """What a ``stage_metrics`` row offers (the ORM row, a SQL result row, or a plain record)."""

    stage: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    duration_ms: int | None
    attempts: int
    outcome: str
    error_code: str | None
    items: int | None
    bytes: int | None
    signals: Mapping[str, Any] | None


@dataclass(frozen=True)
class TimelineRow:
    """One stage, wait, check or total of a run (the measured part of a ``stage_runs`` row)."""

    stage: str
    kind: str  # stage | wait | check | total
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    duration_s: float | None
    attempts: int = 1
    outcome: str | None = None
    error_code: str | None = None
    items: int | None = None
    bytes: int | None = None
    pages: int | None = None
    llm_windows: int | None = None
    llm_seconds: float | None = None
    shopify_requests: int | None = None
    shopify_points: float | None = None
    shopify_throttled_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row's fields (shallow: the values are plain numbers, strings and datetimes)."""
        return dict(vars(self))


def build_timeline(
    *,
    upload_created_at: dt.datetime | None,
    run_created_at: dt.datetime | None,
    enqueued_at: dt.datetime | None,
    starting_at: dt.datetime | None,
    started_at: dt.datetime | None,
    ended_at: dt.datetime | None,
    stage_metrics: Iterable[StageMetricLike],
    first_run: bool,
) -> list[TimelineRow]:
    """The run's rows in :data:`STAGE_ORDER` (see the module docstring for what each measures).

    ``started_at`` is ``RUN_START`` (the worker began), ``starting_at`` ``RUN_STARTING`` (launched),
    ``enqueued_at`` ``RUN_ENQUEUED``.
    """
    stages = [_stage_row(metric, ended_at) for metric in stage_metrics]
    rows = list(stages)
    first_stage = min((row.started_at for row in stages if row.started_at and row.stage not in SIDE_STAGES),
                      default=None)
    rows += _waits(upload_created_at, run_created_at, enqueued_at, starting_at, started_at, first_stage, first_run)
    if ended_at is not None:
        po_ended = _po_ended(stages, ended_at)
        last_end = max((row.ended_at for row in stages if row.stage in PO_STAGES and row.ended_at), default=None)
        if last_end is not None:
            rows.append(_span("checks", "check", last_end, max(last_end, po_ended)))
        start = upload_created_at if (first_run and upload_created_at) else run_created_at
        if start is not None:
            rows.append(_span("end_to_end", "total", start, po_ended))
    return sorted(rows, key=lambda row: (_RANK.get(row.stage, len(STAGE_ORDER)), row.stage))


def stage_seconds(rows: Iterable[TimelineRow]) -> dict[str, float]:
    """``{stage: seconds}`` of the rows that have a duration (the PO asset's ``<stage>_s`` metadata)."""
    return {row.stage: row.duration_s for row in rows if row.duration_s is not None}


def _po_ended(stages: list[TimelineRow], run_ended_at: dt.datetime) -> dt.datetime:
    """Where the PO's part of a finished run ended: where its first side stage (images) started, else the run's end."""
    side = [row.started_at for row in stages if row.stage in SIDE_STAGES and row.started_at]
    return min([run_ended_at, *side])


def _waits(
    upload_created_at: dt.datetime | None,
    run_created_at: dt.datetime | None,
    enqueued_at: dt.datetime | None,
    starting_at: dt.datetime | None,
    started_at: dt.datetime | None,
    first_stage: dt.datetime | None,
    first_run: bool,
) -> list[TimelineRow]:
    rows: list[TimelineRow] = []
    if first_run and upload_created_at is not None and run_created_at is not None:
        rows.append(_span("sensor_wait", "wait", upload_created_at, run_created_at))
    queued_from = run_created_at or enqueued_at
    # Without RUN_STARTING a queued run's queue ends, at the latest, when its worker starts (RUN_START).
    queued_until = starting_at or (started_at if enqueued_at is not None else None)
    if queued_from is not None and queued_until is not None:
        rows.append(_span("queue_wait", "wait", queued_from, queued_until))
    launched = starting_at or started_at
    if launched is not None and first_stage is not None:
        rows.append(_span("launch_wait", "wait", launched, first_stage))
    return rows


def _stage_row(metric: StageMetricLike, run_ended_at: dt.datetime | None) -> TimelineRow:
    signals = metric.signals or {}
    ended, outcome = metric.ended_at, metric.outcome
    if outcome == "running" and run_ended_at is not None:
        ended, outcome = max(run_ended_at, metric.started_at), "interrupted"  # the run ended around it
    if metric.duration_ms is not None and metric.ended_at is not None and ended is metric.ended_at:
        duration: float | None = metric.duration_ms / 1000
    else:
        duration = _seconds(metric.started_at, ended)
    return TimelineRow(
        stage=metric.stage,
        kind="stage",
        started_at=metric.started_at,
        ended_at=ended,
        duration_s=duration,
        attempts=metric.attempts or 1,
        outcome=outcome,
        error_code=metric.error_code,
        items=metric.items,
        bytes=metric.bytes,
        **{name: _number(signals.get(name), kind) for name, kind in SIGNAL_COLUMNS.items()},
    )


def _span(stage: str, kind: str, start: dt.datetime, end: dt.datetime) -> TimelineRow:
    return TimelineRow(stage=stage, kind=kind, started_at=start, ended_at=end, duration_s=_seconds(start, end))


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    """Seconds from ``start`` to ``end``, never negative (clocks of two machines may disagree a little)."""
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 6)


def _number(value: Any, kind: type) -> int | float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None
