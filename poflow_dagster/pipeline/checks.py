"""Per-partition checks that the database and Shopify hold exactly what the PO says."""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import warnings
from decimal import Decimal

import dagster as dg

from poflow_dagster.pipeline.assets import purchase_order
from poflow_dagster.pipeline.metadata import md_text
from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.pipeline.stage_runner import retry_when_database_is_away
from poflow_dagster.resources import DatabaseResource, ShopifyResource
from poflow_dagster.store.purchase_orders import po_integrity, saved_po_problems
from poflow_dagster.store.verification import record_verification
from poflow_dagster.verification import verify_upload

# Partitioned asset checks are a preview feature; we rely on them deliberately, so silence only that.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=r".*partitions_def.*")


def _problems_markdown(problems: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {md_text(p)}" for p in problems) or "none")


@dg.asset_check(asset=purchase_order, partitions_def=po_uploads, blocking=True)
def po_saved_correctly(context: dg.AssetCheckExecutionContext, purchase_order: dict, db: DatabaseResource):
    """The database holds this PO once, with as many lines as were parsed, summing to its subtotal
    (within 0.01), and no line items without a PO. When the document itself does not add up (the PO is
    held for review with ``SUBTOTAL_MISMATCH``), the lines must sum to what was parsed instead."""
    with retry_when_database_is_away(context.op_execution_context):
        integrity = po_integrity(db.database, context.partition_key)
    subtotal = purchase_order.get("subtotal")
    document_inconsistent = any(issue.startswith("SUBTOTAL_MISMATCH") for issue in purchase_order["issues"])
    expected_sum = purchase_order["lines_sum"] if subtotal is None or document_inconsistent else subtotal
    problems = saved_po_problems(integrity, purchase_order["line_count"], Decimal(expected_sum))
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "lines_in_db": integrity.line_count,
            "lines_parsed": purchase_order["line_count"],
            "lines_sum": format(integrity.lines_sum, "f"),
            "subtotal": subtotal or "not stated",
            "compared_with": "parsed lines" if expected_sum != subtotal else "subtotal",
            "problems": _problems_markdown(problems),
        },
    )


@dg.asset_check(asset=purchase_order, partitions_def=po_uploads)
def shopify_matches_drafts(
    context: dg.AssetCheckExecutionContext, purchase_order: dict, db: DatabaseResource, shopify: ShopifyResource
) -> dg.AssetCheckResult:
    """For every product draft of this PO, Shopify (queried back through our client by the GIDs we recorded,
    up to 250 per request) holds a product with that SKU, handle, price, title and status. Nothing to check
    while the PO waits for review or when sync is off.

    Never fails the run: Shopify errors are retried by the client, and if it still cannot read back the
    check fails with the reason. The result is recorded beside the workflow status (``poflow status``),
    never instead of it."""
    with retry_when_database_is_away(context.op_execution_context):
        database = db.database
    upload_id = context.partition_key
    held = purchase_order.get("shopify_sync") == "held_for_review"
    result = verify_upload(database, upload_id, shopify, held_for_review=held)
    try:
        record_verification(database, upload_id, result.status, result.message)
    except Exception:  # noqa: BLE001 - the database being briefly away must not fail a completed PO's run
        context.log.warning(f"{upload_id}: could not record the verification result; it stays in this check's metadata")
    metadata = {"verification": result.status, "reason": result.message or "-", "drafts_checked": result.drafts}
    if result.shop_url:
        metadata.update(shop=result.shop_url, shopify_requests=result.requests, problems=_problems_markdown(result.problems))
    if result.error_code:
        metadata["error_code"] = result.error_code
    return dg.AssetCheckResult(passed=result.passed, metadata=metadata)
