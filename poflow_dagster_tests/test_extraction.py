"""extract_file: content sniffing, the spreadsheet extractor and its error codes."""

from __future__ import annotations

import datetime as dt
import io
import random
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest

import poflow_dagster.extraction as extraction
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.extraction import extract_file, spreadsheet
from poflow_dagster.extraction.sniff import detect_format
from poflow_dagster.samples import SAMPLE_EXPECTATIONS, generate_samples


def write(tmp_path: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def xlsx_bytes(rows: list[list[object]]) -> bytes:
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def error_of(path: Path, filename: str | None = None) -> PoflowError:
    with pytest.raises(PoflowError) as info:
        extract_file(path, filename=filename)
    assert "\n" not in info.value.message
    return info.value


SIMPLE_CSV = "SKU,Description,Qty,Unit Price,Total\nA-1,Widget,2,3.50,7.00\nB-2,Gadget,1,10.00,10.00\n"


# --- the generated samples ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {p.name: p for p in generate_samples(tmp_path_factory.mktemp("samples"))}


@pytest.mark.parametrize("filename", sorted(SAMPLE_EXPECTATIONS))
def test_samples_parse_to_their_expectations(sample_paths: dict[str, Path], filename: str) -> None:
    expected = SAMPLE_EXPECTATIONS[filename]
    # The stored file is content-addressed: extraction must not depend on the name.
    po = extract_file(sample_paths[filename], filename=filename)
    assert po.po_number == expected["po_number"]
    assert po.supplier_name == expected["supplier_name"]
    assert po.order_date == expected["order_date"]
    assert po.currency == expected["currency"]
    assert po.source_format == expected["source_format"]
    assert po.extractor == {"pdf": "pdf_text", "x12": "x12_850", "ubl": "ubl"}.get(po.source_format, "spreadsheet")
    assert len(po.lines) == expected["line_count"]
    assert [line.sku for line in po.lines] == expected["skus"]
    assert [line.line_no for line in po.lines] == list(range(1, expected["line_count"] + 1))
    assert po.subtotal == expected["subtotal"]
    assert po.tax == expected["tax"]
    assert po.shipping == expected["shipping"]
    assert po.total == expected["total"]
    assert po.lines_sum() == expected["lines_sum"]
    assert not [i for i in po.issues if i.severity != "info"], po.issues


def test_samples_are_sniffed_by_content_not_name(sample_paths: dict[str, Path], tmp_path: Path) -> None:
    for filename, path in sample_paths.items():
        anonymous = write(tmp_path, "blob-" + filename.split(".")[0], path.read_bytes())
        po = extract_file(anonymous)
        assert po.source_format == SAMPLE_EXPECTATIONS[filename]["source_format"]
        assert po.po_number == SAMPLE_EXPECTATIONS[filename]["po_number"]


def test_extension_mismatch_is_reported_as_info(sample_paths: dict[str, Path]) -> None:
    po = extract_file(sample_paths["lumiere-commande-3003.xlsx"], filename="order.csv")
    assert po.source_format == "xlsx"
    assert [i.code for i in po.issues if i.code == "EXTENSION_MISMATCH"] == ["EXTENSION_MISMATCH"]


# --- table reading -----------------------------------------------------------------------


def test_skus_keep_zero_padding_in_csv(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "po.csv",
        'SKU,Description,Qty,Price\n00123,Bolt,1,1.00\n0042,Nut,2,0.50\n="00007",Washer,3,0.10\n1.50,Odd SKU,1,2.00\n',
    )
    assert [line.sku for line in extract_file(path).lines] == ["00123", "0042", "00007", "1.50"]


def test_skus_keep_zero_padding_in_xlsx(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Item No", "Description", "Quantity", "Unit Cost"])
    sheet.append(["00123", "Text SKU", 1, 2.5])
    sheet.append([42, "Numeric SKU shown as 00042", 2, 3])
    sheet["A3"].number_format = "00000"
    sheet.append([77, "Plain numeric SKU", 1, 1])
    buffer = io.BytesIO()
    workbook.save(buffer)
    po = extract_file(write(tmp_path, "po.xlsx", buffer.getvalue()))
    assert [line.sku for line in po.lines] == ["00123", "00042", "77"]
    assert po.lines[0].unit_cost == Decimal("2.50")
    assert po.lines[0].line_total == Decimal("2.50")


def test_totals_rows_are_not_items(tmp_path: Path) -> None:
    content = (
        "Supplier: Example Co\n"
        "Item #,Description,Qty,Unit Price,Amount\n"
        "A-1,Shipping box (large),10,2.00,20.00\n"
        "SHIP,Shipping,1,5.00,5.00\n"
        "B-2,Tape,2,1.50,3.00\n"
        "\n"
        ",Subtotal,,,28.00\n"
        ",Sales tax 8.25%,,,2.31\n"
        ",County tax,,,0.50\n"
        ",Freight,,,7.00\n"
        "Discount,,,,-1.00\n"
        ",Grand Total,,,37.81\n"
        "Notes: leave at the back door\n"
    )
    po = extract_file(write(tmp_path, "po.csv", content))
    # Both "Shipping ..." rows have a SKU and a quantity: they are real items.
    assert [line.sku for line in po.lines] == ["A-1", "SHIP", "B-2"]
    assert po.subtotal == Decimal("28.00")
    assert po.tax == Decimal("2.81")  # tax rows add up
    assert po.shipping == Decimal("7.00")
    assert po.total == Decimal("37.81")
    codes = {i.code for i in po.issues}
    assert "DISCOUNT_NOT_APPLIED" in codes
    assert "SUBTOTAL_MISMATCH" not in codes


def test_summary_row_with_total_quantity_is_not_an_item(tmp_path: Path) -> None:
    content = "Description,Qty,Price,Total\nWidget,2,5.00,10.00\nGadget,3,1.00,3.00\nTotal,5,,13.00\n"
    po = extract_file(write(tmp_path, "po.csv", content))
    assert [line.description for line in po.lines] == ["Widget", "Gadget"]
    assert po.total == Decimal("13.00")


def test_summary_value_inline_in_label_cell(tmp_path: Path) -> None:
    content = SIMPLE_CSV + "\nSubtotal: 17.00\nShipping: 4.95\nTotal: $21.95\n"
    po = extract_file(write(tmp_path, "po.csv", content))
    assert (po.subtotal, po.shipping, po.total) == (Decimal("17.00"), Decimal("4.95"), Decimal("21.95"))
    assert len(po.lines) == 2


HEADERS_BY_LANGUAGE = {
    "de": ("Art.-Nr.", "Beschreibung", "Anzahl", "Preis", "Betrag"),
    "fr": ("Référence", "Désignation", "Quantité", "Prix unitaire", "Montant"),
    "es": ("Código", "Descripción", "Cantidad", "Precio unitario", "Importe"),
    "it": ("Codice", "Descrizione", "Quantità", "Prezzo unitario", "Importo"),
    "nl": ("Artikelnr", "Omschrijving", "Aantal", "Stukprijs", "Bedrag"),
    "pt": ("Código", "Descrição", "Quantidade", "Preço unitário", "Valor total"),
    "en": ("Part Number", "Product", "Quantity", "Unit Cost", "Extended"),
}


@pytest.mark.parametrize("language", sorted(HEADERS_BY_LANGUAGE))
def test_header_synonyms_in_several_languages(tmp_path: Path, language: str) -> None:
    header = ";".join(HEADERS_BY_LANGUAGE[language])
    content = f"{header}\nX-1;Ding;3;2,50;7,50\nX-2;Sache;1;10,00;10,00\n"
    po = extract_file(write(tmp_path, "po.csv", content))
    assert [(line.sku, line.description) for line in po.lines] == [("X-1", "Ding"), ("X-2", "Sache")]
    assert [line.quantity for line in po.lines] == [Decimal(3), Decimal(1)]
    assert [line.unit_cost for line in po.lines] == [Decimal("2.50"), Decimal("10.00")]
    assert [line.line_total for line in po.lines] == [Decimal("7.50"), Decimal("10.00")]


def test_header_fields_in_several_languages(tmp_path: Path) -> None:
    content = (
        "Bestellnummer: B-77\n"
        "Fournisseur;Maison Dupont\n"
        "Fecha:;2026-02-01\n"
        "Valuta;GBP\n"
        "Omschrijving;Aantal;Stukprijs\n"
        "Kaas;2;4,00\n"
    )
    po = extract_file(write(tmp_path, "po.csv", content))
    assert (po.po_number, po.supplier_name, po.order_date, po.currency) == (
        "B-77",
        "Maison Dupont",
        dt.date(2026, 2, 1),
        "GBP",
    )
    assert po.lines[0].line_total == Decimal("8.00")


def test_header_fields_as_label_row_with_values_below(tmp_path: Path) -> None:
    content = "PO Number,Vendor,Order Date\n5005,Blue Ocean Ltd,2026-07-01\n\n" + SIMPLE_CSV
    po = extract_file(write(tmp_path, "po.csv", content))
    assert (po.po_number, po.supplier_name, po.order_date) == ("5005", "Blue Ocean Ltd", dt.date(2026, 7, 1))


def test_po_number_from_title_when_no_label(tmp_path: Path) -> None:
    po = extract_file(write(tmp_path, "po.csv", "Purchase Order #A-1001\n" + SIMPLE_CSV))
    assert po.po_number == "A-1001"


def test_columns_in_a_different_order(tmp_path: Path) -> None:
    content = (
        "PO Number: 9\n"
        "Line Total,Qty,Unit Price (USD),Description,SKU\n"
        '"1,234.00",2,617.00,Big thing,001\n'
        "4.50,3,1.50,Small thing,002\n"
    )
    po = extract_file(write(tmp_path, "po.csv", content))
    assert [(l.sku, l.description, l.quantity, l.unit_cost, l.line_total) for l in po.lines] == [
        ("001", "Big thing", Decimal(2), Decimal("617.00"), Decimal("1234.00")),
        ("002", "Small thing", Decimal(3), Decimal("1.50"), Decimal("4.50")),
    ]
    assert po.currency == "USD"  # from "Unit Price (USD)"


def test_item_and_description_columns(tmp_path: Path) -> None:
    # "Item" next to a real description column holds the item code.
    content = "Item,Description,Qty,Rate\nW-1,Widget,1,2.00\n"
    line = extract_file(write(tmp_path, "po.csv", content)).lines[0]
    assert (line.sku, line.description) == ("W-1", "Widget")


def test_missing_values_are_derived(tmp_path: Path) -> None:
    content = "Description,Qty,Unit Price,Total\nNo total,3,0.333,\nNo price,3,,10.00\nSetup fee,,,5.00\n"
    lines = extract_file(write(tmp_path, "po.csv", content)).lines
    assert lines[0].line_total == Decimal("1.00")  # 0.999 rounded to cents
    assert lines[1].unit_cost == Decimal("3.33")
    assert (lines[2].quantity, lines[2].unit_cost, lines[2].line_total) == (None, None, Decimal("5.00"))


def test_consistency_warnings(tmp_path: Path) -> None:
    content = "Description,Qty,Price,Total\nA,2,5.00,11.00\n,,Subtotal,99.00\n,,Total,50.00\n"
    codes = {i.code for i in extract_file(write(tmp_path, "po.csv", content)).issues}
    assert {"LINE_AMOUNT_MISMATCH", "SUBTOTAL_MISMATCH", "TOTAL_MISMATCH"} <= codes


def test_quantities_with_units_and_unreadable_numbers(tmp_path: Path) -> None:
    content = "Description,Qty,Price\nBolts,12 pcs,0.10\nNuts,5 Stk.,0.20\nWashers,lots,0.05\n"
    po = extract_file(write(tmp_path, "po.csv", content))
    assert [line.quantity for line in po.lines] == [Decimal(12), Decimal(5), None]
    assert any(i.code == "UNREADABLE_NUMBER" and "lots" in i.message for i in po.issues)


def test_blank_rows_and_repeated_headers_are_skipped(tmp_path: Path) -> None:
    content = "SKU,Description,Qty,Price\nA,One,1,1.00\n\n,,,\nSKU,Description,Qty,Price\nB,Two,2,2.00\n"
    po = extract_file(write(tmp_path, "po.csv", content))
    assert [(line.line_no, line.sku) for line in po.lines] == [(1, "A"), (2, "B")]


def test_currency_inferred_from_money_cells(tmp_path: Path) -> None:
    content = "Artikel;Menge;Preis\nKäse;2;€ 4,50\nBrot;1;€ 2,00\n"
    po = extract_file(write(tmp_path, "po.csv", content))
    assert po.currency == "EUR"
    assert [line.unit_cost for line in po.lines] == [Decimal("4.50"), Decimal("2.00")]


def test_currency_inferred_from_xlsx_number_format(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(["Product", "Qty", "Price"])
    workbook.active.append(["Tea", 2, 3.5])
    workbook.active["C2"].number_format = '"£"#,##0.00'
    buffer = io.BytesIO()
    workbook.save(buffer)
    assert extract_file(write(tmp_path, "po.xlsx", buffer.getvalue())).currency == "GBP"


def test_ambiguous_date_follows_document_decimal_style(tmp_path: Path) -> None:
    european = "Date;03/04/2026\nProduit;Qté;Prix\nVin;2;9,50\n"
    american = "Date,03/04/2026\nProduct,Qty,Price\nWine,2,9.50\n"
    assert extract_file(write(tmp_path, "eu.csv", european)).order_date == dt.date(2026, 4, 3)
    assert extract_file(write(tmp_path, "us.csv", american)).order_date == dt.date(2026, 3, 4)


def test_xlsx_table_on_a_later_sheet(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(["Cover page", "nothing here"])
    items = workbook.create_sheet("Items")
    items.append(["Description", "Quantity", "Price"])
    items.append(["Lamp", 1, 20])
    buffer = io.BytesIO()
    workbook.save(buffer)
    po = extract_file(write(tmp_path, "po.xlsx", buffer.getvalue()))
    assert [line.description for line in po.lines] == ["Lamp"]


# --- encodings and delimiters ------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252", "utf-16"])
def test_text_encodings(tmp_path: Path, encoding: str) -> None:
    content = "Fournisseur: Brûlerie Café\nDescription,Qty,Price\nCafé crème,2,3.20\nThé,1,2.10\n"
    po = extract_file(write(tmp_path, "po.csv", content, encoding=encoding))
    assert po.supplier_name == "Brûlerie Café"
    assert [line.description for line in po.lines] == ["Café crème", "Thé"]
    assert po.lines[0].sku is None  # the BOM must not leak into the first header cell


@pytest.mark.parametrize(
    ("delimiter", "expected_format"), [(",", "csv"), (";", "csv"), ("\t", "tsv"), ("|", "csv")]
)
def test_delimiters_are_detected_from_content(tmp_path: Path, delimiter: str, expected_format: str) -> None:
    rows = [["SKU", "Description", "Qty", "Price"], ["A", "One", "1", "1.25"], ["B", "Two", "2", "2.50"]]
    content = "\n".join(delimiter.join(row) for row in rows) + "\n"
    po = extract_file(write(tmp_path, "upload.txt", content))
    assert po.source_format == expected_format
    assert [line.line_total for line in po.lines] == [Decimal("1.25"), Decimal("5.00")]


def test_semicolon_file_with_comma_decimals_is_not_split_on_commas(tmp_path: Path) -> None:
    content = "Descripción;Cantidad;Precio\nAceite, virgen;1.200;0,50\nSal;3;1,25\n"
    po = extract_file(write(tmp_path, "p.csv", content))
    assert [(line.description, line.quantity) for line in po.lines] == [
        ("Aceite, virgen", Decimal(1200)),
        ("Sal", Decimal(3)),
    ]


# --- errors ------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, "po.csv", b"")).code == "empty_file"


@pytest.mark.parametrize("content", [b"   \r\n\t\n", b"\xef\xbb\xbf \n"])
def test_whitespace_only_file(tmp_path: Path, content: bytes) -> None:
    assert error_of(write(tmp_path, "po.csv", content)).code == "empty_file"


def test_binary_file_named_csv(tmp_path: Path) -> None:
    junk = bytes(random.Random(7).randrange(256) for _ in range(4096))
    assert error_of(write(tmp_path, "po.csv", junk)).code == "unsupported_format"


def test_pdf_named_xlsx(tmp_path: Path) -> None:
    path = write(tmp_path, "po.xlsx", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n")
    error = error_of(path, filename="po.xlsx")
    assert error.code == "corrupt_pdf"  # read as the PDF it is (content, not name), and it is damaged


def test_zip_that_is_not_xlsx(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("orders/po.csv", SIMPLE_CSV)
    error = error_of(write(tmp_path, "po.xlsx", buffer.getvalue()))
    assert error.code == "unsupported_format"
    assert "zip" in error.message


@pytest.mark.parametrize(
    ("content", "kind", "code"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image", "needs_ocr_or_llm"),  # no OPENAI_API_KEY here
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, "xls", "unsupported_format"),
        (b"ISA*00*          *00*          *ZZ*SENDER~", "edi", "malformed_edi"),
        (b'<?xml version="1.0"?><Order><Line/></Order>', "xml", "unsupported_xml"),
        (b"Just some words in a note\nwithout any table at all\n", "text", "needs_ocr_or_llm"),
    ],
)
def test_each_format_gets_its_own_clear_code(tmp_path: Path, content: bytes, kind: str, code: str, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = write(tmp_path, "po.csv", content)
    assert detect_format(path) == kind
    assert error_of(path).code == code


def test_header_only_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "po.csv", "SKU,Description,Qty,Unit Price,Total\n")
    assert error_of(path).code == "no_line_items"


def test_header_then_only_totals(tmp_path: Path) -> None:
    path = write(tmp_path, "po.csv", "SKU,Description,Qty,Unit Price,Total\n,,,Total,0.00\n")
    assert error_of(path).code == "no_line_items"


def test_table_without_item_header(tmp_path: Path) -> None:
    path = write(tmp_path, "po.csv", "name,email\nAnn,ann@example.com\nBob,bob@example.com\n")
    assert error_of(path).code == "no_line_items"


def test_corrupt_xlsx(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<not really")
        archive.writestr("xl/workbook.xml", "garbage")
    assert error_of(write(tmp_path, "po.xlsx", buffer.getvalue())).code == "unreadable_spreadsheet"


def test_truncated_xlsx(tmp_path: Path) -> None:
    data = xlsx_bytes([["Description", "Qty"], ["A", 1]])
    assert error_of(write(tmp_path, "po.xlsx", data[: len(data) // 2])).code == "unreadable_spreadsheet"


def test_zip_bomb_xlsx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = xlsx_bytes([["Description", "Qty"], ["A", 1]])
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in source.infolist():
            bomb.writestr(info, source.read(info.filename))
        bomb.writestr("xl/media/padding.bin", b"\x00" * (4 * 1024 * 1024))  # compresses to ~4 KB
    path = write(tmp_path, "po.xlsx", buffer.getvalue())
    assert path.stat().st_size < 64 * 1024
    monkeypatch.setattr(spreadsheet, "MAX_XLSX_UNCOMPRESSED_BYTES", 1024 * 1024)
    assert error_of(path).code == "file_too_large"
    monkeypatch.setattr(spreadsheet, "MAX_XLSX_UNCOMPRESSED_BYTES", 8 * 1024 * 1024)
    assert extract_file(path).lines[0].description == "A"


def test_file_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extraction, "MAX_FILE_BYTES", 100)
    path = write(tmp_path, "po.csv", SIMPLE_CSV * 3)
    assert error_of(path).code == "file_too_large"


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_too_many_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setattr(spreadsheet, "MAX_ROWS", 10)
    rows = [["Description", "Qty"]] + [[f"Item {i}", i] for i in range(20)]
    if kind == "csv":
        path = write(tmp_path, "po.csv", "\n".join(f"{a},{b}" for a, b in rows))
    else:
        path = write(tmp_path, "po.xlsx", xlsx_bytes(rows))
    assert error_of(path).code == "file_too_large"


def test_missing_file(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.csv").code == "unreadable_file"


def test_damaged_inputs_only_raise_poflow_errors(sample_paths: dict[str, Path], tmp_path: Path) -> None:
    """Truncated and bit-flipped samples either extract or fail with a PoflowError."""
    rng = random.Random(1234)
    for original in sample_paths.values():
        data = original.read_bytes()
        for attempt in range(12):
            damaged = bytearray(data[: rng.randrange(1, len(data) + 1)])
            for _ in range(rng.randrange(0, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            path = write(tmp_path, f"damaged-{attempt}", bytes(damaged))
            try:
                extract_file(path)
            except PoflowError as error:
                assert error.code in {
                    "unsupported_format",
                    "unreadable_spreadsheet",
                    "no_line_items",
                    "empty_file",
                    "needs_ocr_or_llm",  # a damaged table can read as free text
                    "corrupt_pdf",
                    "malformed_edi",
                    "unsupported_edi_transaction",
                    "malformed_xml",
                    "unsupported_xml",
                    "unsafe_xml",
                    "line_too_long",
                    "multiple_pos",
                }, error


@pytest.mark.parametrize(
    "content",
    [b"a," * (3 * 1024 * 1024), b"x" * (5 * 1024 * 1024), b'SKU,Qty\n"' + b"y" * (5 * 1024 * 1024) + b'",1\n'],
    ids=["cells", "one-token", "quoted-field"],
)
def test_a_5mb_single_line_is_refused_clearly(tmp_path: Path, content: bytes) -> None:
    error = error_of(write(tmp_path, "po.csv", content))
    assert error.code == "line_too_long" and "\n" not in error.message


def test_quoted_multiline_descriptions(tmp_path: Path) -> None:
    content = 'SKU,Description,Qty,Unit Price\nA-1,"Widget\nblue, large",2,5.00\nB-2,"Gadget ""pro""",1,3.50\n'
    po = extract_file(write(tmp_path, "po.csv", content))
    assert [(l.sku, l.description, l.quantity) for l in po.lines] == [
        ("A-1", "Widget blue, large", Decimal("2")), ("B-2", 'Gadget "pro"', Decimal("1"))]


def test_erp_export_with_po_fields_repeated_on_every_row(tmp_path: Path) -> None:
    content = (
        "PO Number,Order Date,Vendor,Currency,Item No,Description,Qty,Unit Cost,Amount\n"
        "PO-9001,2026-04-02,Fabrikam Ltd,CAD,00017,Bolt,10,0.50,5.00\n"
        "PO-9001,2026-04-02,Fabrikam Ltd,CAD,00018,Nut,20,0.25,5.00\n"
        "PO-9001,2026-04-02,Fabrikam Ltd,CAD,00019,Washer,100,0.05,5.00\n"
    )
    po = extract_file(write(tmp_path, "export.csv", content))
    assert (po.po_number, po.supplier_name, po.currency) == ("PO-9001", "Fabrikam Ltd", "CAD")
    assert po.order_date == dt.date(2026, 4, 2)
    assert [l.sku for l in po.lines] == ["00017", "00018", "00019"]
    assert [l.line_total for l in po.lines] == [Decimal("5.00")] * 3


def test_xlsx_with_merged_cells(tmp_path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws["A1"] = "Purchase Order PO-4242"
    ws.merge_cells("A1:E1")
    ws["A2"], ws["B2"] = "Supplier:", "Contoso GmbH"
    ws.merge_cells("B2:E2")
    ws.append(["SKU", "Description", None, "Qty", "Unit Price"])
    ws.merge_cells("B3:C3")  # the description header spans two columns
    ws.append(["X-1", "Merged description", None, 3, 2.5])
    ws.merge_cells("B4:C4")
    ws.append(["X-2", "Plain", None, 1, 10])
    ws.merge_cells("B5:C5")
    path = tmp_path / "merged.xlsx"
    wb.save(path)
    po = extract_file(path)
    assert (po.po_number, po.supplier_name) == ("PO-4242", "Contoso GmbH")
    assert [(l.sku, l.description, l.quantity, l.unit_cost) for l in po.lines] == [
        ("X-1", "Merged description", Decimal("3"), Decimal("2.5")), ("X-2", "Plain", Decimal("1"), Decimal("10"))]


def test_a_file_with_several_pos_is_refused(tmp_path: Path) -> None:
    content = "PO Number,Item No,Description,Qty,Unit Cost\nPO-1,A,a,1,1.00\nPO-2,B,b,1,1.00\n"
    error = error_of(write(tmp_path, "two.csv", content))
    assert error.code == "multiple_pos" and "PO-1, PO-2" in error.message


def test_spreadsheet_document_type_from_its_title() -> None:
    """The title above a sheet's item table says what it is (purchase order, delivery note, invoice...)."""
    from poflow_dagster.extraction.spreadsheet import extract_delimited

    po = extract_delimited("Purchase Order PO-77\nSKU,Description,Qty,Price\nA1,Widget,2,3.00\n", delimiter=",",
                           source_format="csv")
    assert (po.document_type, po.po_number) == ("purchase_order", "PO-77")
    po = extract_delimited("Lieferschein 4711\nArtikel,Menge\nA1,2\n", delimiter=",", source_format="csv")
    assert po.document_type == "delivery_note"
    po = extract_delimited("SKU,Qty\nA1,2\n", delimiter=",", source_format="csv")
    assert po.document_type is None
