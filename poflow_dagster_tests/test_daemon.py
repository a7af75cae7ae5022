"""The real path: a dagster-daemon with a temporary DAGSTER_HOME, a file dropped into the inbox,
upload_sensor -> queued run -> run worker -> completed workflow -> image run. Every process is stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from poflow_dagster.store.db import close_database, get_database
from poflow_dagster.store.schema import StageMetric, Upload, WorkflowExecution

REPO = Path(__file__).resolve().parents[1]
DEADLINE_SECONDS = 180


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the daemon's whole process group (code server, run workers), then SIGKILL what lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def _group_gone(pgid: int, timeout: float = 15.0) -> bool:
    """True once no process of the group is left (killed children take a moment to be reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.daemon
def test_inbox_file_is_processed_by_a_real_daemon(tmp_path: Path, samples):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")  # the root instance file, as shipped
    home = tmp_path / "poflow_home"
    db_url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPIFY_", "REDIS_URL", "OPENAI_"))}
    env.update(DAGSTER_HOME=str(dagster_home), POFLOW_HOME=str(home), POFLOW_DATABASE_URL=db_url)
    db = get_database(db_url)  # migrate before the daemon's first tick

    daemon = subprocess.Popen(
        [sys.executable, "-m", "dagster._daemon", "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=env, start_new_session=True,
        stdout=open(tmp_path / "daemon.log", "wb"), stderr=subprocess.STDOUT,
    )
    try:
        inbox = home / "inbox" / "acme"
        inbox.mkdir(parents=True)
        staged = inbox / ".acme-po-1001.csv.part"  # write under a hidden name, then rename: never half-read
        staged.write_bytes(samples["acme-po-1001.csv"].read_bytes())
        dropped_at = time.monotonic()
        staged.rename(inbox / "acme-po-1001.csv")

        completed_at = None
        images_seen = False
        while time.monotonic() - dropped_at < DEADLINE_SECONDS:
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            with db.session() as session:
                status = session.scalar(sa.select(WorkflowExecution.status))
                if status == "failed":
                    pytest.fail(f"workflow failed: {session.scalar(sa.select(WorkflowExecution.error_message))}")
                if status == "completed" and completed_at is None:
                    completed_at = time.monotonic()
                images_seen = bool(session.scalar(
                    sa.select(sa.func.count(StageMetric.id)).where(StageMetric.stage == "image_attachment")
                ))
            if completed_at and images_seen:
                break
            time.sleep(0.5)
        assert completed_at is not None, (tmp_path / "daemon.log").read_text()[-3000:]
        print(f"\nfile drop -> workflow completed: {completed_at - dropped_at:.1f}s")
        assert images_seen, "image_attachment_sensor did not start the image run"
        with db.session() as session:
            upload = session.scalar(sa.select(Upload))
            assert upload.source == "inbox" and upload.status == "completed"
            stages = set(session.scalars(sa.select(StageMetric.stage)))
        assert {"ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"} <= stages
        assert (inbox / ".processed" / "acme-po-1001.csv").exists()
    finally:
        _stop_group(daemon)
        close_database(db_url)
    assert _group_gone(daemon.pid), "processes of the daemon's group survived"
