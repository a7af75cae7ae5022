"""Read UN/CEFACT Cross Industry Invoices (CII D16B: XRechnung, Factur-X / ZUGFeRD 2.x) and Cross Industry Orders
(Order-X, CIO D20B) into a :class:`ParsedPO`.

Parsing is the UBL reader's (:func:`~poflow_dagster.extraction.ubl.parse_xml`: :mod:`defusedxml`, DTDs, entities
and external references refused). Elements are matched on namespace URIs, never on prefixes.

An Order-X message (``rsm:SCRDMCCBDACIOMessageStructure``) uses the same aggregates in schema version 128: its
namespaces are mapped onto CII's before reading. A ZUGFeRD 1.0 invoice (``rsm:CrossIndustryDocument``) is mapped
the same way, its older element names (``HeaderExchangedDocument``, ``ApplicableSupplyChainTradeSettlement``...)
renamed to CII D16B's. Its TypeCode gives the document_type (231 order response ->
order_confirmation, else purchase_order), quantities are ``RequestedQuantity`` (or ``AgreedQuantity``) and the
currency ``OrderCurrencyCode``.

Mapping (``rsm:CrossIndustryInvoice``):

* ``rsm:ExchangedDocument``: ``ram:ID`` -> po_number (the invoice number; the buyer's order reference
  ``BuyerOrderReferencedDocument/IssuerAssignedID`` is named in an info issue and kept in
  ``stats["order_reference"]``), ``IssueDateTime/DateTimeString`` (``CCYYMMDD``, a time may follow) -> order_date,
  ``TypeCode`` (380 invoice, 381 credit note, 384 corrected...) -> document_type ``invoice``;
* ``ApplicableHeaderTradeAgreement/SellerTradeParty/Name`` -> supplier_name;
* ``ApplicableHeaderTradeSettlement``: ``InvoiceCurrencyCode`` -> currency; the monetary summation's
  ``LineTotalAmount`` -> subtotal, ``TaxTotalAmount`` in the invoice currency -> tax, ``GrandTotalAmount`` ->
  total (prepaid amounts are named in an info issue); a tax basis or grand total says the line amounts are net
  (prices_include_tax false); header ``SpecifiedTradeAllowanceCharge`` charges whose reason says freight
  (and ``SpecifiedLogisticsServiceCharge``) -> shipping, other allowances/charges -> an issue;
* lines ``IncludedSupplyChainTradeLineItem``: ``SpecifiedTradeProduct`` ``SellerAssignedID`` (else
  ``BuyerAssignedID``, else ``GlobalID``) -> sku, ``GlobalID`` with ``schemeID`` 0160 (GS1 GTIN) -> barcode,
  ``Name`` (else ``Description``) -> description; ``BilledQuantity`` and its ``unitCode`` (UN/ECE Rec 20) ->
  quantity and unit; ``NetPriceProductTradePrice/ChargeAmount`` divided by its ``BasisQuantity`` -> unit_cost;
  ``LineTotalAmount`` -> line_total; the line's allowances less charges -> discount when the line amount
  applies them.

Errors (:class:`PoflowError`): ``malformed_xml``, ``unsafe_xml``, ``unsupported_xml``, ``no_line_items``.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import ROUND_HALF_UP, Decimal
from xml.etree.ElementTree import Element

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import Issue, ParsedPO, POLine
from poflow_dagster.extraction.barcodes import clean_barcode
from poflow_dagster.extraction.charges import DocumentCharge, apply_document_charges
from poflow_dagster.extraction.numbers import as_money
from poflow_dagster.extraction.ubl import (
    FREIGHT_REASON_CODES,
    element_text,
    line_discount,
    parse_xml,
    price_per_unit,
    read_ubl,
    unit_of_measure,
)

__all__ = ["CII_NAMESPACES", "extract_cii", "extract_xml", "is_cii", "read_cii"]

_UNCEFACT = "urn:un:unece:uncefact:data:standard:"
#: Prefixes used in this module's paths -> the namespace URIs they stand for (CII D16B, schema version 100).
CII_NAMESPACES = {
    "rsm": _UNCEFACT + "CrossIndustryInvoice:100",
    "ram": _UNCEFACT + "ReusableAggregateBusinessInformationEntity:100",
    "udt": _UNCEFACT + "UnqualifiedDataType:100",
}
_ROOT = f"{{{CII_NAMESPACES['rsm']}}}CrossIndustryInvoice"
_ORDER_X_RSM = "urn:un:unece:uncefact:data:SCRDMCCBDACIOMessageStructure:100"
_ORDER_X_ROOT = f"{{{_ORDER_X_RSM}}}SCRDMCCBDACIOMessageStructure"
#: Order-X namespaces -> the CII ones this module's paths use.
_ORDER_X_AS_CII = {
    _ORDER_X_RSM: CII_NAMESPACES["rsm"],
    _UNCEFACT + "ReusableAggregateBusinessInformationEntity:128": CII_NAMESPACES["ram"],
    _UNCEFACT + "UnqualifiedDataType:128": CII_NAMESPACES["udt"],
}
_ZUGFERD_1_RSM = "urn:ferd:CrossIndustryDocument:invoice:1p0"
_ZUGFERD_1_ROOT = f"{{{_ZUGFERD_1_RSM}}}CrossIndustryDocument"
#: ZUGFeRD 1.0 namespaces -> the CII ones.
_ZUGFERD_1_AS_CII = {
    _ZUGFERD_1_RSM: CII_NAMESPACES["rsm"],
    _UNCEFACT + "ReusableAggregateBusinessInformationEntity:12": CII_NAMESPACES["ram"],
    _UNCEFACT + "UnqualifiedDataType:15": CII_NAMESPACES["udt"],
}
#: ZUGFeRD 1.0 element names -> their CII D16B names (the summation is the header's or the line's by its parent).
_ZUGFERD_1_NAMES = {
    "HeaderExchangedDocument": "ExchangedDocument",
    "SpecifiedSupplyChainTradeTransaction": "SupplyChainTradeTransaction",
    "ApplicableSupplyChainTradeAgreement": "ApplicableHeaderTradeAgreement",
    "ApplicableSupplyChainTradeDelivery": "ApplicableHeaderTradeDelivery",
    "ApplicableSupplyChainTradeSettlement": "ApplicableHeaderTradeSettlement",
    "SpecifiedSupplyChainTradeAgreement": "SpecifiedLineTradeAgreement",
    "SpecifiedSupplyChainTradeDelivery": "SpecifiedLineTradeDelivery",
    "SpecifiedSupplyChainTradeSettlement": "SpecifiedLineTradeSettlement",
}
_SUMMATION_BY_PARENT = {
    "ApplicableSupplyChainTradeSettlement": "SpecifiedTradeSettlementHeaderMonetarySummation",
    "SpecifiedSupplyChainTradeSettlement": "SpecifiedTradeSettlementLineMonetarySummation",
}
#: Order-X TypeCodes (UNTDID 1001) that are not a purchase order.
_ORDER_X_TYPES = {"231": "order_confirmation"}
_QUANTITIES = ("ram:BilledQuantity", "ram:RequestedQuantity", "ram:AgreedQuantity")
#: What makes a trade line item an item rather than a note.
_ITEM_EVIDENCE = (
    "ram:SpecifiedTradeProduct",
    *(f"ram:SpecifiedLineTradeDelivery/{q}" for q in _QUANTITIES),
    "ram:SpecifiedLineTradeSettlement/ram:SpecifiedTradeSettlementLineMonetarySummation",
)

CENT = Decimal("0.01")
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_CURRENCY = re.compile(r"[A-Z]{3}")
_FREIGHT_WORDS = re.compile(
    r"\b(freight|shipping|shipment|delivery|carriage|postage|fracht|versand\w*|porto|frakt|livraison|transport)\b",
    re.IGNORECASE,
)
#: ``schemeID`` of a GTIN in ``GlobalID``: 0160 is GS1's GTIN in the ISO 6523 ICD list.
_GTIN_SCHEMES = frozenset({"0160", "GTIN"})

_SETTLEMENT = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeSettlement"
_SUMMATION = f"{_SETTLEMENT}/ram:SpecifiedTradeSettlementHeaderMonetarySummation"
_AGREEMENT = "rsm:SupplyChainTradeTransaction/ram:ApplicableHeaderTradeAgreement"
_LINES = "rsm:SupplyChainTradeTransaction/ram:IncludedSupplyChainTradeLineItem"


def is_cii(root: Element) -> bool:
    """The parsed root is a CII D16B ``CrossIndustryInvoice``, a ZUGFeRD 1.0 ``CrossIndustryDocument`` or an
    Order-X ``SCRDMCCBDACIOMessageStructure``."""
    return root.tag in (_ROOT, _ORDER_X_ROOT, _ZUGFERD_1_ROOT)


def _local(tag: object) -> tuple[str | None, str]:
    """``{uri}Local`` -> (uri, Local)."""
    if isinstance(tag, str) and tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return uri, local
    return None, str(tag)


def _as_cii(el: Element, namespaces: dict[str, str], names: dict[str, str] | None = None) -> None:
    """Rename a tree's elements into the CII D16B namespaces and, for ZUGFeRD 1.0, element names."""
    _, parent = _local(el.tag)
    for child in el:
        uri, local = _local(child.tag)
        if uri in namespaces:
            if names is not None:
                summation = _SUMMATION_BY_PARENT.get(parent) if local == "SpecifiedTradeSettlementMonetarySummation" else None
                ordered_id = parent == "BuyerOrderReferencedDocument" and local == "ID"
                local = summation or ("IssuerAssignedID" if ordered_id else names.get(local, local))
            _as_cii(child, namespaces, names)
            child.tag = f"{{{namespaces[uri]}}}{local}"


def _find_text(el: Element, path: str) -> str | None:
    """Text at a namespace-aware path below ``el``."""
    return element_text(el.find(path, CII_NAMESPACES))


def _cii_date(raw: str) -> dt.date | None:
    """``CCYYMMDD`` (format 102; 203/204 add the time) -> date; ``None`` when invalid."""
    if not re.fullmatch(r"\d{8}(\d{4}(\d{2})?)?", raw):
        return None
    try:
        return dt.date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
    except ValueError:
        return None


class _Reader:
    """Reads values from one CII invoice and collects issues about them."""

    def __init__(self, doc: Element) -> None:
        self.doc = doc
        self.issues: list[Issue] = []

    def number(self, el: Element | None, path: str, what: str, *, money: bool = False) -> Decimal | None:
        """A decimal at ``path``; an ``unreadable_number`` issue when present but invalid."""
        raw = None if el is None else _find_text(el, path)
        if raw is None:
            return None
        if not _DECIMAL.fullmatch(raw):
            self.issues.append(Issue(code="UNREADABLE_NUMBER", message=f"could not read {what} {raw!r}"))
            return None
        value = Decimal(raw)
        return as_money(value) if money else value

    # header

    def header(self, po: ParsedPO) -> None:
        """Number, date, currency, supplier and the order reference."""
        po.po_number = _find_text(self.doc, "rsm:ExchangedDocument/ram:ID")
        raw = _find_text(self.doc, "rsm:ExchangedDocument/ram:IssueDateTime/udt:DateTimeString")
        po.order_date = _cii_date(raw) if raw else None
        if raw and po.order_date is None:
            self.issues.append(Issue(code="UNREADABLE_DATE", message=f"could not read the issue date {raw!r}"))
        po.currency = self.currency()
        po.supplier_name = _find_text(self.doc, f"{_AGREEMENT}/ram:SellerTradeParty/ram:Name")
        ordered = _find_text(self.doc, f"{_AGREEMENT}/ram:BuyerOrderReferencedDocument/ram:IssuerAssignedID")
        po.stats["order_reference"] = ordered
        if ordered and ordered != po.po_number:
            message = f"the document {po.po_number or ''} refers to order {ordered} (BuyerOrderReferencedDocument)"
            self.issues.append(Issue(code="ORDER_REFERENCE", severity="info", message=" ".join(message.split())))

    def currency(self) -> str | None:
        """InvoiceCurrencyCode (an order's OrderCurrencyCode), ISO 4217."""
        code = _find_text(self.doc, f"{_SETTLEMENT}/ram:InvoiceCurrencyCode") or _find_text(
            self.doc, f"{_SETTLEMENT}/ram:OrderCurrencyCode"
        )
        if code is None:
            return None
        if not _CURRENCY.fullmatch(code.upper()):
            self.issues.append(Issue(code="UNREADABLE_CURRENCY", message=f"unknown currency {code!r}"))
            return None
        return code.upper()

    # lines

    def lines(self) -> list[POLine]:
        """Every IncludedSupplyChainTradeLineItem with a product, quantity or amount, numbered from 1 (a line
        that only carries a note is left out with an info issue)."""
        elements = self.doc.findall(_LINES, CII_NAMESPACES)
        items = [el for el in elements if any(el.find(p, CII_NAMESPACES) is not None for p in _ITEM_EVIDENCE)]
        if not items:
            raise PoflowError("no_line_items", "the Cross Industry document has no IncludedSupplyChainTradeLineItem")
        if len(items) < len(elements):
            message = f"{len(elements) - len(items)} trade line item(s) with only a note left out"
            self.issues.append(Issue(code="NOTE_LINES_SKIPPED", severity="info", message=message))
        return [self.line(el, line_no) for line_no, el in enumerate(items, start=1)]

    def line(self, el: Element, line_no: int) -> POLine:
        """One POLine from a trade line item."""
        product = el.find("ram:SpecifiedTradeProduct", CII_NAMESPACES)
        delivery = el.find("ram:SpecifiedLineTradeDelivery", CII_NAMESPACES)
        path = next((p for p in _QUANTITIES if delivery is not None and delivery.find(p, CII_NAMESPACES) is not None), None)
        billed = None if path is None or delivery is None else delivery.find(path, CII_NAMESPACES)
        quantity = None if path is None else self.number(delivery, path, f"line {line_no}: quantity")
        settlement = el.find("ram:SpecifiedLineTradeSettlement", CII_NAMESPACES)
        line_total = self.number(
            settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount",
            f"line {line_no}: line amount", money=True,
        )
        unit_cost = self.unit_cost(el, line_no, quantity, line_total)
        discount = self.discount(settlement, line_no, quantity, unit_cost, line_total)
        if line_total is None and quantity is not None and unit_cost is not None:
            line_total = (quantity * unit_cost - (discount or 0)).quantize(CENT, rounding=ROUND_HALF_UP)
        return POLine(
            line_no=line_no,
            sku=_sku(product),
            barcode=_gtin(product),
            description=None if product is None else _find_text(product, "ram:Name")
            or _find_text(product, "ram:Description"),
            quantity=quantity,
            unit_cost=unit_cost,
            line_total=line_total,
            unit=None if billed is None else unit_of_measure(billed.get("unitCode")),
            discount=discount,
        )

    def unit_cost(
        self, el: Element, line_no: int, quantity: Decimal | None, line_total: Decimal | None
    ) -> Decimal | None:
        """The net price per one unit (divided by its BasisQuantity when that is not 1)."""
        price_el = el.find("ram:SpecifiedLineTradeAgreement/ram:NetPriceProductTradePrice", CII_NAMESPACES)
        price = self.number(price_el, "ram:ChargeAmount", f"line {line_no}: net price", money=True)
        base = self.number(price_el, "ram:BasisQuantity", f"line {line_no}: basis quantity")
        unit_cost, issue = price_per_unit(price, base, quantity, line_total, line_no=line_no, where="BasisQuantity")
        self.issues.extend([issue] if issue else [])
        return unit_cost

    def discount(
        self, settlement: Element | None, line_no: int, quantity: Decimal | None, unit_cost: Decimal | None,
        total: Decimal | None,
    ) -> Decimal | None:
        """The line's allowances less its charges (see :func:`~poflow_dagster.extraction.ubl.line_discount`)."""
        net = Decimal(0)
        charges = [] if settlement is None else settlement.findall("ram:SpecifiedTradeAllowanceCharge", CII_NAMESPACES)
        for charge in charges:
            amount = self.number(charge, "ram:ActualAmount", f"line {line_no}: allowance/charge amount", money=True)
            net += (amount or 0) * (-1 if _is_charge(charge) else 1)
        discount, issue = line_discount(net, quantity, unit_cost, total, line_no=line_no)
        self.issues.extend([issue] if issue else [])
        return discount

    # totals

    def totals(self, po: ParsedPO) -> None:
        """Subtotal, tax, total from the monetary summation; shipping from freight charges."""
        block = self.doc.find(_SUMMATION, CII_NAMESPACES)
        if block is not None:
            po.subtotal = self.number(block, "ram:LineTotalAmount", "line total amount", money=True)
            po.total = self.number(block, "ram:GrandTotalAmount", "grand total amount", money=True)
            if po.total is None:
                po.total = self.number(block, "ram:DuePayableAmount", "due payable amount", money=True)
            if any(block.find(p, CII_NAMESPACES) is not None for p in ("ram:TaxBasisTotalAmount", "ram:GrandTotalAmount")):
                po.prices_include_tax = False
            po.tax = self.tax(block, po.currency)
            self._note_prepaid(block)
        po.shipping, po.discount, po.charges = self.allowances_and_charges()

    def tax(self, block: Element, currency: str | None) -> Decimal | None:
        """TaxTotalAmount in the invoice currency (a tax-currency copy is skipped)."""
        for amount in block.findall("ram:TaxTotalAmount", CII_NAMESPACES):
            if currency and amount.get("currencyID", currency).strip().upper() != currency:
                continue
            raw = element_text(amount)
            if raw is not None and _DECIMAL.fullmatch(raw):
                return as_money(Decimal(raw))
            self.issues.append(Issue(code="UNREADABLE_NUMBER", message=f"could not read tax total amount {raw!r}"))
        return None

    def _note_prepaid(self, block: Element) -> None:
        """Name a prepaid amount (the due amount leaves it out; the total is the grand total)."""
        prepaid = self.number(block, "ram:TotalPrepaidAmount", "prepaid amount", money=True)
        if prepaid:
            due = self.number(block, "ram:DuePayableAmount", "due payable amount", money=True)
            message = f"{format(prepaid, 'f')} was prepaid; {format(due or 0, 'f')} is left to pay"
            self.issues.append(Issue(code="PREPAID_AMOUNT", severity="info", message=message))

    def allowances_and_charges(self) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
        """Header trade allowances/charges and logistics service charges: (freight = shipping, allowances =
        discount, other charges); the allowances and other charges are also named in an info issue."""
        settlement = self.doc.find(_SETTLEMENT, CII_NAMESPACES)
        if settlement is None:
            return None, None, None
        found = []
        for charge in settlement.findall("ram:SpecifiedTradeAllowanceCharge", CII_NAMESPACES):
            amount = self.number(charge, "ram:ActualAmount", "allowance/charge amount", money=True)
            found.append(DocumentCharge(amount, _is_charge(charge), _is_freight(charge),
                                        _describe_charge(charge, amount)))
        for service in settlement.findall("ram:SpecifiedLogisticsServiceCharge", CII_NAMESPACES):
            amount = self.number(service, "ram:AppliedAmount", "logistics service charge", money=True)
            found.append(DocumentCharge(amount, True, True, "logistics service charge"))
        return apply_document_charges(self.issues, found)


def _sku(product: Element | None) -> str | None:
    """SellerAssignedID, else BuyerAssignedID, else GlobalID."""
    if product is None:
        return None
    paths = ("ram:SellerAssignedID", "ram:BuyerAssignedID", "ram:GlobalID")
    return next((sku for sku in (_find_text(product, p) for p in paths) if sku), None)


def _gtin(product: Element | None) -> str | None:
    """The product's GlobalID when its scheme is a GTIN (0160)."""
    if product is None:
        return None
    for element in product.findall("ram:GlobalID", CII_NAMESPACES):
        value = element_text(element)
        if value and (element.get("schemeID") or "").strip().upper() in _GTIN_SCHEMES:
            return clean_barcode(value)
    return None


def _is_charge(charge: Element) -> bool:
    """ChargeIndicator/Indicator is true (a charge, not an allowance)."""
    return (_find_text(charge, "ram:ChargeIndicator/udt:Indicator") or "").lower() in ("true", "1")


def _is_freight(charge: Element) -> bool:
    """The reason code or text says freight / delivery / shipping."""
    code = (_find_text(charge, "ram:ReasonCode") or "").upper()
    return code in FREIGHT_REASON_CODES or bool(_FREIGHT_WORDS.search(_find_text(charge, "ram:Reason") or ""))


def _describe_charge(charge: Element, amount: Decimal | None) -> str:
    """``charge Insurance 25.00`` style label for an issue message."""
    kind = "charge" if _is_charge(charge) else "allowance"
    reason = _find_text(charge, "ram:Reason") or _find_text(charge, "ram:ReasonCode")
    return f"{kind} {reason or '?'} {'?' if amount is None else format(amount, 'f')}"


def read_cii(doc: Element) -> ParsedPO:
    """Extract a purchase order from a parsed ``CrossIndustryInvoice`` or Order-X root."""
    is_order = doc.tag == _ORDER_X_ROOT
    if is_order:
        _as_cii(doc, _ORDER_X_AS_CII)
    elif doc.tag == _ZUGFERD_1_ROOT:
        _as_cii(doc, _ZUGFERD_1_AS_CII, _ZUGFERD_1_NAMES)
    type_code = _find_text(doc, "rsm:ExchangedDocument/ram:TypeCode")
    document_type = _ORDER_X_TYPES.get(type_code or "", "purchase_order") if is_order else "invoice"
    reader = _Reader(doc)
    po = ParsedPO(source_format="cii", extractor="cii", document_type=document_type)
    reader.header(po)
    po.lines = reader.lines()
    reader.totals(po)
    po.issues = reader.issues
    po.stats["document"] = "order" if is_order else "invoice"
    po.stats["type_code"] = type_code
    return po


def extract_cii(data: bytes) -> ParsedPO:
    """Extract a purchase order from UN/CEFACT Cross Industry Invoice or Order-X XML.

    Raises :class:`PoflowError` with ``malformed_xml``, ``unsafe_xml``, ``unsupported_xml`` or ``no_line_items``.
    """
    root = parse_xml(data)
    if not is_cii(root):
        raise PoflowError("unsupported_xml", "the XML is not a UN/CEFACT Cross Industry Invoice (CII, ZUGFeRD 1.0) or Order-X order")
    return read_cii(root)


def extract_xml(data: bytes) -> ParsedPO:
    """Extract a purchase order from structured XML: UN/CEFACT CII or Order-X, else a UBL document."""
    root = parse_xml(data)
    return read_cii(root) if is_cii(root) else read_ubl(root)
