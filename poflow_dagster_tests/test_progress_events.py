"""Real PO runs publish granular progress: queued → started → every stage's items, percent and ETA → completed,
on Redis (a namespace of the test's own) and, without Redis, in the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import secrets
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.store.progress_bus import ProgressBus, ProgressEvent

from poflow_dagster_tests.conftest import REDIS_TEST_URL as REDIS_URL  # POFLOW_TEST_REDIS_URL
ITEM_STAGES = ["database_save", "product_draft_creation", "shopify_sync"]


@pytest.fixture
def redis_namespace(monkeypatch):
    """REDIS_URL set, and a namespace of this test's own (its keys deleted afterwards)."""
    name = f"poflow-test:{secrets.token_hex(6)}"
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("POFLOW_REDIS_NAMESPACE", name)
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def big_po(path: Path, lines: int = 150, po_number: str = "PO-7150", *, subtotal_off: Decimal = Decimal(0)) -> Path:
    """A CSV purchase order of ``lines`` distinct SKUs whose subtotal adds up (unless ``subtotal_off``)."""
    rows = [(f"SKU-{i:04d}", f"Part {i}", 1 + i % 7, Decimal(5) + Decimal(i) / 4) for i in range(1, lines + 1)]
    subtotal = sum(q * p for _, _, q, p in rows) + subtotal_off
    text = "\n".join(
        ["Purchase Order", f"PO Number: {po_number}", 'Supplier,"Bulk Parts Ltd"', "Order Date,2026-03-03",
         "Currency: USD", "", "SKU,Description,Qty,Unit Price,Line Total"]
        + [f"{sku},{desc},{q},{p:.2f},{q * p:.2f}" for sku, desc, q, p in rows]
        + ["", f",,,Subtotal,{subtotal:.2f}", f",,,Total,{subtotal:.2f}", ""]
    )
    path.write_text(text, encoding="utf-8")
    return path


def _events(bus: ProgressBus, merchant_id: str) -> list[tuple[str, ProgressEvent]]:
    return bus.read_merchant_events(merchant_id, "0", block_ms=0, count=10_000)


def _assert_granular_run(events: list[ProgressEvent], run_id: str, lines: int) -> None:
    statuses = [e.status for e in events]
    assert statuses[:3] == ["queued", "started", "stage_started"] and statuses[-1] == "completed", statuses
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # numbered per upload, none lost
    run = events[1:]
    assert all(e.run_id == run_id for e in run) and events[0].run_id is None
    percents = [e.percent for e in events]
    assert percents == sorted(percents) and percents[-1] == 100
    for stage in ITEM_STAGES:
        own = [e for e in run if e.stage == stage]
        assert own[0].status == "stage_started" and own[-1].status == "stage_succeeded"
        progress = [e for e in own if e.status == "progress"]
        assert progress and progress[-1].items_done == progress[-1].items_total == lines, stage
        assert [e.items_done for e in progress] == sorted(e.items_done for e in progress)
        steps = [b.percent - a.percent for a, b in zip(own, own[1:], strict=False)]
        assert max(steps) <= 2, (stage, [e.percent for e in own])  # 1–2 % steps on a 150-line PO
        assert all(e.throughput is not None and e.throughput > 0 for e in progress)
        assert all(e.message and f"/{lines}" in e.message for e in progress)
    running = run[:-2]  # before status_update succeeded: the PO is done then, with no ETA
    assert all(e.eta_seconds is not None and e.eta_at is not None for e in running), [
        (e.stage, e.status) for e in running if e.eta_seconds is None]
    assert (run[-2].stage, run[-2].status, run[-2].eta_seconds) == ("status_update", "stage_succeeded", None)
    assert (events[-1].eta_seconds, events[-1].message) == (None, "Completed")


def test_a_150_line_po_reports_every_stage_on_redis(home, db, shop, instance, tmp_path, redis_namespace, samples):
    other = upload_file(db, home, "globex", samples["acme-po-1001.csv"])  # another merchant's PO, run too
    upload = upload_file(db, home, "acme", big_po(tmp_path / "big.csv"))
    result = run_upload(defs, instance, db, upload.id, with_images=False)
    assert result.success, result.error
    assert run_upload(defs, instance, db, other.id, with_images=False).success

    bus = ProgressBus(REDIS_URL, db)  # the same namespace as the run (POFLOW_REDIS_NAMESPACE)
    try:
        assert bus.namespace == redis_namespace
        acme = _events(bus, "acme")
        assert {e.upload_id for _, e in acme} == {upload.id}  # a merchant's stream holds only its uploads
        assert {e.upload_id for _, e in _events(bus, "globex")} == {other.id}
        _assert_granular_run([e for _, e in acme], result.run_id, lines=150)
        ids = [event_id for event_id, _ in acme]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    finally:
        bus.close()


def test_without_redis_the_events_are_in_the_database(home, db, shop, instance, tmp_path):
    upload = upload_file(db, home, "acme", big_po(tmp_path / "big.csv"))
    result = run_upload(defs, instance, db, upload.id, with_images=True)
    assert result.success, result.error
    bus = ProgressBus(None, db)
    events = [e for _, e in _events(bus, "acme")]
    po_events = [e for e in events if e.stage != "image_attachment"]
    _assert_granular_run(po_events, result.run_id, lines=150)
    images = [e for e in events if e.stage == "image_attachment"]  # the side run: after completion, at 100 %
    assert [e.status for e in images] == ["stage_started", "stage_skipped"] and {e.percent for e in images} == {100}
    assert events.index(images[0]) > events.index(po_events[-1])
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    from poflow_dagster.store.workflow import status_report

    assert status_report(db, upload.id).workflow.event_seq == len(events)


def test_a_failed_run_ends_with_stage_failed_and_failed(home, db, instance, tmp_path, redis_namespace):
    bad = tmp_path / "notes.csv"
    bad.write_text("just some words\nno order here\n", encoding="utf-8")
    upload = upload_file(db, home, "acme", bad)
    result = run_upload(defs, instance, db, upload.id, with_images=False)
    assert not result.success
    bus = ProgressBus(REDIS_URL, db)
    try:
        events = [e for _, e in _events(bus, "acme")]
    finally:
        bus.close()
    assert [e.status for e in events] == ["queued", "started", "stage_started", "stage_failed", "failed"]
    assert events[-1].stage == "ai_parsing" and events[-1].message and events[-1].eta_seconds is None
    assert events[-1].message == events[-2].message


def test_a_duplicate_po_ends_with_duplicate(home, db, shop, instance, samples, redis_namespace, tmp_path):
    first = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    assert run_upload(defs, instance, db, first.id, with_images=False).success
    copy = tmp_path / "same-po-again.csv"
    copy.write_text(samples["acme-po-1001.csv"].read_text(encoding="utf-8") + "\nThanks!\n", encoding="utf-8")
    second = upload_file(db, home, "acme", copy)
    assert run_upload(defs, instance, db, second.id, with_images=False).success
    bus = ProgressBus(REDIS_URL, db)
    try:
        events = [e for _, e in _events(bus, "acme") if e.upload_id == second.id]
    finally:
        bus.close()
    assert events[-1].status == "duplicate" and events[-1].percent == 100 and first.id in events[-1].message
    assert [e.status for e in events[-2:]] == ["stage_succeeded", "duplicate"]


def test_the_sensor_queues_and_a_review_stops_then_continues(home, db, shop, instance, tmp_path):
    """Without Redis: ``upload_sensor`` publishes ``queued``; a PO held for review ends with ``needs_review`` (its
    reasons as the message); approving it queues it again, and its continuation run completes."""
    import dagster as dg

    from poflow_dagster.pipeline.sensors import upload_sensor
    from poflow_dagster.resources import DatabaseResource, StorageResource
    from poflow_dagster.store.review import approve_upload

    upload = upload_file(db, home, "acme", big_po(tmp_path / "off.csv", lines=5, subtotal_off=Decimal("10.00")))

    def tick():
        return upload_sensor(dg.build_sensor_context(
            instance=instance, cursor="999999",
            resources={"db": DatabaseResource(url=db.url), "storage": StorageResource(home=str(home))}))

    [request] = tick().run_requests
    bus = ProgressBus(None, db)
    [(_, queued)] = _events(bus, "acme")
    assert (queued.status, queued.upload_id, queued.run_id, queued.percent) == ("queued", upload.id, None, 0)

    first = run_upload(defs, instance, db, request.partition_key, with_images=False)
    assert first.success and first.summary["status"] == "needs_review"
    events = [e for _, e in _events(bus, "acme")]
    assert events[-1].status == "needs_review" and "SUBTOTAL_MISMATCH" in events[-1].message
    assert events[-1].percent == 100 and events[-1].eta_seconds is None  # the run ended (as the row says)
    held = [e for e in events if e.stage == "shopify_sync"]
    assert held[-1].status == "stage_skipped" and "held for review" in held[-1].message

    approve_upload(db, upload.id, "reviewer@acme")
    [again] = tick().run_requests
    second = run_upload(defs, instance, db, again.partition_key, with_images=False)
    assert second.success
    after = [e for _, e in _events(bus, "acme")][len(events):]
    assert [e.status for e in after[:2]] == ["queued", "started"] and after[-1].status == "completed"
    assert after[1].run_id == second.run_id
    seqs = [e.seq for _, e in _events(bus, "acme")]
    assert seqs == list(range(1, len(seqs) + 1))  # one numbering across both runs


def test_the_namespace_names_the_database_not_its_spelling(monkeypatch, tmp_path):
    """The API, the runs and `poflow watch` must meet in one namespace: the driver, the password and a relative
    SQLite path do not change it; another database does."""
    from poflow_dagster.config import progress_namespace

    monkeypatch.delenv("POFLOW_REDIS_NAMESPACE", raising=False)
    base = progress_namespace("postgresql://postgres:secret@127.0.0.1:5432/test")
    assert base == progress_namespace("postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    assert base != progress_namespace("postgresql://postgres@127.0.0.1:5432/other")
    monkeypatch.chdir(tmp_path)
    assert progress_namespace("sqlite:///app.sqlite3") == progress_namespace(f"sqlite:///{tmp_path / 'app.sqlite3'}")
    monkeypatch.setenv("POFLOW_REDIS_NAMESPACE", "tenant-a")
    assert progress_namespace("sqlite:///app.sqlite3") == "tenant-a"
