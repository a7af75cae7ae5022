"""An optional image-search provider, the last image source: off unless ``POFLOW_IMAGE_SEARCH_URL`` is set.

The env var is a URL template with ``{sku}``, ``{title}`` and ``{vendor}`` (each URL-encoded when filled in), e.g.
``https://images.example.com/search?q={title}&sku={sku}``. The answer is JSON: a list of URLs, or
``{"images": [{"url": ...}, ...]}`` (plain strings in ``images`` are accepted too). At most
``POFLOW_IMAGE_SEARCH_MAX`` (3) URLs are used. The request follows the image fetcher's rules (address policy,
limits, retries). Any other provider plugs in through :class:`ImageSearchProvider`.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.images.feed import fetch_text, split_urls
from poflow_dagster.images.fetch import FetchSettings
from poflow_dagster.images.validate import env_int

__all__ = ["SEARCH_MAX_ENV", "SEARCH_URL_ENV", "HttpSearchProvider", "ImageSearchProvider", "search_from_env"]

SEARCH_URL_ENV = "POFLOW_IMAGE_SEARCH_URL"
SEARCH_MAX_ENV = "POFLOW_IMAGE_SEARCH_MAX"
_FIELDS = {"sku", "title", "vendor"}


class ImageSearchProvider(Protocol):
    """Finds image URLs for a product; raises ``PoflowError`` when it cannot answer (the draft gets a note)."""

    def search(self, *, sku: str, title: str, vendor: str | None) -> list[str]: ...


def _check_template(template: str) -> str:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise PoflowError("bad_config", f"{SEARCH_URL_ENV} is not a valid template: {exc}") from None
    if names - _FIELDS or not template.lower().startswith(("http://", "https://")):
        raise PoflowError("bad_config", f"{SEARCH_URL_ENV} must be an http(s) URL using only {{sku}} {{title}} "
                                        "{vendor}")
    return template


def _answer_urls(data: object) -> list[str]:
    items = data.get("images", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        return []
    urls: list[str] = []
    for item in items:
        value = item.get("url") if isinstance(item, dict) else item
        if isinstance(value, str):
            urls.extend(split_urls(value.strip()))
    return list(dict.fromkeys(urls))


@dataclass(frozen=True)
class HttpSearchProvider:
    """The HTTP endpoint named by a URL template (see the module docstring)."""

    template: str
    settings: FetchSettings
    max_results: int = 3

    def url_for(self, *, sku: str, title: str, vendor: str | None) -> str:
        values = {"sku": sku, "title": title, "vendor": vendor or ""}
        return _check_template(self.template).format(**{k: quote(v, safe="") for k, v in values.items()})

    def search(self, *, sku: str, title: str, vendor: str | None) -> list[str]:
        fetched = fetch_text(self.url_for(sku=sku, title=title, vendor=vendor), self.settings)
        try:
            data = json.loads(fetched.body.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise PoflowError("bad_search_answer", "the image search answered with something other than JSON") from None
        return _answer_urls(data)[: self.max_results]


def search_from_env(settings: FetchSettings) -> HttpSearchProvider | None:
    """The provider configured by ``POFLOW_IMAGE_SEARCH_URL`` (``None``: search is off)."""
    template = os.environ.get(SEARCH_URL_ENV, "").strip()
    if not template:
        return None
    return HttpSearchProvider(_check_template(template), settings, env_int(SEARCH_MAX_ENV, 3))
