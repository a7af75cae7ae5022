"""The real path: a dagster-daemon with a temporary DAGSTER_HOME, a file dropped into the inbox,
upload_sensor -> queued run -> run worker -> completed workflow -> images (same run). Every process is stopped."""

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
        assert images_seen, "the PO run did not attach the images"
        with db.session() as session:
            upload = session.scalar(sa.select(Upload))
            assert upload.source == "inbox" and upload.status == "completed"
            runs = dict(session.execute(sa.select(StageMetric.stage, StageMetric.run_id)).all())
        assert set(runs) == {"ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update",
                             "image_attachment"}
        assert len(set(runs.values())) == 1  # one run: the PO, its checks and its images
        assert (inbox / ".processed" / "acme-po-1001.csv").exists()
    finally:
        _stop_group(daemon)
        close_database(db_url)
    assert _group_gone(daemon.pid), "processes of the daemon's group survived"


def _group_processes(pgid: int) -> dict[int, str]:
    """pid -> command line of every live process in process group ``pgid`` (read from /proc)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.daemon
def test_killed_run_worker_never_leaves_the_workflow_processing(tmp_path: Path, samples):
    """kill -9 of the run worker while shopify_sync waits on a Shopify that never answers: the code server
    reports the run FAILURE, then po_failure_sensor or workflow_reconciler marks the upload failed (with
    the stage it died in). Automatic run retries are off here (with them on, the retry run takes over and
    the workflow is truthfully processing under the new run id)."""
    import socket

    import yaml

    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    instance_config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    instance_config.pop("run_retries", None)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    blackhole = socket.socket()  # accepts connections (backlog) and never answers
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    port = blackhole.getsockname()[1]
    home = tmp_path / "poflow_home"
    db_url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPIFY_", "REDIS_URL", "OPENAI_", "POFLOW_"))}
    env.update(DAGSTER_HOME=str(dagster_home), POFLOW_HOME=str(home), POFLOW_DATABASE_URL=db_url,
               SHOPIFY_SHOP_URL=f"http://127.0.0.1:{port}", SHOPIFY_ACCESS_TOKEN="t",
               POFLOW_SHOPIFY_ALLOWED_HOSTS=f"127.0.0.1:{port}")
    db = get_database(db_url)
    from poflow_dagster.intake import upload_file

    daemon = subprocess.Popen(
        [sys.executable, "-m", "dagster._daemon", "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=env, start_new_session=True,
        stdout=open(tmp_path / "daemon.log", "wb"), stderr=subprocess.STDOUT,
    )
    log = lambda: (tmp_path / "daemon.log").read_text()[-3000:]  # noqa: E731
    try:
        upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
        deadline = time.monotonic() + 120
        run_id = None
        while time.monotonic() < deadline and run_id is None:  # until shopify_sync is under way
            assert daemon.poll() is None, log()
            with db.session() as session:
                run_id = session.scalar(sa.select(StageMetric.run_id).where(
                    StageMetric.stage == "shopify_sync", StageMetric.outcome == "running"))
            time.sleep(0.3)
        assert run_id is not None, log()
        workers = {pid: cmd for pid, cmd in _group_processes(daemon.pid).items() if "spawn_main" in cmd}
        assert len(workers) == 1, _group_processes(daemon.pid)
        [worker] = workers
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()

        workflow = None
        while time.monotonic() < deadline:
            with db.session() as session:
                workflow = session.scalar(sa.select(WorkflowExecution).where(WorkflowExecution.upload_id == upload.id))
            if workflow.status != "processing":
                break
            time.sleep(0.5)
        assert workflow is not None and workflow.status == "failed", log()
        print(f"\nkill -9 -> workflow failed: {time.monotonic() - killed_at:.1f}s: {workflow.error_message}")
        assert workflow.run_id == run_id and workflow.current_stage == "shopify_sync"
        assert workflow.error_code == "run_failed" and "SIGKILL" in workflow.error_message, workflow.error_message
        with db.session() as session:
            assert session.scalar(sa.select(Upload.status).where(Upload.id == upload.id)) == "failed"
    finally:
        _stop_group(daemon)
        blackhole.close()
        close_database(db_url)
    assert _group_gone(daemon.pid), "processes of the daemon's group survived"
