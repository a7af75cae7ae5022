"""Header fields of a text PDF: PO number, supplier, order date, currency and document type.

Read from the lines outside the item table: ``Label: value`` pairs (same cell, next cell, or the cell
below; a supplier label heads a block of lines), labels in the multilingual vocabulary of
:mod:`.spreadsheet` plus the PDF-only ones below; else the title (``Rechnung Nr. 42 vom 1.2.2024``)
and the letterhead (:mod:`.parties`). An invoice, quote or delivery note is known by its own number,
a PO by its order number. Slashed dates are day-first when the document's own dates say so.
"""

from __future__ import annotations

import re
from collections import Counter

from poflow_dagster.extraction.layout import Cell, Column, Line, overlap
from poflow_dagster.extraction.numbers import detect_currency, parse_date, parse_decimal
from poflow_dagster.extraction.parties import clean_name, is_buyer_label, title_reference
from poflow_dagster.extraction.spreadsheet import (
    LABEL_INDEX,
    TITLE_PO_RE,
    lookup_synonym,
    normalize_label,
    synonym_index,
)
from poflow_dagster.extraction.vocabulary import document_type_of

__all__ = [
    "is_day_first",
    "is_label",
    "pick_po_number",
    "read_currency",
    "read_document_type",
    "read_header_fields",
    "read_lone_date",
    "read_title_fields",
]

#: Extra header labels seen on PDFs (invoices, document numbers).
_EXTRA_LABELS: dict[str, tuple[str, ...]] = {
    "po_number": ("po ref", "po reference", "purchase order ref"),
    # The document's own number (an invoice's, a quote's): the PO number of a document that is no PO.
    "document_number": (
        "invoice", "invoice no", "invoice number", "invoice id", "document no", "document number",
        "rechnungsnummer", "rechnung nr", "rechnungsnr", "belegnummer", "beleg nr", "belegnr",
        "numero de facture", "facture no", "no de facture", "n facture", "numero de factura", "factura no",
        "factuurnummer", "numero fattura", "fattura n", "fattura no", "numero da fatura", "cislo faktury",
        "quote no", "quote number", "quotation no", "quotation number", "angebotsnummer", "angebot nr",
        "devis no", "numero de devis", "lieferscheinnummer", "lieferschein nr", "delivery note no",
        "credit note no", "gutschriftsnummer", "請求書番号", "見積番号", "מספר חשבונית", "رقم الفاتورة",
    ),
    "supplier_name": (
        "supplier details", "vendor details", "bill from", "remit to", "issued by", "seller", "provider",
        "service provider", "seller trade name", "prodejce", "dodavatel", "rechnungssteller", "auftragnehmer", "emetteur",
        "emisor", "cedente prestatore", "発行元", "البائع",
    ),
    "order_date": (
        "invoice date", "document date", "date of order", "date issued", "dated", "ordered on",
        "rechnungsdatum", "date de facture", "fecha de factura", "factuurdatum", "belegdatum", "beleg datum", "datum vydani",
        "datum vystaveni", "issue date", "date of issue", "quotation date", "quote date", "fecha de emision",
        "data emissione", "data fattura", "datum faktury", "date d emission", "fakturadatum", "請求日",
        "תאריך חשבונית", "تاريخ الفاتورة",
    ),
}
_FIELD_INDEX = {**synonym_index(_EXTRA_LABELS), **LABEL_INDEX}
_CURRENCY_HINT_RE = re.compile(
    r"(?:currency|amounts? in|prices? in|w[äa]hrung|betr[äa]ge in|devise|montants en|moneda|importes en|"
    r"valuta|moeda|通貨|מטבע|العملة)",
    re.IGNORECASE,
)
_PO_TITLE_RE = re.compile(r"\bpurchase\s+order\s*[:#]?\s*([A-Z0-9][\w\-/.]*\d[\w\-/]*)\s*$", re.IGNORECASE)
_DATED_RE = re.compile(r"^(\S+)\s+(?:vom|von|du|del|of|dated|from|issued(?:\s+at|\s+on)?|le)\s+(.+)$", re.IGNORECASE)
_PO_PREFIX_RE = re.compile(r"^(?:#|no\.?|nr\.?|n[°º])\s*", re.IGNORECASE)


def _field_label(text: str) -> str | None:
    """The header field a label names; a compound ending with a long label counts too
    (``Liefer- und Rechnungsdatum`` -> ``Rechnungsdatum``), a short one does not (``Due date`` is no ``Date``)."""
    if any(ch.isdigit() for ch in text):
        return None  # a label carries no digits: "Invoice 103767" is a label and its value
    hit = lookup_synonym(text, _FIELD_INDEX, prefix=False)
    if hit:
        return hit[0]
    words = normalize_label(text).split()
    if len(words) > 4:
        return None
    for n in range(1, len(words)):
        tail = " ".join(words[n:])
        if len(tail) >= 8 and tail in _FIELD_INDEX and _FIELD_INDEX[tail][0] in _COMPOUND_FIELDS:
            return _FIELD_INDEX[tail][0]
    return None


#: Fields whose labels are recognised at the end of a longer label (never names: ``Le Fournisseur``).
_COMPOUND_FIELDS = frozenset({"order_date", "po_number", "document_number"})


def is_label(text: str) -> bool:
    """True for ``PO Number`` / ``Date:`` (labels carry no digits unless they end with a colon)."""
    label, sep, rest = text.partition(":")
    if rest.strip() or (not sep and any(ch.isdigit() for ch in label)):
        return False
    return _field_label(label) is not None


#: Words printed where a name is expected that are no name (``Nummer: 549910`` under ``Seller:``).
_NOT_NAMES = frozenset({"name", "nummer", "number", "no", "address", "adresse", "anschrift", "id", "logo"})


def _clean_value(name: str, value: str | None, day_first: bool) -> str | None:
    """The value if it is plausible for the field (normalised), else None."""
    if value is None:
        return None
    value = value.strip().strip(":").strip()
    if not value or is_label(value):
        return None
    if name in ("po_number", "document_number"):
        value = _PO_PREFIX_RE.sub("", value)
        dated = _DATED_RE.match(value)
        if dated and parse_date(dated.group(2), day_first=day_first) is not None:
            value = dated.group(1)  # "2014-03 vom 11.07.2014"
        spaced_digits = all(token.isdigit() for token in value.split())  # "1 24 0005 0001201345"
        ok = any(ch.isdigit() for ch in value) and len(value) <= 40 and (value.count(" ") <= 2 or spaced_digits)
        return value if ok else None
    if name == "order_date":
        return value if parse_date(value, day_first=day_first) is not None else None
    if name == "currency":
        return value if detect_currency(value) else None
    if name == "supplier_name":
        if ":" in value or is_buyer_label(value) or normalize_label(value) in _NOT_NAMES:
            return None
        value = clean_name(value) or ""
    ok = 0 < len(value) <= 80 and parse_decimal(value) is None
    return value if ok else None


def _value_candidates(
    lines: list[Line], i: int, j: int, inline: str | None, colon: bool, label_row: bool, name: str = ""
) -> list[str]:
    """Where a label's value may be: after the colon, the next cell right, the cell below.

    In a row of bare labels (``Vendor   Date   Terms``) the values are below, so the
    cell below is tried before the cell to the right. A supplier label heads a block: the first
    of the three lines below that is a name (not ``Number: 123``) is its value.
    """
    cells = lines[i].cells
    right = [cells[j + 1].text] if j + 1 < len(cells) else []
    below: list[str] = []
    supplier = name == "supplier_name"
    if colon or label_row or supplier:
        label = cells[j]
        for line in lines[i + 1 : i + (4 if supplier else 2)]:
            if line.page != lines[i].page:
                break
            below += [c.text for c in line.cells if overlap(c.x0, c.x1, label.x0 - 2, label.x1 + 40) > 0][:1]
    if inline:
        return [inline]
    return below + right if label_row and not colon else right + below


def read_header_fields(lines: list[Line], skip: set[int], day_first: bool) -> tuple[dict[str, str], list[str]]:
    """Header fields from the lines outside the item table; also the raw unreadable dates."""
    found: dict[str, str] = {}
    bad_dates: list[str] = []
    for i, line in enumerate(lines):
        if i in skip:
            continue
        label_row = sum(1 for c in line.cells if is_label(c.text)) >= 2
        for j, cell in enumerate(line.cells):
            label, sep, inline = cell.text.partition(":")
            name = _field_label(label)
            if name is None:
                _inline_pair(cell.text, found, day_first)
                continue
            if name in found:
                continue
            candidates = _value_candidates(lines, i, j, inline.strip() or None, bool(sep), label_row, name)
            candidates = [c for c in candidates if not is_label(c)]
            value = next((v for c in candidates if (v := _clean_value(name, c, day_first)) is not None), None)
            if value is not None:
                found[name] = value
            elif name == "order_date" and candidates:
                bad_dates.append(candidates[0])
    if "po_number" not in found:
        _po_from_title(lines, skip, found)
    return found, bad_dates


def _inline_pair(text: str, found: dict[str, str], day_first: bool) -> None:
    """``Date 14.09.2026`` / ``PO No PO-1001`` written without a colon (strictly validated)."""
    words = text.split()
    for n in range(min(len(words) - 1, 4), 0, -1):
        if any(ch.isdigit() for ch in " ".join(words[:n])):
            continue  # a label has no digits ("Rechnung Nr. 42" is no label of "vom 1.2.2024")
        name = _field_label(" ".join(words[:n]))
        if name is None or name in found or name == "supplier_name":
            continue
        value = _clean_value(name, " ".join(words[n:]), day_first)
        if value is not None:
            found[name] = value
        return


def _po_from_title(lines: list[Line], skip: set[int], found: dict[str, str]) -> None:
    """Fallback: a title such as ``Purchase Order #1001`` or ``PURCHASE ORDER PO-1001``."""
    for i, line in enumerate(lines):
        if i in skip:
            continue
        for cell in line.cells:
            m = TITLE_PO_RE.search(cell.text) or _PO_TITLE_RE.search(cell.text)
            if m:
                found["po_number"] = next(g for g in m.groups() if g)
                return


def read_currency(
    fields: dict[str, str],
    money_texts: list[str],
    columns: list[Column],
    header: list[Line],
    lines: list[Line],
    skip: set[int],
) -> str | None:
    """Currency: the labelled field, else votes from money headers and cells, else a ``prices in`` note."""
    if "currency" in fields:
        return detect_currency(fields["currency"])
    votes: Counter[str] = Counter()
    money = [c for c in columns if c.name in ("unit_cost", "line_total")]
    for cell in (c for line in header for c in line.cells):
        if any(overlap(cell.x0, cell.x1, c.x0, c.x1) > 0 for c in money):
            code = detect_currency(cell.text)
            if code:
                votes[code] += 1
    for text in money_texts:
        code = detect_currency(text)
        if code:
            votes[code] += 1
    if votes:
        return votes.most_common(1)[0][0]
    for i, line in enumerate(lines):
        if i not in skip and _CURRENCY_HINT_RE.search(line.text):
            code = detect_currency(line.text)
            if code:
                return code
    return None


_SLASHED_DATE_RE = re.compile(r"\b(\d{1,2})[/.-](\d{1,2})[/.-](?:\d{4}|\d{2})\b")


def is_day_first(lines: list[Line], decimal_comma: bool | None) -> bool:
    """Whether ``03/04/2026`` is day first: a date in the document with a day above 12 decides
    (``19/03/2016`` or ``03/19/2016``), else European number style (decimal comma) means day first."""
    day, month = 0, 0
    for line in lines:
        for m in _SLASHED_DATE_RE.finditer(line.text):
            first, second = int(m.group(1)), int(m.group(2))
            day += first > 12 >= second
            month += second > 12 >= first
    if day != month:
        return day > month
    return bool(decimal_comma)


def pick_po_number(fields: dict[str, str], document_type: str | None) -> str | None:
    """The PO number: an invoice, quote or delivery note (or an untitled document) is known by its own number,
    a PO by its order number."""
    own, order = fields.get("document_number"), fields.get("po_number")
    if own and (document_type != "purchase_order" or not order):
        return own
    return order


def read_lone_date(lines: list[Line], skip: set[int], fields: dict[str, str], day_first: bool) -> None:
    """Without a labelled date, a cell that is nothing but a date above the item table on the first page
    (``February 17, 2026`` under the title) is the document's date."""
    if "order_date" in fields or not lines:
        return
    end = min(skip) if skip else len(lines)
    for line in lines[:end]:
        if line.page != lines[0].page:
            return
        for cell in line.cells:
            if any(ch.isdigit() for ch in cell.text) and parse_date(cell.text, day_first=day_first) is not None:
                fields["order_date"] = cell.text
                return


def read_title_fields(lines: list[Line], skip: set[int], fields: dict[str, str], day_first: bool) -> None:
    """The number and date a title carries (``Rechnung Nr. 42 vom 1.2.2024``) when no label gave them."""
    if "document_number" in fields and "order_date" in fields:
        return
    for i, line in enumerate(lines[:_TITLE_LINES]):
        if i in skip:
            continue
        found = [title_reference(text, day_first=day_first) for text in (line.text, *(c.text for c in line.cells))]
        numbers = [number for number, _ in found if number]
        dates = [date for _, date in found if date]
        if numbers:
            fields.setdefault("document_number", numbers[0])
        if dates:
            fields.setdefault("order_date", dates[0])
        if numbers or dates:
            return


#: How many lines from the top of the first page may hold the document's title.
_TITLE_LINES = 25


def read_document_type(lines: list[Line]) -> str | None:
    """The type the document's title names (largest print first, then topmost), else None."""
    first_page = lines[0].page
    candidates = []
    for order, line in enumerate(lines[:_TITLE_LINES]):
        if line.page != first_page:
            break
        for cell in line.cells:
            kind = document_type_of(cell.text)
            if kind is not None:
                candidates.append((-_cell_height(cell, line), order, kind))
    return min(candidates)[2] if candidates else None


def _cell_height(cell: Cell, line: Line) -> float:
    return max((w.bottom - w.top for w in cell.words), default=line.bottom - line.top)

