"""End to end: the real po_job (graph asset + checks) on SQLite and PostgreSQL, against the emulator."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.samples import SAMPLE_EXPECTATIONS
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.schema import LineItem, ProductDraft, PurchaseOrder, ShopifyProduct, StageMetric
from poflow_dagster.store.workflow import status_report

PO_STAGES = ["ai_parsing", "database_save", "product_draft_creation", "shopify_sync", "status_update"]


def _counts(db) -> dict[str, int]:
    with db.session() as session:
        return {
            model.__tablename__: session.scalar(sa.select(sa.func.count()).select_from(model))
            for model in (PurchaseOrder, LineItem, ProductDraft, ShopifyProduct)
        }


def test_sample_po_end_to_end_and_rerun_is_idempotent(home, db, shop, instance, samples):
    name = "acme-po-1001.csv"
    expected = SAMPLE_EXPECTATIONS[name]
    upload = upload_file(db, home, "acme", samples[name])

    result = run_upload(defs, instance, db, upload.id)

    assert result.success, result.error
    assert result.checks == {"po_saved_correctly": True, "shopify_matches_drafts": True}
    assert result.images == {"drafts": result.summary["drafts"], "images_attached": 0,
                             "reason": "no image source is configured; drafts keep no images"}
    summary = result.summary
    assert summary["po_number"] == expected["po_number"]
    assert summary["line_count"] == expected["line_count"]
    assert Decimal(summary["subtotal"]) == expected["subtotal"]
    report = status_report(db, upload.id)
    assert (report.workflow.status, report.workflow.progress_percent, report.upload.status) == ("completed", 100, "completed")
    assert [s.stage for s in report.stages if s.run_id == result.run_id] == [*PO_STAGES, "image_attachment"]
    assert all(s.outcome == "success" and s.duration_ms is not None for s in report.stages if s.stage in PO_STAGES)
    images = [s for s in report.stages if s.stage == "image_attachment"]
    assert len(images) == 1 and images[0].outcome == "skipped" and images[0].run_id == result.run_id  # same run
    counts = _counts(db)
    distinct_skus = summary["drafts"]
    assert counts == {"purchase_orders": 1, "line_items": expected["line_count"], "product_drafts": distinct_skus,
                      "shopify_products": distinct_skus}
    assert shop.count_products() == distinct_skus

    # Output metadata the UI shows: durations, counts and the parsed lines as a table.
    materialization = instance.get_latest_materialization_event(dg.AssetKey("purchase_order")).asset_materialization
    assert materialization.partition == upload.id
    assert materialization.metadata["line_count"].value == expected["line_count"]
    assert "| # | SKU |" in materialization.metadata["parsed_po"].value
    # The partition page tells the PO's story, not the last step's: the whole timeline and its total lead.
    assert "duration_ms" not in materialization.metadata and materialization.metadata["status_update_ms"].value >= 0
    assert materialization.metadata["end_to_end_s_so_far"].value >= materialization.metadata["ai_parsing_s"].value > 0

    # Re-running the partition changes nothing: no second PO, line, draft or Shopify product.
    again = run_upload(defs, instance, db, upload.id)
    assert again.success and all(again.checks.values())
    assert _counts(db) == counts and shop.count_products() == distinct_skus
    with db.session() as session:
        metric_rows = session.scalar(sa.select(sa.func.count(StageMetric.id)).where(StageMetric.stage == "ai_parsing"))
    assert metric_rows == 2  # one per run


@pytest.mark.parametrize("name", sorted(SAMPLE_EXPECTATIONS))  # one test per sample: spread over the workers
def test_every_sample_format_completes(home, db, shop, instance, samples, name):
    upload = upload_file(db, home, "multi", samples[name])
    result = run_upload(defs, instance, db, upload.id, with_images=False)
    assert result.success, (name, result.error)
    assert all(result.checks.values()) and len(result.checks) == 2
    assert result.images is None  # with_images=False: the PO and its checks only
    assert result.summary["line_count"] == SAMPLE_EXPECTATIONS[name]["line_count"]


def test_sync_off_skips_shopify_and_says_so(home, db, shop, instance, samples):
    with db.session() as session:
        configure_merchant(session, "quiet", shopify_sync_enabled=False)
    upload = upload_file(db, home, "quiet", samples["acme-po-1001.csv"])
    result = run_upload(defs, instance, db, upload.id)
    assert result.success and result.summary["shopify_sync"] == "skipped"
    assert result.checks["shopify_matches_drafts"] is True
    assert shop.count_products() == 0
    step = [e for e in instance.all_logs(result.run_id) if e.is_dagster_event and e.dagster_event.is_successful_output
            and e.dagster_event.step_key.endswith("shopify_sync")][0]
    metadata = step.dagster_event.event_specific_data.metadata
    assert "Shopify sync is off" in metadata["skipped"].value and metadata["outcome"].value == "skipped"


def test_unreadable_document_fails_cleanly_and_keeps_the_file(home, db, shop, instance, tmp_path: Path):
    pdf = tmp_path / "scan.csv"
    pdf.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n")
    upload = upload_file(db, home, "acme", pdf)
    result = run_upload(defs, instance, db, upload.id)
    assert not result.success and result.failed_step == "purchase_order.ai_parsing"
    report = status_report(db, upload.id)
    assert report.workflow.status == "failed" and report.workflow.current_stage == "ai_parsing"
    assert report.workflow.error_code == "corrupt_pdf"  # a PDF by content (named .csv), and damaged
    assert "\n" not in report.workflow.error_message and "Traceback" not in report.workflow.error_message
    assert report.upload.status == "failed" and report.upload.error_code == "corrupt_pdf"
    assert Path(report.upload.stored_path).read_bytes() == pdf.read_bytes()
    assert _counts(db)["purchase_orders"] == 0


def _step_order(instance, run_id: str) -> list[str]:
    return [e.dagster_event.step_key for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)]


def test_images_run_in_the_po_run_after_it_is_completed_and_its_checks(home, db, shop, instance, samples):
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    result = run_upload(defs, instance, db, upload.id)
    assert result.success and result.images is not None
    # One run: the PO's stages, both checks, then images last (they never hold the PO or its checks back).
    assert [r.run_id for r in instance.get_runs()] == [result.run_id]
    assert _step_order(instance, result.run_id)[-3:] == [
        "purchase_order_po_saved_correctly", "purchase_order_shopify_matches_drafts",
        "product_images.image_attachment"]
    with db.session() as session:
        metrics = {m.stage: m for m in session.scalars(sa.select(StageMetric).where(StageMetric.run_id == result.run_id))}
    report = status_report(db, upload.id)
    assert report.workflow.completed_at is not None
    assert metrics["image_attachment"].started_at >= metrics["status_update"].ended_at


def test_a_failing_image_step_never_fails_the_run_nor_the_po(home, db, shop, instance, samples, monkeypatch):
    import poflow_dagster.pipeline.images as images

    def broken(database, upload_id):
        raise RuntimeError("image store exploded")

    monkeypatch.setattr(images, "drafts_for_upload", broken)
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    result = run_upload(defs, instance, db, upload.id)

    assert result.success, result.error
    assert result.checks == {"po_saved_correctly": True, "shopify_matches_drafts": True}
    assert result.images["images_attached"] == 0 and "image store exploded" in result.images["error"]
    report = status_report(db, upload.id)
    assert (report.workflow.status, report.workflow.progress_percent, report.upload.status) == (
        "completed", 100, "completed")
    assert report.workflow.error_code is None
    stage = [s for s in report.stages if s.stage == "image_attachment"]
    assert [(s.run_id, s.outcome, s.error_code) for s in stage] == [(result.run_id, "failed", "RuntimeError")]
    output = [e for e in instance.all_logs(result.run_id) if e.is_dagster_event
              and e.dagster_event.is_successful_output and e.dagster_event.step_key.endswith("image_attachment")]
    metadata = output[0].dagster_event.event_specific_data.metadata
    assert metadata["outcome"].value == "failed" and "image store exploded" in metadata["error"].value


def test_a_failing_blocking_check_skips_the_images(home, db, shop, instance, samples, monkeypatch):
    import poflow_dagster.pipeline.checks as checks

    monkeypatch.setattr(checks, "saved_po_problems", lambda *args: ["forced problem"])
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    result = run_upload(defs, instance, db, upload.id)

    assert result.checks["po_saved_correctly"] is False
    assert "product_images.image_attachment" not in _step_order(instance, result.run_id)
    assert result.images is None
    report = status_report(db, upload.id)
    assert report.workflow.status == "completed"  # marked by status_update before the check ran
    assert not [s for s in report.stages if s.stage == "image_attachment"]
