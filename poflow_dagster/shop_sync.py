"""A PO's Shopify stage without Dagster: match the catalog, hold ambiguous lines, update matched variants' cost
(and price, for merchants who opt in), publish the rest as DRAFT products, receive stock for merchants who receive
on sync (``manual`` merchants receive with ``poflow receive``). ``pipeline/ops.shopify_sync`` calls it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from poflow_dagster.catalog.po_matching import match_po, update_matched_costs
from poflow_dagster.catalog.supplier_metafields import write_supplier_sku_metafields
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.receiving import receive_on_sync
from poflow_dagster.shopify.client import ShopifyClient, SyncedProduct
from poflow_dagster.shopify.publish import publish_drafts
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import DraftRecord
from poflow_dagster.store.review import is_approved


@dataclass(frozen=True)
class ShopSync:
    """What the stage did in the shop, or why it held the PO (``held_for_review``: nothing was written)."""

    held_for_review: list[str] = field(default_factory=list)
    synced: list[SyncedProduct] = field(default_factory=list)
    matched: int = 0
    ambiguous: int = 0
    cost_updates: int = 0
    receipts: int | None = None  # None: the merchant does not receive stock at sync (off, or manual)
    receipts_failed: int | None = None


def sync_po_to_shop(
    db: Database, client: ShopifyClient, merchant_id: str, shop_url: str, upload_id: str, parsed: ParsedPO,
    drafts: list[DraftRecord], *, on_progress: Callable[[int, int], None] | None = None,
) -> ShopSync:
    """Match the PO's lines to the shop's catalog; while a line is ambiguous and nobody approved the PO, hold it;
    otherwise update matched variants' cost (and opted-in price), publish the other drafts and, for a merchant who
    receives on sync, receive stock (once)."""
    matching = match_po(db, client, merchant_id, shop_url, upload_id, parsed)
    if matching.ambiguous and not is_approved(db, upload_id):
        return ShopSync(held_for_review=matching.review_reasons(parsed), matched=len(matching.matched),
                        ambiguous=len(matching.ambiguous))
    existing = matching.matched_skus(parsed.lines)
    cost_updates = update_matched_costs(db, client, merchant_id, shop_url, parsed, matching)
    write_supplier_sku_metafields(db, client, merchant_id, shop_url)  # what reviewers taught, kept in the shop too
    synced = publish_drafts(db, client, shop_url, merchant_id, [d for d in drafts if d.sku not in existing],
                            on_progress=on_progress)
    received = receive_on_sync(db, client, upload_id)
    return ShopSync(
        synced=synced, matched=len(matching.matched), ambiguous=len(matching.ambiguous), cost_updates=cost_updates,
        receipts=None if received is None else len(received.receipts),
        receipts_failed=None if received is None else len(received.failed),
    )
