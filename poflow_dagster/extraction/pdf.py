"""Text PDFs: reading, scanned-page detection, page rendering and a deterministic PO extractor.

* :func:`read_pdf` opens a PDF with pdfplumber and keeps, per page, the text, the
  words with their positions and the ruled tables pdfplumber finds. Input problems
  are :class:`PoflowError` s: ``encrypted_pdf``, ``corrupt_pdf``, ``too_many_pages``.
* :func:`is_scanned` says whether (almost) no page has a text layer.
* :func:`render_page_images` renders pages with pypdfium2 for the vision path, each encoded by
  :func:`encode_page_image` (PNG for ink on paper, JPEG for photo-like pages); :func:`iter_page_images`
  renders them one at a time, as they are needed (streaming scans).
* :func:`extract_pdf_po` maps a text PDF to a :class:`ParsedPO`: the items when an item table is found,
  else the header fields alone (``lines=[]``); ``None`` only when nothing at all can be read.

How the extractor sees a page (:mod:`.layout`): a list of visual *lines* (top to bottom), each a list
of *cells* with x positions, from pdfplumber's ruled tables or from the words (normalised first by
:mod:`.text_norm`: full-width forms folded, right-to-left words in reading order; sideways margin text
dropped). The item header is the line (or block of label lines, ``Unit`` over ``Price``) whose cells best
match the column synonyms of :mod:`.spreadsheet` (EN, DE, FR, NL, ES, IT, PT, JA, HE, AR ...). The body's
own columns are found from how its values line up and matched to the header's columns in order
(:func:`.layout.align_columns`); the cells of the following lines are assigned to the columns by horizontal
overlap, and what a row's cells mean (codes inside descriptions, units after quantities, discounts) is
:mod:`.pdf_lines`. Repeated header lines (continued pages) re-anchor the columns, page footers such as
``Page 1 of 2`` are dropped, Subtotal/Tax/Shipping/Total lines fill the totals (of several Subtotal rows,
the one that sums the lines; a total labelled net is the subtotal), a row of another table's labels (a tax
breakdown) ends the items, and after a grand total items are kept only when another totals row confirms
them (sections). When pdfplumber's ruled tables hold no item table (a page frame), the words are read
alone. Header fields, currency and document type come from :mod:`.pdf_header`; when no item table is
found the header is returned with no lines. No arithmetic is done here. A column headed EAN / UPC /
GTIN / Barcode fills the lines' ``barcode`` (the SKU too when there is no SKU column).
"""

from __future__ import annotations

import io
import math
import re
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import Issue, ParsedPO, POLine
from poflow_dagster.extraction.barcodes import clean_barcode, gtin_or_none
from poflow_dagster.extraction.layout import (
    Cell,
    Column,
    Line,
    align_columns,
    bands_of,
    cell_of,
    document_lines,
    overlap,
)
from poflow_dagster.extraction.numbers import guess_decimal_comma, parse_date, parse_decimal
from poflow_dagster.extraction.parties import Phrase, supplier_candidate
from poflow_dagster.extraction.pdf_header import (
    is_day_first,
    is_label,
    pick_po_number,
    read_currency,
    read_document_type,
    read_header_fields,
    read_lone_date,
    read_title_fields,
)
from poflow_dagster.extraction.pdf_lines import (
    apply_discount,
    code_from_description,
    leading_codes,
    quantity_and_unit,
)
from poflow_dagster.extraction.spreadsheet import (
    COLUMN_INDEX,
    SUMMARY_INDEX,
    ParseContext,
    header_columns,
    lookup_synonym,
    normalize_label,
)
from poflow_dagster.extraction.text_norm import logical_line, normalize_word
from poflow_dagster.extraction.vocabulary import normalize_unit, tax_inclusion_of

__all__ = [
    "MAX_PAGES",
    "MIN_TEXT_CHARS",
    "PdfCell",
    "PdfDocument",
    "PdfPage",
    "PdfTable",
    "PdfTableRow",
    "PdfWord",
    "encode_page_image",
    "extract_pdf_po",
    "is_scanned",
    "iter_page_images",
    "read_pdf",
    "render_page_images",
]

#: Default page limit of :func:`read_pdf`.
MAX_PAGES = 200
#: Decoded (inflated) size of any one PDF stream: content, font, image -> ``file_too_complex`` above.
MAX_STREAM_BYTES = 32 * 1024 * 1024
#: Decoded bytes of all streams one :func:`read_pdf` call inflates -> ``file_too_complex`` above.
MAX_DECODED_BYTES = 128 * 1024 * 1024
#: Decoded content-stream bytes of one page (a text PO page has < 100 KB; each glyph becomes a Python
#: object, so 4 MB of drawing operators is already ~0.5 GB of layout objects) -> ``file_too_complex`` above.
MAX_PAGE_CONTENT_BYTES = 4 * 1024 * 1024
#: A page with fewer non-blank characters than this counts as having no text layer.
MIN_TEXT_CHARS = 25
#: ``%%EOF`` must occur this close to the end of the file (PDF spec: 1024; some slack).
_EOF_WINDOW = 2048


# --- the document model ----------------------------------------------------------------------


@dataclass(frozen=True)
class PdfWord:
    """One word on a page; coordinates in points from the top-left corner."""

    text: str
    x0: float
    x1: float
    top: float
    bottom: float


@dataclass(frozen=True)
class PdfCell:
    """One cell of a ruled table (text with line breaks turned into spaces)."""

    text: str
    x0: float
    x1: float


@dataclass(frozen=True)
class PdfTableRow:
    """One row of a ruled table; merged or empty cells are left out."""

    top: float
    bottom: float
    cells: list[PdfCell]


@dataclass(frozen=True)
class PdfTable:
    """A ruled table found by pdfplumber (``bbox`` = x0, top, x1, bottom)."""

    bbox: tuple[float, float, float, float]
    rows: list[PdfTableRow]


@dataclass(frozen=True)
class PdfPage:
    """One page: its text, words and ruled tables. ``number`` is 1-based."""

    number: int
    text: str
    words: list[PdfWord]
    has_text: bool
    width: float = 0.0
    height: float = 0.0
    tables: list[PdfTable] = field(default_factory=list)


@dataclass(frozen=True)
class PdfDocument:
    """The pages of a PDF as read by :func:`read_pdf`."""

    pages: list[PdfPage]


# --- reading ---------------------------------------------------------------------------------


def read_pdf(path: Path, *, max_pages: int = MAX_PAGES) -> PdfDocument:
    """Read every page of the PDF at ``path`` (text, words, ruled tables).

    Raises ``PoflowError`` ``encrypted_pdf`` (a password is needed to open it),
    ``corrupt_pdf`` (truncated, damaged or not a PDF) or ``too_many_pages``.
    ``OSError`` from opening the file itself is not translated.
    """
    path = Path(path)
    with path.open("rb") as handle:
        _check_envelope(handle)
        try:
            return _read(handle, max_pages)
        except PoflowError:
            raise
        except Exception as exc:  # pdfminer raises many types for damaged files
            raise _error_for(exc) from None


def _check_envelope(handle: io.BufferedReader) -> None:
    """``corrupt_pdf`` unless the file starts with ``%PDF-`` and ends with ``%%EOF``."""
    head = handle.read(1024)
    if b"%PDF-" not in head:
        raise PoflowError("corrupt_pdf", "the file is not a PDF (no %PDF header)")
    size = handle.seek(0, io.SEEK_END)
    handle.seek(max(0, size - 8 * _EOF_WINDOW))
    tail = handle.read().rstrip(b"\x00\t\n\x0c\r ")
    if b"%%EOF" not in tail[-_EOF_WINDOW:]:
        raise PoflowError("corrupt_pdf", "the PDF is truncated (no %%EOF marker at the end)")
    handle.seek(0)


def _read(handle: io.BufferedReader, max_pages: int) -> PdfDocument:
    """Open with pdfplumber and read the pages (exceptions are translated by the caller)."""
    import pdfplumber  # local import: only PDF uploads need it

    _install_decode_guard()
    _decode_budget.remaining = MAX_DECODED_BYTES
    try:
        with pdfplumber.open(handle) as pdf:
            count = len(pdf.pages)
            if count > max_pages:
                raise PoflowError("too_many_pages", f"the PDF has {count} pages; the limit is {max_pages}")
            if count == 0:
                raise PoflowError("corrupt_pdf", "the PDF has no pages")
            pages = []
            for number, page in enumerate(pdf.pages, start=1):
                _check_page_content(page, number)
                pages.append(_read_page(page, number))
                page.close()  # drop pdfplumber's per-page caches
            return PdfDocument(pages=pages)
    finally:
        _decode_budget.remaining = None


# --- decoding limits (pdfminer inflates whole streams in memory) ------------------------------


class _DecodeBudget(threading.local):
    """Bytes the current :func:`read_pdf` call may still inflate (``None``: outside a call)."""

    remaining: int | None = None


_decode_budget = _DecodeBudget()


def _check_stream(size: int) -> None:
    """``file_too_complex`` for one stream decoded to more than ``MAX_STREAM_BYTES``."""
    if size > MAX_STREAM_BYTES:
        raise PoflowError(
            "file_too_complex",
            f"a PDF stream inflates to more than {MAX_STREAM_BYTES // 1_048_576} MB (an inflate bomb)",
        )


def _spend(size: int) -> None:
    """Count ``size`` decoded bytes of one stream against the per-stream and per-document budgets."""
    _check_stream(size)
    remaining = _decode_budget.remaining
    if remaining is not None:
        if size > remaining:
            raise PoflowError(
                "file_too_complex",
                f"the PDF's streams inflate to more than {MAX_DECODED_BYTES // 1_048_576} MB in total",
            )
        _decode_budget.remaining = remaining - size


def _decompress_corrupted(data: bytes) -> bytes:
    """pdfminer's fallback for a stream with a damaged checksum, linear and bounded.

    Keeps what inflates when the error is in the last chunk (the checksum); raises ``zlib.error`` for
    damage earlier on, like pdfminer's own byte-at-a-time version (whose ``bytes +=`` is quadratic).
    """
    inner = zlib.decompressobj()
    out = bytearray()
    step = 4096
    for start in range(0, len(data), step):
        try:
            piece = inner.decompress(data[start : start + step], MAX_STREAM_BYTES + 1 - len(out))
        except zlib.error:
            if start + step < len(data) - 3:
                raise
            break
        _spend(len(piece))
        out += piece
        if len(out) > MAX_STREAM_BYTES or inner.eof:
            break
    _check_stream(len(out))
    return bytes(out)


class _BoundedZlib:
    """Stands in for the ``zlib`` module inside ``pdfminer.pdftypes``: same calls, bounded output."""

    error = zlib.error

    @staticmethod
    def decompress(data: bytes, *args: int) -> bytes:
        inner = zlib.decompressobj()
        out = inner.decompress(data, MAX_STREAM_BYTES + 1)
        _spend(len(out))
        if not inner.eof:
            raise zlib.error("Error -5 while decompressing data: incomplete or truncated stream")
        return out

    decompressobj = staticmethod(zlib.decompressobj)


def _bounded(decoder: Callable[..., bytes]) -> Callable[..., bytes]:
    """Wrap a pure-Python pdfminer decoder (LZW, run-length) so its output counts against the budget."""

    def decode(*args: Any) -> bytes:
        out = decoder(*args)
        _spend(len(out))
        return out

    decode.__wrapped__ = decoder  # type: ignore[attr-defined]
    return decode


def _install_decode_guard() -> None:
    """Route pdfminer's stream decoding through the budgets above (idempotent).

    pdfminer calls ``zlib.decompress(data)`` on whole streams (and, for a damaged one, a byte-at-a-time
    ``decompressobj`` loop), so a 400 KB inflate bomb becomes GBs in memory. Its ``zlib`` name is
    pointed at :class:`_BoundedZlib`, its fallback at :func:`_decompress_corrupted`; LZW and run-length
    output is counted after decoding (the sandbox's memory limit bounds those decoders themselves).
    """
    from pdfminer import pdftypes

    if isinstance(pdftypes.zlib, _BoundedZlib):
        return
    pdftypes.zlib = _BoundedZlib()  # type: ignore[assignment]
    pdftypes.decompress_corrupted = _decompress_corrupted
    pdftypes.lzwdecode = _bounded(pdftypes.lzwdecode)
    pdftypes.rldecode = _bounded(pdftypes.rldecode)


def _check_page_content(page: Any, number: int) -> None:
    """``file_too_complex`` when a page's content streams decode to more than ``MAX_PAGE_CONTENT_BYTES``."""
    from pdfminer.pdftypes import resolve1

    contents = page.page_obj.contents or []
    size = 0
    for stream in contents:
        data = getattr(resolve1(stream), "get_data", lambda: b"")()
        size += len(data or b"")
    if size > MAX_PAGE_CONTENT_BYTES:
        raise PoflowError(
            "file_too_complex",
            f"page {number} has {size / 1_048_576:.1f} MB of drawing instructions "
            f"(limit {MAX_PAGE_CONTENT_BYTES // 1_048_576} MB)",
        )


def _read_page(page: Any, number: int) -> PdfPage:
    """Text, words and ruled tables of one pdfplumber page."""
    text = _reading_order(page.extract_text() or "")
    raw = page.extract_words()
    upright = [w for w in raw if w.get("upright", True)]
    if len(upright) * 2 >= len(raw):  # sideways margin text (a copyright line up the edge) is no content
        raw = upright
    words = [
        PdfWord(normalize_word(str(w["text"])), float(w["x0"]), float(w["x1"]), float(w["top"]), float(w["bottom"]))
        for w in raw
    ]
    chars = sum(1 for c in text if not c.isspace())
    tables = _read_tables(page) if words else []
    return PdfPage(
        number=number,
        text=text,
        words=words,
        has_text=chars >= MIN_TEXT_CHARS,
        width=float(page.width),
        height=float(page.height),
        tables=tables,
    )


def _reading_order(text: str) -> str:
    """A page's text with right-to-left lines in reading order and full-width forms folded (:mod:`.text_norm`);
    text without such characters is returned as it is."""
    if text.isascii():
        return text
    lines = []
    for line in text.splitlines():
        fixed = logical_line(line)
        lines.append(line if fixed == " ".join(line.split()) else fixed)
    return "\n".join(lines)


def _read_tables(page: Any) -> list[PdfTable]:
    """Ruled tables with at least two columns, as rows of positioned cells."""
    tables = []
    for table in page.find_tables():
        texts = table.extract()
        rows = []
        for row, row_texts in zip(table.rows, texts):
            cells = [
                PdfCell(logical_line(text), float(box[0]), float(box[2]))
                for box, text in zip(row.cells, row_texts)
                if box is not None and text and text.strip()
            ]
            if cells:
                rows.append(PdfTableRow(float(row.bbox[1]), float(row.bbox[3]), cells))
        if rows and max(len(r.cells) for r in rows) >= 2 and not _has_stacked_numbers(texts):
            x0, top, x1, bottom = (float(v) for v in table.bbox)
            tables.append(PdfTable((x0, top, x1, bottom), rows))
    return tables


def _has_stacked_numbers(texts: list[list[str | None]]) -> bool:
    """True if a cell holds several numbers on separate lines (rows not ruled apart)."""
    for row in texts:
        for text in row:
            lines = [s for s in (text or "").splitlines() if s.strip()]
            if len(lines) >= 2 and all(parse_decimal(s) is not None for s in lines):
                return True
    return False


def _error_for(exc: Exception) -> PoflowError:
    """Translate a pdfminer/pdfplumber exception into ``encrypted_pdf`` or ``corrupt_pdf``."""
    from pdfminer.pdfdocument import PDFEncryptionError, PDFPasswordIncorrect
    from pdfplumber.utils.exceptions import PdfminerException

    inner: BaseException = exc
    if isinstance(exc, PdfminerException) and exc.args and isinstance(exc.args[0], BaseException):
        inner = exc.args[0]
    if isinstance(inner, PoflowError):  # a decoding budget tripped inside pdfminer
        return inner
    if isinstance(inner, (PDFPasswordIncorrect, PDFEncryptionError)):
        return PoflowError("encrypted_pdf", "the PDF is password-protected; upload an unprotected copy")
    return PoflowError("corrupt_pdf", f"the PDF is damaged and cannot be read ({type(inner).__name__})")


# --- scanned documents and rendering ---------------------------------------------------------


def is_scanned(doc: PdfDocument) -> bool:
    """True when (almost) no page has extractable text: at most one page in ten."""
    text_pages = sum(1 for page in doc.pages if page.has_text)
    return text_pages == 0 or text_pages * 10 <= len(doc.pages)


def render_page_images(
    path: Path, page_numbers: list[int], *, dpi: int = 150, max_pixels: int = 4_000_000
) -> list[tuple[bytes, str]]:
    """The given 1-based pages as ``(image bytes, MIME type)``, all at once (see :func:`iter_page_images`).

    A page that would exceed ``max_pixels`` at ``dpi`` is rendered smaller; each is encoded by
    :func:`encode_page_image`. Raises ``encrypted_pdf`` / ``corrupt_pdf`` for unreadable files, ``ValueError``
    for a page number outside the document; ``OSError`` from reading the file is not translated.
    pypdfium2 is not thread-safe: call this from one thread at a time per process.
    """
    return [(data, mime) for _, data, mime in iter_page_images(path, page_numbers, dpi=dpi, max_pixels=max_pixels)]


def iter_page_images(
    path: Path, page_numbers: list[int], *, dpi: int = 150, max_pixels: int = 4_000_000
) -> Iterator[tuple[int, bytes, str]]:
    """``(page number, image bytes, MIME type)`` for the given pages, each rendered only when asked for.

    The document is opened on the first ``next()`` and closed when the iterator is exhausted or closed;
    pdfium reads the file as it needs it (not all into memory), and at most one page's bitmap is in memory
    at a time. Errors as :func:`render_page_images`.
    """
    import pypdfium2 as pdfium  # local import: only the vision path needs it

    with Path(path).open("rb") as handle:
        try:
            pdf = pdfium.PdfDocument(handle)
        except pdfium.PdfiumError as exc:
            if getattr(exc, "err_code", None) == 4 or "password" in str(exc).lower():
                raise PoflowError(
                    "encrypted_pdf", "the PDF is password-protected; upload an unprotected copy"
                ) from None
            raise PoflowError("corrupt_pdf", "the PDF is damaged and cannot be rendered") from None
        try:
            count = len(pdf)
            for number in page_numbers:
                yield number, *_render_page(pdf, number, count, dpi, max_pixels)
        finally:
            pdf.close()


def _render_page(pdf: Any, number: int, count: int, dpi: int, max_pixels: int) -> tuple[bytes, str]:
    """One page as ``(image bytes, MIME type)``, scaled to ``dpi`` but at most ``max_pixels`` pixels."""
    if not 1 <= number <= count:
        raise ValueError(f"page {number} is outside the document (1..{count})")
    page = pdf[number - 1]
    try:
        width, height = page.get_size()
        scale = dpi / 72
        if width * height * scale * scale > max_pixels:
            scale = math.sqrt(max_pixels / (width * height)) * 0.995  # margin for rounding up
        return encode_page_image(page.render(scale=scale).to_pil())
    finally:
        page.close()


#: Grey-level histogram entropy (bits) above which a page is photo-like (paper grain, a photo) and goes as
#: JPEG; at or below it the page is ink on paper and goes as PNG. Measured at 150 dpi: a clean black-on-white
#: scan 0.4 bits (grey PNG 77 KB < JPEG 97 KB), a noisy grey flatbed scan 3.8 bits (JPEG 300 KB, grey PNG
#: 1.0 MB, RGB PNG 1.7 MB and 0.55 s to encode against 5 ms); see ``benchmarks/scan_memory.py``.
PHOTO_ENTROPY_BITS = 2.0
#: JPEG quality for photo-like pages: high, at full resolution, colour without chroma subsampling (4:4:4).
JPEG_QUALITY = 85


def encode_page_image(image: Any) -> tuple[bytes, str]:
    """A page image (PIL) as the smaller faithful encoding: ``(bytes, "image/png" or "image/jpeg")``.

    A page whose pixels are all grey is encoded as greyscale (lossless: nothing is dropped). Ink on paper
    (low grey-level entropy, :data:`PHOTO_ENTROPY_BITS`) is PNG, lossless for text; a photo-like page is
    JPEG at :data:`JPEG_QUALITY`, several times smaller. Resolution is never changed here.
    """
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    grey = image if image.mode == "L" else image.convert("L")
    if _all_grey(image):
        image = grey
    buffer = io.BytesIO()
    if grey.entropy() <= PHOTO_ENTROPY_BITS:
        image.save(buffer, format="PNG")
        return buffer.getvalue(), "image/png"
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue(), "image/jpeg"


def _all_grey(image: Any) -> bool:
    """True if every pixel has red = green = blue (an ``L`` image is grey by definition)."""
    from PIL import ImageChops

    if image.mode == "L":
        return True
    red, green, blue = image.split()
    return ImageChops.difference(red, green).getbbox() is None and ImageChops.difference(green, blue).getbbox() is None


# --- the item header -------------------------------------------------------------------------


_MAX_SYNONYM_WORDS = 4


#: Words that qualify a label rather than name a column (``Price excl. VAT``, ``Betrag ohne USt.``).
_QUALIFIERS = frozenset(
    {"ohne", "excl", "incl", "inkl", "zzgl", "sans", "hors", "without", "with", "plus", "senza", "sin", "con", "sem",
     "com", "netto", "brutto", "gross", "per", "pro", "each"}
)


def _split_header_cell(cell: Cell) -> list[Cell]:
    """Split a cell like ``Qty Unit Price`` or ``Pos Art-Nr-Kunde Beschreibung`` (labels set close together)
    into one cell per label: the fewest unknown words, then the fewest labels; two known labels at least."""
    if len(cell.words) < 2 or normalize_label(cell.text) in COLUMN_INDEX:
        return [cell]
    words = cell.words
    # end index -> (unknown words, segments, segment starts, known segments)
    best: list[tuple[int, int, list[int], int] | None] = [None] * (len(words) + 1)
    best[0] = (0, 0, [], 0)
    for end in range(1, len(words) + 1):
        for start in range(max(0, end - _MAX_SYNONYM_WORDS), end):
            prior = best[start]
            if prior is None:
                continue
            key = normalize_label(" ".join(w.text for w in words[start:end]))
            known = key in COLUMN_INDEX
            if not known and (end - start > 1 or len(key) < 4 or key in _QUALIFIERS):
                continue  # an unknown label is one word of its own, not "sin" in "Unitario sin IVA"
            option = (prior[0] + (not known), prior[1] + 1, [*prior[2], start], prior[3] + known)
            current = best[end]
            if current is None or option[:2] < current[:2]:
                best[end] = option
    result = best[len(words)]
    if result is None or result[3] < 2:
        return [cell]
    bounds = [*result[2], len(words)]
    return [cell_of(words[a:b]) for a, b in zip(bounds, bounds[1:])]


def _header_of(cells: Sequence[Cell]) -> list[Column] | None:
    """The columns if the cells qualify as an item header row, else None."""
    parts = [part for cell in cells for part in _split_header_cell(cell)]
    mapping = header_columns([c.text for c in parts])
    if mapping is None:
        return None
    names = {index: name for name, index in mapping.items()}
    _second_columns(parts, names)
    return [Column(names.get(i), c.x0, c.x1) for i, c in enumerate(parts)]


def _second_columns(parts: Sequence[Cell], names: dict[int, str]) -> None:
    """Columns named twice: a second description column (``Produkt`` + ``Beschreibung``) joins the first;
    a second price column right of the unit price is the amount (``Unit Price ... Price``) when there is
    none; an ``Amount`` column left of the prices is the quantity when there is none."""
    fields = {name: i for i, name in names.items()}
    for i, part in enumerate(parts):
        hit = lookup_synonym(part.text, COLUMN_INDEX, prefix=True) if i not in names else None
        if hit is None:
            continue
        if hit[0] == "description":
            names[i] = "description"
        elif hit[0] == "unit_cost" and "line_total" not in fields and i > fields.get("unit_cost", len(parts)):
            names[i] = "line_total"
            fields["line_total"] = i
    price = fields.get("unit_cost")
    if "quantity" in fields or price is None:
        return
    amounts = [i for i, part in enumerate(parts) if (hit := lookup_synonym(part.text, COLUMN_INDEX, prefix=True))
               and hit[0] == "line_total"]
    left, right = [i for i in amounts if i < price], [i for i in amounts if i > price]
    if left and right:  # "Amount | Product | Price | Total": the amount left of the prices is how many
        names[left[0]], names[right[-1]] = "quantity", "line_total"


def _header_at(lines: Sequence[Line], index: int) -> tuple[list[Column], int] | None:
    """The header at ``lines[index]`` and how many lines from there it spans.

    A header may be printed on several lines (``Unit`` over ``Price``, ``Positions-`` / ``betrag`` /
    ``ohne USt.``): the label lines right above and below (close, without digits) are merged column by
    column when the merged header maps more fields than the line alone.
    """
    single = _header_of(lines[index].cells)
    block = _label_block(lines, index)
    if len(block) > 1:
        merged = _header_of(_merge_block([lines[i] for i in block]))
        if merged is not None and (single is None or len(_fields(merged)) > len(_fields(single))):
            return merged, block[-1] - index + 1
    return (single, 1) if single is not None else None


#: At most this many label lines above and below a header line are merged into it.
_BLOCK_REACH = 2


def _label_block(lines: Sequence[Line], index: int) -> list[int]:
    """Indexes of the label lines around ``lines[index]`` that may belong to a header printed on several lines."""
    if any(ch.isdigit() for ch in lines[index].text):
        return [index]
    block = [index]
    for step in (1, -1):
        current = index
        for _ in range(_BLOCK_REACH):
            nxt = current + step
            if not 0 <= nxt < len(lines) or not _adjacent_labels(lines[current], lines[nxt]):
                break
            block.append(nxt)
            current = nxt
    return sorted(block)


def _adjacent_labels(line: Line, other: Line) -> bool:
    """True if ``other`` is a line of labels set right above or below ``line`` (no digits, close)."""
    if other.page != line.page or any(ch.isdigit() for ch in other.text):
        return False
    gap = other.top - line.bottom if other.top >= line.top else line.top - other.bottom
    return gap <= 0.8 * max(line.height, other.height)


def _merge_block(block: Sequence[Line]) -> list[Cell]:
    """One cell per column of a multi-line header: cells that overlap across the lines, read top to bottom
    (``Positions-`` + ``betrag`` -> ``Positionsbetrag``)."""
    cells = [cell for line in block for cell in line.cells]
    merged = []
    for x0, x1 in bands_of([[(c.x0, c.x1) for c in cells]]):
        parts = [c for c in cells if c.x0 >= x0 and c.x1 <= x1]
        words = tuple(w for c in parts for w in c.words)
        text = ""
        for part in parts:
            text = text[:-1] + part.text if text.endswith("-") and text[-2:-1].isalpha() else f"{text} {part.text}"
        merged.append(Cell(text.strip(), x0, x1, words))
    return merged


def _fields(columns: Sequence[Column]) -> set[str]:
    return {c.name for c in columns if c.name}


# --- the item table --------------------------------------------------------------------------

_PAGE_RE = re.compile(
    r"^(?:page|seite|pagina|página|pag\.?|p\.|blatt|feuille|hoja|sivu|strona)\s*\d+"
    r"(?:\s*(?:of|von|de|di|sur|van|z|/)\s*\d+)?\.?$",
    re.IGNORECASE,
)
_BARE_PAGE_RE = re.compile(r"^(?:-\s*\d+\s*-|\d+\s*/\s*\d+)$")
_CARRY_LABELS = frozenset(
    {
        "page total", "page subtotal", "subtotal page", "carried forward", "brought forward",
        "carry forward", "carried over", "continued", "to be continued", "ubertrag", "uebertrag",
        "seitensumme", "a reporter", "report", "suma y sigue", "riporto", "transporte",
    }
)


@dataclass
class _Table:
    """What the item table yielded."""

    lines: list[POLine] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=dict)
    money_texts: list[str] = field(default_factory=list)
    used: set[int] = field(default_factory=set)  # indexes of lines that belong to the table
    issues: list[Issue] = field(default_factory=list)
    subtotals: list[Decimal] = field(default_factory=list)  # every Subtotal row, in order (sections too)
    tentative: int = 0  # items read after a total: kept only if another totals row follows them
    summary_labels: list[tuple[str, str]] = field(default_factory=list)  # (kind, label) of each totals row
    positions: dict[int, str | None] = field(default_factory=dict)  # id(item) -> its position cell
    grand_totals: list[Decimal] = field(default_factory=list)  # every Total row, in order


#: The last item read, the line it was on and its description cell: what a wrapped description line needs.
_LastItem = tuple[POLine, Line, "Cell | None"]


@dataclass
class _Row:
    """A body line with its cells assigned to the header's columns."""

    line: Line
    by_column: dict[int, list[Cell]]
    columns: list[Column]

    def text(self, name: str) -> str | None:
        parts = [c.text for i, cells in sorted(self.by_column.items()) if self.columns[i].name == name for c in cells]
        joined = " ".join(parts).strip()
        return joined or None

    def column_of(self, cell: Cell) -> str | None:
        for i, cells in self.by_column.items():
            if any(c is cell for c in cells):
                return self.columns[i].name
        return None


def _best_column(x0: float, x1: float, columns: Sequence[Column]) -> int:
    """The column overlapping ``[x0, x1]`` most, else the nearest one."""
    scores = [overlap(x0, x1, c.x0, c.x1) for c in columns]
    return max(range(len(columns)), key=lambda i: scores[i])


def _assign(line: Line, columns: list[Column]) -> _Row:
    """Assign the line's cells (or, for a cell spanning several columns, its words) to columns."""
    by_column: dict[int, list[Cell]] = {}
    for cell in line.cells:
        spanned = sum(1 for c in columns if overlap(cell.x0, cell.x1, c.x0, c.x1) > 0)
        parts = [cell_of([w]) for w in cell.words] if spanned > 1 and len(cell.words) > 1 else [cell]
        for part in parts:
            by_column.setdefault(_best_column(part.x0, part.x1, columns), []).append(part)
    for index, cells in by_column.items():  # re-join words that went to the same column
        if len(cells) > 1 and all(len(c.words) == 1 for c in cells):
            by_column[index] = [cell_of([w for c in cells for w in c.words])]
    return _Row(line, by_column, columns)


def _drop_page_marks(line: Line) -> Line | None:
    """The line without ``Page 1 of 2`` cells; None if nothing else is on it."""
    if _BARE_PAGE_RE.match(line.text.strip()) or _PAGE_RE.match(line.text.strip()):
        return None
    cells = tuple(c for c in line.cells if not _PAGE_RE.match(c.text.strip()))
    return Line(line.page, line.top, line.bottom, cells) if cells else None


def _read_table(lines: list[Line], start: int, header: tuple[list[Column], int], ctx: ParseContext) -> _Table:
    """Read items and totals from the lines after the header at ``lines[start]``."""
    columns, span = header
    columns = _aligned(lines, start + span, columns, ctx)
    table = _Table(used=set(range(start, start + span)))
    main_fields = _fields(columns)
    labels = set(_label_block(lines, start))  # the header's own label lines are no repeated header
    closed = foreign = False  # after a grand total / under another table's labels (a tax breakdown)
    last_item: _LastItem | None = None
    above: _Row | None = None  # a description-only row right above the next item (text wrapped around it)
    index = start + span
    while index < len(lines):
        line, index = _drop_page_marks(lines[index]), index + 1
        if line is None:
            table.used.add(index - 1)
            continue
        repeated = _header_at(lines, index - 1) if index - 1 not in labels else None
        if repeated is not None and len(_fields(repeated[0]) & main_fields) >= max(2, len(main_fields) - 1):
            (columns, span), closed, foreign, last_item = repeated, False, False, None
            columns = _aligned(lines, index - 1 + span, columns, ctx)
            table.used.update(range(index - 1, index - 1 + span))
            index += span - 1
            continue
        if _foreign_header(line):
            foreign, last_item = True, None
            continue
        row = _assign(line, columns)
        outcome = _summary(row, ctx)
        if outcome is not None:
            table.used.add(index - 1)
            last_item = None
            if outcome[0] != "carry":
                table.tentative = 0  # items between two totals rows are a section's
                closed = _apply_summary(table, outcome) or closed
            continue
        if foreign:
            continue
        if last_item is not None and _continue_description(row, last_item):
            table.used.add(index - 1)
            last_item = (last_item[0], line, last_item[2])
            continue
        count = len(table.lines)
        last_item = _read_item(table, row, ctx, index - 1)
        if last_item is None:
            above = row if {row.columns[i].name for i in row.by_column} == {"description"} else None
            continue
        _take_description_above(last_item, above, table, index - 2)
        above = None
        if closed:
            table.tentative += len(table.lines) - count
    _drop_tentative(table)
    return table


def _foreign_header(line: Line) -> bool:
    """True for a row of three or more short labels that is not an item header: another table (a tax
    breakdown, payment terms) begins, and its rows are no items."""
    cells = line.cells
    if len(cells) < 3 or any(ch.isdigit() for ch in line.text) or any(len(c.text) > 30 for c in cells):
        return False
    return header_columns([c.text for c in cells]) is None


#: How many lines below a header are looked at to find where the body's columns are.
_ALIGN_LINES = 80


def _aligned(lines: list[Line], body: int, columns: list[Column], ctx: ParseContext) -> list[Column]:
    """The header's columns moved onto the body's own columns (:mod:`.layout`): a column whose values line
    up beside its label (a right-aligned amount under a centred ``QTY``) spans those values instead."""
    rows = _body_rows(lines, body, ctx)
    if not rows:
        return columns
    numeric = bands_of([[(c.x0, c.x1) for c in row if _is_number(c.text, ctx)] for row in rows])
    text = [
        (c.x0, c.x1)
        for row in rows
        for c in row
        if not _is_number(c.text, ctx) and not any(overlap(c.x0, c.x1, a, b) > 0 for a, b in numeric)
    ]
    bands = sorted(numeric + bands_of([text]))
    owners = align_columns([(c.x0, c.x1) for c in columns], bands)
    spans: dict[int, list[tuple[float, float]]] = {}
    for band, owner in zip(bands, owners):
        if owner is not None:
            spans.setdefault(owner, []).append(band)
    return [
        Column(c.name, min(b[0] for b in spans[i]), max(b[1] for b in spans[i])) if i in spans else c
        for i, c in enumerate(columns)
    ]


def _body_rows(lines: list[Line], body: int, ctx: ParseContext) -> list[tuple[Cell, ...]]:
    """The cells of the table rows below a header: lines with a number and two or more cells, up to the
    first totals line or repeated header (same page)."""
    rows = []
    page = lines[body].page if body < len(lines) else None
    for index in range(body, min(len(lines), body + _ALIGN_LINES)):
        line = lines[index]
        if line.page != page or _header_at(lines, index) is not None:
            break
        first = line.cells[0].text
        if lookup_synonym(_label_and_amount(first, ctx)[0], SUMMARY_INDEX, prefix=True) and len(line.cells) <= 3:
            break
        if len(line.cells) >= 2 and any(_is_number(c.text, ctx) for c in line.cells):
            rows.append(line.cells)
    return rows


def _is_number(text: str, ctx: ParseContext) -> bool:
    """A money or quantity value (``1.000,00``, ``41,18 €``, ``30 Meter``)."""
    return ctx.parse(text) is not None or quantity_and_unit(text, ctx.parse)[0] is not None


def _take_description_above(item: _LastItem, above: _Row | None, table: _Table, index: int) -> None:
    """An item printed without a description, right below a description-only line, is described by it
    (a description wrapped around the numbers row: one line above it, the rest below)."""
    line, row_line = item[0], item[1]
    if above is None or line.description is not None:
        return
    if row_line.top - above.line.bottom > 1.6 * above.line.height:
        return
    line.description = above.text("description")
    table.used.add(index)


def _drop_tentative(table: _Table) -> None:
    """Forget the items read after the last total (no totals row confirmed them as a section)."""
    if table.tentative:
        del table.lines[-table.tentative :]
        table.tentative = 0


def _read_item(table: _Table, row: _Row, ctx: ParseContext, index: int) -> _LastItem | None:
    """Add the row as an item if it is one; return what a wrapped description line needs."""
    item = _item(row, ctx, line_no=len(table.lines) + 1, issues=table.issues)
    if item is not None and item.description and item.description.strip().endswith(":") and item.quantity is None:
        return None  # a section heading such as "Hardware:" with a stray number
    if item is not None and item.quantity == 0 and item.unit_cost is None and item.line_total is None:
        return None  # a note such as "Kennzeichen: M-MM 0000", not an item of nothing
    if item is not None and all(":" in cell.text for cell in row.line.cells):
        return None  # "Bruttopreis: 1,50 € | Rabatt: -2,50 €": notes on the item above, not an item
    if item is None:
        return None
    table.lines.append(item)
    table.positions[id(item)] = row.text("position")
    table.used.add(index)
    table.money_texts += [t for t in (row.text("unit_cost"), row.text("line_total")) if t]
    descriptions = [c for i, cells in row.by_column.items() if row.columns[i].name == "description" for c in cells]
    return item, row.line, descriptions[0] if descriptions else None


def _summary(row: _Row, ctx: ParseContext) -> tuple[str, Decimal, list[str]] | None:
    """``(kind, amount, texts)`` if the row is a totals line (``kind="carry"`` for page totals)."""
    cells = row.line.cells
    for position, cell in enumerate(cells):
        if len(cell.text) > 60:
            continue
        label, amount_text = _label_and_amount(cell.text, ctx)
        if normalize_label(label) in _CARRY_LABELS:
            return None if _looks_like_item(row, cell, exact=False, ctx=ctx) else ("carry", Decimal(0), [])
        hit = lookup_synonym(label, SUMMARY_INDEX, prefix=True, suffix=True)
        if hit is None:
            continue
        if _looks_like_item(row, cell, exact=hit[2], ctx=ctx, kind=hit[0]):
            return None
        later = [
            c.text for c in cells[position + 1 :] if parse_decimal(c.text, decimal_comma=ctx.decimal_comma) is not None
        ]
        text = later[-1] if later else amount_text
        amount = parse_decimal(text, decimal_comma=ctx.decimal_comma) if text else None
        rate = _RATE_RE.fullmatch(cells[-1].text.strip()) if hit[0] == "tax" and position + 1 < len(cells) else None
        if amount is None and rate:
            return "tax_rate", Decimal(rate.group(1).replace(",", ".")), [cell.text]  # "Sales Tax | 10%"
        if amount is None:
            continue
        kind = "subtotal" if hit[0] == "total" and tax_inclusion_of(label) is False else hit[0]  # "Summe netto"
        return kind, amount, [cell.text, text]
    return None


_RATE_RE = re.compile(r"(\d{1,2}(?:[.,]\d{1,3})?)\s*%")


def _label_and_amount(text: str, ctx: ParseContext) -> tuple[str, str | None]:
    """Split ``Label: 12.00`` or ``Total EUR 1.234,56`` into the label and the amount text."""
    label, sep, rest = text.partition(":")
    if sep:
        return label, rest.strip() or None
    tokens = text.split()
    for k in (3, 2, 1):
        if len(tokens) > k:
            tail = " ".join(tokens[-k:])
            if parse_decimal(tail, decimal_comma=ctx.decimal_comma) is not None:
                return " ".join(tokens[:-k]), tail
    return text, None


#: Columns whose text may look like a totals label inside an item row (``19 % VAT``, ``Discount 10 %``).
_SIDE_COLUMNS = frozenset({"tax_rate", "unit", "discount", "position"})


def _looks_like_item(row: _Row, label_cell: Cell, *, exact: bool, ctx: ParseContext, kind: str = "") -> bool:
    """Guard items such as ``SHIP-1 | Shipping box | 10`` (same rule as the spreadsheet reader); a priced
    delivery row inside the table (``Transport | 120.00 | 120.00``) is an item too."""
    label_column = row.column_of(label_cell)

    def number_in(name: str) -> bool:
        if label_column == name:
            return False
        if name == "quantity":
            return quantity_and_unit(row.text(name), ctx.parse)[0] is not None
        return ctx.parse(row.text(name)) is not None

    has_qty = number_in("quantity")
    if label_column in _SIDE_COLUMNS and (row.text("description") or row.text("sku")):
        return True  # "19 % VAT" in an item's tax-rate column
    if kind == "shipping" and label_column == "description" and number_in("unit_cost") and number_in("line_total"):
        return True
    if not exact or not has_qty:
        return has_qty
    other_names = {"sku", "barcode", "description"} - {label_column}
    return number_in("unit_cost") or any(row.text(name) for name in other_names)


def _apply_summary(table: _Table, outcome: tuple[str, Decimal, list[str]]) -> bool:
    """Store a totals value; True when it was the grand total (the item list ends)."""
    kind, amount, texts = outcome
    table.money_texts += texts
    table.summary_labels.append((kind, texts[0]))
    totals = table.totals
    if kind == "subtotal":
        table.subtotals.append(amount)
    elif kind in ("tax", "shipping"):
        totals[kind] = totals.get(kind, Decimal(0)) + amount
    elif kind == "tax_rate":
        totals.setdefault("tax_rate", amount)
    elif kind == "total":
        totals["total"] = amount
        table.grand_totals.append(amount)
        return True
    elif kind == "discount":
        message = f"a discount of {format(abs(amount), 'f')} is listed but not applied to the lines"
        table.issues.append(Issue(code="DISCOUNT_NOT_APPLIED", message=message))
    return False


def _item(row: _Row, ctx: ParseContext, *, line_no: int, issues: list[Issue]) -> POLine | None:
    """A POLine if the row has an SKU or description and at least one number.

    An EAN/UPC/GTIN column fills ``barcode``; it is the SKU as well when the table has no SKU column."""
    barcode = row.text("barcode")
    sku = row.text("sku") if "sku" in _fields(row.columns) else barcode
    description = row.text("description")
    if sku is None and description is None:
        return None
    raw = {name: row.text(name) for name in ("quantity", "unit_cost", "line_total")}
    discount = row.text("discount")
    price_and_rate = _PRICE_AND_RATE_RE.match(raw["unit_cost"] or "")
    if price_and_rate and ctx.parse(raw["unit_cost"]) is None and discount is None:
        raw["unit_cost"], discount = price_and_rate.group(1), price_and_rate.group(2)  # "4,55 € 10%" in one cell
    parsed = {name: ctx.parse(value) for name, value in raw.items() if name != "quantity"}
    quantity, unit = quantity_and_unit(raw["quantity"], ctx.parse, parsed["unit_cost"], parsed["line_total"])
    parsed["quantity"] = quantity
    if all(value is None for value in parsed.values()):
        return None
    for name, value in parsed.items():
        if value is None and raw[name] is not None:
            message = f"line {line_no}: could not read {name.replace('_', ' ')} {raw[name]!r}"
            issues.append(Issue(code="UNREADABLE_NUMBER", message=message))
    if sku is None:
        sku, description = code_from_description(description)
    line = POLine(line_no=line_no, sku=sku, barcode=clean_barcode(barcode), description=description, **parsed)
    line.unit = _unit_cell(row.text("unit")) or unit
    apply_discount(line, discount, ctx.parse)
    return line


_PRICE_AND_RATE_RE = re.compile(r"^(.*\d.*?)\s+(-?\d+(?:[.,]\d+)?\s*%)$")


def _unit_cell(text: str | None) -> str | None:
    """A unit-of-measure cell, normalised (``Stk`` -> ``units``); an unknown short word is kept lower-case."""
    if not text:
        return None
    known = normalize_unit(text)
    if known:
        return known
    word = text.strip().rstrip(".").lower()
    return word if 0 < len(word) <= 10 and not any(ch.isdigit() for ch in word) else None


def _continue_description(row: _Row, last: _LastItem) -> bool:
    """Take a wrapped line of the last item (text under its description or code only, right below):
    description text is appended; under the code column, the item's code (when it had none) or its
    barcode (a GTIN printed below the code)."""
    item, prev, desc_cell = last
    names = {row.columns[i].name for i in row.by_column}
    line = row.line
    if not names or not names <= {"description", "sku"} or line.page != prev.page:
        return False
    if (desc_cell is not None and not desc_cell.words) or _PAGE_RE.match(line.text.strip()):
        return False  # a ruled cell holds its whole text already
    close = line.top - prev.bottom <= 0.9 * prev.height
    if not close or not (_aligned_with(line, row, desc_cell) or "description" not in names):
        return False
    code = row.text("sku")
    if code and item.sku is None:
        item.sku = code
    elif code and item.barcode is None and gtin_or_none(code):
        item.barcode = gtin_or_none(code)  # a GTIN printed under the item's code
    text = row.text("description")
    if text:
        before = item.description or ""
        hyphenated = before.endswith("-") and before[-2:-1].isalpha()  # "Personen-" + "Unfallversicherung"
        item.description = f"{before}{'' if hyphenated else ' '}{text}".strip()
    return True


def _aligned_with(line: Line, row: _Row, desc_cell: Cell | None) -> bool:
    """True if the line's description text starts within the item's description (cell or column)."""
    if desc_cell is not None:
        x0, x1 = desc_cell.x0, desc_cell.x1
    else:
        column = next((c for c in row.columns if c.name == "description"), None)
        if column is None:
            return False
        x0, x1 = column.x0, column.x1
    starts = [c.x0 for i, cells in row.by_column.items() if row.columns[i].name == "description" for c in cells]
    return bool(starts) and x0 - 3.0 <= min(starts) <= x1


def _find_table(lines: list[Line], ctx: ParseContext) -> tuple[_Table, list[Column]] | None:
    """The first header candidate (most columns first) whose table yields items."""
    candidates = [(i, found) for i in range(len(lines)) if (found := _header_at(lines, i)) is not None]
    candidates.sort(key=lambda c: (-len(_fields(c[1][0])), c[0]))
    for index, header in candidates[:5]:
        table = _read_table(lines, index, header, ctx)
        if table.lines:
            return table, header[0]
    return None


# --- the extractor ---------------------------------------------------------------------------


def extract_pdf_po(doc: PdfDocument) -> ParsedPO | None:
    """Extract a PO from a text PDF.

    Returns the header fields and the items when an item table is found; the header fields with
    ``lines=[]`` when no item table is found but a PO number, date, supplier or total can be read
    (the caller decides what happens next); ``None`` only when nothing at all is readable.
    """
    lines = [line for line in document_lines(doc) if line.cells]
    if not lines:
        return None
    ctx = ParseContext(decimal_comma=guess_decimal_comma(c.text for line in lines for c in line.cells))
    lines, table, columns = _item_table(doc, lines, ctx)
    day_first = is_day_first(lines, ctx.decimal_comma)
    fields, bad_dates = _header_values(lines, table, doc, day_first)

    po = ParsedPO(source_format="pdf", extractor="pdf_text", stats={"pages": len(doc.pages)})
    po.document_type = read_document_type(lines)
    po.po_number = pick_po_number(fields, po.document_type)
    po.supplier_name = fields.get("supplier_name")
    po.order_date = parse_date(fields["order_date"], day_first=day_first) if "order_date" in fields else None
    if po.order_date is None and bad_dates:
        ctx.issues.append(Issue(code="UNREADABLE_DATE", message=f"could not read the order date {bad_dates[0]!r}"))
    header = min(table.used) if table.used else 0
    po.currency = read_currency(fields, table.money_texts, columns, lines[header : header + 2], lines, table.used)
    po.lines = table.lines
    if not any(c.name == "sku" for c in columns):
        _positions_as_skus(po.lines, table.positions)
        leading_codes(po.lines)
    _fill_totals(po, table)
    po.prices_include_tax = _prices_include_tax(po, columns, lines, table)
    po.issues = [*ctx.issues, *table.issues]
    if not po.lines and not any((po.po_number, po.order_date, po.supplier_name, po.total)):
        return None
    return po


def _item_table(doc: PdfDocument, lines: list[Line], ctx: ParseContext) -> tuple[list[Line], _Table, list[Column]]:
    """The lines read, the item table and its columns. When pdfplumber's ruled tables hold no item table
    (a page frame taken for a table), the words are read alone; with no item table at all, the totals rows
    anywhere in the document are still read (an empty table with no columns)."""
    found = _find_table(lines, ctx)
    if found is None and any(page.tables for page in doc.pages):
        words_only = [line for line in document_lines(doc, ruled=False) if line.cells]
        found = _find_table(words_only, ctx)
        if found is not None:
            lines = words_only
    if found is not None:
        return lines, found[0], found[1]
    table = _Table()
    _free_totals(lines, table, ctx)
    return lines, table, []


def _header_values(lines: list[Line], table: _Table, doc: PdfDocument, day_first: bool) -> tuple[dict[str, str], list[str]]:
    """Header fields (labels, then the title, then the letterhead for the supplier) and unreadable dates."""
    fields, bad_dates = read_header_fields(lines, table.used, day_first)
    read_title_fields(lines, table.used, fields, day_first)
    read_lone_date(lines, table.used, fields, day_first)
    if "supplier_name" not in fields:
        phrases = [
            Phrase(c.text, line.page, c.x0, c.x1, line.top)
            for i, line in enumerate(lines)
            if i not in table.used
            for c in line.cells
            if not is_label(c.text)
        ]
        supplier = supplier_candidate(phrases, doc.pages[0].height or 842.0)
        if supplier:
            fields["supplier_name"] = supplier
    return fields, bad_dates


def _positions_as_skus(lines: list[POLine], positions: dict[int, str | None]) -> None:
    """A ``No.`` column that holds codes (``1908-S``), not position numbers (1, 2, 3 or 10, 20), is the SKU."""
    values = [positions.get(id(line)) for line in lines]
    if not values or any(v is None for v in values) or all(v.strip().rstrip(".").isdigit() for v in values if v):
        return
    for line, value in zip(lines, values):
        if line.sku is None and value:
            line.sku = value.strip()


def _fill_totals(po: ParsedPO, table: _Table) -> None:
    """Totals from the summary rows: of several Subtotal rows (sections) the one that sums the lines, of
    several Total rows (a tax breakdown's ``Total`` too) the one that is subtotal + tax + shipping; else the last."""
    po.tax = table.totals.get("tax")
    po.shipping = table.totals.get("shipping")
    cent = Decimal("0.01")
    if table.subtotals:
        lines_sum = po.lines_sum()
        matching = [s for s in table.subtotals if abs(s - lines_sum) <= cent]
        po.subtotal = matching[-1] if matching else table.subtotals[-1]
    po.total = table.totals.get("total")
    rate = table.totals.get("tax_rate")
    if po.tax is None and rate is not None and po.subtotal is not None and po.total is not None:
        rest = po.total - po.subtotal - (po.shipping or 0)  # the tax printed as a rate only ("Sales Tax 10%")
        if abs(rest - po.subtotal * rate / 100) <= Decimal("0.01"):
            po.tax = rest
    if len(table.grand_totals) > 1:
        net = po.subtotal if po.subtotal is not None else po.lines_sum()
        expected = net + (po.tax or 0) + (po.shipping or 0)
        adding_up = [t for t in table.grand_totals if abs(t - expected) <= cent]
        po.total = adding_up[-1] if adding_up else table.grand_totals[-1]


def _free_totals(lines: list[Line], table: _Table, ctx: ParseContext) -> None:
    """Without an item table: the totals rows anywhere in the document (``Total: 1,234.00``)."""
    for line in lines:
        row = _Row(line, {i: [c] for i, c in enumerate(line.cells)}, [Column(None, c.x0, c.x1) for c in line.cells])
        outcome = _summary(row, ctx)
        if outcome is not None and outcome[0] != "carry":
            _apply_summary(table, outcome)


def _prices_include_tax(po: ParsedPO, columns: list[Column], lines: list[Line], table: _Table) -> bool | None:
    """Whether line prices include tax: said by a price column's header, else shown by the totals' arithmetic."""
    header = [lines[i] for i in sorted(table.used)[:2]] if table.used else []
    money = [c for c in columns if c.name in ("unit_cost", "line_total")]
    for line in header:
        for cell in line.cells:
            if any(overlap(cell.x0, cell.x1, c.x0, c.x1) > 0 for c in money):
                said = tax_inclusion_of(cell.text)
                if said is not None:
                    return said
    said_by_totals = [tax_inclusion_of(label) for kind, label in table.summary_labels if kind in ("tax", "subtotal")]
    if True in said_by_totals or False in said_by_totals:
        return True in said_by_totals  # "enthaltene MwSt" / "darin enthalten" vs "zzgl. MwSt" / "Total HT"
    if not po.tax or po.total is None or not po.lines:
        return None
    shipping = po.shipping or Decimal(0)
    net = po.subtotal if po.subtotal is not None else po.lines_sum()
    cent = Decimal("0.01")
    if abs(net + po.tax + shipping - po.total) <= cent:
        return False
    if abs(po.lines_sum() + shipping - po.total) <= cent and (po.subtotal is None or po.subtotal == po.total):
        return True
    return None
