"""Image references in documents: which column headings name product pictures, and the URLs in one cell.

Shared by the spreadsheet extractor (picture columns of a PO) and the supplier image feed (``images/feed.py``);
no dependencies, so extraction stays light.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["image_columns", "is_image_header", "split_urls"]

_IMAGE_HEADER = re.compile(
    r"^(?:(?:product|main|item|additional|alt|extra|produkt|artikel)[ _-]*)?"
    r"(?:image|img|picture|pic|photo|foto|bild|imagen|imagem|immagine|afbeelding)(?:e?s)?"
    r"(?:[ _-]*(?:url|uri|link|src|source|href))?s?(?:[ _-]*(?:no\.?|#)?[ _-]*\d+)?$"
)
_URL_SEPARATORS = re.compile(r"[\s,;|]+")


def is_image_header(header: object) -> bool:
    """True for a column heading that names image URLs (``Image``, ``Photo URL``, ``Bild``, ``image_2``...)."""
    if not isinstance(header, str) or len(header) > 60:
        return False
    return bool(_IMAGE_HEADER.match(" ".join(header.strip().lower().split())))


def image_columns(header_row: Sequence[object], taken: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """The columns of a header row headed as pictures, left to right, except those already ``taken``."""
    return [col for col, value in enumerate(header_row) if col not in taken and is_image_header(value)]


def split_urls(cell: object) -> list[str]:
    """The http(s) URLs in one cell, separated by whitespace, ``,``, ``;`` or ``|`` (anything else ignored)."""
    urls = []
    for part in _URL_SEPARATORS.split(cell if isinstance(cell, str) else ""):
        parts = urlsplit(part)
        if parts.scheme.lower() in ("http", "https") and parts.netloc:
            urls.append(part)
    return list(dict.fromkeys(urls))
