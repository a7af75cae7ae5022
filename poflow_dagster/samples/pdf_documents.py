"""PDF fixture builders for the PDF extractor tests (fpdf2, deterministic bytes where possible).

A :class:`POSpec` describes a purchase order (the expected values); ``make_text_po_pdf``
prints it as a text PDF: a header block, an item table (ruled or not) that continues
over as many pages as needed with the header row repeated on every page and a
``Page X of Y`` footer, a totals block and a closing note. Tests compare what the
extractor reads with the spec, never with recorded output.
"""

from __future__ import annotations

import datetime as dt
import io
import random
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "ENGLISH",
    "GERMAN",
    "TERSE",
    "Labels",
    "LineSpec",
    "POSpec",
    "euro_po_spec",
    "long_date_po_spec",
    "make_encrypted_pdf",
    "make_non_po_pdf",
    "make_random_pdf",
    "make_scanned_pdf",
    "make_text_po_pdf",
    "make_truncated_pdf",
    "multipage_po_spec",
    "simple_po_spec",
    "terse_po_spec",
]

CENT = Decimal("0.01")
_FIXED_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

# Column widths (mm) on A4 with 15 mm margins: SKU, description, qty, unit price, total.
_WIDTHS = (26.0, 70.0, 16.0, 34.0, 34.0)
_ALIGN = ("L", "L", "R", "R", "R")
_ROW_H = 7.0


@dataclass(frozen=True)
class LineSpec:
    """One ordered item; the line total is quantity x unit cost."""

    sku: str
    description: str
    quantity: Decimal
    unit_cost: Decimal

    @property
    def line_total(self) -> Decimal:
        return (self.quantity * self.unit_cost).quantize(CENT)


@dataclass(frozen=True)
class Labels:
    """The words printed on the PO (one language)."""

    title: str
    po_number: str
    supplier: str
    date: str
    currency: str
    ship_to: str
    columns: tuple[str, str, str, str, str]
    subtotal: str
    tax: str
    shipping: str
    total: str
    page: str  # with {n} and {total}
    note: str


ENGLISH = Labels(
    title="PURCHASE ORDER",
    po_number="PO Number",
    supplier="Supplier",
    date="Order Date",
    currency="Currency",
    ship_to="Ship To",
    columns=("SKU", "Description", "Qty", "Unit Price", "Amount"),
    subtotal="Subtotal",
    tax="Tax (8%)",
    shipping="Shipping & Handling",
    total="Total",
    page="Page {n} of {total}",
    note="Thank you. Payment terms: Net 30, deliver 3 pallets to dock 5.",
)
TERSE = Labels(
    title="PURCHASE ORDER",
    po_number="PO #",
    supplier="Vendor",
    date="Date",
    currency="Currency",
    ship_to="Ship Via",
    columns=("Item No", "Description", "Qty", "Unit Price", "Ext. Price"),
    subtotal="Sub-total",
    tax="VAT 20%",
    shipping="Freight",
    total="Total Due",
    page="Page {n}/{total}",
    note="Notes: 2 cartons max per pallet, deliver before 9am.",
)
GERMAN = Labels(
    title="BESTELLUNG",
    po_number="Bestellnummer",
    supplier="Lieferant",
    date="Datum",
    currency="Währung",
    ship_to="Lieferadresse",
    columns=("Artikelnr.", "Bezeichnung", "Menge", "Einzelpreis", "Gesamt"),
    subtotal="Zwischensumme",
    tax="MwSt. 19%",
    shipping="Versand",
    total="Gesamtbetrag",
    page="Seite {n} von {total}",
    note="Vielen Dank. Zahlbar innerhalb von 14 Tagen, 2 Paletten an Rampe 4.",
)


@dataclass(frozen=True)
class POSpec:
    """A purchase order to print, and the values the extractor must read back."""

    po_number: str
    supplier_name: str
    order_date: dt.date
    date_text: str  # how the date is printed
    currency: str
    lines: tuple[LineSpec, ...]
    tax: Decimal | None = None
    shipping: Decimal | None = None
    decimal_comma: bool = False
    ruled: bool = False  # cell borders (pdfplumber's table finder) or bare text (word positions)
    #: where the currency shows: a "Currency:" label, a symbol before money cells,
    #: the code in the price column headers, or the code after money cells.
    currency_style: Literal["label", "symbol", "header", "code_suffix"] = "label"
    #: "inline": one "Label: value" per line; "columns": label and value apart, two blocks side by side;
    #: "label_row": a row of labels with the values in the row below.
    header_layout: Literal["inline", "columns", "label_row"] = "inline"
    #: print two-word column names on two lines ("Unit" over "Price")
    two_line_header: bool = False
    #: wrap descriptions longer than this onto a second line (set close under the first)
    wrap_chars: int | None = None
    rows_per_page: int = 20
    labels: Labels = field(default=ENGLISH)

    @property
    def subtotal(self) -> Decimal:
        return sum((line.line_total for line in self.lines), Decimal("0.00"))

    @property
    def total(self) -> Decimal:
        return self.subtotal + (self.tax or 0) + (self.shipping or 0)

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.lines) // self.rows_per_page))


# --- specs -----------------------------------------------------------------------------------

_NOUNS = ("widget", "gadget", "bracket", "hinge", "valve", "gasket", "spindle", "sprocket", "washer", "coupler")
_ADJECTIVES = ("blue", "steel", "large", "brass", "mini", "heavy-duty", "red", "matte", "coated", "slim")


def _catalogue(count: int, seed: int) -> tuple[LineSpec, ...]:
    """``count`` varied items (zero-padded SKUs, thousands in some prices), reproducibly."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        sku = f"{rng.randint(1, 99999):05d}" if i % 3 == 0 else f"SKU-{rng.randint(1, 9999):04d}"
        description = f"{rng.choice(_ADJECTIVES).capitalize()} {rng.choice(_NOUNS)} {rng.randint(2, 90)} mm"
        quantity = Decimal(rng.randint(1, 60))
        cents = rng.randint(50, 250000) if i % 7 == 3 else rng.randint(50, 9999)
        lines.append(LineSpec(sku, description, quantity, Decimal(cents) / 100))
    return tuple(lines)


def simple_po_spec() -> POSpec:
    """One page, ruled table, ``$`` amounts, an item that starts with "Shipping"."""
    lines = (
        LineSpec("00123", "Blue widget, 10 mm", Decimal(5), Decimal("12.50")),
        LineSpec("B-2", "Industrial gadget", Decimal(1), Decimal("1234.56")),
        LineSpec("000987", "Shipping box, large", Decimal(10), Decimal("0.85")),
        LineSpec("HX-44", "Total care kit", Decimal(3), Decimal("19.99")),
    )
    return POSpec(
        po_number="PO-1001",
        supplier_name="Acme Supplies Ltd",
        order_date=dt.date(2026, 2, 14),
        date_text="2026-02-14",
        currency="USD",
        lines=lines,
        tax=Decimal("109.64"),
        shipping=Decimal("25.00"),
        ruled=True,
        currency_style="symbol",
    )


def multipage_po_spec(count: int = 45) -> POSpec:
    """``count`` lines over several pages, no rules, header repeated, side-by-side header block."""
    return POSpec(
        po_number="4500012345",
        supplier_name="Northwind Components Inc.",
        order_date=dt.date(2026, 5, 20),
        date_text="05/20/2026",
        currency="USD",
        lines=_catalogue(count, seed=7),
        tax=Decimal("0.00"),
        shipping=Decimal("140.00"),
        currency_style="header",
        header_layout="columns",
        rows_per_page=18,
    )


def long_date_po_spec() -> POSpec:
    """Long-form date ``March 3, 2026``, currency given by a label."""
    return POSpec(
        po_number="PO 2026/0042",
        supplier_name="Baker & Sons Ltd",
        order_date=dt.date(2026, 3, 3),
        date_text="March 3, 2026",
        currency="GBP",
        lines=_catalogue(6, seed=3),
        tax=Decimal("31.20"),
        currency_style="label",
    )


def terse_po_spec() -> POSpec:
    """Labels in a row with values below, two-line column headers, wrapped descriptions, ``£``."""
    lines = (
        LineSpec("A-1", "Cotton tote bag, natural", Decimal(100), Decimal("2.10")),
        LineSpec("A-2", "Organic cotton tee, heavyweight, printed front and back, assorted sizes", Decimal(24), Decimal("8.75")),
        LineSpec("A-3", "Canvas cap", Decimal(12), Decimal("6.00")),
        LineSpec("A-4", "Wool scarf in a gift box with a handwritten card and ribbon", Decimal(5), Decimal("15.00")),
        LineSpec("A-5", "Enamel pin", Decimal(200), Decimal("0.95")),
        LineSpec("A-6", "Recycled notebook, dotted, A5", Decimal(40), Decimal("3.20")),
    )
    return POSpec(
        po_number="77812",
        supplier_name="Zed Trading Co",
        order_date=dt.date(2026, 3, 4),
        date_text="03/04/2026",
        currency="GBP",
        lines=lines,
        tax=Decimal("171.40"),
        shipping=Decimal("12.00"),
        currency_style="symbol",
        header_layout="label_row",
        two_line_header=True,
        wrap_chars=36,
        rows_per_page=4,
        labels=TERSE,
    )


def euro_po_spec() -> POSpec:
    """German labels, ``14.09.2026``, EUR after the amounts, ``1.234,56`` numbers, two pages."""
    lines = (
        LineSpec("0004711", "Edelstahlschraube M6", Decimal(500), Decimal("0.12")),
        LineSpec("0004712", "Montagewinkel verzinkt", Decimal(40), Decimal("3.45")),
        LineSpec("SCH-08", "Schaltschrank 800 mm", Decimal(2), Decimal("1234.56")),
        *_catalogue(22, seed=11),
    )
    return POSpec(
        po_number="B-2026-0914",
        supplier_name="Müller Industriebedarf GmbH",
        order_date=dt.date(2026, 9, 14),
        date_text="14.09.2026",
        currency="EUR",
        lines=lines,
        tax=Decimal("1021.07"),
        shipping=Decimal("49.90"),
        decimal_comma=True,
        ruled=True,
        currency_style="code_suffix",
        header_layout="columns",
        rows_per_page=15,
        labels=GERMAN,
    )


# --- printing ----------------------------------------------------------------------------------


def _fmt(value: Decimal, spec: POSpec, *, money: bool = True) -> str:
    """A number as printed on the PO (thousands separators, decimal style, currency)."""
    text = f"{value:,.2f}" if money else f"{value:,}"
    if spec.decimal_comma:
        text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    if not money:
        return text
    if spec.currency_style == "symbol":
        return {"USD": "$", "GBP": "£"}.get(spec.currency, spec.currency + " ") + text
    if spec.currency_style == "code_suffix":
        return f"{text} {spec.currency}"
    return text


def _new_pdf() -> FPDF:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(_FIXED_DATE)
    pdf.set_auto_page_break(False)
    pdf.set_margins(15, 15, 15)
    return pdf


def _header_block(pdf: FPDF, spec: POSpec) -> None:
    """Title, PO number, supplier, date (and currency) above the table."""
    lab = spec.labels
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, lab.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    pairs = [(lab.po_number, spec.po_number), (lab.supplier, spec.supplier_name), (lab.date, spec.date_text)]
    if spec.currency_style == "label":
        pairs.append((lab.currency, spec.currency))
    if spec.header_layout == "inline":
        for label, value in pairs:
            pdf.cell(0, 6, f"{label}: {value}", new_x="LMARGIN", new_y="NEXT")
        pdf.cell(0, 6, f"{lab.ship_to}: Main Street Outfitters, 9 Elm Road, Springfield", new_x="LMARGIN", new_y="NEXT")
    elif spec.header_layout == "label_row":
        pairs.append((lab.ship_to, "Ground"))
        for texts in ([label for label, _ in pairs], [value for _, value in pairs]):
            for text in texts:
                pdf.cell(45, 6, text)
            pdf.ln(6)
    else:  # supplier block on the left, order block on the right, labels and values apart
        left = [(lab.supplier + ":", spec.supplier_name), ("", "12 Harbour Road"), (lab.ship_to + ":", "Main Street Outfitters")]
        right = [(label + ":", value) for label, value in pairs if label != lab.supplier]
        y = pdf.get_y()
        for row, ((l_label, l_value), (r_label, r_value)) in enumerate(zip(left, right + [("", "")] * 3)):
            pdf.set_xy(15, y + row * 6)
            pdf.cell(30, 6, l_label)
            pdf.cell(65, 6, l_value)
            pdf.set_x(120)
            pdf.cell(32, 6, r_label)
            pdf.cell(40, 6, r_value)
        pdf.set_xy(15, y + len(left) * 6)
    pdf.ln(6)


def _table_header(pdf: FPDF, spec: POSpec) -> None:
    pdf.set_font("Helvetica", "B", 10)
    names = list(spec.labels.columns)
    if spec.currency_style == "header":
        names[3] += f" ({spec.currency})"
        names[4] += f" ({spec.currency})"
    if spec.two_line_header:
        rows = [[name.partition(" ")[0] for name in names], [name.partition(" ")[2] for name in names]]
        for texts, height in zip(rows, (4.5, _ROW_H - 2)):
            for width, align, text in zip(_WIDTHS, _ALIGN, texts):
                pdf.cell(width, height, text, align=align)
            pdf.ln(height)
    else:
        for width, align, name in zip(_WIDTHS, _ALIGN, names):
            pdf.cell(width, _ROW_H, name, border=1 if spec.ruled else 0, align=align)
        pdf.ln(_ROW_H)
    pdf.set_font("Helvetica", size=10)


def _item_row(pdf: FPDF, spec: POSpec, line: LineSpec) -> None:
    """One item; a long description continues on a line set close under the first."""
    description, rest = line.description, ""
    if spec.wrap_chars and len(description) > spec.wrap_chars:
        cut = description.rindex(" ", 0, spec.wrap_chars)
        description, rest = description[:cut], description[cut + 1 :]
    values = (
        line.sku,
        description,
        _fmt(line.quantity, spec, money=False),
        _fmt(line.unit_cost, spec),
        _fmt(line.line_total, spec),
    )
    height = 5.0 if rest else _ROW_H
    for width, align, value in zip(_WIDTHS, _ALIGN, values):
        pdf.cell(width, height, value, border=1 if spec.ruled else 0, align=align)
    pdf.ln(height)
    if rest:
        pdf.set_x(15 + _WIDTHS[0])
        pdf.cell(_WIDTHS[1], 4.5, rest)
        pdf.ln(4.5)


def _totals(pdf: FPDF, spec: POSpec) -> None:
    """Subtotal / tax / shipping / total: label across the first four columns, amount under Amount."""
    lab = spec.labels
    rows = [(lab.subtotal, spec.subtotal), (lab.tax, spec.tax), (lab.shipping, spec.shipping), (lab.total, spec.total)]
    border = 1 if spec.ruled else 0
    for label, amount in rows:
        if amount is None:
            continue
        pdf.set_font("Helvetica", "B" if label == lab.total else "", 10)
        pdf.cell(sum(_WIDTHS[:4]), _ROW_H, label, border=border, align="R")
        pdf.cell(_WIDTHS[4], _ROW_H, _fmt(amount, spec), border=border, align="R")
        pdf.ln(_ROW_H)
    pdf.set_font("Helvetica", size=9)
    pdf.ln(4)
    pdf.cell(0, 5, lab.note, new_x="LMARGIN", new_y="NEXT")


def _footer(pdf: FPDF, spec: POSpec, number: int) -> None:
    pdf.set_font("Helvetica", size=8)
    pdf.set_xy(15, 282)
    pdf.cell(0, 5, spec.labels.page.format(n=number, total=spec.pages), align="C")
    pdf.set_font("Helvetica", size=10)


def _po_pdf(spec: POSpec) -> FPDF:
    """The PO laid out on as many pages as ``spec.rows_per_page`` requires."""
    pdf = _new_pdf()
    for number in range(1, spec.pages + 1):
        pdf.add_page()
        if number == 1:
            _header_block(pdf, spec)
        else:
            pdf.set_font("Helvetica", size=8)
            pdf.cell(0, 5, f"{spec.labels.title} {spec.po_number} (continued)", new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
        _table_header(pdf, spec)
        chunk = spec.lines[(number - 1) * spec.rows_per_page : number * spec.rows_per_page]
        for line in chunk:
            _item_row(pdf, spec, line)
        if number == spec.pages:
            _totals(pdf, spec)
        _footer(pdf, spec, number)
    return pdf


def make_text_po_pdf(path: Path, po_spec: POSpec) -> Path:
    """Write ``po_spec`` as a text PDF to ``path`` (deterministic bytes)."""
    path.write_bytes(bytes(_po_pdf(po_spec).output()))
    return path


def make_encrypted_pdf(path: Path, po_spec: POSpec | None = None, *, user_password: str = "secret") -> Path:
    """A PO encrypted with AES-128; ``user_password=""`` gives a PDF that opens without one."""
    from fpdf.enums import EncryptionMethod

    pdf = _po_pdf(po_spec or simple_po_spec())
    pdf.set_encryption(owner_password="owner-pw", user_password=user_password, encryption_method=EncryptionMethod.AES_128)
    path.write_bytes(bytes(pdf.output()))
    return path


def make_truncated_pdf(path: Path, *, eof_marker: bool = False) -> Path:
    """A valid PO PDF cut in half (``eof_marker``: with a ``%%EOF`` line appended, so the
    damage is only found by parsing)."""
    data = bytes(_po_pdf(simple_po_spec()).output())
    path.write_bytes(data[: len(data) // 2] + (b"\n%%EOF\n" if eof_marker else b""))
    return path


def make_random_pdf(path: Path, size: int = 4096, *, eof_marker: bool = False) -> Path:
    """A ``%PDF-1.7`` header followed by random (seeded) bytes (and optionally ``%%EOF``)."""
    path.write_bytes(b"%PDF-1.7\n" + random.Random(42).randbytes(size) + (b"\n%%EOF\n" if eof_marker else b""))
    return path


def make_scanned_pdf(path: Path, pages: int = 1) -> Path:
    """Image-only pages (a PO drawn into a Pillow image), no text layer."""
    pdf = _new_pdf()
    for number in range(1, pages + 1):
        image = Image.new("L", (1240, 1754), 255)  # A4 at 150 dpi
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=30)
        text_lines = ["PURCHASE ORDER", "PO Number: PO-7788", "Supplier: Scan & Co", "", "SKU    Description    Qty    Price"]
        text_lines += [f"{i:05d}  Scanned item {i}    {i}    {i}.50" for i in range(1, 12)]
        text_lines += ["", f"Page {number} of {pages}"]
        for row, text in enumerate(text_lines):
            draw.text((100, 100 + row * 48), text, fill=0, font=font)
        add_image_page(pdf, image)
    path.write_bytes(bytes(pdf.output()))
    return path


def add_image_page(pdf: FPDF, image: Image.Image) -> None:
    """Append a PIL ``image`` to ``pdf`` as a full A4 page (how a scanner's PDF looks: pixels, no text)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pdf.add_page()
    pdf.image(buffer, x=0, y=0, w=210, h=297)


_LETTER = (
    "Dear Ms Jordan,",
    "Thank you for your order enquiry of last week. We are pleased to confirm that the price "
    "list for the coming season is attached, and that quantity discounts apply from 100 units.",
    "Our total delivery time is currently two to three weeks. Item descriptions and SKU codes "
    "have not changed since the previous catalogue, so existing purchase orders remain valid.",
    "Please do not hesitate to contact us with any questions about pricing or availability.",
    "Kind regards,",
    "Sam Patel, Sales Manager, Acme Supplies Ltd",
)


def make_non_po_pdf(path: Path) -> Path:
    """A business letter with paragraphs and no table."""
    pdf = _new_pdf()
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, "Acme Supplies Ltd", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    pdf.cell(0, 6, "Date: March 3, 2026", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 6, "Re: Purchase Order 1001", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    for paragraph in _LETTER:
        pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
    path.write_bytes(bytes(pdf.output()))
    return path
