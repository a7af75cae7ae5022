"""Bulk productSet (staged JSONL upload + bulkOperationRunMutation): the real client against the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from poflow_dagster.shopify.bulk import RUN_MUTATION, BulkLineErrors, bulk_product_set
from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, ShopifyUserError
from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator
from poflow_dagster.shopify.rate_budget import InProcessBudget

TOKEN = "shpat_bulk_test"
POLL = 0.02


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with start_emulator(access_token=TOKEN) as handle:
        yield handle


@pytest.fixture
def client(emulator: EmulatorHandle) -> Iterator[ShopifyClient]:
    with ShopifyClient(emulator.url, TOKEN, timeout=10.0, backoff_base=0.01,
                       budget=InProcessBudget(f"test:{emulator.url}")) as c:
        yield c


def specs(count: int, *, blank_title_at: int | None = None) -> list[ProductSpec]:
    return [
        ProductSpec(sku=f"BULK-{n}", title=" " if n == blank_title_at else f"Bulk {n}", price=Decimal(n) / 4,
                    handle=f"bulk-{n}", vendor="Acme", barcode=f"B{n}", unit_cost=Decimal("1.10"))
        for n in range(count)
    ]


def test_bulk_over_600_lines_maps_results_in_input_order_and_surfaces_the_failing_line(
    client: ShopifyClient, emulator: EmulatorHandle
) -> None:
    wanted = specs(650, blank_title_at=321)
    with pytest.raises(BulkLineErrors) as failed:
        bulk_product_set(client, wanted, poll_interval_s=POLL)
    assert set(failed.value.line_errors) == {321}
    assert failed.value.line_errors[321][0]["code"] == "BLANK"
    results = failed.value.results
    assert len(results) == 650 and results[321] is None
    assert all(r is not None and r.sku == s.sku and r.handle == s.handle and r.created
               for r, s in zip(results, wanted) if s.sku != "BULK-321")
    assert len({r.variant_gid for r in results if r is not None}) == 649
    assert emulator.count_products() == 649
    assert emulator.stats.operations.get("productSet", 0) == 0  # no per-product HTTP calls
    # The bucket paid stagedUploadsCreate (10) + bulkOperationRunMutation (10) + 1 point per poll, no more.
    assert client.stats.points == 20 + (client.stats.responses - 2) * 1


def test_bulk_result_carries_the_fields_and_reruns_update_in_place(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    first = bulk_product_set(client, specs(5), poll_interval_s=POLL)
    variants = {v.sku: v for v in client.catalog_page().variants}
    assert (variants["BULK-3"].barcode, variants["BULK-3"].unit_cost, variants["BULK-3"].vendor) == ("B3", Decimal("1.10"), "Acme")
    assert variants["BULK-3"].price == Decimal("0.75")
    again = bulk_product_set(client, specs(5), poll_interval_s=POLL,
                             known_product_gids={r.handle: r.product_gid for r in first})
    assert [r.product_gid for r in again] == [r.product_gid for r in first]
    assert not any(r.created for r in again)
    assert emulator.count_products() == 5
    current = client.execute("query { currentBulkOperation(type: MUTATION) { status objectCount url } }")
    assert current["currentBulkOperation"]["status"] == "COMPLETED"
    assert current["currentBulkOperation"]["objectCount"] == "5"
    lines = [json.loads(line) for line in httpx.get(current["currentBulkOperation"]["url"]).text.splitlines()]
    assert sorted(line["__lineNumber"] for line in lines) == [0, 1, 2, 3, 4]


STAGE = """
mutation { stagedUploadsCreate(input: [{resource: BULK_MUTATION_VARIABLES, filename: "x.jsonl",
  mimeType: "text/jsonl", httpMethod: POST}]) { stagedTargets { url parameters { name value } } userErrors { message } } }
"""


def _stage_and_upload(client: ShopifyClient, body: bytes) -> str:
    target = client.execute(STAGE)["stagedUploadsCreate"]["stagedTargets"][0]
    parameters = {p["name"]: p["value"] for p in target["parameters"]}
    response = httpx.post(target["url"], data=parameters, files={"file": ("x.jsonl", body, "text/jsonl")})
    assert response.status_code == 201
    return str(parameters["key"])


def test_bulk_run_refuses_unknown_files_bad_jsonl_and_bad_mutations(client: ShopifyClient, emulator: EmulatorHandle) -> None:
    mutation = "mutation M($input: ProductSetInput!) { productSet(input: $input) { product { id } } }"
    with pytest.raises(ShopifyUserError) as missing:
        client.execute(RUN_MUTATION, {"mutation": mutation, "path": "tmp/nowhere.jsonl"})
    assert missing.value.user_errors[0]["code"] == "NO_SUCH_FILE"
    bad_file = _stage_and_upload(client, b'{"input": {}}\nnot json\n')
    with pytest.raises(ShopifyUserError) as invalid:
        client.execute(RUN_MUTATION, {"mutation": mutation, "path": bad_file})
    assert invalid.value.user_errors[0]["code"] == "INVALID_STAGED_UPLOAD_FILE"
    good_file = _stage_and_upload(client, b'{"input": {"title": "x"}}\n')
    with pytest.raises(ShopifyUserError) as bad_mutation:
        client.execute(RUN_MUTATION, {"mutation": "mutation { nope }", "path": good_file})
    assert bad_mutation.value.user_errors[0]["code"] == "INVALID_MUTATION"
    refused = httpx.post(f"{emulator.url}/staged-uploads/", data={"key": "tmp/forged"},
                         files={"file": ("x.jsonl", b"{}", "text/jsonl")})
    assert refused.status_code == 403
