"""Read UBL 2.x ordering and billing documents (incl. Peppol BIS 3) into a :class:`ParsedPO`: Order, OrderChange,
OrderResponse, Quotation, DespatchAdvice, Invoice, FreightInvoice, CreditNote, SelfBilledCreditNote, DebitNote.

Parsing goes through :mod:`defusedxml` with DTDs forbidden, so entity expansion
(billion laughs) and external entities (XXE) are refused before anything is read.
Elements are matched on namespace URIs, never on prefixes (``cbc:``/``cac:`` may be
spelled differently or be default namespaces). A Peppol Standard Business Document
(SBDH) envelope around the payload is unwrapped.

Mapping (the root element gives document_type: Order / OrderChange -> purchase_order, OrderResponse ->
order_confirmation, Quotation -> quote, DespatchAdvice -> delivery_note, the billing documents -> invoice):

* ``cbc:ID`` -> po_number (the document's own number; an invoice's ``cac:OrderReference``
  is named in an info issue and kept in ``stats["order_reference"]``), ``cbc:IssueDate`` -> order_date;
* ``cbc:DocumentCurrencyCode`` -> currency (else the ``currencyID`` of the amounts);
* supplier_name: ordering documents' ``SellerSupplierParty`` (DespatchAdvice: ``DespatchSupplierParty``)
  ``PartyName/Name``, else ``PartyLegalEntity/RegistrationName``; billing documents' ``AccountingSupplierParty``
  the other way round (EN 16931's seller name is the legal name, the party name its trading name);
* lines ``cac:OrderLine/cac:LineItem`` / ``cac:QuotationLine/cac:LineItem`` / ``cac:DespatchLine`` /
  ``cac:InvoiceLine`` / ``cac:CreditNoteLine`` / ``cac:DebitNoteLine``: the quantity and its ``unitCode`` (UN/ECE Rec 20, read as a unit:
  ``KGM`` -> kg, ``C62``/``EA``/``H87`` -> units...), ``cac:Price/cbc:PriceAmount`` divided by
  ``cbc:BaseQuantity`` when that is not 1, ``cbc:LineExtensionAmount`` -> line_total, the line's
  ``cac:AllowanceCharge`` allowances less charges -> discount when the line amount applies them,
  ``cac:Item/cbc:Name`` (else ``cbc:Description``), SKU from Sellers-, Buyers-, then StandardItemIdentification;
  barcode from ``StandardItemIdentification/cbc:ID`` with ``schemeID`` 0160 (GTIN) or ``GTIN``;
  product images from ``cac:Item/cac:ItemSpecificationDocumentReference/cac:Attachment``: an
  ``ExternalReference/cbc:URI`` (http/https) -> ``image_urls``, an ``EmbeddedDocumentBinaryObject`` with an
  image ``mimeCode`` -> a ``data:`` URI there (used without any request);
* ``AnticipatedMonetaryTotal`` / ``LegalMonetaryTotal`` / ``QuotedMonetaryTotal``: ``LineExtensionAmount`` ->
  subtotal, ``TaxInclusiveAmount`` (else ``PayableAmount``, which leaves out prepaid amounts) -> total;
  a tax-exclusive or tax-inclusive amount says the line amounts are net: prices_include_tax false;
  ``cac:TaxTotal/cbc:TaxAmount`` -> tax; document level freight charges (``ChargeIndicator`` true) -> shipping.

Errors (:class:`PoflowError`): ``malformed_xml``, ``unsafe_xml``, ``unsupported_xml``,
``no_line_items``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as safe_et

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import Issue, ParsedPO, POLine
from poflow_dagster.extraction.barcodes import clean_barcode
from poflow_dagster.extraction.charges import DocumentCharge, apply_document_charges
from poflow_dagster.extraction.numbers import as_money

__all__ = ["NAMESPACES", "extract_ubl", "line_discount", "parse_xml", "price_per_unit", "read_ubl", "unit_of_measure"]

_UBL = "urn:oasis:names:specification:ubl:schema:xsd:"
#: Prefixes used in this module's paths -> the namespace URIs they stand for.
NAMESPACES = {
    "cbc": _UBL + "CommonBasicComponents-2",
    "cac": _UBL + "CommonAggregateComponents-2",
    "order": _UBL + "Order-2",
    "orderchange": _UBL + "OrderChange-2",
    "orderresponse": _UBL + "OrderResponse-2",
    "quotation": _UBL + "Quotation-2",
    "despatchadvice": _UBL + "DespatchAdvice-2",
    "invoice": _UBL + "Invoice-2",
    "freightinvoice": _UBL + "FreightInvoice-2",
    "creditnote": _UBL + "CreditNote-2",
    "selfbilledcreditnote": _UBL + "SelfBilledCreditNote-2",
    "debitnote": _UBL + "DebitNote-2",
}
_SBDH = "http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader"

CENT = Decimal("0.01")
_PRICE_PLACES = Decimal("0.000001")


@dataclass(frozen=True)
class _Layout:
    """Where one UBL document type keeps the information every type has."""

    kind: str
    document_type: str
    supplier: str
    line: str
    quantity: str
    totals: str

    @property
    def legal_name_first(self) -> bool:
        """Invoices name the seller by its legal name (EN 16931 BT-27); orders by the party name."""
        return self.document_type == "invoice"


_ORDERING_LINE = ("cac:SellerSupplierParty", "cac:OrderLine/cac:LineItem", "cbc:Quantity")
_BILLING_SUPPLIER = "cac:AccountingSupplierParty"
_LAYOUTS = {
    f"{{{NAMESPACES['order']}}}Order": _Layout(
        "order", "purchase_order", *_ORDERING_LINE, "cac:AnticipatedMonetaryTotal"
    ),
    f"{{{NAMESPACES['orderchange']}}}OrderChange": _Layout(
        "order_change", "purchase_order", *_ORDERING_LINE, "cac:AnticipatedMonetaryTotal"
    ),
    f"{{{NAMESPACES['orderresponse']}}}OrderResponse": _Layout(
        "order_response", "order_confirmation", *_ORDERING_LINE, "cac:LegalMonetaryTotal"
    ),
    f"{{{NAMESPACES['quotation']}}}Quotation": _Layout(
        "quotation", "quote", "cac:SellerSupplierParty", "cac:QuotationLine/cac:LineItem", "cbc:Quantity",
        "cac:QuotedMonetaryTotal",
    ),
    f"{{{NAMESPACES['despatchadvice']}}}DespatchAdvice": _Layout(
        "despatch_advice", "delivery_note", "cac:DespatchSupplierParty", "cac:DespatchLine", "cbc:DeliveredQuantity",
        "cac:LegalMonetaryTotal",  # a despatch advice has no money: nothing is found
    ),
    f"{{{NAMESPACES['invoice']}}}Invoice": _Layout(
        "invoice", "invoice", _BILLING_SUPPLIER, "cac:InvoiceLine", "cbc:InvoicedQuantity", "cac:LegalMonetaryTotal"
    ),
    f"{{{NAMESPACES['freightinvoice']}}}FreightInvoice": _Layout(
        "freight_invoice", "invoice", _BILLING_SUPPLIER, "cac:InvoiceLine", "cbc:InvoicedQuantity",
        "cac:LegalMonetaryTotal",
    ),
    f"{{{NAMESPACES['creditnote']}}}CreditNote": _Layout(
        "credit_note", "invoice", _BILLING_SUPPLIER, "cac:CreditNoteLine", "cbc:CreditedQuantity",
        "cac:LegalMonetaryTotal",
    ),
    f"{{{NAMESPACES['selfbilledcreditnote']}}}SelfBilledCreditNote": _Layout(
        "self_billed_credit_note", "invoice", _BILLING_SUPPLIER, "cac:CreditNoteLine", "cbc:CreditedQuantity",
        "cac:LegalMonetaryTotal",
    ),
    f"{{{NAMESPACES['debitnote']}}}DebitNote": _Layout(
        "debit_note", "invoice", _BILLING_SUPPLIER, "cac:DebitNoteLine", "cbc:DebitedQuantity",
        "cac:RequestedMonetaryTotal",
    ),
}

#: UN/ECE Recommendation 20 unit codes (UBL and CII ``unitCode``) -> the unit poflow prints; other codes are
#: kept lower-cased.
_UNIT_CODES = {
    **dict.fromkeys(("C62", "EA", "H87", "NAR", "PCE", "XPP", "NMP", "NPL"), "units"),
    "KGM": "kg", "GRM": "g", "MGM": "mg", "TNE": "t", "LBR": "lb", "ONZ": "oz",
    "LTR": "l", "MLT": "ml", "CLT": "cl", "GLL": "gal",
    "MTR": "m", "CMT": "cm", "MMT": "mm", "KMT": "km", "MTK": "m2", "MTQ": "m3",
    "SEC": "s", "MIN": "min", "HUR": "h", "DAY": "days", "WEE": "weeks", "MON": "months", "ANN": "years",
    "KWH": "kwh", "KWT": "kw", "DZN": "dozen", "PR": "pairs", "SET": "sets",
}

_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(Z|[+-]\d{2}:\d{2})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
#: UNTDID 7161 charge reason codes for freight: freight service, delivery, shipping and
#: handling, cartage, transportation by vendor.
FREIGHT_REASON_CODES = frozenset({"FC", "DL", "SAA", "CAB", "TV"})
_FREIGHT_WORDS = re.compile(
    r"\b(freight|shipping|shipment|delivery|carriage|postage|transport|fracht|versand|porto|frakt|livraison)\b",
    re.IGNORECASE,
)
_GTIN_PATH = "cac:Item/cac:StandardItemIdentification/cbc:ID"
#: ``schemeID`` values of a GTIN: 0160 is GS1's GTIN in the ISO 6523 ICD code list Peppol uses.
_GTIN_SCHEMES = frozenset({"0160", "GTIN", "EAN", "UPC"})
_SKU_PATHS = (
    "cac:Item/cac:SellersItemIdentification/cbc:ID",
    "cac:Item/cac:BuyersItemIdentification/cbc:ID",
    "cac:Item/cac:StandardItemIdentification/cbc:ID",
)


# --- parsing ----------------------------------------------------------------------------------


def parse_xml(data: bytes) -> Element:
    """Parse with defusedxml (no DTDs, entities or external references)."""
    try:
        return safe_et.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise PoflowError("unsafe_xml", f"refused: the XML contains {_unsafe_construct(exc)}") from None
    except ParseError as exc:
        raise PoflowError("malformed_xml", f"the XML is not well-formed: {exc}") from None
    except (ValueError, UnicodeError, LookupError) as exc:
        raise PoflowError("malformed_xml", f"the XML could not be decoded: {exc}") from None


def _unsafe_construct(exc: defusedxml.DefusedXmlException) -> str:
    """Name what defusedxml refused (a DTD, an entity declaration, an external reference)."""
    if isinstance(exc, defusedxml.DTDForbidden):
        return f"a document type declaration (<!DOCTYPE {exc.name}>); DTDs and entities are not allowed"
    if isinstance(exc, defusedxml.EntitiesForbidden):
        return f"an entity declaration ({exc.name}); entity expansion is not allowed"
    if isinstance(exc, defusedxml.ExternalReferenceForbidden):
        return "a reference to an external resource, which is not allowed"
    return "a construct that is not allowed (DTD, entity or external reference)"


def _split_tag(tag: str) -> tuple[str | None, str]:
    """``{uri}Local`` -> (uri, Local)."""
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return uri, local
    return None, tag


def _document(root: Element) -> tuple[Element, _Layout]:
    """The UBL Order/Invoice element (unwrapping an SBDH envelope) and its layout."""
    if root.tag == f"{{{_SBDH}}}StandardBusinessDocument":
        payload = next((child for child in root if child.tag in _LAYOUTS), None)
        if payload is not None:
            root = payload
    layout = _LAYOUTS.get(root.tag) if isinstance(root.tag, str) else None
    if layout is None:
        uri, local = _split_tag(str(root.tag))
        where = f"namespace {uri!r}" if uri else "no namespace"
        raise PoflowError(
            "unsupported_xml",
            f"root element <{local}> in {where}; poflow reads UBL 2.x orders, order responses, quotations, despatch"
            " advices, invoices, credit and debit notes, UN/CEFACT Cross Industry Invoices and Order-X orders",
        )
    return root, layout


# --- values -----------------------------------------------------------------------------------


def element_text(el: Element | None) -> str | None:
    """Stripped text of an element; ``None`` when missing or blank."""
    if el is None or el.text is None:
        return None
    return " ".join(el.text.split()) or None


def _find_text(el: Element, path: str) -> str | None:
    """Text at a namespace-aware path below ``el``."""
    return element_text(el.find(path, NAMESPACES))




def _iso_date(raw: str) -> dt.date | None:
    """xs:date (``2024-03-01``, optionally with a time zone) -> date; ``None`` when invalid."""
    m = _DATE.fullmatch(raw)
    if not m:
        return None
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


class _Reader:
    """Reads values from one UBL document and collects issues about them."""

    def __init__(self, doc: Element, layout: _Layout) -> None:
        self.doc = doc
        self.layout = layout
        self.issues: list[Issue] = []

    def number(self, el: Element, path: str, what: str, *, money: bool = False) -> Decimal | None:
        """xs:decimal at ``path``; an ``unreadable_number`` issue when present but invalid."""
        raw = _find_text(el, path)
        if raw is None:
            return None
        if not _DECIMAL.fullmatch(raw):
            self.issues.append(Issue(code="UNREADABLE_NUMBER", message=f"could not read {what} {raw!r}"))
            return None
        value = Decimal(raw)
        return as_money(value) if money else value

    # header

    def po_number(self) -> str | None:
        """The document's own number (cbc:ID); a referenced order's number is named in an info issue."""
        own = _find_text(self.doc, "cbc:ID")
        ordered = _find_text(self.doc, "cac:OrderReference/cbc:ID")
        if ordered and ordered != own:
            message = f"the {self.layout.kind.replace('_', ' ')} {own or ''} refers to order {ordered} (cac:OrderReference)"
            self.issues.append(Issue(code="ORDER_REFERENCE", severity="info", message=" ".join(message.split())))
        return own

    def order_reference(self) -> str | None:
        """The referenced order's number (cac:OrderReference/cbc:ID), if any."""
        return _find_text(self.doc, "cac:OrderReference/cbc:ID")

    def order_date(self) -> dt.date | None:
        """cbc:IssueDate, the document's own date."""
        raw = _find_text(self.doc, "cbc:IssueDate")
        if raw is None:
            return None
        value = _iso_date(raw)
        if value is None:
            self.issues.append(Issue(code="UNREADABLE_DATE", message=f"could not read the issue date {raw!r}"))
        return value

    def currency(self) -> str | None:
        """cbc:DocumentCurrencyCode, else the most common currencyID attribute."""
        code = _find_text(self.doc, "cbc:DocumentCurrencyCode")
        if code is None:
            votes = Counter(el.get("currencyID", "").strip().upper() for el in self.doc.iter() if el.get("currencyID"))
            code = votes.most_common(1)[0][0] if votes else None
        if code is None:
            return None
        if not _CURRENCY.fullmatch(code.upper()):
            self.issues.append(Issue(code="UNREADABLE_CURRENCY", message=f"unknown currency {code!r}"))
            return None
        return code.upper()

    def supplier(self) -> str | None:
        """The supplier party's PartyName/Name or PartyLegalEntity/RegistrationName, the layout's choice first."""
        party = self.doc.find(f"{self.layout.supplier}/cac:Party", NAMESPACES)
        if party is None:
            return None
        paths = ["cac:PartyName/cbc:Name", "cac:PartyLegalEntity/cbc:RegistrationName"]
        if self.layout.legal_name_first:
            paths.reverse()
        return next((name for name in (_find_text(party, path) for path in paths) if name), None)

    # lines

    def lines(self) -> list[POLine]:
        """Every OrderLine/LineItem or InvoiceLine, numbered from 1."""
        elements = self.doc.findall(self.layout.line, NAMESPACES)
        if not elements:
            raise PoflowError("no_line_items", f"the UBL {self.layout.kind} has no {self.layout.line} elements")
        return [self.line(el, line_no) for line_no, el in enumerate(elements, start=1)]

    def line(self, el: Element, line_no: int) -> POLine:
        """One POLine from a line element."""
        quantity = self.number(el, self.layout.quantity, f"line {line_no}: quantity")
        line_total = self.number(el, "cbc:LineExtensionAmount", f"line {line_no}: line amount", money=True)
        unit_cost = self.unit_cost(el, line_no, quantity, line_total)
        discount = self.discount(el, line_no, quantity, unit_cost, line_total)
        if line_total is None and quantity is not None and unit_cost is not None:
            line_total = (quantity * unit_cost - (discount or 0)).quantize(CENT, rounding=ROUND_HALF_UP)
        quantity_el = el.find(self.layout.quantity, NAMESPACES)
        return POLine(
            line_no=line_no,
            sku=next((sku for sku in (_find_text(el, p) for p in _SKU_PATHS) if sku), None),
            barcode=_gtin(el),
            image_urls=_images(el),
            description=_find_text(el, "cac:Item/cbc:Name") or _find_text(el, "cac:Item/cbc:Description"),
            quantity=quantity,
            unit_cost=unit_cost,
            line_total=line_total,
            unit=None if quantity_el is None else unit_of_measure(quantity_el.get("unitCode")),
            discount=discount,
        )

    def discount(
        self, el: Element, line_no: int, quantity: Decimal | None, unit_cost: Decimal | None, total: Decimal | None
    ) -> Decimal | None:
        """The line's cac:AllowanceCharge allowances less its charges (see :func:`line_discount`)."""
        net = Decimal(0)
        for charge in el.findall("cac:AllowanceCharge", NAMESPACES):
            amount = self.number(charge, "cbc:Amount", f"line {line_no}: allowance/charge amount", money=True)
            net += (amount or 0) * (-1 if _is_charge(charge) else 1)
        discount, issue = line_discount(net, quantity, unit_cost, total, line_no=line_no)
        self.issues.extend([issue] if issue else [])
        return discount

    def unit_cost(
        self, el: Element, line_no: int, quantity: Decimal | None, line_total: Decimal | None
    ) -> Decimal | None:
        """Price/PriceAmount per one unit (divided by Price/BaseQuantity when that is not 1)."""
        price = self.number(el, "cac:Price/cbc:PriceAmount", f"line {line_no}: price", money=True)
        base = self.number(el, "cac:Price/cbc:BaseQuantity", f"line {line_no}: base quantity")
        unit_cost, issue = price_per_unit(price, base, quantity, line_total, line_no=line_no, where="cbc:BaseQuantity")
        self.issues.extend([issue] if issue else [])
        return unit_cost

    # totals

    def totals(self, po: ParsedPO) -> None:
        """Subtotal/total from the monetary total, tax from TaxTotal, shipping from charges."""
        block = self.doc.find(self.layout.totals, NAMESPACES)
        if block is not None:
            po.subtotal = self.number(block, "cbc:LineExtensionAmount", "line extension amount", money=True)
            po.total = self.number(block, "cbc:TaxInclusiveAmount", "tax inclusive amount", money=True)
            if po.total is None:
                po.total = self.number(block, "cbc:PayableAmount", "payable amount", money=True)
            if any(block.find(p, NAMESPACES) is not None for p in ("cbc:TaxExclusiveAmount", "cbc:TaxInclusiveAmount")):
                po.prices_include_tax = False
            self._note_prepaid(block)
        po.tax = self.tax(po.currency)
        po.shipping, po.discount, po.charges = self.allowances_and_charges()

    def _note_prepaid(self, block: Element) -> None:
        """The total is the grand total: name a prepaid amount (the payable amount leaves it out)."""
        prepaid = self.number(block, "cbc:PrepaidAmount", "prepaid amount", money=True)
        if prepaid:
            payable = self.number(block, "cbc:PayableAmount", "payable amount", money=True)
            message = f"{format(prepaid, 'f')} was prepaid; {format(payable or 0, 'f')} is left to pay"
            self.issues.append(Issue(code="PREPAID_AMOUNT", severity="info", message=message))

    def tax(self, currency: str | None) -> Decimal | None:
        """The document TaxTotal/TaxAmount in the document currency (a tax-currency copy is skipped)."""
        for total in self.doc.findall("cac:TaxTotal", NAMESPACES):
            amount = total.find("cbc:TaxAmount", NAMESPACES)
            if amount is None or (currency and amount.get("currencyID", currency).strip().upper() != currency):
                continue
            return self.number(total, "cbc:TaxAmount", "tax amount", money=True)
        return None

    def allowances_and_charges(self) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
        """Document-level ``cac:AllowanceCharge``: (freight charges = shipping, allowances = discount, other
        charges); the allowances and other charges are also named in an info issue."""
        found = []
        for charge in self.doc.findall("cac:AllowanceCharge", NAMESPACES):
            amount = self.number(charge, "cbc:Amount", "allowance/charge amount", money=True)
            found.append(DocumentCharge(amount, _is_charge(charge), _is_freight(charge),
                                        _describe_charge(charge, amount)))
        return apply_document_charges(self.issues, found)


_ATTACHMENT_PATH = "cac:Item/cac:ItemSpecificationDocumentReference/cac:Attachment"
_IMAGE_MIME = re.compile(r"^image/(png|jpeg|jpg|gif|webp)$")


def _images(line: Element) -> list[str]:
    """The item's pictures: external http(s) URIs and embedded base64 images (as ``data:`` URIs), in order."""
    found: list[str] = []
    for attachment in line.findall(_ATTACHMENT_PATH, NAMESPACES):
        uri = _find_text(attachment, "cac:ExternalReference/cbc:URI")
        if uri and uri.lower().startswith(("http://", "https://")):
            found.append(uri)
        embedded = attachment.find("cbc:EmbeddedDocumentBinaryObject", NAMESPACES)
        mime = (embedded.get("mimeCode") or "").strip().lower() if embedded is not None else ""
        if embedded is not None and embedded.text and _IMAGE_MIME.match(mime):
            found.append(f"data:{mime};base64," + "".join(embedded.text.split()))
    return list(dict.fromkeys(found))


def _gtin(line: Element) -> str | None:
    """The item's GTIN: ``StandardItemIdentification/ID`` whose ``schemeID`` is 0160 (GS1 GTIN in the ISO 6523
    ICD list) or ``GTIN`` (also EAN/UPC spelled out), or that has no scheme and is all digits (8 to 14)."""
    for element in line.findall(_GTIN_PATH, NAMESPACES):
        value = element_text(element)
        scheme = (element.get("schemeID") or "").strip().upper()
        if value is None or (scheme and scheme not in _GTIN_SCHEMES):
            continue
        barcode = clean_barcode(value)
        if scheme or (barcode is not None and barcode.isdigit() and 8 <= len(barcode) <= 14):
            return barcode
    return None


def _is_charge(charge: Element) -> bool:
    """cbc:ChargeIndicator is true (a charge, not an allowance)."""
    return (_find_text(charge, "cbc:ChargeIndicator") or "").lower() in ("true", "1")


def _is_freight(charge: Element) -> bool:
    """The reason code or text says freight / delivery / shipping."""
    code = (_find_text(charge, "cbc:AllowanceChargeReasonCode") or "").upper()
    reasons = " ".join(element_text(el) or "" for el in charge.findall("cbc:AllowanceChargeReason", NAMESPACES))
    return code in FREIGHT_REASON_CODES or bool(_FREIGHT_WORDS.search(reasons))


def _describe_charge(charge: Element, amount: Decimal | None) -> str:
    """``charge Insurance 25.00`` style label for an issue message."""
    kind = "charge" if _is_charge(charge) else "allowance"
    reason = _find_text(charge, "cbc:AllowanceChargeReason") or _find_text(charge, "cbc:AllowanceChargeReasonCode")
    value = "?" if amount is None else format(amount, "f")
    return f"{kind} {reason or '?'} {value}"


def price_per_unit(
    price: Decimal | None, base: Decimal | None, quantity: Decimal | None, line_total: Decimal | None, *,
    line_no: int, where: str,
) -> tuple[Decimal | None, Issue | None]:
    """The price of one unit when ``price`` is for ``base`` units, and an info issue saying what was done.

    A base of 0 or 1 changes nothing. A base the line amount contradicts (quantity x price gives the line
    amount, quantity x price / base does not) is ignored.
    """
    if price is None or base is None or base in (0, 1):
        return price, None
    divided = as_money((price / base).quantize(_PRICE_PLACES, rounding=ROUND_HALF_UP).normalize())
    shown = f"line {line_no}: price {format(price, 'f')} is for {format(base, 'f')} units ({where})"
    contradicted = quantity is not None and line_total is not None and (
        abs(quantity * price - line_total) <= CENT < abs(quantity * divided - line_total)
    )
    if contradicted:
        message = f"{shown}, but the line amount {format(line_total, 'f')} is quantity x price: ignored"
        return price, Issue(code="BASE_QUANTITY_IGNORED", severity="info", message=message)
    return divided, Issue(code="PRICE_PER_BASE_QUANTITY", severity="info", message=shown)


def line_discount(
    net: Decimal, quantity: Decimal | None, unit_cost: Decimal | None, total: Decimal | None, *, line_no: int
) -> tuple[Decimal | None, Issue | None]:
    """A line's allowances less its charges as its discount, when positive and the line amount applies it
    (quantity x unit cost - discount = line amount); an info issue when the line amount leaves it out."""
    if not net:
        return None, None
    known = total is not None and quantity is not None and unit_cost is not None
    if known and abs(quantity * unit_cost - net - total) > CENT:
        message = (f"line {line_no}: allowances less charges of {format(net, 'f')} are not applied in its"
                   f" line amount {format(total, 'f')}")
        return None, Issue(code="LINE_ALLOWANCE_NOT_APPLIED", severity="info", message=message)
    return (as_money(net) if net > 0 else None), None


def unit_of_measure(code: str | None) -> str | None:
    """A UN/ECE Rec 20 ``unitCode`` as a unit (``KGM`` -> ``kg``, ``C62`` -> ``units``); unknown codes lower-cased."""
    code = (code or "").strip().upper()
    if not code:
        return None
    return _UNIT_CODES.get(code, code.lower())


def _units(lines: Iterable[Element], quantity_path: str) -> list[str | None]:
    """The unitCode of each line's quantity."""
    units: list[str | None] = []
    for el in lines:
        quantity = el.find(quantity_path, NAMESPACES)
        units.append(None if quantity is None else quantity.get("unitCode"))
    return units


# --- entry point ------------------------------------------------------------------------------


def extract_ubl(data: bytes) -> ParsedPO:
    """Extract a purchase order from a UBL 2.x ordering or billing document (see the module docstring).

    Raises :class:`PoflowError` with ``malformed_xml``, ``unsafe_xml``,
    ``unsupported_xml`` or ``no_line_items``.
    """
    return read_ubl(parse_xml(data))


def read_ubl(root: Element) -> ParsedPO:
    """Extract a purchase order from a parsed UBL root (an SBDH envelope is unwrapped).

    Raises :class:`PoflowError` with ``unsupported_xml`` or ``no_line_items``.
    """
    doc, layout = _document(root)
    reader = _Reader(doc, layout)
    po = ParsedPO(source_format="ubl", extractor="ubl", document_type=layout.document_type)
    po.po_number = reader.po_number()
    po.order_date = reader.order_date()
    po.currency = reader.currency()
    po.supplier_name = reader.supplier()
    po.lines = reader.lines()
    reader.totals(po)
    po.issues = reader.issues
    po.stats["document"] = layout.kind
    po.stats["order_reference"] = reader.order_reference()
    po.stats["line_units"] = _units(doc.findall(layout.line, NAMESPACES), layout.quantity)
    return po
