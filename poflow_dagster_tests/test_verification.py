"""shopify_matches_drafts end to end: batched read-back, failures reported (never raised), recorded beside status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.resources import ShopifyResource
from poflow_dagster.status_view import render_status, status_json
from poflow_dagster.store.verification import record_verification
from poflow_dagster.store.workflow import status_report


def big_po(path: Path, lines: int) -> Path:
    """A CSV purchase order with ``lines`` distinct SKUs at 1.00 each."""
    rows = [f"VER-{i:04d},Verified item {i},1,$1.00,$1.00" for i in range(lines)]
    path.write_text(
        "Purchase Order\nPO Number: PO-VERIFY-1\nSupplier,Verify Supply Co\nOrder Date,2026-03-03\nCurrency: USD\n\n"
        "SKU,Description,Qty,Unit Price,Line Total\n" + "\n".join(rows) + f"\n\n,,,Subtotal,{lines}.00\n"
    )
    return path


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_check_reads_back_in_batches_and_a_failing_read_back_never_fails_the_run(
    home, db, shop, instance, tmp_path: Path
) -> None:
    shop.set_bucket(size=2000, restore_rate=2000)  # this test is about the check, not about pacing
    upload = upload_file(db, home, "verify", big_po(tmp_path / "po.csv", 260))

    result = run_upload(defs, instance, db, upload.id, with_images=False)
    assert result.success, result.error
    assert result.checks == {"po_saved_correctly": True, "shopify_matches_drafts": True}
    # 260 products read back by their recorded GIDs: 250 + 10, nothing one by one.
    operations = shop.stats.operations
    assert operations.get("nodes") == 2 and "productByIdentifier" not in operations
    assert operations.get("nodes") <= 260 / 100
    report = status_report(db, upload.id)
    assert report.workflow.status == "completed"
    assert (report.workflow.verification_status, report.workflow.verification_message) == (
        "passed", "260 products match")
    assert status_json(report)["verification"]["status"] == "passed"
    assert "verified    passed" in render_status(report)

    # Shopify's read-backs now fail with 502 every time: the client retries, gives up, and the check fails
    # with the reason. The run succeeds and the completed PO stays completed.
    shop.inject_failures(502, 10_000, only="nodes")
    again = run_upload(defs, instance, db, upload.id, with_images=False,
                       resources={"shopify": ShopifyResource(max_attempts=2)})
    assert again.success, again.error
    assert again.checks == {"po_saved_correctly": True, "shopify_matches_drafts": False}
    assert shop.stats.injected_failures == 2  # one nodes request, tried twice
    report = status_report(db, upload.id)
    assert (report.workflow.status, report.upload.status) == ("completed", "completed")
    assert report.workflow.verification_status == "error"
    assert report.workflow.verification_message.startswith("shopify_unreachable: HTTP 502")
    shown = json.loads(json.dumps(status_json(report)))
    assert shown["workflow"]["status"] == "completed" and shown["verification"]["status"] == "error"


def test_record_verification_touches_only_the_verification_columns(db, home, tmp_path: Path) -> None:
    upload = upload_file(db, home, "verify", big_po(tmp_path / "po.csv", 2))
    assert record_verification(db, upload.id, "passed", "fine") is False  # no workflow row yet: nothing to do
    with pytest.raises(ValueError):
        record_verification(db, upload.id, "great", None)
