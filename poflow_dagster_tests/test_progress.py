"""Progress events reach Redis for real (pub/sub per upload + a replay stream) while a PO runs."""

from __future__ import annotations

import json
import threading

import redis

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.store.progress_bus import STREAM_KEY, ProgressBus, ProgressEvent, channel_for

from poflow_dagster_tests.conftest import REDIS_TEST_URL as REDIS_URL  # POFLOW_TEST_REDIS_URL


def test_stage_events_are_published_in_order(home, db, shop, instance, samples, monkeypatch):
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    client = redis.Redis.from_url(REDIS_URL)
    pubsub = client.pubsub()
    pubsub.subscribe(channel_for(upload.id))
    pubsub.get_message(timeout=1)  # subscription confirmation
    received: list[dict] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message":
                received.append(json.loads(message["data"]))

    listener = threading.Thread(target=listen)
    listener.start()
    try:
        result = run_upload(defs, instance, db, upload.id, with_images=False)
    finally:
        stop.set()
        listener.join()
        pubsub.close()
    assert result.success
    pairs = [(e["stage"], e["status"]) for e in received]
    stages = ["ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"]
    assert pairs == [p for s in stages for p in ((s, "started"), (s, "succeeded"))]
    assert [e["progress_percent"] for e in received if e["status"] == "succeeded"] == [20, 40, 60, 90, 100]
    assert all(e["run_id"] == result.run_id and e["at"].endswith(("Z", "+00:00")) for e in received)
    stream = [json.loads(f[b"event"]) for _, f in client.xrevrange(STREAM_KEY, count=50)]
    assert any(e["upload_id"] == upload.id and e["stage"] == "status_update" for e in stream)
    client.close()


def test_unreachable_bus_never_fails_a_stage():
    bus = ProgressBus("redis://127.0.0.1:1/0")
    event = ProgressEvent(upload_id="u", run_id="r", stage="ai_parsing", status="started", progress_percent=0)
    assert bus.publish(event) is False
