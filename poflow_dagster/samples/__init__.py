"""The project's own sample POs, in every format poflow reads, and what each must parse to.

Each document is printed from data (a spec), and its expectations are derived from the same data, so
the two cannot drift apart. ``generate_samples`` writes the set ``poflow demo`` runs: four spreadsheets
(English CSV, German TSV, French XLSX, Spanish ``;`` CSV), a text PDF, an EDI X12 850 and a UBL Order.
The builders in ``pdf_documents`` / ``edi_documents`` also make the damaged and hostile documents the
tests use.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from poflow_dagster.samples import edi_documents, pdf_documents
from poflow_dagster.samples.spreadsheets import SAMPLE_EXPECTATIONS as SPREADSHEET_EXPECTATIONS
from poflow_dagster.samples.spreadsheets import SAMPLES, SampleLine, SamplePO, render_sample
from poflow_dagster.samples.spreadsheets import generate_samples as generate_spreadsheets

__all__ = ["SAMPLES", "SAMPLE_EXPECTATIONS", "SampleLine", "SamplePO", "generate_samples", "render_sample"]

_PDF_SPEC = pdf_documents.simple_po_spec()
_X12_SPEC = edi_documents.sample_spec(po_number="PO-004512")
_UBL_SPEC = edi_documents.sample_spec(po_number="PO-004613")

_DOCUMENTS = {
    "acme-supplies-po-1001.pdf": lambda path: pdf_documents.make_text_po_pdf(path, _PDF_SPEC),
    "northwind-po-004512.x12": lambda path: path.write_text(edi_documents.x12_850(_X12_SPEC)),
    "northwind-order-004613.xml": lambda path: path.write_bytes(edi_documents.ubl_order(_UBL_SPEC)),
}


def _edi_expectation(spec: edi_documents.OrderSpec, source_format: str, *, subtotal_stated: bool) -> dict:
    lines_sum = sum(((l.quantity * l.unit_price).quantize(Decimal("0.01")) for l in spec.lines), Decimal(0))
    return {
        "po_number": spec.po_number, "supplier_name": spec.supplier, "order_date": spec.order_date,
        "currency": spec.currency, "source_format": source_format, "line_count": len(spec.lines),
        "skus": [l.sku for l in spec.lines], "lines_sum": lines_sum,
        "subtotal": lines_sum if subtotal_stated else None,  # an X12 850 states no subtotal
        "tax": spec.tax, "shipping": spec.shipping, "total": lines_sum + (spec.tax or 0) + (spec.shipping or 0),
    }


SAMPLE_EXPECTATIONS: dict[str, dict] = {
    **SPREADSHEET_EXPECTATIONS,
    "acme-supplies-po-1001.pdf": {
        "po_number": _PDF_SPEC.po_number, "supplier_name": _PDF_SPEC.supplier_name, "order_date": _PDF_SPEC.order_date,
        "currency": _PDF_SPEC.currency, "source_format": "pdf", "line_count": len(_PDF_SPEC.lines),
        "skus": [l.sku for l in _PDF_SPEC.lines], "lines_sum": _PDF_SPEC.subtotal, "subtotal": _PDF_SPEC.subtotal,
        "tax": _PDF_SPEC.tax, "shipping": _PDF_SPEC.shipping, "total": _PDF_SPEC.total,
    },
    "northwind-po-004512.x12": _edi_expectation(_X12_SPEC, "x12", subtotal_stated=False),
    "northwind-order-004613.xml": _edi_expectation(_UBL_SPEC, "ubl", subtotal_stated=True),
}


def generate_samples(dest: Path) -> list[Path]:
    """Write every sample into ``dest`` (created if needed); return the paths in a stable order."""
    dest = Path(dest)
    paths = generate_spreadsheets(dest)
    for name, write in _DOCUMENTS.items():
        path = dest / name
        write(path)
        paths.append(path)
    return paths
