"""Learned supplier SKUs on the variants: ``write_supplier_sku_metafields`` against the emulator, on both databases,
and a new app database learning them back from the shop."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from poflow_dagster.catalog.shop_catalog import sync_shop_catalog
from poflow_dagster.catalog.store import learn_supplier_sku, learned_supplier_skus
from poflow_dagster.catalog.supplier_metafields import write_supplier_sku_metafields
from poflow_dagster.shopify.client import MetafieldInput, ShopifyClient
from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator
from poflow_dagster.shopify.rate_budget import InProcessBudget
from poflow_dagster.store.db import Database
from poflow_dagster.store.merchants import ensure_merchant
from poflow_dagster.store.schema import CatalogVariantRow, SupplierSkuMap

from .test_shopify_catalog import seed_product

TOKEN = "shpat_supplier_skus"
SUPPLIER = "ACME Foods Inc."


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with start_emulator(access_token=TOKEN, bucket_size=20000, restore_rate=5000) as handle:
        yield handle


@pytest.fixture
def client(emulator: EmulatorHandle) -> Iterator[ShopifyClient]:
    with ShopifyClient(emulator.url, TOKEN, timeout=10.0, backoff_base=0.01,
                       budget=InProcessBudget(f"test:{emulator.url}")) as c:
        yield c


def synced(db: Database, client: ShopifyClient, emulator: EmulatorHandle, variants: int = 3) -> list[str]:
    """A merchant ``m1`` with one product of ``variants`` variants, synced; their GIDs in order."""
    with db.session() as session:
        ensure_merchant(session, "m1")
    seed_product(client, "oil", variants, vendor="Acme Foods")
    sync_shop_catalog(db, client, "m1", emulator.url)
    return [v.variant_gid for v in client.catalog_page().variants]


def learn(db: Database, shop_url: str, sku: str, variant_gid: str) -> None:
    with db.session() as session:
        learn_supplier_sku(session.connection(), "m1", shop_url, SUPPLIER, sku, variant_gid, None)


def on_shop(client: ShopifyClient, gids: list[str]) -> dict[str, tuple[str, ...] | None]:
    return client.supplier_skus_of(gids)


def map_rows(db: Database) -> list[SupplierSkuMap]:
    with db.session() as session:
        return list(session.scalars(sa.select(SupplierSkuMap).order_by(SupplierSkuMap.supplier_sku_key)))


def test_entries_are_merged_into_the_variants_metafield_once(  # type: ignore[no-untyped-def]
    db, client, emulator,
) -> None:
    one, two, three = synced(db, client, emulator)
    theirs = MetafieldInput(one, "poflow", "supplier_skus", "json", '["other co|X9"]')  # written by someone else
    client.set_metafields([theirs])
    learn(db, emulator.url, "SUP-1", one)
    learn(db, emulator.url, "SUP-2", one)
    learn(db, emulator.url, "SUP-3", two)
    assert write_supplier_sku_metafields(db, client, "m1", emulator.url) == 3
    assert on_shop(client, [one, two, three]) == {
        one: ("acme foods|SUP1", "acme foods|SUP2", "other co|X9"), two: ("acme foods|SUP3",), three: ()}
    assert all(row.metafield_written_at is not None for row in map_rows(db))
    with db.session() as session:
        copies = dict(session.execute(sa.select(CatalogVariantRow.variant_gid, CatalogVariantRow.supplier_skus)).all())
    assert json.loads(copies[two]) == ["acme foods|SUP3"] and copies[three] is None  # the local copy follows

    calls = emulator.stats.operations.get("metafieldsSet", 0)
    assert write_supplier_sku_metafields(db, client, "m1", emulator.url) == 0  # idempotent: nothing pending
    assert emulator.stats.operations.get("metafieldsSet", 0) == calls


def test_an_entry_relearned_for_another_variant_moves_between_metafields(  # type: ignore[no-untyped-def]
    db, client, emulator,
) -> None:
    one, two, _ = synced(db, client, emulator)
    learn(db, emulator.url, "SUP-1", one)
    write_supplier_sku_metafields(db, client, "m1", emulator.url)
    learn(db, emulator.url, "SUP-1", two)  # a reviewer says it is the other variant after all
    assert [row.metafield_written_at for row in map_rows(db)] == [None]
    assert write_supplier_sku_metafields(db, client, "m1", emulator.url) == 1
    assert on_shop(client, [one, two]) == {one: (), two: ("acme foods|SUP1",)}


def test_more_than_25_variants_are_written_in_calls_of_25(db, client, emulator) -> None:  # type: ignore[no-untyped-def]
    gids = synced(db, client, emulator, variants=30)
    for n, gid in enumerate(gids):
        learn(db, emulator.url, f"S-{n}", gid)
    before = emulator.stats.operations.get("metafieldsSet", 0)
    assert write_supplier_sku_metafields(db, client, "m1", emulator.url) == 30
    assert emulator.stats.operations.get("metafieldsSet", 0) - before == 2  # 25 + 5
    assert all(len(entries or ()) == 1 for entries in on_shop(client, gids).values())


def test_a_new_app_database_learns_the_map_back_from_the_shop(  # type: ignore[no-untyped-def]
    db, client, emulator, tmp_path,
) -> None:
    one, two, _ = synced(db, client, emulator)
    learn(db, emulator.url, "SUP-1", one)
    learn(db, emulator.url, "SUP-2", two)
    write_supplier_sku_metafields(db, client, "m1", emulator.url)

    fresh = Database(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")  # another installation, or a restored app
    fresh.migrate()
    try:
        assert learned_supplier_skus(fresh, "m1", emulator.url, SUPPLIER) == {}
        synced(fresh, client, emulator)  # its first (full) sync reads the metafields
        assert learned_supplier_skus(fresh, "m1", emulator.url, SUPPLIER) == {"SUP1": one, "SUP2": two}
        assert all(row.metafield_written_at is not None for row in map_rows(fresh))
        assert write_supplier_sku_metafields(fresh, client, "m1", emulator.url) == 0  # nothing to write back
    finally:
        fresh.dispose()
