"""The catalog in the app database (SQLite and PostgreSQL): idempotent upserts, candidate reads, recorded
matches, approvals that teach the supplier-SKU map, and the incremental catalog sync."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from poflow_dagster.catalog.match import match_lines
from poflow_dagster.catalog.models import CatalogProduct, CatalogVariant
from poflow_dagster.catalog.store import (
    approve_match, catalog_candidates, learn_supplier_sku, learned_supplier_skus, line_matches_for_upload,
    load_match_inputs, record_line_matches, upsert_catalog_variants,
)
from poflow_dagster.catalog.sync import OVERLAP, sync_catalog, sync_state
from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.store.purchase_orders import save_purchase_order
from poflow_dagster.store.schema import CatalogVariantRow, LineMatchRow, SupplierSkuMap
from poflow_dagster.store.uploads import StoredFile, register_upload

SHOP = "https://acme-store.myshopify.com"
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def variant(n: int, title: str, *, sku: str | None = None, barcode: str | None = None, vendor: str = "Acme Foods",
            updated_at: dt.datetime = T0) -> CatalogVariant:
    return CatalogVariant(
        product_gid=f"gid://shopify/Product/{n}", variant_gid=gid(n),
        inventory_item_gid=f"gid://shopify/InventoryItem/{n}", sku=sku, barcode=barcode, product_title=title,
        variant_title=None, vendor=vendor, unit_cost=Decimal("4.10"), price=Decimal("9.99"),
        product_status="ACTIVE", updated_at=updated_at,
    )


def gid(n: int) -> str:
    return f"gid://shopify/ProductVariant/{n}"


CATALOG = [
    variant(1, "Olive Oil 500 ml", sku="OO-500", barcode="012345678905"),
    variant(2, "Olive Oil 1 l", sku="OO-1000"),
    variant(3, "Balsamic Vinegar 250 ml", sku="BV-250"),
    variant(4, "Sea Salt Flakes 250 g", sku="SS-250", vendor="Other Co"),
]


def table_rows(db, table) -> list:
    with db.session() as session:
        return list(session.scalars(sa.select(table)))


def save_po(db, merchant: str = "m1", sha: str = "a" * 64, supplier: str = "ACME Foods Inc.") -> str:
    upload = register_upload(db, merchant, StoredFile(sha256=sha, size_bytes=1, mime_type="text/csv",
                                                      stored_path="/tmp/po.csv", original_filename="po.csv"))
    lines = [POLine(line_no=1, sku="oo 500", description="Olive oil 500ml", quantity=Decimal(2)),
             POLine(line_no=2, sku="SUP-77", description="Olive Oil - 1 L", quantity=Decimal(1)),
             POLine(line_no=3, sku="SUP-88", description="Rapeseed Oil 1 l", quantity=Decimal(1))]
    save_purchase_order(db, upload.id, ParsedPO(po_number=f"PO-{sha[:4]}", supplier_name=supplier, lines=lines,
                                                 source_format="csv", extractor="test"))
    return upload.id


# --- catalog variants ------------------------------------------------------------------------------------------

def test_catalog_upsert_is_idempotent_and_keeps_keys_money_and_time_exact(db):
    save_po(db)  # the merchant row comes with the first upload
    assert upsert_catalog_variants(db, "m1", SHOP, CATALOG) == 4
    assert upsert_catalog_variants(db, "m1", SHOP, CATALOG) == 4
    rows = sorted(table_rows(db, CatalogVariantRow), key=lambda row: row.variant_gid)
    assert len(rows) == 4
    first = rows[0]
    assert (first.sku_key, first.barcode_key, first.vendor_key) == ("OO500", "00012345678905", "acme foods")
    assert (first.price, first.unit_cost) == (Decimal("9.99"), Decimal("4.10"))
    assert first.shopify_updated_at == T0


def test_a_newer_page_updates_a_variant_and_a_late_older_page_does_not(db):
    save_po(db)
    upsert_catalog_variants(db, "m1", SHOP, CATALOG[:1])
    newer = dataclasses.replace(CATALOG[0], price=Decimal("10.49"), sku="OO-0500",
                                updated_at=T0 + dt.timedelta(hours=1))
    upsert_catalog_variants(db, "m1", SHOP, [newer, CATALOG[0]])  # one page with both versions: the newer wins
    upsert_catalog_variants(db, "m1", SHOP, [CATALOG[0]])  # a late page with the old version
    [row] = table_rows(db, CatalogVariantRow)
    assert (row.price, row.sku, row.sku_key) == (Decimal("10.49"), "OO-0500", "OO0500")


def test_candidates_are_read_by_keys_vendor_and_learned_gids_only(db):
    save_po(db)
    upsert_catalog_variants(db, "m1", SHOP, CATALOG + [variant(9, "Olive Oil 500 ml (old listing)", sku="OO-500")])
    other_shop = dataclasses.replace(CATALOG[3], variant_gid=gid(10))
    upsert_catalog_variants(db, "m1", "https://second.myshopify.com", [other_shop])

    def gids(**keys) -> list[str]:
        return [v.variant_gid for v in catalog_candidates(db, "m1", SHOP, **keys)]

    assert gids(sku_keys=["OO500"]) == [gid(1), gid(9)]
    assert gids(barcode_keys=["00012345678905"]) == [gid(1)]
    assert gids(vendor_key="other") == [gid(4)]  # "Other Co": the legal form is no part of the key
    assert gids(variant_gids=[gid(3)], sku_keys=["BV250"]) == [gid(3)]
    assert gids() == []
    [read] = catalog_candidates(db, "m1", SHOP, variant_gids=[gid(1)])
    assert read == CATALOG[0]


# --- matches ---------------------------------------------------------------------------------------------------

def match_upload(db, upload_id: str, supplier: str = "ACME Foods Inc."):
    lines = [POLine(line_no=1, sku="oo 500", description="Olive oil 500ml"),
             POLine(line_no=2, sku="SUP-77", description="Olive Oil - 1 L"),
             POLine(line_no=3, sku="SUP-88", description="Rapeseed Oil 1 l")]
    inputs = load_match_inputs(db, "m1", SHOP, supplier, lines)
    matches = match_lines(lines, inputs.catalog, inputs.supplier_map, supplier=supplier)
    record_line_matches(db, upload_id, matches)
    return matches


def test_recording_matches_again_replaces_them_on_both_databases(db):
    upload_id = save_po(db)
    upsert_catalog_variants(db, "m1", SHOP, CATALOG)
    first = match_upload(db, upload_id)
    assert [(m.status, m.method, m.variant_gid) for m in first] == [
        ("matched", "sku", gid(1)), ("matched", "fuzzy_title", gid(2)), ("unmatched", "none", None)]
    match_upload(db, upload_id)
    assert len(table_rows(db, LineMatchRow)) == 3
    stored = line_matches_for_upload(db, upload_id)
    assert [s.match for s in stored] == first  # candidates and scores survive the JSON round trip


def test_approval_is_kept_on_rematch_and_teaches_the_supplier_sku_map(db):
    upload_id = save_po(db)
    upsert_catalog_variants(db, "m1", SHOP, CATALOG)
    match_upload(db, upload_id)
    approved = approve_match(db, upload_id, 3, gid(4), decided_by="ana@example.com")
    assert (approved.status, approved.method, approved.variant_gid) == ("approved", "manual", gid(4))
    confirmed = approve_match(db, upload_id, 2, gid(2), decided_by="ana@example.com")
    assert (confirmed.status, confirmed.method) == ("approved", "fuzzy_title")  # a confirmation keeps the method
    match_upload(db, upload_id)  # a re-run of the matcher
    stored = {s.match.line_no: s for s in line_matches_for_upload(db, upload_id)}
    assert (stored[3].match.status, stored[3].match.variant_gid, stored[3].decided_by) == (
        "approved", gid(4), "ana@example.com")
    assert stored[3].decided_at is not None and stored[3].decided_at.tzinfo is not None
    assert learned_supplier_skus(db, "m1", SHOP, "Acme Foods") == {"SUP77": gid(2), "SUP88": gid(4)}
    [learned] = [row for row in table_rows(db, SupplierSkuMap) if row.supplier_sku_key == "SUP88"]
    assert (learned.supplier_key, learned.learned_from_upload_id) == ("acme foods", upload_id)

    # The supplier's next PO: the learned SKU matches a variant outside the supplier's vendor.
    next_upload = save_po(db, sha="b" * 64, supplier="Acme Foods")
    third = match_upload(db, next_upload, supplier="Acme Foods")[2]
    assert (third.status, third.method, third.variant_gid) == ("matched", "supplier_sku", gid(4))


def test_approving_an_unknown_line_or_variant_is_refused(db):
    upload_id = save_po(db)
    upsert_catalog_variants(db, "m1", SHOP, CATALOG)
    with pytest.raises(LookupError):
        approve_match(db, upload_id, 99, gid(1), decided_by="ana")
    with pytest.raises(LookupError):
        approve_match(db, upload_id, 1, gid(404), decided_by="ana")
    assert table_rows(db, SupplierSkuMap) == []


def test_resaving_a_changed_po_drops_its_line_matches_with_its_lines(db):
    upload_id = save_po(db)
    upsert_catalog_variants(db, "m1", SHOP, CATALOG)
    match_upload(db, upload_id)
    save_purchase_order(db, upload_id, ParsedPO(po_number="PO-aaaa", supplier_name="ACME Foods Inc.",
                                                lines=[POLine(line_no=1, sku="OO-500")], source_format="csv",
                                                extractor="test"))
    assert table_rows(db, LineMatchRow) == []


# --- sync ------------------------------------------------------------------------------------------------------

class FakeShop:
    """A catalog served in pages of ``size``, filtered by ``updated_after`` (inclusive), recording each call."""

    def __init__(self, variants: list[CatalogVariant], size: int = 2) -> None:
        self.variants, self.size, self.calls = list(variants), size, []
        self.fail_at_page: int | None = None

    def __call__(self, updated_after, after_cursor):
        self.calls.append((updated_after, after_cursor))
        if self.fail_at_page is not None and len(self.calls) == self.fail_at_page:
            raise ConnectionError("shop went away")
        chosen = sorted((v for v in self.variants if updated_after is None or v.updated_at >= updated_after),
                        key=lambda v: v.variant_gid)
        start = int(after_cursor or 0)
        end = start + self.size
        return chosen[start:end], (str(end) if end < len(chosen) else None)


def test_sync_is_incremental_from_the_cursor_and_resumes_an_interrupted_pass(db):
    save_po(db)
    shop = FakeShop(CATALOG)
    first = sync_catalog(db, "m1", SHOP, shop)
    assert (first.pages, first.variants, first.full, first.complete, first.cursor) == (2, 4, True, True, T0)
    assert shop.calls == [(None, None), (None, "2")]

    later = T0 + dt.timedelta(days=1)
    shop.variants[1] = dataclasses.replace(shop.variants[1], price=Decimal("11.00"), updated_at=later)
    shop.variants += [variant(n, f"New item {n}", sku=f"N-{n}", updated_at=later) for n in (5, 6, 7)]
    shop.calls.clear()
    shop.fail_at_page = 2
    with pytest.raises(ConnectionError):
        sync_catalog(db, "m1", SHOP, shop)
    state = sync_state(db, "m1", SHOP)
    assert (state.last_updated_at, state.pass_cursor) == (T0, "2")  # page 1 stored, the cursor not yet moved

    shop.fail_at_page = None
    resumed = sync_catalog(db, "m1", SHOP, shop)
    after = T0 - OVERLAP  # products updated at the cursor itself are read again (all 7 here), never missed
    assert shop.calls == [(after, None), (after, "2"), (after, "2"), (after, "4"), (after, "6")]
    assert (resumed.resumed, resumed.full, resumed.complete, resumed.cursor) == (True, False, True, later)
    rows = {row.variant_gid: row for row in table_rows(db, CatalogVariantRow)}
    assert len(rows) == 7 and rows[gid(2)].price == Decimal("11.00")

    shop.calls.clear()
    idle = sync_catalog(db, "m1", SHOP, shop)
    assert shop.calls == [(later - OVERLAP, None), (later - OVERLAP, "2")]
    assert (idle.resumed, idle.cursor) == (False, later)


def test_a_full_sync_removes_variants_deleted_in_shopify_and_an_incremental_one_does_not(db):
    save_po(db)
    shop = FakeShop(CATALOG, size=2)
    sync_catalog(db, "m1", SHOP, shop)
    del shop.variants[2]  # deleted in Shopify: no "updated after" query returns it
    incremental = sync_catalog(db, "m1", SHOP, shop)
    assert incremental.deleted == 0 and len(table_rows(db, CatalogVariantRow)) == 4
    full = sync_catalog(db, "m1", SHOP, shop, full=True, max_pages=1)
    assert (full.complete, full.deleted) == (False, 0)  # a pass stopped half way deletes nothing
    finished = sync_catalog(db, "m1", SHOP, shop)
    assert (finished.resumed, finished.full, finished.deleted) == (True, True, 1)
    assert sorted(row.variant_gid for row in table_rows(db, CatalogVariantRow)) == [gid(1), gid(2), gid(4)]
    assert sync_state(db, "m1", SHOP).last_full_sync_at is not None

    shop.variants.clear()  # a fetch that answers nothing proves nothing: a full pass keeps the catalog
    assert sync_catalog(db, "m1", SHOP, shop, full=True).deleted == 0
    assert len(table_rows(db, CatalogVariantRow)) == 3


class InterleavedShop(FakeShop):
    """A FakeShop that, on call number ``at``, lets another sync run (``meanwhile``) before answering."""

    def __init__(self, variants, size: int = 2) -> None:
        super().__init__(variants, size)
        self.at: int | None = None
        self.meanwhile = None

    def __call__(self, updated_after, after_cursor):
        if self.at is not None and len(self.calls) + 1 == self.at:
            self.at, meanwhile = None, self.meanwhile
            meanwhile()
        return super().__call__(updated_after, after_cursor)


def test_a_full_pass_started_during_an_incremental_one_is_never_fed_its_pages(db):
    """The scheduled full pass replaces a PO run's incremental pass under way: the incremental call's next page is
    refused (its cursor belongs to another query), so the full pass reads and prunes from its own pages only."""
    save_po(db)
    later = T0 + dt.timedelta(days=1)
    shop = InterleavedShop(CATALOG + [variant(5, "Walnut Oil", sku="WO-1", updated_at=later),
                                      variant(6, "Hazelnut Oil", sku="HO-1", updated_at=later)])
    sync_catalog(db, "m1", SHOP, FakeShop(CATALOG))  # the first (full) pass: 4 variants at T0
    full_shop = FakeShop(shop.variants, size=3)
    full_results = []
    shop.at = 2  # the incremental call stored page 1; before its page 2, the full pass runs to its end
    shop.meanwhile = lambda: full_results.append(sync_catalog(db, "m1", SHOP, full_shop, full=True))
    incremental = sync_catalog(db, "m1", SHOP, shop)
    (full,) = full_results
    assert (full.full, full.complete, full.variants, full.deleted) == (True, True, 6, 0)
    assert (incremental.complete, incremental.resumed, incremental.pages, incremental.cursor) == (True, True, 2, later)
    assert incremental.variants == 2  # its second page was dropped, not stored under the full pass
    state = sync_state(db, "m1", SHOP)
    assert (state.pass_started_at, state.pass_cursor, state.last_updated_at) == (None, None, later)
    assert len(table_rows(db, CatalogVariantRow)) == 6


def test_two_calls_on_one_pass_share_it_and_store_each_page_once(db):
    """A PO run joining the scheduled pass under way: whoever stores a page first advances the pass; the other
    drops its copy and goes on from there; both end when the pass is finished."""
    save_po(db)
    shop = InterleavedShop(CATALOG + [variant(n, f"Item {n}", sku=f"I-{n}") for n in range(5, 11)], size=2)
    helper = FakeShop(shop.variants, size=2)
    joined = []
    shop.at = 3  # after two pages of its own, a second caller runs the rest of the same pass
    shop.meanwhile = lambda: joined.append(sync_catalog(db, "m1", SHOP, helper))
    first = sync_catalog(db, "m1", SHOP, shop)
    (second,) = joined
    assert second.resumed and second.complete and helper.calls[0] == (None, "4")  # it went on from page 3
    assert (second.variants, first.variants) == (6, 4) and first.complete and first.resumed
    assert len(table_rows(db, CatalogVariantRow)) == 10
    assert sync_state(db, "m1", SHOP).pass_cursor is None


def test_the_cursor_never_passes_the_start_of_the_pass(db):
    """A variant whose updatedAt is after the pass began (edited while a long pass ran) is read again next time."""
    save_po(db)
    future = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    shop = FakeShop([*CATALOG, variant(9, "Edited meanwhile", sku="EM-1", updated_at=future)])
    done = sync_catalog(db, "m1", SHOP, shop)
    assert done.complete and done.cursor < future
    shop.calls.clear()
    again = sync_catalog(db, "m1", SHOP, shop)
    assert shop.calls[0][0] < future and again.variants >= 1


def test_products_step_carries_product_fields_and_resumes_from_its_own_cursor(db):
    save_po(db)
    sync_catalog(db, "m1", SHOP, FakeShop(CATALOG))
    later = T0 + dt.timedelta(days=1)
    edits = [CatalogProduct(f"gid://shopify/Product/{n}", f"Renamed {n}", "New Vendor", "DRAFT", later)
             for n in (1, 2, 3)]
    calls = []

    def products(updated_after, after_cursor):
        calls.append((updated_after, after_cursor))
        start = int(after_cursor or 0)
        return edits[start:start + 2], ("2" if start == 0 else None)

    partial = sync_catalog(db, "m1", SHOP, FakeShop([]), fetch_products=products, max_pages=2)
    assert (partial.complete, partial.products, sync_state(db, "m1", SHOP).pass_cursor) == (False, 2, "products:2")
    rest = sync_catalog(db, "m1", SHOP, FakeShop([]), fetch_products=products)
    assert (rest.resumed, rest.complete, rest.products, rest.cursor) == (True, True, 1, later)
    assert calls == [(T0 - OVERLAP, None), (T0 - OVERLAP, "2")]  # step 2 resumed from its own cursor
    rows = {row.variant_gid: row for row in table_rows(db, CatalogVariantRow)}
    assert (rows[gid(3)].product_title, rows[gid(3)].vendor, rows[gid(3)].vendor_key, rows[gid(3)].product_status) \
        == ("Renamed 3", "New Vendor", "new vendor", "DRAFT")
    assert rows[gid(4)].product_title == "Sea Salt Flakes 250 g"


# --- supplier SKUs from the variants' metafields ---------------------------------------------------------------

def test_the_sync_seeds_missing_supplier_skus_from_metafields_and_keeps_what_the_database_maps(db):
    upload_id = save_po(db)
    with db.session() as session:  # the database already maps acme foods|SUP77 to variant 2
        learn_supplier_sku(session.connection(), "m1", SHOP, "ACME Foods Inc.", "SUP-77", gid(2), upload_id)
    tagged = [dataclasses.replace(CATALOG[0], supplier_skus=("acme foods|SUP77", "acme foods|SUP99")),
              dataclasses.replace(CATALOG[1], supplier_skus=("acme foods|SUP77",)), *CATALOG[2:]]
    sync_catalog(db, "m1", SHOP, FakeShop(tagged))
    mapped = {(r.supplier_key, r.supplier_sku_key): r for r in table_rows(db, SupplierSkuMap)}
    assert {key: row.variant_gid for key, row in mapped.items()} == {
        ("acme foods", "SUP77"): gid(2), ("acme foods", "SUP99"): gid(1)}
    assert all(row.metafield_written_at is not None for row in mapped.values())  # both are on a metafield already
    assert mapped[("acme foods", "SUP77")].learned_from_upload_id == upload_id
    rows = {row.variant_gid: row for row in table_rows(db, CatalogVariantRow)}
    assert rows[gid(1)].supplier_skus == '["acme foods|SUP77", "acme foods|SUP99"]'
    assert rows[gid(3)].supplier_skus is None


def test_relearning_a_supplier_sku_for_another_variant_waits_for_its_metafield_again(db):
    upload_id = save_po(db)
    upsert_catalog_variants(db, "m1", SHOP, CATALOG)
    with db.session() as session:
        learn_supplier_sku(session.connection(), "m1", SHOP, "ACME Foods", "SUP-77", gid(1), upload_id)
        session.execute(sa.update(SupplierSkuMap).values(metafield_written_at=T0))
    with db.session() as session:  # the same variant again: still written
        learn_supplier_sku(session.connection(), "m1", SHOP, "ACME Foods", "SUP-77", gid(1), upload_id)
    assert table_rows(db, SupplierSkuMap)[0].metafield_written_at == T0
    with db.session() as session:
        learn_supplier_sku(session.connection(), "m1", SHOP, "ACME Foods", "SUP-77", gid(2), upload_id)
    (row,) = table_rows(db, SupplierSkuMap)
    assert (row.variant_gid, row.metafield_written_at) == (gid(2), None)
