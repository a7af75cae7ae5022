"""Extraction quality and LLM concurrency, on the project's own fixtures.

    .venv/bin/python benchmarks/extraction.py [--windows 12] [--delay 0.2] [--concurrency 4]

(a) Field and line accuracy of ``extract_file`` on every fixture the project generates (samples, text
    PDFs, EDI X12 850, UBL Order/Invoice), scored against the specs the fixtures are printed from.
(b) An N-window document through the real ``openai`` client against the local chat-completions server
    with a fixed per-call delay: sequential vs concurrent in this process, printed as a ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from poflow_dagster.domain.models import ParsedPO  # noqa: E402
from poflow_dagster.extraction import extract_file  # noqa: E402
from poflow_dagster.samples.spreadsheets import SAMPLES, generate_samples  # noqa: E402
from poflow_dagster.samples import edi_documents as edi  # noqa: E402
from poflow_dagster.samples import pdf_documents as pdfs  # noqa: E402

FIELDS = ("po_number", "supplier_name", "order_date", "currency", "subtotal", "tax", "shipping", "total")


@dataclass(frozen=True)
class Truth:
    """What a fixture says: header fields (None = not printed, not scored) and lines."""

    fields: dict[str, object]
    lines: list[tuple[str, Decimal, Decimal, Decimal]]  # sku, quantity, unit cost, line total


def _truth(spec, *, supplier: str, unit_cost: str, subtotal: bool = True) -> Truth:
    lines = [(l.sku, l.quantity, getattr(l, unit_cost), (l.quantity * getattr(l, unit_cost)).quantize(Decimal("0.01")))
             for l in spec.lines]
    fields = {"po_number": spec.po_number, "supplier_name": getattr(spec, supplier), "order_date": spec.order_date,
              "currency": spec.currency, "tax": spec.tax, "shipping": spec.shipping,
              "subtotal": sum(t for *_, t in lines) if subtotal else None}
    return Truth(fields, lines)


def fixtures(folder: Path) -> list[tuple[str, Path, Truth]]:
    cases: list[tuple[str, Path, Truth]] = []
    for sample, path in zip(SAMPLES, generate_samples(folder / "samples"), strict=True):
        truth = _truth(sample, supplier="supplier_name", unit_cost="unit_cost")
        truth.fields.update(tax=sample.tax, shipping=sample.shipping, total=sample.total)
        cases.append((sample.source_format, path, truth))
    for name in ("simple_po_spec", "multipage_po_spec", "long_date_po_spec", "terse_po_spec", "euro_po_spec"):
        spec = getattr(pdfs, name)()
        path = pdfs.make_text_po_pdf(folder / f"{name}.pdf", spec)
        truth = _truth(spec, supplier="supplier_name", unit_cost="unit_cost")
        truth.fields["total"] = spec.total
        cases.append(("pdf", path, truth))
    order = edi.sample_spec()
    for style_name in ("STAR_TILDE", "PIPE_NEWLINE", "TILDE_CRLF"):
        path = folder / f"po-{style_name}.edi"
        path.write_text(edi.x12_850(order, getattr(edi, style_name)))
        cases.append(("x12", path, _truth(order, supplier="supplier", unit_cost="unit_price", subtotal=False)))
    for kind, document in (("ubl order", edi.ubl_order(order)), ("ubl invoice", edi.peppol_invoice(order))):
        path = folder / f"{kind.replace(' ', '-')}.xml"
        path.write_bytes(document if isinstance(document, bytes) else document.encode())
        cases.append(("ubl", path, _truth(order, supplier="supplier", unit_cost="unit_price", subtotal=False)))
    return cases


def score(parsed: ParsedPO, truth: Truth) -> tuple[int, int, int, int]:
    """(fields right, fields scored, lines right, lines expected); a wrong extra line costs one."""
    scored = {k: v for k, v in truth.fields.items() if v is not None}
    fields_right = sum(getattr(parsed, k) == v for k, v in scored.items())
    got = [(l.sku, l.quantity, l.unit_cost, l.line_total) for l in parsed.lines]
    lines_right = sum(g == t for g, t in zip(got, truth.lines))
    lines_right -= max(0, len(got) - len(truth.lines))
    return fields_right, len(scored), max(lines_right, 0), len(truth.lines)


def accuracy_table() -> None:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, path, truth in fixtures(Path(tmp)):
            f_ok, f_n, l_ok, l_n = score(extract_file(path), truth)
            row = totals[fmt]
            row[0] += 1
            for i, value in enumerate((f_ok, f_n, l_ok, l_n), start=1):
                row[i] += value
    print(f"{'format':<8}{'documents':>10}{'fields':>14}{'field acc.':>12}{'lines':>12}{'line acc.':>11}")
    for fmt, (docs, f_ok, f_n, l_ok, l_n) in totals.items():
        print(f"{fmt:<8}{docs:>10}{f'{f_ok}/{f_n}':>14}{f_ok / f_n:>12.1%}{f'{l_ok}/{l_n}':>12}{l_ok / l_n:>11.1%}")


def concurrency_ratio(windows: int, delay: float, concurrency: int) -> None:
    from llm_concurrency import answer, run

    from poflow_dagster_tests.openai_server import start_openai_server

    with start_openai_server(lambda body: answer(body, delay)) as server:
        run(server.base_url, 1, 1)  # warm-up
        sequential, _ = run(server.base_url, windows, 1)
        concurrent, _ = run(server.base_url, windows, concurrency)
    print(f"{windows} windows, {delay:g} s per call: sequential {sequential:.2f} s, "
          f"concurrent ({concurrency}) {concurrent:.2f} s, ratio {concurrent / sequential:.2f} (ideal {1 / concurrency:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    print("(a) extraction accuracy on the project's fixtures")
    accuracy_table()
    print("\n(b) LLM windows, concurrent vs sequential")
    concurrency_ratio(args.windows, args.delay, args.concurrency)


if __name__ == "__main__":
    main()
