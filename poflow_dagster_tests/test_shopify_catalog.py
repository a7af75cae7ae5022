"""Catalog read, variant updates and metafields: the real ShopifyClient against the emulator over HTTP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest

from poflow_dagster.shopify.client import (
    CatalogVariant,
    MetafieldInput,
    ProductSpec,
    ShopifyClient,
    ShopifyUserError,
    VariantUpdate,
    catalog_search_query,
    metafields_set_cost,
)
from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator
from poflow_dagster.shopify.rate_budget import InProcessBudget

TOKEN = "shpat_catalog_test"
T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)

SEED_MUTATION = """
mutation Seed($identifier: ProductSetIdentifiers!, $input: ProductSetInput!) {
  productSet(identifier: $identifier, input: $input) { product { id } userErrors { field message } }
}
"""


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with start_emulator(access_token=TOKEN, bucket_size=20000, restore_rate=5000) as handle:
        yield handle


@pytest.fixture
def client(emulator: EmulatorHandle) -> Iterator[ShopifyClient]:
    with ShopifyClient(emulator.url, TOKEN, timeout=10.0, backoff_base=0.01, budget=InProcessBudget(f"test:{emulator.url}")) as c:
        yield c


def seed_product(client: ShopifyClient, handle: str, variants: int, *, vendor: str = "Acme") -> str:
    """One product with ``variants`` sizes (SKU ``{handle}-{n}``, price n, cost n/2, barcode 100000+n)."""
    sizes = [str(n) for n in range(1, variants + 1)]
    data = client.execute(SEED_MUTATION, {"identifier": {"handle": handle}, "input": {
        "title": f"Product {handle}",
        "vendor": vendor,
        "productOptions": [{"name": "Size", "values": [{"name": s} for s in sizes]}],
        "variants": [
            {"optionValues": [{"optionName": "Size", "name": s}], "price": s, "sku": f"{handle}-{s}",
             "barcode": str(100000 + int(s)), "inventoryItem": {"cost": str(Decimal(s) / 2)}}
            for s in sizes
        ],
    }})
    return str(data["productSet"]["product"]["id"])


def whole_catalog(client: ShopifyClient, updated_after: dt.datetime | None = None) -> list[CatalogVariant]:
    found: list[CatalogVariant] = []
    cursor: str | None = None
    while True:
        page = client.catalog_page(updated_after, cursor)
        found.extend(page.variants)
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def test_product_set_stores_vendor_barcode_and_cost_read_back_typed(client: ShopifyClient) -> None:
    spec = ProductSpec(sku="AB-1", title="Widget", price=Decimal("19.99"), handle="widget", vendor="Acme",
                       barcode="4006381333931", unit_cost=Decimal("7.125"), status="ACTIVE")
    synced = client.product_set(spec)
    (variant,) = client.catalog_page().variants
    assert variant.variant_gid == synced.variant_gid and variant.product_gid == synced.product_gid
    assert variant.inventory_item_gid.startswith("gid://shopify/InventoryItem/")
    assert (variant.sku, variant.barcode, variant.vendor) == ("AB-1", "4006381333931", "Acme")
    assert (variant.product_title, variant.variant_title, variant.product_status) == ("Widget", "Default Title", "ACTIVE")
    assert variant.price == Decimal("19.99") and isinstance(variant.price, Decimal)
    assert variant.unit_cost == Decimal("7.125")
    assert variant.updated_at.tzinfo == dt.timezone.utc


def test_catalog_pages_over_more_than_250_variants_within_the_cost_limit(client: ShopifyClient) -> None:
    for n in range(3):
        seed_product(client, f"p{n}", 100)
    first = client.catalog_page()
    assert len(first.variants) == 249 and first.next_cursor is not None  # the supplier-SKU metafield costs 1 more
    assert client.throttle is not None and client.throttle.requested_query_cost == 998  # 2 + 249 x 4 <= 1000
    variants, cursor = client.catalog_page(after=first.next_cursor)  # unpacks like the sync's FetchPage
    second = client.catalog_page(after=first.next_cursor)
    assert second == (variants, cursor) and len(variants) == 51 and cursor is None
    ids = [v.variant_gid for v in first.variants + second.variants]
    assert len(set(ids)) == 300
    assert ids == sorted(ids, key=lambda gid: int(gid.rsplit("/", 1)[1]))  # sortKey: ID
    assert {v.sku for v in first.variants + second.variants} == {f"p{n}-{s}" for n in range(3) for s in range(1, 101)}


def test_a_small_bucket_gets_smaller_catalog_pages() -> None:
    with start_emulator(access_token=TOKEN, bucket_size=400, restore_rate=400) as small, \
            ShopifyClient(small.url, TOKEN, timeout=10.0, budget=InProcessBudget(f"test:{small.url}")) as client:
        seed_product(client, "s", 200)  # teaches the client the bucket size (400)
        first = client.catalog_page()
        assert len(first.variants) == 99 and first.next_cursor is not None  # 2 + 99 x 4 = 398 <= 400
        assert len(whole_catalog(client)) == 200


def test_updated_after_returns_only_later_changes_inclusive_of_the_second(
    client: ShopifyClient, emulator: EmulatorHandle
) -> None:
    emulator.set_clock(T0)
    seed_product(client, "old", 3)
    emulator.set_clock(T0 + dt.timedelta(hours=1))
    seed_product(client, "new", 2)
    assert len(whole_catalog(client)) == 5
    later = whole_catalog(client, T0 + dt.timedelta(minutes=1))
    assert {v.sku for v in later} == {"new-1", "new-2"}
    boundary = whole_catalog(client, T0 + dt.timedelta(hours=1, microseconds=500))
    assert {v.sku for v in boundary} == {"new-1", "new-2"}  # same second: read again, never missed
    assert whole_catalog(client, T0 + dt.timedelta(hours=2)) == []


def test_catalog_search_query_is_utc_and_refuses_naive_times() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    assert catalog_search_query(dt.datetime(2026, 1, 1, 1, 0, 0, 900, tzinfo=cet)) == "updated_at:>='2026-01-01T00:00:00Z'"
    assert catalog_search_query(None) is None
    with pytest.raises(ValueError):
        catalog_search_query(dt.datetime(2026, 1, 1))


def test_update_variants_changes_price_barcode_and_cost(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    emulator.set_clock(T0)
    product = seed_product(client, "u", 2)
    one, two = client.catalog_page().variants
    emulator.set_clock(T0 + dt.timedelta(days=1))
    updated = client.update_variants(product, [
        VariantUpdate(one.variant_gid, price=Decimal("12.50"), unit_cost=Decimal("4.20")),
        VariantUpdate(two.variant_gid, barcode="999"),
    ])
    assert [u.variant_gid for u in updated] == [one.variant_gid, two.variant_gid]
    after = {v.variant_gid: v for v in client.catalog_page().variants}
    assert (after[one.variant_gid].price, after[one.variant_gid].unit_cost) == (Decimal("12.50"), Decimal("4.20"))
    assert after[one.variant_gid].barcode == one.barcode
    assert (after[two.variant_gid].barcode, after[two.variant_gid].price) == ("999", two.price)
    assert after[two.variant_gid].updated_at == T0 + dt.timedelta(days=1)


def test_update_variants_is_idempotent_and_atomic(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    emulator.set_clock(T0)
    product = seed_product(client, "i", 1)
    (variant,) = client.catalog_page().variants
    emulator.set_clock(T0 + dt.timedelta(days=1))
    client.update_variants(product, [VariantUpdate(variant.variant_gid, price=variant.price, barcode=variant.barcode)])
    (again,) = client.catalog_page().variants
    assert again == variant  # the same values: nothing changed, not even updatedAt
    with pytest.raises(ShopifyUserError) as refused:
        client.update_variants(product, [
            VariantUpdate(variant.variant_gid, price=Decimal("1.00")),
            VariantUpdate("gid://shopify/ProductVariant/999999", price=Decimal("2.00")),
        ])
    assert refused.value.user_errors[0]["code"] == "PRODUCT_VARIANT_DOES_NOT_EXIST"
    assert refused.value.user_errors[0]["field"] == ["variants", "1", "id"]
    assert client.catalog_page().variants[0].price == variant.price  # all or nothing


METAFIELD_QUERY = """
query Meta($id: ID!, $ns: String!, $key: String!) {
  node(id: $id) { ... on ProductVariant { metafield(namespace: $ns, key: $key) { id type value updatedAt } } }
}
"""


def test_set_metafields_readable_on_the_variant_and_idempotent(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    emulator.set_clock(T0)
    seed_product(client, "m", 1)
    (variant,) = client.catalog_page().variants
    wanted = MetafieldInput(variant.variant_gid, "poflow", "supplier_sku", "single_line_text_field", "SUP-77")
    (stored,) = client.set_metafields([wanted])
    read = client.execute(METAFIELD_QUERY, {"id": variant.variant_gid, "ns": "poflow", "key": "supplier_sku"})
    assert read["node"]["metafield"] == {"id": stored.gid, "type": "single_line_text_field", "value": "SUP-77",
                                         "updatedAt": "2026-01-01T12:00:00Z"}
    emulator.set_clock(T0 + dt.timedelta(days=1))
    (again,) = client.set_metafields([wanted])
    assert again == stored
    read = client.execute(METAFIELD_QUERY, {"id": variant.variant_gid, "ns": "poflow", "key": "supplier_sku"})
    assert read["node"]["metafield"]["updatedAt"] == "2026-01-01T12:00:00Z"  # same value: unchanged


def test_set_metafields_chunks_by_25_and_refuses_bad_values(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    seed_product(client, "c", 1)
    (variant,) = client.catalog_page().variants
    many = [MetafieldInput(variant.variant_gid, "poflow", f"k{n}", "number_integer", str(n)) for n in range(30)]
    assert [m.key for m in client.set_metafields(many)] == [f"k{n}" for n in range(30)]
    assert emulator.stats.operations["metafieldsSet"] == 2
    # 10 + 2 for the one distinct variant owner (Shopify's dynamic cost), and the client expected as much.
    assert client.throttle is not None and client.throttle.requested_query_cost == 12
    assert metafields_set_cost([variant.variant_gid] * 5) == 12
    assert metafields_set_cost([variant.variant_gid, variant.product_gid, "gid://shopify/Collection/1"]) == 16
    with pytest.raises(ShopifyUserError) as refused:
        client.set_metafields([MetafieldInput(variant.variant_gid, "poflow", "n", "number_integer", "1.5")])
    assert refused.value.user_errors[0]["code"] == "INVALID_VALUE"
    assert refused.value.user_errors[0]["elementIndex"] == 0


def test_catalog_page_drives_the_catalog_sync(client: ShopifyClient, emulator: EmulatorHandle, db) -> None:  # type: ignore[no-untyped-def]
    """The contract with ``catalog.sync``: ``client.catalog_page`` is its ``fetch_page`` as it stands."""
    from poflow_dagster.catalog.store import catalog_candidates
    from poflow_dagster.catalog.sync import sync_catalog
    from poflow_dagster.store.merchants import ensure_merchant

    with db.session() as session:
        ensure_merchant(session, "m1")
    emulator.set_clock(T0)
    product = seed_product(client, "sync", 260)
    first = sync_catalog(db, "m1", emulator.url, client.catalog_page)
    assert (first.pages, first.variants, first.complete, first.cursor) == (2, 260, True, T0)
    changed = next(v for v in client.catalog_page().variants if v.sku == "sync-7")
    emulator.set_clock(T0 + dt.timedelta(days=1))
    client.update_variants(product, [VariantUpdate(changed.variant_gid, price=Decimal("70.00"))])
    second = sync_catalog(db, "m1", emulator.url, client.catalog_page)  # from T0 - OVERLAP: all 260 again
    assert (second.variants, second.cursor) == (260, T0 + dt.timedelta(days=1))
    (stored,) = catalog_candidates(db, "m1", emulator.url, variant_gids=[changed.variant_gid])
    assert stored.price == Decimal("70.00") and stored.unit_cost == Decimal("3.5")
    emulator.set_clock(T0 + dt.timedelta(days=2))
    client.update_variants(product, [VariantUpdate(changed.variant_gid, barcode="0123")])
    third = sync_catalog(db, "m1", emulator.url, client.catalog_page)
    assert (third.pages, third.variants, third.cursor) == (1, 1, T0 + dt.timedelta(days=2))  # only the change


RENAME_MUTATION = """
mutation Rename($input: ProductSetInput!, $identifier: ProductSetIdentifiers!) {
  productSet(input: $input, identifier: $identifier) { product { id } userErrors { field message } }
}
"""


def test_a_product_level_edit_moves_the_product_not_its_variants_and_the_sync_picks_it_up(
    client: ShopifyClient, emulator: EmulatorHandle, db  # type: ignore[no-untyped-def]
) -> None:
    """Title, vendor and status live on the product: editing them moves the product's ``updatedAt`` only, so the
    variants query alone misses the edit; the incremental pass's products step carries it to every variant row."""
    from poflow_dagster.catalog.shop_catalog import sync_shop_catalog
    from poflow_dagster.catalog.store import catalog_candidates
    from poflow_dagster.store.merchants import ensure_merchant

    with db.session() as session:
        ensure_merchant(session, "m1")
    emulator.set_clock(T0)
    product = seed_product(client, "tee", 3, vendor="Acme")
    cap = seed_product(client, "cap", 1, vendor="Acme")
    first = sync_shop_catalog(db, client, "m1", emulator.url)
    assert (first.full, first.variants, first.products, first.cursor) == (True, 4, 0, T0)  # a full pass: no step 2
    emulator.set_clock(T0 + dt.timedelta(hours=1))
    (cap_variant,) = [v for v in client.catalog_page().variants if v.product_gid == cap]
    client.update_variants(cap, [VariantUpdate(cap_variant.variant_gid, price=Decimal("9.00"))])
    moved = sync_shop_catalog(db, client, "m1", emulator.url)
    assert moved.cursor == T0 + dt.timedelta(hours=1)  # the tee's variants are older than the next window

    later = T0 + dt.timedelta(hours=2)
    emulator.set_clock(later)
    client.execute(RENAME_MUTATION, {"identifier": {"id": product}, "input": {
        "title": "Organic Tee", "vendor": "Blue Mill", "status": "ARCHIVED"}})
    assert whole_catalog(client, later) == []  # no variant's updatedAt moved
    (renamed,) = client.catalog_products_page(later).products
    assert (renamed.product_gid, renamed.title, renamed.vendor, renamed.status, renamed.updated_at) == (
        product, "Organic Tee", "Blue Mill", "ARCHIVED", later)

    second = sync_shop_catalog(db, client, "m1", emulator.url)
    assert (second.full, second.variants, second.products, second.complete, second.cursor) == (
        False, 1, 2, True, later)  # the cap's variant and product again (overlap), and the renamed tee product
    rows = catalog_candidates(db, "m1", emulator.url, vendor_key="blue mill")
    assert sorted(v.sku for v in rows) == ["tee-1", "tee-2", "tee-3"]
    assert {(v.product_title, v.vendor, v.product_status) for v in rows} == {("Organic Tee", "Blue Mill", "ARCHIVED")}
    (kept,) = catalog_candidates(db, "m1", emulator.url, sku_keys=["CAP1"])
    assert (kept.product_title, kept.vendor, kept.price) == ("Product cap", "Acme", Decimal("9.00"))


def test_catalog_page_reads_the_supplier_skus_metafield(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    seed_product(client, "sup", 2)
    one, two = client.catalog_page().variants
    assert one.supplier_skus == () and two.supplier_skus == ()
    client.set_metafields([
        MetafieldInput(one.variant_gid, "poflow", "supplier_skus", "json", '["acme|B-2", "acme|A-1", "acme|A-1"]'),
        MetafieldInput(two.variant_gid, "poflow", "supplier_skus", "json", '{"not": "a list"}'),
    ])
    one, two = client.catalog_page().variants
    assert one.supplier_skus == ("acme|A-1", "acme|B-2") and two.supplier_skus == ()  # sorted, unique; junk ignored
    assert client.supplier_skus_of([one.variant_gid, "gid://shopify/ProductVariant/999999"]) == {
        one.variant_gid: ("acme|A-1", "acme|B-2"), "gid://shopify/ProductVariant/999999": None}
