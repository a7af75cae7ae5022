"""One PO per merchant + supplier + PO number, even when two uploads save it at the same moment
(PostgreSQL and SQLite, real threads on real connections)."""

from __future__ import annotations

import threading
from decimal import Decimal

import dagster as dg
import sqlalchemy as sa

from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.extraction import extract_file
from poflow_dagster.intake import upload_file
from poflow_dagster.store.db import Database
from poflow_dagster.store.purchase_orders import ensure_supplier, save_purchase_order
from poflow_dagster.store.schema import LineItem, ProductDraft, PurchaseOrder, Supplier
from poflow_dagster.store.uploads import StoredFile, register_upload
from poflow_dagster.store.workflow import mark_duplicate_po, status_report
from poflow_dagster_tests.faults import failing_writes

ROUNDS = 5


def _stored(sha: str) -> StoredFile:
    return StoredFile(sha256=sha, size_bytes=10, mime_type="text/csv", stored_path=f"/tmp/{sha[:8]}.csv",
                      original_filename=f"{sha[:8]}.csv")


def _po(po_number: str, supplier: str, qty: str) -> ParsedPO:
    line = POLine(line_no=1, sku="A", description="item", quantity=Decimal(qty), unit_cost=Decimal("2.00"),
                  line_total=Decimal(qty) * Decimal("2.00"))
    return ParsedPO(po_number=po_number, supplier_name=supplier, currency="USD", lines=[line],
                    source_format="csv", extractor="test")


def _race(workers: list) -> list:
    """Run the callables at once (a barrier releases them together); re-raise any error."""
    barrier = threading.Barrier(len(workers))
    results: list = [None] * len(workers)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = workers[index]()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def _save_then_record(db: Database, upload_id: str, parsed: ParsedPO):
    """What database_save does: save, and record the loser as the winner's duplicate."""
    saved = save_purchase_order(db, upload_id, parsed)
    if saved.duplicate_of:
        mark_duplicate_po(db, upload_id, f"run-{upload_id}", saved.duplicate_of)
    return saved


def test_two_uploads_of_one_po_saved_at_once_make_one_po(db):
    for round_no in range(ROUNDS):
        # A new supplier each round, so both transactions also race to create it.
        supplier = f"Race Supplier {round_no}"
        first = register_upload(db, "m1", _stored(f"{round_no}a".ljust(64, "0")))
        second = register_upload(db, "m1", _stored(f"{round_no}b".ljust(64, "0")))  # different bytes
        results = _race([
            lambda: _save_then_record(db, first.id, _po(f"PO-{round_no}", supplier, "1")),
            lambda: _save_then_record(db, second.id, _po(f"PO-{round_no}", f"  {supplier.upper()} ", "2")),
        ])
        winners = [r for r in results if r.duplicate_of is None]
        losers = [r for r in results if r.duplicate_of is not None]
        assert len(winners) == 1 and len(losers) == 1, results
        assert losers[0].duplicate_of == winners[0].upload_id and losers[0].po_id == winners[0].po_id
        with db.session() as session:
            pos = list(session.scalars(sa.select(PurchaseOrder).where(PurchaseOrder.po_number == f"PO-{round_no}")))
            assert [po.upload_id for po in pos] == [winners[0].upload_id]
            assert session.scalar(sa.select(sa.func.count(Supplier.id)).where(
                Supplier.normalized_name == supplier.casefold())) == 1
        loser = status_report(db, losers[0].upload_id)
        assert loser.upload.status == "duplicate" and loser.upload.error_code == "duplicate_po"
        assert loser.upload.duplicate_of == winners[0].upload_id
        assert loser.workflow.error_code == "duplicate_po"
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(PurchaseOrder.id))) == ROUNDS
        assert session.scalar(sa.select(sa.func.count(LineItem.id))) == ROUNDS


def test_ensure_supplier_is_race_safe(db):
    register_upload(db, "m1", _stored("s" * 64))  # the merchant exists

    def create() -> int:
        with db.session() as session:
            supplier = ensure_supplier(session, "m1", "Same Name GmbH")
            assert supplier is not None
            return supplier.id

    for _ in range(ROUNDS):
        ids = _race([create, create, create])
        assert len(set(ids)) == 1
        with db.session() as session:
            session.execute(sa.delete(Supplier))


def test_database_save_stops_the_losing_run_cleanly(home, db, samples):
    """The pipeline's path when the race is lost between ai_parsing and database_save: the loser's first
    run parsed (no duplicate yet) and failed to save (an injected database fault); meanwhile the other
    upload saved the same PO. Re-executed from failure, database_save meets the unique constraint:
    the run succeeds without output (no drafts, no Shopify), the upload is the winner's duplicate."""
    winner = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    other_bytes = home / "acme-po-1001-again.csv"
    other_bytes.write_bytes(samples["acme-po-1001.csv"].read_bytes() + b"\nThank you.\n")
    loser = upload_file(db, home, "acme", other_bytes)
    assert loser.duplicate_of is None
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("po_uploads", [loser.id])
        tags = {"dagster/partition": loser.id}
        with failing_writes(db, "purchase_orders", "INSERT"):
            with dg.execute_job(dg.reconstructable(_po_job), instance, tags=tags) as first:
                assert not first.success
        save_purchase_order(db, winner.id, extract_file(samples["acme-po-1001.csv"]))
        with dg.execute_job(
            dg.reconstructable(_po_job), instance, tags=tags,
            reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
        ) as again:
            assert again.success
            executed = {e.step_key for e in again.all_events if e.is_step_success}
    assert executed == {"purchase_order.database_save"}  # drafts, Shopify and status_update never ran
    report = status_report(db, loser.id)
    assert report.upload.status == "duplicate" and report.upload.duplicate_of == winner.id
    assert report.upload.error_code == "duplicate_po"
    assert report.workflow.status == "completed" and report.workflow.current_stage == "database_save"
    assert report.workflow.run_id == again.run_id
    with db.session() as session:
        assert list(session.scalars(sa.select(PurchaseOrder.upload_id))) == [winner.id]
        assert session.scalar(sa.select(sa.func.count(ProductDraft.id))) == 0


def _po_job():
    from poflow_dagster.definitions import defs

    return defs.resolve_job_def("po_job")
