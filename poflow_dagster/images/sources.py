"""Where a draft's images come from, tried in order: the document, the merchant's feed, an image search.

Each source turns a draft into :class:`Candidate` images. :func:`~poflow_dagster.images.collect.collect_images`
asks the first source for every draft, and only drafts that got no usable image from it (none offered, or every
one refused) go on to the next source. A source that fails (a feed that cannot be read, a search that errs)
offers nothing and notes why; it never stops the others.

- :class:`DocumentSource`: ``POLine.image_urls`` of the parsed PO (spreadsheet picture columns, UBL item
  attachments); bytes embedded in the document come as ``data:`` URIs and are used without any request.
- :class:`FeedSource`: the merchant's supplier feed (:mod:`.feed`), read once per run.
- :class:`SearchSource`: an :class:`~poflow_dagster.images.search.ImageSearchProvider` (off by default).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from poflow_dagster.catalog.normalize import sku_key
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.images.feed import Feed
from poflow_dagster.images.search import ImageSearchProvider

__all__ = [
    "DOCUMENT", "FEED", "SEARCH", "Candidate", "DocumentSource", "DraftInfo", "FeedSource", "ImageSource",
    "SearchSource", "decode_data_uri",
]

DOCUMENT, FEED, SEARCH = "document", "feed", "search"
_IMAGE_MIME_PREFIX = "image/"


@dataclass(frozen=True)
class DraftInfo:
    """What a source may know of a draft."""

    id: int
    sku: str
    title: str
    vendor: str | None = None


@dataclass(frozen=True)
class Candidate:
    """One image a source offers for a draft: a URL to fetch, or bytes embedded in the document (``data``)."""

    source: str
    url: str | None
    data: bytes | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """Identifies the candidate within its draft across runs: sha256 of the URL, or of the embedded bytes."""
        if self.data is not None:
            return "embedded:" + hashlib.sha256(self.data).hexdigest()
        return hashlib.sha256((self.url or "").encode()).hexdigest()


class ImageSource(Protocol):
    """A source of image candidates; ``notes`` collects why it offered nothing where that is worth saying."""

    name: str
    notes: list[str]

    def candidates(self, draft: DraftInfo) -> list[Candidate]: ...


def decode_data_uri(uri: str) -> tuple[str, bytes] | None:
    """``(mime, bytes)`` of a base64 ``data:image/...`` URI, else ``None``."""
    head, sep, payload = uri.partition(",")
    if not sep or not head.lower().startswith("data:") or ";base64" not in head.lower():
        return None
    mime = head[5:].split(";", 1)[0].strip().lower()
    if not mime.startswith(_IMAGE_MIME_PREFIX):
        return None
    try:
        return mime, base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


class DocumentSource:
    """Image URLs (and embedded images) the PO document gives per line, looked up by SKU."""

    name = DOCUMENT

    def __init__(self, parsed: ParsedPO | None) -> None:
        self.notes: list[str] = []
        self._by_sku: dict[str, list[str]] = {}
        for line in (parsed.lines if parsed else []):
            key = sku_key(line.sku)
            if key and line.image_urls:
                merged = self._by_sku.setdefault(key, [])
                merged.extend(u for u in line.image_urls if u not in merged)

    def candidates(self, draft: DraftInfo) -> list[Candidate]:
        found = []
        for uri in self._by_sku.get(sku_key(draft.sku) or "", []):
            if uri.lower().startswith("data:"):
                decoded = decode_data_uri(uri)
                if decoded is None:
                    self.notes.append(f"{draft.sku}: an embedded image that is not base64 image data was ignored")
                    continue
                found.append(Candidate(DOCUMENT, None, decoded[1]))
            else:
                found.append(Candidate(DOCUMENT, uri))
        return found


class FeedSource:
    """The merchant's supplier feed (already loaded); a feed that failed to load offers nothing."""

    name = FEED

    def __init__(self, feed: Feed | None, notes: list[str] | None = None) -> None:
        self.feed = feed
        self.notes = list(notes or [])

    def candidates(self, draft: DraftInfo) -> list[Candidate]:
        return [Candidate(FEED, url) for url in self.feed.urls_for(draft.sku)] if self.feed else []


class SearchSource:
    """An image-search provider; a search that fails notes it and offers nothing for that draft."""

    name = SEARCH

    def __init__(self, provider: ImageSearchProvider | None) -> None:
        self.provider = provider
        self.notes: list[str] = []

    def candidates(self, draft: DraftInfo) -> list[Candidate]:
        if self.provider is None:
            return []
        try:
            urls = self.provider.search(sku=draft.sku, title=draft.title, vendor=draft.vendor)
        except PoflowError as exc:
            self.notes.append(f"{draft.sku}: image search failed ({exc})")
            return []
        except Exception as exc:  # noqa: BLE001 - a provider's bug costs this draft its search, nothing more
            self.notes.append(f"{draft.sku}: image search failed ({type(exc).__name__}: {exc})")
            return []
        return [Candidate(SEARCH, url) for url in dict.fromkeys(urls)]
