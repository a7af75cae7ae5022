"""collect_images on both databases against the local image server: sources in order, de-duplication, no request
for known URLs, refusals by reason, deleted drafts, idempotent re-runs and progressive attaching."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.images.collect import ImageSettings, collect_images
from poflow_dagster.images.fetch import FetchSettings
from poflow_dagster.images.store import StoredImage
from poflow_dagster.store.drafts import DraftRecord, create_drafts_for_po
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.parse_cache import store_parse
from poflow_dagster.store.purchase_orders import save_purchase_order
from poflow_dagster.store.schema import DraftImage, ImageRow, ImageUrlRow, ProductDraft
from poflow_dagster.store.uploads import StoredFile, register_upload
from poflow_dagster_tests.image_server import ImageServer, image_server, png_bytes  # noqa: F401


@pytest.fixture
def allowed(monkeypatch):
    monkeypatch.setenv("POFLOW_IMAGE_ALLOWED_HOSTS", "127.0.0.1")


def _settings(tmp_path: Path, **overrides) -> ImageSettings:
    fetch = FetchSettings.from_env(backoff=0.01, retries=1)
    assert fetch.allow.permits("127.0.0.1", 80, "127.0.0.1")  # POFLOW_IMAGE_ALLOWED_HOSTS is read
    return ImageSettings(**{"fetch": fetch, "root": tmp_path / "images", **overrides})


def _upload(db, lines: dict[str, list[str]], *, merchant: str = "m1", number: str = "1") -> str:
    """An upload of ``merchant`` whose PO has one line per SKU with these image URLs; saved, drafted, parsed."""
    sha = hashlib.sha256(f"{merchant}-{number}".encode()).hexdigest()
    upload = register_upload(db, merchant, StoredFile(sha256=sha, size_bytes=10, mime_type="text/csv",
                                                      stored_path=f"/tmp/{number}.csv", original_filename="po.csv"))
    po = ParsedPO(po_number=f"PO-{number}", supplier_name="Acme", currency="USD", source_format="csv",
                  extractor="test", lines=[
                      POLine(line_no=i, sku=sku, description=f"Item {sku}", quantity=Decimal("1"),
                             unit_cost=Decimal("2.00"), line_total=Decimal("2.00"), image_urls=urls)
                      for i, (sku, urls) in enumerate(lines.items(), start=1)])
    save_purchase_order(db, upload.id, po)
    create_drafts_for_po(db, upload.id, po)
    store_parse(db, upload.id, sha, po)
    return upload.id


@dataclass
class _Answer:
    outcome: str
    media_gid: str | None = None
    reason: str | None = None


class _Attach:
    """A fake attach that records its calls."""

    def __init__(self, then=None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.then = then

    def __call__(self, draft: DraftRecord, image: StoredImage) -> _Answer:
        assert image.path.read_bytes()  # the stored file is there to upload
        self.calls.append((draft.sku, image.sha256))
        if self.then:
            self.then(draft)
        return _Answer("attached", f"gid://shopify/MediaImage/{len(self.calls)}")


def _rows(db) -> dict[tuple[str, str | None], DraftImage]:
    with db.session() as session:
        out = {}
        for row, sku in session.execute(sa.select(DraftImage, ProductDraft.sku).join(ProductDraft)):
            out[(sku, row.url)] = row
        return out


def _url_path(server: ImageServer, url: str | None) -> str | None:
    return url.replace(server.url(""), "") if url else None


def test_two_sizes_of_one_picture_are_kept_once_largest(db, image_server, allowed, tmp_path):
    small, large = image_server.url("/pic-small.jpg"), image_server.url("/pic-large.jpg")
    upload = _upload(db, {"A": [small, large]})
    attach = _Attach()
    run = collect_images(db, upload, settings=_settings(tmp_path), attach=attach)
    rows = _rows(db)
    assert (run.found, run.fetched, run.deduplicated, run.attached) == (2, 2, 1, 1)
    assert rows[("A", large)].state == "attached" and rows[("A", large)].media_gid == "gid://shopify/MediaImage/1"
    assert rows[("A", small)].state == "duplicate"
    assert rows[("A", small)].duplicate_of == rows[("A", large)].sha256
    assert attach.calls == [("A", rows[("A", large)].sha256)]


def test_same_bytes_from_two_urls_are_stored_once(db, image_server, allowed, tmp_path):
    upload = _upload(db, {"A": [image_server.url("/png?i=1")], "B": [image_server.url("/png?i=2")]})
    run = collect_images(db, upload, settings=_settings(tmp_path), attach=_Attach())
    sha = hashlib.sha256(png_bytes()).hexdigest()
    with db.session() as session:
        images = session.scalars(sa.select(ImageRow)).all()
    assert [(i.sha256, i.width, i.height, i.mime_type) for i in images] == [(sha, 400, 300, "image/png")]
    assert sorted(p.name for p in (tmp_path / "images").rglob("*") if p.is_file()) == [f"{sha}.png"]
    assert (tmp_path / "images" / sha[:2] / f"{sha}.png").read_bytes() == png_bytes()
    assert run.fetched == 2 and run.attached == 2  # the same image may belong to two products


def test_a_second_po_makes_no_request_for_known_urls(db, image_server, allowed, tmp_path):
    url = image_server.url("/jpeg")
    first = _upload(db, {"A": [url]}, number="1")
    collect_images(db, first, settings=_settings(tmp_path), attach=_Attach())
    assert image_server.hits["/jpeg"] == 1
    second = _upload(db, {"B": [url]}, number="2")
    attach = _Attach()
    run = collect_images(db, second, settings=_settings(tmp_path), attach=attach)
    assert image_server.hits["/jpeg"] == 1  # reused: no request at all
    assert (run.reused, run.fetched, run.attached) == (1, 0, 1)
    assert [sku for sku, _ in attach.calls] == ["B"]
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(ImageUrlRow.id))) == 1
        assert session.scalar(sa.select(sa.func.count(ImageRow.id))) == 1


def test_an_old_known_url_is_revalidated_with_its_etag(db, image_server, allowed, tmp_path):
    url = image_server.url("/etag.png")
    collect_images(db, _upload(db, {"A": [url]}, number="1"), settings=_settings(tmp_path))
    stale = _settings(tmp_path, revalidate_after=dt.timedelta(0))
    run = collect_images(db, _upload(db, {"B": [url]}, number="2"), settings=stale)
    assert image_server.hits["/etag.png"] == 2
    assert image_server.seen[-1][1].get("If-None-Match") == '"v1"'
    assert (run.not_modified, run.fetched, run.reused) == (1, 0, 0)
    assert _rows(db)[("B", url)].state == "fetched"


def test_refused_images_are_counted_by_reason(db, image_server, allowed, tmp_path):
    paths = ["/missing", "/not-image.png", "/tiny.png", "/bomb.png", "/redirect-metadata", "/truncated.png"]
    upload = _upload(db, {"A": [image_server.url(p) for p in paths]})
    events: list[tuple[str, dict]] = []
    run = collect_images(db, upload, settings=_settings(tmp_path), attach=_Attach(),
                         on_event=lambda kind, payload: events.append((kind, payload)))
    assert run.rejected == Counter({"http_404": 1, "not_an_image": 1, "too_small": 1, "too_many_pixels": 1,
                                    "redirect_blocked": 1, "decode_error": 1})
    rows = _rows(db)
    assert {_url_path(image_server, url): row.reason.split(":")[0] for (_, url), row in rows.items()} == {
        "/missing": "http_404", "/not-image.png": "not_an_image", "/tiny.png": "too_small",
        "/bomb.png": "too_many_pixels", "/redirect-metadata": "redirect_blocked", "/truncated.png": "decode_error"}
    assert all(row.state == "rejected" for row in rows.values())
    assert Counter(kind for kind, _ in events) == Counter({"found": 6, "rejected": 6})
    assert run.attached == 0
    hits = sum(image_server.hits.values())
    again = collect_images(db, upload, settings=_settings(tmp_path))  # refused for good: not asked again
    assert sum(image_server.hits.values()) == hits and again.rejected == run.rejected


def test_a_draft_deleted_mid_run_is_skipped_with_a_note(db, image_server, allowed, tmp_path):
    upload = _upload(db, {"A": [image_server.url("/png")], "B": [image_server.url("/slow?ms=800")]})

    def delete_b(draft: DraftRecord) -> None:
        with db.session() as session:
            session.execute(sa.delete(ProductDraft).where(ProductDraft.sku == "B"))

    attach = _Attach(then=delete_b)
    run = collect_images(db, upload, settings=_settings(tmp_path), attach=attach)
    assert [sku for sku, _ in attach.calls] == ["A"]
    assert run.skipped == 1 and run.attached == 1
    assert any("was deleted while its images ran" in note and "(B)" in note for note in run.notes)
    assert [sku for sku, _ in _rows(db)] == ["A"]  # B's rows went with it


def test_a_rerun_attaches_nothing_twice_and_fetches_nothing(db, image_server, allowed, tmp_path):
    upload = _upload(db, {"A": [image_server.url("/png"), image_server.url("/webp")], "B": [image_server.url("/jpeg")]})
    attach = _Attach()
    first = collect_images(db, upload, settings=_settings(tmp_path), attach=attach)
    hits = sum(image_server.hits.values())
    calls = list(attach.calls)
    second = collect_images(db, upload, settings=_settings(tmp_path), attach=attach)
    assert attach.calls == calls  # nothing attached twice
    assert sum(image_server.hits.values()) == hits
    assert (first.found, first.attached) == (3, 2) and first.deduplicated == 1  # PNG and WebP: one picture
    assert (second.found, second.fetched, second.attached, second.already_attached) == (0, 0, 0, 2)
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(DraftImage.id))) == 3


def test_images_attach_progressively_before_the_last_fetch_lands(db, image_server, allowed, tmp_path):
    upload = _upload(db, {"SLOW": [image_server.url("/slow?ms=1500")], "FAST": [image_server.url("/jpeg")]})
    events: list[tuple[str, str]] = []
    seen_slow_hits: list[int] = []

    def note(draft: DraftRecord) -> None:
        rows = _rows(db)
        seen_slow_hits.append(rows[("SLOW", image_server.url("/slow?ms=1500"))].state == "found")

    run = collect_images(db, upload, settings=_settings(tmp_path), attach=_Attach(then=note),
                         on_event=lambda kind, payload: events.append((kind, payload["sku"])))
    assert run.attached == 2
    assert events.index(("attached", "FAST")) < events.index(("fetched", "SLOW"))
    assert seen_slow_hits[0] is True  # FAST was attached while SLOW was still being fetched


def test_sources_are_tried_in_order_and_only_failures_fall_through(db, image_server, allowed, tmp_path):
    feed = tmp_path / "feed.json"
    feed.write_text(json.dumps({"A": [image_server.url("/webp")], "B": [image_server.url("/png")],
                                "C": [image_server.url("/missing?feed")]}))
    with db.session() as session:
        configure_merchant(session, "m1", image_feed_url=str(feed))

    class Search:
        calls: list[str] = []

        def search(self, *, sku: str, title: str, vendor: str | None) -> list[str]:
            self.calls.append(f"{sku}|{title}|{vendor}")
            return [image_server.url("/gif-animated")]

    search = Search()
    upload = _upload(db, {"A": [image_server.url("/jpeg")], "B": [image_server.url("/missing")], "C": [], "D": []})
    run = collect_images(db, upload, settings=_settings(tmp_path, search=search), attach=_Attach())
    rows = _rows(db)
    assert {(sku, row.source, _url_path(image_server, url), row.state) for (sku, url), row in rows.items()} == {
        ("A", "document", "/jpeg", "attached"),
        ("B", "document", "/missing", "rejected"), ("B", "feed", "/png", "attached"),
        ("C", "feed", "/missing?feed", "rejected"), ("C", "search", "/gif-animated", "attached"),
        ("D", "search", "/gif-animated", "attached"),
    }
    assert image_server.hits["/webp"] == 0  # A's document image was good: the feed was not used for it
    assert search.calls == ["C|Item C|Acme", "D|Item D|Acme"]
    assert run.attached == 4


def test_embedded_images_are_used_without_a_request(db, image_server, allowed, tmp_path):
    uri = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    upload = _upload(db, {"A": [uri]})
    attach = _Attach()
    run = collect_images(db, upload, settings=_settings(tmp_path), attach=attach)
    assert sum(image_server.hits.values()) == 0
    assert attach.calls == [("A", hashlib.sha256(png_bytes()).hexdigest())]
    assert (run.found, run.fetched, run.attached) == (1, 0, 1)
    [row] = _rows(db).values()
    assert row.url is None and row.source == "document" and row.candidate_key.startswith("embedded:")


def test_attach_failures_and_gone_products_are_recorded_never_raised(db, image_server, allowed, tmp_path):
    upload = _upload(db, {"A": [image_server.url("/png")], "B": [image_server.url("/jpeg")],
                          "C": [image_server.url("/webp?c")]})

    def attach(draft: DraftRecord, image: StoredImage):
        if draft.sku == "A":
            return {"outcome": "product_gone", "reason": "the product was deleted in Shopify"}
        if draft.sku == "B":
            raise RuntimeError("boom")
        return _Answer("failed", reason="media_failed")

    run = collect_images(db, upload, settings=_settings(tmp_path), attach=attach)
    states = {sku: (row.state, row.reason) for (sku, _), row in _rows(db).items()}
    assert states["A"] == ("skipped", "the product was deleted in Shopify")
    assert states["B"][0] == "failed" and "boom" in states["B"][1]
    assert states["C"] == ("failed", "media_failed")
    assert (run.skipped, run.attach_failed, run.attached) == (1, 2, 0)


def test_without_attach_images_are_fetched_and_recorded(db, image_server, allowed, tmp_path):
    upload = _upload(db, {"A": [image_server.url("/png")]})
    run = collect_images(db, upload, settings=_settings(tmp_path))
    assert (run.drafts, run.found, run.fetched, run.attached) == (1, 1, 1, 0)
    assert [row.state for row in _rows(db).values()] == ["fetched"]
    assert set(run.to_dict()) >= {"sources_s", "fetch_s", "attach_s", "rejected", "deduplicated", "reused"}


def test_an_unreadable_feed_leaves_a_note_and_search_still_runs(db, image_server, allowed, tmp_path):
    bad = tmp_path / "feed.csv"
    bad.write_text("name,price\nx,1\n")  # no sku / image columns
    with db.session() as session:
        configure_merchant(session, "m1", image_feed_url=str(bad))

    class Search:
        def search(self, *, sku: str, title: str, vendor: str | None) -> list[str]:
            return [image_server.url("/png")]

    run = collect_images(db, _upload(db, {"A": []}), settings=_settings(tmp_path, search=Search()), attach=_Attach())
    assert any(note.startswith("image feed not used: bad_image_feed") for note in run.notes)
    assert run.attached == 1 and [row.source for row in _rows(db).values()] == ["search"]


def test_cli_merchant_set_image_feed(home, db_url, tmp_path):
    feed = tmp_path / "feed.json"
    feed.write_text("{}")
    env = {**os.environ, "POFLOW_HOME": str(home), "POFLOW_DATABASE_URL": db_url}
    run = [sys.executable, "-m", "poflow_dagster.cli", "merchant", "set", "acme", "--image-feed"]
    ok = subprocess.run([*run, str(feed)], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert f"image feed {feed.resolve()}" in ok.stdout
    bad = subprocess.run([*run, "ftp://x.example/f.csv"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode != 0 and "invalid_image_feed" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


def test_results_landing_together_are_stored_in_one_transaction(db, image_server, allowed, tmp_path):
    lines = {f"S{i}": [image_server.url(f"/png?i={i}"), image_server.url(f"/jpeg?i={i}")] for i in range(12)}
    upload = _upload(db, lines)
    # a window longer than the whole fetch: every result lands in one batch
    run = collect_images(db, upload, settings=_settings(tmp_path, batch_window=30.0), attach=_Attach())
    assert (run.found, run.fetched, run.attached, run.deduplicated) == (24, 24, 12, 12)
    assert run.transactions == 2  # the batch's images, URLs and states; then the 12 attach outcomes
    rows = _rows(db)
    assert Counter(row.state for row in rows.values()) == Counter({"attached": 12, "duplicate": 12})
    with db.session() as session:
        images = {i.sha256: i.id for i in session.scalars(sa.select(ImageRow))}
        urls = session.scalars(sa.select(ImageUrlRow)).all()
    assert len(images) == 2 and len(urls) == 24 and {u.status for u in urls} == {"fetched"}
    assert all(row.image_id == images[row.sha256] for row in rows.values())  # ids of rows inserted in the batch
    assert all((tmp_path / "images" / sha[:2]).is_dir() for sha in images)  # files written before their rows


def test_a_batch_of_one_image_each_is_small(db, image_server, allowed, tmp_path):
    upload = _upload(db, {"A": [image_server.url("/png")], "B": [image_server.url("/slow?ms=600")]})
    run = collect_images(db, upload, settings=_settings(tmp_path, batch_window=0.05, batch_size=1), attach=_Attach())
    assert run.attached == 2 and run.transactions == 4  # per batch: its rows, then its attach outcome


def test_a_rerun_rewrites_no_unchanged_row_and_counts_only_what_it_did(db, image_server, allowed, tmp_path):
    small, large = image_server.url("/pic-small.jpg"), image_server.url("/pic-large.jpg")
    upload = _upload(db, {"A": [small, large], "B": [image_server.url("/missing")]})
    first = collect_images(db, upload, settings=_settings(tmp_path), attach=_Attach())
    assert (first.deduplicated, first.already_duplicate, first.attached) == (1, 0, 1)
    before = {key: (row.state, row.updated_at) for key, row in _rows(db).items()}
    events: list[str] = []
    again = collect_images(db, upload, settings=_settings(tmp_path), attach=_Attach(),
                           on_event=lambda kind, _payload: events.append(kind))
    assert (again.deduplicated, again.already_duplicate, again.already_attached, again.attached) == (0, 1, 1, 0)
    assert again.rejected == Counter({"http_404": 1})  # still refused, by reason
    assert {key: (row.state, row.updated_at) for key, row in _rows(db).items()} == before  # nothing rewritten
    assert again.transactions == 0 and events == []
    third = collect_images(db, upload, settings=_settings(tmp_path))  # without attach: the same answer
    assert (third.deduplicated, third.already_duplicate, third.transactions) == (0, 1, 0)


def test_a_duplicate_of_an_image_now_refused_is_kept_and_attached(db, image_server, allowed, tmp_path):
    small, large = image_server.url("/pic-small.jpg"), image_server.url("/pic-large.jpg")
    upload = _upload(db, {"A": [small, large]})
    collect_images(db, upload, settings=_settings(tmp_path))  # no attach: large kept, small a duplicate
    with db.session() as session:  # the large one's URL was refused since, for good
        session.execute(sa.update(ImageUrlRow).where(ImageUrlRow.url == large)
                        .values(sha256=None, status="failed", reason="http_404"))
    attach = _Attach()
    run = collect_images(db, upload, settings=_settings(tmp_path), attach=attach)
    rows = _rows(db)
    assert (rows[("A", large)].state, rows[("A", small)].state) == ("rejected", "attached")
    assert rows[("A", small)].duplicate_of is None
    assert attach.calls == [("A", rows[("A", small)].sha256)] and run.already_duplicate == 0


def test_a_collector_that_stops_taking_results_never_leaves_the_fetcher_blocked(image_server, allowed, tmp_path):
    from poflow_dagster.images.collect import _Fetching
    from poflow_dagster.images.fetch import ImageRequest

    requests = [ImageRequest(image_server.url(f"/png?i={i}")) for i in range(30)]
    fetching = _Fetching(requests, {}, _settings(tmp_path, batch_size=1))  # a queue of 20: the rest must wait
    first = fetching.next_batch(1, 0.0)
    assert [r.status for r in first] == ["fetched"] and first[0].data == png_bytes()
    fetching.close()  # as when storing a batch raised
    fetching._thread.join(timeout=60)
    assert not fetching._thread.is_alive()
    assert sum(image_server.hits.values()) == 30  # every request was still made and its result dropped
