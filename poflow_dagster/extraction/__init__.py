"""Turn an uploaded purchase-order file into a :class:`ParsedPO`.

``extract_file`` is the only entry point the pipeline needs. The extractor is chosen
by sniffing the content (see :mod:`.sniff`), never by the file name. Every failure
caused by the input is a :class:`PoflowError` with a stable code and a one-line
message:

* ``empty_file`` - 0 bytes or only whitespace;
* ``file_too_large`` - over ``MAX_FILE_BYTES``, an xlsx expanding beyond
  ``spreadsheet.MAX_XLSX_UNCOMPRESSED_BYTES``, or more than ``spreadsheet.MAX_ROWS`` rows;
* ``unsupported_format`` - anything other than CSV/TSV/XLSX (PDF, images, EDI, XML,
  zip archives that are not workbooks, binary data, text without a table);
* ``unreadable_spreadsheet`` - a damaged xlsx;
* ``no_line_items`` - no item table, or a table without items;
* ``unreadable_file`` - the stored file cannot be read (missing, permissions);
* ``extraction_failed`` - an unexpected internal error (logged with its traceback).
"""

from __future__ import annotations

import logging
from pathlib import Path

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import Issue, ParsedPO
from poflow_dagster.extraction import spreadsheet
from poflow_dagster.extraction.sniff import (
    FORMAT_DESCRIPTIONS,
    decode_text,
    detect_delimiter,
    detect_format,
)

__all__ = ["MAX_FILE_BYTES", "SUPPORTED_FORMATS", "extract_file"]

logger = logging.getLogger(__name__)

#: Uploads larger than this are refused before being read.
MAX_FILE_BYTES = 50 * 1024 * 1024

#: Formats ``extract_file`` can read (values of ``sniff.detect_format``).
SUPPORTED_FORMATS = frozenset({"csv", "tsv", "xlsx"})

# Extensions that are unsurprising for each sniffed format (anything else -> info issue).
_EXPECTED_EXTENSIONS: dict[str, frozenset[str]] = {
    "csv": frozenset({".csv", ".txt"}),
    "tsv": frozenset({".tsv", ".tab", ".txt", ".csv"}),
    "xlsx": frozenset({".xlsx", ".xlsm"}),
}


def extract_file(path: Path, *, filename: str | None = None) -> ParsedPO:
    """Extract a purchase order from the file at ``path``.

    ``filename`` is the name the merchant uploaded (used in messages only; the
    stored file may be content-addressed). Raises :class:`PoflowError` for any
    problem with the input (codes listed in the module docstring).
    """
    path = Path(path)
    display = filename or path.name
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
    try:
        po = _extract(path, display)
    except PoflowError:
        raise
    except OSError as exc:
        raise PoflowError("unreadable_file", f"could not read {display}: {exc.strerror or exc}") from None
    except Exception as exc:  # a bug, not the user's fault: keep the traceback in the logs
        logger.exception("unexpected error while extracting %s", display)
        raise PoflowError(
            "extraction_failed", f"could not extract {display}: unexpected {type(exc).__name__}"
        ) from exc
    _note_extension_mismatch(po, filename)
    return po


def _extract(path: Path, display: str) -> ParsedPO:
    """Sniff the format and run the matching extractor."""
    fmt = detect_format(path)
    if fmt == "empty":
        raise PoflowError("empty_file", f"{display} contains only whitespace")
    if fmt not in SUPPORTED_FORMATS:
        description = FORMAT_DESCRIPTIONS.get(fmt, FORMAT_DESCRIPTIONS["unknown"])
        raise PoflowError(
            "unsupported_format",
            f"{display} looks like {description}; only CSV, TSV and XLSX purchase orders can be read",
        )
    if fmt == "xlsx":
        return spreadsheet.extract_xlsx(path)

    decoded = decode_text(path.read_bytes())
    if decoded is None:
        raise PoflowError(
            "unsupported_format", f"{display} starts like text but contains binary data or an unknown encoding"
        )
    delimiter = detect_delimiter(decoded.text) or ("\t" if fmt == "tsv" else ",")
    return spreadsheet.extract_delimited(decoded.text, delimiter=delimiter, source_format=fmt)


def _note_extension_mismatch(po: ParsedPO, filename: str | None) -> None:
    """Add an info issue when the uploaded name's extension disagrees with the content."""
    if not filename or "." not in filename:
        return
    extension = "." + filename.rsplit(".", 1)[1].lower()
    expected = _EXPECTED_EXTENSIONS.get(po.source_format)
    if expected is not None and extension not in expected:
        po.issues.append(
            Issue(
                code="extension_mismatch",
                severity="info",
                message=f"{filename} was read as {po.source_format.upper()} (its content), not by its extension",
            )
        )
