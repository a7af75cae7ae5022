"""Barcodes (UPC / EAN / GTIN) from every document format to matching and Shopify (issue 10).

Each extractor reads a real document written here; a bad check digit is a warning, never a hold; the barcode is
saved with the line, carried by the draft, sent as the new product's variant barcode, matched against the shop's
catalog when the SKU differs, and checked by the read-back.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from fpdf import FPDF

from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.domain.reconcile import needs_review
from poflow_dagster.extraction import extract_file
from poflow_dagster.extraction.barcodes import INVALID_BARCODE, check_barcodes, clean_barcode
from poflow_dagster.extraction.llm_schema import LLMExtraction, to_parsed_po
from poflow_dagster.extraction.ubl import extract_ubl
from poflow_dagster.extraction.x12 import extract_x12_850
from poflow_dagster.samples.edi_documents import LineSpec, sample_spec, ubl_order, x12_850

EAN = "4006381333931"  # a valid EAN-13
UPC = "012345678905"  # a valid UPC-A (leading zero)
SWISS = "7612345678900"  # a valid EAN-13 that Excel shows as 7.61E+12
EAN_PADDED = "0012345678905"  # the same GTIN as an EAN-13


def _csv(tmp_path: Path, text: str, name: str = "po.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _barcodes(po: ParsedPO) -> list[str | None]:
    return [line.barcode for line in po.lines]


# --- cleaning ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "expected"), [
    (UPC, UPC),                                  # text: leading zero kept
    ("4 006381 333931", EAN),                    # spaces between digit groups
    ("4-006381-333931", EAN),                    # hyphens
    ("7612345678901.0", "7612345678901"),        # a float written as text
    ("7.612345678901E+12", "7612345678901"),     # scientific, every digit still there
    ("7.61E+12", "7.61E+12"),                    # scientific with lost digits: kept as printed
    (7612345678901.0, "7612345678901"),          # a numeric cell's real value
    (12345678905, UPC),                          # a numeric cell lost the UPC's leading zero
    ("ABC-123", "ABC-123"),                      # not a GTIN: kept as printed
    ("  ", None),
    (None, None),
])
def test_barcode_cells_are_cleaned_without_losing_leading_zeros(cell, expected) -> None:
    assert clean_barcode(cell) == expected


# --- spreadsheets --------------------------------------------------------------------------------------------


def test_csv_barcode_column_beside_the_sku_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, f"""PO Number,PO-77
Supplier,Northwind Traders
SKU,EAN-13,Description,Qty,Unit Price,Amount
NW-1,{EAN},Espresso beans,2,10.00,20.00
NW-2,{EAN_PADDED},Green tea,1,5.00,5.00
NW-3,"4 006381 333931",Spaced,1,1.00,1.00
NW-4,7612345678900.0,Float text,1,1.00,1.00
NW-5,,No barcode,1,1.00,1.00
""")
    po = extract_file(path)
    assert [line.sku for line in po.lines] == ["NW-1", "NW-2", "NW-3", "NW-4", "NW-5"]
    assert _barcodes(po) == [EAN, EAN_PADDED, EAN, SWISS, None]
    assert [line.description for line in po.lines][:2] == ["Espresso beans", "Green tea"]
    assert INVALID_BARCODE not in {issue.code for issue in po.issues}
    assert po.to_contract()["lines"][1]["barcode"] == EAN_PADDED


@pytest.mark.parametrize("header", [
    "Barcode", "EAN", "EAN-13", "EAN13", "UPC", "UPC-A", "GTIN", "GTIN-13", "GTIN-14", "Code EAN", "Strichcode",
    "Código de barras", "JAN", "EAN/UPC", "Codice a barre", "Streepjescode", "EAN-Nummer",
])
def test_barcode_header_vocabulary(tmp_path: Path, header: str) -> None:
    path = _csv(tmp_path, f"Article No,{header},Description,Qty,Unit Price\nA-1,{UPC},Cup,3,2.50\n")
    [line] = extract_file(path).lines
    assert (line.sku, line.barcode, line.description) == ("A-1", UPC, "Cup")


def test_a_barcode_column_without_a_sku_column_is_still_the_sku(tmp_path: Path) -> None:
    path = _csv(tmp_path, f"EAN,Description,Qty,Unit Price\n{EAN_PADDED},Cup,3,2.50\n{EAN},Pen,1,1.00\n")
    po = extract_file(path)
    assert [line.sku for line in po.lines] == [EAN_PADDED, EAN]  # as before barcodes were read
    assert _barcodes(po) == [EAN_PADDED, EAN]


def test_xlsx_numeric_barcode_cells_read_their_real_value(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["PO Number", "PO-88"])
    sheet.append(["SKU", "GTIN", "Description", "Qty", "Unit Price"])
    sheet.append(["X-1", int(SWISS), "Shown as 7.61E+12", 2, 3.5])
    sheet["B3"].number_format = "0.00E+00"  # Excel displays it in scientific form
    sheet.append(["X-2", float(SWISS), "A float cell", 1, 1])
    sheet.append(["X-3", 12345678905, "UPC that lost its zero", 1, 1])
    sheet.append(["X-4", UPC, "UPC as text", 1, 1])
    sheet.append(["X-5", 4006381333932, "Wrong check digit", 1, 1])
    path = tmp_path / "po.xlsx"
    workbook.save(path)

    po = extract_file(path)

    assert _barcodes(po) == [SWISS, SWISS, UPC, UPC, "4006381333932"]
    assert [line.sku for line in po.lines] == ["X-1", "X-2", "X-3", "X-4", "X-5"]
    [warning] = [issue for issue in po.issues if issue.code == INVALID_BARCODE]
    assert warning.severity == "warning" and warning.message.startswith("line 5: barcode '4006381333932'")


# --- validity ------------------------------------------------------------------------------------------------


def test_a_wrong_check_digit_is_a_warning_that_never_holds_the_po(tmp_path: Path) -> None:
    path = _csv(tmp_path, f"SKU,UPC,Description,Qty,Unit Price\nA,{UPC},Good,1,1.00\nB,012345678906,Typo,1,1.00\n"
                          "C,ABC123,Letters,1,1.00\n")
    po = extract_file(path)
    assert _barcodes(po) == [UPC, "012345678906", "ABC123"]  # kept as printed
    warnings = [issue for issue in po.issues if issue.code == INVALID_BARCODE]
    assert [w.message.split(":")[0] for w in warnings] == ["line 2", "line 3"]
    assert "check digit" in warnings[0].message and "not a GTIN" in warnings[1].message
    assert all(w.severity == "warning" for w in warnings) and not needs_review(po)
    assert check_barcodes(po).issues == po.issues  # recomputed, never doubled


# --- EDI -----------------------------------------------------------------------------------------------------


def test_x12_gtin_qualifiers_fill_the_barcode_and_the_vendor_part_stays_the_sku() -> None:
    spec = sample_spec(lines=(
        LineSpec("V-1", "EAN-13", Decimal("1"), Decimal("1.00"), other_ids=(("EN", EAN),)),
        LineSpec("V-2", "GTIN-14", Decimal("1"), Decimal("1.00"), other_ids=(("UK", "10012345678902"),)),
        LineSpec("V-3", "UPC without check digit", Decimal("1"), Decimal("1.00"), other_ids=(("UI", "01234567890"),)),
        LineSpec("V-4", "EAN-8", Decimal("1"), Decimal("1.00"), other_ids=(("EO", "96385074"),)),
        LineSpec("V-5", "UPC beats case code", Decimal("1"), Decimal("1.00"),
                 other_ids=(("UA", "100123456789"), ("UP", UPC))),
        LineSpec(UPC, "UPC alone", Decimal("1"), Decimal("1.00"), sku_qualifier="UP"),
        LineSpec("V-7", "no GTIN", Decimal("1"), Decimal("1.00"), other_ids=(("BP", "B-7"),)),
    ))
    po = extract_x12_850(x12_850(spec))
    assert [line.sku for line in po.lines] == ["V-1", "V-2", "V-3", "V-4", "V-5", UPC, "V-7"]
    assert _barcodes(po) == [EAN, "10012345678902", UPC, "96385074", UPC, UPC, None]
    assert check_barcodes(po).issues == po.issues  # every GTIN here is valid


def test_ubl_standard_item_identification_is_the_gtin() -> None:
    spec = sample_spec()
    document = ubl_order(spec)
    po = extract_ubl(document)
    assert [line.sku for line in po.lines] == [line.sku for line in spec.lines]  # the seller's ids stay SKUs
    assert _barcodes(po) == ["7350000000016"] * len(spec.lines)  # schemeID 0160: GS1 GTIN
    assert _barcodes(extract_ubl(document.replace(b'schemeID="0160"', b'schemeID="GTIN"'))) == _barcodes(po)
    assert _barcodes(extract_ubl(document.replace(b'schemeID="0160"', b'schemeID="0088"'))) == [None] * 3


# --- PDF and LLM ---------------------------------------------------------------------------------------------


def _pdf_with_barcode_column(path: Path, *, ruled: bool) -> Path:
    """A one-page text PDF whose item table has SKU, EAN, Description, Qty, Unit Price and Amount columns."""
    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    for text in ("PURCHASE ORDER", "PO Number: PO-99", "Supplier: Northwind Traders", "Currency: USD"):
        pdf.cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    widths = (24, 34, 54, 14, 27, 27)
    rows = [("SKU", "EAN", "Description", "Qty", "Unit Price", "Amount"),
            ("NW-100", EAN, "Espresso beans", "2", "10.00", "20.00"),
            ("NW-200", EAN_PADDED, "Green tea", "1", "5.00", "5.00"),
            ("NW-300", "", "No barcode", "1", "1.00", "1.00")]
    for row in rows:
        for width, text in zip(widths, row, strict=True):
            pdf.cell(width, 7, text, border=1 if ruled else 0)
        pdf.ln(7)
    pdf.cell(sum(widths[:5]), 7, "Total")
    pdf.cell(widths[5], 7, "26.00")
    path.write_bytes(bytes(pdf.output()))
    return path


@pytest.mark.parametrize("ruled", [False, True], ids=["text", "ruled"])
def test_pdf_barcode_column_is_read_into_barcode_not_sku_or_description(tmp_path: Path, ruled: bool) -> None:
    po = extract_file(_pdf_with_barcode_column(tmp_path / "po.pdf", ruled=ruled))
    assert po.extractor == "pdf_text"
    assert [(line.sku, line.barcode, line.description) for line in po.lines] == [
        ("NW-100", EAN, "Espresso beans"), ("NW-200", EAN_PADDED, "Green tea"), ("NW-300", None, "No barcode")]


def test_the_llm_line_schema_has_a_flat_optional_barcode_string() -> None:
    from openai.lib._pydantic import to_strict_json_schema

    from poflow_dagster.extraction.llm import SYSTEM_PROMPT

    line_schema = to_strict_json_schema(LLMExtraction)["$defs"]["LLMLine"]
    assert line_schema["properties"]["barcode"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert "barcode" in line_schema["required"] and "barcode" in SYSTEM_PROMPT
    extraction = LLMExtraction.model_validate({
        "po_number": "PO-1", "supplier_name": None, "order_date": None, "currency": None, "subtotal": None,
        "tax": None, "shipping": None, "total": None, "confidence": 0.9,
        "lines": [{"sku": "A", "barcode": "0 12345 67890 5", "description": "x", "quantity": "1", "unit_cost": "1",
                   "line_total": "1", "confidence": 0.9},
                  {"sku": None, "barcode": EAN, "description": "only a barcode", "quantity": "1", "unit_cost": "1",
                   "line_total": "1", "confidence": 0.9},
                  {"sku": "C", "description": "an answer without the key", "quantity": "1", "unit_cost": "1",
                   "line_total": "1", "confidence": 0.9}],
    })
    po = to_parsed_po(extraction, source_format="image")
    assert [(line.sku, line.barcode) for line in po.lines] == [("A", UPC), (EAN, EAN), ("C", None)]


def test_the_json_contract_keeps_its_keys_and_adds_barcode() -> None:
    po = ParsedPO(lines=[POLine(line_no=1, sku="A", barcode=UPC), POLine(line_no=2, sku="B")])
    lines = po.to_contract()["lines"]
    assert [line["barcode"] for line in lines] == [UPC, None]
    assert {"sku", "barcode", "description", "quantity", "unit_cost", "line_total"} <= set(lines[0])


# --- saving and drafts (both databases) ----------------------------------------------------------------------


def test_lines_save_their_barcode_and_drafts_carry_the_skus_first_valid_one(home, db, tmp_path: Path) -> None:
    from poflow_dagster.intake import upload_file
    from poflow_dagster.store.drafts import create_drafts_for_po, drafts_for_upload
    from poflow_dagster.store.purchase_orders import save_purchase_order, saved_lines

    path = _csv(tmp_path, f"""PO Number,PO-1
Supplier,Northwind Traders
SKU,UPC,Description,Qty,Unit Price
A,012345678906,Typo first,1,1.00
A,{UPC},Cup,2,1.00
B,,No barcode,1,2.00
""")
    upload = upload_file(db, home, "acme", path)
    po = extract_file(path)
    save_purchase_order(db, upload.id, po)
    assert [(line.sku, line.barcode) for line in saved_lines(db, upload.id)] == [
        ("A", "012345678906"), ("A", UPC), ("B", None)]  # as printed, the invalid one too

    first = create_drafts_for_po(db, upload.id, po).drafts
    assert {d.sku: d.barcode for d in first} == {"A": UPC, "B": None}  # the invalid GTIN never reaches a draft
    again = create_drafts_for_po(db, upload.id, po).drafts
    assert [d.changed for d in again] == [False, False]  # a re-run writes nothing

    later = _csv(tmp_path, "PO Number,PO-2\nSupplier,Northwind Traders\nSKU,Description,Qty,Unit Price\n"
                           f"A,Cup,2,1.50\n", name="later.csv")
    second = upload_file(db, home, "acme", later)
    later_po = extract_file(later)
    save_purchase_order(db, second.id, later_po)
    [draft] = create_drafts_for_po(db, second.id, later_po).drafts
    assert (draft.changed, draft.unit_cost, draft.barcode) == (True, Decimal("1.50"), UPC)  # not erased
    assert {d.sku: d.barcode for d in drafts_for_upload(db, upload.id)} == {"A": UPC, "B": None}


# --- end to end: matching and Shopify (both databases) -------------------------------------------------------

PO_WITH_BARCODES = f"""PO Number,PO-601
Supplier,Northwind Traders
SKU,EAN,Description,Qty,Unit Cost,Amount
NW-100,{EAN},Espresso Beans 1kg,4,12.50,50.00
NEW-1,{EAN_PADDED},Chai Spice 250g,3,4.00,12.00
NEW-2,,Rooibos 100g,1,3.00,3.00
"""


def _variant_barcodes(shop, gids: list[str]) -> dict[str, str | None]:
    from poflow_dagster.shopify.client import ShopifyClient

    with ShopifyClient(shop.url, "test-token") as client:
        nodes = client.execute("query($ids: [ID!]!) { nodes(ids: $ids) { ... on ProductVariant { id barcode } } }",
                               {"ids": gids})["nodes"]
    return {node["id"]: node["barcode"] for node in nodes}


def test_a_line_whose_sku_differs_is_matched_by_barcode_and_new_products_carry_theirs(
    home, db, shop, instance, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    from poflow_dagster.catalog.store import line_matches_for_upload
    from poflow_dagster.definitions import defs
    from poflow_dagster.intake import upload_file
    from poflow_dagster.pipeline.local import run_upload
    from poflow_dagster.resources import ShopifyResource
    from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, VariantUpdate, handle_for_sku
    from poflow_dagster.store.schema import ShopifyProduct
    from poflow_dagster.verification import verify_upload
    from poflow_dagster_tests.test_catalog_pipeline import _costs, _existing, _sync_metadata

    # The shop sells the espresso under its own SKU; only the EAN says it is the supplier's NW-100.
    existing = _existing(shop, [ProductSpec(sku="SHOP-ESP-1", title="Our house espresso", price=Decimal("30.00"),
                                            handle="house-espresso", status="ACTIVE", vendor="Someone Else",
                                            barcode=EAN, unit_cost=Decimal("11.00"))])["SHOP-ESP-1"]
    before = shop.count_products()
    path = _csv(tmp_path, PO_WITH_BARCODES)
    upload = upload_file(db, home, "acme", path)

    result = run_upload(defs, instance, db, upload.id, with_images=False)

    assert result.success and result.summary["status"] == "completed", result.error
    assert result.checks == {"po_saved_correctly": True, "shopify_matches_drafts": True}
    matches = {m.match.line_no: m.match for m in line_matches_for_upload(db, upload.id)}
    assert (matches[1].status, matches[1].method, matches[1].variant_gid) == ("matched", "barcode", existing)
    assert matches[2].status == matches[3].status == "unmatched"
    assert shop.count_products() == before + 2  # NEW-1 and NEW-2; no duplicate of the espresso
    assert _costs(shop, [existing]) == {existing: Decimal("12.50")}
    with db.session() as session:
        links = dict(session.execute(sa.select(ShopifyProduct.handle, ShopifyProduct.variant_gid)).all())
    new_1, new_2 = links[handle_for_sku("acme", "NEW-1")], links[handle_for_sku("acme", "NEW-2")]
    assert _variant_barcodes(shop, [new_1, new_2, existing]) == {new_1: EAN_PADDED, new_2: None, existing: EAN}

    products_before = shop.stats.operations.get("productSet", 0)
    again = run_upload(defs, instance, db, upload.id, with_images=False)  # idempotent
    assert again.success and all(again.checks.values())
    assert shop.count_products() == before + 2
    assert _sync_metadata(instance, again.run_id)["variant_cost_updates"] == 0
    assert _variant_barcodes(shop, [new_1]) == {new_1: EAN_PADDED}
    assert shop.stats.operations.get("productSet", 0) - products_before <= 2  # the same two products, upserted

    # Someone edits the new product's barcode in Shopify: the read-back check lists it like any other field.
    with ShopifyClient(shop.url, "test-token") as client:
        product_gid = client.get_product(handle_for_sku("acme", "NEW-1")).product_gid
        client.update_variants(product_gid, [VariantUpdate(variant_gid=new_1, barcode="96385074")])
    verdict = verify_upload(db, upload.id, ShopifyResource(), held_for_review=False)
    assert verdict.status == "failed"
    assert verdict.problems == [f"SKU NEW-1: barcode differs (expected {EAN_PADDED}, Shopify has 96385074)"]


def test_skus_that_are_all_gtins_are_the_barcodes_too(tmp_path: Path) -> None:
    gtins = _csv(tmp_path, f"Item Code,Description,Qty,Unit Price\n{EAN},Pen,1,1.00\n{UPC},Cup,1,1.00\n")
    po = extract_file(gtins)
    assert [(line.sku, line.barcode) for line in po.lines] == [(EAN, EAN), (UPC, UPC)]
    mixed = _csv(tmp_path, f"Item Code,Description,Qty,Unit Price\n{EAN},Pen,1,1.00\n00123,Cup,1,1.00\n",
                 name="mixed.csv")
    assert _barcodes(extract_file(mixed)) == [None, None]  # not every SKU is a GTIN: they are just SKUs
