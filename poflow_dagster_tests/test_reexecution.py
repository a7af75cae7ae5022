"""Re-executing a failed PO run from failure finishes the PO without redoing or duplicating anything."""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.store.schema import LineItem, ProductDraft, PurchaseOrder, ShopifyProduct, StageMetric
from poflow_dagster.store.workflow import status_report


def po_job():
    return defs.resolve_job_def("po_job")


def test_reexecute_from_failure_completes_without_duplicates(home, db, shop, samples, monkeypatch, tmp_path):
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("po_uploads", [upload.id])
        monkeypatch.setenv("SHOPIFY_SHOP_URL", "http://127.0.0.1:9")  # Shopify down for the first run
        with dg.execute_job(
            dg.reconstructable(po_job), instance,
            tags={"dagster/partition": upload.id},
            run_config={"resources": {"shopify": {"config": {"max_attempts": 1}}}},
        ) as failed:
            assert not failed.success
        monkeypatch.setenv("SHOPIFY_SHOP_URL", shop.url)  # Shopify is back
        with dg.execute_job(
            dg.reconstructable(po_job), instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
            tags={"dagster/partition": upload.id},  # execute_job does not carry the parent's tags over
            run_config={"resources": {"shopify": {"config": {"max_attempts": 1}}}},
        ) as retried:
            assert retried.success
            executed = {e.step_key for e in retried.all_events if e.is_step_success}
    assert "purchase_order.ai_parsing" not in executed and "purchase_order.shopify_sync" in executed
    report = status_report(db, upload.id)
    assert report.workflow.status == "completed" and report.workflow.run_id == retried.run_id
    with db.session() as session:
        count = lambda model: session.scalar(sa.select(sa.func.count()).select_from(model))  # noqa: E731
        assert count(PurchaseOrder) == 1 and count(LineItem) == 5
        drafts = count(ProductDraft)
        assert count(ShopifyProduct) == drafts == shop.count_products()
        parsing_runs = session.scalar(sa.select(sa.func.count(StageMetric.id)).where(StageMetric.stage == "ai_parsing"))
    assert parsing_runs == 1  # finished work was not redone
