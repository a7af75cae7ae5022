"""Price updates of matched existing variants are opt-in per merchant (``update_price``): off, a sync sets cost
only and never touches price; on, cost and the PO's price (unit cost with the markup) go in one bulk update, once,
and the read-back check verifies both. Runs the real po_job against the emulator on both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

from poflow_dagster.catalog.store import catalog_candidates
from poflow_dagster.definitions import defs
from poflow_dagster.domain.drafts import retail_price
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.resources import ShopifyResource
from poflow_dagster.shopify.client import ShopifyClient, VariantUpdate
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.verification import verify_upload

from .test_catalog_pipeline import _existing, _shop_url, _spec, _sync_metadata, _upload

PRICE_QUERY = "query($ids: [ID!]!) { nodes(ids: $ids) { ... on ProductVariant { id price } } }"


def _prices(shop, gids: list[str]) -> dict[str, Decimal]:
    with ShopifyClient(shop.url, "test-token") as client:
        return {node["id"]: Decimal(node["price"]) for node in client.execute(PRICE_QUERY, {"ids": gids})["nodes"]}


def _set(db, **settings) -> None:
    with db.session() as session:
        configure_merchant(session, "acme", markup_percent=Decimal(40), **settings)


def test_without_the_opt_in_price_is_never_touched(home, db, shop, instance, tmp_path):
    gid = _existing(shop, [_spec("NW-100", "Espresso Beans 1kg", "11.00", "espresso-beans")])["NW-100"]
    _set(db)
    upload = _upload(home, db, tmp_path, "PO-601")

    result = run_upload(defs, instance, db, upload.id, with_images=False)

    assert result.success and all(result.checks.values()), result.error
    assert _prices(shop, [gid]) == {gid: Decimal("30.00")}  # cost went to 12.50, price stayed
    assert _sync_metadata(instance, result.run_id)["variant_cost_updates"] == 1
    [variant] = catalog_candidates(db, "acme", _shop_url(db, upload.id), variant_gids=[gid])
    with ShopifyClient(shop.url, "test-token") as client:  # someone reprices it: not poflow's business
        client.update_variants(variant.product_gid, [VariantUpdate(variant_gid=gid, price=Decimal("33.00"))])
    assert verify_upload(db, upload.id, ShopifyResource(), held_for_review=False).status == "passed"


def test_with_the_opt_in_cost_and_price_are_set_once_and_checked(home, db, shop, instance, tmp_path):
    gid = _existing(shop, [_spec("NW-100", "Espresso Beans 1kg", "11.00", "espresso-beans")])["NW-100"]
    _set(db, update_price=True)
    upload = _upload(home, db, tmp_path, "PO-602")
    updates = shop.stats.operations.get("productVariantsBulkUpdate", 0)

    result = run_upload(defs, instance, db, upload.id, with_images=False)

    assert result.success and all(result.checks.values()), result.error
    price = retail_price(Decimal("12.50"), Decimal(40))
    assert price == Decimal("17.50") and _prices(shop, [gid]) == {gid: price}
    assert shop.stats.operations["productVariantsBulkUpdate"] == updates + 1  # cost and price in one call
    shop_url = _shop_url(db, upload.id)
    [variant] = catalog_candidates(db, "acme", shop_url, variant_gids=[gid])
    assert (variant.price, variant.unit_cost) == (price, Decimal("12.50"))  # the local copy follows

    again = run_upload(defs, instance, db, upload.id, with_images=False)
    assert again.success and _sync_metadata(instance, again.run_id)["variant_cost_updates"] == 0

    with ShopifyClient(shop.url, "test-token") as client:
        client.update_variants(variant.product_gid, [VariantUpdate(variant_gid=gid, price=Decimal("33.00"))])
    verdict = verify_upload(db, upload.id, ShopifyResource(), held_for_review=False)
    assert verdict.status == "failed" and verdict.problems == [
        f"matched variant {gid}: price differs (expected 17.50, Shopify has 33.00)"], verdict

    env = {**os.environ, "POFLOW_DATABASE_URL": db.url}  # the dry run shows the price change it would make
    shown = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "shopify", "diff", upload.id, "--format",
                            "json"], capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    [matched] = json.loads(shown.stdout)["matched"]
    assert (matched["action"], matched["changes"]) == ("update", [{"field": "price", "old": "33.00", "new": "17.50"}])


def test_the_diff_of_a_manual_merchant_says_received_manually(home, db, shop, instance, tmp_path):
    with ShopifyClient(shop.url, "test-token") as client:
        location = client.locations()[0].gid
    _set(db, receive_stock=True, stock_location_gid=location)  # receive on: manual
    upload = _upload(home, db, tmp_path, "PO-603")
    result = run_upload(defs, instance, db, upload.id, with_images=False)
    assert result.success and all(result.checks.values()), result.error  # nothing received is no mismatch
    assert "stock_receipts" not in _sync_metadata(instance, result.run_id)

    env = {**os.environ, "POFLOW_DATABASE_URL": db.url}
    command = [sys.executable, "-m", "poflow_dagster.cli"]
    part = subprocess.run([*command, "receive", upload.id, "--line", "1", "--qty", "3"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert part.returncode == 0, part.stderr
    shown = subprocess.run([*command, "shopify", "diff", upload.id], capture_output=True, text=True, env=env,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "line 1: received manually, not at sync (3 of 4 received so far)" in shown.stdout
    assert "line 2: received manually, not at sync (0 of 2 received so far)" in shown.stdout
    assert "  receive   line" not in shown.stdout
    assert verify_upload(db, upload.id, ShopifyResource(), held_for_review=False).status == "passed"
