"""A Redis outage never loses the events a frontend needs: lifecycle, stage and terminal events wait in the bus's
outbox and reach the stream, in order and numbered, once Redis answers again (real Redis behind a TCP proxy
that this test cuts and restores; progress ticks published meanwhile may be dropped)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from poflow_dagster.store.progress_bus import ProgressBus, ProgressEvent
from poflow_dagster_tests.conftest import REDIS_TEST_URL
from poflow_dagster_tests.faults import CuttableProxy


@pytest.fixture
def proxied() -> Iterator[tuple[CuttableProxy, str, str]]:
    """(a cuttable proxy to the test Redis, the Redis URL through it, a namespace of this test's own)."""
    parts = urlsplit(REDIS_TEST_URL)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    url = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
    namespace = f"poflow-test:{secrets.token_hex(6)}"
    yield proxy, url, namespace
    proxy.close()
    direct = redis.Redis.from_url(REDIS_TEST_URL)
    for key in direct.scan_iter(f"{namespace}:*"):
        direct.delete(key)
    direct.close()


def _event(status: str, upload_id: str = "up-1", **fields) -> ProgressEvent:
    return ProgressEvent(**{"upload_id": upload_id, "merchant_id": "shop-a", "run_id": "run-1", "status": status,
                            **fields})


def _stream(namespace: str, merchant_id: str = "shop-a") -> list[ProgressEvent]:
    """The merchant's stream as Redis itself holds it (read around the proxy)."""
    direct = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        entries = direct.xrange(f"{namespace}:events:{merchant_id}")
    finally:
        direct.close()
    return [ProgressEvent.model_validate_json(fields[b"event"]) for _, fields in entries]


def _wait_for(namespace: str, count: int, timeout: float = 20) -> list[ProgressEvent]:
    deadline = time.monotonic() + timeout
    while True:
        events = _stream(namespace)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_terminal_events_published_while_redis_is_down_arrive_once_it_is_back(proxied):
    proxy, url, namespace = proxied
    bus = ProgressBus(url, namespace=namespace)
    try:
        assert bus.publish(_event("started")).seq == 1
        proxy.cut()
        tick = bus.publish(_event("progress", stage="ai_parsing", items_done=1, items_total=10, percent=5))
        last_tick = bus.publish(_event("progress", stage="ai_parsing", items_done=10, items_total=10, percent=20))
        succeeded = bus.publish(_event("stage_succeeded", stage="ai_parsing", percent=20))
        completed = bus.publish(_event("completed", percent=100, message="Completed"))
        assert (tick.seq, last_tick.seq, succeeded.seq, completed.seq) == (0, 0, 0, 0)  # not sent yet
        assert bus.outbox_size == 3  # the stage's last tick, its end and the terminal event; not the first tick
        assert [e.status for e in _stream(namespace)] == ["started"]

        proxy.restore()  # the background retry delivers them: nobody publishes anything else
        events = _wait_for(namespace, 4)
        assert [(e.status, e.items_done) for e in events] == [
            ("started", None), ("progress", 10), ("stage_succeeded", None), ("completed", None)]
        assert [e.seq for e in events] == [1, 2, 3, 4]  # numbered when sent: no gap for the dropped tick
        assert bus.outbox_size == 0
    finally:
        bus.close()


def test_the_outbox_goes_out_before_the_next_event_in_order(proxied):
    proxy, url, namespace = proxied
    bus = ProgressBus(url, namespace=namespace)
    try:
        proxy.cut()
        bus.publish(_event("queued", run_id=None))
        bus.publish(_event("failed", upload_id="up-2", message="bad file"))
        proxy.restore()
        bus.publish(_event("started"))  # whether the retry or this publish sends the outbox: it goes first
        events = _wait_for(namespace, 3)
        assert [(e.upload_id, e.status, e.seq) for e in events] == [
            ("up-1", "queued", 1), ("up-2", "failed", 1), ("up-1", "started", 2)]
    finally:
        bus.close()


def test_a_full_outbox_drops_the_oldest_progress_ticks_first(proxied):
    proxy, url, namespace = proxied
    bus = ProgressBus(url, namespace=namespace)
    bus.outbox_limit = 4
    try:
        proxy.cut()
        bus.publish(_event("stage_started", stage="database_save"))
        bus.publish(_event("progress", stage="database_save", items_done=5, items_total=5, percent=40))
        bus.publish(_event("stage_succeeded", stage="database_save", percent=40))
        bus.publish(_event("progress", upload_id="up-2", stage="ai_parsing", items_done=3, items_total=3))
        bus.publish(_event("completed", percent=100))  # full: the oldest tick (up-1's) makes room
        bus.publish(_event("failed", upload_id="up-2"))  # full again: up-2's tick goes
        assert bus.outbox_size == 4 and bus.outbox_dropped == 2
        proxy.restore()
        events = _wait_for(namespace, 4)
        assert [(e.upload_id, e.status) for e in events] == [
            ("up-1", "stage_started"), ("up-1", "stage_succeeded"), ("up-1", "completed"), ("up-2", "failed")]
    finally:
        bus.close()


def test_close_sends_what_waits_in_the_outbox(proxied):
    proxy, url, namespace = proxied
    bus = ProgressBus(url, namespace=namespace)
    proxy.cut()
    bus.publish(_event("needs_review", message="2 issues to review"))
    assert bus.outbox_size == 1
    proxy.restore()
    bus.close()
    assert [e.status for e in _stream(namespace)] == ["needs_review"]


def test_close_gives_up_on_a_redis_that_stays_down(proxied):
    proxy, url, namespace = proxied
    bus = ProgressBus(url, namespace=namespace)
    proxy.cut()
    bus.publish(_event("completed"))
    bus.close()  # returns (after its short flush timeout) instead of hanging the process on exit
    assert bus.outbox_size == 1 and _stream(namespace) == []
