"""Runs one stage inside an op: workflow row, stage metrics, progress events, clean failures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dagster as dg

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.stages import STAGE_PROGRESS, Stage
from poflow_dagster.resources import ProgressResource
from poflow_dagster.store.db import Database
from poflow_dagster.store.progress_bus import ProgressEvent
from poflow_dagster.store.workflow import mark_failed, set_progress, stage_finished, stage_started

#: PoflowError codes worth an op-level retry (the op's RetryPolicy decides how often); everything else is
#: final. Empty: Shopify errors arrive here only after the client's own retries (the one Shopify retry layer).
RETRYABLE_CODES: frozenset[str] = frozenset()


@dataclass
class StageRun:
    """What an op tells the runner about its stage; ``metadata()`` goes on the op's output."""

    stage: Stage
    attempt: int
    items: int | None = None
    bytes: int | None = None
    outcome: str = "success"  # or "skipped", or "reused" (an earlier run's result was still right)
    duration_ms: int = 0
    notes: list[str] = field(default_factory=list)
    #: Progress inside the stage (e.g. LLM windows done): call with (done, total).
    report_fraction: Callable[[int, int], None] = lambda done, total: None

    def metadata(self) -> dict[str, dg.RawMetadataValue]:
        meta: dict[str, dg.RawMetadataValue] = {
            "stage": self.stage.value,
            "outcome": self.outcome,
            "duration_ms": self.duration_ms,
            "attempt": self.attempt,
        }
        if self.items is not None:
            meta["items"] = self.items
        if self.notes:
            meta["notes"] = dg.MetadataValue.md("\n".join(f"- {note}" for note in self.notes))
        return meta


@contextmanager
def run_stage(
    context: dg.OpExecutionContext, stage: Stage, db: Database, progress: ProgressResource
) -> Iterator[StageRun]:
    """Wrap an op's work as ``stage`` of the upload this run's partition is.

    A ``PoflowError`` (bad input, bad config) fails the stage for good: the upload and workflow are
    marked failed with its code and a one-line reason, and Dagster sees a clean ``Failure`` without a
    traceback. Other errors are recorded and re-raised so the op's retry policy can act; if retries run
    out, ``po_failure_sensor`` marks the workflow failed.
    """
    upload_id = context.partition_key
    run_id = context.run_id
    current = StageRun(stage=stage, attempt=context.retry_number + 1)

    def report_fraction(done: int, total: int) -> None:
        start, end = _percent(stage, done=False), _percent(stage, done=True)
        percent = start + (end - start) * done // max(total, 1)
        set_progress(db, upload_id, percent)
        progress.publish(ProgressEvent(upload_id=upload_id, run_id=run_id, stage=stage.value, status="progress",
                                       progress_percent=percent, message=f"{done}/{total}"))

    current.report_fraction = report_fraction
    stage_started(db, upload_id, run_id, stage, current.attempt)
    _publish(progress, upload_id, run_id, stage, "started")
    try:
        yield current
    except PoflowError as error:
        stage_finished(db, upload_id, run_id, stage, outcome="failed", error_code=error.code)
        if error.code in RETRYABLE_CODES:
            raise
        if stage in STAGE_PROGRESS:  # a side stage (images) never fails the PO
            mark_failed(
                db, upload_id, run_id=run_id, stage=stage.value, code=error.code, message=error.message
            )
        _publish(progress, upload_id, run_id, stage, "failed", message=str(error))
        raise dg.Failure(description=str(error), metadata={"error_code": error.code}, allow_retries=False) from None
    except Exception as error:
        stage_finished(db, upload_id, run_id, stage, outcome="failed", error_code=type(error).__name__)
        _publish(progress, upload_id, run_id, stage, "failed", message=f"{type(error).__name__}: {error}")
        raise
    current.duration_ms = stage_finished(
        db, upload_id, run_id, stage, outcome=current.outcome, items=current.items, bytes_=current.bytes
    )
    _publish(progress, upload_id, run_id, stage, "succeeded" if current.outcome == "success" else current.outcome)


def _publish(
    progress: ProgressResource, upload_id: str, run_id: str, stage: Stage, status: str, message: str | None = None
) -> None:
    progress.publish(
        ProgressEvent(
            upload_id=upload_id,
            run_id=run_id,
            stage=stage.value,
            status=status,
            progress_percent=_percent(stage, done=status in ("succeeded", "skipped", "reused")),
            message=message,
        )
    )


def _percent(stage: Stage, *, done: bool) -> int:
    """Progress after ``stage`` (done) or before it (started, failed); side stages run after completion."""
    if stage not in STAGE_PROGRESS:
        return 100
    if done:
        return STAGE_PROGRESS.get(stage, 100)
    before = [percent for s, percent in STAGE_PROGRESS.items() if percent < STAGE_PROGRESS.get(stage, 0)]
    return max(before, default=0)
