"""Per-partition checks that the database and Shopify hold exactly what the PO says."""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import warnings
from decimal import Decimal

import dagster as dg

from poflow_dagster.pipeline.assets import purchase_order
from poflow_dagster.pipeline.metadata import md_text
from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.resources import DatabaseResource, ShopifyResource
from poflow_dagster.shopify.publish import verify_published
from poflow_dagster.store.drafts import drafts_for_upload
from poflow_dagster.store.purchase_orders import po_integrity, saved_po_problems
from poflow_dagster.store.uploads import merchant_for_upload

# Partitioned asset checks are a preview feature; we rely on them deliberately, so silence only that.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=r".*partitions_def.*")


def _problems_markdown(problems: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {md_text(p)}" for p in problems) or "none")


@dg.asset_check(asset=purchase_order, partitions_def=po_uploads, blocking=True)
def po_saved_correctly(context: dg.AssetCheckExecutionContext, purchase_order: dict, db: DatabaseResource):
    """The database holds this PO once, with as many lines as were parsed, summing to its subtotal
    (within 0.01), and no line items without a PO. When the document itself does not add up (the PO is
    held for review with ``SUBTOTAL_MISMATCH``), the lines must sum to what was parsed instead."""
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
    """For every product draft of this PO, Shopify (queried back through our client) holds a product
    with that SKU, price and status. Nothing to check while the PO waits for review."""
    database = db.database
    merchant = merchant_for_upload(database, context.partition_key)
    drafts = drafts_for_upload(database, context.partition_key)
    if purchase_order.get("shopify_sync") == "held_for_review":
        return dg.AssetCheckResult(passed=True, metadata={"skipped": "held for review: not synced yet", "drafts": len(drafts)})
    if not merchant.shopify_sync_enabled:
        return dg.AssetCheckResult(
            passed=True, metadata={"skipped": f"Shopify sync is off for merchant {merchant.id}", "drafts": len(drafts)}
        )
    target = shopify.target_for(merchant)
    with shopify.client_for(target) as client:
        problems = verify_published(client, merchant.id, drafts)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"drafts_checked": len(drafts), "shop": target.url, "problems": _problems_markdown(problems)},
    )
