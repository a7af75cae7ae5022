"""The app database on SQLite and PostgreSQL: exact money, UTC, replace-not-duplicate, migrations."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from poflow_dagster.domain.drafts import plan_drafts
from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.store.drafts import create_drafts_for_po, drafts_for_upload
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.purchase_orders import po_integrity, save_purchase_order, saved_po_problems
from poflow_dagster.store.schema import Base, LineItem, ProductDraft, PurchaseOrder, Upload
from poflow_dagster.store.types import utcnow
from poflow_dagster.store.uploads import StoredFile, register_upload
from poflow_dagster.store.workflow import mark_completed, stage_finished, stage_started, status_report
from poflow_dagster.domain.stages import Stage


def _stored(sha: str = "a" * 64, name: str = "po.csv") -> StoredFile:
    return StoredFile(sha256=sha, size_bytes=10, mime_type="text/csv", stored_path=f"/tmp/{name}", original_filename=name)


def _po(lines: list[tuple[str, str, str]], subtotal: str | None = None, po_number: str = "PO-1") -> ParsedPO:
    parsed = [
        POLine(line_no=i, sku=sku, description=f"item {sku}", quantity=Decimal(q), unit_cost=Decimal(c),
               line_total=Decimal(q) * Decimal(c))
        for i, (sku, q, c) in enumerate(lines, start=1)
    ]
    return ParsedPO(po_number=po_number, supplier_name="ACME  Corp", currency="USD", lines=parsed,
                    subtotal=Decimal(subtotal) if subtotal else None, source_format="csv", extractor="test")


def test_migrations_match_the_models(db):
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []


def test_money_is_exact_and_times_are_utc(db):
    upload = register_upload(db, "m1", _stored())
    po = _po([("00042", "3", "0.10"), ("B-7", "1", "1234567.8901")], subtotal="1234568.1901")
    save_purchase_order(db, upload.id, po)
    with db.session() as session:
        saved = session.scalar(sa.select(PurchaseOrder))
        costs = [line.unit_cost for line in saved.lines]
        assert costs == [Decimal("0.10"), Decimal("1234567.8901")]
        assert all(isinstance(c, Decimal) for c in costs)
        assert saved.lines[0].line_total == Decimal("0.30")  # not 0.30000000000000004
        assert saved.lines[0].quantity == Decimal("3")
        assert saved.lines[0].sku == "00042"
        assert saved.subtotal == Decimal("1234568.1901")
        assert saved.created_at.tzinfo is not None and saved.created_at.utcoffset() == dt.timedelta(0)


def test_saving_the_same_upload_twice_replaces(db):
    upload = register_upload(db, "m1", _stored())
    first = save_purchase_order(db, upload.id, _po([("A", "1", "2.00"), ("B", "2", "3.00"), ("C", "1", "1.00")]))
    second = save_purchase_order(db, upload.id, _po([("A", "1", "2.00"), ("B", "2", "3.50")], subtotal="9.00"))
    assert second.po_id == first.po_id and second.replaced and not first.replaced
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(PurchaseOrder.id))) == 1
        assert session.scalar(sa.select(sa.func.count(LineItem.id))) == 2
    integrity = po_integrity(db, upload.id)
    assert integrity.lines_sum == Decimal("9.00")
    assert saved_po_problems(integrity, 2, Decimal("9.00")) == []
    assert saved_po_problems(integrity, 3, Decimal("9.50")) == [
        "2 lines in the database, 3 parsed",
        "lines sum to 9.00, the PO subtotal is 9.50",
    ]


def test_same_bytes_twice_is_a_duplicate_per_merchant(db):
    first = register_upload(db, "m1", _stored())
    second = register_upload(db, "m1", _stored(name="copy.csv"))
    other_merchant = register_upload(db, "m2", _stored())
    assert first.duplicate_of is None and first.status == "received"
    assert second.duplicate_of == first.id and second.status == "duplicate"
    assert other_merchant.duplicate_of is None
    with db.session() as session:
        seqs = list(session.scalars(sa.select(Upload.seq).order_by(Upload.seq)))
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


def test_drafts_match_existing_sku_and_use_markup(db):
    with db.session() as session:
        configure_merchant(session, "m1", markup_percent=Decimal("50"))
    up1 = register_upload(db, "m1", _stored("1" * 64))
    up2 = register_upload(db, "m1", _stored("2" * 64))
    po1 = _po([("A", "1", "10.00"), ("B", "1", "3.33"), ("A", "2", "10.00")])
    save_purchase_order(db, up1.id, po1)
    out1 = create_drafts_for_po(db, up1.id, po1)
    assert [(d.sku, d.price, d.created) for d in out1.drafts] == [("A", Decimal("15.00"), True), ("B", Decimal("5.00"), True)]
    again = create_drafts_for_po(db, up1.id, po1)  # re-run: updates, never adds
    assert [d.created for d in again.drafts] == [False, False]
    po2 = _po([("B", "5", "4.00")], po_number="PO-2")
    save_purchase_order(db, up2.id, po2)
    out2 = create_drafts_for_po(db, up2.id, po2)
    assert out2.drafts[0].id == out1.drafts[1].id and out2.drafts[0].price == Decimal("6.00")
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(ProductDraft.id))) == 2
    assert [d.sku for d in drafts_for_upload(db, up1.id)] == ["A", "B"]


def test_plan_drafts_skips_lines_without_sku_or_cost():
    po = ParsedPO(lines=[
        POLine(line_no=1, sku=None, description="freight", quantity=Decimal(1), unit_cost=Decimal(5)),
        POLine(line_no=2, sku="X", quantity=Decimal(4), line_total=Decimal("10.00")),
        POLine(line_no=3, sku="Y", quantity=None, unit_cost=None),
    ])
    plans, skipped = plan_drafts(po, Decimal("40"))
    assert [(p.sku, p.unit_cost, p.price, p.title) for p in plans] == [("X", Decimal("2.50"), Decimal("3.50"), "X")]
    assert skipped == ["line 1: no SKU", "line 3: SKU Y has no unit cost"]


def test_workflow_and_stage_metrics(db):
    upload = register_upload(db, "m1", _stored())
    stage_started(db, upload.id, "run-1", Stage.AI_PARSING, 1)
    stage_started(db, upload.id, "run-1", Stage.AI_PARSING, 2)  # a retry in the same run
    stage_finished(db, upload.id, "run-1", Stage.AI_PARSING, outcome="success", items=3)
    report = status_report(db, upload.id)
    assert report.workflow.status == "processing" and report.workflow.progress_percent == 20
    assert [(s.stage, s.attempts, s.outcome, s.items) for s in report.stages] == [("ai_parsing", 2, "success", 3)]
    stage_started(db, upload.id, "run-1", Stage.IMAGE_ATTACHMENT, 1)  # side stage leaves the workflow alone
    assert status_report(db, upload.id).workflow.current_stage == "ai_parsing"
    mark_completed(db, upload.id, "run-1")
    report = status_report(db, upload.id)
    assert report.workflow.status == "completed" and report.upload.status == "completed"
    assert report.workflow.completed_at.tzinfo is not None


def test_run_requests_are_claimed_once_oldest_first(db):
    from poflow_dagster.store.uploads import claim_uploads_for_runs, clear_run_request, mark_run_requested

    first = register_upload(db, "m1", _stored("1" * 64))
    duplicate = register_upload(db, "m1", _stored("1" * 64))
    second = register_upload(db, "m1", _stored("2" * 64))
    third = register_upload(db, "m1", _stored("3" * 64))
    assert duplicate.duplicate_of == first.id
    assert mark_run_requested(db, third.id) is True  # a direct submit got there first
    assert mark_run_requested(db, third.id) is False
    assert claim_uploads_for_runs(db, limit=1) == [first.id]
    assert claim_uploads_for_runs(db, limit=10) == [second.id]
    assert claim_uploads_for_runs(db, limit=10) == []
    assert {status_report(db, u.id).workflow.status for u in (first, second, third)} == {"pending"}
    assert status_report(db, duplicate.id).workflow is None
    assert clear_run_request(db, second.id) is True  # the reconciler's repair: asked again
    assert claim_uploads_for_runs(db, limit=10) == [second.id]


def test_a_run_failure_changes_only_the_latest_run(db):
    from poflow_dagster.store.workflow import record_run_failure

    upload = register_upload(db, "m1", _stored())
    stage_started(db, upload.id, "run-1", Stage.AI_PARSING, 1)
    run_1_started = status_report(db, upload.id).workflow.started_at - dt.timedelta(seconds=1)
    stage_started(db, upload.id, "run-2", Stage.AI_PARSING, 1)
    mark_completed(db, upload.id, "run-2")
    # The older run's failure, however late it is reported: the newer completed run stands.
    assert not record_run_failure(db, upload.id, "run-1", "purchase_order.ai_parsing", "boom: x",
                                  run_started_at=run_1_started)
    assert not record_run_failure(db, upload.id, "run-1", "purchase_order.ai_parsing", "boom: x")
    # A check failing after the run completed the PO does not fail it.
    assert not record_run_failure(db, upload.id, "run-2", "purchase_order_shopify_matches_drafts", "THROTTLED")
    assert status_report(db, upload.id).workflow.status == "completed"
    # A newer run that died before its first stage: it is the latest, so the workflow shows its failure.
    later = utcnow() + dt.timedelta(seconds=1)
    assert record_run_failure(db, upload.id, "run-3", None, "worker died", run_started_at=later)
    report = status_report(db, upload.id)
    assert (report.workflow.status, report.workflow.run_id, report.workflow.error_code) == ("failed", "run-3", "run_failed")
    assert report.upload.status == "failed"
    assert not record_run_failure(db, upload.id, "run-3", None, "worker died", run_started_at=later)  # recorded once


def test_migration_0003_keeps_the_first_of_two_saved_pos_with_one_number(db_url):
    """A database from before the unique constraint may hold the same supplier + PO number twice (the race it
    closes): upgrading keeps the earliest PO and records the later upload as its duplicate, workflow included."""
    from alembic import command
    from alembic.config import Config

    from poflow_dagster.store.db import MIGRATIONS_DIR, Database

    database = Database(db_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        conn.exec_driver_sql("INSERT INTO merchants (id, name, markup_percent, shopify_sync_enabled, created_at) "
                             "VALUES ('m1', 'm1', '40', true, '2026-01-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO suppliers (id, merchant_id, name, normalized_name, created_at) "
                             "VALUES (1, 'm1', 'ACME', 'acme', '2026-01-01 00:00:00')")
        for seq, upload in enumerate(["up-a", "up-b"], start=1):
            conn.exec_driver_sql(
                "INSERT INTO uploads (seq, id, merchant_id, original_filename, sha256, size_bytes, mime_type, "
                "stored_path, source, status, created_at, updated_at) VALUES "
                f"({seq}, '{upload}', 'm1', 'po.csv', '{str(seq) * 64}', 1, 'text/csv', '/tmp/po.csv', 'cli', "
                "'completed', '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
            conn.exec_driver_sql(
                "INSERT INTO purchase_orders (id, upload_id, merchant_id, supplier_id, po_number, source_format, "
                f"extractor, issues, created_at, updated_at) VALUES ({seq}, '{upload}', 'm1', 1, 'PO-7', 'csv', "
                "'test', '[]', '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
            conn.exec_driver_sql(f"INSERT INTO line_items (po_id, line_no, sku) VALUES ({seq}, 1, 'X')")
            conn.exec_driver_sql(
                "INSERT INTO workflow_executions (upload_id, status, progress_percent, updated_at) "
                f"VALUES ('{upload}', 'completed', 100, '2026-01-01 00:00:00')")
    database.migrate()
    with database.session() as session:
        assert session.scalars(sa.select(PurchaseOrder.upload_id)).all() == ["up-a"]
        assert session.scalar(sa.select(sa.func.count(LineItem.id))) == 1
        later = session.scalar(sa.select(Upload).where(Upload.id == "up-b"))
        assert (later.status, later.duplicate_of, later.error_code) == ("duplicate", "up-a", "duplicate_po")
        assert later.run_requested_at is not None  # it had its run: the sensor must not request another
    assert status_report(database, "up-b").workflow.error_code == "duplicate_po"
    database.dispose()


def test_analytics_state_round_trips_and_replaces(db):
    from poflow_dagster.store.analytics_state import load_json, load_state, save_json, save_state

    assert load_state(db, "cursor:RUN_SUCCESS") is None
    save_state(db, "cursor:RUN_SUCCESS", "17")
    save_state(db, "cursor:RUN_SUCCESS", "42")
    assert load_state(db, "cursor:RUN_SUCCESS") == "42"
    save_json(db, "model:eta", {"stages": {"ai_parsing": {"base_s": 1.5}}})
    assert load_json(db, "model:eta") == {"stages": {"ai_parsing": {"base_s": 1.5}}}
