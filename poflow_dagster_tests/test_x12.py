"""X12 850 extraction: every field compared with the spec the interchange was built from."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.extraction.sniff import detect_format
from poflow_dagster.extraction.x12 import extract_x12_850, read_delimiters, unit_of_measure
from poflow_dagster.samples.edi_documents import (
    PIPE_NEWLINE,
    STAR_TILDE,
    TILDE_CRLF,
    TILDE_ONE_LINE,
    ChargeSpec,
    LineSpec,
    OrderSpec,
    X12Style,
    isa_segment,
    sample_spec,
    x12_810,
    x12_810_segments,
    x12_850,
    x12_850_segments,
    x12_interchange,
)

STYLES = {
    "star-tilde": STAR_TILDE,
    "pipe-newline": PIPE_NEWLINE,
    "tilde-crlf": TILDE_CRLF,
    "one-line": TILDE_ONE_LINE,
    "4010-no-repetition": X12Style(repetition="U"),  # ISA11 is the standards id "U" before 00403
}


def assert_matches_spec(po: ParsedPO, spec: OrderSpec, *, skus: list[str] | None = None) -> None:
    """Header, totals and every line equal the spec (money and quantities as Decimal)."""
    assert (po.source_format, po.extractor) == ("x12", "x12_850")
    assert po.po_number == spec.po_number
    assert po.supplier_name == spec.supplier
    assert po.order_date == spec.order_date
    assert po.currency == spec.currency
    assert po.subtotal is None  # an 850 carries no subtotal
    assert po.tax == spec.tax
    assert po.shipping == spec.shipping
    assert po.total == spec.total
    for value in (po.tax, po.shipping, po.total):
        assert value is None or isinstance(value, Decimal)
    assert len(po.lines) == len(spec.lines)
    expected_skus = skus or [line.sku for line in spec.lines]
    for number, (line, want, sku) in enumerate(zip(po.lines, spec.lines, expected_skus, strict=True), start=1):
        assert line.line_no == number
        assert line.sku == sku and isinstance(line.sku, str)
        assert line.description == want.description
        assert line.quantity == want.quantity
        assert line.unit_cost == want.unit_price
        assert line.line_total == want.line_total
        assert all(isinstance(v, Decimal) for v in (line.quantity, line.unit_cost, line.line_total))
    assert po.stats["line_units"] == [line.uom for line in spec.lines]


def error_of(text: str) -> PoflowError:
    with pytest.raises(PoflowError) as info:
        extract_x12_850(text)
    assert "\n" not in info.value.message
    return info.value


def codes(po: ParsedPO) -> list[str]:
    return [issue.code for issue in po.issues]


# --- happy paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES.values(), ids=STYLES.keys())
def test_every_field_matches_the_spec(style: X12Style) -> None:
    spec = sample_spec()
    po = extract_x12_850(x12_850(spec, style))
    assert_matches_spec(po, spec)
    assert po.issues == []
    assert po.stats["delimiters"]["element"] == style.element
    assert po.stats["delimiters"]["segment"] == style.segment


def test_separators_come_from_the_isa_segment() -> None:
    style = X12Style(element="^", component=":", segment="!", repetition="{", newline="\r\n")
    delimiters = read_delimiters(isa_segment(style))
    assert (delimiters.element, delimiters.component, delimiters.segment, delimiters.repetition) == ("^", ":", "!", "{")
    spec = sample_spec()
    assert_matches_spec(extract_x12_850(x12_850(spec, style)), spec)


def test_zero_padded_skus_stay_strings() -> None:
    spec = sample_spec(lines=(LineSpec("0000000450", "Padded", Decimal("1"), Decimal("2.00")),))
    po = extract_x12_850(x12_850(spec))
    assert po.lines[0].sku == "0000000450"


def test_sku_prefers_vendor_part_then_sk_bp_in_up() -> None:
    spec = sample_spec(
        lines=(
            LineSpec("V-001", "vendor part last", Decimal("1"), Decimal("1.00"),
                     other_ids=(("UP", "012345678905"), ("BP", "B-1"), ("SK", "S-1"))),
            LineSpec("S-002", "sku beats buyer part", Decimal("1"), Decimal("1.00"), sku_qualifier="SK",
                     other_ids=(("UP", "012345678912"), ("BP", "B-2"))),
            LineSpec("0001234", "IN beats UP", Decimal("1"), Decimal("1.00"), sku_qualifier="IN",
                     other_ids=(("UP", "012345678929"),)),
            LineSpec("012345678936", "UPC alone", Decimal("1"), Decimal("1.00"), sku_qualifier="UP"),
            LineSpec("MFG-77", "unknown qualifier only", Decimal("1"), Decimal("1.00"), sku_qualifier="MG"),
        ),
        tax=None,
        shipping=None,
    )
    assert_matches_spec(extract_x12_850(x12_850(spec)), spec)


def test_dtm_004_is_the_fallback_order_date() -> None:
    spec = sample_spec(order_date=dt.date(2023, 12, 31))
    po = extract_x12_850(x12_850(spec, date_in="DTM"))
    assert po.order_date == spec.order_date  # not the DTM*002 delivery date two weeks later


def test_vendor_n1_is_the_supplier_when_there_is_no_selling_party() -> None:
    spec = sample_spec(supplier="Acme Wholesale (VN)")
    po = extract_x12_850(x12_850(spec, supplier_qualifier="VN"))
    assert po.supplier_name == spec.supplier


def test_price_per_hundred_is_converted_to_a_unit_price() -> None:
    spec = sample_spec()
    po = extract_x12_850(x12_850(spec, price_basis="HP"))
    assert_matches_spec(po, spec)
    assert codes(po) == ["PRICE_BASIS_CONVERTED"] * len(spec.lines)


def test_non_freight_charges_are_the_pos_charges_and_named() -> None:
    spec = sample_spec(other_charges=(ChargeSpec("INSURANCE", Decimal("7.25")),))
    po = extract_x12_850(x12_850(spec))
    assert_matches_spec(po, spec)  # shipping is the freight charge only
    assert po.charges == Decimal("7.25") and po.discount is None
    (issue,) = po.issues
    assert issue.code == "DOCUMENT_ALLOWANCES_CHARGES" and "D980" in issue.message and "7.25" in issue.message


def test_sac_amount_with_an_explicit_decimal_point_is_read_as_written() -> None:
    spec = sample_spec(shipping=Decimal("12.50"))
    text = x12_850(spec).replace("SAC*C*D240***1250*", "SAC*C*D240***12.50*")
    assert extract_x12_850(text).shipping == spec.shipping


def test_missing_amounts_stay_none() -> None:
    spec = sample_spec(tax=None, shipping=None)
    po = extract_x12_850(x12_850(spec, amt_total=False))
    assert (po.tax, po.shipping, po.total) == (None, None, None)


def test_repetition_separator_is_not_a_delimiter() -> None:
    spec = sample_spec(lines=(LineSpec("000777", "Tea towel ^ holder", Decimal("3"), Decimal("1.10")),))
    po = extract_x12_850(x12_850(spec, STAR_TILDE))
    assert po.lines[0].description == "Tea towel ^ holder"


def test_leading_bom_and_whitespace_are_tolerated() -> None:
    spec = sample_spec()
    assert_matches_spec(extract_x12_850("\ufeff \r\n" + x12_850(spec)), spec)


def test_sniff_detects_both_separator_styles(tmp_path: Path) -> None:
    for name, style in STYLES.items():
        path = tmp_path / f"{name}.edi"
        path.write_text(x12_850(sample_spec(), style), newline="")
        assert detect_format(path) == "edi", name


# --- issues -----------------------------------------------------------------------------------


def test_ctt_disagreeing_with_po1_count_is_an_error_issue() -> None:
    spec = sample_spec()
    po = extract_x12_850(x12_850(spec, ctt_count=len(spec.lines) + 2))
    assert_matches_spec(po, spec)  # lines are still extracted faithfully
    (issue,) = po.issues
    assert issue.code == "LINE_COUNT_MISMATCH" and issue.severity == "error"
    assert str(len(spec.lines)) in issue.message and str(len(spec.lines) + 2) in issue.message


def test_first_850_is_read_and_other_sets_are_ignored_with_an_info_issue() -> None:
    first, second = sample_spec(), sample_spec(po_number="PO-SECOND", supplier="Someone Else")
    text = x12_interchange(
        [("810", x12_810_segments(second)), ("850", x12_850_segments(first)), ("850", x12_850_segments(second))]
    )
    po = extract_x12_850(text)
    assert_matches_spec(po, first)
    (issue,) = po.issues
    assert issue.code == "TRANSACTION_SETS_IGNORED" and issue.severity == "info"
    assert "ignored 2" in issue.message and "ST*810" in issue.message


def test_unreadable_quantity_is_reported_and_left_empty() -> None:
    spec = sample_spec()
    text = x12_850(spec).replace("PO1*001*24*", "PO1*001*2x4*")
    po = extract_x12_850(text)
    assert po.lines[0].quantity is None and po.lines[0].line_total is None
    assert codes(po) == ["UNREADABLE_NUMBER"]


# --- errors -----------------------------------------------------------------------------------


def test_an_810_invoice_is_an_unsupported_transaction() -> None:
    error = error_of(x12_810(sample_spec()))
    assert error.code == "unsupported_edi_transaction"
    assert "ST*810" in error.message and "invoice" in error.message


def test_no_isa_is_malformed() -> None:
    text = x12_850(sample_spec())
    error = error_of(text[text.index("GS*"):])
    assert error.code == "malformed_edi" and "ISA" in error.message


def test_isa_shorter_than_106_characters_is_malformed() -> None:
    text = x12_850(sample_spec()).replace("*          *", "**", 1)  # ISA02 not space-padded
    assert error_of(text).code == "malformed_edi"
    assert error_of(isa_segment(STAR_TILDE)[:80]).code == "malformed_edi"


def test_no_st_is_malformed() -> None:
    text = x12_interchange([])
    error = error_of(text)
    assert error.code == "malformed_edi" and "ST" in error.message


def test_no_beg_is_malformed() -> None:
    body = [seg for seg in x12_850_segments(sample_spec()) if seg[0] != "BEG"]
    error = error_of(x12_interchange([("850", body)]))
    assert error.code == "malformed_edi" and "BEG" in error.message


def test_an_850_without_po1_has_no_line_items() -> None:
    body = [seg for seg in x12_850_segments(sample_spec()) if seg[0] not in ("PO1", "PID")]
    assert error_of(x12_interchange([("850", body)])).code == "no_line_items"


def test_garbage_never_escapes_as_a_raw_exception() -> None:
    for text in ("", "ISA", "ISA*" + "x" * 200, "ISA*00*" + "*" * 120, isa_segment(STAR_TILDE) + "ST*850~BEG~"):
        with pytest.raises(PoflowError):
            extract_x12_850(text)


# --- document type, units and the line item total (real 850s in the corpus) ----------------------------------

CORPUS = Path(__file__).parent / "corpus" / "edi-engine"


def test_an_850_is_a_purchase_order_with_its_units_read() -> None:
    spec = sample_spec()
    po = extract_x12_850(x12_850(spec))
    assert po.document_type == "purchase_order"
    assert [line.unit for line in po.lines] == ["units", "cases", "lb"]  # PO103 EA, CA, LB
    assert po.stats["line_units"] == ["EA", "CA", "LB"]  # the codes as sent


@pytest.mark.parametrize(("code", "unit"), [("EA", "units"), ("pc", "units"), ("KG", "kg"), ("DZ", "dozen"),
                                            ("BG", "bg"), ("", None)])
def test_po103_codes_read_as_units(code: str, unit: str | None) -> None:
    assert unit_of_measure(code) == unit


def test_amt_1_line_item_total_is_the_subtotal_and_the_total_without_amt_tt() -> None:
    po = extract_x12_850((CORPUS / "850.OK.edi").read_text())
    assert (po.po_number, po.order_date) == ("08292233294", dt.date(2010, 11, 27))
    assert po.subtotal == po.total == Decimal("13045.94") == sum(line.line_total for line in po.lines)
    assert [(line.sku, line.description, line.unit) for line in po.lines[:2]] == [
        ("AB3542", "SMALL WIDGET", "units"), ("RD5322", "MEDIUM WIDGET", "units")]
    assert po.issues == []


def test_amt_tt_stays_the_total_next_to_amt_1() -> None:
    spec = sample_spec()
    text = x12_850(spec, STAR_TILDE).replace("AMT*TT*", "AMT*1*999.99~AMT*TT*", 1)
    assert "AMT*1*999.99~" in text
    po = extract_x12_850(text)
    assert (po.subtotal, po.total) == (Decimal("999.99"), spec.total)


def test_sln_sub_lines_are_not_ordered_lines() -> None:
    po = extract_x12_850((CORPUS / "850.Composite.SLN.OK.edi").read_text())
    assert [line.sku for line in po.lines] == ["AB3542", "RD5322"]
    assert [line.quantity for line in po.lines] == [Decimal("120"), Decimal("220")]


def test_an_interchange_wrapped_into_80_character_lines_is_read() -> None:
    spec = sample_spec()
    flat = x12_850(spec, TILDE_ONE_LINE)
    wrapped = "\r\n".join(flat[i:i + 80] for i in range(0, len(flat), 80))
    assert "\r\n" in wrapped[:106]  # the break falls inside the ISA segment
    po = extract_x12_850(wrapped)
    assert_matches_spec(po, spec)
    assert [issue.code for issue in po.issues] == ["LINE_BREAKS_REMOVED"]


def test_a_wrapped_file_without_an_isa_keeps_the_first_error() -> None:
    assert "must start with ISA" in error_of("GS*PO*A*B\r\nST*850*1~").message


def test_a_line_sac_allowance_is_the_discount_and_a_price_per_pound_leaves_the_amount_open() -> None:
    po = extract_x12_850((Path(__file__).parent / "corpus" / "bots-plugins" / "850-004010-18.x12").read_text())
    first, second = po.lines
    assert (first.quantity, first.unit_cost, first.discount, first.line_total, first.unit) == (
        Decimal("20"), Decimal("226.56"), Decimal("451.20"), Decimal("4080.00"), "cases")
    assert first.description == "GROCERY ITEM DESCRIPTION 24/360 ML"  # runs of spaces collapsed
    assert (second.unit_cost, second.line_total, second.discount) == (Decimal("2.82"), None, None)
    assert [issue.code for issue in po.issues] == ["PRICE_PER_WEIGHT"]


def test_a_line_sac_charge_outweighing_its_allowances_is_reported_not_applied() -> None:
    spec = sample_spec()
    text = x12_850(spec, STAR_TILDE)
    first_pid = text.index("PID*")
    text = text[:first_pid] + "SAC*C*D500***300~" + text[first_pid:]
    po = extract_x12_850(text)
    assert po.lines[0].discount is None and po.lines[0].line_total == spec.lines[0].line_total
    assert "LINE_CHARGES_IGNORED" in [issue.code for issue in po.issues]


def test_control_characters_named_as_delimiters_in_isa_are_an_x12_file_not_binary(tmp_path: Path) -> None:
    """FS / GS as segment terminator and element separator (a common choice of real trading partners): the
    ISA segment names them, so the file is EDI and reads like its tilde-star twin."""
    from poflow_dagster.extraction import extract_file

    spec = sample_spec()
    plain = x12_850(spec)
    controlled = plain.replace("~", "\x1c").replace("*", "\x1d")
    path = tmp_path / "po.edi"
    path.write_text(controlled, encoding="ascii")
    assert detect_format(path) == "edi"
    assert_matches_spec(extract_file(path), spec)
    binary = tmp_path / "junk.edi"  # control characters elsewhere still mean binary
    binary.write_text("GS\x1c" + "\x1d\x1e\x1f" * 50 + plain, encoding="ascii")
    assert detect_format(binary) == "unknown"
