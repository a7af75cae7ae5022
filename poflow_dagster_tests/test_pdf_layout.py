"""The PDF layout engine and line model on real-world patterns, each printed with fpdf2 and read back.

Every document here is drawn word by word at fixed positions (no ruled tables), the way invoices from
accounting systems come out: centred header labels, right-aligned numbers, codes inside descriptions,
units after quantities, continuation lines, discounts, section subtotals, right-to-left text.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from fpdf import FPDF

from poflow_dagster.extraction.layout import align_columns, bands_of
from poflow_dagster.extraction.pdf import extract_pdf_po, read_pdf
from poflow_dagster.extraction.spreadsheet import header_columns
from poflow_dagster.extraction.text_norm import fold_width, logical_line, logical_order
from poflow_dagster.extraction.vocabulary import document_type_of, normalize_unit

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
D = Decimal

# A cell is (x, text): left-aligned at x; or (x, text, "R"): right-aligned so that it ends at x.
Cell = tuple


def make_pdf(path: Path, lines: list[list[Cell]], *, top: float = 60, step: float = 16, size: float = 10,
             title: tuple[str, float] | None = None) -> Path:
    """One A4 page: optional big title, then each line's cells at their x positions, ``step`` points apart."""
    pdf = FPDF(unit="pt", format="A4")
    pdf.add_font("DejaVu", fname=FONT)
    pdf.add_page()
    y = top
    if title:
        pdf.set_font("DejaVu", size=title[1])
        pdf.text(50, y, title[0])
        y += 2 * step
    pdf.set_font("DejaVu", size=size)
    for line in lines:
        for cell in line:
            x, text = cell[0], cell[1]
            if len(cell) > 2 and cell[2] == "R":
                x -= pdf.get_string_width(text)
            pdf.text(x, y, text)
        y += step
    path.write_bytes(bytes(pdf.output()))
    return path


def extract(path: Path):
    po = extract_pdf_po(read_pdf(path))
    assert po is not None
    return po


def rows(po) -> list[tuple]:
    return [(l.sku, l.description, l.quantity, l.unit_cost, l.line_total) for l in po.lines]


# --- the table finder -------------------------------------------------------------------------


def test_plain_text_table_with_centred_labels_and_right_aligned_numbers(tmp_path: Path) -> None:
    """``Product  Qty  Price  Total`` without rules; each number ends right of its centred label."""
    header = [(60, "Product"), (300, "Qty"), (380, "Price"), (470, "Total")]
    lines = [
        [(50, "Invoice No: INV-2041")],
        [(50, "Date: Jan 5, 2022")],
        [],
        header,
        [(60, "Desk Lamp"), (335, "2", "R"), (430, "19.90", "R"), (530, "39.80", "R")],
        [(60, "Office Chair"), (335, "1", "R"), (430, "149.00", "R"), (530, "149.00", "R")],
        [],
        [(400, "Subtotal"), (530, "188.80", "R")],
        [(400, "Tax"), (530, "18.88", "R")],
        [(400, "Total"), (530, "207.68", "R")],
    ]
    po = extract(make_pdf(tmp_path / "plain.pdf", lines))
    assert rows(po) == [
        (None, "Desk Lamp", D("2"), D("19.90"), D("39.80")),
        (None, "Office Chair", D("1"), D("149.00"), D("149.00")),
    ]
    assert (po.po_number, po.order_date) == ("INV-2041", date(2022, 1, 5))
    assert (po.subtotal, po.tax, po.total, po.prices_include_tax) == (D("188.80"), D("18.88"), D("207.68"), False)


def test_bands_are_matched_to_header_columns_in_order() -> None:
    """Four body columns under four labels map one to one, even when a value is nearer the next label."""
    columns = [(192, 242), (352, 383), (434, 480), (515, 541)]
    bands = bands_of([[(121, 239), (415, 419), (482, 491), (546, 560)], [(121, 193), (415, 419), (482, 491)]])
    assert bands == [(121, 239), (415, 419), (482, 491), (546, 560)]
    assert align_columns(columns, bands) == [0, 1, 2, 3]
    # more bands than columns: the extra band shares the nearest column, order kept
    assert align_columns([(0, 50), (100, 150)], [(0, 40), (100, 120), (130, 150)]) == [0, 1, 1]


def test_multilingual_headers_are_recognised() -> None:
    assert header_columns(["品番", "品名", "数量", "単価", "金額"]) == {
        "sku": 0, "description": 1, "quantity": 2, "unit_cost": 3, "line_total": 4,
    }
    assert header_columns(["Art.-Nr.", "Bezeichnung", "Menge", "E-Preis", "Betrag"]) is not None
    assert header_columns(["Référence", "Désignation", "Qté", "PU", "Montant"]) is not None
    assert header_columns(["Código", "Descripción", "Cantidad", "Precio", "Importe"]) is not None
    assert header_columns(['מק"ט', "תיאור", "כמות", "מחיר יחידה", 'סה"כ'])["quantity"] == 2
    assert header_columns(["الرمز", "الوصف", "الكمية", "سعر الوحدة", "المبلغ"])["unit_cost"] == 3


# --- the line model ---------------------------------------------------------------------------


def test_codes_inside_descriptions_become_skus(tmp_path: Path) -> None:
    lines = [
        [(60, "Description"), (330, "Qty"), (400, "Price"), (480, "Amount")],
        [(60, "[AB-1200] Desk Lamp"), (350, "2", "R"), (440, "10.00", "R"), (520, "20.00", "R")],
        [(60, "*55501* Hand Soap"), (350, "3", "R"), (440, "2.00", "R"), (520, "6.00", "R")],
        [(60, "Art.-Nr. 4711 Schraube"), (350, "100", "R"), (440, "0.10", "R"), (520, "10.00", "R")],
        [(400, "Total"), (520, "36.00", "R")],
    ]
    po = extract(make_pdf(tmp_path / "codes.pdf", lines))
    assert [(l.sku, l.description) for l in po.lines] == [
        ("AB-1200", "Desk Lamp"), ("55501", "Hand Soap"), ("4711", "Schraube"),
    ]


def test_units_after_quantities(tmp_path: Path) -> None:
    lines = [
        [(60, "Item"), (300, "Quantity"), (400, "Rate"), (480, "Amount")],
        [(60, "Flour"), (350, "2.50 kg", "R"), (440, "4.00", "R"), (520, "10.00", "R")],
        [(60, "Yeast"), (350, "500 g", "R"), (440, "0.02", "R"), (520, "10.00", "R")],
        [(60, "Mugs"), (350, "3.00 Units", "R"), (440, "5.00", "R"), (520, "15.00", "R")],
        [(60, "Workshop"), (350, "2 Days x 3 Seats", "R"), (440, "100.00", "R"), (520, "600.00", "R")],
        [(400, "Total"), (520, "635.00", "R")],
    ]
    po = extract(make_pdf(tmp_path / "units.pdf", lines))
    assert [(l.quantity, l.unit) for l in po.lines] == [
        (D("2.50"), "kg"), (D("500"), "g"), (D("3.00"), "units"), (D("6"), "days"),
    ]


def test_continuation_lines_service_lines_and_discounts(tmp_path: Path) -> None:
    lines = [
        [(60, "Description"), (280, "Qty"), (330, "Unit Price"), (410, "Disc."), (480, "Total")],
        [(60, "Standing desk"), (300, "2", "R"), (390, "300.00", "R"), (440, "10%", "R"), (530, "540.00", "R")],
        [(60, "oak top, 160 x 80 cm")],
        [(60, "Monitor arm"), (300, "4", "R"), (390, "50.00", "R"), (440, "20.00", "R"), (530, "180.00", "R")],
        [(60, "Assembly service"), (530, "75.00", "R")],
        [(400, "Total"), (530, "795.00", "R")],
    ]
    po = extract(make_pdf(tmp_path / "service.pdf", lines))
    got = [(l.description, l.quantity, l.unit_cost, l.discount, l.line_total) for l in po.lines]
    assert got == [
        ("Standing desk oak top, 160 x 80 cm", D("2"), D("300.00"), D("60.00"), D("540.00")),
        ("Monitor arm", D("4"), D("50.00"), D("20.00"), D("180.00")),
        ("Assembly service", None, None, None, D("75.00")),
    ]


def test_tax_inclusive_prices_are_recorded(tmp_path: Path) -> None:
    lines = [
        [(60, "Artikel"), (280, "Menge"), (340, "Preis inkl. MwSt."), (470, "Betrag")],
        [(60, "Kaffee"), (300, "2", "R"), (420, "11,90", "R"), (530, "23,80", "R")],
        [(400, "Gesamt"), (530, "23,80", "R")],
        [(400, "enthaltene MwSt"), (530, "3,80", "R")],
    ]
    po = extract(make_pdf(tmp_path / "brutto.pdf", lines))
    assert po.prices_include_tax is True
    assert rows(po) == [(None, "Kaffee", D("2"), D("11.90"), D("23.80"))]


def test_section_subtotals_are_never_items(tmp_path: Path) -> None:
    lines = [
        [(60, "Product"), (300, "Qty"), (380, "Price"), (470, "Total")],
        [(60, "Hardware")],
        [(60, "Hammer"), (335, "1", "R"), (430, "12.00", "R"), (530, "12.00", "R")],
        [(60, "Nails"), (335, "2", "R"), (430, "3.00", "R"), (530, "6.00", "R")],
        [(380, "Subtotal"), (530, "18.00", "R")],
        [(60, "Garden")],
        [(60, "Rake"), (335, "1", "R"), (430, "20.00", "R"), (530, "20.00", "R")],
        [(380, "Subtotal"), (530, "20.00", "R")],
        [(380, "Subtotal"), (530, "38.00", "R")],
        [(380, "Total"), (530, "38.00", "R")],
    ]
    po = extract(make_pdf(tmp_path / "sections.pdf", lines))
    assert [l.description for l in po.lines] == ["Hammer", "Nails", "Rake"]
    assert (po.subtotal, po.total) == (D("38.00"), D("38.00"))


# --- text normalisation and document types ----------------------------------------------------


def test_right_to_left_text_is_put_in_reading_order(tmp_path: Path) -> None:
    """Hebrew printed in visual order (as PDFs store it) reads back in logical order, numbers intact."""

    def visual(text: str) -> str:
        return text[::-1]

    lines = [
        [(60, visual("תיאור")), (300, visual("כמות")), (380, visual("מחיר")), (470, visual('סה"כ'))],
        [(60, visual("מנורת שולחן")), (335, "2", "R"), (430, "50.00", "R"), (530, "100.00", "R")],
        [(60, visual("כיסא משרדי")), (335, "1", "R"), (430, "250.00", "R"), (530, "250.00", "R")],
    ]
    po = extract(make_pdf(tmp_path / "hebrew.pdf", lines))
    assert rows(po) == [
        (None, "מנורת שולחן", D("2"), D("50.00"), D("100.00")),
        (None, "כיסא משרדי", D("1"), D("250.00"), D("250.00")),
    ]


def test_text_normalisation_helpers() -> None:
    assert fold_width("１２，３４０円") == "12,340円"
    assert fold_width("plain text") == "plain text"
    assert logical_order("םולש") == "שלום"
    assert logical_order('ט"קמ') == 'מק"ט'
    assert logical_line("12.50 ריחמ") == "מחיר 12.50"
    assert normalize_unit("Kgs") == "kg" and normalize_unit("Stück") == "units" and normalize_unit("zzz") is None


def test_document_type_from_the_title(tmp_path: Path) -> None:
    assert document_type_of("Auftragsbestätigung Nr. 4711") == "order_confirmation"
    assert document_type_of("Bon de livraison") == "delivery_note"
    assert document_type_of("Presupuesto 2022-17") == "quote"
    assert document_type_of("請求書") == "invoice"
    assert document_type_of("Purchase Order PO-1001") == "purchase_order"
    assert document_type_of("Order total") is None
    lines = [
        [(50, "Acme Tools GmbH")],
        [(50, "Datum: 1. Januar 2022")],
        [],
        [(60, "Bezeichnung"), (300, "Menge"), (380, "Preis"), (470, "Betrag")],
        [(60, "Zange"), (335, "1", "R"), (430, "9,50", "R"), (530, "9,50", "R")],
    ]
    po = extract(make_pdf(tmp_path / "ab.pdf", lines, title=("Auftragsbestätigung Nr. 4711", 18)))
    assert (po.document_type, po.po_number, po.order_date) == ("order_confirmation", "4711", date(2022, 1, 1))
    assert po.supplier_name == "Acme Tools GmbH"


def test_readable_document_without_a_table_keeps_its_header(tmp_path: Path) -> None:
    lines = [[(50, "Invoice No: 2022-118")], [(50, "Date: 2022-03-04")], [(50, "Thank you for your order.")]]
    po = extract(make_pdf(tmp_path / "header_only.pdf", lines))
    assert (po.po_number, po.order_date, po.lines) == ("2022-118", date(2022, 3, 4), [])
    empty = make_pdf(tmp_path / "nothing.pdf", [[(50, "Hello there, nothing to see in this note at all.")]])
    assert extract_pdf_po(read_pdf(empty)) is None


def test_arabic_table_reads_in_reading_order(tmp_path: Path) -> None:
    """Arabic labels and names printed in visual order are recognised and read back as written."""

    def visual(text: str) -> str:
        return text[::-1]

    lines = [
        [(50, "Invoice No: 7781")],
        [(60, visual("الوصف")), (300, visual("الكمية")), (380, visual("السعر")), (470, visual("المبلغ"))],
        [(60, visual("قهوة عربية")), (335, "3", "R"), (430, "12.00", "R"), (530, "36.00", "R")],
        [(400, visual("الإجمالي")), (530, "36.00", "R")],
    ]
    po = extract(make_pdf(tmp_path / "arabic.pdf", lines))
    assert rows(po) == [(None, "قهوة عربية", D("3"), D("12.00"), D("36.00"))]
    assert (po.po_number, po.total) == ("7781", D("36.00"))


def test_invoice_layout_with_stacked_labels_and_a_tax_breakdown(tmp_path: Path) -> None:
    """Return-address line, ``Rechnung Nr.`` title with date, a header printed over two lines with a
    hyphenated label, a position column set close to the description, a tax breakdown after the items."""
    lines = [
        [(50, "Kraxi Drachen GmbH · Flugzeugallee 17 · 12345 Papierfeld")],
        [(50, "Kunde AG")],
        [(50, "Rechnung Nr. 2014-03 vom 11.07.2014")],
        [],
        [(60, "Pos. Artikelbeschreibung"), (300, "Menge"), (370, "Einzel-"), (470, "Positions-")],
        [(370, "preis"), (470, "betrag")],
        [(60, "1"), (85, "Superdrachen"), (335, "2", "R"), (420, "20,00", "R"), (530, "40,00", "R")],
        [(60, "2"), (85, "Turbo Flyer"), (335, "5", "R"), (420, "40,00", "R"), (530, "200,00", "R")],
        [(60, "Steuersatz"), (300, "Basis"), (470, "Steuer")],
        [(60, "19 %"), (335, "240,00", "R"), (530, "45,60", "R")],
        [(300, "Rechnungssumme netto"), (530, "240,00", "R")],
        [(300, "MwSt. 19 %"), (530, "45,60", "R")],
        [(300, "Rechnungssumme brutto"), (530, "285,60", "R")],
    ]
    po = extract(make_pdf(tmp_path / "rechnung.pdf", lines))
    assert rows(po) == [
        (None, "Superdrachen", D("2"), D("20.00"), D("40.00")),
        (None, "Turbo Flyer", D("5"), D("40.00"), D("200.00")),
    ]
    assert (po.supplier_name, po.po_number, po.order_date, po.document_type) == (
        "Kraxi Drachen GmbH", "2014-03", date(2014, 7, 11), "invoice",
    )
    assert (po.subtotal, po.tax, po.total, po.prices_include_tax) == (D("240.00"), D("45.60"), D("285.60"), False)


def test_description_wrapped_around_its_numbers_row(tmp_path: Path) -> None:
    """A description printed over two lines with the numbers row between them, and a hyphenated wrap."""
    lines = [
        [(60, "Description"), (240, "Reference"), (330, "Qty"), (400, "Price"), (480, "Total")],
        [(60, "Mountain backpack 60L")],
        [(240, "4449130"), (350, "1", "R"), (440, "66.11", "R"), (530, "66.11", "R")],
        [(60, "rain cover included")],
        [],
        [(60, "Personen-"), (240, "5284409"), (350, "2", "R"), (440, "7.98", "R"), (530, "15.96", "R")],
        [(60, "Unfallversicherung")],
        [(400, "Total"), (530, "82.07", "R")],
    ]
    po = extract(make_pdf(tmp_path / "wrapped.pdf", lines, step=12))
    assert [(l.sku, l.description) for l in po.lines] == [
        ("4449130", "Mountain backpack 60L rain cover included"),
        ("5284409", "Personen-Unfallversicherung"),
    ]


def test_monospaced_plain_text_order(tmp_path: Path) -> None:
    """A PO printed as plain text in Courier: one space inside a phrase, several between columns."""
    text = [
        "ACME SUPPLIES LTD",
        "PURCHASE ORDER",
        "PO Number: 4711-B",
        "Order Date: 2022-03-04",
        "",
        "Product                        Qty   Unit Price      Total",
        "Desk Lamp, brass                 2        19.90      39.80",
        "Office Chair                     1       149.00     149.00",
        "Cable ties (100 pack)           10         2.50      25.00",
        "",
        "                                      Subtotal      213.80",
        "                                      Tax            21.38",
        "                                      Total         235.18",
    ]
    pdf = FPDF(unit="pt", format="A4")
    pdf.add_page()
    pdf.set_font("Courier", size=10)
    for n, line in enumerate(text):
        pdf.text(40, 60 + 14 * n, line)
    path = tmp_path / "courier.pdf"
    path.write_bytes(bytes(pdf.output()))
    po = extract(path)
    assert rows(po) == [
        (None, "Desk Lamp, brass", D("2"), D("19.90"), D("39.80")),
        (None, "Office Chair", D("1"), D("149.00"), D("149.00")),
        (None, "Cable ties (100 pack)", D("10"), D("2.50"), D("25.00")),
    ]
    assert (po.po_number, po.supplier_name, po.order_date, po.document_type) == (
        "4711-B", "ACME SUPPLIES LTD", date(2022, 3, 4), "purchase_order",
    )
    assert (po.subtotal, po.tax, po.total) == (D("213.80"), D("21.38"), D("235.18"))


def test_code_and_gtin_printed_under_the_item_line(tmp_path: Path) -> None:
    """A record printed over several lines: numbers on the first, the code and GTIN below, a note row."""
    lines = [
        [(60, "Art-Nr"), (150, "Beschreibung"), (300, "Menge"), (380, "Preis"), (470, "Betrag")],
        [(150, "Kunstrasen"), (335, "3", "R"), (430, "3,33", "R"), (530, "10,00", "R")],
        [(60, "KR3M"), (150, "grün 3m breit")],
        [(60, "4012345001235")],
        [(150, "Bruttopreis: 4,00"), (300, "Abschlag: 0,67")],
        [(150, "Schweinesteak"), (335, "5", "R"), (430, "5,50", "R"), (530, "27,50", "R")],
        [(60, "SFK5")],
        [(400, "Summe"), (530, "37,50", "R")],
    ]
    po = extract(make_pdf(tmp_path / "records.pdf", lines, step=12))
    assert [(l.sku, l.barcode, l.description, l.line_total) for l in po.lines] == [
        ("KR3M", "4012345001235", "Kunstrasen grün 3m breit", D("10.00")),
        ("SFK5", None, "Schweinesteak", D("27.50")),
    ]


def test_tax_printed_as_a_rate_only(tmp_path: Path) -> None:
    """``Sales Tax 10%`` with no amount: the tax is what the total adds to the subtotal, when the rate agrees."""
    lines = [
        [(60, "Description"), (300, "Qty"), (380, "Price"), (470, "Line Total")],
        [(60, "Manager Training"), (335, "1", "R"), (430, "3,500", "R"), (530, "3,500", "R")],
        [(380, "Subtotal"), (530, "3,500", "R")],
        [(380, "Sales Tax"), (530, "10%", "R")],
        [(380, "Total"), (530, "3,850", "R")],
    ]
    po = extract(make_pdf(tmp_path / "rate.pdf", lines))
    assert (po.subtotal, po.tax, po.total, po.prices_include_tax) == (D("3500"), D("350"), D("3850"), False)


def test_page_text_for_the_llm_is_in_reading_order(tmp_path: Path) -> None:
    """The page text handed on (to the LLM path) has right-to-left lines re-ordered too."""
    path = make_pdf(tmp_path / "he_text.pdf", [[(60, "הזמנת רכש"[::-1])], [(60, "Plain line  kept")]])
    text = read_pdf(path).pages[0].text
    assert "הזמנת רכש" in text and "Plain line" in text
