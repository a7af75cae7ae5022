"""Direct run submits (run_submit): what is sent to the webserver, and what happens when it is away.

The real webserver path (GraphQL against `dagster-webserver`, runs on Celery workers, the sensor never
doubling a run) is tested end to end in test_celery_workers.py; here a small local HTTP server records the
GraphQL request so the contract (partition, run key, tags, queue) is checked without starting Dagster."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from poflow_dagster.intake import upload_file
from poflow_dagster.run_submit import submit_upload_run
from poflow_dagster.store.db import MIGRATIONS_DIR, head_revision
from poflow_dagster.store.schema import Upload, WorkflowExecution
from poflow_dagster.store.uploads import claim_uploads_for_runs


class _GraphQL:
    """A webserver stand-in: answers every POST /graphql with ``answer`` and keeps the requests."""

    def __init__(self, answer: dict, delay_s: float = 0.0) -> None:
        self.answer, self.requests, self.delay_s = answer, [], delay_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, json.loads(body)))
                time.sleep(outer.delay_s)
                data = json.dumps(outer.answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


SUCCESS = {"data": {"addDynamicPartition": {"__typename": "AddDynamicPartitionSuccess"},
                    "launchRun": {"__typename": "LaunchRunSuccess", "run": {"runId": "run-1", "status": "QUEUED"}}}}


@pytest.fixture
def graphql():
    servers = []

    def start(answer: dict, delay_s: float = 0.0) -> _GraphQL:
        servers.append(_GraphQL(answer, delay_s))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_submit_sends_partition_and_run_with_the_sensors_run_key(db, home, samples, graphql):
    server = graphql(SUCCESS)
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    submitted = submit_upload_run(db, upload.id, url=server.url)
    assert (submitted.outcome, submitted.run_id) == ("submitted", "run-1")
    (path, request), = server.requests
    assert path == "/graphql"
    variables = request["variables"]
    assert variables["partition"] == upload.id
    assert variables["params"]["selector"]["jobName"] == "po_job"
    tags = {t["key"]: t["value"] for t in variables["params"]["executionMetadata"]["tags"]}
    assert tags["dagster/partition"] == tags["dagster/run_key"] == upload.id
    assert tags["dagster/sensor_name"] == "upload_sensor"
    assert tags["poflow/merchant"] == "acme" and tags["poflow/file"] == "acme-po-1001.csv"
    # The sensor will not ask for this upload again, and a second submit sends nothing.
    assert claim_uploads_for_runs(db, 10) == []
    assert submit_upload_run(db, upload.id, url=server.url).outcome == "already_requested"
    assert len(server.requests) == 1
    with db.session() as session:
        assert session.scalar(select(WorkflowExecution.status).where(WorkflowExecution.upload_id == upload.id)) == "pending"


@pytest.mark.parametrize("answer", [
    {"data": {"addDynamicPartition": {"__typename": "AddDynamicPartitionSuccess"},
              "launchRun": {"__typename": "PythonError", "message": "code location unavailable"}}},
    {"errors": [{"message": "Unknown argument"}]},
])
def test_a_refused_submit_leaves_the_upload_to_the_sensor(db, home, samples, graphql, answer):
    server = graphql(answer)
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    submitted = submit_upload_run(db, upload.id, url=server.url)
    assert submitted.outcome == "left_to_sensor" and submitted.run_id is None
    assert claim_uploads_for_runs(db, 10) == [upload.id]  # the request was withdrawn: the sensor takes it


def test_a_submit_without_an_answer_keeps_the_request(db, home, samples, graphql):
    """No answer in time: the webserver may still create the run, so the sensor must not start another one."""
    server = graphql(SUCCESS, delay_s=3.0)
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    submitted = submit_upload_run(db, upload.id, url=server.url, timeout_s=0.5)
    assert submitted.outcome == "unconfirmed" and len(server.requests) == 1
    assert claim_uploads_for_runs(db, 10) == []  # still requested: only the reconciler may withdraw it


def test_no_webserver_is_not_an_error(db, home, samples):
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    submitted = submit_upload_run(db, upload.id, url="http://127.0.0.1:9")  # nothing listens on port 9
    assert submitted.outcome == "left_to_sensor" and "no answer" in submitted.detail
    with db.session() as session:
        assert session.scalar(select(Upload.run_requested_at).where(Upload.id == upload.id)) is None


def test_upload_command_submits_and_reports_it(db_url, home, samples, graphql, monkeypatch):
    server = graphql(SUCCESS)
    env = {"POFLOW_HOME": str(home), "POFLOW_DATABASE_URL": db_url, "POFLOW_DAGSTER_URL": server.url,
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "upload", str(samples["acme-po-1001.csv"]),
                           "--merchant", "acme"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("up-") and "run run-1 submitted" in done.stderr
    assert len(server.requests) == 1
    # --no-submit stores only; with the webserver away the command still succeeds and says who starts the run.
    other = samples["iberia-pedido-4004.csv"]
    done = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "upload", str(other), "--merchant", "acme",
                           "--no-submit"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and len(server.requests) == 1
    env["POFLOW_DAGSTER_URL"] = "http://127.0.0.1:9"
    done = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "upload", str(samples["nordwind-bestellung-2002.tsv"]),
                           "--merchant", "acme"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "upload_sensor will start the run" in done.stderr


def test_head_revision_is_alembics_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


class _Hangup:
    """A webserver stand-in that reads the whole request, then drops the connection without an answer (or
    answers with ``status``): whether it launched a run cannot be known."""

    def __init__(self, status: int | None = None) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                if status is None:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [None, 500, 502])
def test_a_request_sent_but_not_answered_keeps_the_request(db, home, samples, status):
    """The webserver got the request, then the connection dropped (or a server error came back): the run may
    exist, so the request stands for the reconciler — withdrawing it would let the sensor start a second run."""
    server = _Hangup(status)
    try:
        upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
        submitted = submit_upload_run(db, upload.id, url=server.url)
    finally:
        server.close()
    assert server.requests == 1
    assert submitted.outcome == "unconfirmed" and submitted.run_id is None
    assert claim_uploads_for_runs(db, 10) == []


def test_a_request_refused_as_invalid_is_left_to_the_sensor(db, home, samples):
    server = _Hangup(400)
    try:
        upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
        submitted = submit_upload_run(db, upload.id, url=server.url)
    finally:
        server.close()
    assert submitted.outcome == "left_to_sensor" and "HTTP 400" in submitted.detail
    assert claim_uploads_for_runs(db, 10) == [upload.id]
