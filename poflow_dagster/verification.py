"""The ``shopify_matches_drafts`` check's core: read one upload's products back from Shopify and say how it went.

Never raises for Shopify or settings problems: a read-back that cannot finish is an ``error`` outcome with its
reason, so a check built on it reports instead of failing the PO's run. The outcome is what
``store.verification.record_verification`` keeps beside the workflow status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from poflow_dagster.catalog.po_matching import recorded_matching, verify_matched_costs
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.client import MAX_NODE_IDS, ShopifyClient, handle_for_sku
from poflow_dagster.shopify.connection import ShopTarget
from poflow_dagster.shopify.publish import recorded_links, verify_published
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import DraftRecord, current_drafts, drafts_for_upload
from poflow_dagster.store.purchase_orders import saved_lines
from poflow_dagster.store.schema import Merchant
from poflow_dagster.store.uploads import merchant_for_upload

logger = logging.getLogger(__name__)


class ShopAccess(Protocol):
    """Where a merchant's products live and a client for it (``ShopifyResource`` is one)."""

    def target_for(self, merchant: Merchant) -> ShopTarget: ...

    def client_for(self, target: ShopTarget) -> ShopifyClient: ...


@dataclass(frozen=True)
class UploadVerification:
    """passed | failed | error | skipped, a one-line message, and what the read-back took."""

    status: str
    message: str
    problems: list[str] = field(default_factory=list)
    drafts: int = 0
    requests: int = 0
    shop_url: str | None = None
    error_code: str | None = None

    @property
    def passed(self) -> bool:
        return self.status in ("passed", "skipped")


def verify_upload(db: Database, upload_id: str, shops: ShopAccess, *, held_for_review: bool) -> UploadVerification:
    """Shopify holds exactly what this upload's drafts say (skipped while held for review or with sync off)."""
    try:
        return _verify(db, upload_id, shops, held_for_review=held_for_review)
    except PoflowError as error:
        return UploadVerification("error", f"{error.code}: {error.message}", error_code=error.code)
    except Exception as error:  # noqa: BLE001 - a read-back reports; it never fails the PO's run
        logger.exception("the Shopify read-back of %s could not finish", upload_id)
        return UploadVerification("error", f"{type(error).__name__}: {error}", error_code=type(error).__name__)


def _verify(db: Database, upload_id: str, shops: ShopAccess, *, held_for_review: bool) -> UploadVerification:
    merchant = merchant_for_upload(db, upload_id)
    drafts = drafts_for_upload(db, upload_id)
    if held_for_review:
        return UploadVerification("skipped", "held for review: not synced yet", drafts=len(drafts))
    if not merchant.shopify_sync_enabled:
        return UploadVerification("skipped", f"Shopify sync is off for merchant {merchant.id}", drafts=len(drafts))
    matching = recorded_matching(db, upload_id)
    lines = saved_lines(db, upload_id)
    existing = matching.matched_skus(lines)  # existing variants: cost (and opted-in price) checked, not ours
    own = [draft for draft in drafts if draft.sku not in existing]
    target = shops.target_for(merchant)
    with shops.client_for(target) as client:
        result = verify_published(db, client, target.url, merchant.id, own)
        barcode_problems, barcode_requests = verify_barcodes(db, client, target.url, merchant.id, own)
        cost_problems, cost_requests = verify_matched_costs(
            client, lines, matching, price_markup=merchant.markup_percent if merchant.update_price else None)
    problems = result.problems + barcode_problems + cost_problems + unfinished_receipts(db, upload_id)
    checked = result.checked + len(matching.matched)
    message = f"{checked} products match" if not problems else (
        f"{len(problems)} mismatch{'es' if len(problems) > 1 else ''}: " + "; ".join(problems[:5])
    )
    return UploadVerification(
        "failed" if problems else "passed", message, problems=problems, drafts=checked,
        requests=result.requests + barcode_requests + cost_requests, shop_url=target.url,
    )


_BARCODES_QUERY = """
query PoflowVariantBarcodes($ids: [ID!]!) {
  nodes(ids: $ids) { ... on ProductVariant { id barcode } }
}
"""


def verify_barcodes(
    db: Database, client: ShopifyClient, shop_url: str, merchant_id: str, drafts: list[DraftRecord]
) -> tuple[list[str], int]:
    """Drafts that carry a barcode: the variant recorded for each in this shop holds exactly that barcode (read by
    id, up to 250 a request). Returns the mismatch lines and the number of requests. A draft with no recorded
    variant is left to :func:`verify_published` (which reports it missing)."""
    wanted = {handle_for_sku(merchant_id, d.sku): d for d in current_drafts(db, drafts) if d.barcode}
    links = recorded_links(db, shop_url, list(wanted.values()))
    by_gid = {link.variant_gid: wanted[handle] for handle, link in links.items() if handle in wanted}
    gids = sorted(by_gid)
    problems: list[str] = []
    requests = 0
    for start in range(0, len(gids), MAX_NODE_IDS):
        batch = gids[start:start + MAX_NODE_IDS]
        nodes = client.execute(_BARCODES_QUERY, {"ids": batch})["nodes"]
        requests += 1
        for gid, node in zip(batch, nodes, strict=True):
            draft = by_gid[gid]
            have = (node or {}).get("barcode") or None
            if node is not None and have != draft.barcode:
                problems.append(f"SKU {draft.sku}: barcode differs (expected {draft.barcode}, "
                                f"Shopify has {have or 'none'})")
    return problems, requests


def unfinished_receipts(db: Database, upload_id: str) -> list[str]:
    """Stock receipts of the upload Shopify has not confirmed (pending) or refused (failed): stock differs from
    what the PO says was received until they are finished (``poflow receive`` finishes pending ones).

    Only receipts someone made count: a line with none is not a problem (a ``manual`` merchant's goods may not
    have arrived yet; a ``sync`` merchant's receipts are made by the sync and show up here if they went wrong)."""
    from sqlalchemy import select

    from poflow_dagster.store.schema import StockReceipt

    with db.session() as session:
        rows = session.execute(select(StockReceipt.line_no, StockReceipt.quantity, StockReceipt.status,
                                      StockReceipt.error).where(StockReceipt.upload_id == upload_id,
                                                                StockReceipt.status != "applied")
                               .order_by(StockReceipt.line_no, StockReceipt.receipt_no)).all()
    return [f"line {line_no}: receipt of {format(quantity, 'f')} units {status}" + (f" ({error})" if error else "")
            for line_no, quantity, status, error in rows]
