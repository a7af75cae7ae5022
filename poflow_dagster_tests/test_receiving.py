"""Incoming stock (issue 10 part 2): PO quantities received into Shopify once, on SQLite and PostgreSQL, against
the real emulator over HTTP: full and partial receipts, re-runs, retries and lost answers, over-receipt, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from poflow_dagster import receiving
from poflow_dagster.catalog.models import LineMatch
from poflow_dagster.catalog.store import record_line_matches, upsert_catalog_variants
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.shopify.client import InventoryChange, ProductSpec, ShopifyClient
from poflow_dagster.shopify.publish import publish_drafts
from poflow_dagster.shopify.rate_budget import InProcessBudget
from poflow_dagster.store.drafts import create_drafts_for_po
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.purchase_orders import save_purchase_order
from poflow_dagster.store.schema import StockReceipt
from poflow_dagster.store.uploads import StoredFile, register_upload

MERCHANT = "rcv"


@pytest.fixture
def client(shop) -> Iterator[ShopifyClient]:
    with ShopifyClient(shop.url, "test-token", timeout=5.0, backoff_base=0.01, max_attempts=3,
                       budget=InProcessBudget(f"test:{shop.url}")) as c:
        yield c


def save_po(db, client: ShopifyClient, *, receive_stock: bool = True, location: str | None = None,
            receive_on: str | None = None) -> str:
    """A PO of three lines: 1 (SKU RCV-1, 5 units) becomes a poflow product; 2 (supplier SKU SUP-2, 3 units) is
    matched to the catalog's CAT-2; 3 (no SKU, 1 unit) has no Shopify variant."""
    upload = register_upload(db, MERCHANT, StoredFile(sha256="c" * 64, size_bytes=1, mime_type="text/csv",
                                                      stored_path="/tmp/po.csv", original_filename="po.csv"))
    po = ParsedPO(po_number="PO-77", supplier_name="Acme", source_format="csv", extractor="test", lines=[
        POLine(line_no=1, sku="RCV-1", description="Widget", quantity=Decimal(5), unit_cost=Decimal("2.00")),
        POLine(line_no=2, sku="SUP-2", description="Gadget", quantity=Decimal(3), unit_cost=Decimal("4.00")),
        POLine(line_no=3, sku=None, description="Freight", quantity=Decimal(1)),
    ])
    save_purchase_order(db, upload.id, po)
    with db.session() as session:
        configure_merchant(session, MERCHANT, receive_stock=receive_stock,
                           stock_location_gid=location or client.locations()[0].gid, receive_on=receive_on)
    drafts = [d for d in create_drafts_for_po(db, upload.id, po).drafts if d.sku == "RCV-1"]
    publish_drafts(db, client, client.shop_url, MERCHANT, drafts)
    catalog = client.product_set(ProductSpec(sku="CAT-2", title="Gadget", price=Decimal("9.00"), handle="cat-2"))
    upsert_catalog_variants(db, MERCHANT, client.shop_url, client.catalog_page(first=10).variants)
    record_line_matches(db, upload.id, [LineMatch(2, "supplier_sku", 100.0, "matched", catalog.variant_gid)])
    return upload.id


def items(db, client: ShopifyClient) -> dict[str, str]:
    """``{sku: inventory item GID}`` of the shop."""
    return {v.sku: v.inventory_item_gid for v in client.catalog_page(first=10).variants}


def stock(client: ShopifyClient, sku: str) -> int:
    item = items(None, client)[sku]
    level = client.inventory_levels([item], client.locations()[0].gid)[item]
    assert level is not None
    return level.available


def rows(db) -> list[StockReceipt]:
    with db.session() as session:
        return list(session.scalars(sa.select(StockReceipt).order_by(StockReceipt.line_no, StockReceipt.receipt_no)))


def test_full_receive_on_sync_applies_every_line_once(db, client, shop) -> None:
    upload = save_po(db, client, receive_on="sync")
    result = receiving.receive_on_sync(db, client, upload)
    assert result is not None
    assert [(r.line_no, r.quantity, r.status) for r in result.receipts] == [(1, 5, "applied"), (2, 3, "applied")]
    assert result.unsynced == (3,)
    assert (stock(client, "RCV-1"), stock(client, "CAT-2")) == (5, 3)
    stored = rows(db)
    assert [(r.line_no, r.receipt_no, r.status, r.applied_by) for r in stored] == [
        (1, 1, "applied", receiving.SYNC_ACTOR), (2, 1, "applied", receiving.SYNC_ACTOR)]
    assert stored[1].inventory_item_gid == items(db, client)["CAT-2"]  # the matched catalog variant's item
    assert len({r.idempotency_key for r in stored}) == 2 and stored[0].adjustment_key == stored[1].adjustment_key
    adjustments = shop.stats.operations["inventoryAdjustQuantities"]
    again = receiving.receive_on_sync(db, client, upload)  # a re-run or re-executed run
    assert again is not None and again.receipts == ()
    assert shop.stats.operations["inventoryAdjustQuantities"] == adjustments
    assert (stock(client, "RCV-1"), stock(client, "CAT-2")) == (5, 3)


def test_partial_then_the_rest(db, client) -> None:
    upload = save_po(db, client, receive_on="sync")
    first = receiving.receive(db, client, upload, {1: Decimal(2)}, applied_by="ana")
    assert [(r.line_no, r.receipt_no, r.quantity, r.status) for r in first.receipts] == [(1, 1, 2, "applied")]
    assert stock(client, "RCV-1") == 2
    rest = receiving.receive(db, client, upload, None, applied_by="ana")
    assert [(r.line_no, r.receipt_no, r.quantity) for r in rest.receipts] == [(1, 2, 3), (2, 1, 3)]
    assert rest.unsynced == (3,)
    assert (stock(client, "RCV-1"), stock(client, "CAT-2")) == (5, 3)
    assert [(t.line_no, t.ordered, t.received) for t in receiving.received_lines(db, upload)] == [
        (1, 5, 5), (2, 3, 3), (3, 1, 0)]
    assert receiving.receive(db, client, upload, None).receipts == ()  # nothing left
    assert {r.applied_by for r in rows(db)} == {"ana"}
    # the automatic receipt after sync does not add what was received by hand
    assert receiving.receive_on_sync(db, client, upload).receipts == ()  # type: ignore[union-attr]
    assert stock(client, "RCV-1") == 5


def test_lost_answer_after_the_server_applied_never_doubles_stock(db, client, shop) -> None:
    upload = save_po(db, client)
    shop.drop_answers(3, only="inventoryAdjustQuantities")  # every attempt of the client applied, none answered
    with pytest.raises(PoflowError) as incomplete:
        receiving.receive(db, client, upload, {1: Decimal(4)})
    assert incomplete.value.code == "receive_incomplete"
    assert [(r.status, r.error is not None) for r in rows(db)] == [("pending", True)]
    assert stock(client, "RCV-1") == 4  # applied once although sent three times
    # the next receive finishes the pending receipt under its key before anything new
    done = receiving.receive(db, client, upload, {1: Decimal(1)})
    assert [(r.receipt_no, r.quantity, r.status, r.resumed) for r in done.receipts] == [
        (1, 4, "applied", True), (2, 1, "applied", False)]
    assert stock(client, "RCV-1") == 5
    assert [r.status for r in rows(db)] == ["applied", "applied"]


def test_a_retried_pending_receipt_resends_its_key(db, client, shop) -> None:
    """A crash after the rows were recorded and the call went out: the retry re-sends the same request."""
    upload = save_po(db, client)
    plan = receiving.plan_receipt(db, upload, {2: Decimal(3)})
    shop.drop_answers(3, only="inventoryAdjustQuantities")
    with pytest.raises(PoflowError):
        receiving.apply_receipts(db, client, plan.receipts)
    key = rows(db)[0].adjustment_key
    assert stock(client, "CAT-2") == 3
    rest = receiving.plan_receipt(db, upload, None, skip_unsynced=True)
    assert [r.line_no for r in rest.receipts] == [1]  # line 2 counts as received while pending
    resumed = receiving.resume_pending(db, client, upload)
    assert [(r.line_no, r.status) for r in resumed] == [(2, "applied")]
    assert rows(db)[0].adjustment_key == key and stock(client, "CAT-2") == 3
    assert receiving.resume_pending(db, client, upload) == []


def test_stale_level_is_read_again_and_sent_under_a_new_key(db, client, shop) -> None:
    upload = save_po(db, client)
    plan = receiving.plan_receipt(db, upload, {1: Decimal(2)})
    item = items(db, client)["RCV-1"]
    location = client.locations()[0].gid
    real_levels = client.inventory_levels
    moved = []

    def levels_then_a_sale(ids, where):  # someone sells 1 unit right after poflow read the level
        found = real_levels(ids, where)
        if not moved:
            moved.append(client.adjust_inventory([InventoryChange(item, location, -1, None)], reason="correction",
                                                 idempotency_key="sale-1"))
        return found

    client.inventory_levels = levels_then_a_sale  # type: ignore[method-assign]
    outcome = receiving.apply_receipts(db, client, plan.receipts)
    assert [r.status for r in outcome] == ["applied"]
    assert stock(client, "RCV-1") == 1  # -1 sold, +2 received: the receipt applied once, on the fresh level
    row = rows(db)[0]
    assert row.adjustment_key != receiving.adjustment_key([row.idempotency_key])
    assert row.change_from_quantity == -1


def test_receipts_beyond_one_call_go_in_several_calls_each_with_its_key(db, client, shop, monkeypatch) -> None:
    upload = save_po(db, client)
    monkeypatch.setattr(receiving, "MAX_CHANGES", 1)
    before = shop.stats.operations.get("inventoryAdjustQuantities", 0)
    result = receiving.receive(db, client, upload, None)
    assert [(r.line_no, r.status) for r in result.receipts] == [(1, "applied"), (2, "applied")]
    assert shop.stats.operations["inventoryAdjustQuantities"] == before + 2
    assert len({r.adjustment_key for r in rows(db)}) == 2
    assert (stock(client, "RCV-1"), stock(client, "CAT-2")) == (5, 3)


def test_over_receipt_and_bad_requests_are_refused_with_codes(db, client) -> None:
    upload = save_po(db, client)
    receiving.receive(db, client, upload, {1: Decimal(4)})
    for lines, code in [({1: Decimal(2)}, "over_receipt"), ({9: Decimal(1)}, "unknown_line"),
                        ({1: Decimal("0.5")}, "invalid_quantity"), ({1: Decimal(0)}, "invalid_quantity"),
                        ({3: Decimal(1)}, "not_synced")]:
        with pytest.raises(PoflowError) as refused:
            receiving.plan_receipt(db, upload, lines)
        assert refused.value.code == code
    assert stock(client, "RCV-1") == 4
    more = receiving.receive(db, client, upload, {1: Decimal(2)}, allow_over=True)
    assert [r.status for r in more.receipts] == ["applied"] and stock(client, "RCV-1") == 6


def test_merchant_without_receiving_is_refused(db, client) -> None:
    upload = save_po(db, client, receive_stock=False)
    with pytest.raises(PoflowError) as refused:
        receiving.receive(db, client, upload, None)
    assert refused.value.code == "receiving_off"
    assert receiving.receive_on_sync(db, client, upload) is None
    assert rows(db) == [] and stock(client, "RCV-1") == 0
    with db.session() as session, pytest.raises(PoflowError) as missing:
        configure_merchant(session, "other", receive_stock=True)
    assert missing.value.code == "stock_location_missing"


def test_item_not_stocked_at_the_location_fails_that_receipt_only(db, client, shop) -> None:
    elsewhere = shop.add_location("Back room")
    upload = save_po(db, client, location=elsewhere)
    result = receiving.receive(db, client, upload, {1: Decimal(1)})
    assert [(r.status, (r.error or "").split(":")[0]) for r in result.receipts] == [("failed", "item_not_stocked")]
    assert result.failed and stock(client, "RCV-1") == 0
    assert receiving.plan_receipt(db, upload, {1: Decimal(5)}).receipts[0].receipt_no == 2  # failed moved nothing


# --- the command -------------------------------------------------------------------------------------------------

POFLOW = [sys.executable, "-m", "poflow_dagster.cli"]


def poflow(args: list[str], home: Path, db_url: str) -> subprocess.CompletedProcess:
    """The command in this process (click's runner: ~50 ms, not a 2-4 s interpreter start per call); the
    ``home`` fixture already set POFLOW_HOME / POFLOW_DATABASE_URL. ``poflow_process`` runs the real entry point."""
    from click.testing import CliRunner

    from poflow_dagster.cli import main

    assert os.environ["POFLOW_DATABASE_URL"] == db_url and os.environ["POFLOW_HOME"] == str(home)
    result = CliRunner().invoke(main, args)
    return subprocess.CompletedProcess(POFLOW + args, result.exit_code, result.stdout, result.stderr)


def poflow_process(args: list[str], home: Path, db_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "POFLOW_HOME": str(home), "POFLOW_DATABASE_URL": db_url}
    return subprocess.run(POFLOW + args, capture_output=True, text=True, env=env, timeout=120)


def test_cli_receive_and_merchant_set(home, db_url, db, client, shop) -> None:
    upload = save_po(db, client, receive_stock=False)
    off = poflow_process(["receive", upload, "--all"], home, db_url)  # the installed entry point, once
    assert off.returncode == 2 and off.stderr == f"error: receiving_off: {off.stderr.split(': ', 2)[2]}"
    assert off.stderr.count("\n") == 1
    location = client.locations()[0].gid
    unknown = poflow(["merchant", "set", MERCHANT, "--receive-stock", "--location", "gid://shopify/Location/999"],
                     home, db_url)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown_location: ")
    assert poflow(["merchant", "set", "newcomer", "--receive-stock"], home, db_url).stderr.startswith(
        "error: stock_location_missing: ")
    on = poflow(["merchant", "set", MERCHANT, "--receive-stock", "--location", location], home, db_url)
    assert on.returncode == 0, on.stderr
    assert f"receive stock on at {location}, receive on manual" in on.stdout  # newly enabled: manual
    assert "update price off" in on.stdout
    bad_mode = poflow(["merchant", "set", MERCHANT, "--receive-on", "later"], home, db_url)
    assert bad_mode.returncode == 2 and bad_mode.stderr.startswith("error: invalid_receive_on: "), bad_mode.stderr
    synced = poflow(["merchant", "set", MERCHANT, "--receive-on", "sync", "--update-price"], home, db_url)
    assert f"receive stock on at {location}, receive on sync" in synced.stdout, synced.stderr
    assert "update price on" in synced.stdout
    back = poflow(["merchant", "set", MERCHANT, "--receive-on", "manual", "--no-update-price"], home, db_url)
    assert "receive on manual" in back.stdout and "update price off" in back.stdout

    part = poflow(["receive", upload, "--line", "1", "--qty", "2", "--by", "ana"], home, db_url)
    assert part.returncode == 0, part.stderr
    assert part.stdout.splitlines()[0] == "line 1: +2 applied"
    assert "line 1 RCV-1: received 2 of 5" in part.stdout
    over = poflow(["receive", upload, "--line", "1", "--qty", "9"], home, db_url)
    assert over.returncode == 2 and over.stderr.startswith("error: over_receipt: ") and len(over.stderr.splitlines()) == 1
    for args, code in [([], "option_conflict"), (["--all", "--line", "1", "--qty", "1"], "option_conflict"),
                       (["--line", "1"], "option_conflict"), (["--line", "1", "--qty", "x"], "invalid_quantity")]:
        bad = poflow(["receive", upload, *args], home, db_url)
        assert bad.returncode == 2 and bad.stderr.startswith(f"error: {code}: "), bad.stderr
    assert poflow(["receive", "no-such-upload", "--all"], home, db_url).stderr.startswith("error: unknown_upload: ")

    rest = poflow(["receive", upload, "--all", "--format", "json"], home, db_url)
    assert rest.returncode == 0, rest.stderr
    answer = json.loads(rest.stdout)
    assert [(r["line_no"], r["receipt_no"], r["quantity"], r["status"]) for r in answer["receipts"]] == [
        (1, 2, "3", "applied"), (2, 1, "3", "applied")]
    assert answer["unsynced"] == [3]
    assert [(x["line_no"], x["ordered"], x["received"]) for x in answer["lines"]] == [
        (1, "5", "5"), (2, "3", "3"), (3, "1", "0")]
    assert (stock(client, "RCV-1"), stock(client, "CAT-2")) == (5, 3)
    again = poflow(["receive", upload, "--all"], home, db_url)
    assert again.returncode == 0 and f"{upload}: nothing to receive" in again.stdout
    assert (stock(client, "RCV-1"), stock(client, "CAT-2")) == (5, 3)
