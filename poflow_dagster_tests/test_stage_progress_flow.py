"""A stage's progress while its own transaction is open: events reach Redis before it commits (SQLite's write
lock, a PostgreSQL row lock on the workflow), the reporter never stalls the stage without Redis, a report costs
no more than one coalesced UPDATE, and a 5,000-line PO's save and drafts step by at most 2 % of the PO."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from sqlalchemy import event, select, text, update

from poflow_dagster.analytics.live_eta import clear_model_cache
from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.domain.stages import Stage
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.stage_runner import StageReporter
from poflow_dagster.store.drafts import create_drafts_for_po
from poflow_dagster.store.eta import record_progress
from poflow_dagster.store.progress_bus import ProgressBus, ProgressEvent
from poflow_dagster.store.purchase_orders import save_purchase_order
from poflow_dagster.store.schema import ProgressEventRow, Upload, WorkflowExecution
from poflow_dagster.store.workflow import stage_finished, stage_started

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


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    clear_model_cache()
    yield
    clear_model_cache()


def _upload(db, home: Path, tmp_path: Path, name: str = "po.csv") -> Upload:
    path = tmp_path / name
    path.write_text("sku,description,quantity,unit_cost\n" + f"{secrets.token_hex(8)},x,1,1\n")
    return upload_file(db, home, "acme", path)


def _hold_the_lock(session, db, upload_id: str) -> None:
    """Take what the stage's own transaction would hold: SQLite's write lock (any write), or on PostgreSQL the
    workflow row's lock."""
    if db.engine.dialect.name == "sqlite":
        session.execute(update(Upload).where(Upload.id == upload_id).values(original_filename="held.csv"))
    else:
        session.execute(select(WorkflowExecution).where(WorkflowExecution.upload_id == upload_id).with_for_update())
    session.flush()


def _events(bus: ProgressBus, merchant_id: str, upload_id: str) -> list[ProgressEvent]:
    return [e for _, e in bus.read_merchant_events(merchant_id, "0", block_ms=0, count=100_000)
            if e.upload_id == upload_id]


def test_progress_reaches_redis_while_the_stage_holds_its_transaction(db, home, tmp_path, namespace):
    """The stage holds SQLite's write lock (PostgreSQL: the workflow row's lock) and reports 50 chunks: every
    sent event, up to the last chunk's, is in the Redis stream while the transaction is still open; the row's
    percent and ETA, skipped while locked, are written once it commits."""
    upload = _upload(db, home, tmp_path)
    run_id = f"run-{secrets.token_hex(4)}"
    stage_started(db, upload.id, run_id, Stage.DATABASE_SAVE, 1)
    bus = ProgressBus(REDIS_URL, db, namespace)
    reporter = StageReporter(bus, db, upload.id, upload.merchant_id, run_id, Stage.DATABASE_SAVE)
    last_chunk_seen, committed = threading.Event(), threading.Event()
    seen_while_open: list[ProgressEvent] = []

    def watch() -> None:
        reader = ProgressBus(REDIS_URL, db, namespace)
        after = "0"
        try:
            while not last_chunk_seen.is_set():
                for event_id, received in reader.read_merchant_events(upload.merchant_id, after, block_ms=1000):
                    after = event_id
                    if received.status == "progress" and not committed.is_set():
                        seen_while_open.append(received)
                    if received.status == "progress" and received.items_done == 5000:
                        last_chunk_seen.set()
        finally:
            reader.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        reporter.stage_started(first_of_run=True)
        with db.session() as session:
            _hold_the_lock(session, db, upload.id)
            # The lock is really held: a row write that may wait only briefly is skipped, not blocked.
            assert record_progress(db, upload.id, run_id, percent=21, wait_ms=0) is None
            for chunk in range(1, 51):
                reporter.report(chunk * 100, 5000, f"Saved {chunk * 100:,}/5,000 lines")
            assert last_chunk_seen.wait(timeout=120), "progress did not reach Redis while the transaction was open"
            committed.set()
        reporter.flush()
        watcher.join(timeout=30)
    finally:
        last_chunk_seen.set()
        reporter.close()
        bus.close()

    assert seen_while_open[-1].items_done == 5000 and seen_while_open[-1].percent == 40
    assert len(seen_while_open) >= 10  # 20 points of the PO in steps of at most 2
    assert all(e.eta_seconds is not None for e in seen_while_open)
    with db.session() as session:
        workflow = session.scalar(select(WorkflowExecution).where(WorkflowExecution.upload_id == upload.id))
        assert workflow.progress_percent == 40 and workflow.eta_seconds is not None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_redis_on_sqlite_the_reporter_never_stalls_the_stage_and_loses_nothing(db, home, tmp_path,
                                                                                        namespace):
    """No Redis: events go to the table, which SQLite cannot write while the stage's transaction is open. The
    stage reports on and commits; then every event is there, numbered in order (they arrive at commit)."""
    upload = _upload(db, home, tmp_path)
    run_id = f"run-{secrets.token_hex(4)}"
    stage_started(db, upload.id, run_id, Stage.DATABASE_SAVE, 1)
    bus = ProgressBus(None, db, namespace)
    reporter = StageReporter(bus, db, upload.id, upload.merchant_id, run_id, Stage.DATABASE_SAVE)
    try:
        reporter.stage_started(first_of_run=True)
        with db.session() as session:
            _hold_the_lock(session, db, upload.id)
            for chunk in range(1, 51):
                reporter.report(chunk * 100, 5000)
            with db.engine.connect() as other:  # nothing of this stage's progress is readable before commit
                assert other.scalar(select(ProgressEventRow.id).where(
                    ProgressEventRow.upload_id == upload.id, ProgressEventRow.payload.contains('"progress"'))) is None
        reporter.flush()
        assert reporter._queue.unfinished_tasks == 0
        stage_finished(db, upload.id, run_id, Stage.DATABASE_SAVE, outcome="success", items=5000)
        reporter.stage_ended("success", 5000)
    finally:
        reporter.close()
    events = _events(bus, upload.merchant_id, upload.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.status for e in events][:2] == ["started", "stage_started"] and events[-1].status == "stage_succeeded"
    progress = [e for e in events if e.status == "progress"]
    assert progress[-1].items_done == 5000 and len(progress) >= 10
    with db.session() as session:
        workflow = session.scalar(select(WorkflowExecution).where(WorkflowExecution.upload_id == upload.id))
        assert workflow.progress_percent == 40


def test_a_report_costs_at_most_one_update_and_no_select(db, home, tmp_path, namespace):
    """100 reports: no statement in the reporting thread, no SELECT at all (the model and features are read at
    the stage's start and end: three SELECTs for the whole stage), at most one UPDATE per event sent."""
    upload = _upload(db, home, tmp_path)
    run_id = f"run-{secrets.token_hex(4)}"
    stage_started(db, upload.id, run_id, Stage.SHOPIFY_SYNC, 1)
    bus = ProgressBus(REDIS_URL, db, namespace)
    statements: list[tuple[str, str]] = []
    main = threading.current_thread().name

    def count(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        statements.append((threading.current_thread().name, statement.lstrip().split(None, 1)[0].upper()))

    event.listen(db.engine, "before_cursor_execute", count)
    reporter = StageReporter(bus, db, upload.id, upload.merchant_id, run_id, Stage.SHOPIFY_SYNC)
    try:
        reporter.stage_started(first_of_run=False)
        at_start = len(statements)
        for done in range(1, 101):
            reporter.report(done, 100)
            assert not [s for s in statements[at_start:] if s[0] == main]  # report() itself: no database
        reporter.flush()
        during = statements[at_start:]
        stage_finished(db, upload.id, run_id, Stage.SHOPIFY_SYNC, outcome="success", items=100)
        before_end = len(statements)
        reporter.stage_ended("success", 100)
        at_end = statements[before_end:]
        whole = statements[:at_start] + during + at_end
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
        reporter.close()
    sent = [e for e in _events(bus, upload.merchant_id, upload.id) if e.status == "progress"]
    bus.close()
    assert len(sent) >= 15  # 30 points of the PO, at most 2 a step
    assert [kind for _, kind in during if kind == "SELECT"] == []
    assert 1 <= len([kind for _, kind in during if kind == "UPDATE"]) <= len(sent)
    assert len([kind for _, kind in whole if kind == "SELECT"]) <= 3
    assert all(e.eta_seconds is not None for e in sent)
    assert [e.percent for e in sent] == sorted(e.percent for e in sent)


def _big_po(lines: int) -> ParsedPO:
    return ParsedPO(
        po_number=f"PO-{secrets.token_hex(3)}", supplier_name="Bulk Supply", order_date=dt.date(2026, 11, 30),
        currency="USD", source_format="csv", extractor="spreadsheet",
        lines=[POLine(line_no=n, sku=f"BULK-{n:05d}", description=f"Item {n}", quantity=Decimal(2),
                      unit_cost=Decimal("3.25"), line_total=Decimal("6.50")) for n in range(1, lines + 1)],
    )


def _stage(db, bus, upload: Upload, run_id: str, stage: Stage, work) -> None:
    """What ``run_stage`` does around an op's work, without Dagster."""
    new_run = stage_started(db, upload.id, run_id, stage, 1)
    reporter = StageReporter(bus, db, upload.id, upload.merchant_id, run_id, stage)
    try:
        reporter.stage_started(first_of_run=bool(new_run))
        items = work(reporter.report)
        reporter.flush()
        stage_finished(db, upload.id, run_id, stage, outcome="success", items=items)
        reporter.stage_ended("success", items)
    finally:
        reporter.close()


def test_a_5000_line_po_steps_by_at_most_two_percent_and_never_goes_back(db, home, tmp_path, namespace):
    """The real save and drafts of a 5,000-line PO: their progress events step by at most 2 % of the whole PO,
    and the PO's percent never decreases over the run."""
    upload = _upload(db, home, tmp_path)
    parsed = _big_po(5000)
    run_id = f"run-{secrets.token_hex(4)}"
    bus = ProgressBus(REDIS_URL, db, namespace)
    try:
        _stage(db, bus, upload, run_id, Stage.DATABASE_SAVE,
               lambda report: save_purchase_order(db, upload.id, parsed, on_progress=report).line_count)
        _stage(db, bus, upload, run_id, Stage.PRODUCT_DRAFT_CREATION,
               lambda report: len(create_drafts_for_po(db, upload.id, parsed, on_progress=report).drafts))
        events = _events(bus, upload.merchant_id, upload.id)
    finally:
        bus.close()
    for stage, start, end in (("database_save", 20, 40), ("product_draft_creation", 40, 60)):
        percents = [e.percent for e in events if e.stage == stage and e.status in ("stage_started", "progress",
                                                                                   "stage_succeeded")]
        assert percents[0] == start and percents[-1] == end
        steps = [b - a for a, b in zip(percents, percents[1:], strict=False)]
        assert max(steps) <= 2 and min(steps) >= 0, (stage, percents)
        progress = [e for e in events if e.stage == stage and e.status == "progress"]
        assert progress[-1].items_done == progress[-1].items_total == 5000
    overall = [e.percent for e in events]
    assert overall == sorted(overall)
    with db.session() as session:
        assert session.scalar(text("SELECT progress_percent FROM workflow_executions WHERE upload_id = :u"),
                              {"u": upload.id}) == 60
