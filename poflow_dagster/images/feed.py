"""A merchant's supplier image feed: SKU -> image URLs, as CSV or JSON, at an http(s) URL or a local path.

CSV: a header row with a ``sku`` column and one or more image columns (``image``, ``image_url``, ``image 2``,
``picture``, ``photo``, ...; a cell may hold several URLs). JSON: ``{"SKU": ["url", ...]}`` (a single string is
one URL) or ``[{"sku": "...", "images": ["url", ...]}]`` (``image_urls`` / ``urls`` / ``image`` accepted too).
SKUs are looked up as :func:`~poflow_dagster.catalog.normalize.sku_key` reads them (case, spaces, dashes ignored).

A URL is fetched by the image fetcher's rules (address policy with ``POFLOW_IMAGE_ALLOWED_HOSTS``, pinned
connection, redirects re-checked, byte limit, retries) and kept under ``POFLOW_HOME/images/feeds`` with its ETag,
so an unchanged feed is answered by a 304. The feed is read once per image stage run (:func:`load_feed`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from poflow_dagster.catalog.normalize import sku_key
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.extraction.image_refs import is_image_header, split_urls
from poflow_dagster.images.fetch import FetchSettings, ImageRequest, _Clients, _download, _Failed

__all__ = ["Feed", "FetchedText", "fetch_text", "is_image_header", "load_feed", "parse_feed", "split_urls"]

@dataclass
class Feed:
    """SKU key -> image URLs; ``source`` names where it came from, ``not_modified`` when a 304 answered."""

    source: str
    images: dict[str, list[str]] = field(default_factory=dict)
    not_modified: bool = False

    def urls_for(self, sku: str | None) -> list[str]:
        key = sku_key(sku)
        return list(self.images.get(key, [])) if key else []

    def add(self, sku: object, urls: list[str]) -> None:
        key = sku_key(str(sku)) if sku is not None else None
        if key and urls:
            merged = self.images.setdefault(key, [])
            merged.extend(u for u in urls if u not in merged)


@dataclass(frozen=True)
class FetchedText:
    """A small text document fetched by the image fetcher's rules."""

    body: bytes
    etag: str | None
    not_modified: bool


def fetch_text(url: str, settings: FetchSettings, etag: str | None = None) -> FetchedText:
    """GET ``url`` under the fetcher's address policy, limits and retries; ``PoflowError`` when it fails."""
    clients = _Clients(settings)
    headers = {"Accept": "application/json, text/csv, */*;q=0.5", **({"If-None-Match": etag} if etag else {})}
    try:
        body, _ = _download(clients, ImageRequest(url), headers, settings, time.monotonic() + settings.deadline)
    except _Failed as exc:
        raise PoflowError("fetch_failed", f"{url}: {exc.reason}: {exc.detail}") from None
    finally:
        clients.close()
    if body.status == 304:
        return FetchedText(b"", body.etag or etag, True)
    return FetchedText(body.data or b"", body.etag, False)


def _urls(value: object) -> list[str]:
    if isinstance(value, str):
        return split_urls(value)
    if isinstance(value, list):
        return [u for item in value for u in (_urls(item.get("url") if isinstance(item, dict) else item))]
    return []


def _parse_json(feed: Feed, data: object) -> None:
    if isinstance(data, dict):
        for sku, urls in data.items():
            feed.add(sku, _urls(urls))
        return
    if not isinstance(data, list):
        raise PoflowError("bad_image_feed", f"{feed.source}: JSON must be an object or a list of objects")
    for item in data:
        if isinstance(item, dict) and item.get("sku") is not None:
            urls = next((item[k] for k in ("images", "image_urls", "urls", "image") if k in item), [])
            feed.add(item["sku"], _urls(urls))


def _parse_csv(feed: Feed, text: str) -> None:
    sample = text[:4096]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(io.StringIO(text), dialect)
    header = [h.strip().lower() for h in next(rows, [])]
    sku_columns = [i for i, h in enumerate(header) if h in ("sku", "item", "item number", "article", "artikel",
                                                             "product code", "code", "sku_id", "style")]
    image_columns = [i for i, h in enumerate(header) if is_image_header(h)]
    if not sku_columns or not image_columns:
        raise PoflowError("bad_image_feed", f"{feed.source}: the CSV header needs a sku column and an image column")
    for row in rows:
        if len(row) > sku_columns[0]:
            urls = [u for i in image_columns if i < len(row) for u in split_urls(row[i])]
            feed.add(row[sku_columns[0]].strip(), urls)


def parse_feed(body: bytes, source: str) -> Feed:
    """A feed from its bytes: JSON when it looks like JSON, else CSV. ``PoflowError("bad_image_feed")`` if neither."""
    feed = Feed(source)
    text = body.decode("utf-8-sig", errors="replace")
    if text.lstrip()[:1] in ("{", "["):
        try:
            _parse_json(feed, json.loads(text))
        except json.JSONDecodeError as exc:
            raise PoflowError("bad_image_feed", f"{source}: not valid JSON ({exc.msg})") from None
    else:
        _parse_csv(feed, text)
    return feed


def _cache_paths(cache_dir: Path, url: str) -> tuple[Path, Path]:
    name = hashlib.sha256(url.encode()).hexdigest()[:32]
    return cache_dir / f"{name}.body", cache_dir / f"{name}.etag"


def load_feed(location: str, settings: FetchSettings, cache_dir: Path) -> Feed:
    """Read the feed at ``location`` (http(s) URL or local path); a URL is revalidated with its cached ETag."""
    if urlsplit(location).scheme.lower() not in ("http", "https"):
        path = Path(location[7:] if location.startswith("file://") else location).expanduser()
        if not path.is_file():
            raise PoflowError("bad_image_feed", f"image feed {location} is not a readable file")
        return parse_feed(path.read_bytes(), location)
    body_path, etag_path = _cache_paths(cache_dir, location)
    etag = etag_path.read_text().strip() if etag_path.exists() and body_path.exists() else None
    fetched = fetch_text(location, settings, etag)
    if fetched.not_modified:
        feed = parse_feed(body_path.read_bytes(), location)
        feed.not_modified = True
        return feed
    feed = parse_feed(fetched.body, location)
    cache_dir.mkdir(parents=True, exist_ok=True)
    body_path.write_bytes(fetched.body)
    if fetched.etag:
        etag_path.write_text(fetched.etag)
    else:
        etag_path.unlink(missing_ok=True)
    return feed
