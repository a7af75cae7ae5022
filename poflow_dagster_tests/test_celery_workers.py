"""Scale-out for real: two Celery run workers on this machine, the production instance file
(deploy/dagster_home/dagster.yaml: dagster-postgres + CeleryRunLauncher), PostgreSQL and Redis; 20 uploads,
half submitted at once through the webserver (``poflow upload``), half left to ``upload_sensor``."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import time
from collections import Counter

import dagster as dg
import pytest
import sqlalchemy as sa

from poflow_dagster_tests.conftest import REDIS_TEST_URL
from poflow_dagster_tests.stack import create_pg_database, deploy_instance_yaml, drop_pg_database, new_stack

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(900)]

UPLOADS = 20


def test_twenty_uploads_across_two_celery_workers(tmp_path, samples, monkeypatch):
    dagster_db, dagster_url = create_pg_database("poflow_dagster")
    app_db, app_url = create_pg_database("poflow_app")
    app_url = app_url.replace("postgresql+psycopg2://", "postgresql+psycopg://")
    prefix = f"t{secrets.token_hex(4)}-"
    env = {
        "DAGSTER_PG_URL": dagster_url,
        "POFLOW_CELERY_BROKER_URL": REDIS_TEST_URL,
        "POFLOW_CELERY_QUEUE_PREFIX": prefix,
        "POFLOW_CELERY_DEFAULT_QUEUE": f"{prefix}sheet",
        "POFLOW_DATABASE_URL": app_url,
        "POFLOW_HOME": str(tmp_path / "home"),
        "REDIS_URL": REDIS_TEST_URL,
        "POFLOW_REDIS_NAMESPACE": f"test-{prefix}",
    }
    stack = new_stack(tmp_path, instance_yaml=deploy_instance_yaml(), env=env)
    try:
        stack.start_webserver()
        stack.start_daemon()
        stack.start_worker("w1", ["sheet", "scan"], 2)
        stack.start_worker("w2", ["sheet", "scan"], 2)
        stack.wait_ready()

        content = samples["acme-po-1001.csv"].read_bytes()

        def upload(index: int) -> tuple[str, bool, str]:
            """Upload PO number 2000+index with the command (every other one submits its run directly).
            One merchant's shop, as in production (twenty merchants on the one emulator shop would make twenty
            first full catalog passes, ~1,000 points each at 100 points/s); twenty distinct POs."""
            direct = index % 2 == 0
            path = tmp_path / f"po-{index}.csv"
            path.write_bytes(content.replace(b"PO-1001", f"PO-{2000 + index}".encode(), 1))
            args = [sys.executable, "-m", "poflow_dagster.cli", "upload", str(path),
                    "--merchant", "acme", *([] if direct else ["--no-submit"])]
            done = subprocess.run(args, env=stack.env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip(), direct, done.stderr

        # One after the other: uploaded at once, the sensor may claim a direct upload before its command submits
        # (fine: ``already_requested``), which would blur what this test pins down (who started which run).
        uploaded = [upload(index) for index in range(UPLOADS)]
        upload_ids = [upload_id for upload_id, _, _ in uploaded]
        notes = [(direct, note) for _, direct, note in uploaded]
        assert len(set(upload_ids)) == UPLOADS
        # Every direct upload's run was submitted by the upload command itself, not left to the sensor.
        assert all("submitted" in note for direct, note in notes if direct), notes

        engine = sa.create_engine(app_url)
        deadline = time.monotonic() + 600
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                statuses = dict(conn.execute(sa.text("SELECT upload_id, status FROM workflow_executions")).all())
            if sum(status in ("completed", "failed") for status in statuses.values()) == UPLOADS:
                break
            time.sleep(1)
        assert [statuses.get(upload_id) for upload_id in upload_ids] == ["completed"] * UPLOADS, statuses
        with engine.connect() as conn:
            po_counts = dict(conn.execute(sa.text(
                "SELECT upload_id, count(*) FROM purchase_orders GROUP BY upload_id")).all())
        engine.dispose()
        assert po_counts == {upload_id: 1 for upload_id in upload_ids}  # none lost, none doubled

        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
            assert type(instance.run_launcher).__name__ == "CeleryRunLauncher"
            # A PO is completed by status_update; its run goes on with the image step, then ends.
            finished_by = time.monotonic() + 180
            runs = instance.get_runs(dg.RunsFilter(job_name="po_job"))
            while not all(run.is_finished for run in runs) and time.monotonic() < finished_by:
                time.sleep(0.5)
                runs = instance.get_runs(dg.RunsFilter(job_name="po_job"))
        per_upload = Counter(run.tags.get("dagster/partition") for run in runs)
        assert per_upload == Counter({upload_id: 1 for upload_id in upload_ids})  # one run per upload
        assert {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
        direct_runs = {run.tags["dagster/partition"] for run in runs if run.tags.get("poflow/submitted") == "direct"}
        assert direct_runs == set(upload_ids[0::2])
        assert all(run.tags.get("dagster-celery/queue") == f"{prefix}sheet" for run in runs)

        # Both workers executed PO runs (the queue spreads them), and together exactly the runs there are.
        po_run_ids = {run.run_id for run in runs}
        executed = {name: _executed_runs(stack.log(name).read_text(errors="replace")) & po_run_ids
                    for name in ("w1", "w2")}
        assert executed["w1"] and executed["w2"], {k: len(v) for k, v in executed.items()}
        assert executed["w1"] | executed["w2"] == po_run_ids and not executed["w1"] & executed["w2"]
    finally:
        stack.stop()
        drop_pg_database(dagster_db)
        drop_pg_database(app_db)


_RUN_STARTED = re.compile(r"po_job - ([0-9a-f-]{36}) - \d+ - RUN_START")


def _executed_runs(log: str) -> set[str]:
    return set(_RUN_STARTED.findall(log))
