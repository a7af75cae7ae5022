"""publish_drafts / verify_published: POs that share a SKU never leave Shopify behind the merchant's draft."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.shopify.client import ShopifyClient, handle_for_sku
from poflow_dagster.shopify.publish import publish_drafts, verify_published
from poflow_dagster.store.drafts import create_drafts_for_po
from poflow_dagster.store.purchase_orders import save_purchase_order
from poflow_dagster.store.uploads import StoredFile, register_upload


def _po(number: str, title: str, cost: str) -> ParsedPO:
    line = POLine(line_no=1, sku="SHARED-1", description=title, quantity=Decimal(1), unit_cost=Decimal(cost),
                  line_total=Decimal(cost))
    return ParsedPO(po_number=number, supplier_name="Shared Supply", currency="USD", lines=[line],
                    source_format="csv", extractor="test")


def _upload(db, digit: str) -> str:
    stored = StoredFile(sha256=digit * 64, size_bytes=1, mime_type="text/csv", stored_path="/dev/null",
                        original_filename=f"{digit}.csv")
    return register_upload(db, "shared", stored).id


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_stale_sync_of_a_shared_sku_never_overwrites_a_newer_draft(db, shop, tmp_path: Path) -> None:
    """PO A created the draft and holds it in memory; PO B (same SKU, new title and cost) updates the draft and
    syncs first; A's sync comes last. Shopify must end with B's values — the draft's — not A's stale ones."""
    first, second = _upload(db, "a"), _upload(db, "b")
    po_a, po_b = _po("A-1", "Old title", "10.00"), _po("B-1", "New title", "20.00")
    save_purchase_order(db, first, po_a)
    stale = create_drafts_for_po(db, first, po_a).drafts  # A's stage output, as the run passes it on
    save_purchase_order(db, second, po_b)
    fresh = create_drafts_for_po(db, second, po_b).drafts
    with ShopifyClient(shop.url, "test-token") as client:
        publish_drafts(db, client, shop.url, "shared", fresh)
        publish_drafts(db, client, shop.url, "shared", stale)  # A finishes last, with what it read earlier
        product = client.get_product(handle_for_sku("shared", "SHARED-1"))
        assert product is not None and product.title == "New title"
        assert product.variants[0].price == fresh[0].price == Decimal("28.00")
        assert verify_published(db, client, shop.url, "shared", stale, settle_seconds=()).problems == []
