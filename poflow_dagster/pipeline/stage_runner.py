"""Runs one stage inside an op: workflow row, stage metrics, progress events, clean failures.

Progress while a stage works (``StageReporter``): the op's reports are queued and sent by one background thread,
so the stage never waits on the bus or the database. For each report the thread publishes the event first, then
writes the PO's percent and ETA on the workflow row. The ETA is computed without the database: the model and the
run's features are read once when the stage starts (and again when it ends). The row write is the newest state
only (coalesced while more events are queued), waits at most ``_ROW_WAIT_MS`` for the lock and is skipped, to be
tried again a little later, when the stage's own transaction holds it: SQLite's write lock while ``database_save``
writes a 5,000-line PO, or a PostgreSQL row lock on ``workflow_executions``.

So with Redis, listeners see a stage's progress as it happens even while its transaction is open. Without Redis,
events go to the ``progress_events`` table in the database itself: on PostgreSQL they are visible as they are
written, but a SQLite deployment has one writer at a time, so the events of a stage that holds a write
transaction are written (and reach listeners) when it commits. The reporter waits for that in its own thread,
never in the stage's, and tries an event the database refused (locked past its busy timeout) again.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dagster as dg
from sqlalchemy import exc as sa_exc

from poflow_dagster.analytics.live_eta import EtaEstimate, EtaInputs, po_features
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.stages import STAGE_PROGRESS, Stage
from poflow_dagster.resources import DatabaseResource, ProgressResource
from poflow_dagster.store.db import Database
from poflow_dagster.store.eta import record_progress
from poflow_dagster.store.progress_bus import ProgressBus, ProgressEvent
from poflow_dagster.store.uploads import upload_info
from poflow_dagster.store.workflow import mark_failed, stage_finished, stage_started

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
    #: Progress inside the stage: call with (items done, items in all[, message]) as items finish (LLM windows,
    #: saved lines, drafts, Shopify products); any thread may call it, as often as it likes (it is throttled).
    report_fraction: Callable[..., None] = lambda done, total, message=None: None
    #: One ``progress`` event per call, never throttled and never moving the PO's percent or ETA (a side stage's
    #: items as they happen: each image found, fetched, attached...): call with (message[, items done]).
    report_event: Callable[..., None] = lambda message, done=None: None
    #: The terminal event published after the stage ended well: (``completed`` | ``needs_review`` | ``duplicate``,
    #: message); set with ``finish_as``.
    terminal: tuple[str, str | None] | None = None
    #: The app database, connected (and migrated) by the runner before the op's work starts.
    database: Database = field(default=None, repr=False)  # type: ignore[assignment]

    def finish_as(self, status: str, message: str | None = None) -> None:
        """Publish the terminal ``status`` event (the PO is completed, needs review, or a duplicate) after this
        stage's own last event."""
        self.terminal = (status, message)

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

    Progress events: ``started`` when the run's first stage begins, ``stage_started``, ``progress`` as the op
    reports items (``stage.report_fraction(done, total)``), then ``stage_succeeded`` / ``stage_skipped`` /
    ``stage_reused`` / ``stage_failed``, and the terminal event the op asked for (``stage.finish_as``) or
    ``failed``. They are published in order from a background thread, so the bus, the database and the ETA
    never slow the stage (nor wait on a transaction the stage holds).

    A ``PoflowError`` (bad input, bad config, a Shopify or LLM call its client gave up on) fails the stage
    for good: the upload and workflow are marked failed with its code and a one-line reason, and Dagster
    sees a clean ``Failure`` without a traceback. The database being away (an outage, a restart) is the one
    thing retried here: the op runs again after 2, 4, 8, 16, 30, 30, 30 s (every stage is idempotent). Other errors
    are recorded and re-raised; ``po_failure_sensor`` then marks the workflow failed.
    """
    upload_id = context.partition_key
    run_id = context.run_id
    current = StageRun(stage=stage, attempt=context.retry_number + 1)
    reporter: StageReporter | None = None
    try:
        with retry_when_database_is_away(context):
            # Inside the retry: a run that starts while the database is away waits for it too.
            database = current.database = db.database
            new_run = stage_started(database, upload_id, run_id, stage, current.attempt)
            reporter = StageReporter(progress.bus_for(database), database, upload_id,
                                     upload_info(database, upload_id).merchant_id, run_id, stage)
            current.report_fraction = reporter.report
            current.report_event = reporter.event
            reporter.stage_started(first_of_run=bool(new_run))
            try:
                yield current
            except PoflowError as error:
                stage_finished(database, upload_id, run_id, stage, outcome="failed", error_code=error.code)
                reporter.stage_failed(str(error))
                if stage in STAGE_PROGRESS:  # a side stage (images) never fails the PO
                    mark_failed(
                        database, upload_id, run_id=run_id, stage=stage.value, code=error.code, message=error.message
                    )
                    reporter.terminal("failed", str(error))
                raise dg.Failure(description=str(error), metadata={"error_code": error.code},
                                 allow_retries=False) from None
            except Exception as error:
                if not is_database_unavailable(error):
                    stage_finished(database, upload_id, run_id, stage, outcome="failed",
                                   error_code=type(error).__name__)
                    reporter.stage_failed(f"{type(error).__name__}: {error}")
                raise
            # The stage's progress events go out before its row says it ended: the row never runs ahead of them.
            reporter.flush()
            current.duration_ms = stage_finished(
                database, upload_id, run_id, stage, outcome=current.outcome, items=current.items,
                bytes_=current.bytes, signals=current.signals,
            )
            reporter.stage_ended(current.outcome, current.items,
                                 current.notes[0] if current.outcome == "skipped" and current.notes else None)
            if current.terminal is not None:
                reporter.terminal(*current.terminal)
    finally:
        if reporter is not None:
            reporter.close()


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


def _percent(stage: Stage, *, done: bool) -> int:
    """Progress after ``stage`` (done) or before it (started, failed); side stages run after completion."""
    if stage not in STAGE_PROGRESS:
        return 100
    if done:
        return STAGE_PROGRESS.get(stage, 100)
    before = [percent for s, percent in STAGE_PROGRESS.items() if percent < STAGE_PROGRESS.get(stage, 0)]
    return max(before, default=0)


#: What each stage's events say: (when it starts, per item ``{done}/{total}``, when it ended ``{items}``).
_STAGE_TEXT: dict[Stage, tuple[str, str, str]] = {
    Stage.AI_PARSING: ("Parsing the document", "Parsing window {done}/{total}", "Parsed {items} lines"),
    Stage.DATABASE_SAVE: ("Saving the order", "Saving line {done}/{total}", "Saved {items} lines"),
    Stage.PRODUCT_DRAFT_CREATION: ("Creating product drafts", "Drafting product {done}/{total}",
                                   "{items} product drafts ready"),
    Stage.SHOPIFY_SYNC: ("Publishing to Shopify", "Publishing product {done}/{total} to Shopify",
                         "{items} products in Shopify"),
    Stage.STATUS_UPDATE: ("Finishing", "Finishing {done}/{total}", "Finished"),
    Stage.IMAGE_ATTACHMENT: ("Attaching product images", "Attaching image {done}/{total}", "{items} images attached"),
}

#: Throttle of ``progress`` events: a new one when the PO's percent moved 2 points, or 1 point and this long
#: after the last one, or the stage's items moved and ``_HEARTBEAT_S`` passed (slow stages), or all are done.
_MIN_INTERVAL_S = 0.1
_HEARTBEAT_S = 1.0
#: How long a progress report's write of the workflow row waits for its lock before it is skipped, and how long
#: after a skipped (or recent) write the next is tried.
_ROW_WAIT_MS = 50
_ROW_RETRY_S = 0.25
#: Tries of a table event the database refused (SQLite: locked beyond its busy timeout by a long transaction).
_TABLE_TRIES = 3


@dataclass
class _Pending:
    status: str
    percent: int
    at: dt.datetime
    elapsed_s: float
    items_done: int | None = None
    items_total: int | None = None
    message: str | None = None
    fraction: float | None = None  # where the stage is, for an ETA estimated by the thread; None = ``eta``
    eta: EtaEstimate | None = None  # an estimate made already (at stage boundaries, in the stage's own thread)
    store_percent: bool = False


class StageReporter:
    """One stage's progress events, numbered by the bus and sent in order from one background thread.

    ``report(done, total)`` maps the stage's items onto its band of the PO's percent (``STAGE_PROGRESS``) and
    is throttled (see ``_MIN_INTERVAL_S``): at most every point, never a step above two points when items are
    finer than that, and at least once a second while items move. Every event carries the live ETA (PO stages,
    while the PO runs) and the stage's throughput (items per second since it began).

    Database work per report: none in the reporting thread; in the background thread at most one ``UPDATE`` of
    the workflow row (coalesced, skipped while locked: see the module's docstring), plus the table bus's own
    insert when there is no Redis. The ETA's inputs are read at the stage's start and end only.
    """

    def __init__(self, bus: ProgressBus, database: Database, upload_id: str, merchant_id: str, run_id: str,
                 stage: Stage) -> None:
        self.bus, self.database = bus, database
        self.upload_id, self.merchant_id, self.run_id, self.stage = upload_id, merchant_id, run_id, stage
        self.start_percent, self.end_percent = _percent(stage, done=False), _percent(stage, done=True)
        self.clock = time.monotonic()
        self.last_percent = self.start_percent
        self.last_done = 0
        self.last_sent = self.clock
        self._lock = threading.Lock()
        self._eta_inputs: EtaInputs | None = None
        self._processing = stage in STAGE_PROGRESS  # the PO runs: its events carry an ETA
        self._row: tuple[int, EtaEstimate | None] | None = None  # the newest percent and ETA not yet on the row
        self._row_lock = threading.Lock()
        self._row_tried = 0.0  # when the row was last written or found locked
        self._row_locked = False
        self._table_bus = not bus.redis_url and bus.db is not None
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=f"poflow-progress-{stage.value}", daemon=True)
        self._thread.start()

    # What the stage runner and the op say --------------------------------------------------------------
    def stage_started(self, *, first_of_run: bool) -> None:
        self.clock = self.last_sent = time.monotonic()
        text = _STAGE_TEXT.get(self.stage, (self.stage.value, "", ""))[0]
        # Estimated here, before the op's work: a later estimate could race the op finishing the workflow.
        eta = self._boundary_eta(0.0, 0.0)
        if first_of_run:
            self._submit("started", self.start_percent, message="Processing started", eta=eta)
        self._submit("stage_started", self.start_percent, message=text, eta=eta)

    def report(self, done: int, total: int, message: str | None = None) -> None:
        """``done`` of ``total`` items of the stage are finished (any thread; cheap; throttled)."""
        try:
            self._report(done, total, message)
        except Exception as error:  # progress never fails the stage that reports it
            log.warning("progress of %s not reported: %s: %s", self.upload_id, type(error).__name__, error)

    def _report(self, done: int, total: int, message: str | None) -> None:
        if total <= 0:
            return
        done = max(0, min(done, total))
        with self._lock:
            now = time.monotonic()
            band = self.end_percent - self.start_percent
            percent = max(self.last_percent, min(self.end_percent, self.start_percent + band * done // total))
            since = now - self.last_sent
            moved = done > self.last_done
            if not moved:
                return
            send = (
                percent >= self.last_percent + 2
                or (percent > self.last_percent and since >= _MIN_INTERVAL_S)
                or since >= _HEARTBEAT_S
                or done == total
                or (band == 0 and (done - self.last_done) * 50 >= total and since >= _MIN_INTERVAL_S)
            )
            if not send:
                return
            self.last_percent, self.last_done, self.last_sent = percent, done, now
            template = _STAGE_TEXT.get(self.stage, ("", "{done}/{total}", ""))[1]
            self._submit("progress", percent, items_done=done, items_total=total,
                         message=message or template.format(done=done, total=total), fraction=done / total,
                         store_percent=True)

    def event(self, message: str, done: int | None = None) -> None:
        """One ``progress`` event saying ``message`` (``done``: the stage's items so far), sent as is: not
        throttled, and it leaves the PO's percent, ETA and workflow row alone (any thread; cheap)."""
        with self._lock:
            percent = self.last_percent
        self._submit("progress", percent, items_done=done, message=message[:200])

    def stage_ended(self, outcome: str, items: int | None, message: str | None = None) -> None:
        """The stage ended well (``success``, ``skipped`` or ``reused``), with ``items`` done (and why, if skipped)."""
        status = {"success": "stage_succeeded", "skipped": "stage_skipped", "reused": "stage_reused"}.get(
            outcome, "stage_succeeded")
        text = _STAGE_TEXT.get(self.stage, ("", "", "{items} items"))[2]
        with self._lock:
            self.last_percent = max(self.last_percent, self.end_percent)
        self._wait_for_queue(10.0)  # this stage's progress estimates are in: this one is the newest
        # Read again: the stage's own measurements (lines, SKUs, pages) are what the later stages' ETA rests on.
        eta = self._boundary_eta(1.0, time.monotonic() - self.clock, reload=True)
        self._submit(status, self.last_percent, items_done=items, items_total=items,
                     message=(message or text.format(items=items if items is not None else 0))[:500], eta=eta)

    def stage_failed(self, message: str) -> None:
        self._submit("stage_failed", self.last_percent, message=message[:500])

    def terminal(self, status: str, message: str | None = None) -> None:
        """The PO's final event; ``completed`` (and ``duplicate``) reach 100 %."""
        percent = 100 if status in ("completed", "duplicate") else self.last_percent
        self._submit(status, percent, message=message[:500] if message else None)

    def close(self, timeout_s: float = 30.0) -> None:
        """Send what is queued (waiting at most ``timeout_s``), then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("progress events of %s still queued after %.0f s; left to the thread", self.upload_id,
                        timeout_s)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait (at most ``timeout_s``) until every event submitted so far is sent, then put the newest percent
        and ETA on the workflow row (waiting for it: call this once the stage's transaction is over)."""
        self._wait_for_queue(timeout_s)
        self._write_row(wait_ms=None)

    def _wait_for_queue(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    # The background thread ------------------------------------------------------------------------------
    def _submit(self, status: str, percent: int, **fields) -> None:
        self._queue.put(_Pending(status=status, percent=percent, at=dt.datetime.now(dt.UTC),
                                 elapsed_s=time.monotonic() - self.clock, **fields))

    def _work(self) -> None:
        while True:
            try:  # while a row write is owed, wake up to retry it even when no event comes
                pending = self._queue.get(timeout=_ROW_RETRY_S if self._row is not None else None)
            except queue.Empty:
                self._write_row(wait_ms=_ROW_WAIT_MS)
                continue
            try:
                if pending is None:
                    self._write_row(wait_ms=_ROW_WAIT_MS, now=True)
                    return
                self._send(pending)
            except Exception as error:  # best effort: a stage never fails for its progress events
                log.warning("progress event of %s not sent: %s: %s", self.upload_id, type(error).__name__, error)
            finally:
                self._queue.task_done()

    def _send(self, pending: _Pending) -> None:
        eta = pending.eta
        if pending.fraction is not None:
            eta = self._progress_eta(pending.fraction, pending.elapsed_s, pending.at)
        throughput = None
        if pending.items_done and pending.elapsed_s > 0:
            throughput = round(pending.items_done / pending.elapsed_s, 3)
        # The event first: the bus (Redis) never waits on the database, whose lock the stage may hold.
        self._publish(ProgressEvent(
            upload_id=self.upload_id, merchant_id=self.merchant_id, run_id=self.run_id, status=pending.status,
            stage=self.stage.value, items_done=pending.items_done, items_total=pending.items_total,
            percent=pending.percent, message=pending.message,
            eta_seconds=round(eta.seconds, 3) if eta is not None else None, eta_at=eta.at if eta is not None else None,
            throughput=throughput, at=pending.at,
        ))
        if pending.store_percent and self.stage in STAGE_PROGRESS:
            with self._row_lock:
                self._row = (pending.percent, eta)
            self._write_row(wait_ms=_ROW_WAIT_MS)

    def _publish(self, event: ProgressEvent) -> None:
        published = self.bus.publish(event)
        tries = 1
        # The table bus numbers an event it wrote (seq ≥ 1); 0 = the database refused it (SQLite locked by a
        # transaction longer than its busy timeout): try again rather than lose it.
        while self._table_bus and published.seq == 0 and tries < _TABLE_TRIES:
            time.sleep(0.1 * tries)
            published = self.bus.publish(event)
            tries += 1

    # The ETA and the workflow row ---------------------------------------------------------------------------
    def _boundary_eta(self, fraction: float, elapsed_s: float, *, reload: bool = False) -> EtaEstimate | None:
        """Estimate at the stage's start or end and store it (with any percent not yet stored), waiting for the
        row: the stage holds no transaction then. ``None`` for side stages and once the PO no longer runs."""
        if self.stage not in STAGE_PROGRESS:
            return None
        try:
            if self._eta_inputs is None:
                self._eta_inputs = EtaInputs.load(self.database, self.upload_id, self.run_id)
            elif reload:  # the model stays; the features gained what this stage measured
                self._eta_inputs = EtaInputs(self._eta_inputs.model,
                                             po_features(self.database, self.upload_id, self.run_id))
            estimate = self._eta_inputs.estimate(self.stage.value, fraction_done=fraction, elapsed_in_stage_s=elapsed_s)
            with self._row_lock:
                percent = self._row[0] if self._row is not None else None
                stored = record_progress(self.database, self.upload_id, self.run_id, percent=percent,
                                         estimate=estimate)
                self._row = None
            self._processing = bool(stored)
            return estimate if stored else None
        except Exception as error:  # the ETA is a courtesy; the stage goes on without it
            log.warning("live ETA of %s not updated: %s: %s", self.upload_id, type(error).__name__, error)
            return None

    def _progress_eta(self, fraction: float, elapsed_s: float, at: dt.datetime) -> EtaEstimate | None:
        """The ETA of a progress report, from the inputs read at the stage's start (no database)."""
        if not self._processing or self._eta_inputs is None:
            return None
        try:
            return self._eta_inputs.estimate(self.stage.value, fraction_done=fraction, elapsed_in_stage_s=elapsed_s,
                                             now=at)
        except Exception as error:
            log.warning("live ETA of %s not estimated: %s: %s", self.upload_id, type(error).__name__, error)
            return None

    def _write_row(self, *, wait_ms: int | None, now: bool = False) -> None:
        """Put the newest reported percent and ETA on the workflow row, if one is owed.

        With ``wait_ms`` (the background thread): not while more events are queued and the row was written in
        the last ``_ROW_RETRY_S`` (coalesced), not within ``_ROW_RETRY_S`` of finding it locked, and skipped
        when the lock is not free within ``wait_ms``. ``now`` writes whatever is queued; ``wait_ms=None`` waits
        for the lock as long as the database allows."""
        with self._row_lock:
            if self._row is None:
                return
            if wait_ms is not None and not now:
                recent = time.monotonic() - self._row_tried < _ROW_RETRY_S
                if recent and (self._row_locked or self._queue.qsize() > 0):
                    return
            percent, eta = self._row
            try:
                stored = record_progress(self.database, self.upload_id, self.run_id, percent=percent, estimate=eta,
                                         wait_ms=wait_ms)
            except Exception as error:
                log.warning("progress of %s not stored: %s: %s", self.upload_id, type(error).__name__, error)
                stored = True  # not tried again: the next report, or the stage's end, stores a newer state
            self._row_tried = time.monotonic()
            self._row_locked = stored is None
            if stored is None:
                return
            self._row = None
            if not stored:  # the PO finished (or another run took over): no more ETAs
                self._processing = False

