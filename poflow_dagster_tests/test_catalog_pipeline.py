"""Catalog matching in the real po_job: existing products are matched (their cost updated, no duplicate made),
ambiguous lines hold the PO for review until `poflow approve --match`, and the read-back check covers both."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

import sqlalchemy as sa

from poflow_dagster.catalog.store import catalog_candidates, learned_supplier_skus, line_matches_for_upload
from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.resources import ShopifyResource
from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, VariantUpdate, handle_for_sku
from poflow_dagster.verification import verify_upload
from poflow_dagster.store.schema import ShopifyProduct
from poflow_dagster.store.workflow import status_report

PO = """PO Number,PO-501
Supplier,Northwind Traders
sku,description,quantity,unit_cost,line_total
NW-100,Espresso Beans 1kg,4,12.50,50.00
NW-200,Green Tea 500g,2,7.25,14.50
NEW-1,Chai Spice 250g,3,4.00,12.00
"""


def _upload(home, db, tmp_path, po_number: str):
    """The test PO under ``po_number`` as an upload of merchant acme."""
    path = tmp_path / f"{po_number}.csv"
    path.write_text(PO.replace("PO-501", po_number))
    return upload_file(db, home, "acme", path)


def _existing(shop, specs: list[ProductSpec]) -> dict[str, str]:
    """Products the merchant already had in Shopify before poflow (not poflow's handles): SKU -> variant gid."""
    with ShopifyClient(shop.url, "test-token") as client:
        return {spec.sku: client.product_set(spec).variant_gid for spec in specs}


def _spec(sku: str, title: str, cost: str, handle: str, vendor: str = "Northwind Traders") -> ProductSpec:
    return ProductSpec(sku=sku, title=title, price=Decimal("30.00"), handle=handle, status="ACTIVE", vendor=vendor,
                       unit_cost=Decimal(cost))


def _costs(shop, gids: list[str]) -> dict[str, Decimal]:
    with ShopifyClient(shop.url, "test-token") as client:
        nodes = client.execute("query($ids: [ID!]!) { nodes(ids: $ids) { ... on ProductVariant { id "
                               "inventoryItem { unitCost { amount } } } } }", {"ids": gids})["nodes"]
    return {node["id"]: Decimal(node["inventoryItem"]["unitCost"]["amount"]) for node in nodes}


def test_existing_products_are_matched_and_their_cost_updated_not_duplicated(home, db, shop, instance, tmp_path):
    existing = _existing(shop, [_spec("NW-100", "Espresso Beans 1kg", "11.00", "espresso-beans"),
                                _spec("nw200", "Green Tea 500g", "7.25", "green-tea")])  # SKU written differently
    before = shop.count_products()
    upload = _upload(home, db, tmp_path, "PO-501")

    result = run_upload(defs, instance, db, upload.id, with_images=False)

    assert result.success and result.summary["status"] == "completed", result.error
    assert result.checks == {"po_saved_correctly": True, "shopify_matches_drafts": True}
    matches = {m.match.line_no: m.match for m in line_matches_for_upload(db, upload.id)}
    assert (matches[1].status, matches[1].method, matches[1].variant_gid) == ("matched", "sku", existing["NW-100"])
    assert (matches[2].status, matches[2].variant_gid) == ("matched", existing["nw200"])
    assert matches[3].status == "unmatched"
    assert shop.count_products() == before + 1  # only the new SKU became a product
    with db.session() as session:
        assert session.scalars(sa.select(ShopifyProduct.handle)).all() == [handle_for_sku("acme", "NEW-1")]
    assert _costs(shop, list(existing.values())) == {existing["NW-100"]: Decimal("12.50"),
                                                    existing["nw200"]: Decimal("7.25")}

    again = run_upload(defs, instance, db, upload.id, with_images=False)  # idempotent: nothing new, nothing changed
    assert again.success and all(again.checks.values())
    assert shop.count_products() == before + 1
    assert _sync_metadata(instance, again.run_id)["variant_cost_updates"] == 0

    # Someone changes a matched variant's cost in Shopify: the read-back check says so.
    [variant] = catalog_candidates(db, "acme", _shop_url(db, upload.id), variant_gids=[existing["NW-100"]])
    with ShopifyClient(shop.url, "test-token") as client:
        client.update_variants(variant.product_gid, [VariantUpdate(variant_gid=existing["NW-100"],
                                                                   unit_cost=Decimal("1.00"))])
    verdict = verify_upload(db, upload.id, ShopifyResource(), held_for_review=False)
    assert verdict.status == "failed" and any("cost differs" in p for p in verdict.problems), verdict


def _sync_metadata(instance, run_id: str) -> dict:
    """The shopify_sync step's output metadata of a run."""
    import dagster as dg

    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event.step_key.endswith("shopify_sync"):
            return {key: value.value for key, value in event.step_output_data.metadata.items()}
    raise AssertionError("no shopify_sync output in the run")


def _ambiguous_upload(home, db, shop, tmp_path, po_number: str):
    """Two existing products share SKU NW-100 (line 1 of the PO): (their variant gids, the upload)."""
    one = _existing(shop, [_spec("NW-100", "Espresso Beans 1kg", "11.00", "espresso-a")])["NW-100"]
    two = _existing(shop, [_spec("NW-100", "Espresso Beans 1kg (old)", "11.00", "espresso-b")])["NW-100"]
    return one, two, _upload(home, db, tmp_path, po_number)


def test_an_ambiguous_line_holds_the_po_until_a_person_picks(home, db, shop, instance, tmp_path):
    one, two, upload = _ambiguous_upload(home, db, shop, tmp_path, "PO-502")

    first = run_upload(defs, instance, db, upload.id, with_images=False)

    assert first.success and first.summary["status"] == "needs_review"
    report = status_report(db, upload.id)
    assert "AMBIGUOUS_MATCH: line 1" in report.workflow.error_message
    assert one in report.workflow.error_message and two in report.workflow.error_message
    products_before = shop.count_products()

    env = {**os.environ, "POFLOW_DATABASE_URL": db.url}
    picked = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "approve", upload.id, "--match",
                             f"1={two}", "--by", "buyer@acme"], capture_output=True, text=True, env=env, timeout=120)
    assert picked.returncode == 0, picked.stderr
    bad = subprocess.run([sys.executable, "-m", "poflow_dagster.cli", "approve", upload.id, "--match", "1=nope"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: invalid_match: ")

    second = run_upload(defs, instance, db, upload.id, with_images=False)

    assert second.success and second.summary["status"] == "completed", second.error
    assert all(second.checks.values())
    matches = {m.match.line_no: m for m in line_matches_for_upload(db, upload.id)}
    assert (matches[1].match.status, matches[1].match.variant_gid, matches[1].decided_by) == \
        ("approved", two, "buyer@acme")
    assert _costs(shop, [one, two]) == {one: Decimal("11.00"), two: Decimal("12.50")}  # only the pick changed
    assert shop.count_products() == products_before + 2  # NW-200 and NEW-1 are new here; NW-100 is the pick
    learned = learned_supplier_skus(db, "acme", _shop_url(db, upload.id), "Northwind Traders")
    assert two in learned.values()  # the next PO of this supplier matches NW-100 by supplier SKU


def _shop_url(db, upload_id: str) -> str:
    from poflow_dagster.store.schema import CatalogVariantRow, LineMatchRow

    with db.session() as session:
        gid = session.scalar(sa.select(LineMatchRow.variant_gid).where(LineMatchRow.upload_id == upload_id,
                                                                       LineMatchRow.variant_gid.is_not(None)))
        return session.scalar(sa.select(CatalogVariantRow.shop_url).where(CatalogVariantRow.variant_gid == gid))


def test_the_dry_run_diff_says_what_would_change_and_writes_nothing(home, db, shop, instance, tmp_path):
    from poflow_dagster.shopify_diff import shopify_diff
    from poflow_dagster.store.uploads import merchant_for_upload

    one, two, upload = _ambiguous_upload(home, db, shop, tmp_path, "PO-503")
    held = run_upload(defs, instance, db, upload.id, with_images=False)
    assert held.summary["status"] == "needs_review"
    mutations = {"productSet", "productVariantsBulkUpdate", "inventoryAdjustQuantities", "metafieldsSet"}
    before = {k: v for k, v in shop.stats.operations.items() if k in mutations}
    merchant = merchant_for_upload(db, upload.id)
    shop_url = _shop_url_of_merchant(db)

    with ShopifyClient(shop.url, "test-token") as client:
        diff = shopify_diff(db, client, merchant, shop_url, upload.id)

    assert {k: v for k, v in shop.stats.operations.items() if k in mutations} == before  # nothing written
    assert [(p.action, p.sku) for p in diff.products] == [("create", "NW-200"), ("create", "NEW-1")]
    assert [(c.field, c.old) for c in diff.products[0].changes] == [("title", None), ("price", None), ("status", None)]
    assert diff.matched == [] and len(diff.awaiting_pick) == 1 and "AMBIGUOUS_MATCH: line 1" in diff.awaiting_pick[0]
    assert one in diff.awaiting_pick[0] and two in diff.awaiting_pick[0]
    # After the reviewer's pick, the diff shows that variant's cost change, field by field.
    from poflow_dagster.catalog.store import approve_match

    approve_match(db, upload.id, 1, two, "buyer@acme")
    with ShopifyClient(shop.url, "test-token") as client:
        picked = shopify_diff(db, client, merchant, shop_url, upload.id)
    [matched] = picked.matched
    assert (matched.action, matched.sku, matched.target) == ("update", "NW-100", two)
    assert [(c.field, c.old, c.new) for c in matched.changes] == [("cost", "11.00", "12.50")]
    assert picked.awaiting_pick == [] and [p.sku for p in picked.products] == ["NW-200", "NEW-1"]


def _shop_url_of_merchant(db) -> str:
    from poflow_dagster.store.schema import CatalogVariantRow

    with db.session() as session:
        return session.scalar(sa.select(CatalogVariantRow.shop_url).limit(1))


def test_shopify_diff_command_prints_the_plan_and_refuses_an_undrafted_upload(home, db, shop, instance, tmp_path):
    _existing(shop, [_spec("NW-100", "Espresso Beans 1kg", "11.00", "espresso-beans")])
    upload = _upload(home, db, tmp_path, "PO-504")
    env = {**os.environ, "POFLOW_DATABASE_URL": db.url}
    command = [sys.executable, "-m", "poflow_dagster.cli", "shopify", "diff", upload.id]
    early = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert early.returncode == 2 and early.stderr.startswith("error: not_drafted: "), early.stderr
    assert run_upload(defs, instance, db, upload.id, with_images=False).success

    shown = subprocess.run([*command, "--format", "json"], capture_output=True, text=True, env=env, timeout=120)

    assert shown.returncode == 0, shown.stderr
    import json

    plan = json.loads(shown.stdout)
    assert [(p["action"], p["sku"]) for p in plan["products"]] == [("unchanged", "NW-200"), ("unchanged", "NEW-1")]
    assert [(p["action"], p["sku"]) for p in plan["matched"]] == [("unchanged", "NW-100")]  # cost already 12.50
    text = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert text.returncode == 0 and "0 to create, 0 to update, 0 variant costs to change" in text.stdout


def test_a_merchant_receiving_stock_gets_each_ordered_unit_once_at_sync(home, db, shop, instance, tmp_path):
    from poflow_dagster.catalog.store import catalog_candidates
    from poflow_dagster.store.merchants import configure_merchant

    existing = _existing(shop, [_spec("NW-100", "Espresso Beans 1kg", "11.00", "espresso-beans")])["NW-100"]
    with ShopifyClient(shop.url, "test-token") as client:
        location = client.locations()[0].gid
    with db.session() as session:
        configure_merchant(session, "acme", receive_stock=True, stock_location_gid=location, receive_on="sync")
    upload = _upload(home, db, tmp_path, "PO-505")

    first = run_upload(defs, instance, db, upload.id, with_images=False)
    assert first.success and first.summary["status"] == "completed", first.error
    assert _sync_metadata(instance, first.run_id)["stock_receipts"] == 3

    shop_url = _shop_url(db, upload.id)
    [matched] = catalog_candidates(db, "acme", shop_url, variant_gids=[existing])  # filled, no new product made

    def available() -> int:
        with ShopifyClient(shop.url, "test-token") as client:
            return client.inventory_levels([matched.inventory_item_gid], location)[matched.inventory_item_gid].available

    assert available() == 4
    again = run_upload(defs, instance, db, upload.id, with_images=False)  # a re-run receives nothing twice
    assert again.success and available() == 4


def test_the_read_back_check_reports_receipts_shopify_refused(home, db, shop, instance, tmp_path):
    from poflow_dagster.store.merchants import configure_merchant

    back_room = shop.add_location("Back room")  # nothing is stocked there: every receipt is refused
    with db.session() as session:
        configure_merchant(session, "acme", receive_stock=True, stock_location_gid=back_room, receive_on="sync")
    upload = _upload(home, db, tmp_path, "PO-506")

    result = run_upload(defs, instance, db, upload.id, with_images=False)

    assert result.summary["status"] == "completed"  # the PO itself is done; its stock is not
    assert result.checks["shopify_matches_drafts"] is False
    verdict = verify_upload(db, upload.id, ShopifyResource(), held_for_review=False)
    assert verdict.status == "failed" and len([p for p in verdict.problems if "receipt of" in p]) == 3, verdict


def test_products_poflow_made_are_never_taken_for_the_existing_catalog(home, db, shop, instance, tmp_path):
    """Several merchants share the bundled emulator, and a concurrent run may not have recorded its links yet: a
    product whose handle is poflow's for one of the shop's merchants is not matched (no AMBIGUOUS_MATCH, no cost
    update of another merchant's product); every merchant gets its own products."""
    from poflow_dagster.store.merchants import configure_merchant

    with db.session() as session:
        configure_merchant(session, "other")
    # "other"'s run created these and has not recorded them yet (the race), or they are simply another merchant's.
    _existing(shop, [_spec("NW-100", "Espresso Beans 1kg", "11.00", handle_for_sku("other", "NW-100")),
                     _spec("NW-100", "Espresso Beans 1kg", "11.00", handle_for_sku("acme", "NW-100"))])
    upload = _upload(home, db, tmp_path, "PO-507")

    result = run_upload(defs, instance, db, upload.id, with_images=False)

    assert result.success and result.summary["status"] == "completed", result.error
    assert {m.match.status for m in line_matches_for_upload(db, upload.id)} == {"unmatched"}
    assert all(result.checks.values())
