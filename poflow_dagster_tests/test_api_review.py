"""Review and receiving over the HTTP API (SQLite and PostgreSQL, the Shopify emulator, the real po_job): line
matches, approval with picks, receipts made idempotent by ``Idempotency-Key``, the dry-run diff; another merchant's
upload is a 404 everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from poflow_dagster.api import create_app
from poflow_dagster.api.settings import ApiSettings
from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.resources import ShopifyResource
from poflow_dagster.shopify.client import ProductSpec, ShopifyClient
from poflow_dagster.shopify_diff import shopify_diff
from poflow_dagster.store.api_requests import ApiIdempotencyKey
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.review import pending_approvals
from poflow_dagster.store.schema import StockReceipt
from poflow_dagster.store.tokens import issue_token
from poflow_dagster.store.uploads import merchant_for_upload
from poflow_dagster.store.workflow import status_report

PO = """PO Number,{po}
Supplier,Northwind Traders
sku,description,quantity,unit_cost,line_total
NW-100,Espresso Beans 1kg,4,12.50,50.00
NEW-1,Chai Spice 250g,3,4.00,12.00
NEW-2,Rooibos 100g,2,3.00,6.00
"""


@pytest.fixture
def api(home: Path, db_url: str) -> Iterator[TestClient]:
    settings = ApiSettings(home=home, database_url=db_url, redis_url=None, namespace=None,
                           max_upload_bytes=1024 * 1024)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _auth(db, merchant_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(db, merchant_id).token}"}


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code and "Traceback" not in response.text


def _upload(home, db, tmp_path, po: str, merchant_id: str = "acme"):
    path = tmp_path / f"{po}.csv"
    path.write_text(PO.format(po=po))
    return upload_file(db, home, merchant_id, path)


def _product(shop, sku: str, title: str, handle: str, cost: str = "11.00") -> str:
    """A product the merchant had before poflow: its variant gid."""
    with ShopifyClient(shop.url, "test-token") as client:
        return client.product_set(ProductSpec(sku=sku, title=title, price=Decimal("30.00"), handle=handle,
                                              status="ACTIVE", vendor="Northwind Traders",
                                              unit_cost=Decimal(cost))).variant_gid


def _cost(shop, variant_gid: str) -> Decimal:
    with ShopifyClient(shop.url, "test-token") as client:
        [node] = client.execute("query($ids: [ID!]!) { nodes(ids: $ids) { ... on ProductVariant { "
                                "inventoryItem { unitCost { amount } } } } }", {"ids": [variant_gid]})["nodes"]
    return Decimal(node["inventoryItem"]["unitCost"]["amount"])


def test_matches_then_approve_with_a_pick_continues_the_po(api, home, db, shop, instance, tmp_path):
    one = _product(shop, "NW-100", "Espresso Beans 1kg", "espresso-a")
    two = _product(shop, "NW-100", "Espresso Beans 1kg (old)", "espresso-b")
    upload = _upload(home, db, tmp_path, "PO-R1")
    assert run_upload(defs, instance, db, upload.id, with_images=False).summary["status"] == "needs_review"
    acme, other = _auth(db, "acme"), _auth(db, "other")

    shown = api.get(f"/api/uploads/{upload.id}/matches", headers=acme)

    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["awaiting_review"] is True and body["status"] == "needs_review"
    assert body["review_message"].startswith("AMBIGUOUS_MATCH: line 1") and two in body["review_message"]
    lines = {line["line_no"]: line for line in body["lines"]}
    assert (lines[1]["status"], lines[1]["variant"], lines[1]["sku"]) == ("ambiguous", None, "NW-100")
    assert {c["variant_gid"] for c in lines[1]["candidates"]} == {one, two}
    assert {c["title"] for c in lines[1]["candidates"]} == {"Espresso Beans 1kg", "Espresso Beans 1kg (old)"}
    assert all(c["sku"] == "NW-100" and c["score"] > 0 for c in lines[1]["candidates"])
    assert lines[2]["status"] == "unmatched" and lines[2]["quantity"] == "3" and lines[2]["unit_cost"] == "4.00"
    for method, path in (("get", "matches"), ("post", "approve"), ("get", "diff")):  # not the other merchant's
        _error(api.request(method, f"/api/uploads/{upload.id}/{path}", headers=other), 404, "unknown_upload")

    _error(api.post(f"/api/uploads/{upload.id}/approve", headers=acme,
                    json={"matches": [{"line_no": 1, "variant_gid": "nope"}]}), 422, "invalid_match")
    _error(api.post(f"/api/uploads/{upload.id}/approve", headers=acme, json={"matches": [
        {"line_no": 1, "variant_gid": two}, {"line_no": 9, "variant_gid": one}]}), 422, "unknown_match")
    _error(api.post(f"/api/uploads/{upload.id}/approve", headers=acme, json={"matches": [
        {"line_no": 1, "variant_gid": "gid://shopify/ProductVariant/987654"}]}), 422, "unknown_match")
    assert status_report(db, upload.id).upload.status == "needs_review"  # nothing was recorded by those
    assert api.get(f"/api/uploads/{upload.id}/matches", headers=acme).json()["lines"][0]["status"] == "ambiguous"

    approved = api.post(f"/api/uploads/{upload.id}/approve", headers=acme,
                        json={"matches": [{"line_no": 1, "variant_gid": two}], "approved_by": "buyer@acme"})

    assert approved.status_code == 200, approved.text
    first = approved.json()
    assert (first["status"], first["approved_by"], first["already_approved"]) == ("approved", "buyer@acme", False)
    assert first["matches"] == [{"line_no": 1, "variant_gid": two, "method": "manual", "decided_by": "buyer@acme"}]
    [approval] = pending_approvals(db, 10)  # upload_sensor's next tick starts the continuation run
    assert first["run"] == {"outcome": "left_to_sensor", "run_key": approval.run_key,
                            "detail": "upload_sensor starts the continuation run at its next tick"}
    again = api.post(f"/api/uploads/{upload.id}/approve", headers=acme,
                     json={"matches": [{"line_no": 1, "variant_gid": two}], "approved_by": "someone else"})
    assert again.status_code == 200 and again.json() == {**first, "already_approved": True}  # harmless
    _error(api.post(f"/api/uploads/{upload.id}/approve", headers=acme,
                    json={"matches": [{"line_no": 1, "variant_gid": one}]}), 409, "not_awaiting_review")

    continued = run_upload(defs, instance, db, upload.id, with_images=False)

    assert continued.summary["status"] == "completed", continued.error
    assert (_cost(shop, one), _cost(shop, two)) == (Decimal("11.00"), Decimal("12.50"))  # only the pick changed
    after = {line["line_no"]: line for line in api.get(f"/api/uploads/{upload.id}/matches", headers=acme).json()["lines"]}
    assert (after[1]["status"], after[1]["decided_by"]) == ("approved", "buyer@acme")
    assert after[1]["variant"]["variant_gid"] == two and after[1]["variant"]["title"] == "Espresso Beans 1kg (old)"
    assert api.post(f"/api/uploads/{upload.id}/approve", headers=acme).json()["already_approved"] is True
    _error(api.post(f"/api/uploads/{_upload(home, db, tmp_path, 'PO-R2').id}/approve", headers=acme), 409,
           "not_awaiting_review")


def _receiving_po(home, db, shop, instance, tmp_path, po: str, receive_on: str = "manual"):
    with ShopifyClient(shop.url, "test-token") as client:
        location = client.locations()[0].gid
    with db.session() as session:
        configure_merchant(session, "acme", receive_stock=True, stock_location_gid=location, receive_on=receive_on)
    upload = _upload(home, db, tmp_path, po)
    assert run_upload(defs, instance, db, upload.id, with_images=False).summary["status"] == "completed"
    return upload


def _receipt_rows(db, upload_id: str) -> list[tuple[int, Decimal, str]]:
    with db.session() as session:
        return [tuple(row) for row in session.execute(
            sa.select(StockReceipt.line_no, StockReceipt.quantity, StockReceipt.status)
            .where(StockReceipt.upload_id == upload_id).order_by(StockReceipt.id))]


def test_receipts_once_per_idempotency_key(api, home, db, shop, instance, tmp_path):
    upload = _receiving_po(home, db, shop, instance, tmp_path, "PO-R3")
    acme = _auth(db, "acme")
    url = f"/api/uploads/{upload.id}/receipts"
    adjustments = shop.stats.operations.get("inventoryAdjustQuantities", 0)

    first = api.post(url, headers={**acme, "Idempotency-Key": "delivery-1"},
                     json={"lines": [{"line_no": 2, "quantity": "2"}], "received_by": "dock"})

    assert first.status_code == 200, first.text
    assert [(r["line_no"], r["quantity"], r["status"]) for r in first.json()["receipts"]] == [(2, "2", "applied")]
    totals = {line["line_no"]: (line["ordered"], line["received"]) for line in first.json()["lines"]}
    assert totals == {1: ("4", "0"), 2: ("3", "2"), 3: ("2", "0")}
    assert "idempotent-replayed" not in first.headers
    replay = api.post(url, headers={**acme, "Idempotency-Key": "delivery-1"},
                      json={"lines": [{"line_no": 2, "quantity": "2"}], "received_by": "dock"})
    assert replay.status_code == 200 and replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert _receipt_rows(db, upload.id) == [(2, Decimal("2"), "applied")]  # received once
    assert shop.stats.operations["inventoryAdjustQuantities"] == adjustments + 1
    _error(api.post(url, headers={**acme, "Idempotency-Key": "delivery-1"},
                    json={"lines": [{"line_no": 2, "quantity": "1"}]}), 422, "idempotency_key_reused")

    _error(api.post(url, headers={**acme, "Idempotency-Key": "delivery-2"},
                    json={"lines": [{"line_no": 2, "quantity": "5"}]}), 409, "over_receipt")
    with db.session() as session:  # a refusal keeps no key: the retry is judged again
        assert session.scalar(sa.select(sa.func.count()).select_from(ApiIdempotencyKey)) == 1
    _error(api.post(url, headers=acme, json={"lines": [{"line_no": 2, "quantity": "1.5"}]}), 422, "invalid_quantity")
    _error(api.post(url, headers=acme, json={"lines": [{"line_no": 2, "quantity": "many"}]}), 422, "invalid_quantity")
    _error(api.post(url, headers=acme, json={"lines": [{"line_no": 7, "quantity": "1"}]}), 422, "unknown_line")
    _error(api.post(url, headers=acme, json={"lines": [{"line_no": 2, "quantity": "1"}], "all": True}), 422,
           "option_conflict")
    _error(api.post(url, headers={**acme, "Idempotency-Key": "bad key"}, json={"all": True}), 400,
           "invalid_idempotency_key")
    _error(api.post(url, headers=_auth(db, "other"), json={"all": True}), 404, "unknown_upload")

    rest = api.post(url, headers=acme, json={"all": True})

    assert rest.status_code == 200, rest.text
    assert {(line["ordered"], line["received"]) for line in rest.json()["lines"]} == {("4", "4"), ("3", "3"), ("2", "2")}
    assert sum(q for _n, q, _s in _receipt_rows(db, upload.id)) == Decimal("9")


def test_a_receipt_shopify_did_not_confirm_is_finished_by_the_retry_never_repeated(
        api, home, db, shop, instance, tmp_path, monkeypatch):
    upload = _receiving_po(home, db, shop, instance, tmp_path, "PO-R4")
    monkeypatch.setenv("POFLOW_SHOPIFY_MAX_ATTEMPTS", "1")
    acme = {**_auth(db, "acme"), "Idempotency-Key": "truck-7"}
    url = f"/api/uploads/{upload.id}/receipts"
    shop.inject_failures(503, 1, only="inventoryAdjustQuantities")

    _error(api.post(url, headers=acme, json={"lines": [{"line_no": 1, "quantity": "3"}]}), 503, "receive_incomplete")
    assert _receipt_rows(db, upload.id) == [(1, Decimal("3"), "pending")]

    retry = api.post(url, headers=acme, json={"lines": [{"line_no": 1, "quantity": "3"}]})

    assert retry.status_code == 200, retry.text
    assert [(r["line_no"], r["quantity"], r["status"], r["resumed"]) for r in retry.json()["receipts"]] == \
        [(1, "3", "applied", True)]
    assert _receipt_rows(db, upload.id) == [(1, Decimal("3"), "applied")]  # the same receipt, not a second one
    assert api.post(url, headers=acme, json={"lines": [{"line_no": 1, "quantity": "3"}]}).json() == retry.json()


def test_receiving_off_is_a_conflict(api, home, db, tmp_path):
    upload = _upload(home, db, tmp_path, "PO-R5")
    _error(api.post(f"/api/uploads/{upload.id}/receipts", headers=_auth(db, "acme"), json={"all": True}), 409,
           "receiving_off")


def test_diff_is_the_dry_run_of_the_cli(api, home, db, shop, instance, tmp_path):
    existing = _product(shop, "NW-100", "Espresso Beans 1kg", "espresso")
    upload = _upload(home, db, tmp_path, "PO-R6")
    with db.session() as session:  # saved and drafted, never synced
        configure_merchant(session, "acme", shopify_sync_enabled=False)
    run_upload(defs, instance, db, upload.id, with_images=False)
    acme = _auth(db, "acme")
    _error(api.get(f"/api/uploads/{upload.id}/diff", headers=acme), 409, "sync_off")
    with db.session() as session:
        configure_merchant(session, "acme", shopify_sync_enabled=True)
    products = shop.count_products()

    shown = api.get(f"/api/uploads/{upload.id}/diff", headers=acme)

    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert sorted((p["action"], p["sku"]) for p in body["products"]) == [("create", "NEW-1"), ("create", "NEW-2")]
    assert body["matched"] == [{"action": "update", "sku": "NW-100", "target": existing,
                                "changes": [{"field": "cost", "old": "11.00", "new": "12.50"}]}]
    assert shop.count_products() == products and _cost(shop, existing) == Decimal("11.00")  # nothing written
    shops = ShopifyResource()
    merchant = merchant_for_upload(db, upload.id)
    target = shops.target_for(merchant)
    with shops.client_for(target) as client:
        assert body == shopify_diff(db, client, merchant, target.url, upload.id).to_json()  # = shopify diff --format json
