"""The bundled Shopify emulator, spoken to with plain httpx (the Admin GraphQL wire format)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator

TOKEN = "emulator-test-token"
SET = """
mutation Set($identifier: ProductSetIdentifiers, $input: ProductSetInput!) {
  productSet(synchronous: true, identifier: $identifier, input: $input) {
    product { id handle title status variants(first: 5) { nodes { id sku price title } } }
    userErrors { field message code }
  }
}
"""


def product_input(title: str, price: str, sku: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": title,
        "productOptions": [{"name": "Title", "position": 1, "values": [{"name": "Default Title"}]}],
        "variants": [{"optionValues": [{"optionName": "Title", "name": "Default Title"}], "price": price, "sku": sku}],
        **extra,
    }


def post(handle: EmulatorHandle, query: str, variables: dict[str, Any] | None = None, *,
         token: str | None = TOKEN, version: str = "2025-07") -> httpx.Response:
    headers = {"X-Shopify-Access-Token": token} if token is not None else {}
    return httpx.post(
        f"{handle.url}/admin/api/{version}/graphql.json",
        json={"query": query, "variables": variables or {}},
        headers=headers,
        timeout=5.0,
    )


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with start_emulator(access_token=TOKEN) as handle:
        yield handle


def assert_cost_extension(body: dict[str, Any]) -> dict[str, Any]:
    cost = body["extensions"]["cost"]
    assert set(cost) == {"requestedQueryCost", "actualQueryCost", "throttleStatus"}
    assert set(cost["throttleStatus"]) == {"maximumAvailable", "currentlyAvailable", "restoreRate"}
    return cost


def test_auth_is_required(emu: EmulatorHandle) -> None:
    assert post(emu, "{ shop { name } }", token=None).status_code == 401
    assert post(emu, "{ shop { name } }", token="").status_code == 401
    assert post(emu, "{ shop { name } }", token="other").status_code == 401
    ok = post(emu, "{ shop { name } }")
    assert ok.status_code == 200 and ok.json()["data"] == {"shop": {"name": "poflow emulator"}}
    with start_emulator() as open_emu:  # no token configured: any non-empty token works
        assert post(open_emu, "{ shop { name } }", token="anything").status_code == 200
        assert post(open_emu, "{ shop { name } }", token="").status_code == 401


def test_only_the_graphql_endpoint_exists(emu: EmulatorHandle) -> None:
    assert httpx.post(f"{emu.url}/admin/api/2025-07/products.json", headers={"X-Shopify-Access-Token": TOKEN}).status_code == 404
    assert httpx.get(f"{emu.url}/admin/api/2025-07/graphql.json").status_code == 405
    bad = httpx.post(f"{emu.url}/admin/api/2025-07/graphql.json", content=b"{not json",
                     headers={"X-Shopify-Access-Token": TOKEN, "Content-Type": "application/json"})
    assert bad.status_code == 400


def test_every_answer_carries_the_cost_extension(emu: EmulatorHandle) -> None:
    ok = post(emu, "{ productVariants(first: 5) { nodes { id sku product { id } } } }").json()
    cost = assert_cost_extension(ok)
    assert cost["requestedQueryCost"] == cost["actualQueryCost"] == 2 + 5 * 1
    assert cost["throttleStatus"]["maximumAvailable"] == 2000 and cost["throttleStatus"]["restoreRate"] == 100
    invalid = post(emu, "{ productVariants(first: 5) { nodes { bogus } } }").json()
    assert invalid["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert_cost_extension(invalid)
    mutation = post(emu, SET, {"identifier": {"handle": "c"}, "input": product_input("C", "1", "C")}).json()
    assert assert_cost_extension(mutation)["requestedQueryCost"] == 10.2  # 10 + 0.2 per variant (API 2025-10)


def test_throttled_answer_has_shopify_shape() -> None:
    with start_emulator(access_token=TOKEN, bucket_size=21, restore_rate=1) as emu:
        for i in range(2):  # 2 x 10.2 points
            assert "errors" not in post(emu, SET, {"identifier": {"handle": f"h{i}"}, "input": product_input("T", "1", f"S{i}")}).json()
        throttled = post(emu, SET, {"identifier": {"handle": "h3"}, "input": product_input("T", "1", "S3")})
        assert throttled.status_code == 200
        body = throttled.json()
        assert body["errors"][0]["message"] == "Throttled"
        assert body["errors"][0]["extensions"]["code"] == "THROTTLED"
        assert "data" not in body
        cost = assert_cost_extension(body)
        assert cost["requestedQueryCost"] == 10.2 and cost["actualQueryCost"] is None
        assert cost["throttleStatus"]["currentlyAvailable"] < 10.2
        assert emu.count_products() == 2 and emu.stats.throttled == 1

        too_big = post(emu, "{ products(first: 250) { nodes { id } } }").json()
        assert too_big["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"


def test_product_set_upserts_by_handle(emu: EmulatorHandle) -> None:
    first = post(emu, SET, {"identifier": {"handle": "widget"}, "input": product_input("Widget", "9.5", "W-1", status="DRAFT")}).json()
    product = first["data"]["productSet"]["product"]
    assert product["handle"] == "widget" and product["status"] == "DRAFT"
    assert product["variants"]["nodes"][0]["price"] == "9.50" and product["variants"]["nodes"][0]["title"] == "Default Title"

    second = post(emu, SET, {"identifier": {"handle": "widget"}, "input": product_input("Widget 2", "11", "W-1")}).json()
    product2 = second["data"]["productSet"]["product"]
    assert product2["id"] == product["id"] and product2["title"] == "Widget 2" and product2["status"] == "DRAFT"
    assert product2["variants"]["nodes"][0]["id"] == product["variants"]["nodes"][0]["id"]  # same variant, in place
    assert product2["variants"]["nodes"][0]["price"] == "11.00"
    assert emu.count_products() == 1

    # Without an identifier, productSet creates; an explicit taken handle is a user error.
    clash = post(emu, SET, {"input": product_input("Other", "1", "O-1", handle="widget")}).json()
    assert clash["data"]["productSet"]["product"] is None
    assert clash["data"]["productSet"]["userErrors"][0]["code"] == "HANDLE_NOT_UNIQUE"


def test_product_set_user_errors(emu: EmulatorHandle) -> None:
    blank = post(emu, SET, {"identifier": {"handle": "x"}, "input": product_input("  ", "1", "X")}).json()
    assert blank["data"]["productSet"]["userErrors"] == [{"field": ["input", "title"], "message": "Title can't be blank", "code": "BLANK"}]
    no_variants = post(emu, SET, {"identifier": {"handle": "x"}, "input": {
        "title": "X", "productOptions": [{"name": "Title", "values": [{"name": "Default Title"}]}]}}).json()
    assert no_variants["data"]["productSet"]["userErrors"][0]["code"] == "VARIANTS_INPUT_MISSING"
    bad_value = product_input("X", "1", "X")
    bad_value["variants"][0]["optionValues"][0]["name"] = "Nope"
    body = post(emu, SET, {"identifier": {"handle": "x"}, "input": bad_value}).json()
    assert body["data"]["productSet"]["userErrors"][0]["code"] == "OPTION_VALUE_DOES_NOT_EXIST"
    assert emu.count_products() == 0  # nothing written on user errors


def test_search_and_pagination(emu: EmulatorHandle) -> None:
    for i in range(7):
        post(emu, SET, {"identifier": {"handle": f"p{i}"}, "input": product_input(f"P{i}", "1", f"ABC-{i}")})
    q = "query($q: String, $after: String) { productVariants(first: 3, query: $q, after: $after) { nodes { sku } pageInfo { hasNextPage endCursor } } }"
    seen: list[str] = []
    after = None
    while True:
        page = post(emu, q, {"q": "sku:abc", "after": after}).json()["data"]["productVariants"]
        seen += [n["sku"] for n in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [f"ABC-{i}" for i in range(7)]
    exact = post(emu, q, {"q": 'sku:"ABC-3"'}).json()["data"]["productVariants"]["nodes"]
    assert [n["sku"] for n in exact] == ["ABC-3"]
    by_handle = post(emu, '{ products(first: 5, query: "handle:p4") { nodes { handle } } }').json()
    assert by_handle["data"]["products"]["nodes"] == [{"handle": "p4"}]
    ident = post(emu, '{ productByIdentifier(identifier: {handle: "p5"}) { title } }').json()
    assert ident["data"]["productByIdentifier"] == {"title": "P5"}


def test_two_handles_on_one_state_file_share_products(tmp_path: Path) -> None:
    state = tmp_path / "shop.sqlite3"
    with start_emulator(state_path=state, access_token=TOKEN) as a, start_emulator(state_path=state, access_token=TOKEN) as b:
        made = post(a, SET, {"identifier": {"handle": "shared"}, "input": product_input("Shared", "5", "SH-1")}).json()
        gid = made["data"]["productSet"]["product"]["id"]
        assert gid.startswith("gid://shopify/Product/")
        seen = post(b, '{ productByIdentifier(identifier: {handle: "shared"}) { id } }').json()
        assert seen["data"]["productByIdentifier"]["id"] == gid
        post(b, SET, {"identifier": {"handle": "shared"}, "input": product_input("Shared", "6", "SH-1")})
        post(b, SET, {"identifier": {"handle": "only-b"}, "input": product_input("B", "1", "B-1")})
        assert a.count_products() == b.count_products() == 2
    with start_emulator(state_path=state, access_token=TOKEN) as later:  # persisted across restarts
        price = post(later, '{ productVariants(first: 1, query: "sku:SH-1") { nodes { price } } }').json()
        assert price["data"]["productVariants"]["nodes"] == [{"price": "6.00"}]
        later.reset()
        assert later.count_products() == 0


def test_an_older_state_file_gains_costs_and_stock_levels(tmp_path: Path) -> None:
    """A state file written before variants had a cost and stock opens, its variants stocked at 0."""
    state = tmp_path / "old.sqlite3"
    with sqlite3.connect(state) as conn:
        conn.executescript("""
            CREATE TABLE products (id INTEGER PRIMARY KEY AUTOINCREMENT, handle TEXT NOT NULL UNIQUE,
                title TEXT NOT NULL, status TEXT NOT NULL, description_html TEXT NOT NULL DEFAULT '',
                vendor TEXT NOT NULL DEFAULT '', product_type TEXT NOT NULL DEFAULT '',
                tags_json TEXT NOT NULL DEFAULT '[]', options_json TEXT NOT NULL DEFAULT '[]',
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
            CREATE TABLE variants (id INTEGER PRIMARY KEY AUTOINCREMENT, product_id INTEGER NOT NULL,
                position INTEGER NOT NULL, sku TEXT, price TEXT NOT NULL, compare_at_price TEXT, barcode TEXT,
                option_values_json TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
            INSERT INTO products VALUES (1001, 'old', 'Old', 'ACTIVE', '', '', '', '[]',
                '[{"name": "Title", "values": ["Default Title"]}]', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');
            INSERT INTO variants VALUES (2001, 1001, 1, 'OLD-1', '3.00', NULL, NULL,
                '[{"optionName": "Title", "name": "Default Title"}]', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');
        """)
    with start_emulator(state_path=state, access_token=TOKEN) as emu:
        query = '{ node(id: "gid://shopify/InventoryItem/2001") { ... on InventoryItem { unitCost { amount } ' \
                'inventoryLevel(locationId: "%s") { quantities(names: ["available"]) { quantity } } } } }'
        body = post(emu, query % emu.default_location).json()
        assert body["data"]["node"] == {"unitCost": None, "inventoryLevel": {"quantities": [{"quantity": 0}]}}


def test_serve_forever_prints_one_line_with_the_url(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path; from poflow_dagster.shopify.emulator import serve_forever; "
        f"serve_forever('127.0.0.1', 0, Path({str(tmp_path / 's.sqlite3')!r}), access_token='cli')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("Shopify emulator listening on http://127.0.0.1:")
        url = line.split()[4]
        response = httpx.post(f"{url}/admin/api/2025-07/graphql.json", json={"query": "{ shop { name } }"},
                              headers={"X-Shopify-Access-Token": "cli"}, timeout=5.0)
        assert response.json()["data"]["shop"]["name"] == "poflow emulator"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


NODES = """
query($ids: [ID!]!) {
  nodes(ids: $ids) { __typename ... on ProductVariant { id sku price product { id handle title status } } }
}
"""


def test_nodes_by_ids_with_shopify_cost(emu: EmulatorHandle) -> None:
    made = [
        post(emu, SET, {"identifier": {"handle": f"n{i}"}, "input": product_input(f"N{i}", "2.5", f"N-{i}")}).json()
        for i in range(3)
    ]
    variant_ids = [m["data"]["productSet"]["product"]["variants"]["nodes"][0]["id"] for m in made]
    product_id = made[0]["data"]["productSet"]["product"]["id"]
    gone = "gid://shopify/ProductVariant/999999"
    body = post(emu, NODES, {"ids": [*variant_ids, gone, product_id]}).json()
    nodes = body["data"]["nodes"]
    assert [n and n.get("sku") for n in nodes[:3]] == ["N-0", "N-1", "N-2"]
    assert nodes[0]["product"]["handle"] == "n0" and nodes[0]["price"] == "2.50"
    assert nodes[3] is None and nodes[4] == {"__typename": "Product"}  # no fields selected for Product
    # Per id: the dearest possible selection of the interface (variant 1 + product 1): 2 points.
    cost = assert_cost_extension(body)
    assert cost["requestedQueryCost"] == 5 * 2
    assert emu.stats.operations == {"productSet": 3, "nodes": 1}

    too_many = post(emu, NODES, {"ids": [gone] * 251}).json()
    assert too_many["errors"][0]["extensions"]["code"] == "BAD_REQUEST" and "250" in too_many["errors"][0]["message"]
    # A single query may not cost more than 1000 points, whatever the bucket holds.
    dear = "query($ids: [ID!]!) { nodes(ids: $ids) { ... on Product { id variants(first: 10) { nodes { id } } } } }"
    refused = post(emu, dear, {"ids": [product_id] * 100}).json()
    assert refused["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"


def test_product_variants_sort_by_sku_and_filter_by_date(emu: EmulatorHandle) -> None:
    for sku in ("C-3", "A-1", "B-2"):
        post(emu, SET, {"identifier": {"handle": sku.lower()}, "input": product_input(sku, "1", sku)})
    by_sku = post(emu, '{ productVariants(first: 5, sortKey: SKU) { nodes { sku } } }').json()
    assert [n["sku"] for n in by_sku["data"]["productVariants"]["nodes"]] == ["A-1", "B-2", "C-3"]
    by_id = post(emu, '{ productVariants(first: 5, reverse: true) { nodes { sku } } }').json()
    assert [n["sku"] for n in by_id["data"]["productVariants"]["nodes"]] == ["B-2", "A-1", "C-3"]
    future = post(emu, """{ productVariants(first: 5, query: "updated_at:>'2999-01-01T00:00:00Z'") { nodes { sku } } }""")
    past = post(emu, """{ productVariants(first: 5, query: "updated_at:<=2999-01-01 sku:B") { nodes { sku } } }""")
    assert future.json()["data"]["productVariants"]["nodes"] == []
    assert past.json()["data"]["productVariants"]["nodes"] == [{"sku": "B-2"}]


def test_variants_bulk_update_of_an_unknown_product(emu: EmulatorHandle) -> None:
    query = """mutation { productVariantsBulkUpdate(productId: "gid://shopify/Product/1", variants: [{price: "1"}]) {
        product { id } userErrors { field code message } } }"""
    errors = post(emu, query).json()["data"]["productVariantsBulkUpdate"]["userErrors"]
    assert errors == [{"field": ["productId"], "code": "PRODUCT_DOES_NOT_EXIST", "message": "Product does not exist"}]
