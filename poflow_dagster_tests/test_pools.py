"""Concurrency across runs: the op pools, the instance's pool and run-tag limits, and the tags runs carry."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.run_tags import (
    EMULATOR_SHOP,
    SHOP_TAG,
    WORKLOAD_TAG,
    run_concurrency_tags,
    upload_run_tags,
)
from poflow_dagster.pipeline.sensors import upload_sensor
from poflow_dagster.resources import DatabaseResource, StorageResource
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.workers.queues import QUEUE_TAG
from poflow_dagster.workers.run_queue import FastQueuedRunCoordinator

ROOT = Path(__file__).resolve().parents[1]
INSTANCE_FILES = [ROOT / "dagster.yaml", ROOT / "poflow_dagster" / "dagster_home.yaml",
                  ROOT / "deploy" / "dagster_home" / "dagster.yaml"]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def test_only_shopify_bound_ops_take_a_pool():
    pools = {op.name: op.pool for op in defs.resolve_job_def("po_job").graph.iterate_op_defs()}
    assert pools["shopify_sync"] == "shopify"
    # Parsing (deterministic for spreadsheets), saving, drafts and the status never wait for a pool slot.
    assert {name: pool for name, pool in pools.items() if pool} == {"shopify_sync": "shopify"}
    assert pools["image_attachment"] is None  # images (a step of po_job) take no pool either


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_instance_files_parse_with_pool_and_run_tag_limits(path: Path):
    settings = yaml.safe_load(path.read_text())
    settings.pop("storage", None)  # the production file's PostgreSQL storage: its server is not needed here
    with dg.instance_for_test(overrides=settings) as instance:
        config = instance.get_concurrency_config()
        pools = config.pool_config
        assert pools.pool_granularity is not None and pools.pool_granularity.value == "op"  # only the op waits
        assert pools.default_pool_limit and pools.default_pool_limit >= 1
        limits = config.run_queue_config.tag_concurrency_limits
        assert {"key": "poflow/kind", "value": "analytics", "limit": 1} in limits
        assert {"key": "poflow/kind", "value": "maintenance", "limit": 1} in limits
        per_shop = [lim for lim in limits if lim["key"] == SHOP_TAG]
        assert len(per_shop) == 1 and per_shop[0]["value"] == {"applyLimitPerUniqueValue": True}
        assert per_shop[0]["limit"] >= 1
        scans = [lim for lim in limits if lim["key"] == WORKLOAD_TAG]
        assert len(scans) == 1 and scans[0]["value"] == "scan" and scans[0]["limit"] >= 1
        assert config.run_queue_config.max_concurrent_runs >= scans[0]["limit"]
        # Queued runs are dequeued twice a second (Dagster's own coordinator takes whole seconds only).
        assert isinstance(instance.run_coordinator, FastQueuedRunCoordinator)
        assert instance.run_coordinator.dequeue_interval_seconds == 0.5
        assert instance.run_coordinator.dequeue_use_threads
        from dagster._daemon.controller import create_daemon_of_type

        assert create_daemon_of_type("QUEUED_RUN_COORDINATOR", instance).interval_seconds == 0.5  # the daemon's loop
        # The pool limit is applied to the shopify pool the first time a slot is claimed.
        instance.event_log_storage.initialize_concurrency_limit_to_default("shopify")
        assert instance.event_log_storage.get_concurrency_info("shopify").slot_count == pools.default_pool_limit


def test_the_shopify_pool_admits_no_more_than_its_limit():
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}}) as inst:
        storage = inst.event_log_storage
        storage.initialize_concurrency_limit_to_default("shopify")
        assert storage.claim_concurrency_slot("shopify", "run-a", "shopify_sync").is_claimed
        assert not storage.claim_concurrency_slot("shopify", "run-b", "shopify_sync").is_claimed  # waits
        storage.free_concurrency_slots_for_run("run-a")
        assert storage.claim_concurrency_slot("shopify", "run-b", "shopify_sync").is_claimed


def test_run_tags_tell_a_spreadsheet_from_a_scan(home, db, samples, tmp_path, monkeypatch):
    monkeypatch.delenv("SHOPIFY_SHOP_URL", raising=False)
    sheet = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    pdf = upload_file(db, home, "acme", samples["acme-supplies-po-1001.pdf"])
    photo = tmp_path / "supplier-order.dat"  # a photo whatever its name says: sniffed, not guessed
    photo.write_bytes(PNG)
    scan = upload_file(db, home, "acme", photo)

    assert run_concurrency_tags(db, sheet.id) == {SHOP_TAG: EMULATOR_SHOP, WORKLOAD_TAG: "sheet", QUEUE_TAG: "po-sheet"}
    assert run_concurrency_tags(db, pdf.id) == {SHOP_TAG: EMULATOR_SHOP, WORKLOAD_TAG: "scan", QUEUE_TAG: "po-scan"}
    assert run_concurrency_tags(db, scan.id)[WORKLOAD_TAG] == "scan"
    assert run_concurrency_tags(db, "up-no-such-upload") == {}

    # A merchant's own store is its tag value; the operator's SHOPIFY_SHOP_URL is the default store.
    monkeypatch.setenv("POFLOW_SHOPIFY_ALLOWED_HOSTS", "shop.test:8443")
    with db.session() as session:
        configure_merchant(session, "lumiere", shop_url="https://Lumiere-Paris.myshopify.com",
                           shopify_token_env="SHOPIFY_ACCESS_TOKEN")
    own = upload_file(db, home, "lumiere", samples["lumiere-commande-3003.xlsx"])
    assert run_concurrency_tags(db, own.id) == {SHOP_TAG: "lumiere-paris.myshopify.com", WORKLOAD_TAG: "sheet",
                                                QUEUE_TAG: "po-sheet"}
    monkeypatch.setenv("SHOPIFY_SHOP_URL", "https://shop.test:8443/")
    assert run_concurrency_tags(db, sheet.id)[SHOP_TAG] == "shop.test:8443"

    # Sync off: no Shopify calls, so no store tag and no waiting for a store's slots.
    with db.session() as session:
        configure_merchant(session, "acme", shopify_sync_enabled=False)
    assert run_concurrency_tags(db, sheet.id) == {WORKLOAD_TAG: "sheet", QUEUE_TAG: "po-sheet"}
    # Another deployment on the same broker keeps its runs on its own queues.
    monkeypatch.setenv("POFLOW_CELERY_QUEUE_PREFIX", "eu-")
    assert run_concurrency_tags(db, pdf.id)[QUEUE_TAG] == "eu-scan"
    # The same tags in the bulk form used by every submitter, beside merchant and file.
    both = upload_run_tags(db, [sheet.id, pdf.id])
    assert both[pdf.id][WORKLOAD_TAG] == "scan" and both[pdf.id]["poflow/file"] == "acme-supplies-po-1001.pdf"


def test_sensor_launched_runs_carry_the_concurrency_tags(home, db, instance, samples, monkeypatch):
    monkeypatch.delenv("SHOPIFY_SHOP_URL", raising=False)
    sheet = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    pdf = upload_file(db, home, "acme", samples["acme-supplies-po-1001.pdf"])
    context = dg.build_sensor_context(
        instance=instance,
        resources={"db": DatabaseResource(url=db.url), "storage": StorageResource(home=str(home))},
    )
    tags = {r.partition_key: r.tags for r in upload_sensor(context).run_requests}
    assert tags[sheet.id][WORKLOAD_TAG] == "sheet" and tags[pdf.id][WORKLOAD_TAG] == "scan"
    assert tags[sheet.id][SHOP_TAG] == tags[pdf.id][SHOP_TAG] == EMULATOR_SHOP
