"""Content-addressed image storage, the database ETag cache (both databases) and perceptual de-duplication."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import sqlalchemy as sa

from poflow_dagster.images.dedup import PHASH_MAX_DISTANCE, choose, phash_distance
from poflow_dagster.images.fetch import FetchSettings, ImageRequest, fetch_images
from poflow_dagster.images.net_policy import AllowList
from poflow_dagster.images.store import DbEtagCache, store_image, stored_images
from poflow_dagster.images.validate import validate_image
from poflow_dagster.store.merchants import ensure_merchant
from poflow_dagster.store.schema import ImageRow, ImageUrlRow
from poflow_dagster_tests.image_server import image_server, jpeg_bytes, png_bytes, webp_bytes  # noqa: F401


def _merchant(db, merchant_id: str = "m1") -> str:
    with db.session() as session:
        ensure_merchant(session, merchant_id)
    return merchant_id


def test_an_image_is_stored_once_per_merchant_by_content(db, tmp_path):
    _merchant(db, "m1"), _merchant(db, "m2")
    tmp_path = tmp_path / "images"
    image = validate_image(png_bytes())
    first = store_image(db, "m1", image, png_bytes(), tmp_path)
    path = tmp_path / image.sha256[:2] / f"{image.sha256}.png"
    assert first.path == path and path.read_bytes() == png_bytes()
    written = path.stat().st_mtime_ns
    again = store_image(db, "m1", image, png_bytes(), tmp_path)
    other = store_image(db, "m2", image, png_bytes(), tmp_path)
    assert again.id == first.id and other.id != first.id
    assert path.stat().st_mtime_ns == written  # never rewritten
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [path.name]  # no temporary file left
    with db.session() as session:
        rows = session.scalars(sa.select(ImageRow).order_by(ImageRow.id)).all()
    assert [(r.merchant_id, r.sha256, r.width, r.height, r.byte_size, r.mime_type, r.phash) for r in rows] == [
        ("m1", image.sha256, 400, 300, len(png_bytes()), "image/png", image.phash),
        ("m2", image.sha256, 400, 300, len(png_bytes()), "image/png", image.phash)]
    assert set(stored_images(db, "m1", {image.sha256, "0" * 64}, tmp_path)) == {image.sha256}
    path.unlink()
    assert stored_images(db, "m1", {image.sha256}, tmp_path) == {}
    assert set(stored_images(db, "m1", {image.sha256}, tmp_path, require_file=False)) == {image.sha256}


def test_the_database_etag_cache_serves_fetch_images(db, image_server):
    cache = DbEtagCache(db, _merchant(db))
    settings = FetchSettings(allow=AllowList.parse("127.0.0.1"))
    url = image_server.url("/etag.png")
    [first] = fetch_images([ImageRequest(url)], cache=cache, settings=settings)
    [second] = fetch_images([ImageRequest(url)], cache=cache, settings=settings)
    assert (first.status, second.status) == ("fetched", "not_modified")
    assert second.sha256 == hashlib.sha256(png_bytes()).hexdigest()
    assert image_server.seen[-1][1].get("If-None-Match") == '"v1"'
    assert cache.get(url) == ('"v1"', second.sha256)
    known = cache.known([url, "https://x.example/none.png"])
    assert list(known) == [url] and known[url].fresh(dt.timedelta(hours=1))
    assert not known[url].fresh(dt.timedelta(hours=1), known[url].fetched_at + dt.timedelta(hours=2))


def test_a_failure_keeps_what_an_earlier_fetch_gave(db):
    cache = DbEtagCache(db, _merchant(db))
    cache.record("https://c.example/a.png", status="fetched", etag='"e"', sha256="a" * 64)
    cache.record("https://c.example/a.png", status="failed", reason="timeout")
    cache.record("https://c.example/b.png", status="failed", reason="http_404")
    with db.session() as session:
        rows = {r.url: r for r in session.scalars(sa.select(ImageUrlRow))}
    assert (rows["https://c.example/a.png"].sha256, rows["https://c.example/a.png"].etag) == ("a" * 64, '"e"')
    assert rows["https://c.example/a.png"].reason == "timeout"
    assert (rows["https://c.example/b.png"].sha256, rows["https://c.example/b.png"].reason) == (None, "http_404")
    assert cache.get("https://c.example/b.png") is None


@dataclass
class _Img:
    sha256: str
    phash: str
    width: int
    height: int
    byte_size: int


def _img(data: bytes) -> _Img:
    v = validate_image(data)
    return _Img(v.sha256, v.phash, v.width, v.height, v.byte_length)


def test_the_same_picture_at_two_sizes_or_formats_is_kept_once_largest():
    small, large, png, webp = (_img(jpeg_bytes(200, 150)), _img(jpeg_bytes(800, 600)), _img(png_bytes()),
                               _img(webp_bytes()))
    assert phash_distance(small.phash, large.phash) <= PHASH_MAX_DISTANCE
    verdict = choose([small, large, png, webp])
    assert verdict.kept == [1]
    assert verdict.duplicate_of == {0: large.sha256, 2: large.sha256, 3: large.sha256}


def test_same_pixels_prefer_more_bytes_and_different_pictures_are_all_kept():
    a = _Img("a" * 64, "ffff0000ffff0000", 400, 300, 1000)
    b = _Img("b" * 64, "ffff0000ffff0001", 400, 300, 2000)  # 1 bit away: the same picture, more bytes
    c = _Img("c" * 64, "0000ffff0000ffff", 400, 300, 5000)  # far away: another picture
    same = _Img("a" * 64, "0123456789abcdef", 10, 10, 10)  # same sha256 as ``a``: the same image whatever else
    verdict = choose([a, b, c, same])
    assert verdict.kept == [1, 2]
    assert verdict.duplicate_of == {0: "b" * 64, 3: "b" * 64}
    assert phash_distance("zz", "00") == 64
    assert choose([]).kept == []


def test_a_batch_of_images_and_url_outcomes_goes_in_one_transaction(db, tmp_path):
    from poflow_dagster.images.store import UrlOutcome, ensure_images, record_urls, write_image_file

    merchant = _merchant(db)
    images = [validate_image(png_bytes()), validate_image(jpeg_bytes()), validate_image(webp_bytes())]
    for image, data in zip(images, [png_bytes(), jpeg_bytes(), webp_bytes()], strict=True):
        write_image_file(image, data, tmp_path)
    first = store_image(db, merchant, images[0], png_bytes(), tmp_path)  # one of them is there already
    cache = DbEtagCache(db, merchant)
    cache.record("https://c.example/a.png", status="fetched", etag='"e"', sha256=images[0].sha256)
    commits: list[int] = []

    def count(_connection) -> None:
        commits.append(1)

    sa.event.listen(db.engine, "commit", count)
    try:
        with db.session() as session:
            stored = ensure_images(session, merchant, images + [images[1]], tmp_path)
            record_urls(session, merchant, [
                UrlOutcome("https://c.example/a.png", "failed", reason="timeout"),
                UrlOutcome("https://c.example/b.jpg", "fetched", etag='"b"', sha256=images[1].sha256),
                UrlOutcome("https://c.example/c.webp", "failed", reason="http_404"),
                UrlOutcome("https://c.example/c.webp", "fetched", sha256=images[2].sha256)])  # the last one wins
    finally:
        sa.event.remove(db.engine, "commit", count)
    assert len(commits) == 1
    assert set(stored) == {i.sha256 for i in images} and stored[images[0].sha256].id == first.id
    assert all(s.path.is_file() for s in stored.values())
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(ImageRow.id))) == 3
        rows = {r.url: r for r in session.scalars(sa.select(ImageUrlRow))}
    assert (rows["https://c.example/a.png"].status, rows["https://c.example/a.png"].sha256) == (
        "failed", images[0].sha256)  # a failure keeps what the earlier fetch gave
    assert (rows["https://c.example/b.jpg"].etag, rows["https://c.example/b.jpg"].sha256) == ('"b"', images[1].sha256)
    assert (rows["https://c.example/c.webp"].status, rows["https://c.example/c.webp"].reason) == ("fetched", None)


def test_queued_writes_skip_a_deleted_draft_and_run_only_the_others_callbacks(db, tmp_path):
    from decimal import Decimal

    from poflow_dagster.domain.models import ParsedPO, POLine
    from poflow_dagster.images.writes import Writes
    from poflow_dagster.store.drafts import create_drafts_for_po
    from poflow_dagster.store.purchase_orders import save_purchase_order
    from poflow_dagster.store.schema import DraftImage, ProductDraft
    from poflow_dagster.store.uploads import StoredFile, register_upload

    merchant = _merchant(db)
    upload = register_upload(db, merchant, StoredFile(sha256="f" * 64, size_bytes=1, mime_type="text/csv",
                                                      stored_path="/tmp/x.csv", original_filename="x.csv"))
    po = ParsedPO(po_number="PO-W", supplier_name="Acme", currency="USD", source_format="csv", extractor="test",
                  lines=[POLine(line_no=i, sku=sku, description=sku, quantity=Decimal(1), unit_cost=Decimal("1.00"),
                                line_total=Decimal("1.00")) for i, sku in enumerate(["KEEP", "GONE"], start=1)])
    save_purchase_order(db, upload.id, po)
    create_drafts_for_po(db, upload.id, po)
    with db.session() as session:
        drafts = {d.sku: d.id for d in session.scalars(sa.select(ProductDraft))}
        rows = {sku: DraftImage(draft_id=draft_id, merchant_id=merchant, upload_id=upload.id, candidate_key=sku,
                                source="document", url=f"https://c.example/{sku}", position=0, state="found")
                for sku, draft_id in drafts.items()}
        session.add_all(rows.values())
    image = validate_image(png_bytes())
    writes = Writes(db, merchant, tmp_path)
    writes.add_image(image)
    ran: list[str] = []
    for sku, row in rows.items():
        row.state, row.sha256 = "fetched", image.sha256
        writes.touch(drafts[sku], row, lambda sku=sku: ran.append(sku))
    with db.session() as session:
        session.execute(sa.delete(ProductDraft).where(ProductDraft.sku == "GONE"))
    flushed = writes.flush()
    for callback in flushed.then:
        callback()
    assert flushed.gone == {drafts["GONE"]} and ran == ["KEEP"]
    assert not writes and writes.transactions == 1 and writes.flush().images == {}
    with db.session() as session:
        [kept] = session.scalars(sa.select(DraftImage)).all()
    assert (kept.candidate_key, kept.state, kept.image_id) == ("KEEP", "fetched", flushed.images[image.sha256].id)
