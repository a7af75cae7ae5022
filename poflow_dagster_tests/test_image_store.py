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
