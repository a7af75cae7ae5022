"""UN/CEFACT Cross Industry Invoice extraction: real XRechnung / EN 16931 documents compared with what a person
reads in them (poflow_dagster_tests/corpus/*/*.expected.json), and the reader's rules on small documents."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.extraction import extract_file
from poflow_dagster.extraction.cii import extract_cii, extract_xml
from poflow_dagster.extraction.sniff import detect_format
from poflow_dagster.samples.edi_documents import billion_laughs_xml, cii_invoice_xml, sample_spec, ubl_order

CORPUS = Path(__file__).parent / "corpus"
XRECHNUNG_CII = sorted((CORPUS / "xrechnung-testsuite").glob("*_uncefact.xml"))
HEADER = ("po_number", "supplier_name", "order_date", "currency", "document_type", "prices_include_tax",
          "subtotal", "tax", "shipping", "total")
LINE = ("sku", "barcode", "description", "quantity", "unit_cost", "line_total", "unit", "discount")


def _same(got: object, want: object) -> bool:
    """Equal, numbers compared as decimals ("336.9" == "336.90")."""
    if got is None or want is None or isinstance(want, bool):
        return got == want
    try:
        return Decimal(str(got)) == Decimal(str(want))
    except ArithmeticError:
        return str(got) == str(want)


def codes(po: ParsedPO) -> list[str]:
    return [issue.code for issue in po.issues]


def test_the_corpus_has_xrechnung_cii_invoices() -> None:
    assert len(XRECHNUNG_CII) >= 4


@pytest.mark.parametrize("path", XRECHNUNG_CII, ids=[p.name for p in XRECHNUNG_CII])
def test_xrechnung_cii_invoice_reads_as_a_person_reads_it(path: Path) -> None:
    expected = json.loads(path.with_name(path.name + ".expected.json").read_text())["expected"]
    got = extract_file(path).to_contract()
    assert {k: got[k] for k in HEADER if not _same(got[k], expected[k])} == {}
    assert len(got["lines"]) == len(expected["lines"])
    for number, (line, want) in enumerate(zip(got["lines"], expected["lines"], strict=True), start=1):
        assert {k: line[k] for k in LINE if not _same(line[k], want[k])} == {}, f"line {number}"


def test_extract_file_dispatches_cii_by_its_root_element() -> None:
    po = extract_file(XRECHNUNG_CII[0])
    assert (po.source_format, po.extractor, po.document_type) == ("cii", "cii", "invoice")
    assert detect_format(XRECHNUNG_CII[0]) == "xml"


def test_ubl_still_goes_to_the_ubl_reader() -> None:
    po = extract_xml(ubl_order(sample_spec()))
    assert (po.source_format, po.document_type) == ("ubl", "purchase_order")


def test_freight_charge_is_shipping_and_other_allowances_are_reported() -> None:
    po = extract_cii((CORPUS / "en16931-examples" / "CII_business_example_01.xml").read_bytes())
    assert (po.po_number, po.supplier_name, po.order_date, po.currency) == (
        "TOSL108", "Salescompany ltd.", dt.date(2013, 6, 30), "NOK")
    assert (po.subtotal, po.tax, po.shipping, po.total) == (
        Decimal("1436.50"), Decimal("365.28"), Decimal("100.00"), Decimal("1801.78"))
    [charges] = [issue for issue in po.issues if issue.code == "DOCUMENT_ALLOWANCES_CHARGES"]
    assert "Promotion discount" in charges.message and "Freight" not in charges.message
    assert po.discount is not None and po.discount > 0  # the promotion is applied to the total, not lost
    assert po.stats["order_reference"] == "123" and "ORDER_REFERENCE" in codes(po)
    assert "PREPAID_AMOUNT" in codes(po)
    assert [line.unit for line in po.lines] == ["units"] * 4 + ["m"]


def test_a_basis_quantity_the_line_amounts_contradict_is_ignored() -> None:
    # The example states each net price "per 1273 units" while its line amounts are quantity x price.
    po = extract_cii((CORPUS / "en16931-examples" / "CII_business_example_01.xml").read_bytes())
    assert [line.unit_cost for line in po.lines] == [Decimal(v) for v in ("1273", "3.96", "2.48", "25", "0.75")]
    assert codes(po).count("BASE_QUANTITY_IGNORED") == 5  # every basis quantity repeats the price
    assert po.lines[0].discount is None  # its line allowance 12 and line charge 12 cancel out


_CII = """<rsm:CrossIndustryInvoice xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
 xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
 xmlns:udt="urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100">
 <rsm:ExchangedDocument><ram:ID>R-7</ram:ID><ram:TypeCode>380</ram:TypeCode>
  <ram:IssueDateTime><udt:DateTimeString format="102">{date}</udt:DateTimeString></ram:IssueDateTime>
 </rsm:ExchangedDocument>
 <rsm:SupplyChainTradeTransaction>{lines}
  <ram:ApplicableHeaderTradeAgreement><ram:SellerTradeParty><ram:Name>Kaffee Rösterei GmbH</ram:Name>
  </ram:SellerTradeParty></ram:ApplicableHeaderTradeAgreement>
  <ram:ApplicableHeaderTradeSettlement><ram:InvoiceCurrencyCode>EUR</ram:InvoiceCurrencyCode>
   <ram:SpecifiedTradeSettlementHeaderMonetarySummation>
    <ram:LineTotalAmount>35.00</ram:LineTotalAmount><ram:TaxBasisTotalAmount>35.00</ram:TaxBasisTotalAmount>
    <ram:TaxTotalAmount currencyID="EUR">2.45</ram:TaxTotalAmount><ram:GrandTotalAmount>37.45</ram:GrandTotalAmount>
   </ram:SpecifiedTradeSettlementHeaderMonetarySummation>
  </ram:ApplicableHeaderTradeSettlement>
 </rsm:SupplyChainTradeTransaction>
</rsm:CrossIndustryInvoice>"""

_LINE = """<ram:IncludedSupplyChainTradeLineItem>
  <ram:SpecifiedTradeProduct><ram:GlobalID schemeID="0160">4012345678901</ram:GlobalID>
   <ram:SellerAssignedID>KB-1</ram:SellerAssignedID><ram:Name>Kaffeebohnen</ram:Name></ram:SpecifiedTradeProduct>
  <ram:SpecifiedLineTradeAgreement><ram:NetPriceProductTradePrice><ram:ChargeAmount>{price}</ram:ChargeAmount>
  </ram:NetPriceProductTradePrice></ram:SpecifiedLineTradeAgreement>
  <ram:SpecifiedLineTradeDelivery><ram:BilledQuantity unitCode="KGM">4</ram:BilledQuantity>
  </ram:SpecifiedLineTradeDelivery>
  <ram:SpecifiedLineTradeSettlement>{allowance}<ram:SpecifiedTradeSettlementLineMonetarySummation>
   <ram:LineTotalAmount>35.00</ram:LineTotalAmount></ram:SpecifiedTradeSettlementLineMonetarySummation>
  </ram:SpecifiedLineTradeSettlement>
 </ram:IncludedSupplyChainTradeLineItem>"""

_ALLOWANCE = """<ram:SpecifiedTradeAllowanceCharge><ram:ChargeIndicator><udt:Indicator>false</udt:Indicator>
 </ram:ChargeIndicator><ram:ActualAmount>5.00</ram:ActualAmount><ram:Reason>Rabatt</ram:Reason>
 </ram:SpecifiedTradeAllowanceCharge>"""


def _invoice(*, price: str = "10.00", allowance: str = _ALLOWANCE, date: str = "20250203", lines: int = 1) -> bytes:
    line = _LINE.format(price=price, allowance=allowance)
    return _CII.format(date=date, lines=line * lines).encode()


def test_every_field_of_a_small_invoice() -> None:
    po = extract_cii(_invoice())
    assert (po.po_number, po.supplier_name, po.order_date, po.currency, po.document_type) == (
        "R-7", "Kaffee Rösterei GmbH", dt.date(2025, 2, 3), "EUR", "invoice")
    assert (po.subtotal, po.tax, po.shipping, po.total, po.prices_include_tax) == (
        Decimal("35.00"), Decimal("2.45"), None, Decimal("37.45"), False)
    [line] = po.lines
    assert (line.sku, line.barcode, line.description, line.unit) == ("KB-1", "4012345678901", "Kaffeebohnen", "kg")
    assert (line.quantity, line.unit_cost, line.discount, line.line_total) == (
        Decimal("4"), Decimal("10.00"), Decimal("5.00"), Decimal("35.00"))
    assert po.issues == []


def test_an_allowance_the_line_amount_leaves_out_is_reported() -> None:
    po = extract_cii(_invoice(price="8.75"))  # 4 x 8.75 = 35.00 already
    assert po.lines[0].discount is None
    assert codes(po) == ["LINE_ALLOWANCE_NOT_APPLIED"]


def test_an_unreadable_date_and_price_are_reported_and_left_empty() -> None:
    po = extract_cii(_invoice(price="ten", date="2025-02-03"))
    assert po.order_date is None and po.lines[0].unit_cost is None
    assert {"UNREADABLE_DATE", "UNREADABLE_NUMBER"} <= set(codes(po))


def test_an_invoice_without_lines_has_no_line_items() -> None:
    with pytest.raises(PoflowError) as info:
        extract_cii(_invoice(lines=0))
    assert info.value.code == "no_line_items"
    with pytest.raises(PoflowError) as info:
        extract_xml(cii_invoice_xml())
    assert info.value.code == "no_line_items"


def test_entities_are_refused_before_anything_is_read() -> None:
    with pytest.raises(PoflowError) as info:
        extract_xml(billion_laughs_xml())
    assert info.value.code == "unsafe_xml"


def test_other_xml_is_not_a_cross_industry_invoice() -> None:
    with pytest.raises(PoflowError) as info:
        extract_cii(ubl_order(sample_spec()))
    assert info.value.code == "unsupported_xml" and "\n" not in info.value.message


# --- Order-X (Cross Industry Order) --------------------------------------------------------------------------

ORDER_X = CORPUS / "horstoeko-orderx" / "reader-order-x-comfort.xml"


def test_order_x_is_a_purchase_order_read_like_an_invoice() -> None:
    po = extract_file(ORDER_X)
    assert (po.source_format, po.document_type, po.stats["document"]) == ("cii", "purchase_order", "order")
    assert (po.po_number, po.supplier_name, po.order_date, po.currency) == (
        "PO123456789", "SELLER_NAME", dt.date(2022, 12, 25), "EUR")
    assert (po.subtotal, po.tax, po.shipping, po.total) == (
        Decimal("310.00"), Decimal("60.00"), Decimal("21.00"), Decimal("360.00"))
    assert [line.quantity for line in po.lines] == [Decimal("6.00"), Decimal("10.00"), Decimal("6.00")]  # Requested
    assert [line.unit_cost for line in po.lines] == [Decimal("10.00"), Decimal("10.00"), Decimal("25.00")]
    assert "ORDER_REFERENCE" not in codes(po)  # it refers to itself


def test_order_x_response_and_a_date_with_its_time() -> None:
    data = ORDER_X.read_bytes()
    data = data.replace(b"<ram:TypeCode>220</ram:TypeCode>", b"<ram:TypeCode>231</ram:TypeCode>", 1)
    data = data.replace(b'format="102">20221225<', b'format="203">202212251232<', 1)
    po = extract_xml(data)
    assert (po.document_type, po.order_date) == ("order_confirmation", dt.date(2022, 12, 25))


# --- ZUGFeRD 1.0 (CrossIndustryDocument) ---------------------------------------------------------------------

_ZUGFERD_1 = """<rsm:CrossIndustryDocument xmlns:rsm="urn:ferd:CrossIndustryDocument:invoice:1p0"
 xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:12"
 xmlns:udt="urn:un:unece:uncefact:data:standard:UnqualifiedDataType:15">
 <rsm:HeaderExchangedDocument><ram:ID>RE-1001</ram:ID><ram:TypeCode>380</ram:TypeCode>
  <ram:IssueDateTime><udt:DateTimeString format="102">20140512</udt:DateTimeString></ram:IssueDateTime>
 </rsm:HeaderExchangedDocument>
 <rsm:SpecifiedSupplyChainTradeTransaction>
  <ram:ApplicableSupplyChainTradeAgreement>
   <ram:SellerTradeParty><ram:Name>Papierhandel Nord GmbH</ram:Name></ram:SellerTradeParty>
   <ram:BuyerOrderReferencedDocument><ram:ID>B-77</ram:ID></ram:BuyerOrderReferencedDocument>
  </ram:ApplicableSupplyChainTradeAgreement>
  <ram:ApplicableSupplyChainTradeSettlement><ram:InvoiceCurrencyCode>EUR</ram:InvoiceCurrencyCode>
   <ram:SpecifiedLogisticsServiceCharge><ram:Description>Versandkosten</ram:Description>
    <ram:AppliedAmount>5.90</ram:AppliedAmount></ram:SpecifiedLogisticsServiceCharge>
   <ram:SpecifiedTradeSettlementMonetarySummation>
    <ram:LineTotalAmount currencyID="EUR">24.00</ram:LineTotalAmount>
    <ram:TaxBasisTotalAmount currencyID="EUR">29.90</ram:TaxBasisTotalAmount>
    <ram:TaxTotalAmount currencyID="EUR">5.68</ram:TaxTotalAmount>
    <ram:GrandTotalAmount currencyID="EUR">35.58</ram:GrandTotalAmount>
   </ram:SpecifiedTradeSettlementMonetarySummation>
  </ram:ApplicableSupplyChainTradeSettlement>
  <ram:IncludedSupplyChainTradeLineItem>
   <ram:AssociatedDocumentLineDocument><ram:IncludedNote><ram:Content>Lieferung frei Haus</ram:Content>
   </ram:IncludedNote></ram:AssociatedDocumentLineDocument>
   <ram:SpecifiedSupplyChainTradeSettlement/>
  </ram:IncludedSupplyChainTradeLineItem>
  <ram:IncludedSupplyChainTradeLineItem>
   <ram:SpecifiedSupplyChainTradeAgreement><ram:NetPriceProductTradePrice>
    <ram:ChargeAmount currencyID="EUR">4.80</ram:ChargeAmount></ram:NetPriceProductTradePrice>
   </ram:SpecifiedSupplyChainTradeAgreement>
   <ram:SpecifiedSupplyChainTradeDelivery><ram:BilledQuantity unitCode="C62">5.0000</ram:BilledQuantity>
   </ram:SpecifiedSupplyChainTradeDelivery>
   <ram:SpecifiedSupplyChainTradeSettlement><ram:SpecifiedTradeSettlementMonetarySummation>
    <ram:LineTotalAmount currencyID="EUR">24.00</ram:LineTotalAmount></ram:SpecifiedTradeSettlementMonetarySummation>
   </ram:SpecifiedSupplyChainTradeSettlement>
   <ram:SpecifiedTradeProduct><ram:SellerAssignedID>KP-A4</ram:SellerAssignedID>
    <ram:Name>Kopierpapier A4</ram:Name></ram:SpecifiedTradeProduct>
  </ram:IncludedSupplyChainTradeLineItem>
 </rsm:SpecifiedSupplyChainTradeTransaction>
</rsm:CrossIndustryDocument>"""


def test_a_zugferd_1_invoice_is_read_through_the_cii_names() -> None:
    po = extract_xml(_ZUGFERD_1.encode())
    assert (po.source_format, po.document_type, po.po_number, po.supplier_name, po.order_date, po.currency) == (
        "cii", "invoice", "RE-1001", "Papierhandel Nord GmbH", dt.date(2014, 5, 12), "EUR")
    assert (po.subtotal, po.tax, po.shipping, po.total) == (
        Decimal("24.00"), Decimal("5.68"), Decimal("5.90"), Decimal("35.58"))
    assert po.stats["order_reference"] == "B-77"
    [line] = po.lines  # the note-only line item is left out
    assert (line.line_no, line.sku, line.description, line.quantity, line.unit_cost, line.line_total, line.unit) == (
        1, "KP-A4", "Kopierpapier A4", Decimal("5.0000"), Decimal("4.80"), Decimal("24.00"), "units")
    assert "NOTE_LINES_SKIPPED" in codes(po)
