"""Image sources: picture columns and cells, supplier feeds (CSV / JSON, local or over HTTP with an ETag), the
search provider (off by default, a URL template when on) and the document source with embedded images."""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.images.feed import is_image_header, load_feed, parse_feed, split_urls
from poflow_dagster.images.fetch import FetchSettings
from poflow_dagster.images.net_policy import AllowList
from poflow_dagster.images.search import HttpSearchProvider, search_from_env
from poflow_dagster.images.sources import DocumentSource, DraftInfo, FeedSource, SearchSource, decode_data_uri
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster_tests.image_server import png_bytes

SETTINGS = FetchSettings(allow=AllowList.parse("127.0.0.1"), backoff=0.01, retries=1)
CSV_FEED = "SKU,Image URL,Image 2,Price\nab-12,https://cdn.example.com/a1.jpg,https://cdn.example.com/a2.jpg | " \
           "https://cdn.example.com/a3.jpg,9.99\nB7,,https://cdn.example.com/b.png,1\n"


class _Docs:
    """A tiny HTTP server for feeds and search answers: ``/feed.json`` (ETag ``"f1"``, 304 on match), ``/feed.csv``,
    ``/search?sku=&title=&vendor=`` (echoes what it got as image URLs), ``/search-bad`` (not JSON)."""

    def __init__(self) -> None:
        owner = self
        self.hits: Counter[str] = Counter()
        self.queries: list[dict[str, str]] = []
        self.if_none_match: list[str | None] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                owner.hits[parts.path] += 1
                if parts.path == "/feed.json":
                    owner.if_none_match.append(self.headers.get("If-None-Match"))
                    if self.headers.get("If-None-Match") == '"f1"':
                        return self._send(304, b"", {"ETag": '"f1"'})
                    body = json.dumps([{"sku": "AB 12", "images": ["https://cdn.example.com/j.jpg"]}]).encode()
                    return self._send(200, body, {"ETag": '"f1"', "Content-Type": "application/json"})
                if parts.path == "/feed.csv":
                    return self._send(200, CSV_FEED.encode(), {"Content-Type": "text/csv"})
                if parts.path == "/search":
                    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                    owner.queries.append(query)
                    images = [{"url": f"https://img.example.com/{n}.jpg"} for n in range(5)]
                    return self._send(200, json.dumps({"images": images}).encode(), {})
                if parts.path == "/search-list":
                    return self._send(200, json.dumps(["https://img.example.com/x.jpg"]).encode(), {})
                if parts.path == "/search-bad":
                    return self._send(200, b"<html>", {})
                return self._send(404, b"", {})

            def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"


@pytest.fixture
def docs() -> Iterator[_Docs]:
    server = _Docs()
    server._thread.start()
    try:
        yield server
    finally:
        server._httpd.shutdown()
        server._httpd.server_close()
        server._thread.join(timeout=10)


def _draft(sku: str, title: str = "Blue Mug", vendor: str | None = "Acme & Sons") -> DraftInfo:
    return DraftInfo(1, sku, title, vendor)


def test_picture_column_headings_are_recognised():
    for heading in ("Image", "image url", "Image_URL", "Picture", "photo", "Photo URL", "Bild", "Imagen",
                    "image 2", "Product Image", "images", "img_src", "Foto"):
        assert is_image_header(heading), heading
    for heading in ("SKU", "Description", "Image size", "Picture frame colour", "Unit cost"):
        assert not is_image_header(heading), heading


def test_a_cell_may_hold_several_urls_with_any_separator():
    cell = "https://a.example/1.jpg, https://a.example/2.jpg;https://a.example/3.jpg | http://a.example/4.png " \
           "https://a.example/1.jpg not-a-url ftp://a.example/5.jpg"
    assert split_urls(cell) == ["https://a.example/1.jpg", "https://a.example/2.jpg", "https://a.example/3.jpg",
                                "http://a.example/4.png"]
    assert split_urls(None) == [] and split_urls("") == []


def test_csv_feed_has_a_sku_and_image_columns_looked_up_like_sku_key():
    feed = parse_feed(CSV_FEED.encode(), "feed.csv")
    assert feed.urls_for("AB12") == ["https://cdn.example.com/a1.jpg", "https://cdn.example.com/a2.jpg",
                                     "https://cdn.example.com/a3.jpg"]
    assert feed.urls_for("ab 12") == feed.urls_for("AB-12")
    assert feed.urls_for("b7") == ["https://cdn.example.com/b.png"]
    assert feed.urls_for("nope") == [] and feed.urls_for(None) == []
    with pytest.raises(PoflowError) as caught:
        parse_feed(b"name,price\nx,1\n", "bad.csv")
    assert caught.value.code == "bad_image_feed"


def test_json_feeds_as_a_map_or_a_list():
    as_map = parse_feed(json.dumps({"X-1": ["https://c.example/x.jpg"], "Y": "https://c.example/y.jpg"}).encode(),
                        "f.json")
    assert as_map.urls_for("x1") == ["https://c.example/x.jpg"] and as_map.urls_for("y") == ["https://c.example/y.jpg"]
    items = [{"sku": "Z", "images": ["https://c.example/z1.jpg", {"url": "https://c.example/z2.jpg"}]},
             {"sku": "W", "image_urls": ["https://c.example/w.jpg"]}, {"no": "sku"}]
    as_list = parse_feed(json.dumps(items).encode(), "f.json")
    assert as_list.urls_for("z") == ["https://c.example/z1.jpg", "https://c.example/z2.jpg"]
    assert as_list.urls_for("w") == ["https://c.example/w.jpg"]
    with pytest.raises(PoflowError):
        parse_feed(b"{not json", "f.json")


def test_a_local_feed_file(tmp_path):
    path = tmp_path / "feed.csv"
    path.write_text(CSV_FEED)
    assert load_feed(str(path), SETTINGS, tmp_path / "cache").urls_for("B7") == ["https://cdn.example.com/b.png"]
    with pytest.raises(PoflowError) as caught:
        load_feed(str(tmp_path / "missing.csv"), SETTINGS, tmp_path / "cache")
    assert caught.value.code == "bad_image_feed"


def test_a_feed_url_is_fetched_safely_and_revalidated_with_its_etag(docs, tmp_path):
    cache = tmp_path / "cache"
    first = load_feed(docs.url("/feed.json"), SETTINGS, cache)
    second = load_feed(docs.url("/feed.json"), SETTINGS, cache)
    assert first.urls_for("ab12") == second.urls_for("AB-12") == ["https://cdn.example.com/j.jpg"]
    assert (first.not_modified, second.not_modified) == (False, True)
    assert docs.if_none_match == [None, '"f1"']
    assert load_feed(docs.url("/feed.csv"), SETTINGS, cache).urls_for("b7") == ["https://cdn.example.com/b.png"]
    with pytest.raises(PoflowError) as caught:  # without the allow-list a loopback address is refused
        load_feed(docs.url("/feed.csv"), FetchSettings(), cache)
    assert caught.value.code == "fetch_failed" and "blocked_address" in str(caught.value)
    assert docs.hits["/feed.csv"] == 1


def test_feed_source_offers_the_feed_urls_and_a_failed_feed_offers_nothing():
    feed = parse_feed(CSV_FEED.encode(), "feed.csv")
    offered = FeedSource(feed).candidates(_draft("ab-12"))
    assert [(c.source, c.url) for c in offered][:1] == [("feed", "https://cdn.example.com/a1.jpg")]
    assert FeedSource(None, ["image feed not used: x"]).candidates(_draft("ab-12")) == []


def test_search_is_off_unless_configured(monkeypatch):
    monkeypatch.delenv("POFLOW_IMAGE_SEARCH_URL", raising=False)
    assert search_from_env(SETTINGS) is None
    assert SearchSource(None).candidates(_draft("A")) == []
    monkeypatch.setenv("POFLOW_IMAGE_SEARCH_URL", "https://s.example/?q={name}")
    with pytest.raises(PoflowError) as caught:
        search_from_env(SETTINGS)
    assert caught.value.code == "bad_config"


def test_search_fills_the_template_url_encoded_and_keeps_at_most_the_maximum(docs, monkeypatch):
    monkeypatch.setenv("POFLOW_IMAGE_SEARCH_URL", docs.url("/search?sku={sku}&title={title}&vendor={vendor}"))
    monkeypatch.setenv("POFLOW_IMAGE_SEARCH_MAX", "2")
    provider = search_from_env(SETTINGS)
    assert isinstance(provider, HttpSearchProvider) and provider.max_results == 2
    offered = SearchSource(provider).candidates(_draft("A/1 #2", "Mug & Saucer, 50%"))
    assert [c.url for c in offered] == ["https://img.example.com/0.jpg", "https://img.example.com/1.jpg"]
    assert {c.source for c in offered} == {"search"}
    assert docs.queries == [{"sku": "A/1 #2", "title": "Mug & Saucer, 50%", "vendor": "Acme & Sons"}]
    listed = HttpSearchProvider(docs.url("/search-list?q={sku}"), SETTINGS)
    assert listed.search(sku="A", title="t", vendor=None) == ["https://img.example.com/x.jpg"]


def test_a_failing_search_notes_it_and_offers_nothing(docs):
    source = SearchSource(HttpSearchProvider(docs.url("/search-bad?q={sku}"), SETTINGS))
    assert source.candidates(_draft("A")) == []
    assert source.notes and "bad_search_answer" in source.notes[0]


def test_document_source_reads_line_urls_and_embedded_images_by_sku():
    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    parsed = ParsedPO(lines=[
        POLine(line_no=1, sku="ab-12", image_urls=["https://d.example/1.jpg", data_uri]),
        POLine(line_no=2, sku="AB12", image_urls=["https://d.example/1.jpg", "https://d.example/2.jpg"]),
        POLine(line_no=3, sku="C", image_urls=["data:text/plain;base64,aGk="]),
    ])
    source = DocumentSource(parsed)
    offered = source.candidates(_draft("AB 12"))
    assert [(c.source, c.url, c.data is not None) for c in offered] == [
        ("document", "https://d.example/1.jpg", False), ("document", None, True),
        ("document", "https://d.example/2.jpg", False)]
    assert offered[1].data == png_bytes() and offered[1].key.startswith("embedded:")
    assert source.candidates(_draft("C")) == [] and "not base64 image data" in source.notes[0]
    assert DocumentSource(None).candidates(_draft("A")) == []
    assert decode_data_uri("data:image/png,raw") is None


def test_merchant_image_feed_setting(db, tmp_path):
    feed = tmp_path / "feed.csv"
    feed.write_text(CSV_FEED)
    with db.session() as session:
        assert configure_merchant(session, "m1", image_feed_url=str(feed)).image_feed_url == str(feed.resolve())
        url = "https://feeds.example.com/acme.json"
        assert configure_merchant(session, "m1", image_feed_url=url).image_feed_url == url
        assert configure_merchant(session, "m1", image_feed_url="").image_feed_url is None
        with pytest.raises(PoflowError) as caught:
            configure_merchant(session, "m1", image_feed_url=str(tmp_path / "nope.csv"))
        assert caught.value.code == "invalid_image_feed"


def test_spreadsheet_picture_columns_fill_image_urls():
    from poflow_dagster.extraction.spreadsheet import extract_delimited

    text = ("SKU,Description,Qty,Unit Cost,Image URL,Photo 2,Bild\n"
            "A-1,Mug,2,3.00,https://x.example/a.jpg | https://x.example/b.jpg,https://x.example/c.jpg;"
            "https://x.example/a.jpg,\n"
            "B,Cup,1,1.00,,,not a url\n")
    po = extract_delimited(text, delimiter=",", source_format="csv")
    assert [line.image_urls for line in po.lines] == [
        ["https://x.example/a.jpg", "https://x.example/b.jpg", "https://x.example/c.jpg"], []]
    assert [line.unit_cost for line in po.lines] == [Decimal("3.00"), Decimal("1.00")]  # columns still right
    assert po.to_contract()["lines"][0]["image_urls"][0] == "https://x.example/a.jpg"


def test_ubl_item_attachments_give_urls_and_embedded_images():
    from poflow_dagster.extraction.ubl import extract_ubl

    b64 = base64.b64encode(png_bytes()).decode()

    def ref(body: str) -> str:
        return f"<cac:ItemSpecificationDocumentReference><cbc:ID>x</cbc:ID><cac:Attachment>{body}</cac:Attachment>" \
               "</cac:ItemSpecificationDocumentReference>"

    refs = (ref("<cac:ExternalReference><cbc:URI>https://cdn.example.com/m1.jpg</cbc:URI></cac:ExternalReference>")
            + ref(f'<cbc:EmbeddedDocumentBinaryObject mimeCode="image/png" filename="m.png">{b64}'
                  "</cbc:EmbeddedDocumentBinaryObject>")
            + ref('<cbc:EmbeddedDocumentBinaryObject mimeCode="application/pdf">JVBERi0='
                  "</cbc:EmbeddedDocumentBinaryObject>")
            + ref("<cac:ExternalReference><cbc:URI>file:///etc/passwd</cbc:URI></cac:ExternalReference>"))
    xml = (
        '<Order xmlns="urn:oasis:names:specification:ubl:schema:xsd:Order-2" '
        'xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2" '
        'xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">'
        "<cbc:ID>PO-9</cbc:ID><cbc:DocumentCurrencyCode>EUR</cbc:DocumentCurrencyCode>"
        "<cac:OrderLine><cac:LineItem><cbc:ID>1</cbc:ID><cbc:Quantity>2</cbc:Quantity>"
        '<cac:Price><cbc:PriceAmount currencyID="EUR">3.00</cbc:PriceAmount></cac:Price>'
        f"<cac:Item><cbc:Name>Mug</cbc:Name><cac:SellersItemIdentification><cbc:ID>M-1</cbc:ID>"
        f"</cac:SellersItemIdentification>{refs}</cac:Item></cac:LineItem></cac:OrderLine></Order>")
    [line] = extract_ubl(xml.encode()).lines
    assert line.image_urls[0] == "https://cdn.example.com/m1.jpg" and len(line.image_urls) == 2
    assert decode_data_uri(line.image_urls[1]) == ("image/png", png_bytes())
    [_, embedded] = DocumentSource(ParsedPO(lines=[line])).candidates(_draft("m1"))
    assert embedded.url is None and embedded.data == png_bytes()
