"""Read the structured order/invoice XML embedded in a hybrid PDF (Factur-X, ZUGFeRD, XRechnung-in-PDF, Order-X).

A hybrid PDF carries its document twice: a human-readable page and a UN/CEFACT CII (or UBL) XML file attached
to the PDF (``factur-x.xml``, ``zugferd-invoice.xml``, ``xrechnung.xml``, ``order-x.xml``...). The XML is the
legally binding e-invoice data; the page is only its rendering. So when the XML is there its header values are
taken over what the text layer gives (:func:`combine_with_text`: an XML that does not add up is not trusted;
the printed lines are kept when they reconcile).

The attachment is found in the catalog's ``/Names /EmbeddedFiles`` name tree and in its ``/AF`` (associated
files) array, read with :mod:`pdfminer` (already a dependency of the text-layer reader). Only files whose name
ends in ``.xml`` or whose MIME subtype says XML are considered, and only one whose root element is a CII,
Order-X, ZUGFeRD 1.0 or UBL document is returned. Reading is bounded and never fails loudly: an embedded stream
above :data:`MAX_EMBEDDED_BYTES` decoded is refused, only the PDF's own streams are read (a file specification
pointing outside the PDF or to a URL is ignored), and a damaged or encrypted PDF gives ``None``.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import Issue, ParsedPO
from poflow_dagster.domain.reconcile import reconcile
from poflow_dagster.extraction.cii import extract_xml, is_cii
from poflow_dagster.extraction.ubl import parse_xml

__all__ = ["MAX_EMBEDDED_BYTES", "embedded_order_file", "embedded_order_xml", "extract_embedded"]

log = logging.getLogger(__name__)

#: The largest embedded file read, decoded (a real e-invoice is a few hundred kilobytes at most).
MAX_EMBEDDED_BYTES = 5 * 1024 * 1024
#: How deep a name tree is walked and how many of its nodes are visited (a loop or a bomb stops here).
_MAX_TREE_DEPTH = 16
_MAX_TREE_NODES = 1000
_UBL_NAMESPACE = "urn:oasis:names:specification:ubl:schema:xsd:"
_FLATE = {"FlateDecode", "Fl"}


def embedded_order_xml(path: Path) -> bytes | None:
    """The CII/UBL XML embedded in the PDF at ``path``, or ``None`` when it has none (or is damaged/encrypted)."""
    found = embedded_order_file(path)
    return found[1] if found else None


def embedded_order_file(path: Path) -> tuple[str, bytes] | None:
    """The embedded file's name and its CII/UBL XML, or ``None`` (see :func:`embedded_order_xml`)."""
    try:
        with Path(path).open("rb") as fh:
            return _first_order_file(fh)
    except Exception as exc:  # noqa: BLE001 - a damaged PDF must never break extraction
        log.debug("no embedded XML read from %s: %s", path, exc)
        return None


def extract_embedded(path: Path) -> ParsedPO | None:
    """The purchase order read from the PDF's embedded CII/UBL XML, or ``None`` when there is none to read.

    An embedded XML the XML reader rejects gives ``None`` and a logged warning: the text layer is read instead.
    """
    found = embedded_order_file(path)
    if found is None:
        return None
    name, data = found
    try:
        po = extract_xml(data)
    except PoflowError as exc:
        log.warning("embedded XML %r in %s not read (%s); reading the text layer instead", name, path, exc)
        return None
    po.source_format = "pdf"
    po.extractor = "pdf_embedded_xml"
    po.issues.append(
        Issue(
            code="EMBEDDED_XML_READ",
            severity="info",
            message=f"read from the e-invoice XML {name!r} embedded in the PDF (the legally binding data)",
        )
    )
    return po


#: Header fields the embedded XML gives when it has them (the legally binding values).
_HEADER_FIELDS = ("po_number", "supplier_name", "order_date", "currency", "document_type", "prices_include_tax",
                  "subtotal", "discount", "charges", "tax", "shipping", "total")
_LINE_ERRORS = frozenset({"LINE_AMOUNT_MISMATCH", "SUBTOTAL_MISMATCH", "LINES_NOT_FOUND", "NEGATIVE_QUANTITY"})


def combine_with_text(embedded: ParsedPO, text: ParsedPO | None) -> ParsedPO:
    """One PO from a hybrid PDF's embedded XML and its text layer, both reconciled.

    An XML that does not reconcile on its own is not trusted: the text reading stands (with an info issue). Else
    the XML's header fields win; the lines are the text layer's when it read lines that reconcile (they are what
    the page shows: printed codes, rounded prices, the printed unit words), the XML's otherwise; when the XML's
    header makes the text lines disagree (``SUBTOTAL_MISMATCH``) the XML is taken whole.
    """
    xml = reconcile(embedded)
    if text is None:
        return xml
    text = reconcile(text)
    if _errors(xml):
        note = Issue(code="EMBEDDED_XML_INCONSISTENT", severity="info",
                     message=f"the e-invoice XML embedded in the PDF does not add up ({', '.join(_errors(xml))}); "
                             "the printed page was read instead")
        return text.model_copy(update={"issues": [*text.issues, note]})
    text_lines_hold = bool(text.lines) and not (_errors(text) & _LINE_ERRORS)
    if not text_lines_hold:
        return xml
    header = {name: getattr(xml, name) for name in _HEADER_FIELDS if getattr(xml, name) is not None}
    read_from = [issue for issue in xml.issues if issue.code == "EMBEDDED_XML_READ"]
    merged = reconcile(text.model_copy(update={**header, "issues": [*text.issues, *read_from],
                                               "extractor": "pdf_embedded_xml+pdf_text"}))
    return xml if _errors(merged) - _errors(text) else merged


def _errors(po: ParsedPO) -> set[str]:
    return {issue.code for issue in po.issues if issue.severity == "error"}


# --- the PDF's attachments ---------------------------------------------------------------------


def _first_order_file(fh: Any) -> tuple[str, bytes] | None:
    """The first XML attachment whose root is a CII/UBL document, with its name."""
    for name, spec in _attachments(fh):
        data = _xml_payload(name, spec)
        if data is not None and _is_order_xml(data):
            return name, data
    return None


def _attachments(fh: Any) -> Iterator[tuple[str, dict]]:
    """(name, file specification) of each attachment, from the EmbeddedFiles tree and then ``/AF``."""
    from pdfminer.pdfdocument import PDFDocument
    from pdfminer.pdfparser import PDFParser

    document = PDFDocument(PDFParser(fh))
    if getattr(document, "encryption", None):
        return
    catalog = _resolve(document.catalog)
    if not isinstance(catalog, dict):
        return
    seen: set[int] = set()
    names = _resolve(catalog.get("Names"))
    tree = _resolve(names.get("EmbeddedFiles")) if isinstance(names, dict) else None
    pairs = list(_name_tree(tree)) if isinstance(tree, dict) else []
    pairs += [(None, spec) for spec in _as_list(catalog.get("AF"))]
    for key, ref in pairs:
        spec = _resolve(ref)
        if not isinstance(spec, dict) or id(spec) in seen:
            continue
        seen.add(id(spec))
        yield _spec_name(spec, key), spec


def _name_tree(root: dict) -> Iterator[tuple[str | None, Any]]:
    """(key, value) pairs of a PDF name tree, walked breadth-first within depth and node bounds."""
    queue: list[tuple[Any, int]] = [(root, 0)]
    visited = 0
    while queue and visited < _MAX_TREE_NODES:
        node, depth = queue.pop(0)
        node = _resolve(node)
        visited += 1
        if not isinstance(node, dict) or depth > _MAX_TREE_DEPTH:
            continue
        flat = _as_list(node.get("Names"))
        for i in range(0, len(flat) - 1, 2):
            yield _text(_resolve(flat[i])), flat[i + 1]
        queue.extend((kid, depth + 1) for kid in _as_list(node.get("Kids")))


def _spec_name(spec: dict, key: str | None) -> str:
    """The attachment's file name: ``/UF``, else ``/F``, else its name-tree key."""
    for field in ("UF", "F"):
        name = _text(_resolve(spec.get(field)))
        if name:
            return name
    return key or ""


def _xml_payload(name: str, spec: dict) -> bytes | None:
    """The decoded embedded stream of an XML attachment, or ``None`` (not XML, not embedded, too large)."""
    ef = _resolve(spec.get("EF"))
    if not isinstance(ef, dict):
        return None  # a reference to a file outside the PDF: never followed
    stream = _resolve(ef.get("UF") or ef.get("F"))
    if stream is None or not hasattr(stream, "get_rawdata"):
        return None
    subtype = _literal(_resolve(stream.attrs.get("Subtype"))).lower()
    if not (name.lower().endswith(".xml") or "xml" in subtype):
        return None
    return _decoded(stream)


def _decoded(stream: Any) -> bytes | None:
    """The stream's bytes, decoded within :data:`MAX_EMBEDDED_BYTES` (``None`` above it)."""
    filters = [_literal(_resolve(f)) for f in _as_list(stream.attrs.get("Filter"))]
    params = stream.attrs.get("DecodeParms") or stream.attrs.get("DP")
    raw = stream.get_rawdata()
    if raw is None:
        return None
    if not filters:
        data = bytes(raw)
    elif len(filters) == 1 and filters[0] in _FLATE and not params:
        data = _inflate(bytes(raw))
    elif len(raw) <= MAX_EMBEDDED_BYTES:
        data = stream.get_data()  # another filter: pdfminer decodes; the result is checked below
    else:
        return None
    if data is None or len(data) > MAX_EMBEDDED_BYTES:
        return None
    return bytes(data)


def _inflate(raw: bytes) -> bytes | None:
    """Flate-decode without ever holding more than the limit (a zip bomb stops at the limit)."""
    inflater = zlib.decompressobj()
    data = inflater.decompress(raw, MAX_EMBEDDED_BYTES + 1)
    return None if len(data) > MAX_EMBEDDED_BYTES else data


def _is_order_xml(data: bytes) -> bool:
    """The bytes parse (safely) to a CII, Order-X, ZUGFeRD 1.0 or UBL root element."""
    try:
        root = parse_xml(data)
    except PoflowError:
        return False
    return is_cii(root) or str(root.tag).startswith("{" + _UBL_NAMESPACE)


# --- pdfminer values ---------------------------------------------------------------------------


def _resolve(obj: Any) -> Any:
    from pdfminer.pdftypes import resolve1

    return resolve1(obj)


def _as_list(obj: Any) -> list:
    obj = _resolve(obj)
    if obj is None:
        return []
    return list(obj) if isinstance(obj, list) else [obj]


def _literal(obj: Any) -> str:
    """A PDF name (``/text#2Fxml``) as text."""
    name = getattr(obj, "name", obj)
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    return name if isinstance(name, str) else ""


def _text(obj: Any) -> str | None:
    """A PDF text string (PDFDocEncoding or UTF-16 with a BOM) as text."""
    if isinstance(obj, bytes):
        if obj[:2] in (b"\xfe\xff", b"\xff\xfe"):
            return obj.decode("utf-16", errors="replace")
        return obj.decode("latin-1")
    return obj if isinstance(obj, str) else None
