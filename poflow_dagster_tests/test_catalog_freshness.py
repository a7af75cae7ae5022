"""A PO run's catalog pass is cheap: skipped while a recent pass is fresh, and asking for a small first page."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from poflow_dagster.catalog.shop_catalog import (
    INCREMENTAL_FIRST_PAGE, catalog_is_fresh, page_size, sync_shop_catalog,
)
from poflow_dagster.catalog.store import catalog_candidates
from poflow_dagster.catalog.sync import sync_state
from poflow_dagster.shopify.client import MAX_NODE_IDS, ShopifyClient, handle_for_sku
from poflow_dagster.store.merchants import ensure_merchant
from poflow_dagster.store.schema import CatalogSyncState

from .test_shopify_catalog import SEED_MUTATION, seed_product

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def test_page_size_is_small_only_for_an_incremental_pass_first_page() -> None:
    assert page_size(T0, None) == INCREMENTAL_FIRST_PAGE < MAX_NODE_IDS
    assert page_size(T0, "cursor") == MAX_NODE_IDS  # the first page was full: more changed, full pages now
    assert page_size(None, None) == page_size(None, "cursor") == MAX_NODE_IDS  # a full pass


@pytest.fixture
def client(db, shop):  # type: ignore[no-untyped-def]
    with db.session() as session:
        ensure_merchant(session, "m1")
    with ShopifyClient(shop.url, "test-token") as c:
        yield c


def test_a_pass_is_fresh_for_the_configured_age_only(db, shop, client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("POFLOW_CATALOG_MAX_AGE_SECONDS", "30")
    assert not catalog_is_fresh(db, "m1", shop.url)  # never synced
    seed_product(client, "oil", 2)
    sync_shop_catalog(db, client, "m1", shop.url)
    assert catalog_is_fresh(db, "m1", shop.url)
    monkeypatch.setenv("POFLOW_CATALOG_MAX_AGE_SECONDS", "0")
    assert not catalog_is_fresh(db, "m1", shop.url)  # 0: every run syncs
    monkeypatch.setenv("POFLOW_CATALOG_MAX_AGE_SECONDS", "30")
    with db.session() as session:  # the pass finished 31 s ago
        session.execute(update(CatalogSyncState).values(
            updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=31)))
    assert not catalog_is_fresh(db, "m1", shop.url)
    with db.session() as session:  # a pass under way is not fresh, however recent
        session.execute(update(CatalogSyncState).values(pass_started_at=dt.datetime.now(dt.UTC)))
    assert not catalog_is_fresh(db, "m1", shop.url)


def test_an_incremental_pass_reads_every_change_past_its_small_first_page(db, shop, client) -> None:  # type: ignore[no-untyped-def]
    seed_product(client, "first", 1)
    sync_shop_catalog(db, client, "m1", shop.url)  # the full first pass
    for n in range(INCREMENTAL_FIRST_PAGE + 5):  # more changes than the first page holds
        seed_product(client, f"new{n}", 1)
    requests = client.stats.requests
    result = sync_shop_catalog(db, client, "m1", shop.url)
    assert not result.full and result.complete
    assert result.variants >= INCREMENTAL_FIRST_PAGE + 5 and result.pages >= 2
    skus = {v.sku for v in catalog_candidates(db, "m1", shop.url, vendor_key="acme")}
    assert {f"new{n}-1" for n in range(INCREMENTAL_FIRST_PAGE + 5)} <= skus
    assert client.stats.requests - requests >= 3  # two variant pages and the products step


def _poflow_product(client: ShopifyClient, sku: str) -> None:
    """A DRAFT product as poflow publishes one for merchant m1 (handle from the SKU)."""
    client.execute(SEED_MUTATION, {"identifier": {"handle": handle_for_sku("m1", sku)}, "input": {
        "title": f"Draft {sku}", "vendor": "Acme", "status": "DRAFT",
        "productOptions": [{"name": "Title", "values": [{"name": "Default Title"}]}],
        "variants": [{"optionValues": [{"optionName": "Title", "name": "Default Title"}], "price": "1.00",
                      "sku": sku}],
    }})


def test_a_store_holding_only_poflow_products_is_synced_once_in_full_then_incrementally(  # type: ignore[no-untyped-def]
        db, shop, client, monkeypatch) -> None:
    """A new merchant's store (empty, or holding only what poflow published): the first pass is full and finds no
    catalog; it still moves the cursor, so later runs are fresh / incremental with a small first page — not a full
    250-node pass per PO run (which cost every run ~1,000 points at standard limits)."""
    monkeypatch.setenv("POFLOW_CATALOG_MAX_AGE_SECONDS", "30")
    first = sync_shop_catalog(db, client, "m1", shop.url)  # an empty store
    assert first.full and first.complete and first.variants == 0
    assert catalog_is_fresh(db, "m1", shop.url)
    for n in range(3):
        _poflow_product(client, f"OWN-{n}")
    asked: list[int] = []
    real_page = client.catalog_page
    monkeypatch.setattr(client, "catalog_page", lambda *a, first=MAX_NODE_IDS: asked.append(first) or real_page(
        *a, first=first))
    second = sync_shop_catalog(db, client, "m1", shop.url)
    assert not second.full and second.complete
    assert asked == [INCREMENTAL_FIRST_PAGE]  # one small page read poflow's three products...
    assert second.variants == 0 and catalog_candidates(db, "m1", shop.url, vendor_key="acme") == []  # ...not kept
    state = sync_state(db, "m1", shop.url)
    assert state.last_updated_at is not None and state.last_updated_at >= first.cursor  # the cursor moved past them
