"""A scanned PO through the real pipeline: the LLM path via the real openai client and a local
server speaking the OpenAI wire format; per-page and per-window progress; tokens, cost and retries in the
stage metadata."""

from __future__ import annotations

import itertools
import threading

import dagster as dg

from poflow_dagster.definitions import defs
from poflow_dagster.intake import upload_file
from poflow_dagster.pipeline.local import run_upload
from poflow_dagster.store.progress_bus import ProgressBus
from poflow_dagster.store.workflow import status_report
from poflow_dagster_tests.openai_server import API_KEY, Reply, fail_first, image_urls, start_openai_server
from poflow_dagster.samples.pdf_documents import make_scanned_pdf

from poflow_dagster_tests.conftest import REDIS_TEST_URL as REDIS_URL  # POFLOW_TEST_REDIS_URL
LINES = [("00042", "Widget", "2", "5.00"), ("B-7", "Gadget", "1", "12.50"), ("C-9", "Sprocket", "4", "0.25")]


def _scripted_po():
    """Each call reads one page: the header everywhere, one distinct line per call, totals everywhere."""
    counter = itertools.count()
    lock = threading.Lock()

    def behaviour(body) -> Reply:
        with lock:
            sku, description, quantity, cost = LINES[next(counter) % len(LINES)]
        return Reply.json({
            "po_number": "SC-500", "supplier_name": "Scan & Co", "order_date": "2026-03-03", "currency": "USD",
            "subtotal": "23.50", "tax": None, "shipping": None, "total": "23.50", "confidence": 0.95,
            "lines": [{"sku": sku, "description": description, "quantity": quantity, "unit_cost": cost,
                       "line_total": format(float(quantity) * float(cost), ".2f"), "confidence": 0.95}],
        }, prompt_tokens=1000, completion_tokens=200)

    return behaviour


def test_scanned_pdf_is_read_by_the_llm_end_to_end(home, db, shop, instance, tmp_path, monkeypatch):
    scan = make_scanned_pdf(tmp_path / "scan.pdf", pages=3)
    rate_limited_once = fail_first(1, Reply.rate_limited("0.1"), _scripted_po())
    with start_openai_server(rate_limited_once) as server:
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("POFLOW_LLM_WINDOW_PAGES", "1")
        monkeypatch.setenv("REDIS_URL", REDIS_URL)
        upload = upload_file(db, home, "acme", scan)
        result = run_upload(defs, instance, db, upload.id, with_images=False)
        requests = server.completion_requests()

    assert result.success, result.error
    assert result.summary["po_number"] == "SC-500" and result.summary["line_count"] == 3
    assert status_report(db, upload.id).workflow.status == "completed" and all(result.checks.values())
    assert [r.status for r in requests].count(429) == 1 and len(requests) == 4
    assert all(len(image_urls(r.body)) == 1 for r in requests)
    assert all(url.startswith("data:image/png;base64,") for r in requests for url in image_urls(r.body))

    parsing = next(
        e.dagster_event.event_specific_data.metadata
        for e in instance.all_logs(result.run_id)
        if e.is_dagster_event and e.dagster_event.is_successful_output and e.dagster_event.step_key.endswith("ai_parsing")
    )
    assert parsing["extractor"].value == "llm" and parsing["extraction_windows"].value == 3
    assert parsing["extraction_prompt_tokens"].value == 3000
    assert parsing["extraction_completion_tokens"].value == 600
    assert "extraction_cost" in parsing
    assert parsing["extraction_rate_limited"].value == 1 and parsing["extraction_transient_retries"].value == 1
    assert parsing["extraction_retry_wait_seconds"].value >= 0.1

    bus = ProgressBus(REDIS_URL, db)
    events = [e for _, e in bus.read_merchant_events("acme", "0", block_ms=0, count=1000)]
    bus.close()
    progress = [(e.message, e.items_done, e.items_total, e.percent) for e in events
                if e.upload_id == upload.id and e.status == "progress" and e.stage == "ai_parsing"]
    # Items are the 3 rendered pages and the 3 windows, interleaved as the scan streams (the order of a
    # page and an earlier window's answer may vary); ai_parsing spans 0-20% of the workflow.
    assert [(done, total) for _, done, total, _ in progress] == [(n, 6) for n in range(1, 7)]
    assert [percent for *_, percent in progress] == [3, 6, 10, 13, 16, 20]
    messages = [message for message, *_ in progress]
    assert sorted(messages) == sorted([f"Rendering page {n}/3" for n in (1, 2, 3)]
                                      + [f"Parsing window {n}/3" for n in (1, 2, 3)])
    for n in (1, 2, 3):  # a window (one page each here) is parsed only after its page was rendered
        assert messages.index(f"Rendering page {n}/3") < messages.index(f"Parsing window {n}/3")


def test_a_scan_without_an_llm_fails_with_needs_ocr_or_llm(home, db, shop, instance, tmp_path):
    scan = make_scanned_pdf(tmp_path / "scan.pdf", pages=1)
    upload = upload_file(db, home, "acme", scan)
    result = run_upload(defs, instance, db, upload.id)
    assert not result.success
    report = status_report(db, upload.id)
    assert report.workflow.error_code == "needs_ocr_or_llm" and report.upload.status == "failed"
    assert report.upload.error_message.startswith("ai_parsing: ") and "\n" not in report.upload.error_message
