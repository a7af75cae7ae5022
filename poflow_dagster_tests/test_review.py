"""Numbers that don't add up stop a PO before Shopify; approval continues it without redoing work;
the same supplier + PO number again is a duplicate."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.pipeline.sensors import upload_sensor
from poflow_dagster.resources import DatabaseResource, StorageResource
from poflow_dagster.store.review import approve_upload
from poflow_dagster.store.schema import LineItem, PurchaseOrder
from poflow_dagster.store.workflow import status_report

BAD_PO = (
    "PO Number: PO-77\nSupplier: Widget Works\nCurrency: USD\n\n"
    "SKU,Description,Qty,Unit Cost,Line Total\n"
    "W-1,Widget,2,5.00,11.00\n"
    "W-2,Gadget,1,3.00,3.00\n"
    ",,,Subtotal,13.00\n"  # the lines say 14.00: the document contradicts itself
)


def _stage_outcomes(db, upload_id: str, run_id: str) -> dict[str, str]:
    return {s.stage: s.outcome for s in status_report(db, upload_id).stages if s.run_id == run_id}


def test_needs_review_then_approve_continues_without_redoing_work(home, db, shop, instance, tmp_path):
    path = tmp_path / "po77.csv"
    path.write_text(BAD_PO)
    upload = upload_file(db, home, "acme", path)

    first = run_upload(defs, instance, db, upload.id)

    assert first.success and first.summary["status"] == "needs_review"
    report = status_report(db, upload.id)
    assert report.workflow.status == "needs_review" and report.upload.status == "needs_review"
    assert "LINE_AMOUNT_MISMATCH" in report.workflow.error_message
    assert "SUBTOTAL_MISMATCH" in report.workflow.error_message
    assert shop.count_products() == 0  # stopped before Shopify
    assert first.checks == {"po_saved_correctly": True, "shopify_matches_drafts": True}
    materialization = instance.get_latest_materialization_event(dg.AssetKey("purchase_order")).asset_materialization
    assert r"LINE\_AMOUNT\_MISMATCH" in materialization.metadata["review_reasons"].value  # markdown-escaped
    assert first.images is not None  # images run for a PO held for review too (on its drafts; nothing published)

    approval = approve_upload(db, upload.id, "reviewer@acme")
    sensor_context = dg.build_sensor_context(
        instance=instance, cursor="999999",
        resources={"db": DatabaseResource(url=db.url), "storage": StorageResource(home=str(home))},
    )
    [request] = upload_sensor(sensor_context).run_requests
    assert (request.partition_key, request.run_key) == (upload.id, approval.run_key)

    second = run_upload(defs, instance, db, upload.id)

    assert second.success and second.summary["status"] == "completed"
    assert status_report(db, upload.id).workflow.status == "completed"
    outcomes = _stage_outcomes(db, upload.id, second.run_id)
    assert outcomes["ai_parsing"] == "reused" and outcomes["database_save"] == "reused"
    assert outcomes["product_draft_creation"] == "reused" and outcomes["shopify_sync"] == "success"
    assert shop.count_products() == 2 and all(second.checks.values())
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(PurchaseOrder.id))) == 1
        assert session.scalar(sa.select(sa.func.count(LineItem.id))) == 2


def test_approving_a_po_that_is_not_waiting_is_a_clear_error(home, db, samples):
    import pytest

    from poflow_dagster.domain.errors import PoflowError

    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    with pytest.raises(PoflowError) as error:
        approve_upload(db, upload.id, "me")
    assert error.value.code == "not_awaiting_review"


def test_same_supplier_and_po_number_is_a_duplicate(home, db, shop, instance, samples, tmp_path):
    first = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    assert run_upload(defs, instance, db, first.id).success
    resent = tmp_path / "acme-po-1001-resent.csv"
    resent.write_bytes(samples["acme-po-1001.csv"].read_bytes() + b"\n\n")  # other bytes, same PO
    second = upload_file(db, home, "acme", resent)
    assert second.duplicate_of is None  # not the same bytes

    result = run_upload(defs, instance, db, second.id)

    assert result.success and result.summary is None  # no PO asset for the duplicate
    report = status_report(db, second.id)
    assert report.upload.status == "duplicate" and report.upload.duplicate_of == first.id
    assert report.workflow.error_code == "duplicate_po"
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(PurchaseOrder.id))) == 1
