"""``poflow inbox-watch``: inbox files become uploads and their runs are submitted within a second.

``upload_sensor`` also reads the inbox, but only when the daemon ticks it (every ~5 s); this long-lived process
looks every ``interval`` seconds (default 0.25) and submits each new upload's run straight to the Dagster webserver,
exactly as ``poflow upload`` does (``run_submit``: same run key, so the sensor never starts a second run; with no
webserver the sensor starts it). Only one process reads the inbox at a time (``intake.ingest_inbox`` holds a lock),
so running the watcher next to the sensor never registers a file twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from poflow_dagster.intake import ingest_inbox
from poflow_dagster.run_submit import Submitted, submit_upload_run
from poflow_dagster.store.db import Database

log = logging.getLogger(__name__)

#: Seconds between two looks at the inbox.
DEFAULT_INTERVAL_SECONDS = 0.25
#: A file is read once it has not been modified for this long (it may still be being written before).
DEFAULT_MIN_AGE_SECONDS = 0.5


def ingest_and_submit(db: Database, home: Path, *, min_age_seconds: float = DEFAULT_MIN_AGE_SECONDS) -> list[Submitted]:
    """One pass: register the inbox's settled files, then submit each new upload's run (duplicates get none)."""
    result = ingest_inbox(db, home, min_age_seconds=min_age_seconds)
    for path, reason in result.rejected:
        log.warning("inbox file rejected (%s); moved to %s", reason, path)
    return [submit_upload_run(db, upload.id) for upload in result.uploads if not upload.duplicate_of]


def watch_inbox(
    db: Database,
    home: Path,
    stop: threading.Event,
    *,
    interval_s: float = DEFAULT_INTERVAL_SECONDS,
    min_age_seconds: float = DEFAULT_MIN_AGE_SECONDS,
    on_submitted: Callable[[Submitted], None] | None = None,
) -> None:
    """Pass after pass until ``stop`` is set. A pass that fails (e.g. the database is down) is logged and the next
    one tries again: files stay in the inbox until they are registered."""
    while not stop.is_set():
        try:
            for submitted in ingest_and_submit(db, home, min_age_seconds=min_age_seconds):
                if on_submitted is not None:
                    on_submitted(submitted)
        except Exception as error:  # keep watching; the sensor is the safety net meanwhile
            log.warning("inbox pass failed: %s", " ".join(str(error).split()))
        stop.wait(interval_s)
