"""The progress bus v2 for real: Redis (per-merchant stream + live channel, namespaced, seq by one script) and the
``progress_events`` table without Redis (SQLite and PostgreSQL): numbering, namespacing, resuming, pruning."""

from __future__ import annotations

import json
import secrets
import threading

import pytest
import redis

from poflow_dagster import config
from poflow_dagster.store import progress_bus as bus_module
from poflow_dagster.store.progress_bus import ProgressBus, ProgressEvent
from poflow_dagster.store.schema import ProgressEventRow

from poflow_dagster_tests.conftest import REDIS_TEST_URL as REDIS_URL  # POFLOW_TEST_REDIS_URL


@pytest.fixture
def namespace():
    """A namespace of this test's own on the real Redis; its keys are deleted afterwards."""
    name = f"poflow-test:{secrets.token_hex(6)}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def _event(upload_id: str, merchant_id: str = "acme", n: int = 0) -> ProgressEvent:
    return ProgressEvent(upload_id=upload_id, merchant_id=merchant_id, run_id="r1", status="progress",
                         stage="database_save", items_done=n, items_total=1000, percent=min(100, n // 10),
                         message=f"Saving line {n}/1000")


@pytest.fixture(params=["redis", "table"])
def bus(request, namespace, db):
    """A bus on Redis (its own namespace) or on the app database's table (SQLite and PostgreSQL)."""
    made = ProgressBus(REDIS_URL if request.param == "redis" else None, db, namespace)
    yield made
    made.close()


def test_default_namespace_is_per_database_and_overridable(monkeypatch):
    monkeypatch.delenv("POFLOW_REDIS_NAMESPACE", raising=False)
    first, second = config.progress_namespace("sqlite:///a.db"), config.progress_namespace("sqlite:///b.db")
    assert first.startswith("poflow:") and len(first) == len("poflow:") + 12 and first != second
    monkeypatch.setenv("POFLOW_DATABASE_URL", "sqlite:///a.db")
    assert config.progress_namespace() == first
    monkeypatch.setenv("POFLOW_REDIS_NAMESPACE", "shop-eu")
    assert config.progress_namespace("sqlite:///a.db") == "shop-eu"
    bus = ProgressBus(REDIS_URL)
    assert bus.stream_key("m1") == "shop-eu:events:m1" and bus.live_channel("m1") == "shop-eu:live:m1"
    bus.close()


def test_two_namespaces_on_one_redis_never_see_each_others_events(namespace):
    other = f"{namespace}-other"
    one, two = ProgressBus(REDIS_URL, namespace=namespace), ProgressBus(REDIS_URL, namespace=other)
    client = redis.Redis.from_url(REDIS_URL)
    pubsub = client.pubsub()
    pubsub.subscribe(one.live_channel("acme"))
    pubsub.get_message(timeout=1)
    try:
        for n in range(3):
            one.publish(_event("u-1", n=n))
        two.publish(_event("u-1", n=99))
        mine = one.read_merchant_events("acme", "0", block_ms=0)
        theirs = two.read_merchant_events("acme", "0", block_ms=0)
        assert [e.items_done for _, e in mine] == [0, 1, 2] and [e.seq for _, e in mine] == [1, 2, 3]
        assert [(e.items_done, e.seq) for _, e in theirs] == [(99, 1)]  # its own seq counter too
        assert all(key.decode().startswith(f"{namespace}:") or key.decode().startswith(f"{other}:")
                   for key in client.scan_iter(match=f"{namespace}*"))
        live = []
        while (message := pubsub.get_message(timeout=0.5)) is not None:
            if message["type"] == "message":
                live.append(json.loads(message["data"]))
        assert [m["event"]["seq"] for m in live] == [1, 2, 3]  # nothing of the other namespace
        assert [m["id"] for m in live] == [entry_id for entry_id, _ in mine]
    finally:
        pubsub.close()
        for key in client.scan_iter(match=f"{other}:*"):
            client.delete(key)
        client.close()
        one.close()
        two.close()


def test_seq_is_monotonic_per_upload_under_concurrent_publishers(bus, home, samples):
    """Eight threads publish for two uploads at once: each upload's events are numbered 1..N without a gap or a
    repeat, and the merchant's stream holds each upload's events in seq order."""
    from poflow_dagster.intake import upload_file
    from poflow_dagster.store.uploads import mark_run_requested

    db = bus.db
    first = upload_file(db, home, "acme", samples["acme-po-1001.csv"]).id  # with a workflow row
    mark_run_requested(db, first)  # its ``queued`` event (this process's shared bus) is number 1 on the table
    on_table_already = 1 if bus.redis_url is None else 0
    second = "upload-without-a-row"
    returned: list[ProgressEvent] = []
    lock = threading.Lock()

    def publisher(upload_id: str) -> None:
        for n in range(25):
            event = bus.publish(_event(upload_id, n=n))
            with lock:
                returned.append(event)

    threads = [threading.Thread(target=publisher, args=(uid,)) for uid in (first, second) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for upload_id, already in ((first, on_table_already), (second, 0)):
        seqs = sorted(e.seq for e in returned if e.upload_id == upload_id)
        assert seqs == list(range(already + 1, already + 101)), upload_id
    stream = bus.read_merchant_events("acme", "0", block_ms=0, count=1000)
    for upload_id in (first, second):
        in_order = [e.seq for _, e in stream if e.upload_id == upload_id and e.status == "progress"]
        assert in_order == sorted(in_order) and len(in_order) == 100
    if bus.redis_url is None:
        from poflow_dagster.store.schema import WorkflowExecution

        with db.session() as session:
            row = session.query(WorkflowExecution).filter_by(upload_id=first).one()
            assert row.event_seq == 101  # the workflow row holds the last seq given


def test_resume_from_an_event_id_loses_and_repeats_nothing(bus):
    for n in range(30):
        bus.publish(_event("u-1", n=n))
        bus.publish(_event("u-other-merchant", merchant_id="globex", n=n))
    seen: list[int] = []
    last = "0"
    while batch := bus.read_merchant_events("acme", last, block_ms=0, count=7):
        assert all(len(batch) <= 7 for _ in [0])
        seen += [event.items_done for _, event in batch]
        last = batch[-1][0]
    assert seen == list(range(30))  # all of acme's, in order, once; nothing of globex
    assert bus.read_merchant_events("acme", last, block_ms=0) == []
    middle = bus.read_merchant_events("acme", "0", block_ms=0, count=10)[9][0]  # resume after the 10th
    assert [e.items_done for _, e in bus.read_merchant_events("acme", middle, block_ms=0)] == list(range(10, 30))


def test_a_blocking_read_from_now_returns_the_next_event(bus):
    bus.publish(_event("u-1", n=1))  # before the reader: not "from now"
    start = bus.last_event_id("acme")
    timer = threading.Timer(0.3, lambda: bus.publish(_event("u-1", n=2)))
    timer.start()
    try:
        got = bus.read_merchant_events("acme", None, block_ms=5000)
    finally:
        timer.join()
    assert [e.items_done for _, e in got] == [2]
    assert [e.items_done for _, e in bus.read_merchant_events("acme", start, block_ms=0)] == [2]
    assert bus.read_merchant_events("acme", got[-1][0], block_ms=200) == []  # waited, then nothing


def test_async_read_resumes_like_the_sync_one(bus):
    import asyncio

    for n in range(5):
        bus.publish(_event("u-1", n=n))

    async def read() -> list[int]:
        first = await bus.aread_merchant_events("acme", "0", block_ms=0, count=3)
        rest = await bus.aread_merchant_events("acme", first[-1][0], block_ms=0)
        return [e.items_done for _, e in first + rest]

    assert asyncio.run(read()) == [0, 1, 2, 3, 4]


def test_the_table_keeps_only_the_newest_events_of_a_merchant(db, monkeypatch):
    monkeypatch.setattr(bus_module, "STREAM_MAXLEN", 50)
    bus = ProgressBus(None, db)
    for n in range(250):
        bus.publish(_event("u-1", n=n))
    bus.publish(_event("u-2", merchant_id="globex"))
    with db.session() as session:
        kept = [row.seq for row in session.query(ProgressEventRow).filter_by(merchant_id="acme")]
    assert len(kept) <= 150 and max(kept) == 250 and min(kept) > 100  # pruned at row 200: newest 50 before it
    assert [e.seq for _, e in bus.read_merchant_events("globex", "0", block_ms=0)] == [1]


def test_an_unreachable_bus_never_fails_a_stage():
    bus = ProgressBus("redis://127.0.0.1:1/0", namespace="poflow-test:nowhere")
    event = bus.publish(_event("u-1"))
    assert event.seq == 0 and bus.publish(_event("u-1")).seq == 0  # the second one is not even tried
    bus.close()
    local = ProgressBus(None)  # neither Redis nor a database: numbered here, logged
    assert [local.publish(_event("u-1")).seq for _ in range(3)] == [1, 2, 3]


def test_event_json_has_the_contract_fields():
    event = _event("u-1", n=5)
    data = json.loads(event.model_dump_json())
    assert set(data) == {"upload_id", "merchant_id", "run_id", "seq", "status", "stage", "items_done", "items_total",
                         "percent", "message", "eta_seconds", "eta_at", "throughput", "at"}
    assert data["at"].endswith(("Z", "+00:00"))
    with pytest.raises(ValueError):
        ProgressEvent(upload_id="u", merchant_id="m", status="succeeded")  # v1 status names are gone
