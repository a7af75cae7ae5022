"""Images in the PO run, end to end on both databases: a CSV whose image column points at the local image server,
the real po_job, the Shopify emulator's media. Attached with the product title as alt and our exact bytes, never
twice; refusals by reason; a product deleted before the image step is skipped; a PO held for review gets its
images stored, then attached by the approval's continuation run; Shopify sync off stores only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline import images as image_step
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.shopify import emulator_media
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.progress_bus import ProgressBus
from poflow_dagster.store.review import approve_upload
from poflow_dagster.store.schema import (
    DraftImage,
    ProductDraft,
    ShopifyProduct,
    StageMetric,
)
from poflow_dagster.store.workflow import status_report
from poflow_dagster_tests.image_server import (  # noqa: F401
    ImageServer,
    image_server,
    png_bytes,
    webp_bytes,
)


@pytest.fixture
def allowed(monkeypatch):
    monkeypatch.setenv("POFLOW_IMAGE_ALLOWED_HOSTS", "127.0.0.1")


def _po(tmp_path: Path, server: ImageServer, *, total: str = "17.00", name: str = "pics.csv") -> Path:
    """Three lines: P-1 a PNG, P-2 a 404, P-3 a decompression bomb and a WebP (subtotal ``total``)."""
    path = tmp_path / name
    path.write_text(
        "PO Number: PO-500\nSupplier: Picture Supply\nCurrency: USD\n\n"
        "SKU,Description,Qty,Unit Cost,Line Total,Image URL\n"
        f"P-1,Blue Mug,2,5.00,10.00,{server.url('/png')}\n"
        f"P-2,Red Cup,1,3.00,3.00,{server.url('/missing')}\n"
        f"P-3,Green Plate,1,4.00,4.00,{server.url('/bomb.png')} | {server.url('/webp')}\n"
        f",,,Subtotal,{total}\n", encoding="utf-8")
    return path


def _links(db) -> dict[str, tuple[str, str]]:
    """SKU -> (product GID, draft title)."""
    with db.session() as session:
        rows = session.execute(sa.select(ProductDraft.sku, ShopifyProduct.product_gid, ProductDraft.title)
                               .join(ShopifyProduct, ShopifyProduct.draft_id == ProductDraft.id))
        return {sku: (gid, title) for sku, gid, title in rows}


def _states(db) -> dict[str, list[tuple[str, str | None]]]:
    """SKU -> [(state, reason code)] of its draft images, in position order."""
    with db.session() as session:
        rows = session.execute(sa.select(ProductDraft.sku, DraftImage.state, DraftImage.reason)
                               .join(ProductDraft, ProductDraft.id == DraftImage.draft_id)
                               .order_by(ProductDraft.sku, DraftImage.position))
        out: dict[str, list[tuple[str, str | None]]] = {}
        for sku, state, reason in rows:
            out.setdefault(sku, []).append((state, reason.split(":")[0] if reason else None))
        return out


def _image_metadata(instance, run_id: str) -> dict:
    [event] = [e for e in instance.all_logs(run_id) if e.is_dagster_event and e.dagster_event.is_successful_output
               and e.dagster_event.step_key.endswith("image_attachment")]
    return {k: v.value for k, v in event.dagster_event.event_specific_data.metadata.items()}


def _image_signals(db, run_id: str) -> tuple[str, int | None, dict]:
    with db.session() as session:
        row = session.scalar(sa.select(StageMetric).where(StageMetric.run_id == run_id,
                                                          StageMetric.stage == "image_attachment"))
        return row.outcome, row.items, dict(row.signals or {})


def test_images_attach_to_the_products_once_with_refusals_by_reason(home, db, shop, instance, image_server,
                                                                    allowed, tmp_path):
    upload = upload_file(db, home, "acme", _po(tmp_path, image_server))

    result = run_upload(defs, instance, db, upload.id)

    assert result.success, result.error
    report = status_report(db, upload.id)
    assert (report.workflow.status, report.workflow.progress_percent, report.upload.status) == (
        "completed", 100, "completed")
    assert result.images["images_attached"] == 2 and result.images["rejected"] == {
        "http_404": 1, "too_many_pixels": 1}
    links = _links(db)
    expected = {"P-1": hashlib.sha256(png_bytes()).hexdigest(), "P-3": hashlib.sha256(webp_bytes()).hexdigest()}
    for sku, sha in expected.items():
        gid, title = links[sku]
        (media,) = emulator_media.media_rows(shop, gid)
        assert (media["alt"], media["sha256"]) == (title, sha)  # alt = the product title; our exact bytes
    assert emulator_media.media_rows(shop, links["P-2"][0]) == []
    assert _states(db) == {"P-1": [("attached", None)], "P-2": [("rejected", "http_404")],
                           "P-3": [("rejected", "too_many_pixels"), ("attached", None)]}

    # The Dagster UI: counts, refusals by reason, timings; the stage's items are the images attached.
    meta = _image_metadata(instance, result.run_id)
    assert meta["images_attached"] == 2 and meta["counts"]["found"] == 4 and meta["counts"]["fetched"] == 2
    assert "http\\_404" in meta["rejected"] or "http_404" in meta["rejected"]
    assert set(meta["timings_s"]) == {"sources", "fetch", "attach"} and meta["outcome"] == "success"
    # The analytics assets read the counts from the stage's signals, like every stage's.
    outcome, items, signals = _image_signals(db, result.run_id)
    assert (outcome, items) == ("success", 2)
    assert {k: signals[k] for k in ("images_found", "images_fetched", "images_deduplicated", "images_attached",
                                    "images_rejected", "images_rejected_http_404")} == {
        "images_found": 4, "images_fetched": 2, "images_deduplicated": 0, "images_attached": 2,
        "images_rejected": 2, "images_rejected_http_404": 1}

    # One small progress event per image step, at 100 % (the PO's percent never waits for images).
    events = [e for _, e in ProgressBus(None, db).read_merchant_events("acme", "0", block_ms=0, count=10_000)
              if e.stage == "image_attachment" and e.status == "progress"]
    messages = [e.message for e in events]
    assert messages.count("Image attached to P-1") == 1 and messages.count("Image attached to P-3") == 1
    assert sum(m.startswith("Image found for") for m in messages) == 4
    assert "Image rejected for P-2 (http_404)" in messages and {e.percent for e in events} == {100}
    assert all(e.eta_seconds is None for e in events)

    # A re-run attaches nothing more and fetches nothing again.
    hits = dict(image_server.hits)
    again = run_upload(defs, instance, db, upload.id)
    assert again.success and again.images["images_attached"] == 0 and again.images["already_attached"] == 2
    assert sum(len(emulator_media.media_rows(shop, gid)) for gid, _ in links.values()) == 2
    assert image_server.hits["/png"] == hits["/png"] == 1
    assert status_report(db, upload.id).workflow.status == "completed"


def test_a_product_deleted_before_the_image_step_is_skipped_with_a_note(home, db, shop, instance, image_server,
                                                                        allowed, tmp_path, monkeypatch):
    real = image_step.collect_images

    def delete_first(database, upload_id, **kwargs):
        _delete_product(shop, _links(database)["P-1"][0])
        return real(database, upload_id, **kwargs)

    monkeypatch.setattr(image_step, "collect_images", delete_first)
    upload = upload_file(db, home, "acme", _po(tmp_path, image_server))

    result = run_upload(defs, instance, db, upload.id)

    assert result.success, result.error
    assert status_report(db, upload.id).workflow.status == "completed"
    assert result.images["images_attached"] == 1 and result.images["skipped"] == 1
    assert _states(db)["P-1"] == [("skipped", "the product no longer exists on Shopify; skipped")]
    meta = _image_metadata(instance, result.run_id)
    assert "P-1" in meta["notes"] and "no longer exists" in meta["notes"]


def _delete_product(shop, gid: str) -> None:
    from poflow_dagster import config
    from poflow_dagster.shopify.client import ShopifyClient

    with ShopifyClient(shop.url, "test-token", config.shopify_api_version()) as client:
        done = client.execute("mutation($id: ID!) { productDelete(input: {id: $id}) { deletedProductId } }",
                              {"id": gid})
    assert done["productDelete"]["deletedProductId"] == gid


def test_a_po_held_for_review_stores_its_images_and_attaches_them_after_approval(home, db, shop, instance,
                                                                                   image_server, allowed, tmp_path):
    upload = upload_file(db, home, "acme", _po(tmp_path, image_server, total="99.00"))  # subtotal contradicts

    first = run_upload(defs, instance, db, upload.id)

    assert first.success and first.summary["status"] == "needs_review"
    assert first.images["images_attached"] == 0 and first.images["attach"] == image_step.HELD
    assert shop.count_products() == 0 and emulator_media.media_rows(shop) == []
    assert _states(db)["P-1"] == [("fetched", None)]  # fetched and stored, waiting for the approval
    assert status_report(db, upload.id).upload.status == "needs_review"  # images never change the PO's status

    approve_upload(db, upload.id, "reviewer@acme")
    second = run_upload(defs, instance, db, upload.id)

    assert second.success and second.summary["status"] == "completed"
    assert second.images["images_attached"] == 2 and second.images["reused"] >= 1
    assert image_server.hits["/png"] == 1  # the stored image is attached, not fetched again
    links = _links(db)
    assert [len(emulator_media.media_rows(shop, links[s][0])) for s in ("P-1", "P-2", "P-3")] == [1, 0, 1]


def test_sync_off_fetches_and_stores_only(home, db, shop, instance, image_server, allowed, tmp_path):
    with db.session() as session:
        configure_merchant(session, "quiet", shopify_sync_enabled=False)
    upload = upload_file(db, home, "quiet", _po(tmp_path, image_server))

    result = run_upload(defs, instance, db, upload.id)

    assert result.success and result.images["attach"] == image_step.SYNC_OFF
    assert result.images["fetched"] == 2 and result.images["images_attached"] == 0
    assert _states(db)["P-3"] == [("rejected", "too_many_pixels"), ("fetched", None)]
    assert emulator_media.media_rows(shop) == []
    meta = _image_metadata(instance, result.run_id)
    assert "Shopify sync is off" in meta["notes"]


def test_no_image_anywhere_is_skipped_with_a_clear_note(home, db, shop, instance, samples, allowed):
    upload = upload_file(db, home, "acme", samples["acme-po-1001.csv"])
    result = run_upload(defs, instance, db, upload.id)
    assert result.success and result.images["reason"] == image_step.NO_IMAGE_SOURCE
    assert _image_signals(db, result.run_id)[:2] == ("skipped", 0)
    meta = _image_metadata(instance, result.run_id)
    assert meta["outcome"] == "skipped" and "no image source is configured" in meta["notes"]
    assert isinstance(meta["counts"], dict)


def test_shopify_attach_skips_drafts_without_a_product_and_stops_asking_a_shop_that_is_away(
        db, shop, image_server, allowed, tmp_path):
    import socket

    from poflow_dagster.images.collect import collect_images
    from poflow_dagster.images.shopify_attach import (
        NO_PRODUCT,
        OTHER_SHOP,
        ShopifyAttach,
    )
    from poflow_dagster.images.store import stored_images
    from poflow_dagster.shopify.client import ShopifyClient
    from poflow_dagster.store.drafts import drafts_for_upload, record_shopify_links
    from poflow_dagster_tests.test_image_collect import _settings, _upload

    upload = _upload(db, {"A": [image_server.url("/png")], "B": [image_server.url("/png?b")]})
    collect_images(db, upload, settings=_settings(tmp_path))  # fetched and stored, nothing attached
    a, b = drafts_for_upload(db, upload)
    image = stored_images(db, "m1", {hashlib.sha256(png_bytes()).hexdigest()}, tmp_path / "images").popitem()[1]
    record_shopify_links(db, "https://elsewhere.myshopify.com",
                         [(b.id, "b", "gid://shopify/Product/9", "gid://shopify/ProductVariant/9", 0)])
    with ShopifyClient(shop.url, "test-token") as client:
        attach = ShopifyAttach(db, client, shop.url)
        assert (attach(a, image).outcome, attach(a, image).reason) == ("skipped", NO_PRODUCT)
        assert (attach(b, image).outcome, attach(b, image).reason) == ("skipped", OTHER_SHOP)

    with socket.socket() as probe:  # a port nobody listens on: the shop is away
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    record_shopify_links(db, dead, [(a.id, "a", "gid://shopify/Product/1", "gid://shopify/ProductVariant/1", 0)])
    with ShopifyClient(dead, "test-token", max_attempts=1, backoff_base=0.01) as client:
        attach = ShopifyAttach(db, client, dead)
        first = attach(a, image)
        assert (first.outcome, first.reason) == ("failed", "shopify_unreachable")
        second = attach(a, image)
        assert (second.outcome, second.reason) == ("failed", first.reason) and "failed earlier" in second.note
