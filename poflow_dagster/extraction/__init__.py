"""Turn an uploaded purchase-order file into a :class:`ParsedPO`.

``extract_file`` is the only entry point the pipeline needs. The extractor is chosen
by sniffing the content (see :mod:`.sniff`), never by the file name. Every failure
caused by the input is a :class:`PoflowError` with a stable code and a one-line
message:

* ``empty_file`` - 0 bytes or only whitespace;
* ``file_too_large`` - over ``MAX_FILE_BYTES``, an xlsx expanding beyond
  ``spreadsheet.MAX_XLSX_UNCOMPRESSED_BYTES``, or more than ``spreadsheet.MAX_ROWS`` rows;
* ``unsupported_format`` - formats no extractor reads (Word, legacy XLS, ODS, archives, HTML, JSON,
  binary data);
* ``needs_ocr_or_llm`` - a scan or photo (or a document where no deterministic extractor reads a header nor
  lines) and no LLM configured (``OPENAI_API_KEY``);
* PDF: ``encrypted_pdf``, ``corrupt_pdf``, ``too_many_pages``; EDI: ``malformed_edi``,
  ``unsupported_edi_transaction``; XML: ``malformed_xml``, ``unsafe_xml``, ``unsupported_xml``;
  LLM: ``llm_truncated``, ``llm_bad_response``, ``llm_refused``, ``llm_auth_failed``, ``llm_unavailable``,
  ``llm_rate_limited``;
* ``unreadable_spreadsheet`` - a damaged xlsx;
* ``file_too_complex`` - a part or token beyond the parsers' budgets: an xlsx part too big, too compressed
  or with a giant XML comment/tag (:func:`.spreadsheet.inspect_xlsx`), a PDF stream inflating beyond its cap
  or a page with megabytes of drawing instructions (:mod:`.pdf`); ``unsafe_xml`` also covers an xlsx DTD;
* ``resource_limit`` - :func:`extract_file_bounded` only: parsing needed more memory or time than
  ``POFLOW_EXTRACT_MEMORY_MB`` / ``POFLOW_EXTRACT_TIMEOUT`` allow (see :mod:`.sandbox`);
* ``no_line_items`` - no item table, or a table without items (a text PDF whose header was read is not refused:
  see below);
* ``unreadable_file`` - the stored file cannot be read (missing, permissions);
* ``extraction_failed`` - an unexpected internal error (logged with its traceback).

Never refuse what is readable: a text PDF is read deterministically first. A reading that is complete and
reconciles is used as it is (the LLM is never asked); otherwise, with an LLM configured, the LLM reads the
document (pages with a text layer as text, cheaper; pages without one as images) and :mod:`.hybrid` merges
both readings (``po.stats["hybrid"]`` says what came from where); if the LLM fails, the deterministic reading
stands with a warning ``LLM_FAILED``. Offline,
a PDF whose header was read but no lines comes back with what was read and an error issue ``LINES_NOT_FOUND``
(the PO waits for a person, ``needs_review``), never refused. A CSV/TSV without an item table goes to the LLM
as text when one is configured (``no_line_items`` offline).

Every extracted PO is checked before it is returned: a line whose barcode is not a valid GTIN gets a warning
``INVALID_BARCODE`` issue (:func:`.barcodes.check_barcodes`), then the numbers are reconciled.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import Issue, ParsedPO
from poflow_dagster.domain.reconcile import reconcile
from poflow_dagster.extraction import spreadsheet
from poflow_dagster.extraction.barcodes import check_barcodes
from poflow_dagster.extraction.hybrid import LINES_NOT_FOUND, gaps, has_header, lines_not_found, merge
from poflow_dagster.extraction.sniff import (
    FORMAT_DESCRIPTIONS,
    decode_text,
    detect_delimiter,
    detect_format,
)

if TYPE_CHECKING:
    from poflow_dagster.extraction.llm import LLMPage, LLMSettings, WindowFeed
    from poflow_dagster.extraction.pdf import PdfDocument
    from poflow_dagster.extraction.sandbox import SandboxLimits, SandboxStats
    from poflow_dagster.extraction.scan_feed import ScanPlan

__all__ = ["MAX_FILE_BYTES", "SUPPORTED_FORMATS", "extract_file", "extract_file_bounded"]

#: ``on_progress(done, total)`` or ``on_progress(done, total, message)`` (called with a message when it takes one).
ProgressCallback = Callable[..., None]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Uploads larger than this are refused before being read.
MAX_FILE_BYTES = 50 * 1024 * 1024

#: No text line of a real PO is this long; such a file is refused before any parser sees it.
MAX_LINE_BYTES = 1024 * 1024

#: Formats ``extract_file`` can read (values of ``sniff.detect_format``); images and plain text need an LLM.
SUPPORTED_FORMATS = frozenset({"csv", "tsv", "xlsx", "pdf", "edi", "xml", "image", "text"})

# Extensions that are unsurprising for each sniffed format (anything else -> info issue).
_EXPECTED_EXTENSIONS: dict[str, frozenset[str]] = {
    "csv": frozenset({".csv", ".txt"}),
    "tsv": frozenset({".tsv", ".tab", ".txt", ".csv"}),
    "xlsx": frozenset({".xlsx", ".xlsm"}),
    "pdf": frozenset({".pdf"}),
    "x12": frozenset({".edi", ".x12", ".850", ".txt", ".dat"}),
    "ubl": frozenset({".xml", ".ubl"}),
    "cii": frozenset({".xml"}),
}


def extract_file(
    path: Path,
    *,
    filename: str | None = None,
    llm: LLMSettings | None = None,
    on_progress: ProgressCallback | None = None,
) -> ParsedPO:
    """Extract a purchase order from the file at ``path`` and reconcile its numbers.

    ``filename`` is the name the merchant uploaded (used in messages only; the stored file may be
    content-addressed). ``llm`` enables the LLM path (scans, photos, documents no deterministic
    extractor maps); ``on_progress(done, total, message)`` reports a scan's rendered pages and the LLM
    windows as items (``"Rendering page 4/50"``, ``"Parsing window 2/13"``; a callback taking two
    arguments gets ``(done, total)``). Raises :class:`PoflowError` for any problem with the input
    (codes listed in the module docstring).
    """
    path = Path(path)
    display = filename or path.name
    _check_size(path, display)
    po = _guarded(display, lambda: _extract(path, display, llm, on_progress))
    return _finish(po, display, filename)


def extract_file_bounded(
    path: Path,
    *,
    filename: str | None = None,
    llm: LLMSettings | None = None,
    on_progress: ProgressCallback | None = None,
    limits: SandboxLimits | None = None,
    stats: SandboxStats | None = None,
) -> ParsedPO:
    """:func:`extract_file` with all parsing in a memory- and time-bounded child process (:mod:`.sandbox`).

    The child sniffs, parses and renders (the CPU- and memory-heavy, attacker-shaped work). When a document
    needs the LLM, *this* process makes the calls, which mostly wait on the network, and the LLM's own
    timeouts bound them. A scan is streamed (:mod:`.scan_feed`): the child renders its pages window by
    window and this process sends each window to the model as it arrives, while the child renders the next
    ones (a few windows ahead at most). Progress as with :func:`extract_file`, in the calling thread. Extra
    error code: ``resource_limit``.
    """
    from poflow_dagster.extraction.sandbox import SandboxLimits, run_bounded, start_bounded

    path = Path(path)
    display = filename or path.name
    limits = limits or SandboxLimits.from_env()
    args = (str(path), filename, llm)
    if not limits.enabled:  # in-process: a scan comes back as a plan and is rendered here, lazily
        outcome = run_bounded(_parse_in_child, args, limits=limits, stats=stats, what=display)
    else:
        with start_bounded(_parse_in_child, args, limits=limits, stats=stats, what=display) as run:
            if llm is not None:  # load the SDK (the child never does) while the child parses, not at the first request
                import openai  # noqa: F401
            kind, payload = run.next()
            while kind != "result" and not (kind == "note" and payload[0] == "plan"):
                kind, payload = run.next()
            if kind == "note":
                from poflow_dagster.extraction.scan_feed import ChildScanFeed

                assert llm is not None  # the child plans a scan only with an LLM
                plan = payload[1]
                po = _guarded(display, lambda: _llm_windows(ChildScanFeed(run, plan), plan.source_format, llm,
                                                            on_progress))
                return _finish(po, display, filename)
            outcome = payload
    if isinstance(outcome, ParsedPO):
        return outcome
    if isinstance(outcome, _PendingScan):
        return _finish(_guarded(display, lambda: _scan_here(outcome, llm, on_progress)), display, filename)
    po = _guarded(display, lambda: _with_llm(
        lambda: outcome.pages, outcome.source_format, display, llm, on_progress, why=outcome.why,
        partial=outcome.partial,
    ))
    return _finish(po, display, filename)


@dataclass(frozen=True)
class _PendingLLM:
    """Pages the child prepared for the LLM (returned instead of a ``ParsedPO``)."""

    pages: list[LLMPage]
    source_format: str
    why: str
    partial: ParsedPO | None = None  # the deterministic reading the LLM's answer completes (:mod:`.hybrid`)


@dataclass(frozen=True)
class _PendingScan:
    """A scan the child planned but did not render (in-process only: the caller renders it lazily)."""

    path: str
    plan: ScanPlan


class _NeedsLLM(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """Raised by :func:`_with_llm` in the child: a BaseException so no parser catch-all turns it into an error."""

    def __init__(self, pending: _PendingLLM | _PendingScan) -> None:
        super().__init__("llm")
        self.pending = pending


#: True while :func:`_parse_in_child` runs (in the sandbox child, or in-process with the sandbox off):
#: prepare the LLM's pages and let the caller make the calls. A context variable, so it never leaks into
#: other extractions of the same process or thread.
_defer_llm: ContextVar[bool] = ContextVar("poflow_defer_llm", default=False)


def _parse_in_child(
    path: str, filename: str | None, llm: LLMSettings | None
) -> ParsedPO | _PendingLLM | _PendingScan | None:
    """The sandbox child's work: a finished ``ParsedPO``, or the pages the parent sends to the LLM.

    A scan is streamed to the parent when the child has a channel (:func:`.scan_feed.stream_scan`; the
    result is then ``None``); in-process it comes back as a plan the caller renders.
    """
    from poflow_dagster.extraction.sandbox import stream_channel

    token = _defer_llm.set(True)
    try:
        return extract_file(Path(path), filename=filename, llm=llm)
    except _NeedsLLM as signal:
        pending = signal.pending
        channel = stream_channel()
        if isinstance(pending, _PendingScan) and channel is not None:
            from poflow_dagster.extraction.scan_feed import stream_scan

            def stream() -> None:
                stream_scan(channel, pending.path, pending.plan)

            _guarded(filename or Path(path).name, stream)  # render errors read as in extract_file
            return None
        return pending
    finally:
        _defer_llm.reset(token)


def _llm_windows(
    feed: WindowFeed, source_format: str, llm: LLMSettings, on_progress: ProgressCallback | None
) -> ParsedPO:
    from poflow_dagster.extraction.llm import extract_windows

    return extract_windows(feed, llm, source_format=source_format, on_progress=on_progress)


def _scan_here(pending: _PendingScan, llm: LLMSettings | None, on_progress: ProgressCallback | None) -> ParsedPO:
    """A planned scan, rendered lazily in this thread while earlier windows are at the LLM."""
    from poflow_dagster.extraction.scan_feed import LocalScanFeed

    assert llm is not None  # a scan is planned only with an LLM
    return _llm_windows(LocalScanFeed(pending.path, pending.plan), pending.plan.source_format, llm, on_progress)


def _check_size(path: Path, display: str) -> None:
    """``unreadable_file``, ``empty_file`` or ``file_too_large`` before anything reads the file."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PoflowError("unreadable_file", f"could not read {display}: {exc.strerror or exc}") from None
    if size == 0:
        raise PoflowError("empty_file", f"{display} is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise PoflowError(
            "file_too_large",
            f"{display} is {size / 1_048_576:.1f} MB; the limit is {MAX_FILE_BYTES / 1_048_576:.0f} MB",
        )


def _guarded(display: str, work: Callable[[], _T]) -> _T:
    """Run ``work``; anything but a ``PoflowError`` becomes ``unreadable_file`` or ``extraction_failed``."""
    try:
        return work()
    except PoflowError:
        raise
    except OSError as exc:
        raise PoflowError("unreadable_file", f"could not read {display}: {exc.strerror or exc}") from None
    except Exception as exc:  # a bug, not the user's fault: keep the traceback in the logs
        logger.exception("unexpected error while extracting %s", display)
        raise PoflowError(
            "extraction_failed", f"could not extract {display}: unexpected {type(exc).__name__}"
        ) from exc


def _finish(po: ParsedPO, display: str, filename: str | None) -> ParsedPO:
    """``no_line_items`` for an empty PO (unless flagged ``LINES_NOT_FOUND`` for a person); otherwise note an
    odd extension, check barcodes and reconcile."""
    if not po.lines and not any(issue.code == LINES_NOT_FOUND for issue in po.issues):
        raise PoflowError("no_line_items", f"{display} has no order lines: it does not look like a purchase order")
    _note_extension_mismatch(po, filename)
    return reconcile(check_barcodes(po))


def _extract(path: Path, display: str, llm: LLMSettings | None, on_progress: ProgressCallback | None) -> ParsedPO:
    """Sniff the format and run the matching extractor: deterministic where the structure allows."""
    fmt = detect_format(path)
    if fmt == "empty":
        raise PoflowError("empty_file", f"{display} contains only whitespace")
    if fmt in ("csv", "tsv", "text", "edi", "unknown") and _has_overlong_line(path):
        raise PoflowError("line_too_long", f"{display} has a line longer than {MAX_LINE_BYTES // 1024} KB; "
                                           "it is not a readable purchase order")
    if fmt not in SUPPORTED_FORMATS:
        description = FORMAT_DESCRIPTIONS.get(fmt, FORMAT_DESCRIPTIONS["unknown"])
        raise PoflowError(
            "unsupported_format",
            f"{display} looks like {description}; poflow reads spreadsheets, PDFs, scans, EDI X12 850 and UBL XML",
        )
    if fmt == "xlsx":
        return spreadsheet.extract_xlsx(path)
    if fmt == "pdf":
        return _extract_pdf(path, display, llm, on_progress)
    if fmt == "image":
        return _with_llm(lambda: [_image_page(path)], "image", display, llm, on_progress, why="it is an image")
    if fmt == "xml":
        from poflow_dagster.extraction.cii import extract_xml

        return extract_xml(path.read_bytes())
    decoded = decode_text(path.read_bytes())
    if decoded is None:
        raise PoflowError(
            "unsupported_format", f"{display} starts like text but contains binary data or an unknown encoding"
        )
    if fmt == "edi":
        from poflow_dagster.extraction.x12 import extract_x12_850

        return extract_x12_850(decoded.text)
    if fmt == "text":
        from poflow_dagster.extraction.llm import text_document_pages

        return _with_llm(lambda: text_document_pages(decoded.text), "text", display, llm, on_progress,
                         why="it is free text without a table")
    delimiter = detect_delimiter(decoded.text) or ("\t" if fmt == "tsv" else ",")
    try:
        return spreadsheet.extract_delimited(decoded.text, delimiter=delimiter, source_format=fmt)
    except PoflowError as error:  # readable text without an item table: the LLM may read it
        if error.code != "no_line_items" or llm is None:
            raise
    from poflow_dagster.extraction.llm import text_document_pages

    return _with_llm(lambda: text_document_pages(decoded.text), fmt, display, llm, on_progress,
                     why="no item table could be found in it")


def _extract_pdf(path: Path, display: str, llm: LLMSettings | None, on_progress: ProgressCallback | None) -> ParsedPO:
    from poflow_dagster.extraction import pdf
    from poflow_dagster.extraction.pdf_embedded import combine_with_text, extract_embedded

    document = pdf.read_pdf(path)
    embedded = extract_embedded(path)  # a Factur-X / ZUGFeRD / Order-X PDF's own XML: the binding data
    if pdf.is_scanned(document):
        if embedded is not None:
            return combine_with_text(embedded, None)
        why = "it is a scanned PDF without a text layer"
        if llm is None:
            raise PoflowError("needs_ocr_or_llm", f"{display} needs an LLM because {why}; set OPENAI_API_KEY")
        from poflow_dagster.extraction.scan_feed import plan_scan

        pending = _PendingScan(str(path), plan_scan([page.number for page in document.pages], llm,
                                                    source_format="pdf", why=why))
        del document  # the text layer of a scan is nothing: keep no memory for it while rendering
        if _defer_llm.get():
            raise _NeedsLLM(pending)
        return _scan_here(pending, llm, on_progress)
    po = pdf.extract_pdf_po(document)
    if po is not None and not po.lines and not has_header(po):
        po = None  # nothing readable: as if no reading
    if embedded is not None:
        return combine_with_text(embedded, po if po is None or po.lines else lines_not_found(po, llm="off"))

    def text_pages() -> list[LLMPage]:
        return _text_layer_pages(path, document)

    if po is None:
        return _with_llm(text_pages, "pdf", display, llm, on_progress, why="no order table could be found in its text")
    why = gaps(po)
    if not why or llm is None:
        return po if po.lines else lines_not_found(po, llm="off")
    return _with_llm(text_pages, "pdf", display, llm, on_progress, why="; ".join(why), partial=po)


def _text_layer_pages(path: Path, document: PdfDocument) -> list[LLMPage]:
    """A text PDF's pages for the LLM: those with a text layer as text (far cheaper than images), those
    without one (a scanned page inside a text PDF) rendered as images, so nothing on them is lost."""
    from poflow_dagster.extraction.llm import LLMPage
    from poflow_dagster.extraction.pdf import render_page_images

    without_text = [page.number for page in document.pages if not page.has_text]
    images = dict(zip(without_text, render_page_images(path, without_text), strict=True)) if without_text else {}
    return [
        LLMPage(number=page.number, image=images[page.number][0], mime_type=images[page.number][1])
        if page.number in images else LLMPage(number=page.number, text=page.text)
        for page in document.pages
    ]


def _image_page(path: Path) -> LLMPage:
    """A photo or scan as one page image (JPEG, TIFF, … read; huge images scaled down; PNG or JPEG sent).

    Encoded like a scan's rendered page (:func:`.pdf.encode_page_image`): ink on paper as PNG, a photo as JPEG.
    """
    from PIL import Image

    from poflow_dagster.extraction.llm import LLMPage
    from poflow_dagster.extraction.pdf import encode_page_image

    try:
        with Image.open(path) as image:
            image.thumbnail((3000, 3000))
            data, mime_type = encode_page_image(image)
    except (OSError, Image.DecompressionBombError, ValueError) as error:
        raise PoflowError("unreadable_image", f"{path.name}: {error}") from None
    return LLMPage(number=1, image=data, mime_type=mime_type)


def _with_llm(
    pages: Callable[[], list[LLMPage]],
    source_format: str,
    display: str,
    llm: LLMSettings | None,
    on_progress: ProgressCallback | None,
    *,
    why: str,
    partial: ParsedPO | None = None,
) -> ParsedPO:
    """The LLM's reading of ``pages``; with ``partial`` (a deterministic reading with gaps), both merged."""
    if llm is None:
        raise PoflowError("needs_ocr_or_llm", f"{display} needs an LLM because {why}; set OPENAI_API_KEY")
    if _defer_llm.get():
        raise _NeedsLLM(_PendingLLM(pages(), source_format, why, partial))
    from poflow_dagster.extraction.llm import extract_with_llm

    if partial is None:
        return extract_with_llm(pages(), llm, source_format=source_format, on_progress=on_progress)
    try:
        po = extract_with_llm(pages(), llm, source_format=source_format, on_progress=on_progress)
    except PoflowError as error:  # the deterministic reading stands: a person sees why it was not completed
        logger.warning("LLM could not complete %s: %s", display, error.code)
        issue = Issue(code="LLM_FAILED", severity="warning",
                      message=f"the LLM could not complete the reading ({error.code}): {error.message}")
        kept = partial.model_copy(update={"issues": [*partial.issues, issue]})
        return kept if kept.lines else lines_not_found(kept, llm="failed")
    return merge(partial, po, why=why.split("; "))


def _has_overlong_line(path: Path) -> bool:
    """True if some line is longer than ``MAX_LINE_BYTES`` (files are capped at ``MAX_FILE_BYTES``)."""
    with path.open("rb") as handle:
        return any(len(line) > MAX_LINE_BYTES for line in handle)


def _note_extension_mismatch(po: ParsedPO, filename: str | None) -> None:
    """Add an info issue when the uploaded name's extension disagrees with the content."""
    if not filename or "." not in filename:
        return
    extension = "." + filename.rsplit(".", 1)[1].lower()
    expected = _EXPECTED_EXTENSIONS.get(po.source_format)
    if expected is not None and extension not in expected:
        po.issues.append(
            Issue(
                code="EXTENSION_MISMATCH",
                severity="info",
                message=f"{filename} was read as {po.source_format.upper()} (its content), not by its extension",
            )
        )
