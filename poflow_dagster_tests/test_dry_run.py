"""``dry_run`` of the PO job's Shopify stage on the emulator (SQLite and PostgreSQL): the diff in the step's metadata,
not one mutation sent, nothing recorded as synced or received, a PO never synced held (DRY_RUN) until a later normal
run syncs it; a completed PO stays completed."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg
import sqlalchemy as sa

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, handle_for_sku
from poflow_dagster.shopify.emulator import _build_schema
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.schema import ShopifyProduct, StockReceipt
from poflow_dagster.store.uploads import mark_run_requested
from poflow_dagster.store.workflow import status_report

PO = """PO Number,PO-DRY-1
Supplier,Northwind Traders
sku,description,quantity,unit_cost,line_total
NW-100,Espresso Beans 1kg,4,12.50,50.00
NEW-1,Chai Spice 250g,3,4.00,12.00
NEW-2,Rooibos 100g,2,3.00,6.00
"""

DRY_RUN_CONFIG = {"ops": {"purchase_order": {"ops": {"shopify_sync": {"config": {"dry_run": True}}}}},
                  "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
#: Every mutation the emulator knows (Shopify's writes): none may be sent by a dry run.
MUTATIONS = frozenset(_build_schema().mutation_type.fields)


def _mutations(shop) -> int:
    return sum(count for name, count in shop.stats.operations.items() if name in MUTATIONS)


def _dry_run(instance, db, upload_id: str) -> dg.ExecuteInProcessResult:
    """``po_job`` for the upload with ``dry_run`` on (as ``run_upload`` runs it, plus the run config)."""
    if not instance.has_dynamic_partition(po_uploads.name, upload_id):
        instance.add_dynamic_partitions(po_uploads.name, [upload_id])
    mark_run_requested(db, upload_id)
    return defs.resolve_job_def("po_job").execute_in_process(
        partition_key=upload_id, instance=instance, run_config=DRY_RUN_CONFIG, raise_on_error=False)


def _sync_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = [e for e in result.all_events if e.is_successful_output and e.step_key.endswith("shopify_sync")]
    return {key: value.value for key, value in event.event_specific_data.metadata.items()}


def _cost(shop, variant_gid: str) -> Decimal:
    with ShopifyClient(shop.url, "test-token") as client:
        [node] = client.execute("query($ids: [ID!]!) { nodes(ids: $ids) { ... on ProductVariant { "
                                "inventoryItem { unitCost { amount } } } } }", {"ids": [variant_gid]})["nodes"]
    return Decimal(node["inventoryItem"]["unitCost"]["amount"])


def _rows(db, model) -> int:
    with db.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model))


def test_dry_run_writes_nothing_to_shopify_then_a_normal_run_syncs(home, db, shop, instance, tmp_path):
    with ShopifyClient(shop.url, "test-token") as client:  # the merchant's own product: line 1 matches it
        existing = client.product_set(ProductSpec(
            sku="NW-100", title="Espresso Beans 1kg", price=Decimal("30.00"), handle="espresso", status="ACTIVE",
            vendor="Northwind Traders", unit_cost=Decimal("11.00"))).variant_gid
        location = client.locations()[0].gid
    with db.session() as session:
        configure_merchant(session, "acme", receive_stock=True, stock_location_gid=location, receive_on="sync")
    path = tmp_path / "po.csv"
    path.write_text(PO)
    upload = upload_file(db, home, "acme", path)
    products, mutations = shop.count_products(), _mutations(shop)

    result = _dry_run(instance, db, upload.id)

    assert result.success
    assert _mutations(shop) == mutations  # not one write reached Shopify
    assert shop.count_products() == products and _cost(shop, existing) == Decimal("11.00")
    assert _rows(db, ShopifyProduct) == 0 and _rows(db, StockReceipt) == 0
    meta = _sync_metadata(result)
    assert meta["dry_run"] is True and meta["outcome"] == "skipped"
    assert (meta["products_to_create"], meta["variants_to_update"]) == (2, 1)
    assert "| create | product | NEW-1 |" in meta["diff"] and "cost: 11.00 → 12.50" in meta["diff"]
    assert meta["diff_json"]["matched"][0]["target"] == existing
    # The matching is not recorded in a dry run; the receipts still say where each line's units would go.
    assert [(r["line_no"], r["variant"], r["quantity"]) for r in meta["diff_json"]["receipts"]] == [
        (1, existing, "4"), (2, f"new product {handle_for_sku('acme', 'NEW-1')}", "3"),
        (3, f"new product {handle_for_sku('acme', 'NEW-2')}", "2")]
    assert meta["units_to_receive"] == 9 and f"| 1 | 4 | {existing} |" in meta["diff"]
    report = status_report(db, upload.id)
    assert (report.upload.status, report.workflow.status) == ("needs_review", "needs_review")  # never completed
    assert report.workflow.error_message.startswith("DRY_RUN: nothing was written to Shopify")
    assert result.output_for_node("purchase_order")["shopify_sync"] == "held_for_review"
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"po_saved_correctly": True, "shopify_matches_drafts": True}  # skipped: nothing synced yet

    synced = run_upload(defs, instance, db, upload.id, with_images=False)  # a normal run (no config)

    assert synced.success and synced.summary["status"] == "completed", synced.error
    assert all(synced.checks.values())
    assert shop.count_products() == products + 2 and _cost(shop, existing) == Decimal("12.50")
    assert _rows(db, ShopifyProduct) == 2 and _rows(db, StockReceipt) == 3  # every line received once
    assert status_report(db, upload.id).workflow.status == "completed"


def test_dry_run_of_a_po_with_error_issues_shows_the_diff_and_keeps_them(home, db, shop, instance, tmp_path):
    path = tmp_path / "po.csv"
    path.write_text(PO.replace("NEW-2,Rooibos 100g,2,3.00,6.00", "NEW-2,Rooibos 100g,2,3.00,9.99"))  # wrong total
    upload = upload_file(db, home, "acme", path)
    mutations = _mutations(shop)

    result = _dry_run(instance, db, upload.id)

    assert result.success and _mutations(shop) == mutations
    assert _sync_metadata(result)["products_to_create"] == 3
    message = status_report(db, upload.id).workflow.error_message
    assert message.startswith("DRY_RUN: ") and "LINE_AMOUNT_MISMATCH" in message


def test_dry_run_config_shows_in_the_launchpad_with_a_description():
    config = defs.resolve_job_def("po_job").run_config_schema.config_type.fields["ops"].config_type
    sync = config.fields["purchase_order"].config_type.fields["ops"].config_type.fields["shopify_sync"]
    field = sync.config_type.fields["config"].config_type.fields["dry_run"]
    assert field.default_value is False and "write nothing to Shopify" in field.description


def test_dry_run_of_a_completed_po_leaves_it_completed(home, db, shop, instance, tmp_path):
    with ShopifyClient(shop.url, "test-token") as client:
        location = client.locations()[0].gid
    with db.session() as session:
        configure_merchant(session, "acme", receive_stock=True, stock_location_gid=location, receive_on="sync")
    path = tmp_path / "po.csv"
    path.write_text(PO)
    upload = upload_file(db, home, "acme", path)
    synced = run_upload(defs, instance, db, upload.id, with_images=False)
    assert synced.summary["status"] == "completed", synced.error
    products, mutations, receipts = shop.count_products(), _mutations(shop), _rows(db, StockReceipt)

    for _ in range(2):  # a second dry run still sees the PO completed
        result = _dry_run(instance, db, upload.id)

        assert result.success and _mutations(shop) == mutations and shop.count_products() == products
        report = status_report(db, upload.id)
        assert (report.upload.status, report.workflow.status) == ("completed", "completed")
        assert report.workflow.error_message is None  # no DRY_RUN reason
        meta = _sync_metadata(result)
        assert meta["dry_run"] is True and meta["products_to_update"] == 0 and meta["products_unchanged"] == 3
        assert "dry run: nothing was written to Shopify; the PO was completed before" in meta["notes"]
        assert meta["diff_json"]["receipts"] == [] and meta["units_to_receive"] == 0  # received once, at its sync
        assert result.output_for_node("purchase_order")["status"] == "completed"
    assert _rows(db, StockReceipt) == receipts


def test_dry_run_after_a_held_run_keeps_the_po_held(home, db, shop, instance, tmp_path):
    path = tmp_path / "po.csv"
    path.write_text(PO.replace("NEW-2,Rooibos 100g,2,3.00,6.00", "NEW-2,Rooibos 100g,2,3.00,9.99"))  # wrong total
    upload = upload_file(db, home, "acme", path)
    held = run_upload(defs, instance, db, upload.id, with_images=False)  # never synced: held for review
    assert held.summary["status"] == "needs_review"

    result = _dry_run(instance, db, upload.id)

    assert result.success and _sync_metadata(result)["dry_run"] is True
    report = status_report(db, upload.id)
    assert (report.upload.status, report.workflow.status) == ("needs_review", "needs_review")
    assert report.workflow.error_message.startswith("DRY_RUN: ")
