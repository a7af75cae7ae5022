"""``poflow serve``'s API against real databases (SQLite and PostgreSQL) and real Redis: tokens, uploads,
status, stats, and the server-sent event stream over a real HTTP server."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from poflow_dagster.api import create_app
from poflow_dagster.api.settings import ApiSettings
from poflow_dagster.images.status import upload_image_status
from poflow_dagster.status_view import status_json
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Upload, WorkflowExecution
from poflow_dagster.store.tokens import issue_token, revoke_tokens
from poflow_dagster.store.workflow import mark_completed, mark_failed, stage_started, status_report
from poflow_dagster.domain.stages import Stage

REDIS_URL = os.environ.get("POFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _settings(home: Path, db_url: str, *, redis_url: str | None = None, namespace: str | None = None,
              max_bytes: int = 50 * 1024 * 1024) -> ApiSettings:
    return ApiSettings(home=home, database_url=db_url, redis_url=redis_url, namespace=namespace,
                       max_upload_bytes=max_bytes)


@pytest.fixture
def api_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def client(api_home: Path, db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(api_home, db_url, max_bytes=4096))) as test_client:
        yield test_client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _csv(po_number: str) -> bytes:
    return (f"PO Number,{po_number}\nSupplier,Acme\nsku,description,quantity,unit_cost\n"
            f"A-1,Widget,2,3.50\n").encode()


def _assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert "\n" not in body["error"]["message"] and "Traceback" not in response.text


def test_requests_without_a_live_token_are_401(client: TestClient, db: Database):
    token = issue_token(db, "shop-a").token
    assert token.startswith("pf_") and len(token) > 40
    for headers in ({}, _bearer("pf_not-a-real-token"), _bearer("garbage"), {"Authorization": "Basic abc"}):
        _assert_error(client.get("/api/uploads", headers=headers), 401, "unauthorized")
    assert client.get("/api/uploads", headers=_bearer(token)).status_code == 200
    for path in ("/api/uploads", "/api/stats"):  # a token in the URL only counts on the event stream
        _assert_error(client.get(f"{path}?token={token}"), 401, "unauthorized")
        assert client.get(path, headers=_bearer(token)).status_code == 200
    _assert_error(client.post(f"/api/uploads?token={token}", files={"file": ("a.csv", b"x")}), 401, "unauthorized")
    ok = client.get(f"/api/events?token={token}&last_event_id=abc")  # authenticated (then: a bad resume id)
    _assert_error(ok, 400, "invalid_last_event_id")
    assert revoke_tokens(db, "shop-a", token=token) == 1
    _assert_error(client.get("/api/uploads", headers=_bearer(token)), 401, "unauthorized")
    _assert_error(client.get(f"/api/events?token={token}"), 401, "unauthorized")
    _assert_error(client.post("/api/uploads", headers=_bearer(token), files={"file": ("a.csv", b"x")}),
                  401, "unauthorized")


def test_only_the_hash_of_a_token_is_stored(db: Database):
    from poflow_dagster.store.schema import MerchantToken

    token = issue_token(db, "shop-a", label="ci").token
    with db.session() as session:
        row = session.scalar(select(MerchantToken))
        stored = [str(v) for v in (row.token_sha256, row.label, row.merchant_id)]
    assert all(token not in value for value in stored)
    assert len(row.token_sha256) == 64


def test_upload_then_status_list_and_duplicate(client: TestClient, db: Database, api_home: Path):
    token = issue_token(db, "shop-a").token
    content = _csv("PO-1")
    created = client.post("/api/uploads", headers=_bearer(token), files={"file": ("order 1.csv", content, "text/csv")})
    assert created.status_code == 201, created.text
    first = created.json()
    assert first["duplicate_of"] is None and first["status"] == "received"
    upload_id = first["upload_id"]

    shown = client.get(f"/api/uploads/{upload_id}", headers=_bearer(token))
    assert shown.status_code == 200
    assert shown.json() == json.loads(json.dumps(status_json(status_report(db, upload_id),
                                                             upload_image_status(db, upload_id))))  # = poflow status --format json
    assert shown.json()["file"] == "order 1.csv" and shown.json()["merchant_id"] == "shop-a"
    with db.session() as session:
        stored = session.scalar(select(Upload).where(Upload.id == upload_id))
        assert stored.source == "api" and Path(stored.stored_path).read_bytes() == content
    assert not list((api_home / "uploads" / ".api-incoming").iterdir())  # the temp copy is gone

    again = client.post("/api/uploads", headers=_bearer(token), files={"file": ("copy.csv", content, "text/csv")})
    assert again.status_code == 201
    assert again.json()["duplicate_of"] == upload_id and again.json()["status"] == "duplicate"

    listed = client.get("/api/uploads", headers=_bearer(token)).json()["uploads"]
    assert [row["upload_id"] for row in listed] == [again.json()["upload_id"], upload_id]  # newest first
    only_dupes = client.get("/api/uploads?status=duplicate", headers=_bearer(token)).json()["uploads"]
    assert [row["upload_id"] for row in only_dupes] == [again.json()["upload_id"]]
    pending = client.get("/api/uploads?status=pending&since=1h&limit=5", headers=_bearer(token)).json()["uploads"]
    assert [row["upload_id"] for row in pending] == [upload_id]
    _assert_error(client.get("/api/uploads?status=nonsense", headers=_bearer(token)), 400, "invalid_status")
    _assert_error(client.get("/api/uploads?since=yesterday-ish", headers=_bearer(token)), 400, "invalid_since")


def test_a_token_never_sees_another_merchants_uploads(client: TestClient, db: Database):
    token_a, token_b = issue_token(db, "shop-a").token, issue_token(db, "shop-b").token
    upload_id = client.post("/api/uploads", headers=_bearer(token_a), files={"file": ("a.csv", _csv("PO-A"))}).json()[
        "upload_id"]
    foreign = client.get(f"/api/uploads/{upload_id}", headers=_bearer(token_b))
    missing = client.get("/api/uploads/up-20260101T000000-00000000", headers=_bearer(token_b))
    _assert_error(foreign, 404, "unknown_upload")
    _assert_error(missing, 404, "unknown_upload")
    assert foreign.json()["error"]["message"].replace(upload_id, "X") == \
        missing.json()["error"]["message"].replace("up-20260101T000000-00000000", "X")  # nothing reveals it exists
    assert client.get("/api/uploads", headers=_bearer(token_b)).json()["uploads"] == []
    assert client.get("/api/stats", headers=_bearer(token_b)).json()["total"] == 0
    assert client.get(f"/api/uploads/{upload_id}", headers=_bearer(token_a)).status_code == 200


def test_too_large_upload_is_413_and_leaves_nothing(client: TestClient, db: Database, api_home: Path):
    token = issue_token(db, "shop-a").token
    big = b"x" * 5000  # the client fixture allows 4096 bytes
    stated = client.post("/api/uploads", headers=_bearer(token), files={"file": ("big.csv", big)})
    _assert_error(stated, 413, "file_too_large")
    assert len(stated.text.splitlines()) == 1

    boundary = "poflowtestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n\r\n").encode() \
        + big + f"\r\n--{boundary}--\r\n".encode()
    chunked = client.post(  # no Content-Length: the byte count while streaming decides
        "/api/uploads", content=iter([body[i:i + 1000] for i in range(0, len(body), 1000)]),
        headers={**_bearer(token), "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    _assert_error(chunked, 413, "file_too_large")
    with db.session() as session:
        assert session.scalar(select(Upload)) is None
    assert not list((api_home / "uploads" / ".api-incoming").iterdir())
    _assert_error(client.post("/api/uploads", headers=_bearer(token), files={"other": ("a.csv", b"abc")}),
                  400, "invalid_upload")
    _assert_error(client.post("/api/uploads", headers=_bearer(token), json={"file": "abc"}),
                  415, "unsupported_media_type")


def _chunked_multipart(parts: list[tuple[str, bytes]], boundary: str = "poflowtestboundary"):
    """A multipart body of (field name, bytes) parts sent in 1000-byte chunks (no Content-Length)."""
    body = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.csv\"\r\n\r\n".encode()
        + data + b"\r\n" for name, data in parts) + f"--{boundary}--\r\n".encode()
    return iter([body[i:i + 1000] for i in range(0, len(body), 1000)]), \
        {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_the_whole_body_counts_towards_the_limit_not_only_the_file(client: TestClient, db: Database,
                                                                   api_home: Path):
    token = issue_token(db, "shop-a").token
    # a small file, and 200 KB in another field: over the 4096-byte limit plus the framing allowance
    content, headers = _chunked_multipart([("file", _csv("PO-1")), ("padding", b"y" * 200_000)])
    response = client.post("/api/uploads", content=content, headers={**_bearer(token), **headers})
    _assert_error(response, 413, "file_too_large")
    assert len(response.text.splitlines()) == 1
    many = [("file", _csv("PO-2"))] + [(f"extra{i}", b"z") for i in range(10)]
    content, headers = _chunked_multipart(many)
    _assert_error(client.post("/api/uploads", content=content, headers={**_bearer(token), **headers}),
                  400, "too_many_parts")
    with db.session() as session:
        assert session.scalar(select(Upload)) is None
    assert not list((api_home / "uploads" / ".api-incoming").iterdir())
    content, headers = _chunked_multipart([("file", _csv("PO-3")), ("note", b"hello")])  # a few parts are fine
    assert client.post("/api/uploads", content=content, headers={**_bearer(token), **headers}).status_code == 201


def test_stats_count_the_merchants_uploads_by_status(client: TestClient, db: Database):
    token = issue_token(db, "shop-a").token
    other = issue_token(db, "shop-b").token

    def upload(tok: str, name: str) -> str:
        return client.post("/api/uploads", headers=_bearer(tok), files={"file": (name, _csv(name))}).json()["upload_id"]

    pending, running, done_now, done_earlier, failed = (upload(token, f"po-{i}.csv") for i in range(5))
    stage_started(db, running, "run-1", Stage.AI_PARSING, 1)
    mark_completed(db, done_now, "run-2")
    mark_completed(db, done_earlier, "run-3")
    mark_failed(db, failed, run_id="run-4", stage="ai_parsing", code="unreadable", message="bad file")
    with db.session() as session:  # synthetic: this one finished half an hour ago
        workflow = session.scalar(select(WorkflowExecution).where(WorkflowExecution.upload_id == done_earlier))
        workflow.completed_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    mark_completed(db, upload(other, "theirs.csv"), "run-5")  # another merchant's: never counted

    stats = client.get("/api/stats", headers=_bearer(token)).json()
    assert stats["counts"] == {"pending": 1, "processing": 1, "completed": 2, "failed": 1, "needs_review": 0,
                               "duplicate": 0}
    assert stats["total"] == 5 and stats["active_runs"] == 1
    assert stats["throughput"]["completed_last_5_min"] == 1
    assert stats["throughput"]["completed_last_60_min"] == 2
    assert pending and client.get("/healthz").json()["status"] == "ok"


def test_page_and_openapi_are_served(client: TestClient):
    page = client.get("/")
    assert page.status_code == 200 and "EventSource" in page.text and 'id="upload-form"' in page.text
    for response in (page, client.get("/healthz"), client.get("/api/uploads")):  # errors too
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-content-type-options"] == "nosniff"
    # the page sends the header on fetch() and puts the token in the URL only for EventSource
    assert 'headers: {Authorization: "Bearer " + token}' in page.text
    assert page.text.count("?token=") == 1 and '"/api/events?token="' in page.text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/uploads", "/api/uploads/{upload_id}", "/api/events", "/api/stats", "/healthz"} <= set(paths)
    upload_body = paths["/api/uploads"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload_body["properties"]["file"]["format"] == "binary"  # /docs can send a file
    _assert_error(client.get("/nowhere"), 404, "not_found")


# --- server-sent events over a real HTTP server ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["redis", "database"])
def bus_config(request) -> Iterator[tuple[str | None, str]]:
    """(redis url or None for the database fallback, a namespace of its own); its Redis keys are removed after."""
    namespace = f"poflow-test:{secrets.token_hex(6)}"
    url = REDIS_URL if request.param == "redis" else None
    yield url, namespace
    if url:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(f"{namespace}:*"):
            client.delete(key)
        client.close()


@pytest.fixture
def server(api_home: Path, db_url: str, bus_config) -> Iterator[str]:
    """``create_app`` under uvicorn on a free port (a thread of this process); yields its base URL."""
    redis_url, namespace = bus_config
    app = create_app(_settings(api_home, db_url, redis_url=redis_url, namespace=namespace))
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                       timeout_graceful_shutdown=1))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


class SseClient:
    """Reads ``/api/events`` in a thread; parsed events (id, event, data) land in ``events``."""

    def __init__(self, url: str, token: str, last_event_id: str | None = None) -> None:
        self.events: queue.Queue = queue.Queue()
        self.opened = threading.Event()
        self.retry: int | None = None
        self._stop = threading.Event()
        headers = {**_bearer(token), "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()
        assert self.opened.wait(15), "the event stream did not open"

    def _run(self, url: str, headers: dict) -> None:
        try:
            self._read(url, headers)
        except (httpx.HTTPError, RuntimeError, AttributeError):  # closed under it
            if not self._stop.is_set():
                raise

    def _read(self, url: str, headers: dict) -> None:
        with httpx.Client(timeout=httpx.Timeout(30, read=30)) as http:
            with http.stream("GET", f"{url}/api/events", headers=headers) as response:
                self._response = response
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(":"):
                        self.opened.set()
                    elif line.startswith("retry:"):
                        self.retry = int(line[6:].strip())
                    elif line == "":
                        if "data" in fields:
                            self.events.put(fields)
                        fields = {}
                    else:
                        name, _, value = line.partition(":")
                        fields[name] = value[1:] if value.startswith(" ") else value

    def take(self, count: int, timeout: float = 15) -> list[dict]:
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            try:
                got.append(self.events.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                break
        return got

    def close(self) -> None:
        self._stop.set()
        response = getattr(self, "_response", None)
        if response is not None:
            response.close()


def _publish(bus, upload_id: str, merchant_id: str, percent: int, message: str):
    from poflow_dagster.store.progress_bus import ProgressEvent

    return bus.publish(ProgressEvent(upload_id=upload_id, merchant_id=merchant_id, run_id="run-1", status="progress",
                                     stage="ai_parsing", items_done=percent, items_total=100, percent=percent,
                                     message=message))


def test_sse_streams_the_merchants_events_only_and_resumes_without_loss(server: str, db_url: str, bus_config):
    from poflow_dagster.store.db import get_database
    from poflow_dagster.store.progress_bus import ProgressBus

    db = get_database(db_url)
    redis_url, namespace = bus_config
    token_a, token_b = issue_token(db, "shop-a").token, issue_token(db, "shop-b").token
    with httpx.Client(base_url=server) as http:
        up_a = http.post("/api/uploads", headers=_bearer(token_a), files={"file": ("a.csv", _csv("A"))}).json()
        up_b = http.post("/api/uploads", headers=_bearer(token_b), files={"file": ("b.csv", _csv("B"))}).json()
    bus = ProgressBus(redis_url, db=db, namespace=namespace)
    try:
        _publish(bus, up_a["upload_id"], "shop-a", 1, "before anyone listened")
        listener = SseClient(server, token_a)  # opened = its place is fixed ("from now")
        for percent in (10, 20, 30):
            _publish(bus, up_a["upload_id"], "shop-a", percent, f"Parsing {percent}%")
            _publish(bus, up_b["upload_id"], "shop-b", percent, "shop-b's secret")
        first = listener.take(3)
        assert listener.take(1, timeout=1.0) == []  # nothing of shop-b's, nothing from before
        listener.close()
        payloads = [json.loads(e["data"]) for e in first]
        assert [p["percent"] for p in payloads] == [10, 20, 30]
        assert {p["merchant_id"] for p in payloads} == {"shop-a"} and all(e["event"] == "progress" for e in first)
        assert listener.retry == 2000
        seqs = [p["seq"] for p in payloads]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3

        for percent in (40, 50):  # while nobody listens
            _publish(bus, up_a["upload_id"], "shop-a", percent, f"Parsing {percent}%")
        resumed = SseClient(server, token_a, last_event_id=first[-1]["id"])
        more = resumed.take(2)
        assert resumed.take(1, timeout=1.0) == []  # no duplicates of what was seen
        resumed.close()
        assert [json.loads(e["data"])["percent"] for e in more] == [40, 50]
        assert [json.loads(e["data"])["seq"] for e in more] == [seqs[-1] + 1, seqs[-1] + 2]

        from_start = SseClient(server, token_b, last_event_id="0")  # ?last_event_id=0: all that is kept
        theirs = from_start.take(3)
        from_start.close()
        assert [json.loads(e["data"])["message"] for e in theirs] == ["shop-b's secret"] * 3
    finally:
        bus.close()


def test_resume_position_must_be_an_event_id(client: TestClient, db: Database):
    token = issue_token(db, "shop-a").token
    _assert_error(client.get(f"/api/events?token={token}&last_event_id=abc"), 400, "invalid_last_event_id")
    _assert_error(client.get("/api/events", headers={**_bearer(token), "Last-Event-ID": "1; DROP"}),
                  400, "invalid_last_event_id")


@pytest.mark.parametrize("redis_mode", [True, False], ids=["redis", "database"])
def test_resume_id_must_be_of_the_active_bus(api_home: Path, db_url: str, db: Database, redis_mode: bool):
    """A Redis stream id on the database bus (or a row id on Redis) is a 400, not a stream that never delivers."""
    app = create_app(_settings(api_home, db_url, redis_url=REDIS_URL if redis_mode else None,
                               namespace=f"poflow-test:{secrets.token_hex(6)}"))
    token = issue_token(db, "shop-a").token
    wrong = ["123", "7"] if redis_mode else ["123-0", "1700000000000-5"]
    from poflow_dagster.api.errors import ApiError
    from poflow_dagster.api.events import resume_position

    class _Req:  # resume_position on its own (before the fix the stream opened and never delivered)
        def __init__(self, value: str) -> None:
            self.headers, self.query_params, self.app = {"last-event-id": value}, {}, app

    for value in wrong:
        with pytest.raises(ApiError) as raised:
            resume_position(_Req(value))
        assert raised.value.status == 400 and raised.value.code == "invalid_last_event_id"
    token = issue_token(db, "shop-a").token
    with TestClient(app) as test_client:  # and over HTTP: a JSON 400 before any stream opens
        _assert_error(test_client.get("/api/events", headers={**_bearer(token), "Last-Event-ID": wrong[0]}),
                      400, "invalid_last_event_id")
    for value in (["0", "1700000000000-0", "12-3"] if redis_mode else ["0", "123"]):
        assert resume_position(_Req(value)) == value


def test_a_hostile_file_name_stays_inside_the_store(client: TestClient, db: Database, api_home: Path):
    token = issue_token(db, "shop-a").token
    created = client.post("/api/uploads", headers=_bearer(token), files={"file": ("../../evil\n.csv", b"a,b\n")})
    assert created.status_code == 201
    with db.session() as session:
        stored = Path(session.scalar(select(Upload.stored_path)))
    assert (api_home / "uploads").resolve() in stored.parents and "\n" not in stored.name


def test_cors_is_off_unless_origins_are_configured(api_home: Path, db_url: str):
    origin = {"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(_settings(api_home, db_url))) as closed:
        assert "access-control-allow-origin" not in closed.options("/api/stats", headers=origin).headers
    settings = ApiSettings(home=api_home, database_url=db_url, redis_url=None, namespace=None,
                           max_upload_bytes=1024, cors_origins=["https://shop.example"])
    with TestClient(create_app(settings)) as open_:
        allowed = open_.options("/api/stats", headers=origin)
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"


def test_cli_issues_lists_and_revokes_tokens(home: Path, db: Database):
    from click.testing import CliRunner

    from poflow_dagster.cli import main
    from poflow_dagster.store.tokens import verify_token

    runner = CliRunner()
    issued = runner.invoke(main, ["merchant", "token", "shop-a", "--label", "storefront"])
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip()
    assert token.startswith("pf_") and verify_token(db, token) == "shop-a"
    second = runner.invoke(main, ["merchant", "token", "shop-a"]).stdout.strip()
    listed = runner.invoke(main, ["merchant", "tokens", "shop-a"]).stdout
    assert "storefront" in listed and token not in listed and listed.count("live") == 2
    revoked = runner.invoke(main, ["merchant", "revoke-token", "shop-a", "--label", "storefront"])
    assert revoked.exit_code == 0 and "revoked 1 token" in revoked.stdout
    assert verify_token(db, token) is None and verify_token(db, second) == "shop-a"
    assert runner.invoke(main, ["merchant", "revoke-token", "shop-a", second]).exit_code == 0
    again = runner.invoke(main, ["merchant", "revoke-token", "shop-a", second])
    assert again.exit_code == 2 and "error: no_matching_token:" in again.stderr
    assert verify_token(db, second) is None


def test_tokens_in_query_strings_never_reach_the_access_log(api_home: Path, db_url: str):
    import logging

    create_app(_settings(api_home, db_url))
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', (
        "127.0.0.1:5000", "GET", "/api/events?token=pf_secret123&last_event_id=7", "1.1", 200), None)
    for log_filter in logging.getLogger("uvicorn.access").filters:
        log_filter.filter(record)
    assert "pf_secret123" not in record.getMessage() and "token=***&last_event_id=7" in record.getMessage()


# --- history that is no longer kept, the shared table poller, the one upload list ---------------------------


def _forget_oldest(db: Database, redis_url: str | None, namespace: str, merchant_id: str, keep: int) -> None:
    """What trimming does to the merchant's history: only its newest ``keep`` events stay (Redis ``XTRIM``, or
    the table's rows deleted as ``_prune`` deletes them)."""
    if redis_url:
        client = redis.Redis.from_url(redis_url)
        client.xtrim(f"{namespace}:events:{merchant_id}", maxlen=keep, approximate=False)
        client.close()
        return
    from sqlalchemy import delete

    from poflow_dagster.store.schema import ProgressEventRow

    with db.session() as session:
        ids = session.scalars(select(ProgressEventRow.id).where(ProgressEventRow.merchant_id == merchant_id)
                              .order_by(ProgressEventRow.id)).all()
        session.execute(delete(ProgressEventRow).where(ProgressEventRow.id.in_(ids[:-keep])))


def test_resuming_from_before_the_kept_history_sends_reset_first(server: str, db_url: str, bus_config):
    from poflow_dagster.store.db import get_database
    from poflow_dagster.store.progress_bus import ProgressBus

    db = get_database(db_url)
    redis_url, namespace = bus_config
    token = issue_token(db, "shop-a").token
    with httpx.Client(base_url=server) as http:
        upload_id = http.post("/api/uploads", headers=_bearer(token), files={"file": ("a.csv", _csv("A"))}).json()[
            "upload_id"]
    bus = ProgressBus(redis_url, db=db, namespace=namespace)
    try:
        for percent in range(1, 7):
            _publish(bus, upload_id, "shop-a", percent, f"step {percent}")
        everything = SseClient(server, token, last_event_id="0")
        ids = [e["id"] for e in everything.take(6)]
        everything.close()
        assert len(ids) == 6

        within = SseClient(server, token, last_event_id=ids[3])  # still kept: no reset, just what followed
        assert [(e["event"], json.loads(e["data"])["percent"]) for e in within.take(2)] == [("progress", 5),
                                                                                               ("progress", 6)]
        assert within.take(1, timeout=1.0) == []
        within.close()

        _forget_oldest(db, redis_url, namespace, "shop-a", keep=3)  # events 1–3 are gone
        stale = SseClient(server, token, last_event_id=ids[1])  # it saw 1 and 2: event 3 was never sent to it
        frames = stale.take(4)
        stale.close()
        assert frames[0]["event"] == "reset" and "id" not in frames[0]
        assert json.loads(frames[0]["data"]) == {"reason": "history_trimmed", "oldest_id": ids[3]}
        assert [json.loads(f["data"])["percent"] for f in frames[1:]] == [4, 5, 6]  # then from the oldest kept
        assert [f["id"] for f in frames[1:]] == ids[3:]
    finally:
        bus.close()


def _serve(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                       timeout_graceful_shutdown=1))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return uv, thread, f"http://127.0.0.1:{port}"


def test_database_streams_share_one_poller_per_merchant(api_home: Path, db_url: str, db: Database):
    """Without Redis, 6 streams of 2 merchants read the table through 2 pollers: every table read while they
    listen is a poller's (none per client), each stream gets each of its merchant's events once, and a
    merchant's poller stops when its last stream leaves."""
    from sqlalchemy import event as sa_event

    from poflow_dagster.store.db import get_database
    from poflow_dagster.store.progress_bus import ProgressBus

    app = create_app(_settings(api_home, db_url))
    hub = app.state.table_events
    uv, thread, url = _serve(app)
    reads: list[str] = []

    def count(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "progress_events" in statement:
            reads.append(statement)

    engine = get_database(db_url).engine
    streams: list[SseClient] = []
    bus = ProgressBus(None, db=db, namespace="unused")
    try:
        tokens = {m: issue_token(db, m).token for m in ("shop-a", "shop-b")}
        uploads = {}
        with httpx.Client(base_url=url) as http:
            for m, token in tokens.items():
                uploads[m] = http.post("/api/uploads", headers=_bearer(token),
                                       files={"file": (f"{m}.csv", _csv(m))}).json()["upload_id"]
        streams = [SseClient(url, tokens[m]) for m in ("shop-a",) * 4 + ("shop-b",) * 2]
        assert hub.pollers == 2
        sa_event.listen(engine, "before_cursor_execute", count)
        polls_before = hub.polls
        for percent in range(1, 6):
            for m in tokens:
                _publish(bus, uploads[m], m, percent, f"{m} {percent}")
        got = [[json.loads(e["data"]) for e in s.take(5)] for s in streams]
        time.sleep(0.5)  # a few more idle polls
        sa_event.remove(engine, "before_cursor_execute", count)
        polls = hub.polls - polls_before
        publisher_reads = 10  # each publish reads its upload's highest kept seq
        assert 0 < len(reads) - publisher_reads <= polls + 2, (len(reads), polls)  # +2: a read counted mid-poll
        for stream_events, m in zip(got, ("shop-a",) * 4 + ("shop-b",) * 2, strict=True):
            assert [(e["merchant_id"], e["percent"]) for e in stream_events] == [(m, p) for p in range(1, 6)]
        for s in streams:
            assert s.take(1, timeout=0.5) == []  # nothing twice
        for s in streams[:4]:
            s.close()
        deadline = time.monotonic() + 30  # the server notices a closed stream at its next heartbeat at the latest
        while hub.pollers != 1 and time.monotonic() < deadline:
            with httpx.Client(base_url=url) as http:
                http.get("/healthz")
            time.sleep(0.2)
        assert hub.pollers == 1
    finally:
        for s in streams:
            s.close()
        bus.close()
        uv.should_exit = True
        thread.join(timeout=10)


def test_upload_list_pages_with_a_cursor(client: TestClient, db: Database):
    token = issue_token(db, "shop-a").token
    ids = [client.post("/api/uploads", headers=_bearer(token), files={"file": (f"{n}.csv", _csv(f"PO-{n}"))}).json()[
        "upload_id"] for n in range(5)]
    issue_token(db, "shop-b")
    seen, cursor, pages = [], None, 0
    while True:
        query = "/api/uploads?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query, headers=_bearer(token)).json()
        seen += [row["upload_id"] for row in page["uploads"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # an upload that arrives meanwhile never shifts the pages (keyset, not offset)
        if pages == 1:
            client.post("/api/uploads", headers=_bearer(token), files={"file": ("new.csv", _csv("PO-new"))})
    assert seen == ids[::-1] and pages == 3
    assert client.get("/api/uploads?limit=5", headers=_bearer(token)).json()["next_cursor"] is not None  # 6 now
    _assert_error(client.get("/api/uploads?cursor=abc", headers=_bearer(token)), 400, "invalid_cursor")


def test_api_and_cli_lists_share_one_status_vocabulary(db: Database, tmp_path: Path):
    """Every state an upload can be in, listed by ``GET /api/uploads``'s query and ``poflow uploads``'s: the same
    status for each, from the documented vocabulary, and the same filter results."""
    from poflow_dagster.api.queries import list_uploads as api_list
    from poflow_dagster.intake import store_file
    from poflow_dagster.status_view import list_uploads as cli_list
    from poflow_dagster.store.review import approve_upload
    from poflow_dagster.store.upload_list import LIST_STATUSES
    from poflow_dagster.store.uploads import mark_run_requested, register_upload
    from poflow_dagster.store.workflow import mark_needs_review

    def upload(n: int, content: bytes | None = None) -> str:
        path = tmp_path / f"po-{n}.csv"
        path.write_bytes(content or _csv(f"PO-{n}"))
        return register_upload(db, "shop-a", store_file(tmp_path / "home", path), source="api").id

    received, requested, running, done, failed, review, approved = (upload(n) for n in range(7))
    duplicate = upload(99, _csv("PO-0"))
    mark_run_requested(db, requested)
    stage_started(db, running, "run-1", Stage.AI_PARSING, 1)
    mark_completed(db, done, "run-2")
    mark_failed(db, failed, run_id="run-3", stage="ai_parsing", code="unreadable", message="bad file")
    mark_needs_review(db, review, "run-4", ["TOTAL_MISMATCH"])
    mark_needs_review(db, approved, "run-5", ["TOTAL_MISMATCH"])
    approve_upload(db, approved, "ops@example.com")
    expected = {received: "received", requested: "pending", running: "processing", done: "completed",
                failed: "failed", review: "needs_review", approved: "pending", duplicate: "duplicate"}

    api_rows = api_list(db, "shop-a", limit=50)["uploads"]
    cli_rows = cli_list(db, merchant_id="shop-a")
    assert {r["upload_id"]: r["status"] for r in api_rows} == expected
    assert {r["upload_id"]: r["status"] for r in cli_rows} == expected
    assert set(expected.values()) == set(LIST_STATUSES)
    for status in LIST_STATUSES:
        from_api = [r["upload_id"] for r in api_list(db, "shop-a", status=status)["uploads"]]
        from_cli = [r["upload_id"] for r in cli_list(db, merchant_id="shop-a", status=status)]
        assert from_api == from_cli, status
    assert set(from_api_pending := [r["upload_id"] for r in api_list(db, "shop-a", status="pending")["uploads"]]) \
        == {received, requested, approved}, from_api_pending  # pending = not started yet
    done_row = next(r for r in api_rows if r["upload_id"] == done)
    assert (done_row["progress_percent"], done_row["eta_seconds"]) == (100, None)
    failed_row = next(r for r in api_rows if r["upload_id"] == failed)
    assert (failed_row["error_code"], failed_row["error_message"]) == ("unreadable", "bad file")


def test_an_api_upload_starts_its_run_at_once(client: TestClient, db: Database, monkeypatch):
    from poflow_dagster_tests.test_run_submit import SUCCESS, _GraphQL

    webserver = _GraphQL(SUCCESS)  # records the GraphQL request the webserver would get
    monkeypatch.setenv("POFLOW_DAGSTER_URL", webserver.url)
    try:
        token = issue_token(db, "shop-a").token
        created = client.post("/api/uploads", headers=_bearer(token),
                              files={"file": ("order 9.csv", _csv("PO-9"), "text/csv")})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["run"] == {"outcome": "submitted", "run_id": "run-1", "detail": None}
        assert body["merchant_id"] == "shop-a"
        (_path, request), = webserver.requests
        assert request["variables"]["partition"] == body["upload_id"]
        again = client.post("/api/uploads", headers=_bearer(token),
                            files={"file": ("copy.csv", _csv("PO-9"), "text/csv")})
        assert again.json()["run"] is None and len(webserver.requests) == 1  # a duplicate starts no run
    finally:
        webserver.close()
    # With no webserver the upload still succeeds and says the sensor starts it.
    monkeypatch.setenv("POFLOW_DAGSTER_URL", "http://127.0.0.1:9")
    later = client.post("/api/uploads", headers=_bearer(token), files={"file": ("o.csv", _csv("PO-10"), "text/csv")})
    assert later.status_code == 201 and later.json()["run"]["outcome"] == "left_to_sensor"


def test_cli_upload_through_the_api(api_home: Path, db_url: str, db: Database, tmp_path: Path):
    """With POFLOW_API_URL + POFLOW_API_TOKEN, ``poflow upload`` streams the file to ``poflow serve``: the server
    registers it (a duplicate too), the CLI needs no database (its URL here is unusable) and never imports
    SQLAlchemy; another merchant's name, a bad token, a folder and a dead server are one-line errors."""
    import subprocess
    import sys

    uv, thread, base = _serve(create_app(_settings(api_home, db_url, max_bytes=64 * 1024)))
    token = issue_token(db, "shop-a").token
    order = tmp_path / "order 7.csv"
    order.write_bytes(_csv("PO-7"))
    huge = tmp_path / "huge.csv"
    huge.write_bytes(b"x" * (8 * 1024 * 1024))  # over the limit: the server's 413 is the CLI's one-line error
    probe = ("import sys\nfrom poflow_dagster.cli import main\n"
             "try:\n    main()\nfinally:\n    print('sqlalchemy loaded:', 'sqlalchemy' in sys.modules, file=sys.stderr)\n")

    def cli(*args: str, url: str = base, api_token: str = token) -> subprocess.CompletedProcess:
        env = {**os.environ, "POFLOW_API_URL": url, "POFLOW_API_TOKEN": api_token, "POFLOW_DAGSTER_URL": "off",
               "POFLOW_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none", "POFLOW_HOME": str(tmp_path / "cli")}
        return subprocess.run([sys.executable, "-c", probe, "upload", *args], capture_output=True, text=True,
                              env=env, timeout=60)

    try:
        first = cli(str(order), "--merchant", "shop-a")
        assert first.returncode == 0, first.stderr
        upload_id = first.stdout.strip()
        assert "sqlalchemy loaded: False" in first.stderr
        assert "upload_sensor will start the run" in first.stderr
        with db.session() as session:
            row = session.scalar(select(Upload).where(Upload.id == upload_id))
            assert (row.merchant_id, row.source, row.original_filename) == ("shop-a", "api", "order 7.csv")
            assert Path(row.stored_path).read_bytes() == _csv("PO-7")
        again = cli(str(order), "--merchant", "shop-a")
        assert again.returncode == 0 and f"same bytes as upload {upload_id}" in again.stderr
        for args, kwargs, code in [
            ((str(order), "--merchant", "shop-b"), {}, "merchant_mismatch"),
            ((str(order), "--merchant", "shop-a"), {"api_token": "pf_wrong"}, "unauthorized"),
            ((str(tmp_path), "--merchant", "shop-a"), {}, "not_a_regular_file"),
            ((str(huge), "--merchant", "shop-a"), {}, "file_too_large"),
            ((str(order), "--merchant", "shop-a"), {"url": "http://127.0.0.1:9"}, "api_unreachable"),
        ]:
            failed = cli(*args, **kwargs)
            assert failed.returncode == 2, failed.stderr
            assert failed.stderr.startswith(f"error: {code}: ") and "Traceback" not in failed.stderr, failed.stderr
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(Upload)) == 2  # nothing registered by the failures
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
