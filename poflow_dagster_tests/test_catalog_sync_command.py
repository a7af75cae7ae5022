"""Catalog sync outside PO runs: ``poflow catalog sync`` as users run it, ``catalog_sync_job`` and its schedules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from poflow_dagster.catalog.store import catalog_candidates
from poflow_dagster.catalog.sync import sync_state
from poflow_dagster.shopify.client import ShopifyClient, handle_for_sku
from poflow_dagster.shopify.connection import TOKEN_ENV_PREFIX
from poflow_dagster.store.merchants import ensure_merchant
from poflow_dagster.store.schema import Merchant

from .test_shopify_catalog import SEED_MUTATION, seed_product

POFLOW = [sys.executable, "-m", "poflow_dagster.cli"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(POFLOW + args, capture_output=True, text=True, env=dict(os.environ), timeout=120)


@pytest.fixture
def merchants(db, shop) -> ShopifyClient:  # type: ignore[no-untyped-def]
    """Merchants m1, m2 (sync on) and m3 (sync off) on the emulator shop, with two products of the shop's own
    and one poflow made for m1 (not "the existing catalog")."""
    with db.session() as session:
        for merchant_id in ("m1", "m2", "m3"):
            ensure_merchant(session, merchant_id)
        session.get(Merchant, "m3").shopify_sync_enabled = False
    with ShopifyClient(shop.url, "test-token") as client:
        seed_product(client, "oil", 2)
        seed_product(client, "salt", 1)
        client.execute(SEED_MUTATION, {"identifier": {"handle": handle_for_sku("m1", "OWN-1")}, "input": {
            "title": "Made by poflow", "vendor": "Acme", "productOptions": [{"name": "Title", "values": [
                {"name": "Default Title"}]}],
            "variants": [{"optionValues": [{"optionName": "Title", "name": "Default Title"}], "sku": "OWN-1",
                          "price": "1.00"}]}})
        yield client


def test_catalog_sync_command_syncs_one_merchant_then_incrementally(  # type: ignore[no-untyped-def]
    home, db, shop, merchants,
) -> None:
    first = _run(["catalog", "sync", "m1", "--format", "json"])
    assert first.returncode == 0, first.stderr
    (data,) = json.loads(first.stdout)
    assert (data["merchant"], data["shop_url"], data["full"], data["complete"]) == ("m1", shop.url, True, True)
    assert (data["pages"], data["variants"], data["deleted"]) == (1, 3, 0) and data["cursor"]
    assert sorted(v.sku for v in catalog_candidates(db, "m1", shop.url, vendor_key="acme")) == [
        "oil-1", "oil-2", "salt-1"]  # poflow's own product left out
    assert sync_state(db, "m2", shop.url) is None  # only the merchant asked for

    again = _run(["catalog", "sync", "m1"])
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"m1 {shop.url}: ") and "complete" in again.stdout and "(full)" not in again.stdout


def test_catalog_sync_all_and_full(home, db, shop, merchants) -> None:  # type: ignore[no-untyped-def]
    done = _run(["catalog", "sync", "--all", "--full", "--format", "json"])
    assert done.returncode == 0, done.stderr
    assert [(d["merchant"], d["full"], d["complete"]) for d in json.loads(done.stdout)] == [
        ("m1", True, True), ("m2", True, True)]  # m3 has Shopify sync off
    assert sync_state(db, "m3", shop.url) is None


@pytest.mark.parametrize("args, code", [
    (["catalog", "sync"], "bad_arguments"),
    (["catalog", "sync", "m1", "--all"], "bad_arguments"),
    (["catalog", "sync", "nobody"], "unknown_merchant"),
    (["catalog", "sync", "m3"], "sync_off"),
])
def test_catalog_sync_errors_are_one_line_with_a_code(  # type: ignore[no-untyped-def]
    home, db, shop, merchants, args, code,
) -> None:
    result = _run(args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {code}: ") and result.stderr.count("\n") == 1


def test_a_failing_shop_is_reported_and_the_other_merchants_still_sync(  # type: ignore[no-untyped-def]
    db, shop, merchants,
) -> None:
    from poflow_dagster.catalog.shop_catalog import merchants_to_sync, sync_merchants
    from poflow_dagster.resources import ShopifyResource

    with db.session() as session:  # m1's own shop, whose token variable is not set
        m1 = session.get(Merchant, "m1")
        m1.shop_url, m1.shopify_token_env = "https://m1-shop.myshopify.com", TOKEN_ENV_PREFIX + "M1_UNSET"
    shops = ShopifyResource(shop_url=shop.url, access_token="test-token", max_attempts=1)
    done = sync_merchants(db, shops, merchants_to_sync(db))
    assert [(d.merchant_id, d.error.code if d.error else None) for d in done] == [
        ("m1", "shopify_token_missing"), ("m2", None)]
    assert done[1].result.complete and done[0].to_json()["error"]["code"] == "shopify_token_missing"


def test_catalog_sync_job_syncs_every_merchant_with_sync_on(  # type: ignore[no-untyped-def]
    home, db, shop, merchants,
) -> None:
    from poflow_dagster.pipeline.catalog_sync import catalog_sync_job
    from poflow_dagster.resources import DatabaseResource, ShopifyResource

    resources = {"db": DatabaseResource(url=db.url), "shopify": ShopifyResource()}
    result = catalog_sync_job.execute_in_process(resources=resources, run_config={
        "ops": {"sync_catalogs": {"config": {"full": True}}}})
    assert result.success and result.output_for_node("sync_catalogs") == {"merchants": 2, "full": True}
    for merchant_id in ("m1", "m2"):
        assert sync_state(db, merchant_id, shop.url).last_full_sync_at is not None
    assert sync_state(db, "m3", shop.url) is None


def test_schedules_ask_hourly_incremental_and_nightly_full_runs_and_skip_while_one_runs(  # type: ignore
    instance,
) -> None:
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    from poflow_dagster.definitions import defs
    from poflow_dagster.pipeline.catalog_sync import PASS_TAG, catalog_full_sync_schedule, catalog_sync_schedule

    by_name = {s.name: s for s in defs.schedules}
    assert by_name["catalog_sync_schedule"].cron_schedule == "23 * * * *"
    assert by_name["catalog_full_sync_schedule"].cron_schedule == "53 2 * * *"
    assert all(by_name[n].default_status == dg.DefaultScheduleStatus.RUNNING and by_name[n].job_name ==
               "catalog_sync_job" for n in ("catalog_sync_schedule", "catalog_full_sync_schedule"))

    def requests(schedule):
        return schedule.evaluate_tick(dg.build_schedule_context(instance=instance))

    (hourly,) = requests(catalog_sync_schedule).run_requests
    (nightly,) = requests(catalog_full_sync_schedule).run_requests
    assert hourly.run_config["ops"]["sync_catalogs"]["config"] == {"full": False}
    assert nightly.run_config["ops"]["sync_catalogs"]["config"] == {"full": True}
    assert (hourly.tags[PASS_TAG], nightly.tags[PASS_TAG]) == ("incremental", "full")

    instance.add_run(DagsterRun(job_name="catalog_sync_job", run_id="a" * 8 + "-0000-0000-0000-000000000000",
                                status=DagsterRunStatus.STARTED, tags={PASS_TAG: "incremental"}))
    skipped = requests(catalog_sync_schedule)
    assert not skipped.run_requests and "not finished" in skipped.skip_message
    assert len(requests(catalog_full_sync_schedule).run_requests) == 1  # the nightly full pass is not held up


def test_definitions_register_the_catalog_sync_job() -> None:
    from poflow_dagster.definitions import defs

    job = defs.resolve_job_def("catalog_sync_job")
    assert job.executor_def.name == "in_process"
    assert [node.name for node in job.graph.nodes] == ["sync_catalogs"]
