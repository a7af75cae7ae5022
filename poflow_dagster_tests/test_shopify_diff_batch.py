"""The dry-run diff of a big PO reads the shop in batches (a handful of requests, not one per product) and still
says exactly what would change: products created or updated, matched variants' cost and opted-in price, and the
stock a manual merchant has received so far (the sync receives none)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from poflow_dagster import receiving
from poflow_dagster.catalog.store import upsert_catalog_variants
from poflow_dagster.domain.drafts import retail_price
from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, VariantUpdate, handle_for_sku
from poflow_dagster.shopify.publish import publish_drafts
from poflow_dagster.shopify.rate_budget import InProcessBudget
from poflow_dagster.shopify_diff import shopify_diff
from poflow_dagster.store.drafts import create_drafts_for_po
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.parse_cache import store_parse
from poflow_dagster.store.purchase_orders import save_purchase_order
from poflow_dagster.store.schema import Merchant
from poflow_dagster.store.uploads import StoredFile, register_upload

MERCHANT = "bigdiff"
LINES = 320
PUBLISHED = 300  # lines 1..300 are poflow products already; 301..318 are new; 319, 320 are existing variants
MUTATIONS = {"productSet", "productVariantsBulkUpdate", "inventoryAdjustQuantities", "metafieldsSet",
             "bulkOperationRunMutation", "stagedUploadsCreate"}


@pytest.fixture
def client(shop) -> Iterator[ShopifyClient]:
    with ShopifyClient(shop.url, "test-token", timeout=10.0, backoff_base=0.01, max_attempts=3,
                       budget=InProcessBudget(f"test:{shop.url}")) as c:
        yield c


def _sku(n: int) -> str:
    return f"CAT-{n}" if n > LINES - 2 else f"BIG-{n:03d}"


def _big_po(db, client: ShopifyClient, *, update_price: bool) -> tuple[str, dict[int, str]]:
    """A 320-line PO, synced as far as a run gets for lines 1..300; lines 319/320 are the shop's own products.
    Returns the upload and ``{line_no: variant gid}`` of the existing variants."""
    upload = register_upload(db, MERCHANT, StoredFile(sha256="d" * 64, size_bytes=1, mime_type="text/csv",
                                                      stored_path="/tmp/big.csv", original_filename="big.csv"))
    po = ParsedPO(po_number="PO-BIG", supplier_name="Bulk Co", source_format="csv", extractor="test", lines=[
        POLine(line_no=n, sku=_sku(n), description=f"Item {n}", quantity=Decimal(2), unit_cost=Decimal("5.00"))
        for n in range(1, LINES + 1)])
    save_purchase_order(db, upload.id, po)
    store_parse(db, upload.id, "d" * 64, po)
    location = client.locations()[0].gid
    with db.session() as session:
        configure_merchant(session, MERCHANT, markup_percent=Decimal(40), receive_stock=True,
                           stock_location_gid=location, update_price=update_price)  # receive on: manual
    drafts = create_drafts_for_po(db, upload.id, po).drafts
    publish_drafts(db, client, client.shop_url, MERCHANT, [d for d in drafts if d.sku.startswith("BIG-")
                                                           and int(d.sku[4:]) <= PUBLISHED], poll_interval_s=0.05)
    existing = {n: client.product_set(ProductSpec(sku=_sku(n), title=f"Shop item {n}", price=Decimal("20.00"),
                                                  handle=f"shop-item-{n}", unit_cost=Decimal("4.00"))).variant_gid
                for n in (LINES - 1, LINES)}
    upsert_catalog_variants(db, MERCHANT, client.shop_url, client.catalog_page(first=250).variants)
    return upload.id, existing


def _merchant(db) -> Merchant:
    with db.session() as session:
        return session.get(Merchant, MERCHANT)


def test_a_big_po_is_diffed_in_a_few_requests_and_stays_right(db, client, shop) -> None:
    upload, existing = _big_po(db, client, update_price=True)
    seven = client.get_product(handle_for_sku(MERCHANT, "BIG-007"))  # someone changed its price in Shopify
    client.update_variants(seven.product_gid, [VariantUpdate(seven.variants[0].variant_gid, price=Decimal("1.00"))])
    receiving.receive(db, client, upload, {1: Decimal(2)}, applied_by="ana")
    requests, writes = shop.stats.requests, _writes(shop)

    diff = shopify_diff(db, client, _merchant(db), client.shop_url, upload)

    made = shop.stats.requests - requests
    assert made <= 5, made  # was one request per product (318+)
    assert _writes(shop) == writes  # a dry run writes nothing
    actions = {p.sku: p for p in diff.products}
    assert len(diff.products) == LINES - 2
    assert [sku for sku, p in actions.items() if p.action == "create"] == [_sku(n) for n in range(301, 319)]
    assert [sku for sku, p in actions.items() if p.action == "update"] == ["BIG-007"]
    assert [(c.field, c.old, c.new) for c in actions["BIG-007"].changes] == [("price", "1.00", "7.00")]
    assert sum(p.action == "unchanged" for p in diff.products) == PUBLISHED - 1
    price = retail_price(Decimal("5.00"), Decimal(40))
    assert [(p.action, p.target, [(c.field, c.old, c.new) for c in p.changes]) for p in diff.matched] == [
        ("update", existing[n], [("cost", "4.00", "5.00"), ("price", "20.00", str(price))])
        for n in sorted(existing, key=lambda n: existing[n])]
    assert diff.receive_on == "manual" and diff.receipts == []  # the sync receives nothing for a manual merchant
    assert [(r.line_no, r.received) for r in diff.received_manually[:2]] == [(1, Decimal(2)), (2, Decimal(0))]
    assert len(diff.received_manually) == LINES
    assert diff.to_json()["received_manually"][0] == {"line_no": 1, "ordered": "2", "received": "2"}


def test_without_the_price_opt_in_the_diff_shows_cost_only(db, client, shop) -> None:
    upload, existing = _big_po(db, client, update_price=False)
    diff = shopify_diff(db, client, _merchant(db), client.shop_url, upload)
    assert [[(c.field, c.old, c.new) for c in p.changes] for p in diff.matched] == [[("cost", "4.00", "5.00")]] * 2


def _writes(shop) -> dict[str, int]:
    return {k: v for k, v in shop.stats.operations.items() if k in MUTATIONS}

