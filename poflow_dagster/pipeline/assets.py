"""The purchase order as a graph-backed asset: one partition per upload, one op per stage."""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import dagster as dg

from poflow_dagster.pipeline.ops import ai_parsing, database_save, product_draft_creation, shopify_sync, status_update
from poflow_dagster.pipeline.partitions import po_uploads


@dg.graph_asset(partitions_def=po_uploads, group_name="purchase_orders", kinds={"python", "shopify"})
def purchase_order() -> dict:
    """One uploaded purchase order, end to end:
    ``ai_parsing`` → ``database_save`` → ``product_draft_creation`` → ``shopify_sync`` → ``status_update``.

    The partition key is the upload id. The value is the PO's summary; every step's output carries
    its duration, counts and the parsed lines. A PO whose numbers don't add up stops before Shopify
    (``needs_review``, reasons in the metadata) until ``poflow approve`` lets a new run continue.
    """
    parsed = ai_parsing()
    saved = database_save(parsed)
    drafts = product_draft_creation(parsed, saved)
    synced = shopify_sync(parsed, drafts)
    return status_update(parsed, saved, drafts, synced)
