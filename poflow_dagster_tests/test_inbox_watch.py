"""``poflow inbox-watch``: inbox files are registered and their runs submitted at once, never twice.

The webserver is the GraphQL stand-in of test_run_submit.py (the real webserver + Celery path is
test_celery_workers.py); the database is real (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from poflow_dagster.inbox_watch import watch_inbox
from poflow_dagster.intake import ingest_inbox
from poflow_dagster.store.schema import Upload
from poflow_dagster.store.uploads import claim_uploads_for_runs
from poflow_dagster_tests.test_run_submit import SUCCESS, graphql  # noqa: F401 - the fixture


def _drop(home: Path, merchant: str, name: str, data: bytes, *, settled: bool = True) -> Path:
    box = home / "inbox" / merchant
    box.mkdir(parents=True, exist_ok=True)
    path = box / name
    path.write_bytes(data)
    if settled:  # written a while ago: no need to wait out the "may still be being written" age
        past = time.time() - 60
        os.utime(path, (past, past))
    return path


def _wait(condition, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def test_the_watcher_submits_an_inbox_files_run_and_leaves_nothing_for_the_sensor(
    db, home, samples, graphql, monkeypatch  # noqa: F811 - the imported fixture
):
    server = graphql(SUCCESS)
    monkeypatch.setenv("POFLOW_DAGSTER_URL", server.url)
    stop = threading.Event()
    submitted = []
    watcher = threading.Thread(target=watch_inbox, args=(db, home, stop),
                               kwargs={"interval_s": 0.05, "on_submitted": submitted.append})
    watcher.start()
    try:
        order = samples["acme-po-1001.csv"].read_bytes()
        _drop(home, "acme", "order.csv", order)
        _wait(lambda: submitted)  # the watcher has the webserver's answer (the request itself arrives earlier)
        (_path, request), = server.requests
        upload_id = request["variables"]["partition"]
        with db.session() as session:
            upload = session.scalar(select(Upload).where(Upload.id == upload_id))
            assert (upload.merchant_id, upload.source, upload.original_filename) == ("acme", "inbox", "order.csv")
            assert upload.run_requested_at is not None
        assert [(s.upload_id, s.outcome, s.run_id) for s in submitted] == [(upload_id, "submitted", "run-1")]
        assert (home / "inbox" / "acme" / ".processed" / "order.csv").read_bytes() == order
        assert claim_uploads_for_runs(db, 10) == []  # upload_sensor has nothing left to start
        # The same bytes again: recorded as a duplicate, no second run.
        _drop(home, "acme", "again.csv", order)
        _wait(lambda: (home / "inbox" / "acme" / ".processed" / "again.csv").exists())
        time.sleep(0.2)
        assert len(server.requests) == 1
    finally:
        stop.set()
        watcher.join(10)
    assert not watcher.is_alive()


def test_two_inbox_readers_never_register_a_file_twice(db, home):
    """The watcher and upload_sensor may read the inbox at the same moment: one holds the inbox lock, the other
    reads nothing that pass, so no file becomes an upload and a duplicate of itself."""
    for n in range(30):
        _drop(home, "acme", f"po-{n}.csv", f"sku,description,qty,unit_cost\nA-{n},Widget,1,2.00\n".encode())
    start = threading.Barrier(3)
    found: list[list[str]] = [[], [], []]

    def reader(slot: int) -> None:
        start.wait()
        for _ in range(20):
            found[slot].extend(u.id for u in ingest_inbox(db, home, min_age_seconds=0).uploads)

    readers = [threading.Thread(target=reader, args=(slot,)) for slot in range(3)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join(120)
    ids = [upload_id for ids in found for upload_id in ids]
    assert len(ids) == len(set(ids)) == 30
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Upload)) == 30
        assert session.scalar(select(func.count()).select_from(Upload).where(Upload.duplicate_of.is_not(None))) == 0


def test_inbox_watch_command_registers_files_and_stops_quietly_on_sigterm(home, samples):
    env = {**os.environ, "POFLOW_DAGSTER_URL": "off"}
    process = subprocess.Popen([sys.executable, "-m", "poflow_dagster.cli", "inbox-watch", "--interval", "0.1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _drop(home, "shop-9", "order.xlsx", samples["lumiere-commande-3003.xlsx"].read_bytes(), settled=False)
        line = process.stdout.readline().split()  # "<upload id> left_to_sensor": the sensor starts the run
        assert len(line) == 2 and line[0].startswith("up-") and line[1] == "left_to_sensor", line
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 143
        stderr = process.stderr.read()
        assert "watching" in stderr and "Traceback" not in stderr, stderr
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert (home / "inbox" / "shop-9" / ".processed" / "order.xlsx").exists()
