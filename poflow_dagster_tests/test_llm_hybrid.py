"""The hybrid: a text PDF read deterministically, completed by the LLM only where the reading falls short.

Through the real ``openai`` client (``OPENAI_BASE_URL``) against the local chat-completions server, whose
answers are realistic and sometimes wrong or partial (a wrong unit price, a dropped line, a missing total);
the merge rules also on hand-made readings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import POLine, ParsedPO
from poflow_dagster.domain.reconcile import needs_review, reconcile
from poflow_dagster.extraction import extract_file
from poflow_dagster.extraction.hybrid import LINES_NOT_FOUND, gaps, merge
from poflow_dagster.extraction.llm import LLMSettings
from poflow_dagster.samples.pdf_documents import make_scanned_pdf, make_text_po_pdf, simple_po_spec
from poflow_dagster_tests.openai_server import (
    API_KEY,
    OpenAIServer,
    Reply,
    image_urls,
    request_text,
    start_openai_server,
)

#: What the simple PO prints (pdf_documents.simple_po_spec): sku, description, quantity, unit cost, line total.
SIMPLE_LINES = [("00123", "Blue widget, 10 mm", "5", "12.50", "62.50"),
                ("B-2", "Industrial gadget", "1", "1234.56", "1234.56"),
                ("000987", "Shipping box, large", "10", "0.85", "8.50"),
                ("HX-44", "Total care kit", "3", "19.99", "59.97")]


def llm_line(sku: str, description: str, quantity: str, unit_cost: str, line_total: str) -> dict[str, Any]:
    return {"sku": sku, "barcode": None, "description": description, "quantity": quantity, "unit_cost": unit_cost,
            "line_total": line_total, "unit": None, "discount": None, "confidence": 0.92}


def llm_answer(lines: list[tuple[str, ...]], **fields: Any) -> dict[str, Any]:
    """A model's answer for the simple PO: its header, totals and ``lines``, with ``fields`` changed."""
    answer = {"po_number": "PO-1001", "supplier_name": "Acme Supplies Ltd", "order_date": "2026-02-14",
              "currency": "USD", "document_type": "purchase_order", "prices_include_tax": None,
              "subtotal": "1365.53", "tax": "109.64", "shipping": "25.00", "total": "1500.17", "confidence": 0.9,
              "lines": [llm_line(*line) for line in lines]}
    return {**answer, **fields}


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    with start_openai_server() as server:
        yield server


@pytest.fixture
def llm(openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> LLMSettings:
    """Settings as the pipeline builds them: from OPENAI_API_KEY / OPENAI_BASE_URL, no retries."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("POFLOW_LLM_MAX_RETRIES", "0")
    monkeypatch.delenv("POFLOW_LLM_PRICES", raising=False)
    monkeypatch.delenv("POFLOW_LLM_MODEL", raising=False)
    settings = LLMSettings.from_env()
    assert settings is not None
    return settings


def undated_po(tmp_path: Path) -> Path:
    """The simple PO with its date left blank: the text reader finds everything else."""
    return make_text_po_pdf(tmp_path / "undated.pdf", dataclasses.replace(simple_po_spec(), date_text=""))


def test_a_reading_that_reconciles_never_calls_the_llm(openai_server: OpenAIServer, llm: LLMSettings,
                                                       tmp_path: Path) -> None:
    openai_server.behaviour = lambda body: Reply.json(llm_answer(SIMPLE_LINES))
    po = extract_file(make_text_po_pdf(tmp_path / "po.pdf", simple_po_spec()), llm=llm)
    assert openai_server.completion_requests() == []
    assert po.extractor == "pdf_text" and "hybrid" not in po.stats and len(po.lines) == 4
    assert not needs_review(po)


def test_a_missing_date_comes_from_the_llm_whose_wrong_price_and_missing_total_are_ignored(
    openai_server: OpenAIServer, llm: LLMSettings, tmp_path: Path
) -> None:
    wrong_price = [*SIMPLE_LINES]
    wrong_price[1] = ("B-2", "Industrial gadget", "1", "1243.56", "1234.56")  # digits swapped by the model
    openai_server.behaviour = lambda body: Reply.json(
        llm_answer(wrong_price, total=None, po_number="PO-1O01"), prompt_tokens=1200, completion_tokens=300)

    po = extract_file(undated_po(tmp_path), llm=llm)

    [request] = openai_server.completion_requests()
    assert image_urls(request.body) == [] and "Acme Supplies Ltd" in request_text(request.body)  # sent as text
    assert po.order_date == dt.date(2026, 2, 14) and po.po_number == "PO-1001"  # the text reader's number stays
    assert [line.unit_cost for line in po.lines] == [Decimal(line[3]) for line in SIMPLE_LINES]
    assert po.total == Decimal("1500.17") and po.document_type == "purchase_order"
    hybrid = po.stats["hybrid"]
    assert hybrid["asked_because"] == ["missing order_date"]
    assert hybrid["sources"]["order_date"] == "llm" and hybrid["sources"]["lines"] == "deterministic"
    assert hybrid["sources"]["po_number"] == hybrid["sources"]["total"] == "deterministic"
    assert (hybrid["prompt_tokens"], hybrid["completion_tokens"]) == (1200, 300)
    assert hybrid["cost"] == "0.00036"  # gpt-4o-mini: 1200 x 0.00015 + 300 x 0.0006 per 1K
    assert po.extractor == "pdf_text+llm" and not needs_review(po)
    [note] = [issue for issue in po.issues if issue.code == "LLM_COMPLETED"]
    assert note.severity == "info" and "order_date" in note.message and "lines" not in note.message


def test_a_failing_llm_leaves_the_text_reading_with_a_warning(openai_server: OpenAIServer, llm: LLMSettings,
                                                              tmp_path: Path) -> None:
    openai_server.behaviour = lambda body: Reply.error(503)
    po = extract_file(undated_po(tmp_path), llm=llm)
    assert len(openai_server.completion_requests()) == 1
    assert len(po.lines) == 4 and po.order_date is None and po.extractor == "pdf_text"
    [warning] = [issue for issue in po.issues if issue.code == "LLM_FAILED"]
    assert warning.severity == "warning" and "llm_unavailable" in warning.message


def test_a_scan_goes_to_the_llm_as_images(openai_server: OpenAIServer, llm: LLMSettings, tmp_path: Path) -> None:
    openai_server.behaviour = lambda body: Reply.json(llm_answer(SIMPLE_LINES))
    po = extract_file(make_scanned_pdf(tmp_path / "scan.pdf", pages=2), llm=llm)
    requests = openai_server.completion_requests()
    assert requests and all(len(image_urls(r.body)) >= 1 for r in requests)
    assert sum(len(image_urls(r.body)) for r in requests) == 2
    assert "PO Number" not in "".join(request_text(r.body) for r in requests)  # no text layer was sent
    assert po.extractor == "llm" and "hybrid" not in po.stats


def paragraph_po(path: Path) -> Path:
    """A PO whose header is labelled but whose items are written as one paragraph (no table)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, "PURCHASE ORDER", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    for text in ("PO Number: PO-7731", "Supplier: Northwind Traders", "Order Date: 2026-03-14", "Currency: EUR"):
        pdf.cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.multi_cell(0, 6, "Please supply twelve boxes of A4 copy paper, article PAP-A4, at 4.50 each, and three desk "
                         "lamps, article LMP-3, at 19.90 each. Deliver to our Leeds warehouse.")
    pdf.ln(4)
    pdf.cell(0, 7, "Total: 113.70", new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


PARAGRAPH_ANSWER = {"po_number": "PO-7731", "supplier_name": "Northwind Traders", "order_date": "2026-03-14",
                    "currency": "EUR", "document_type": "purchase_order", "prices_include_tax": None,
                    "subtotal": None, "tax": None, "shipping": None, "total": "113.70", "confidence": 0.9,
                    "lines": [llm_line("PAP-A4", "A4 copy paper", "12", "4.50", "54.00"),
                              llm_line("LMP-3", "Desk lamp", "3", "19.90", "59.70")]}


def test_lines_written_as_prose_are_read_by_the_llm(openai_server: OpenAIServer, llm: LLMSettings,
                                                   tmp_path: Path) -> None:
    openai_server.behaviour = lambda body: Reply.json(PARAGRAPH_ANSWER)
    po = extract_file(paragraph_po(tmp_path / "prose.pdf"), llm=llm)
    [request] = openai_server.completion_requests()
    assert image_urls(request.body) == [] and "PAP-A4" in request_text(request.body)
    assert [(line.sku, line.quantity, line.line_total) for line in po.lines] == [
        ("PAP-A4", Decimal("12"), Decimal("54.00")), ("LMP-3", Decimal("3"), Decimal("59.70"))]
    assert po.po_number == "PO-7731" and po.total == Decimal("113.70") and not needs_review(po)


def test_a_dropped_line_in_the_llm_answer_is_flagged_for_review(openai_server: OpenAIServer, llm: LLMSettings,
                                                                tmp_path: Path) -> None:
    dropped = {**PARAGRAPH_ANSWER, "lines": PARAGRAPH_ANSWER["lines"][:1]}
    openai_server.behaviour = lambda body: Reply.json(dropped)
    po = extract_file(paragraph_po(tmp_path / "prose.pdf"), llm=llm)
    assert len(po.lines) == 1 and needs_review(po)
    assert [issue.code for issue in po.issues if issue.severity == "error"] == ["TOTAL_MISMATCH"]


# --- the merge rules on hand-made readings -------------------------------------------------------


def reading(lines: list[tuple[str, str, str, str]], *, extractor: str = "pdf_text", **fields: Any) -> ParsedPO:
    """A reconciled reading of ``lines`` (sku, quantity, unit cost, line total) with header ``fields``."""
    po = ParsedPO(extractor=extractor, source_format="pdf", **fields, lines=[
        POLine(line_no=n, sku=sku, quantity=Decimal(q), unit_cost=Decimal(u), line_total=Decimal(t))
        for n, (sku, q, u, t) in enumerate(lines, start=1)])
    return reconcile(po)


RIGHT = [("A-1", "2", "10.00", "20.00"), ("B-2", "3", "5.00", "15.00")]
HEADER = {"po_number": "PO-5", "supplier_name": "Acme", "order_date": dt.date(2026, 1, 5)}


def llm_reading(lines: list[tuple[str, str, str, str]], **fields: Any) -> ParsedPO:
    po = reading(lines, extractor="llm", confidence=0.9, **fields)
    po.stats = {"prompt_tokens": 900, "completion_tokens": 120, "cost": "0.000207", "windows": 1, "pages": 1}
    return po


def test_lines_that_do_not_reconcile_are_replaced_by_the_llm_lines_that_do() -> None:
    wrong_price = [("A-1", "2", "11.00", "20.00"), RIGHT[1]]
    deterministic = reading(wrong_price, **HEADER, subtotal=Decimal("35.00"))
    assert gaps(deterministic) == ["line_amount_mismatch"]
    merged = reconcile(merge(deterministic, llm_reading(RIGHT, subtotal=Decimal("35.00")), why=gaps(deterministic)))
    assert [line.unit_cost for line in merged.lines] == [Decimal("10.00"), Decimal("5.00")]
    assert merged.stats["hybrid"]["sources"]["lines"] == "llm" and not needs_review(merged)
    assert merged.stats["prompt_tokens"] == 900 and merged.stats["cost"] == "0.000207"


def test_deterministic_lines_that_reconcile_beat_an_llm_that_dropped_one() -> None:
    deterministic = reading(RIGHT, po_number="PO-5", subtotal=Decimal("35.00"))  # no supplier, no date
    llm = llm_reading(RIGHT[:1], supplier_name="Acme", order_date=dt.date(2026, 1, 5), subtotal=Decimal("35.00"))
    merged = reconcile(merge(deterministic, llm, why=gaps(deterministic)))
    assert [line.sku for line in merged.lines] == ["A-1", "B-2"] and merged.supplier_name == "Acme"
    assert merged.stats["hybrid"]["sources"] == {"po_number": "deterministic", "supplier_name": "llm",
                                                 "order_date": "llm", "subtotal": "deterministic",
                                                 "lines": "deterministic"}
    assert not needs_review(merged)


def test_a_misread_subtotal_is_taken_from_the_llm_when_its_subtotal_fits_the_lines() -> None:
    deterministic = reading(RIGHT, **HEADER, subtotal=Decimal("53.00"))
    merged = reconcile(merge(deterministic, llm_reading(RIGHT, subtotal=Decimal("35.00")), why=["subtotal_mismatch"]))
    assert merged.subtotal == Decimal("35.00") and merged.stats["hybrid"]["sources"]["subtotal"] == "llm"
    assert merged.stats["hybrid"]["sources"]["lines"] == "deterministic" and not needs_review(merged)


def test_when_neither_reading_reconciles_the_text_lines_stay_and_a_person_reviews() -> None:
    deterministic = reading(RIGHT, **HEADER, total=Decimal("99.00"))
    merged = reconcile(merge(deterministic, llm_reading(RIGHT[:1], total=Decimal("98.00")), why=["total_mismatch"]))
    assert [line.sku for line in merged.lines] == ["A-1", "B-2"] and merged.total == Decimal("99.00")
    assert [issue.code for issue in merged.issues if issue.severity == "error"] == ["TOTAL_MISMATCH"]


def test_an_llm_without_a_total_keeps_the_text_total() -> None:
    deterministic = reading([], **HEADER, total=Decimal("35.00"))
    merged = reconcile(merge(deterministic, llm_reading(RIGHT), why=["no lines"]))
    assert merged.total == Decimal("35.00") and merged.stats["hybrid"]["sources"]["total"] == "deterministic"
    assert merged.stats["hybrid"]["sources"]["lines"] == "llm" and not needs_review(merged)


def test_no_lines_in_either_reading_is_lines_not_found() -> None:
    merged = merge(reading([], **HEADER), llm_reading([]), why=["no lines"])
    [issue] = [issue for issue in merged.issues if issue.severity == "error"]
    assert issue.code == LINES_NOT_FOUND and "not even by the LLM" in issue.message and merged.po_number == "PO-5"


def test_kept_lines_get_the_values_they_lack_from_the_llm_lines_that_agree() -> None:
    deterministic = reading(RIGHT, **HEADER, subtotal=Decimal("35.00"))
    deterministic.lines = [line.model_copy(update={"line_total": None, "sku": None}) for line in deterministic.lines]
    merged = reconcile(merge(deterministic, llm_reading(RIGHT, subtotal=Decimal("35.00")), why=["missing sku"]))
    assert [(line.sku, line.line_total) for line in merged.lines] == [("A-1", Decimal("20.00")), ("B-2", Decimal("15.00"))]
    assert merged.stats["hybrid"]["sources"]["lines"] == "deterministic"
    assert merged.stats["hybrid"]["line_values_filled"] == 4


def test_lines_with_fewer_mismatches_win_when_neither_reading_fully_reconciles() -> None:
    garbled = [("A-1", "19", "10.00", "190.00")]  # the text reader joined two rows
    deterministic = reading(garbled, **HEADER, subtotal=Decimal("35.00"), total=Decimal("99.00"))
    llm = llm_reading(RIGHT, subtotal=Decimal("35.00"), total=Decimal("41.00"))  # total off: a charge not read
    merged = reconcile(merge(deterministic, llm, why=["subtotal_mismatch", "total_mismatch"]))
    assert [line.sku for line in merged.lines] == ["A-1", "B-2"] and merged.total == Decimal("99.00")  # a tie: kept
    assert merged.stats["hybrid"]["sources"]["lines"] == "llm"
    assert [issue.code for issue in merged.issues if issue.severity == "error"] == ["TOTAL_MISMATCH"]


def test_the_pipeline_completes_a_hybrid_reading_made_across_the_sandbox(
    openai_server: OpenAIServer, llm: LLMSettings, home, db, shop, instance, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """po_job parses in the sandbox child: the text reading crosses to this process with the pages, is
    completed by the LLM here, and the run ends completed with the LLM's usage in the stage metadata."""
    from poflow_dagster.definitions import defs
    from poflow_dagster.intake import upload_file
    from poflow_dagster.pipeline.local import run_upload
    from poflow_dagster.store.workflow import status_report

    monkeypatch.setenv("POFLOW_EXTRACT_SANDBOX", "1")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # the home fixture clears it
    openai_server.behaviour = lambda body: Reply.json(llm_answer(SIMPLE_LINES), prompt_tokens=800, completion_tokens=90)
    upload = upload_file(db, home, "acme", undated_po(tmp_path))
    result = run_upload(defs, instance, db, upload.id, with_images=False)

    assert result.success, result.error
    assert status_report(db, upload.id).workflow.status == "completed" and len(openai_server.completion_requests()) == 1
    assert result.summary["line_count"] == 4 and result.summary["po_number"] == "PO-1001"
    parsing = next(
        e.dagster_event.event_specific_data.metadata
        for e in instance.all_logs(result.run_id)
        if e.is_dagster_event and e.dagster_event.is_successful_output and e.dagster_event.step_key.endswith("ai_parsing")
    )
    assert parsing["extractor"].value == "pdf_text+llm"
    assert parsing["extraction_prompt_tokens"].value == 800 and parsing["extraction_completion_tokens"].value == 90


def test_a_csv_without_an_item_table_goes_to_the_llm_as_text(openai_server: OpenAIServer, llm: LLMSettings,
                                                             tmp_path: Path) -> None:
    path = tmp_path / "note.csv"
    path.write_text("PO Number,PO-7731\nSupplier,Northwind Traders\n"
                    "Note,Please send twelve boxes of A4 copy paper PAP-A4 at 4.50 and three desk lamps LMP-3 at 19.90\n")
    with pytest.raises(PoflowError) as error:  # offline: nothing to read it with
        extract_file(path)
    assert error.value.code == "no_line_items"
    openai_server.behaviour = lambda body: Reply.json(PARAGRAPH_ANSWER)
    po = extract_file(path, llm=llm)
    [request] = openai_server.completion_requests()
    assert image_urls(request.body) == [] and "LMP-3" in request_text(request.body)
    assert [line.sku for line in po.lines] == ["PAP-A4", "LMP-3"] and po.source_format == "csv"


@pytest.mark.parametrize("sandbox", ["1", "0"])
def test_bounded_extraction_merges_the_child_reading_in_the_parent(
    openai_server: OpenAIServer, llm: LLMSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: str
) -> None:
    from poflow_dagster.extraction import extract_file_bounded

    monkeypatch.setenv("POFLOW_EXTRACT_SANDBOX", sandbox)
    openai_server.behaviour = lambda body: Reply.json(llm_answer(SIMPLE_LINES[:2]))  # a partial answer
    po = extract_file_bounded(undated_po(tmp_path), llm=llm)
    assert len(openai_server.completion_requests()) == 1
    assert po.order_date == dt.date(2026, 2, 14) and len(po.lines) == 4  # the text reader's four lines stay
    assert po.stats["hybrid"]["sources"]["lines"] == "deterministic" and not needs_review(po)


def mixed_po(path: Path) -> Path:
    """Page 1: a text header; page 2: the item table as a scanned image (no text layer)."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw, ImageFont

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, "PURCHASE ORDER", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    for text in ("PO Number: PO-7731", "Supplier: Northwind Traders", "Order Date: 2026-03-14", "Total: 113.70"):
        pdf.cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
    scan = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(scan)
    for row, text in enumerate(["SKU  Description  Qty  Price  Amount", "PAP-A4  A4 copy paper  12  4.50  54.00",
                                "LMP-3  Desk lamp  3  19.90  59.70"]):
        draw.text((100, 100 + row * 48), text, fill=0, font=ImageFont.load_default(size=30))
    pdf.add_page()
    pdf.image(scan, x=0, y=0, w=210)
    pdf.output(str(path))
    return path


def test_a_scanned_page_inside_a_text_pdf_goes_as_an_image_the_text_pages_as_text(
    openai_server: OpenAIServer, llm: LLMSettings, tmp_path: Path
) -> None:
    openai_server.behaviour = lambda body: Reply.json(PARAGRAPH_ANSWER)
    po = extract_file(mixed_po(tmp_path / "mixed.pdf"), llm=llm)
    [request] = openai_server.completion_requests()
    assert len(image_urls(request.body)) == 1  # page 2, rendered
    text = request_text(request.body)
    assert "--- page 1 ---" in text and "PO-7731" in text and "--- page 2 (image) ---" in text
    assert [line.sku for line in po.lines] == ["PAP-A4", "LMP-3"] and po.po_number == "PO-7731"
    assert po.stats["hybrid"]["sources"]["lines"] == "llm" and not needs_review(po)


def test_a_failing_llm_on_a_header_without_lines_leaves_it_for_a_person(
    openai_server: OpenAIServer, llm: LLMSettings, tmp_path: Path
) -> None:
    openai_server.behaviour = lambda body: Reply.error(503)
    po = extract_file(paragraph_po(tmp_path / "prose.pdf"), llm=llm)
    assert po.po_number == "PO-7731" and po.lines == [] and needs_review(po)
    codes = {issue.code: issue for issue in po.issues}
    assert codes["LLM_FAILED"].severity == "warning" and "llm_unavailable" in codes["LLM_FAILED"].message
    assert codes[LINES_NOT_FOUND].severity == "error" and "could not be asked" in codes[LINES_NOT_FOUND].message


def test_on_a_tie_the_lines_whose_numbers_can_be_checked_win() -> None:
    unchecked = [("A-1", "2", "10.50", "20.00"), ("B-2", "3", "5.25", "15.00")]  # gross prices read as unit costs
    deterministic = reading(unchecked, po_number="PO-5", supplier_name="Acme")
    deterministic.lines = [line.model_copy(update={"quantity": None}) for line in deterministic.lines]
    merged = reconcile(merge(deterministic, llm_reading(RIGHT, subtotal=Decimal("35.00")), why=["missing order_date"]))
    assert merged.stats["hybrid"]["sources"]["lines"] == "llm"  # 0 mismatches each; the LLM's pass 3 checks, not 1
    assert [(line.quantity, line.unit_cost) for line in merged.lines] == [(Decimal("2"), Decimal("10.00")),
                                                                        (Decimal("3"), Decimal("5.00"))]


def test_the_models_plain_decimals_are_taken_as_written() -> None:
    from poflow_dagster.extraction.llm_schema import LLMExtraction, to_parsed_po

    answer = llm_answer([("B456", "Lâmpada", "5", "10.000", "50.00"), ("C1", "Cabo", "2", "1,234.50", "2469.00")])
    po = to_parsed_po(LLMExtraction.model_validate(answer), source_format="pdf")
    assert [line.unit_cost for line in po.lines] == [Decimal("10.000"), Decimal("1234.50")]  # ten; a stray comma read


def test_a_document_level_discount_of_the_text_reading_counts_when_lines_are_compared() -> None:
    deterministic = reading(RIGHT, po_number="PO-5", supplier_name="Acme", subtotal=Decimal("35.00"),
                            discount=Decimal("5.00"), total=Decimal("30.00"))
    llm = llm_reading(RIGHT[:1], order_date=dt.date(2026, 1, 5), subtotal=Decimal("35.00"), total=Decimal("30.00"))
    merged = reconcile(merge(deterministic, llm, why=["missing order_date"]))
    assert merged.discount == Decimal("5.00") and [line.sku for line in merged.lines] == ["A-1", "B-2"]
    assert merged.stats["hybrid"]["sources"]["discount"] == "deterministic" and not needs_review(merged)
