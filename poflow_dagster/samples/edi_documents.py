"""Builders for EDI / XML test documents, generated from a python spec.

Tests compare what the extractors read with the :class:`OrderSpec` a document was
built from, never with hard-coded outputs. Builders:

* X12: :func:`x12_850` (any :class:`X12Style`: ``*``/``~``, ``|``/newline with ``>``
  components, CRLF after ``~`` ...), :func:`x12_810`, :func:`x12_interchange` for several
  transaction sets in one interchange;
* UBL: :func:`ubl_order` (UBL 2.1 Order, prefixes chosen by the caller),
  :func:`peppol_invoice` (Peppol BIS Billing 3.0 Invoice, default namespaces), optional
  SBDH envelope;
* hostile / foreign XML: :func:`billion_laughs_xml`, :func:`xxe_xml`,
  :func:`external_dtd_xml`, :func:`rss_xml`, :func:`cii_invoice_xml`, :func:`truncated_xml`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from xml.sax.saxutils import escape, quoteattr

CENT = Decimal("0.01")


# --- the spec ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineSpec:
    """One ordered item; ``unit_price`` is always per single unit."""

    sku: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    uom: str = "EA"
    #: X12 qualifier of the SKU (VP vendor part, SK, BP, IN, UP ...).
    sku_qualifier: str = "VP"
    #: X12 product IDs written *before* the SKU (lower-priority qualifiers).
    other_ids: tuple[tuple[str, str], ...] = ()
    #: UBL: PriceAmount is quoted for this many units (cbc:BaseQuantity).
    base_quantity: Decimal | None = None
    #: UBL: which identification holds the SKU: "sellers", "buyers" or "standard".
    ubl_sku_source: str = "sellers"

    @property
    def line_total(self) -> Decimal:
        """quantity x unit price, rounded to cents."""
        return (self.quantity * self.unit_price).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class ChargeSpec:
    """A document-level charge that is not freight (X12 SAC / UBL AllowanceCharge)."""

    reason: str
    amount: Decimal
    x12_code: str = "D980"  # Insurance
    ubl_code: str = "ABK"  # Miscellaneous


@dataclass(frozen=True)
class OrderSpec:
    """What a purchase order says; every builder renders one of these."""

    po_number: str
    supplier: str
    order_date: dt.date
    currency: str
    lines: tuple[LineSpec, ...]
    tax: Decimal | None = None
    shipping: Decimal | None = None
    other_charges: tuple[ChargeSpec, ...] = ()
    buyer: str = "Maple & Pine Goods Co."
    supplier_legal_name: str = "Northwind Trading Ltd"

    @property
    def subtotal(self) -> Decimal:
        """Sum of the line totals."""
        return sum((line.line_total for line in self.lines), Decimal(0))

    @property
    def total(self) -> Decimal:
        """Subtotal + tax + shipping + other charges."""
        extras = sum((c.amount for c in self.other_charges), Decimal(0))
        return self.subtotal + (self.tax or 0) + (self.shipping or 0) + extras


def sample_spec(**changes: object) -> OrderSpec:
    """A realistic three-line spec (zero-padded SKUs, a UPC, fractional quantities)."""
    base = OrderSpec(
        po_number="PO-004512",
        supplier="Northwind Trading",
        order_date=dt.date(2024, 3, 7),
        currency="USD",
        lines=(
            LineSpec("000123", "Ceramic mug, 12 oz, matte black", Decimal("24"), Decimal("4.75"), uom="EA",
                     other_ids=(("BP", "MUG-BLK-12"), ("UP", "012345678905"))),
            LineSpec("0042-A", "Linen tea towel & holder", Decimal("12"), Decimal("6.10"), uom="CA",
                     sku_qualifier="SK"),
            LineSpec("00987", "Bulk coffee beans", Decimal("2.5"), Decimal("18.333"), uom="LB",
                     sku_qualifier="BP"),
        ),
        tax=Decimal("15.87"),
        shipping=Decimal("12.50"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# --- X12 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class X12Style:
    """Separators of an interchange, and what follows each segment terminator."""

    element: str = "*"
    component: str = ">"
    segment: str = "~"
    repetition: str = "^"
    newline: str = "\n"


STAR_TILDE = X12Style()
PIPE_NEWLINE = X12Style(element="|", component=">", segment="\n", repetition="^", newline="")
TILDE_CRLF = X12Style(newline="\r\n")
TILDE_ONE_LINE = X12Style(newline="")

X12Segment = Sequence[str]


def isa_segment(style: X12Style, *, control: int = 1) -> str:
    """A fixed-length (106 character) ISA segment including its terminator."""
    elements = [
        "ISA", "00", " " * 10, "00", " " * 10, "ZZ", "NORTHWIND".ljust(15), "ZZ", "MAPLEPINE".ljust(15),
        "240307", "1230", style.repetition, "00501", f"{control:09d}", "0", "P", style.component,
    ]
    text = style.element.join(elements) + style.segment
    assert len(text) == 106, len(text)
    return text


def x12_interchange(sets: Sequence[tuple[str, Sequence[X12Segment]]], style: X12Style = STAR_TILDE) -> str:
    """ISA/GS ... GE/IEA around transaction sets given as (ST01 code, body segments)."""
    segments: list[X12Segment] = [["GS", "PO", "NORTHWIND", "MAPLEPINE", "20240307", "1230", "1", "X", "005010"]]
    for number, (code, body) in enumerate(sets, start=1):
        control = f"{number:04d}"
        segments.append(["ST", code, control])
        segments.extend(body)
        segments.append(["SE", str(len(body) + 2), control])
    segments += [["GE", str(len(sets)), "1"], ["IEA", "1", "000000001"]]
    rendered = "".join(style.element.join(seg) + style.segment + style.newline for seg in segments)
    return isa_segment(style) + style.newline + rendered


def x12_850_segments(
    spec: OrderSpec,
    *,
    date_in: str = "BEG",
    supplier_qualifier: str = "SE",
    ctt_count: int | None = None,
    amt_total: bool = True,
    price_basis: str = "PE",
) -> list[X12Segment]:
    """The body of an 850 transaction set for ``spec``.

    ``date_in="DTM"`` leaves BEG05 empty and sends the date as DTM*004;
    ``ctt_count`` overrides CTT01 (to make it disagree with the PO1 count).
    """
    ymd = spec.order_date.strftime("%Y%m%d")
    segs: list[X12Segment] = [["BEG", "00", "SA", spec.po_number, "", ymd if date_in == "BEG" else ""]]
    segs.append(["CUR", "BY", spec.currency])
    segs.append(["DTM", "002", (spec.order_date + dt.timedelta(days=14)).strftime("%Y%m%d")])
    if date_in == "DTM":
        segs.append(["DTM", "004", ymd])
    if spec.shipping is not None:
        segs.append(_sac("D240", spec.shipping, "FREIGHT"))
    for charge in spec.other_charges:
        segs.append(_sac(charge.x12_code, charge.amount, charge.reason))
    segs.append(["N1", "BY", spec.buyer, "92", "MP-01"])
    segs.append(["N1", "ST", spec.buyer + " Warehouse", "92", "MP-WH"])
    segs.append(["N1", supplier_qualifier, spec.supplier, "92", "NW-77"])
    for number, line in enumerate(spec.lines, start=1):
        segs.extend(_po1_loop(line, number, price_basis))
    segs.append(["CTT", str(len(spec.lines) if ctt_count is None else ctt_count)])
    if spec.tax is not None:
        segs.append(["TXI", "ST", _r(spec.tax)])
    if amt_total:
        segs.append(["AMT", "TT", _r(spec.total)])
    return segs


def _sac(code: str, amount: Decimal, description: str) -> X12Segment:
    """A header-level SAC charge: SAC05 amount (N2), SAC15 description."""
    return ["SAC", "C", code, "", "", _n2(amount), *[""] * 9, description]


def _po1_loop(line: LineSpec, number: int, price_basis: str) -> list[X12Segment]:
    """PO1 (+ PID*F) for one line; other IDs come before the SKU."""
    price = line.unit_price * {"HP": 100, "TP": 1000}.get(price_basis, 1)
    po1 = ["PO1", f"{number:03d}", _r(line.quantity), line.uom, _r(price), price_basis]
    for qualifier, value in (*line.other_ids, (line.sku_qualifier, line.sku)):
        po1 += [qualifier, value]
    return [po1, ["PID", "F", "08", "", "", line.description]]


def x12_850(spec: OrderSpec, style: X12Style = STAR_TILDE, **options: object) -> str:
    """A complete interchange holding one 850 for ``spec`` (options: :func:`x12_850_segments`)."""
    return x12_interchange([("850", x12_850_segments(spec, **options))], style)  # type: ignore[arg-type]


def x12_810_segments(spec: OrderSpec) -> list[X12Segment]:
    """The body of an 810 invoice for ``spec`` (BIG / IT1 / TDS)."""
    ymd = spec.order_date.strftime("%Y%m%d")
    segs: list[X12Segment] = [["BIG", ymd, "INV-" + spec.po_number, ymd, spec.po_number]]
    segs.append(["N1", "SE", spec.supplier])
    for number, line in enumerate(spec.lines, start=1):
        segs.append(["IT1", str(number), _r(line.quantity), line.uom, _r(line.unit_price), "", "VP", line.sku])
    segs.append(["TDS", _n2(spec.total)])
    segs.append(["CTT", str(len(spec.lines))])
    return segs


def x12_810(spec: OrderSpec, style: X12Style = STAR_TILDE) -> str:
    """An interchange holding only an 810 invoice."""
    return x12_interchange([("810", x12_810_segments(spec))], style)


def _r(value: Decimal) -> str:
    """X12 R type: explicit decimal point, no exponent."""
    return format(value, "f")


def _n2(value: Decimal) -> str:
    """X12 N2 type: two implied decimals (15.00 -> 1500)."""
    return str(int((value * 100).to_integral_value(rounding=ROUND_HALF_UP)))


# --- XML writer -------------------------------------------------------------------------------

UBL = "urn:oasis:names:specification:ubl:schema:xsd:"
CBC = UBL + "CommonBasicComponents-2"
CAC = UBL + "CommonAggregateComponents-2"
ORDER_NS = UBL + "Order-2"
INVOICE_NS = UBL + "Invoice-2"
SBDH_NS = "http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader"
PEPPOL_BILLING = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PEPPOL_ORDER = "urn:fdc:peppol.eu:poacc:trns:order:3"

#: Prefix per namespace role; "" means a default namespace (declared where it changes).
Prefixes = dict[str, str]
PREFIXED: Prefixes = {"doc": "", "cbc": "cbc", "cac": "cac"}
ODD_PREFIXES: Prefixes = {"doc": "po", "cbc": "b", "cac": "a"}
ALL_DEFAULT: Prefixes = {"doc": "", "cbc": "", "cac": ""}


@dataclass
class Node:
    """An XML element in a namespace role ("doc", "cbc", "cac")."""

    role: str
    name: str
    text: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)


def cbc(name: str, text: object, **attrs: str) -> Node:
    """A basic component with text."""
    return Node("cbc", name, str(text), dict(attrs))


def cac(name: str, *children: Node) -> Node:
    """An aggregate component."""
    return Node("cac", name, children=list(children))


def render(root: Node, uris: dict[str, str], prefixes: Prefixes) -> str:
    """Serialise ``root``: prefixed roles declared on the root, default ones where they change."""
    declarations = {f"xmlns:{p}": uris[role] for role, p in prefixes.items() if p}
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + _render(root, uris, prefixes, None, declarations)


def _render(node: Node, uris: dict[str, str], prefixes: Prefixes, default: str | None, extra: dict[str, str]) -> str:
    prefix = prefixes[node.role]
    attrs = dict(extra)
    if prefix:
        tag = f"{prefix}:{node.name}"
    else:
        tag = node.name
        if uris[node.role] != default:
            default = uris[node.role]
            attrs["xmlns"] = default
    attrs.update(node.attrs)
    rendered_attrs = "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items())
    inner = escape(node.text) if node.text is not None else ""
    inner += "".join(_render(child, uris, prefixes, default, {}) for child in node.children)
    return f"<{tag}{rendered_attrs}>{inner}</{tag}>"


# --- UBL --------------------------------------------------------------------------------------


def _amount(name: str, value: Decimal, currency: str) -> Node:
    return cbc(name, format(value, "f"), currencyID=currency)


def _party(name: str, legal_name: str, *, with_trading_name: bool = True) -> Node:
    parts = [cac("PartyIdentification", cbc("ID", "7300010000001", schemeID="0088"))]
    if with_trading_name:
        parts.append(cac("PartyName", cbc("Name", name)))
    parts.append(cac("PartyLegalEntity", cbc("RegistrationName", legal_name)))
    return cac("Party", *parts)


def _item(line: LineSpec) -> Node:
    ids: list[Node] = []
    if line.ubl_sku_source == "sellers":
        ids += [cac("BuyersItemIdentification", cbc("ID", "BUYER-" + line.sku)),
                cac("SellersItemIdentification", cbc("ID", line.sku))]
    elif line.ubl_sku_source == "buyers":
        ids.append(cac("BuyersItemIdentification", cbc("ID", line.sku)))
    standard = line.sku if line.ubl_sku_source == "standard" else "7350000000016"  # a valid GTIN-13 (check digit 6)
    ids.append(cac("StandardItemIdentification", cbc("ID", standard, schemeID="0160")))
    long_text = cbc("Description", line.description + " (long description)")
    return cac("Item", long_text, cbc("Name", line.description), *ids)


def _price(line: LineSpec, currency: str) -> Node:
    if line.base_quantity is None:
        return cac("Price", _amount("PriceAmount", line.unit_price, currency))
    return cac(
        "Price",
        _amount("PriceAmount", line.unit_price * line.base_quantity, currency),
        cbc("BaseQuantity", format(line.base_quantity, "f"), unitCode=line.uom),
    )


def _charges(spec: OrderSpec) -> list[Node]:
    nodes: list[Node] = []
    if spec.shipping is not None:
        nodes.append(cac("AllowanceCharge", cbc("ChargeIndicator", "true"), cbc("AllowanceChargeReasonCode", "FC"),
                         cbc("AllowanceChargeReason", "Freight"), _amount("Amount", spec.shipping, spec.currency)))
    for charge in spec.other_charges:
        nodes.append(cac("AllowanceCharge", cbc("ChargeIndicator", "true"),
                         cbc("AllowanceChargeReasonCode", charge.ubl_code), cbc("AllowanceChargeReason", charge.reason),
                         _amount("Amount", charge.amount, spec.currency)))
    return nodes


def _tax_total(spec: OrderSpec, currency: str, amount: Decimal) -> Node:
    return cac("TaxTotal", _amount("TaxAmount", amount, currency))


def _monetary_total(name: str, spec: OrderSpec) -> Node:
    charges = (spec.shipping or 0) + sum((c.amount for c in spec.other_charges), Decimal(0))
    c = spec.currency
    return cac(
        name,
        _amount("LineExtensionAmount", spec.subtotal, c),
        _amount("TaxExclusiveAmount", spec.subtotal + charges, c),
        _amount("TaxInclusiveAmount", spec.total, c),
        _amount("ChargeTotalAmount", Decimal(charges), c),
        _amount("PayableAmount", spec.total, c),
    )


def ubl_order(
    spec: OrderSpec,
    *,
    prefixes: Prefixes = PREFIXED,
    currency_code: bool = True,
    sbdh: bool = False,
    with_trading_name: bool = True,
) -> bytes:
    """A UBL 2.1 Order (Peppol Order transaction 3 flavour) for ``spec``."""
    c = spec.currency
    children: list[Node] = [
        cbc("UBLVersionID", "2.1"),
        cbc("CustomizationID", PEPPOL_ORDER),
        cbc("ID", spec.po_number),
        cbc("IssueDate", spec.order_date.isoformat()),
    ]
    if currency_code:
        children.append(cbc("DocumentCurrencyCode", c))
    children += [
        cac("BuyerCustomerParty", _party(spec.buyer, spec.buyer + " Inc.")),
        cac("SellerSupplierParty", _party(
            spec.supplier, spec.supplier_legal_name, with_trading_name=with_trading_name
        )),
        *_charges(spec),
    ]
    if spec.tax is not None:
        children.append(_tax_total(spec, c, spec.tax))
    children.append(_monetary_total("AnticipatedMonetaryTotal", spec))
    for number, line in enumerate(spec.lines, start=1):
        item = cac(
            "LineItem",
            cbc("ID", str(number)),
            cbc("Quantity", format(line.quantity, "f"), unitCode=line.uom),
            _amount("LineExtensionAmount", line.line_total, c),
            _price(line, c),
            _item(line),
        )
        children.append(cac("OrderLine", cbc("Note", f"line note {number}"), item))
    xml = render(Node("doc", "Order", children=children), _uris(ORDER_NS), prefixes)
    return (_sbdh(xml, "Order") if sbdh else xml).encode("utf-8")


def peppol_invoice(
    spec: OrderSpec,
    *,
    invoice_number: str = "INV-2024-0042",
    order_reference: bool = True,
    prefixes: Prefixes = ALL_DEFAULT,
    tax_currency: tuple[str, Decimal] | None = None,
) -> bytes:
    """A Peppol BIS Billing 3.0 Invoice for ``spec`` (default namespaces unless told).

    ``tax_currency`` adds cbc:TaxCurrencyCode and a second TaxTotal in that currency.
    """
    c = spec.currency
    children: list[Node] = [
        cbc("CustomizationID", PEPPOL_BILLING),
        cbc("ProfileID", "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"),
        cbc("ID", invoice_number),
        cbc("IssueDate", spec.order_date.isoformat()),
        cbc("DueDate", (spec.order_date + dt.timedelta(days=30)).isoformat()),
        cbc("InvoiceTypeCode", "380"),
        cbc("DocumentCurrencyCode", c),
    ]
    if tax_currency:
        children.append(cbc("TaxCurrencyCode", tax_currency[0]))
    children.append(cbc("BuyerReference", "0150abc"))
    if order_reference:
        children.append(cac("OrderReference", cbc("ID", spec.po_number)))
    children += [
        cac("AccountingSupplierParty", _party(spec.supplier, spec.supplier_legal_name)),
        cac("AccountingCustomerParty", _party(spec.buyer, spec.buyer + " Inc.")),
        *_charges(spec),
    ]
    if spec.tax is not None:
        children.append(_tax_total(spec, c, spec.tax))
        if tax_currency:
            children.append(_tax_total(spec, tax_currency[0], tax_currency[1]))
    children.append(_monetary_total("LegalMonetaryTotal", spec))
    for number, line in enumerate(spec.lines, start=1):
        children.append(
            cac(
                "InvoiceLine",
                cbc("ID", str(number)),
                cbc("InvoicedQuantity", format(line.quantity, "f"), unitCode=line.uom),
                _amount("LineExtensionAmount", line.line_total, c),
                _item(line),
                _price(line, c),
            )
        )
    return render(Node("doc", "Invoice", children=children), _uris(INVOICE_NS), prefixes).encode("utf-8")


def _uris(document_ns: str) -> dict[str, str]:
    return {"doc": document_ns, "cbc": CBC, "cac": CAC}


def _sbdh(xml: str, document: str) -> str:
    """Wrap a UBL document in a Peppol Standard Business Document envelope."""
    body = xml.split("?>", 1)[1].strip()
    header = (
        "<StandardBusinessDocumentHeader><HeaderVersion>1.0</HeaderVersion>"
        f"<DocumentIdentification><Standard>{ORDER_NS}</Standard><TypeVersion>2.1</TypeVersion>"
        f"<Type>{document}</Type></DocumentIdentification></StandardBusinessDocumentHeader>"
    )
    envelope = f'<StandardBusinessDocument xmlns="{SBDH_NS}">{header}{body}</StandardBusinessDocument>'
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + envelope


# --- hostile and foreign XML ------------------------------------------------------------------


def billion_laughs_xml(levels: int = 9) -> bytes:
    """The classic exponential entity expansion attack, aimed at a UBL Order's cbc:ID."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{"&lol%d;" % (i - 1) * 10}">' for i in range(1, levels + 1)
    ]
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE Order [\n  ' + "\n  ".join(entities) + "\n]>\n"
        f'<Order xmlns="{ORDER_NS}" xmlns:cbc="{CBC}"><cbc:ID>&lol{levels};</cbc:ID></Order>'
    ).encode()


def xxe_xml(target: str = "file:///etc/passwd") -> bytes:
    """An external entity (XXE) that would read a local file into cbc:ID."""
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE Order [<!ENTITY xxe SYSTEM "{target}">]>\n'
        f'<Order xmlns="{ORDER_NS}" xmlns:cbc="{CBC}"><cbc:ID>&xxe;</cbc:ID></Order>'
    ).encode()


def external_dtd_xml() -> bytes:
    """A document pointing at an external DTD (no inline entities)."""
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE Order SYSTEM "http://attacker.invalid/order.dtd">\n'
        f'<Order xmlns="{ORDER_NS}"/>'
    ).encode()


def rss_xml() -> bytes:
    """An RSS 2.0 feed: well-formed XML, no namespace, not a purchase order."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel><title>Supplier news</title>'
        "<item><title>New catalogue</title><link>https://example.com/c</link></item></channel></rss>"
    ).encode()


CII_NS = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"


def cii_invoice_xml() -> bytes:
    """A UN/CEFACT Cross Industry Invoice root: namespaced XML that is not UBL."""
    return f'<?xml version="1.0"?>\n<rsm:CrossIndustryInvoice xmlns:rsm="{CII_NS}"/>'.encode()


def truncated_xml(spec: OrderSpec) -> bytes:
    """A UBL Order cut off in the middle (not well-formed)."""
    data = ubl_order(spec)
    return data[: len(data) // 2]
