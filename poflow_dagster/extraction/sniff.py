"""Content sniffing: what an uploaded file really is, whatever its name says.

Only the bytes decide. ``detect_format`` returns one of:

* ``"xlsx"`` - a zip containing ``xl/workbook.xml`` (or a damaged zip whose first
  bytes name ``xl/`` parts, so the spreadsheet reader can report it as unreadable);
* ``"csv"`` / ``"tsv"`` - text (UTF-8, UTF-8 with BOM, UTF-16 with BOM or cp1252)
  that looks like a delimited table (``csv`` covers ``,``, ``;`` and ``|``);
* ``"empty"`` - nothing but whitespace;
* something we recognise but cannot extract yet: ``"pdf"``, ``"image"``, ``"xls"``
  (legacy or password-protected Excel), ``"docx"``, ``"ods"``, ``"zip"``, ``"gzip"``,
  ``"xml"``, ``"html"``, ``"json"``, ``"edi"``, ``"rtf"``, ``"text"`` (plain text
  without a table);
* ``"unknown"`` - binary data we do not recognise.

``FORMAT_DESCRIPTIONS`` gives a short human description for every value.
"""

from __future__ import annotations

import csv
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FORMAT_DESCRIPTIONS",
    "DecodedText",
    "decode_text",
    "detect_delimiter",
    "detect_format",
    "sniff_bytes",
]

#: How many bytes are looked at to decide between text formats.
SNIFF_BYTES = 256 * 1024

FORMAT_DESCRIPTIONS: dict[str, str] = {
    "xlsx": "an Excel workbook (.xlsx)",
    "csv": "a comma/semicolon-separated text table",
    "tsv": "a tab-separated text table",
    "empty": "an empty file",
    "pdf": "a PDF document",
    "image": "an image",
    "xls": "a legacy Excel .xls or password-protected workbook",
    "docx": "a Word document",
    "ods": "an OpenDocument spreadsheet",
    "zip": "a zip archive that is not an Excel workbook",
    "gzip": "a gzip archive",
    "xml": "an XML document",
    "html": "an HTML page",
    "json": "a JSON document",
    "edi": "an EDI message (X12/EDIFACT)",
    "rtf": "an RTF document",
    "text": "plain text without a recognisable table",
    "unknown": "binary data of an unknown format",
}

_DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class DecodedText:
    """Text decoded from bytes, and the encoding that worked."""

    text: str
    encoding: str


def decode_text(data: bytes) -> DecodedText | None:
    """Decode bytes as UTF-8 (with/without BOM), UTF-16 (with BOM) or cp1252.

    Returns ``None`` when the bytes are not text: NUL bytes outside UTF-16, or too many
    control characters. A multi-byte sequence cut at the very end (a sniffed prefix) is
    tolerated.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        text = _decode_tolerant(data[3:], "utf-8")
        return DecodedText(text, "utf-8-sig") if text is not None and _looks_textual(text) else None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = _decode_tolerant(data, "utf-16")
        return DecodedText(text, "utf-16") if text is not None and _looks_textual(text) else None
    if b"\x00" in data:
        return None
    for encoding in ("utf-8", "cp1252"):
        text = _decode_tolerant(data, encoding)
        if text is not None:
            return DecodedText(text, encoding) if _looks_textual(text) else None
    return None


def _decode_tolerant(data: bytes, encoding: str) -> str | None:
    """Strictly decode ``data``; allow a truncated character in the last 3 bytes."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3 and exc.reason in ("unexpected end of data", "truncated data"):
            return data[: exc.start].decode(encoding, errors="strict")
        return None


def _looks_textual(text: str) -> bool:
    """Reject text with many control characters (a binary file that happened to decode)."""
    if not text:
        return True
    sample = text[:SNIFF_BYTES]
    allowed = "\t\r\n\f" + _x12_delimiters(sample)
    controls = sum(1 for c in sample if ord(c) < 32 and c not in allowed)
    return controls == 0 or controls / len(sample) < 0.01 and "\x00" not in sample


def _x12_delimiters(text: str) -> str:
    """An X12 interchange names its own delimiters in the fixed-width ISA segment (element separator at 3,
    component separator at 104, segment terminator at 105); control characters (FS, GS, RS...) are common
    choices and make no file binary."""
    if text.startswith("ISA") and len(text) > 105:
        return text[3] + text[104] + text[105]
    return ""


def detect_delimiter(text: str) -> str | None:
    """Pick the delimiter (``,`` ``;`` tab ``|``) that splits the most lines consistently.

    Each candidate is scored by how many non-blank lines split into the most common
    multi-field width, times that width. ``None`` when no candidate yields a table
    (at least two lines with two or more fields; one such line if that is all there is,
    e.g. a header-only export).
    """
    lines = [line for line in text[:SNIFF_BYTES].splitlines()[:400] if line.strip()]
    if len(lines) > 1 and not text.endswith(("\n", "\r")) and len(text) > SNIFF_BYTES:
        lines = lines[:-1]  # last line may be cut by the sniff window
    best: tuple[int, str] | None = None
    for delimiter in _DELIMITERS:
        try:
            widths = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        except csv.Error:
            continue
        multi = [w for w in widths if w >= 2]
        if not multi or len(multi) < min(2, len(lines)):
            continue
        width, count = Counter(multi).most_common(1)[0]
        score = count * (width - 1)
        if best is None or score > best[0]:
            best = (score, delimiter)
    return None if best is None else best[1]


def sniff_bytes(head: bytes) -> str | None:
    """Classify by magic numbers alone; ``None`` means "maybe text or zip, look further"."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")):
        return "image"
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":  # BMP: reserved bytes are zero
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "image"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "xls"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"{\\rtf"):
        return "rtf"
    return None


def _classify_zip(path: Path, head: bytes) -> str:
    """Look inside a zip (central directory only, nothing is decompressed)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        # Damaged archive: if its local headers name workbook parts it is a broken xlsx.
        return "xlsx" if b"xl/" in head else "zip"
    if "xl/workbook.xml" in names:
        return "xlsx"
    if "word/document.xml" in names:
        return "docx"
    if "content.xml" in names and "mimetype" in names:
        return "ods"
    return "zip"


def _classify_text(text: str) -> str:
    """Decide between the text formats for decoded content."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped.strip():
        return "empty"
    lowered = stripped[:512].lower()
    if lowered.startswith("<?xml"):
        return "html" if "<html" in lowered else "xml"
    if lowered.startswith(("<!doctype html", "<html")):
        return "html"
    if lowered.startswith("<") and re.match(r"<(?:!--|[a-z_][\w:.-]*[\s>/])", lowered):
        return "xml"
    if re.match(r"ISA[^\w \t\r\n]", stripped) or stripped.startswith(("UNA:", "UNB+")):
        return "edi"  # X12: the element separator is whatever follows "ISA"
    if stripped[:1] in "{[" and stripped.rstrip()[-1:] in "}]":
        return "json"
    delimiter = detect_delimiter(text)
    if delimiter is None:
        return "text" if _has_words(stripped) else "unknown"
    return "tsv" if delimiter == "\t" else "csv"


def _has_words(text: str, minimum: int = 5) -> bool:
    """Free text worth reading: a handful of real words, not symbol soup from a mis-decoded binary."""
    return len(re.findall(r"[^\W\d_]{2,}", text[:SNIFF_BYTES])) >= minimum


def detect_format(path: Path) -> str:
    """Return the format of the file at ``path`` by content (see the module docstring)."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head:
        return "empty"
    kind = sniff_bytes(head)
    if kind == "zip":
        return _classify_zip(path, head)
    if kind is not None:
        return kind
    decoded = decode_text(head)
    if decoded is None:
        return "unknown"
    kind = _classify_text(decoded.text)
    if kind == "empty" and len(head) == SNIFF_BYTES:
        # A long run of leading whitespace: look at the whole file before calling it empty.
        decoded = decode_text(path.read_bytes())
        kind = "unknown" if decoded is None else _classify_text(decoded.text.strip())
    return kind
