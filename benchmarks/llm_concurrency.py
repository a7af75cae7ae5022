"""LLM extraction: windows one at a time vs concurrently, against the local chat-completions server.

    .venv/bin/python benchmarks/llm_concurrency.py [--windows 12] [--delay 0.2] [--concurrency 4]

An N-window text document (one page per window) goes through the real ``openai`` client to
``poflow_dagster_tests.openai_server``, which answers each call after a fixed delay (a stand-in
for model latency). Both runs happen in this process, one after the other; the ratio
concurrent/sequential is what to compare (ideal: 1 / concurrency).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poflow_dagster.extraction.llm import LLMPage, LLMSettings, extract_with_llm  # noqa: E402
from poflow_dagster_tests.openai_server import API_KEY, Reply, request_text, start_openai_server  # noqa: E402

_PAGE_RE = re.compile(r"^--- page (\d+)", re.MULTILINE)


def answer(body: dict[str, Any], delay: float) -> Reply:
    """One item line per page in the request, header on page 1."""
    pages = [int(n) for n in _PAGE_RE.findall(request_text(body))]
    lines = [
        {"sku": f"SKU-{n:03d}", "description": f"Item {n}", "quantity": "1", "unit_cost": "9.99",
         "line_total": "9.99", "confidence": 0.95}
        for n in pages
    ]
    first = 1 in pages
    return Reply.json(
        {"po_number": "PO-BENCH" if first else None, "supplier_name": "Bench Supplier" if first else None,
         "order_date": "2026-01-02" if first else None, "currency": "USD" if first else None,
         "subtotal": None, "tax": None, "shipping": None, "total": None, "lines": lines, "confidence": 0.9},
        delay=delay,
    )


def run(base_url: str, windows: int, concurrency: int) -> tuple[float, int]:
    """Seconds for one extraction and the number of lines it returned."""
    pages = [LLMPage(number=n, text=f"Bench purchase order, sheet {n}") for n in range(1, windows + 1)]
    settings = LLMSettings(api_key=API_KEY, base_url=base_url, window_pages=1, max_concurrency=concurrency)
    started = time.perf_counter()
    po = extract_with_llm(pages, settings, source_format="pdf")
    return time.perf_counter() - started, len(po.lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the server waits per call")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    with start_openai_server(lambda body: answer(body, args.delay)) as server:
        run(server.base_url, 1, 1)  # warm-up: imports, first connection
        sequential, n_seq = run(server.base_url, args.windows, 1)
        concurrent, n_conc = run(server.base_url, args.windows, args.concurrency)

    assert n_seq == n_conc == args.windows, (n_seq, n_conc)
    print(f"{args.windows} windows, {args.delay:g} s per call")
    print(f"sequential (max_concurrency=1): {sequential:.2f} s")
    print(f"concurrent (max_concurrency={args.concurrency}): {concurrent:.2f} s")
    print(f"ratio concurrent/sequential: {concurrent / sequential:.2f} (ideal {1 / args.concurrency:.2f})")


if __name__ == "__main__":
    main()
