"""UBL Order / Peppol Invoice extraction: every field compared with the spec the XML was built from."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.extraction.sniff import detect_format
from poflow_dagster.extraction.ubl import extract_ubl, unit_of_measure
from poflow_dagster.samples.edi_documents import (
    ALL_DEFAULT,
    CII_NS,
    ODD_PREFIXES,
    PREFIXED,
    ChargeSpec,
    LineSpec,
    OrderSpec,
    Prefixes,
    billion_laughs_xml,
    cii_invoice_xml,
    external_dtd_xml,
    peppol_invoice,
    rss_xml,
    sample_spec,
    truncated_xml,
    ubl_order,
    xxe_xml,
)

PREFIX_STYLES: dict[str, Prefixes] = {
    "cbc-cac": PREFIXED,
    "odd-prefixes": ODD_PREFIXES,
    "all-default": ALL_DEFAULT,
    "prefixed-root": {"doc": "ubl", "cbc": "cbc", "cac": "cac"},
}


def assert_matches_spec(
    po: ParsedPO, spec: OrderSpec, *, po_number: str | None = None, supplier: str | None = None
) -> None:
    """Header, totals and every line equal the spec (money and quantities as Decimal)."""
    assert (po.source_format, po.extractor) == ("ubl", "ubl")
    assert po.po_number == (po_number or spec.po_number)
    assert po.supplier_name == (supplier or spec.supplier)
    assert po.order_date == spec.order_date
    assert po.currency == spec.currency
    assert po.subtotal == spec.subtotal
    assert po.tax == spec.tax
    assert po.shipping == spec.shipping
    assert po.total == spec.total
    for value in (po.subtotal, po.tax, po.shipping, po.total):
        assert value is None or isinstance(value, Decimal)
    assert len(po.lines) == len(spec.lines)
    for number, (line, want) in enumerate(zip(po.lines, spec.lines, strict=True), start=1):
        assert line.line_no == number
        assert line.sku == want.sku and isinstance(line.sku, str)
        assert line.description == want.description
        assert line.quantity == want.quantity
        assert line.unit_cost == want.unit_price
        assert line.line_total == want.line_total
        assert all(isinstance(v, Decimal) for v in (line.quantity, line.unit_cost, line.line_total))
    assert po.stats["line_units"] == [line.uom for line in spec.lines]


def error_of(data: bytes) -> PoflowError:
    with pytest.raises(PoflowError) as info:
        extract_ubl(data)
    assert "\n" not in info.value.message
    return info.value


def codes(po: ParsedPO) -> list[str]:
    return [issue.code for issue in po.issues]


# --- Order ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefixes", PREFIX_STYLES.values(), ids=PREFIX_STYLES.keys())
def test_order_fields_match_the_spec_whatever_the_prefixes(prefixes: Prefixes) -> None:
    spec = sample_spec()
    po = extract_ubl(ubl_order(spec, prefixes=prefixes))
    assert_matches_spec(po, spec)
    assert po.issues == []
    assert po.stats["document"] == "order"


def test_order_inside_a_peppol_sbdh_envelope() -> None:
    spec = sample_spec()
    assert_matches_spec(extract_ubl(ubl_order(spec, sbdh=True)), spec)


def test_base_quantity_turns_the_price_into_a_unit_price() -> None:
    spec = sample_spec(
        lines=(
            LineSpec("000321", "Screws, price per 100", Decimal("250"), Decimal("0.045"), base_quantity=Decimal("100")),
            LineSpec("000322", "Washers, price per 12", Decimal("36"), Decimal("0.25"), base_quantity=Decimal("12")),
            LineSpec("000323", "Base quantity one", Decimal("3"), Decimal("9.99"), base_quantity=Decimal("1")),
        )
    )
    po = extract_ubl(ubl_order(spec))
    assert_matches_spec(po, spec)
    assert codes(po) == ["PRICE_PER_BASE_QUANTITY", "PRICE_PER_BASE_QUANTITY"]


def test_sku_falls_back_to_buyers_then_standard_identification() -> None:
    spec = sample_spec(
        lines=(
            LineSpec("000555", "Sellers id wins", Decimal("1"), Decimal("5.00")),
            LineSpec("0066", "Buyers id", Decimal("2"), Decimal("5.00"), ubl_sku_source="buyers"),
            LineSpec("07350000000020", "GTIN only", Decimal("3"), Decimal("5.00"), ubl_sku_source="standard"),
        )
    )
    assert_matches_spec(extract_ubl(ubl_order(spec)), spec)


def test_currency_falls_back_to_currency_id_attributes() -> None:
    spec = sample_spec(currency="CAD")
    assert_matches_spec(extract_ubl(ubl_order(spec, currency_code=False)), spec)


def test_supplier_falls_back_to_the_registration_name() -> None:
    spec = sample_spec()
    po = extract_ubl(ubl_order(spec, with_trading_name=False))
    assert_matches_spec(po, spec, supplier=spec.supplier_legal_name)


def test_non_freight_charges_are_the_pos_charges_and_named() -> None:
    spec = sample_spec(other_charges=(ChargeSpec("Insurance", Decimal("25.00")),))
    po = extract_ubl(ubl_order(spec))
    assert_matches_spec(po, spec)
    assert (po.charges, po.discount) == (Decimal("25.00"), None)  # shipping stays the freight charge only
    (issue,) = po.issues
    assert (issue.code, issue.severity) == ("DOCUMENT_ALLOWANCES_CHARGES", "info")
    assert "Insurance" in issue.message and "25.00" in issue.message


def test_missing_tax_and_shipping_stay_none() -> None:
    spec = sample_spec(tax=None, shipping=None)
    assert_matches_spec(extract_ubl(ubl_order(spec)), spec)


# --- Invoice ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefixes", [ALL_DEFAULT, PREFIXED], ids=["all-default", "peppol-cbc-cac"])
def test_peppol_invoice_keeps_its_own_number_and_names_the_order_reference(prefixes: Prefixes) -> None:
    spec = sample_spec(currency="EUR", order_date=dt.date(2024, 11, 13))
    po = extract_ubl(peppol_invoice(spec, invoice_number="INV-778", prefixes=prefixes))
    assert_matches_spec(po, spec, po_number="INV-778", supplier=spec.supplier_legal_name)
    (issue,) = po.issues
    assert issue.code == "ORDER_REFERENCE" and issue.severity == "info"
    assert "INV-778" in issue.message and spec.po_number in issue.message
    assert po.stats["document"] == "invoice" and po.stats["order_reference"] == spec.po_number
    assert (po.document_type, po.prices_include_tax) == ("invoice", False)


def test_invoice_without_order_reference_has_no_reference_issue() -> None:
    spec = sample_spec()
    po = extract_ubl(peppol_invoice(spec, invoice_number="INV-0099", order_reference=False))
    assert_matches_spec(po, spec, po_number="INV-0099", supplier=spec.supplier_legal_name)
    assert po.issues == [] and po.stats["order_reference"] is None


def test_tax_in_the_document_currency_wins_over_the_tax_currency_copy() -> None:
    spec = sample_spec(currency="EUR")
    po = extract_ubl(peppol_invoice(spec, tax_currency=("SEK", Decimal("181.33"))))
    assert po.tax == spec.tax


def test_sniff_detects_ubl_documents_as_xml(tmp_path: Path) -> None:
    spec = sample_spec()
    for name, data in {"order.xml": ubl_order(spec), "invoice.xml": peppol_invoice(spec)}.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert detect_format(path) == "xml", name


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [billion_laughs_xml(), xxe_xml(), external_dtd_xml()], ids=["billion-laughs", "xxe", "external-dtd"]
)
def test_dtds_and_entities_are_unsafe(data: bytes) -> None:
    error = error_of(data)
    assert error.code == "unsafe_xml"
    assert "root:" not in error.message  # nothing was read from /etc/passwd


def test_rss_feed_is_unsupported_and_named() -> None:
    error = error_of(rss_xml())
    assert error.code == "unsupported_xml"
    assert "<rss>" in error.message and "no namespace" in error.message


def test_other_namespaced_xml_is_unsupported_with_its_namespace() -> None:
    error = error_of(cii_invoice_xml())
    assert error.code == "unsupported_xml"
    assert "CrossIndustryInvoice" in error.message and CII_NS in error.message


def test_a_credit_note_element_in_the_order_namespace_is_unsupported() -> None:
    data = ubl_order(sample_spec()).replace(b"<Order ", b"<CreditNote ").replace(b"</Order>", b"</CreditNote>")
    assert error_of(data).code == "unsupported_xml"


@pytest.mark.parametrize(
    "data", [truncated_xml(sample_spec()), b"", b"hello", b"\xff\xfe\x00garbage", b"<Order><a></Order>"],
    ids=["truncated", "empty", "text", "binary", "mismatched-tags"],
)
def test_not_well_formed_is_malformed(data: bytes) -> None:
    assert error_of(data).code == "malformed_xml"


def test_order_without_lines_has_no_line_items() -> None:
    spec = sample_spec(lines=())
    assert error_of(ubl_order(spec)).code == "no_line_items"


# --- real documents (poflow_dagster_tests/corpus): document types, units, totals, allowances ----------------

CORPUS = Path(__file__).parent / "corpus"


def corpus_po(name: str) -> ParsedPO:
    return extract_ubl((CORPUS / name).read_bytes())


def test_oasis_order_reads_its_type_units_and_barcodes() -> None:
    po = corpus_po("ph-ubl/UBL-Order-2.1-Example.xml")
    assert (po.document_type, po.po_number, po.supplier_name, po.currency) == (
        "purchase_order", "34", "Moderna Produkter AB", "SEK")
    assert [(line.sku, line.barcode, line.unit) for line in po.lines] == [
        ("SItemNo001", "1234567890123", "l"), ("SItemNo011", "123452340123", "units")]
    assert po.prices_include_tax is None  # no tax-exclusive / tax-inclusive amount is given


def test_order_response_is_an_order_confirmation_with_its_own_number() -> None:
    po = corpus_po("ph-ubl/UBL-OrderResponse-2.1-Example.xml")
    assert (po.document_type, po.po_number, po.order_date) == ("order_confirmation", "7", dt.date(2010, 1, 21))
    assert po.stats["order_reference"] == "34"
    assert len(po.lines) == 2 and all(line.quantity is None and line.sku is None for line in po.lines)
    assert "ORDER_REFERENCE" in codes(po)


def test_credit_note_is_read_like_an_invoice() -> None:
    po = corpus_po("en16931-examples/ubl-tc434-creditnote1.xml")
    assert (po.document_type, po.stats["document"]) == ("invoice", "credit_note")
    assert (po.po_number, po.supplier_name, po.total) == ("018304 / 28865", "My Supplier Company", Decimal("100.11"))
    [line] = po.lines
    assert (line.sku, line.quantity, line.unit_cost, line.line_total, line.unit) == (
        "V55", Decimal("1.00"), Decimal("100.11"), Decimal("100.11"), "units")


def test_total_is_the_grand_total_and_a_prepaid_amount_is_named() -> None:
    po = corpus_po("ph-ubl/UBL-Invoice-2.1-Example.xml")
    assert (po.subtotal, po.tax, po.total) == (Decimal("1436.50"), Decimal("292.20"), Decimal("1729.00"))
    assert po.prices_include_tax is False
    [prepaid] = [issue for issue in po.issues if issue.code == "PREPAID_AMOUNT"]
    assert "1000.00" in prepaid.message and "729.00" in prepaid.message


def test_line_allowances_the_line_amount_leaves_out_are_reported_not_taken_off() -> None:
    po = corpus_po("ph-ubl/UBL-Invoice-2.1-Example.xml")
    assert po.lines[0].discount is None and po.lines[0].line_total == Decimal("1273.00")
    [issue] = [issue for issue in po.issues if issue.code == "LINE_ALLOWANCE_NOT_APPLIED"]
    assert issue.message.startswith("line 1:") and "2.00" in issue.message  # allowance 12 less charge 10


def test_base_quantity_prices_become_unit_prices_on_a_real_invoice() -> None:
    po = corpus_po("en16931-examples/ubl-tc434-example8.xml")
    assert po.supplier_name == "Enexis B.V."  # the legal name, not the trading name "Enexis"
    assert [line.unit_cost for line in po.lines[2:6]] == [Decimal("1.27"), Decimal("1.53"), Decimal("36.75"),
                                                         Decimal("56.50")]
    assert all(line.quantity * line.unit_cost == line.line_total for line in po.lines[2:])
    assert [line.unit for line in po.lines[:6]] == ["kwh", "kwh", "kw", "kw", "months", "months"]


_INVOICE_LINE = """<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
 xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
 <cbc:ID>INV-1</cbc:ID><cbc:IssueDate>2025-02-03</cbc:IssueDate><cbc:DocumentCurrencyCode>EUR</cbc:DocumentCurrencyCode>
 <cac:InvoiceLine><cbc:ID>1</cbc:ID><cbc:InvoicedQuantity unitCode="KGM">4</cbc:InvoicedQuantity>
  <cbc:LineExtensionAmount currencyID="EUR">{total}</cbc:LineExtensionAmount>{charges}
  <cac:Item><cbc:Name>Coffee beans</cbc:Name></cac:Item>
  <cac:Price><cbc:PriceAmount currencyID="EUR">{price}</cbc:PriceAmount>{base}</cac:Price>
 </cac:InvoiceLine></Invoice>"""


def _allowance(indicator: str, amount: str) -> str:
    return (f"<cac:AllowanceCharge><cbc:ChargeIndicator>{indicator}</cbc:ChargeIndicator>"
            f"<cbc:Amount currencyID=\"EUR\">{amount}</cbc:Amount></cac:AllowanceCharge>")


def test_a_line_allowance_the_line_amount_applies_is_the_discount() -> None:
    charges = _allowance("false", "6.00") + _allowance("true", "1.00")
    xml = _INVOICE_LINE.format(total="35.00", charges=charges, price="10.00", base="")
    [line] = extract_ubl(xml.encode()).lines
    assert (line.quantity, line.unit_cost, line.discount, line.line_total, line.unit) == (
        Decimal("4"), Decimal("10.00"), Decimal("5.00"), Decimal("35.00"), "kg")


def test_a_base_quantity_the_line_amount_contradicts_is_ignored() -> None:
    base = '<cbc:BaseQuantity unitCode="KGM">10</cbc:BaseQuantity>'
    po = extract_ubl(_INVOICE_LINE.format(total="40.00", charges="", price="10.00", base=base).encode())
    assert po.lines[0].unit_cost == Decimal("10.00")
    assert codes(po) == ["BASE_QUANTITY_IGNORED"]
    po = extract_ubl(_INVOICE_LINE.format(total="4.00", charges="", price="10.00", base=base).encode())
    assert po.lines[0].unit_cost == Decimal("1.00") and codes(po) == ["PRICE_PER_BASE_QUANTITY"]


@pytest.mark.parametrize(("code", "unit"), [("C62", "units"), ("H87", "units"), ("KGM", "kg"), ("LTR", "l"),
                                            ("DAY", "days"), ("MTQ", "m3"), ("ZZ", "zz"), (None, None)])
def test_rec_20_unit_codes_read_as_units(code: str | None, unit: str | None) -> None:
    assert unit_of_measure(code) == unit


def test_an_order_change_is_read_as_a_purchase_order() -> None:
    spec = sample_spec()
    data = ubl_order(spec).replace(b"<Order ", b"<OrderChange ").replace(b"</Order>", b"</OrderChange>")
    po = extract_ubl(data.replace(b"xsd:Order-2", b"xsd:OrderChange-2"))
    assert_matches_spec(po, spec)
    assert (po.document_type, po.stats["document"]) == ("purchase_order", "order_change")


def test_a_despatch_advice_is_a_delivery_note_without_money() -> None:
    xml = b"""<DespatchAdvice xmlns="urn:oasis:names:specification:ubl:schema:xsd:DespatchAdvice-2"
     xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
     xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
     <cbc:ID>DA-9</cbc:ID><cbc:IssueDate>2025-03-04</cbc:IssueDate>
     <cac:DespatchSupplierParty><cac:Party><cac:PartyName><cbc:Name>Acme Mill</cbc:Name></cac:PartyName>
     </cac:Party></cac:DespatchSupplierParty>
     <cac:DespatchLine><cbc:ID>1</cbc:ID><cbc:DeliveredQuantity unitCode="KGM">90</cbc:DeliveredQuantity>
      <cac:Item><cbc:Name>Rye flour</cbc:Name><cac:SellersItemIdentification><cbc:ID>RF-25</cbc:ID>
      </cac:SellersItemIdentification></cac:Item></cac:DespatchLine></DespatchAdvice>"""
    po = extract_ubl(xml)
    assert (po.document_type, po.po_number, po.supplier_name, po.total) == ("delivery_note", "DA-9", "Acme Mill", None)
    [line] = po.lines
    assert (line.sku, line.description, line.quantity, line.unit, line.unit_cost) == (
        "RF-25", "Rye flour", Decimal("90"), "kg", None)


def test_zero_allowances_and_charges_are_not_reported() -> None:
    po = corpus_po("xrechnung-testsuite/02.01a-INVOICE_ubl.xml")  # a charge and an allowance of 0 each
    assert "DOCUMENT_ALLOWANCES_CHARGES" not in codes(po) and po.shipping is None
