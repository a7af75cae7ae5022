"""Never refuse what is readable: a text PDF whose header is read but whose items are not a table.

Offline it comes back with what was read and an error issue ``LINES_NOT_FOUND`` (a person adds the lines or
configures an LLM); through the pipeline it ends ``needs_review`` with that reason, the upload kept and nothing
synced. ``needs_ocr_or_llm`` is left for documents where neither a header nor lines are found.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fpdf import FPDF

from poflow_dagster.definitions import defs
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.reconcile import needs_review, review_reasons
from poflow_dagster.extraction import extract_file
from poflow_dagster.extraction.hybrid import LINES_NOT_FOUND
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.store.workflow import status_report


def _pdf(path: Path, header: list[str], body: str) -> Path:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, "PURCHASE ORDER", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    for text in header:
        pdf.cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.multi_cell(0, 6, body)
    pdf.output(str(path))
    return path


PROSE = ("Please supply twelve boxes of A4 copy paper, article PAP-A4, at 4.50 each, and three desk lamps, "
         "article LMP-3, at 19.90 each. Deliver to our Leeds warehouse before the end of the month.")


def prose_po(path: Path) -> Path:
    """A labelled header, and the items written as one paragraph."""
    return _pdf(path, ["PO Number: PO-7731", "Supplier: Northwind Traders", "Order Date: 2026-03-14"], PROSE)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_a_readable_header_without_a_line_table_is_kept_for_a_person(tmp_path: Path) -> None:
    po = extract_file(prose_po(tmp_path / "prose.pdf"))
    assert po.po_number == "PO-7731" and po.supplier_name == "Northwind Traders" and po.lines == []
    [issue] = [issue for issue in po.issues if issue.severity == "error"]
    assert issue.code == LINES_NOT_FOUND and "\n" not in issue.message
    assert "a person must add them" in issue.message and "LLM" in issue.message
    assert needs_review(po)


def test_nothing_readable_still_needs_ocr_or_llm(tmp_path: Path) -> None:
    path = tmp_path / "letter.pdf"
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(0, 6, "Dear colleagues, thank you for a pleasant visit last week. " * 4)
    pdf.output(str(path))
    with pytest.raises(PoflowError) as error:
        extract_file(path)
    assert error.value.code == "needs_ocr_or_llm"


def test_the_pipeline_holds_it_for_review_and_syncs_nothing(home, db, shop, instance, tmp_path: Path) -> None:
    upload = upload_file(db, home, "acme", prose_po(tmp_path / "prose.pdf"))
    result = run_upload(defs, instance, db, upload.id, with_images=False)

    assert result.success, result.error
    report = status_report(db, upload.id)
    assert report.workflow.status == "needs_review" and report.upload.status == "needs_review"
    assert report.upload.error_message.startswith(f"{LINES_NOT_FOUND}: ") and "\n" not in report.upload.error_message
    assert "Traceback" not in (report.upload.error_message or "")
    assert result.summary["po_number"] == "PO-7731" and result.summary["line_count"] == 0
    assert result.summary["shopify_sync"] == "held_for_review" and shop.count_products() == 0
    assert Path(upload.stored_path).is_file()  # the upload is kept for the person who adds the lines


def test_review_reasons_name_lines_not_found(tmp_path: Path) -> None:
    po = extract_file(prose_po(tmp_path / "prose.pdf"))
    assert [reason.split(":")[0] for reason in review_reasons(po)] == [LINES_NOT_FOUND]
