"""The dry-run diff of a big PO reads the shop in batches (a handful of requests, not one per product) and still
says exactly what would change: products created or updated, matched variants' cost and opted-in price, and the
stock a manual merchant has received so far (the sync receives none). Small POs: barcodes (a new product's, a
changed one), and what a receive-on-sync merchant's sync would receive (from the diff's own matching)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from poflow_dagster import receiving
from poflow_dagster.catalog.po_matching import match_po
from poflow_dagster.catalog.store import line_matches_for_upload, upsert_catalog_variants
from poflow_dagster.domain.drafts import retail_price
from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, VariantUpdate, handle_for_sku
from poflow_dagster.shopify.publish import publish_drafts
from poflow_dagster.shopify.rate_budget import InProcessBudget
from poflow_dagster.shopify_diff import shopify_diff
from poflow_dagster.store.drafts import create_drafts_for_po, drafts_for_upload
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.parse_cache import cached_parse, store_parse
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



EAN = "4006381333931"  # a valid EAN-13
UPC = "012345678905"  # a valid UPC-A


def _small_po(db, client: ShopifyClient, merchant: str, lines: list[POLine], **settings) -> str:
    """A saved and drafted PO of ``merchant`` (as far as a run gets before the Shopify stage)."""
    upload = register_upload(db, merchant, StoredFile(sha256="e" * 64, size_bytes=1, mime_type="text/csv",
                                                      stored_path="/tmp/small.csv", original_filename="small.csv"))
    po = ParsedPO(po_number="PO-SMALL", supplier_name="Small Co", source_format="csv", extractor="test", lines=lines)
    save_purchase_order(db, upload.id, po)
    store_parse(db, upload.id, "e" * 64, po)
    with db.session() as session:
        configure_merchant(session, merchant, markup_percent=Decimal(40), **settings)
    create_drafts_for_po(db, upload.id, po)
    return upload.id


def _merchant_row(db, merchant: str) -> Merchant:
    with db.session() as session:
        return session.get(Merchant, merchant)


def test_the_diff_shows_a_new_products_barcode_and_a_changed_one(db, client, shop) -> None:
    upload = _small_po(db, client, "codes", [
        POLine(line_no=1, sku="BC-1", description="Item one", quantity=Decimal(1), unit_cost=Decimal("5.00"),
               barcode=EAN),
        POLine(line_no=2, sku="BC-2", description="Item two", quantity=Decimal(1), unit_cost=Decimal("5.00"),
               barcode=UPC),
        POLine(line_no=3, sku="BC-3", description="Item three", quantity=Decimal(1), unit_cost=Decimal("5.00"))])
    drafts = drafts_for_upload(db, upload)
    [synced] = publish_drafts(db, client, client.shop_url, "codes", [d for d in drafts if d.sku == "BC-1"])
    client.update_variants(synced.product_gid, [VariantUpdate(synced.variant_gid, barcode="96385074")])  # edited

    diff = shopify_diff(db, client, _merchant_row(db, "codes"), client.shop_url, upload)

    changes = {p.sku: (p.action, [(c.field, c.old, c.new) for c in p.changes if c.field == "barcode"])
               for p in diff.products}
    assert changes == {"BC-1": ("update", [("barcode", "96385074", EAN)]),  # the sync puts the draft's back
                       "BC-2": ("create", [("barcode", None, UPC)]),
                       "BC-3": ("create", [])}  # no barcode: none shown, none sent
    assert {"field": "barcode", "old": None, "new": UPC} in diff.to_json()["products"][1]["changes"]


def test_an_unchanged_barcode_is_no_change(db, client, shop) -> None:
    upload = _small_po(db, client, "same", [POLine(line_no=1, sku="SC-1", description="Item", quantity=Decimal(1),
                                                   unit_cost=Decimal("5.00"), barcode=EAN)])
    publish_drafts(db, client, client.shop_url, "same", drafts_for_upload(db, upload))
    [product] = shopify_diff(db, client, _merchant_row(db, "same"), client.shop_url, upload).products
    assert (product.action, product.changes) == ("unchanged", ())


def test_receive_on_sync_receipts_use_the_diffs_own_matching(db, client, shop) -> None:
    """The dry run records no match, yet a matched line shows the units it would receive and the variant they
    would go to; a new product's line shows its units and the product the sync creates."""
    existing = client.product_set(ProductSpec(sku="SHOP-1", title="Shop item", price=Decimal("20.00"),
                                              handle="shop-item", unit_cost=Decimal("4.00"))).variant_gid
    location = client.locations()[0].gid
    upload = _small_po(db, client, "onsync", [
        POLine(line_no=1, sku="SHOP-1", description="Shop item", quantity=Decimal(6), unit_cost=Decimal("5.00")),
        POLine(line_no=2, sku="NEW-9", description="New item", quantity=Decimal(2), unit_cost=Decimal("3.00")),
        POLine(line_no=3, sku=None, description="Freight", quantity=Decimal(1), unit_cost=Decimal("9.00"))],
        receive_stock=True, stock_location_gid=location, receive_on="sync")

    diff = shopify_diff(db, client, _merchant_row(db, "onsync"), client.shop_url, upload)

    assert diff.receive_on == "sync"
    assert diff.receipts == [(1, existing, Decimal(6)), (2, f"new product {handle_for_sku('onsync', 'NEW-9')}",
                                                         Decimal(2)), (3, "not received: no variant", Decimal(0))]
    assert line_matches_for_upload(db, upload) == []  # still nothing recorded: the matching was in memory


def test_a_po_received_already_shows_no_new_receipts(db, client, shop) -> None:
    existing = client.product_set(ProductSpec(sku="SHOP-2", title="Shop item", price=Decimal("20.00"),
                                              handle="shop-item-2", unit_cost=Decimal("4.00"))).variant_gid
    location = client.locations()[0].gid
    upload = _small_po(db, client, "twice", [POLine(line_no=1, sku="SHOP-2", description="Shop item",
                                                    quantity=Decimal(6), unit_cost=Decimal("5.00"))],
                       receive_stock=True, stock_location_gid=location, receive_on="sync")
    merchant = _merchant_row(db, "twice")
    match_po(db, client, "twice", client.shop_url, upload, cached_parse(db, upload))  # recorded, as a sync does
    receiving.receive(db, client, upload, {1: Decimal(2)}, applied_by="ana")  # 2 of 6 received by hand

    diff = shopify_diff(db, client, merchant, client.shop_url, upload)

    assert existing and diff.receipts == []  # a PO with receipts is not received again by its sync
