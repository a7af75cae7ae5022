"""sync_products / verify_products against the emulator over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, handle_for_sku
from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator
from poflow_dagster.shopify.sync import sync_products, verify_batch_size, verify_products

TOKEN = "sync-test-token"


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with start_emulator(access_token=TOKEN) as handle:
        yield handle


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[ShopifyClient]:
    with ShopifyClient(emu.url, TOKEN, timeout=5.0, backoff_base=0.01) as c:
        yield c


def make_specs(n: int, price: str = "10.00") -> list[ProductSpec]:
    return [
        ProductSpec(sku=f"SKU-{i:03d}", title=f"Item {i}", price=Decimal(price) + i,
                    handle=handle_for_sku("m1", f"SKU-{i:03d}"))
        for i in range(n)
    ]


def test_sync_preserves_order_and_is_idempotent(client: ShopifyClient, emu: EmulatorHandle) -> None:
    specs = make_specs(10)
    first = sync_products(client, specs, max_workers=4)
    assert [r.sku for r in first] == [s.sku for s in specs]
    assert all(r.created for r in first) and emu.count_products() == 10
    assert len({r.product_gid for r in first}) == 10

    second = sync_products(client, specs, max_workers=4, known_products={r.handle: r.product_gid for r in first})
    assert emu.count_products() == 10
    assert not any(r.created for r in second)
    assert emu.stats.operations == {"productSet": 20}  # one request per upsert, no read-before-write
    assert [(r.product_gid, r.variant_gid) for r in second] == [(r.product_gid, r.variant_gid) for r in first]
    assert verify_products(client, specs) == []
    assert sync_products(client, []) == [] and verify_products(client, []) == []


def test_duplicate_specs_collapse_and_conflicts_fail(client: ShopifyClient, emu: EmulatorHandle) -> None:
    spec = make_specs(1)[0]
    results = sync_products(client, [spec, spec])
    assert results[0] == results[1] and emu.count_products() == 1
    with pytest.raises(PoflowError) as info:
        sync_products(client, [spec, replace(spec, price=Decimal("99"))])
    assert info.value.code == "shopify_conflicting_specs"


def test_sync_survives_a_tiny_bucket_with_threads() -> None:
    with start_emulator(access_token=TOKEN, bucket_size=60, restore_rate=400) as emu:
        with ShopifyClient(emu.url, TOKEN, max_attempts=20, backoff_base=0.01) as c:
            specs = make_specs(8)
            results = sync_products(c, specs, max_workers=4)
            assert [r.sku for r in results] == [s.sku for s in specs] and emu.count_products() == 8
            assert c.stats.paced_sleeps + c.stats.throttled > 0  # the bucket really was the bottleneck
            assert c.stats.responses == c.stats.cost_reports
            assert verify_products(c, specs) == []


def test_verify_detects_mismatches(client: ShopifyClient) -> None:
    specs = make_specs(4)
    sync_products(client, specs)
    # Someone edits Shopify behind our back: price, status and one product missing.
    client.product_set(replace(specs[0], price=Decimal("1.23")))
    client.product_set(replace(specs[1], status="ACTIVE"))
    missing = ProductSpec(sku="NOT-THERE", title="Ghost", price=Decimal("5"), handle=handle_for_sku("m1", "NOT-THERE"))

    lines = verify_products(client, [*specs, missing])
    assert lines == [
        "SKU SKU-000: price differs (expected 10.00, Shopify has 1.23)",
        "SKU SKU-001: status differs (expected DRAFT, Shopify has ACTIVE)",
        f"SKU NOT-THERE: missing in Shopify (no product with handle {missing.handle})",
    ]
    # Equal decimals with different scale are not a mismatch.
    assert verify_products(client, [replace(specs[2], price=Decimal("12.000"))]) == []


def test_verify_reports_sku_under_another_handle(client: ShopifyClient) -> None:
    spec = make_specs(1)[0]
    client.product_set(replace(spec, handle="somewhere-else"))
    assert verify_products(client, [spec]) == [f"SKU SKU-000: found under handle somewhere-else, expected {spec.handle}"]


def test_verify_by_recorded_gids_in_batches_of_250() -> None:
    with start_emulator(access_token=TOKEN, bucket_size=2000, restore_rate=2000) as emu:
        with ShopifyClient(emu.url, TOKEN, timeout=5.0) as c:
            specs = make_specs(300)
            synced = sync_products(c, specs, max_workers=4)
            gids = {r.handle: r.variant_gid for r in synced}
            before = dict(emu.stats.operations)
            assert verify_products(c, specs, gids) == []
            read_back = {k: v - before.get(k, 0) for k, v in emu.stats.operations.items() if v != before.get(k, 0)}
            assert read_back == {"nodes": 2}  # 250 + 50 GIDs: <= 1 request per 100 products

            # Behind our back: a price edited, a title edited; one draft has no recorded GID, one a stale GID.
            c.product_set(replace(specs[0], price=Decimal("1.23")))
            c.execute("mutation($i: ProductSetIdentifiers, $in: ProductSetInput!) { productSet(identifier: $i, "
                      "input: $in) { product { id } userErrors { message } } }",
                      {"i": {"handle": specs[2].handle}, "in": {"title": "Renamed"}})
            del gids[specs[3].handle]
            gids[specs[1].handle] = "gid://shopify/ProductVariant/1"  # no such variant: found by handle instead
            before = emu.stats.operations.get("productByIdentifier", 0)
            lines = verify_products(c, specs[:4], gids)
            assert lines == [
                "SKU SKU-000: price differs (expected 10.00, Shopify has 1.23)",
                "SKU SKU-002: title differs (expected 'Item 2', Shopify has 'Renamed')",
            ]
            assert emu.stats.operations["productByIdentifier"] - before == 2  # SKU-001 and SKU-003


def test_verify_batches_shrink_to_what_a_small_bucket_can_pay() -> None:
    with start_emulator(access_token=TOKEN, bucket_size=60, restore_rate=2000) as emu:
        with ShopifyClient(emu.url, TOKEN, timeout=5.0) as c:
            specs = make_specs(40)
            gids = {r.handle: r.variant_gid for r in sync_products(c, specs)}
            assert verify_batch_size(c) == 30  # 60 points / 2 per variant
            assert verify_products(c, specs, gids) == []
            assert emu.stats.operations["nodes"] == 2 and emu.stats.throttled == 0


def test_a_fresh_client_reading_back_more_than_a_small_bucket_allows_splits_the_batch() -> None:
    """The fault benchmark's case: the check's client has no answer yet, so it cannot know the bucket is small
    (200 points: 100 variants at most). Shopify answers MAX_COST_EXCEEDED; the batch is halved, never failed."""
    from poflow_dagster.shopify.rate_budget import InProcessBudget

    with start_emulator(access_token=TOKEN, bucket_size=200, restore_rate=2000) as emu:
        with ShopifyClient(emu.url, TOKEN, timeout=5.0) as writer:
            specs = make_specs(150)
            gids = {r.handle: r.variant_gid for r in sync_products(writer, specs)}
        # A separate budget that has never seen this shop (another process without Redis).
        with ShopifyClient(emu.url, TOKEN, timeout=5.0, budget=InProcessBudget("fresh")) as fresh:
            assert verify_batch_size(fresh) == 250
            before = emu.stats.operations.get("nodes", 0)
            assert verify_products(fresh, specs, gids) == []
            assert emu.stats.operations["nodes"] - before == 3  # 150 refused, then 75 + 75
