"""``poflow watch ID``: follow one upload until it finishes.

Events come from the progress bus (``ProgressBus.read_merchant_events`` for the upload's merchant, filtered to
the upload: Redis when ``REDIS_URL`` is set, else the database's ``progress_events``), and the upload's workflow
row is polled beside it, so the watch also works with no bus at all and never misses the end. The exit code is
the outcome: 0 completed (or a duplicate upload, which has nothing to run), 1 failed, 3 needs_review,
4 ``--timeout`` reached.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Upload, WorkflowExecution

log = logging.getLogger(__name__)

#: Final status → exit code of ``poflow watch``.
EXIT_CODES = {"completed": 0, "duplicate": 0, "failed": 1, "needs_review": 3}
TIMEOUT_EXIT = 4
TERMINAL = frozenset(EXIT_CODES)
#: With a working bus, the polled workflow row is shown only after this long without an event.
BUS_QUIET_SECONDS = 5.0
#: Workflow row status → the progress-event status it corresponds to.
_ROW_STATUS = {"pending": "queued", "processing": "progress"}

Emit = Callable[[dict[str, Any]], None]


def row_event(upload: Upload, workflow: WorkflowExecution | None) -> dict[str, Any]:
    """The upload's current state as a progress event (same JSON fields as ``ProgressEvent``)."""
    if upload.status == "duplicate":
        status = "duplicate"
    elif workflow is None:
        status = "queued"
    elif upload.status == "approved" and workflow.status == "needs_review":
        status = "queued"  # approved: its continuation run is about to start
    else:
        status = _ROW_STATUS.get(workflow.status, workflow.status)
    percent = 100 if status in ("completed", "duplicate") else (workflow.progress_percent if workflow else 0)
    message = None
    if workflow is not None and workflow.error_code:
        message = f"{workflow.error_code}: {workflow.error_message or ''}".strip()
    elif upload.error_code:
        message = f"{upload.error_code}: {upload.error_message or ''}".strip()
    return {
        "upload_id": upload.id,
        "merchant_id": upload.merchant_id,
        "run_id": workflow.run_id if workflow else None,
        "seq": getattr(workflow, "event_seq", None) if workflow else None,
        "status": status,
        "stage": workflow.current_stage if workflow else None,
        "items_done": None,
        "items_total": None,
        "percent": int(percent or 0),
        "message": message,
        "eta_seconds": workflow.eta_seconds if workflow and status not in TERMINAL else None,
        "eta_at": workflow.eta_at.isoformat() if workflow and workflow.eta_at and status not in TERMINAL else None,
        "throughput": None,
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "source": "database",
    }


def load_row(db: Database, upload_id: str) -> tuple[Upload, WorkflowExecution | None]:
    """The upload and its workflow row; ``PoflowError("unknown_upload")`` if there is no such upload."""
    from sqlalchemy import select

    from poflow_dagster.store.uploads import get_upload

    with db.session() as session:
        upload = get_upload(session, upload_id)
        workflow = session.scalar(select(WorkflowExecution).where(WorkflowExecution.upload_id == upload_id))
        session.expunge_all()
    return upload, workflow


class _BusReader:
    """Events of one upload from the progress bus, or nothing if the bus cannot be read (then the row is
    polled alone)."""

    def __init__(self, redis_url: str | None, db: Database, merchant_id: str, upload_id: str) -> None:
        self.merchant_id, self.upload_id = merchant_id, upload_id
        self.after: str | None = None  # new events only (None = from the moment of each read)
        self.bus = None
        try:
            from poflow_dagster.store.progress_bus import ProgressBus

            bus = ProgressBus(redis_url, db)
            if hasattr(bus, "read_merchant_events"):
                self.bus = bus
                if hasattr(bus, "last_event_id"):  # pin the start: nothing published from here on is missed
                    self.after = bus.last_event_id(merchant_id)
            else:
                bus.close()
        except Exception as error:  # no bus (or an older one): poll the database only
            log.debug("progress bus unavailable for watch: %s", error)
            self.bus = None

    def read(self, wait_seconds: float) -> list[dict[str, Any]]:
        if self.bus is None:
            time.sleep(wait_seconds)
            return []
        try:
            pairs = self.bus.read_merchant_events(
                self.merchant_id, self.after,  # None until the first event: only new ones (the row covers a gap)
                block_ms=max(1, int(wait_seconds * 1000)), count=500,
            )
        except Exception as error:
            log.warning("progress bus read failed, polling the database only: %s", error)
            self.close()
            time.sleep(wait_seconds)
            return []
        events = []
        for event_id, event in pairs:
            self.after = event_id
            data = event.model_dump(mode="json") if hasattr(event, "model_dump") else dict(event)
            if data.get("upload_id") == self.upload_id:
                events.append(data)
        return events

    def close(self) -> None:
        if self.bus is not None:
            try:
                self.bus.close()
            finally:
                self.bus = None


def watch_upload(
    db: Database,
    upload_id: str,
    emit: Emit,
    *,
    redis_url: str | None,
    timeout: float | None = None,
    poll_seconds: float = 0.5,
) -> tuple[int, dict[str, Any]]:
    """Follow ``upload_id`` until a terminal status (or ``timeout`` seconds), calling ``emit`` for each new
    state: bus events as they arrive, and the workflow row whenever its stage, percent or status changed
    without an event saying so. Returns (exit code, last state)."""
    upload, workflow = load_row(db, upload_id)
    reader = _BusReader(redis_url, db, upload.merchant_id, upload_id)
    upload, workflow = load_row(db, upload_id)  # read after the bus position is pinned: no gap between them
    deadline = None if timeout is None else time.monotonic() + timeout
    last: dict[str, Any] = {}
    last_bus_event = time.monotonic()

    def shown(state: dict[str, Any]) -> None:
        """Emit ``state`` unless it is a row snapshot that adds nothing: the row is only a fallback, shown when
        the bus is absent or quiet (it runs ahead of the events still queued), never backwards, never twice."""
        nonlocal last, last_bus_event
        if state.get("source") != "database":
            last_bus_event = time.monotonic()
        elif state.get("status") not in TERMINAL:
            if reader.bus is not None and last and time.monotonic() - last_bus_event < BUS_QUIET_SECONDS:
                return
            if last and (state.get("percent") or 0) < (last.get("percent") or 0):
                return
            if last and (state.get("stage"), state.get("percent"), state.get("status")) == (
                last.get("stage"), last.get("percent"), last.get("status")
            ):
                return
        last = state
        emit(state)

    try:
        shown(row_event(upload, workflow))
        while last.get("status") not in TERMINAL:
            if deadline is not None and time.monotonic() >= deadline:
                return TIMEOUT_EXIT, last
            wait = poll_seconds if deadline is None else max(0.0, min(poll_seconds, deadline - time.monotonic()))
            for event in reader.read(wait):
                shown(event)
            if last.get("status") in TERMINAL:
                break
            upload, workflow = load_row(db, upload_id)
            state = row_event(upload, workflow)
            if state["status"] in TERMINAL:
                for event in reader.read(0.05):  # the bus's own final events first, if they are there
                    shown(event)
                if last.get("status") in TERMINAL:
                    break
            shown(state)
    finally:
        reader.close()
    return EXIT_CODES[last["status"]], last


def json_line(state: dict[str, Any]) -> str:
    return json.dumps(state, ensure_ascii=False, default=str)


def describe(state: dict[str, Any]) -> str:
    """One line: ``stage ai_parsing · Parsing page 4/5… · ETA ~15 s (21:04:12 UTC)``."""
    from poflow_dagster.status_view import eta_text

    parts = [f"{state.get('status')}", f"stage {state.get('stage') or '-'}"]
    if state.get("message"):
        parts.append(str(state["message"]))
    if state.get("eta_seconds") is not None:
        parts.append(eta_text(float(state["eta_seconds"]), state.get("eta_at"), None))
    return " · ".join(parts)


class RichWatch:
    """The rich progress bar of ``poflow watch`` (stage, message, percent, ETA)."""

    def __init__(self, upload_id: str, console=None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self.console = console or Console()
        self.progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False),  # ids, file names and messages are
            BarColumn(),                                                 # shown as written, never as markup
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}", markup=False),
            console=self.console,
        )
        self.task = self.progress.add_task(upload_id, total=100, detail="waiting for the first event")

    def __enter__(self) -> RichWatch:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, state: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=int(state.get("percent") or 0), detail=describe(state))
