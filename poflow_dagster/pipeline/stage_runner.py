"""Runs one stage inside an op: workflow row, stage metrics, progress events, clean failures."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dagster as dg
from sqlalchemy import exc as sa_exc

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.stages import STAGE_PROGRESS, Stage
from poflow_dagster.resources import DatabaseResource, ProgressResource
from poflow_dagster.store.db import Database
from poflow_dagster.store.progress_bus import ProgressEvent
from poflow_dagster.store.workflow import mark_failed, set_progress, stage_finished, stage_started

log = logging.getLogger(__name__)

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
    #: What the stage measured about its work (``pages``, ``llm_windows``, ``llm_seconds``, ``skus``,
    #: ``shopify_requests``, ``shopify_points``, ``shopify_throttled_s``...): kept in ``stage_metrics.signals``
    #: for the analytics assets and the ETA model.
    signals: dict[str, int | float] = field(default_factory=dict)
    #: Progress inside the stage (e.g. LLM windows done): call with (done, total).
    report_fraction: Callable[[int, int], None] = lambda done, total: None
    #: The app database, connected (and migrated) by the runner before the op's work starts.
    database: Database = field(default=None, repr=False)  # type: ignore[assignment]

    def metadata(self) -> dict[str, dg.RawMetadataValue]:
        meta: dict[str, dg.RawMetadataValue] = {
            "stage": self.stage.value,
            "outcome": self.outcome,
            "duration_ms": self.duration_ms,
            "attempt": self.attempt,
        }
        if self.items is not None:
            meta["items"] = self.items
        for name, value in self.signals.items():
            meta[name] = value
        if self.notes:
            meta["notes"] = dg.MetadataValue.md("\n".join(f"- {note}" for note in self.notes))
        return meta


@contextmanager
def run_stage(
    context: dg.OpExecutionContext, stage: Stage, db: DatabaseResource, progress: ProgressResource
) -> Iterator[StageRun]:
    """Wrap an op's work as ``stage`` of the upload this run's partition is.

    A ``PoflowError`` (bad input, bad config, a Shopify or LLM call its client gave up on) fails the stage
    for good: the upload and workflow are marked failed with its code and a one-line reason, and Dagster
    sees a clean ``Failure`` without a traceback. The database being away (an outage, a restart) is the one
    thing retried here: the op runs again after 2, 4, 8, 16, 30, 30, 30 s (every stage is idempotent). Other errors
    are recorded and re-raised; ``po_failure_sensor`` then marks the workflow failed.
    """
    upload_id = context.partition_key
    run_id = context.run_id
    current = StageRun(stage=stage, attempt=context.retry_number + 1)

    stage_clock = time.monotonic()  # reset when the stage has really started (after the database is reached)

    def report_fraction(done: int, total: int) -> None:
        start, end = _percent(stage, done=False), _percent(stage, done=True)
        percent = start + (end - start) * done // max(total, 1)
        set_progress(database, upload_id, percent)
        eta = _update_eta(database, upload_id, run_id, stage, done / max(total, 1), time.monotonic() - stage_clock)
        progress.publish(ProgressEvent(upload_id=upload_id, run_id=run_id, stage=stage.value, status="progress",
                                       progress_percent=percent, message=f"{done}/{total}", **_eta_fields(eta)))

    current.report_fraction = report_fraction
    with retry_when_database_is_away(context):
        # Inside the retry: a run that starts while the database is away waits for it too.
        database = current.database = db.database
        stage_started(database, upload_id, run_id, stage, current.attempt)
        stage_clock = time.monotonic()
        eta = _update_eta(database, upload_id, run_id, stage, 0.0, 0.0)
        _publish(progress, upload_id, run_id, stage, "started", eta=eta)
        try:
            yield current
        except PoflowError as error:
            stage_finished(database, upload_id, run_id, stage, outcome="failed", error_code=error.code)
            if stage in STAGE_PROGRESS:  # a side stage (images) never fails the PO
                mark_failed(
                    database, upload_id, run_id=run_id, stage=stage.value, code=error.code, message=error.message
                )
            _publish(progress, upload_id, run_id, stage, "failed", message=str(error))
            raise dg.Failure(description=str(error), metadata={"error_code": error.code}, allow_retries=False) from None
        except Exception as error:
            if not is_database_unavailable(error):
                stage_finished(database, upload_id, run_id, stage, outcome="failed", error_code=type(error).__name__)
                _publish(progress, upload_id, run_id, stage, "failed", message=f"{type(error).__name__}: {error}")
            raise
        current.duration_ms = stage_finished(
            database, upload_id, run_id, stage, outcome=current.outcome, items=current.items, bytes_=current.bytes,
            signals=current.signals,
        )
        eta = _update_eta(database, upload_id, run_id, stage, 1.0, time.monotonic() - stage_clock)
        _publish(progress, upload_id, run_id, stage, "succeeded" if current.outcome == "success" else current.outcome,
                 eta=eta)


#: Tries of one op while the database is away: waits of 2, 4, 8, 16, 30, 30, 30 s ride out about two minutes
#: (the fault benchmark's 45 s PostgreSQL restart used five of them).
DATABASE_RETRIES = 7


#: SQLSTATEs of a lost or refused connection: class 08, and the server shutting down or starting up.
_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")
#: How drivers word it when there is no SQLSTATE (psycopg's refused connections, SQLite's lock timeout).
_CONNECTION_WORDS = ("connection", "could not connect", "server closed", "terminating", "database is locked")


def is_database_unavailable(error: BaseException) -> bool:
    """The database could not be reached or dropped the connection (outage, restart, SQLite lock timeout).

    Not: a missing table, a full disk, a statement timeout — those are recorded as the stage's failure.
    """
    if isinstance(error, (sa_exc.DisconnectionError, sa_exc.InterfaceError)):
        return True
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, sa_exc.OperationalError):
        return False
    state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if state:
        return str(state).startswith(_CONNECTION_SQLSTATES)
    text = str(error.orig).lower()
    return any(words in text for words in _CONNECTION_WORDS)


@contextmanager
def retry_when_database_is_away(context: dg.OpExecutionContext) -> Iterator[None]:
    """Turn "the database is unavailable" inside the block into a Dagster retry of the step (backing off)."""
    try:
        yield
    except Exception as error:
        if not is_database_unavailable(error):
            raise
        wait = min(30, 2 ** (context.retry_number + 1))
        context.log.warning(f"the database is unavailable ({type(error).__name__}); trying this step again in {wait} s")
        raise dg.RetryRequested(max_retries=DATABASE_RETRIES, seconds_to_wait=wait) from error


def _publish(
    progress: ProgressResource, upload_id: str, run_id: str, stage: Stage, status: str, message: str | None = None,
    eta=None,
) -> None:
    progress.publish(
        ProgressEvent(
            upload_id=upload_id,
            run_id=run_id,
            stage=stage.value,
            status=status,
            progress_percent=_percent(stage, done=status in ("succeeded", "skipped", "reused")),
            message=message,
            **_eta_fields(eta),
        )
    )


def _update_eta(database: Database, upload_id: str, run_id: str, stage: Stage, fraction: float, elapsed_s: float):
    """Estimate the PO's remaining time and store it on the workflow row; ``None`` when the PO is no longer
    running (it finished, or this is a side stage such as images). Never fails the stage: errors are logged."""
    if stage not in STAGE_PROGRESS:
        return None
    try:
        from poflow_dagster.analytics.live_eta import estimate_eta
        from poflow_dagster.store.eta import record_eta

        estimate = estimate_eta(database, upload_id, run_id, stage.value, fraction_done=fraction,
                                elapsed_in_stage_s=elapsed_s)
        return estimate if record_eta(database, upload_id, estimate) else None
    except Exception as error:  # the ETA is a courtesy; the stage goes on without it
        log.warning("live ETA of %s not updated: %s: %s", upload_id, type(error).__name__, error)
        return None


def _eta_fields(eta) -> dict:
    return {"eta_seconds": eta.seconds, "eta_at": eta.at} if eta is not None else {}


def _percent(stage: Stage, *, done: bool) -> int:
    """Progress after ``stage`` (done) or before it (started, failed); side stages run after completion."""
    if stage not in STAGE_PROGRESS:
        return 100
    if done:
        return STAGE_PROGRESS.get(stage, 100)
    before = [percent for s, percent in STAGE_PROGRESS.items() if percent < STAGE_PROGRESS.get(stage, 0)]
    return max(before, default=0)
