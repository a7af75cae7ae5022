"""Locations, inventory levels and idempotent stock adjustments: the real ShopifyClient against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from poflow_dagster.shopify.client import (
    InventoryChange,
    InventoryLevel,
    ProductSpec,
    ShopifyClient,
    ShopifyGraphQLError,
    ShopifyUserError,
)
from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator
from poflow_dagster.shopify.rate_budget import InProcessBudget

TOKEN = "shpat_inventory_test"


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with start_emulator(access_token=TOKEN, locations=("Warehouse", "Store front")) as handle:
        yield handle


def make_client(emulator: EmulatorHandle, api_version: str = "2026-10") -> ShopifyClient:
    return ShopifyClient(emulator.url, TOKEN, api_version, timeout=5.0, backoff_base=0.01,
                         budget=InProcessBudget(f"test:{emulator.url}:{api_version}"))


@pytest.fixture
def client(emulator: EmulatorHandle) -> Iterator[ShopifyClient]:
    with make_client(emulator) as c:
        yield c


def new_item(client: ShopifyClient, sku: str) -> str:
    """Create a product for ``sku``; the GID of its variant's inventory item."""
    synced = client.product_set(ProductSpec(sku=sku, title=sku, price=Decimal("5.00"), handle=sku.lower()))
    return next(v.inventory_item_gid for v in client.catalog_page().variants if v.variant_gid == synced.variant_gid)


def receive(item: str, location: str, delta: int, expected: int | None = None) -> list[InventoryChange]:
    return [InventoryChange(item, location, delta, change_from_quantity=expected)]


def test_locations_are_configurable_and_new_items_stocked_at_the_first(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    warehouse, store = client.locations()
    assert (warehouse.name, store.name) == ("Warehouse", "Store front")
    assert warehouse.gid == emulator.default_location
    item = new_item(client, "INV-1")
    assert client.inventory_levels([item], warehouse.gid) == {item: InventoryLevel(available=0, on_hand=0)}
    assert client.inventory_levels([item], store.gid) == {item: None}  # not stocked there
    with pytest.raises(ShopifyUserError) as refused:
        client.adjust_inventory(receive(item, store.gid, 1), reason="received", idempotency_key="k-store")
    assert refused.value.user_errors[0]["code"] == "ITEM_NOT_STOCKED_AT_LOCATION"


def test_adjust_inventory_moves_available_and_on_hand(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    item = new_item(client, "INV-2")
    location = emulator.default_location
    result = client.adjust_inventory(receive(item, location, 7), reason="received", idempotency_key="po-1/line-1",
                                     reference_uri="poflow://po/1")
    assert result.group_gid.startswith("gid://shopify/InventoryAdjustmentGroup/")
    assert {(c.name, c.delta, c.quantity_after) for c in result.changes} == {("available", 7, 7), ("on_hand", 7, 7)}
    assert {c.inventory_item_gid for c in result.changes} == {item}
    assert client.inventory_levels([item], location)[item] == InventoryLevel(available=7, on_hand=7)


def test_lost_answer_retried_by_the_client_changes_stock_once(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    item = new_item(client, "INV-3")
    location = emulator.default_location
    emulator.drop_answers(1, only="inventoryAdjustQuantities")  # applied, then the connection drops
    result = client.adjust_inventory(receive(item, location, 5), reason="received", idempotency_key="po-2/line-1")
    assert client.stats.retries == 1 and emulator.stats.operations["inventoryAdjustQuantities"] == 2
    assert client.inventory_levels([item], location)[item] == InventoryLevel(available=5, on_hand=5)
    again = client.adjust_inventory(receive(item, location, 5), reason="received", idempotency_key="po-2/line-1")
    assert again == result  # the first answer, replayed
    assert client.inventory_levels([item], location)[item] == InventoryLevel(available=5, on_hand=5)
    client.adjust_inventory(receive(item, location, 5), reason="received", idempotency_key="po-3/line-1")
    assert client.inventory_levels([item], location)[item].available == 10  # a new key is a new receipt


def test_reused_key_with_other_changes_is_refused(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    item = new_item(client, "INV-4")
    location = emulator.default_location
    client.adjust_inventory(receive(item, location, 3), reason="received", idempotency_key="k")
    with pytest.raises(ShopifyUserError) as refused:
        client.adjust_inventory(receive(item, location, 4), reason="received", idempotency_key="k")
    assert refused.value.user_errors[0]["code"] == "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"
    assert client.inventory_levels([item], location)[item].available == 3


def test_change_from_quantity_compare_and_set(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    item = new_item(client, "INV-5")
    location = emulator.default_location
    client.adjust_inventory(receive(item, location, 4, expected=0), reason="received", idempotency_key="a")
    with pytest.raises(ShopifyUserError) as stale:
        client.adjust_inventory(receive(item, location, 2, expected=0), reason="received", idempotency_key="b")
    assert stale.value.user_errors[0]["code"] == "CHANGE_FROM_QUANTITY_STALE"
    assert stale.value.user_errors[0]["field"] == ["input", "changes", "0", "changeFromQuantity"]
    assert client.inventory_levels([item], location)[item].available == 4  # nothing applied
    client.adjust_inventory(receive(item, location, 2, expected=4), reason="received", idempotency_key="c")
    client.adjust_inventory(receive(item, location, -1), reason="correction", idempotency_key="d")  # null: no check
    assert client.inventory_levels([item], location)[item].available == 5


RAW_ADJUST = """
mutation Raw($input: InventoryAdjustQuantitiesInput!) {
  inventoryAdjustQuantities(input: $input)%s { inventoryAdjustmentGroup { id } userErrors { field code message } }
}
"""


def test_idempotency_key_is_required_from_2026_04(emulator: EmulatorHandle) -> None:
    location = emulator.default_location
    with make_client(emulator) as client:
        item = new_item(client, "INV-6")
        change = {"inventoryItemId": item, "locationId": location, "delta": 1, "changeFromQuantity": None}
        adjustment = {"reason": "received", "name": "available", "changes": [change]}
        with pytest.raises(ShopifyGraphQLError, match="@idempotent"):
            client.execute(RAW_ADJUST % "", {"input": adjustment})
        with pytest.raises(ShopifyUserError, match="changeFromQuantity"):  # the field must be given, even as null
            client.execute(RAW_ADJUST % ' @idempotent(key: "x")', {"input": {**adjustment, "changes": [
                {k: v for k, v in change.items() if k != "changeFromQuantity"}]}})
    with make_client(emulator, "2026-01") as older:  # optional before 2026-04
        older.execute(RAW_ADJUST % "", {"input": adjustment})
        assert older.inventory_levels([item], location)[item].available == 1


def test_inventory_levels_of_many_items_in_one_query(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    items = [new_item(client, f"MANY-{n}") for n in range(3)]
    location = emulator.default_location
    client.adjust_inventory([InventoryChange(i, location, n + 1, None) for n, i in enumerate(items)],
                            reason="received", idempotency_key="many")
    before = emulator.stats.operations.get("nodes", 0)
    levels = client.inventory_levels([*items, "gid://shopify/InventoryItem/1"], location)
    assert emulator.stats.operations["nodes"] == before + 1
    assert [levels[i].available for i in items] == [1, 2, 3]  # type: ignore[union-attr]
    assert levels["gid://shopify/InventoryItem/1"] is None
    assert client.throttle is not None and client.throttle.requested_query_cost == 4 * 3
