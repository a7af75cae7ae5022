"""publish_drafts above the bulk threshold: one bulk productSet, the same links and products as the direct path,
refused lines retried directly, a busy shop waited for or bypassed, re-runs that never duplicate a product."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import update

from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.shopify import bulk
from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, SyncedProduct
from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator
from poflow_dagster.shopify.publish import ShopifyLink, publish_drafts, recorded_links, verify_published
from poflow_dagster.shopify.rate_budget import InProcessBudget
from poflow_dagster.shopify.sync import ProductsNotSynced, sync_products_in_bulk
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import DraftRecord, create_drafts_for_po
from poflow_dagster.store.purchase_orders import save_purchase_order
from poflow_dagster.store.schema import ProductDraft
from poflow_dagster.store.uploads import StoredFile, register_upload

TOKEN = "shpat_bulk_publish"
POLL = 0.02
MERCHANT = "bulky"


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with start_emulator(access_token=TOKEN) as handle:
        yield handle


def _client(emulator: EmulatorHandle, api_version: str | None = None) -> ShopifyClient:
    extra = {"api_version": api_version} if api_version else {}
    return ShopifyClient(emulator.url, TOKEN, timeout=10.0, backoff_base=0.01,
                         budget=InProcessBudget(f"test:{emulator.url}:{secrets.token_hex(4)}"), **extra)


def _drafts(db: Database, lines: int) -> list[DraftRecord]:
    """The drafts of one PO of ``lines`` distinct SKUs."""
    po = ParsedPO(
        po_number="BULK-PO", supplier_name="Bulk Supply", currency="USD", source_format="csv", extractor="test",
        lines=[POLine(line_no=n, sku=f"BP-{n:03d}", description=f"Bulk item {n}", quantity=Decimal(2),
                      unit_cost=Decimal(n) + Decimal("0.50"), line_total=2 * (Decimal(n) + Decimal("0.50")))
               for n in range(1, lines + 1)],
    )
    stored = StoredFile(sha256=secrets.token_hex(32), size_bytes=1, mime_type="text/csv", stored_path="/dev/null",
                        original_filename="bulk.csv")
    upload_id = register_upload(db, MERCHANT, stored).id
    save_purchase_order(db, upload_id, po)
    return create_drafts_for_po(db, upload_id, po).drafts


def _set_title(db: Database, drafts: list[DraftRecord], title_of) -> None:
    with db.session() as session:
        for draft in drafts:
            session.execute(update(ProductDraft).where(ProductDraft.id == draft.id).values(title=title_of(draft)))


def _shop_view(client: ShopifyClient, links: dict[str, ShopifyLink]) -> dict[str, tuple[object, ...]]:
    """Per handle: what the shop holds (title, status, SKU, price), checked against the recorded GIDs."""
    view = {}
    for handle, link in links.items():
        product = client.get_product(handle)
        assert product is not None and product.product_gid == link.product_gid
        (variant,) = product.variants
        assert variant.variant_gid == link.variant_gid
        view[handle] = (product.title, product.status, variant.sku, variant.price)
    return view


def _ops(emulator: EmulatorHandle, name: str) -> int:
    return emulator.stats.operations.get(name, 0)


def test_a_large_po_goes_through_bulk_and_ends_like_the_direct_path(db: Database, monkeypatch) -> None:
    monkeypatch.setenv("POFLOW_SHOPIFY_BULK_THRESHOLD", "10")
    drafts = _drafts(db, 12)
    progress: list[tuple[int, int]] = []
    with start_emulator(access_token=TOKEN) as bulk_shop, _client(bulk_shop) as client:
        synced = publish_drafts(db, client, bulk_shop.url, MERCHANT, drafts, on_progress=lambda *p: progress.append(p),
                                poll_interval_s=POLL)
        assert (_ops(bulk_shop, "bulkOperationRunMutation"), _ops(bulk_shop, "productSet")) == (1, 0)
        bulk_links = recorded_links(db, bulk_shop.url, drafts)
        bulk_view = _shop_view(client, bulk_links)
        assert verify_published(db, client, bulk_shop.url, MERCHANT, drafts, settle_seconds=()).problems == []
        again = publish_drafts(db, client, bulk_shop.url, MERCHANT, drafts, poll_interval_s=POLL)
        assert bulk_shop.count_products() == 12
    with start_emulator(access_token=TOKEN) as direct_shop, _client(direct_shop) as client:
        direct = publish_drafts(db, client, direct_shop.url, MERCHANT, drafts, threshold=12)
        assert (_ops(direct_shop, "bulkOperationRunMutation"), _ops(direct_shop, "productSet")) == (0, 12)
        direct_links = recorded_links(db, direct_shop.url, drafts)
        direct_view = _shop_view(client, direct_links)
    assert [p.sku for p in synced] == [p.sku for p in direct] == [d.sku for d in drafts]
    assert all(p.created for p in synced) and all(p.created for p in direct)
    assert [(p.handle, p.product_gid, p.variant_gid) for p in synced] == [
        (bulk_links[p.handle].handle, bulk_links[p.handle].product_gid, bulk_links[p.handle].variant_gid) for p in synced
    ]
    assert bulk_view == direct_view and len(bulk_view) == 12
    assert [p.product_gid for p in again] == [p.product_gid for p in synced] and not any(p.created for p in again)
    assert progress and progress[-1] == (12, 12) and {total for _, total in progress} == {12}
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_a_po_at_the_threshold_stays_on_the_direct_path(db: Database, emulator: EmulatorHandle, monkeypatch) -> None:
    monkeypatch.setenv("POFLOW_SHOPIFY_BULK_THRESHOLD", "10")
    drafts = _drafts(db, 10)
    progress: list[tuple[int, int]] = []
    with _client(emulator) as client:
        synced = publish_drafts(db, client, emulator.url, MERCHANT, drafts, on_progress=lambda *p: progress.append(p))
    assert (_ops(emulator, "bulkOperationRunMutation"), _ops(emulator, "productSet")) == (0, 10)
    assert len(recorded_links(db, emulator.url, drafts)) == 10 and all(p.created for p in synced)
    assert sorted(progress) == [(n, 10) for n in range(1, 11)]


def test_a_line_refused_in_bulk_is_retried_directly(db: Database, emulator: EmulatorHandle, monkeypatch) -> None:
    drafts = _drafts(db, 8)
    upload_jsonl = bulk._jsonl

    def one_line_blank(specs: list[ProductSpec]) -> bytes:  # Shopify refuses this line in bulk only
        return upload_jsonl([ProductSpec(**{**s.__dict__, "title": " "}) if s.sku == "BP-005" else s for s in specs])

    monkeypatch.setattr(bulk, "_jsonl", one_line_blank)
    with _client(emulator) as client:
        synced = publish_drafts(db, client, emulator.url, MERCHANT, drafts, threshold=4, poll_interval_s=POLL)
        assert (_ops(emulator, "bulkOperationRunMutation"), _ops(emulator, "productSet")) == (1, 1)
        links = recorded_links(db, emulator.url, drafts)
        assert _shop_view(client, links)[synced[4].handle][:3] == ("Bulk item 5", "DRAFT", "BP-005")
    assert [p.sku for p in synced] == [d.sku for d in drafts] and all(p.created for p in synced)
    assert len(links) == 8 and emulator.count_products() == 8


def test_lines_refused_twice_fail_naming_the_skus_and_a_rerun_duplicates_nothing(
    db: Database, emulator: EmulatorHandle
) -> None:
    drafts = _drafts(db, 9)
    broken = {"BP-002", "BP-007"}
    _set_title(db, [d for d in drafts if d.sku in broken], lambda d: "  ")
    with _client(emulator) as client:
        with pytest.raises(ProductsNotSynced) as failed:
            publish_drafts(db, client, emulator.url, MERCHANT, drafts, threshold=4, poll_interval_s=POLL)
        assert failed.value.code == "shopify_products_failed"
        assert "BP-002, BP-007" in failed.value.message and "2 of 9" in failed.value.message
        assert set(failed.value.failed) == broken
        assert _ops(emulator, "productSet") == 2  # each refused line tried once more, directly
        first = recorded_links(db, emulator.url, drafts)
        assert len(first) == 7 and emulator.count_products() == 7
        _set_title(db, [d for d in drafts if d.sku in broken], lambda d: f"Fixed {d.sku}")
        rerun = publish_drafts(db, client, emulator.url, MERCHANT, drafts, threshold=4, poll_interval_s=POLL)
        assert emulator.count_products() == 9
        assert {p.sku for p in rerun if p.created} == broken
        assert all(first[p.handle].product_gid == p.product_gid for p in rerun if p.sku not in broken)
        assert verify_published(db, client, emulator.url, MERCHANT, drafts, settle_seconds=()).problems == []


def test_a_lost_answer_to_the_bulk_run_runs_it_twice_without_duplicates(db: Database, emulator: EmulatorHandle) -> None:
    """The run is applied but its answer lost: the client sends it again, so two operations upsert the same
    handles. Shopify still ends with one product per draft."""
    drafts = _drafts(db, 11)
    emulator.drop_answers(1, only="bulkOperationRunMutation")
    with _client(emulator) as client:
        synced = publish_drafts(db, client, emulator.url, MERCHANT, drafts, threshold=4, poll_interval_s=POLL)
        assert _ops(emulator, "bulkOperationRunMutation") == 2
        for number in (90001, 90002):  # both operations have finished
            node = {"status": "RUNNING"}
            while node["status"] != "COMPLETED":
                node = client.execute(bulk.POLL_QUERY, {"id": f"gid://shopify/BulkOperation/{number}"})["node"]
        assert emulator.count_products() == 11
        assert len({p.product_gid for p in synced}) == 11
        assert verify_published(db, client, emulator.url, MERCHANT, drafts, settle_seconds=()).problems == []


def _specs(prefix: str, count: int) -> list[ProductSpec]:
    return [ProductSpec(sku=f"{prefix}-{n}", title=f"{prefix} {n}", price=Decimal(n), handle=f"{prefix.lower()}-{n}")
            for n in range(count)]


def _start_blocking_operation(client: ShopifyClient, lines: int) -> str:
    """A long bulk mutation of other products, left running (the shop takes one at a time before API 2026-01)."""
    return bulk._run(client, bulk._upload(client, bulk._jsonl(_specs("OTHER", lines))), POLL, 0)


def _still_running(client: ShopifyClient, operation_id: str) -> bool:
    return client.execute(bulk.POLL_QUERY, {"id": operation_id})["node"]["status"] in ("CREATED", "RUNNING")


def test_a_busy_shop_is_waited_for(emulator: EmulatorHandle) -> None:
    with _client(emulator, api_version="2025-10") as client:
        blocking = _start_blocking_operation(client, 5000)
        synced = sync_products_in_bulk(client, _specs("MINE", 6), poll_interval_s=POLL, busy_wait_s=120)
        assert not _still_running(client, blocking)
    assert _ops(emulator, "bulkOperationRunMutation") >= 3  # the blocker, at least one refusal, ours
    assert _ops(emulator, "productSet") == 0 and all(isinstance(p, SyncedProduct) and p.created for p in synced)


def test_a_shop_busy_for_too_long_is_bypassed_through_the_direct_path(emulator: EmulatorHandle) -> None:
    progress: list[tuple[int, int]] = []
    with _client(emulator, api_version="2025-10") as client:
        blocking = _start_blocking_operation(client, 20000)
        synced = sync_products_in_bulk(client, _specs("MINE", 6), poll_interval_s=POLL, busy_wait_s=0.2,
                                       on_progress=lambda *p: progress.append(p))
        assert _still_running(client, blocking)  # it was busy all along
    assert _ops(emulator, "productSet") == 6 and [p.sku for p in synced] == [f"MINE-{n}" for n in range(6)]
    assert sorted(progress) == [(n, 6) for n in range(1, 7)]
