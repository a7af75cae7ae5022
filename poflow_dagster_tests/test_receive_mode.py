"""Receive mode per merchant: ``manual`` (the default) receives nothing at sync, only with ``poflow receive``;
``sync`` receives every ordered unit when the PO syncs; turning receiving on anew starts ``manual``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from poflow_dagster import receiving
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.schema import Merchant
from poflow_dagster.verification import unfinished_receipts

from .test_receiving import MERCHANT, client, rows, save_po, stock  # noqa: F401 - fixtures and helpers


def _mode(db) -> tuple[bool, str]:
    with db.session() as session:
        merchant = session.get(Merchant, MERCHANT)
        return merchant.receive_stock, merchant.receive_on


def test_a_manual_merchant_receives_nothing_at_sync_and_everything_by_hand(db, client, shop) -> None:
    upload = save_po(db, client)  # receiving newly turned on, no mode given: manual
    assert _mode(db) == (True, "manual")

    assert receiving.receive_on_sync(db, client, upload) is None
    assert rows(db) == [] and shop.stats.operations.get("inventoryAdjustQuantities", 0) == 0
    assert unfinished_receipts(db, upload) == []  # goods not arrived is not a problem

    result = receiving.receive(db, client, upload, None, applied_by="ana")
    assert [(r.line_no, r.quantity, r.status) for r in result.receipts] == [(1, 5, "applied"), (2, 3, "applied")]
    assert (stock(client, "RCV-1"), stock(client, "CAT-2")) == (5, 3)
    assert receiving.receive_on_sync(db, client, upload) is None  # a re-sync still moves nothing
    assert (stock(client, "RCV-1"), stock(client, "CAT-2")) == (5, 3)


def test_switching_to_sync_receives_at_sync_once(db, client, shop) -> None:
    upload = save_po(db, client)
    with db.session() as session:
        configure_merchant(session, MERCHANT, receive_on="sync")
    result = receiving.receive_on_sync(db, client, upload)
    assert result is not None and [r.status for r in result.receipts] == ["applied", "applied"]
    assert receiving.receive_on_sync(db, client, upload).receipts == ()
    assert (stock(client, "RCV-1"), stock(client, "CAT-2")) == (5, 3)


def test_mode_is_validated_and_re_enabling_starts_manual(db, client) -> None:
    location = client.locations()[0].gid
    with db.session() as session:
        configure_merchant(session, MERCHANT, receive_stock=True, stock_location_gid=location, receive_on="SYNC")
    assert _mode(db) == (True, "sync")
    with pytest.raises(PoflowError) as refused, db.session() as session:
        configure_merchant(session, MERCHANT, receive_on="on-arrival")
    assert refused.value.code == "invalid_receive_on"
    assert _mode(db) == (True, "sync")  # nothing stored
    with db.session() as session:
        configure_merchant(session, MERCHANT, receive_stock=True)  # already on: the mode stays
    assert _mode(db) == (True, "sync")
    with db.session() as session:
        configure_merchant(session, MERCHANT, receive_stock=False)
    with db.session() as session:
        configure_merchant(session, MERCHANT, receive_stock=True)  # newly enabled again: manual
    assert _mode(db) == (True, "manual")


def test_a_manual_merchants_refused_receipts_are_still_reported(db, client, shop) -> None:
    back_room = shop.add_location("Back room")  # stocks nothing: Shopify refuses every receipt there
    upload = save_po(db, client, location=back_room)
    assert unfinished_receipts(db, upload) == []  # nothing received yet: no problem
    result = receiving.receive(db, client, upload, {1: Decimal(2)}, applied_by="ana")
    assert [r.status for r in result.receipts] == ["failed"]
    [problem] = unfinished_receipts(db, upload)
    assert problem.startswith("line 1: receipt of 2 units failed (item_not_stocked: ")
