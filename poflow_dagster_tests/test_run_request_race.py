"""One run request per upload when a direct submit and upload_sensor race for the same upload (PostgreSQL).

The interleaving that gave one upload two po_job runs under load: upload_sensor's claim
(``claim_uploads_for_runs``: SELECT ... FOR UPDATE SKIP LOCKED, then set ``run_requested_at``) holds the upload's
row while ``poflow upload`` marks the same upload requested (``mark_run_requested``). Marking used to read the row
without a lock, see no request, and then overwrite the sensor's once the claim committed: both went on to request a
run (the sensor's RunRequest and the direct GraphQL launchRun), and the daemon's run-key check cannot catch a
GraphQL run created after it looked. The test reproduces that interleaving with real row locks: the claim's
transaction stays open until the marking is seen waiting for it in PostgreSQL (no sleeps).
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, text, update

from poflow_dagster.intake import upload_file
from poflow_dagster.run_submit import submit_upload_run
from poflow_dagster.store.schema import Upload
from poflow_dagster.store.types import utcnow
from poflow_dagster.store.uploads import claim_uploads_for_runs, mark_run_requested

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _wait_until_blocked_by(db, blocker_pid: int, timeout_s: float = 30.0) -> None:
    """Return once some session waits for a lock held by ``blocker_pid`` (polls PostgreSQL, bounded)."""
    deadline = time.monotonic() + timeout_s
    with db.engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                {"pid": blocker_pid},
            ).scalar_one()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the direct submit's marking never waited for the sensor's claim")


def test_marking_waits_for_the_sensors_claim_and_then_yields(db, home, samples):
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    marked: list[bool] = []
    with db.engine.connect() as sensor:  # upload_sensor's claim, held open mid-transaction
        claimed = sensor.execute(
            select(Upload.id)
            .where(Upload.status == "received", Upload.run_requested_at.is_(None))
            .with_for_update(skip_locked=True)
        ).scalars().all()
        assert claimed == [upload.id]
        claimed_at = utcnow()
        sensor.execute(update(Upload).where(Upload.id == upload.id).values(run_requested_at=claimed_at))
        sensor_pid = sensor.execute(text("SELECT pg_backend_pid()")).scalar_one()

        direct = threading.Thread(target=lambda: marked.append(mark_run_requested(db, upload.id)))
        direct.start()
        _wait_until_blocked_by(db, sensor_pid)  # the marking has read the row and now waits for the claim
        sensor.commit()
        direct.join(30)
    assert not direct.is_alive()
    assert marked == [False]  # the sensor requested it: the direct submit sends nothing
    with db.session() as session:
        assert session.scalar(select(Upload.run_requested_at).where(Upload.id == upload.id)) == claimed_at


def test_a_direct_submit_after_the_sensors_claim_sends_nothing(db, home, samples):
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    assert claim_uploads_for_runs(db, 10) == [upload.id]
    submitted = submit_upload_run(db, upload.id, url="http://127.0.0.1:9")  # would fail loudly if it sent
    assert submitted.outcome == "already_requested"
    with db.session() as session:
        assert session.scalar(select(Upload.run_requested_at).where(Upload.id == upload.id)) is not None


def test_the_sensor_skips_an_upload_the_direct_submit_marked(db, home, samples):
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    assert mark_run_requested(db, upload.id) is True
    assert mark_run_requested(db, upload.id) is False
    assert claim_uploads_for_runs(db, 10) == []
