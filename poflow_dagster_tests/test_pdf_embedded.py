"""The e-invoice XML embedded in hybrid PDFs (Factur-X, ZUGFeRD, XRechnung, Order-X): found, read, and refused
when it is not there, not XML, not an order/invoice, too large, damaged or encrypted."""

from __future__ import annotations

import json
import logging
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
from fpdf import FPDF

from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.extraction.pdf_embedded import MAX_EMBEDDED_BYTES, embedded_order_xml, extract_embedded
from poflow_dagster.samples.edi_documents import billion_laughs_xml, cii_invoice_xml

CORPUS = Path(__file__).parent / "corpus"
HEADER = ("po_number", "supplier_name", "order_date", "currency", "document_type", "subtotal", "tax", "shipping", "total")
LINE = ("sku", "quantity", "unit_cost", "line_total")
#: Hybrid PDFs whose embedded XML and printed page agree on the header and on each line's numbers.
AGREEING = [
    "mustangproject/ORDER-X_EX01_ORDER_FULL_DATA-COMFORT.pdf",
    "horstoeko-zugferd/pdf_zf_xrechnung_1.pdf",
    "mustangproject/MustangGnuaccountingBeispielRE-20170509_505.pdf",
]
CII_SAMPLE = min((CORPUS / "xrechnung-testsuite").glob("*_uncefact.xml"))


def _same(got: object, want: object) -> bool:
    """Equal, comparing decimal strings by value (``"20.0000"`` is ``"20"``)."""
    if isinstance(got, str) and isinstance(want, str):
        try:
            return Decimal(got) == Decimal(want)
        except ArithmeticError:
            return got == want
    return got == want


def _pdf(tmp_path: Path, *attachments: tuple[str, bytes], **options: object) -> Path:
    """A one-page PDF with the given (name, content) attachments."""
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="Invoice 42")
    for name, content in attachments:
        pdf.embed_file(bytes=content, basename=name, **options)
    out = tmp_path / "doc.pdf"
    pdf.output(str(out))
    return out


@pytest.mark.parametrize("name", AGREEING)
def test_corpus_hybrid_pdf_read_from_its_embedded_xml(name: str) -> None:
    path = CORPUS / name
    want = json.loads(Path(f"{path}.expected.json").read_text())["expected"]
    po = extract_embedded(path)
    assert po is not None
    got = po.to_contract()
    assert {k: got[k] for k in HEADER if not _same(got[k], want[k])} == {}
    assert len(got["lines"]) == len(want["lines"])
    for mine, theirs in zip(got["lines"], want["lines"], strict=True):
        assert {k: mine[k] for k in LINE if not _same(mine[k], theirs[k])} == {}
    assert (po.source_format, po.extractor) == ("pdf", "pdf_embedded_xml")
    issue = next(i for i in po.issues if i.code == "EMBEDDED_XML_READ")
    assert issue.severity == "info" and ".xml" in issue.message


def test_embedded_xml_is_the_cii_document() -> None:
    data = embedded_order_xml(CORPUS / "mustangproject/ORDER-X_EX01_ORDER_FULL_DATA-COMFORT.pdf")
    assert data is not None and b"SCRDMCCBDACIOMessageStructure" in data[:2000]


def test_pdf_without_attachments_gives_none(tmp_path: Path) -> None:
    path = _pdf(tmp_path)
    assert embedded_order_xml(path) is None
    assert extract_embedded(path) is None


def test_text_layer_only_corpus_pdf_gives_none() -> None:
    path = CORPUS / "invoice-printer-examples/simple_invoice.pdf"
    assert embedded_order_xml(path) is None


def test_round_trip_through_a_compressed_attachment(tmp_path: Path) -> None:
    data = CII_SAMPLE.read_bytes()
    path = _pdf(tmp_path, ("factur-x.xml", data), compress=True)
    assert embedded_order_xml(path) == data
    po = extract_embedded(path)
    assert po is not None and po.lines and po.extractor == "pdf_embedded_xml"


def test_xml_found_by_mime_subtype_when_the_name_does_not_say_xml(tmp_path: Path) -> None:
    data = CII_SAMPLE.read_bytes()
    assert embedded_order_xml(_pdf(tmp_path, ("invoice.dat", data), mime_type="text/xml")) == data


def test_non_xml_attachment_gives_none(tmp_path: Path) -> None:
    path = _pdf(tmp_path, ("notes.txt", b"Please deliver before Friday.\n"))
    assert embedded_order_xml(path) is None
    assert extract_embedded(path) is None


def test_cii_content_under_a_non_xml_name_and_type_is_ignored(tmp_path: Path) -> None:
    assert embedded_order_xml(_pdf(tmp_path, ("report.csv", CII_SAMPLE.read_bytes()))) is None


def test_xml_that_is_not_an_invoice_or_order_gives_none(tmp_path: Path) -> None:
    path = _pdf(tmp_path, ("factur-x.xml", b'<?xml version="1.0"?><catalog><item/></catalog>'))
    assert embedded_order_xml(path) is None


def test_malformed_xml_gives_none(tmp_path: Path) -> None:
    path = _pdf(tmp_path, ("factur-x.xml", CII_SAMPLE.read_bytes()[:-200]))
    assert embedded_order_xml(path) is None
    assert extract_embedded(path) is None


def test_unsafe_xml_gives_none(tmp_path: Path) -> None:
    assert embedded_order_xml(_pdf(tmp_path, ("factur-x.xml", billion_laughs_xml()))) is None


def test_oversize_xml_is_refused(tmp_path: Path) -> None:
    data = CII_SAMPLE.read_bytes()
    padded = data.replace(b"?>", b"?>" + b"<!--" + b" " * MAX_EMBEDDED_BYTES + b"-->", 1)
    assert padded.startswith(b"<?xml") and len(padded) > MAX_EMBEDDED_BYTES
    path = _pdf(tmp_path, ("factur-x.xml", padded), compress=True)
    assert path.stat().st_size < MAX_EMBEDDED_BYTES // 10  # a small file that inflates past the limit
    assert embedded_order_xml(path) is None
    assert extract_embedded(path) is None


def test_xml_reader_failure_gives_none_and_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _pdf(tmp_path, ("factur-x.xml", cii_invoice_xml()))  # a CII root with no line items
    assert embedded_order_xml(path) is not None
    with caplog.at_level(logging.WARNING, logger="poflow_dagster.extraction.pdf_embedded"):
        assert extract_embedded(path) is None
    assert any("factur-x.xml" in r.getMessage() and "no_line_items" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_damaged_pdf_gives_none_without_raising(tmp_path: Path, cut: float) -> None:
    data = (CORPUS / "horstoeko-zugferd/pdf_zf_xrechnung_1.pdf").read_bytes()
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes(data[: int(len(data) * cut)])
    found = embedded_order_xml(damaged)  # never raises
    assert found is None or b"CrossIndustryInvoice" in found
    po = extract_embedded(damaged)
    assert po is None or po.extractor == "pdf_embedded_xml"


def test_not_a_pdf_and_missing_file_give_none(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(zlib.compress(b"not a pdf at all" * 100))
    assert embedded_order_xml(junk) is None
    assert embedded_order_xml(tmp_path / "missing.pdf") is None


def test_encrypted_pdf_gives_none(tmp_path: Path) -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="Invoice 42")
    pdf.embed_file(bytes=CII_SAMPLE.read_bytes(), basename="factur-x.xml")
    pdf.set_encryption(owner_password="owner-secret")  # no user password: opens without one
    path = tmp_path / "encrypted.pdf"
    pdf.output(str(path))
    assert b"/Encrypt" in path.read_bytes()
    assert embedded_order_xml(path) is None
    assert extract_embedded(path) is None


def test_file_reference_outside_the_pdf_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "factur-x.xml").write_bytes(CII_SAMPLE.read_bytes())
    path = tmp_path / "external.pdf"
    path.write_bytes(_pdf_with_external_file_spec("factur-x.xml"))
    assert embedded_order_xml(path) is None


def _pdf_with_external_file_spec(target: str) -> bytes:
    """A minimal PDF whose EmbeddedFiles tree names a file specification without an embedded stream."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names [(x) 4 0 R] >> >> /AF [4 0 R] >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Type /Filespec /F (" + target.encode() + b") /UF (" + target.encode() + b") >>",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _po(**fields):  # type: ignore[no-untyped-def]
    from decimal import Decimal as D

    from poflow_dagster.domain.models import POLine

    lines = fields.pop("lines", [POLine(line_no=1, sku="A-1", quantity=D("3"), unit_cost=D("3.33"),
                                        line_total=D("10.00"), unit="stk")])
    return ParsedPO(lines=lines, **fields)


def test_combine_takes_the_xml_header_and_keeps_printed_lines_that_reconcile() -> None:
    from decimal import Decimal as D

    from poflow_dagster.domain.models import POLine
    from poflow_dagster.extraction.pdf_embedded import combine_with_text

    xml_line = POLine(line_no=1, sku=None, quantity=D("3"), unit_cost=D("3.3333"), line_total=D("10.00"),
                      unit="units")
    xml = _po(po_number="RE-1", supplier_name="Lieferant GmbH", subtotal=D("10.00"), tax=D("1.90"),
              total=D("11.90"), lines=[xml_line])
    text = _po(po_number="1", supplier_name=None, subtotal=D("10.00"), total=D("11.90"))  # misread number
    both = combine_with_text(xml, text)
    assert (both.po_number, both.supplier_name, both.tax) == ("RE-1", "Lieferant GmbH", D("1.90"))
    assert [(line.sku, line.unit) for line in both.lines] == [("A-1", "stk")]  # the page's lines
    assert not [issue for issue in both.issues if issue.severity == "error"]


def test_combine_uses_the_xml_lines_when_the_page_gave_none_and_distrusts_an_xml_that_does_not_add_up() -> None:
    from decimal import Decimal as D

    from poflow_dagster.domain.models import Issue
    from poflow_dagster.extraction.pdf_embedded import combine_with_text

    xml = _po(po_number="RE-2", subtotal=D("10.00"), total=D("10.00"))
    no_lines = _po(po_number="RE-2", lines=[], issues=[
        Issue(code="LINES_NOT_FOUND", severity="error", message="no lines")])
    assert [line.sku for line in combine_with_text(xml, no_lines).lines] == ["A-1"]
    wrong = _po(po_number="RE-3", subtotal=D("99.00"), total=D("99.00"))  # the XML's subtotal contradicts its lines
    text = _po(po_number="RE-3b", subtotal=D("10.00"), total=D("10.00"))
    kept = combine_with_text(wrong, text)
    assert kept.po_number == "RE-3b" and "EMBEDDED_XML_INCONSISTENT" in [issue.code for issue in kept.issues]


def test_extract_file_reads_a_hybrid_pdfs_xml_header_and_its_printed_lines() -> None:
    """Through the entry point: the embedded XML's header values (the page's text layer misreads some), the lines
    as printed, no error issue."""
    from poflow_dagster.extraction import extract_file

    path = CORPUS / "zugferd-corpus" / "ZUGFeRD_1p0_EXTENDED_Warenrechnung.pdf"
    expected = json.loads(path.with_name(path.name + ".expected.json").read_text())["expected"]
    po = extract_file(path)
    assert "EMBEDDED_XML_READ" in [issue.code for issue in po.issues]
    for name in ("po_number", "supplier_name", "currency", "total", "tax"):
        got = getattr(po, name)
        assert (str(got) if isinstance(got, Decimal) else got) == expected[name], name
    assert po.order_date.isoformat() == expected["order_date"]
    assert not [issue for issue in po.issues if issue.severity == "error"]
