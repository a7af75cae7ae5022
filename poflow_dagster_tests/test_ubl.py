"""UBL Order / Peppol Invoice extraction: every field compared with the spec the XML was built from."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.extraction.sniff import detect_format
from poflow_dagster.extraction.ubl import extract_ubl
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


def test_non_freight_charges_are_reported_not_applied() -> None:
    spec = sample_spec(other_charges=(ChargeSpec("Insurance", Decimal("25.00")),))
    po = extract_ubl(ubl_order(spec))
    assert_matches_spec(po, spec)
    (issue,) = po.issues
    assert issue.code == "CHARGES_NOT_APPLIED" and "Insurance" in issue.message and "25.00" in issue.message


def test_missing_tax_and_shipping_stay_none() -> None:
    spec = sample_spec(tax=None, shipping=None)
    assert_matches_spec(extract_ubl(ubl_order(spec)), spec)


# --- Invoice ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefixes", [ALL_DEFAULT, PREFIXED], ids=["all-default", "peppol-cbc-cac"])
def test_peppol_invoice_uses_the_order_reference_as_po_number(prefixes: Prefixes) -> None:
    spec = sample_spec(currency="EUR", order_date=dt.date(2024, 11, 13))
    po = extract_ubl(peppol_invoice(spec, invoice_number="INV-778", prefixes=prefixes))
    assert_matches_spec(po, spec)
    (issue,) = po.issues
    assert issue.code == "PO_NUMBER_SOURCE" and issue.severity == "info"
    assert "OrderReference" in issue.message
    assert po.stats["document"] == "invoice"


def test_invoice_without_order_reference_uses_the_invoice_number() -> None:
    spec = sample_spec()
    po = extract_ubl(peppol_invoice(spec, invoice_number="INV-0099", order_reference=False))
    assert_matches_spec(po, spec, po_number="INV-0099")
    (issue,) = po.issues
    assert issue.code == "PO_NUMBER_SOURCE" and issue.severity == "info" and "invoice number" in issue.message


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


def test_ubl_credit_note_is_unsupported() -> None:
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
