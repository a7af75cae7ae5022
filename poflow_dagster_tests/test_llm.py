"""LLM extraction through the real ``openai`` client against a local chat-completions server."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.extraction import extract_file
from poflow_dagster.extraction.llm import LLMPage, LLMSettings, extract_with_llm, text_document_pages
from poflow_dagster.extraction.llm_schema import LLMExtraction, to_parsed_po
from poflow_dagster_tests.openai_server import (
    API_KEY,
    OpenAIServer,
    RecordedRequest,
    Reply,
    fail_first,
    image_payloads,
    image_urls,
    max_overlap,
    openai_server,  # noqa: F401 - pytest fixture
    request_text,
)

_PAGE_RE = re.compile(r"^--- page (\d+)", re.MULTILINE)
_HEADER = ("po_number", "supplier_name", "order_date", "currency")
_TOTALS = ("subtotal", "tax", "shipping", "total")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "POFLOW_LLM_PRICES", "POFLOW_LLM_MODEL",
                 "POFLOW_LLM_CONCURRENCY", "POFLOW_LLM_WINDOW_PAGES", "POFLOW_LLM_TIMEOUT", "POFLOW_LLM_MAX_RETRIES",
                 "POFLOW_LLM_RETRY_BUDGET", "POFLOW_LLM_WINDOW_CHARS", "POFLOW_LLM_MAX_WINDOWS"):
        monkeypatch.delenv(name, raising=False)


def line(sku: str, qty: str, cost: str, total: str, desc: str = "", confidence: float = 0.95) -> dict[str, Any]:
    return {"sku": sku, "description": desc or f"Item {sku}", "quantity": qty, "unit_cost": cost,
            "line_total": total, "confidence": confidence}


#: What each page of a 6-page PO "says": the fake model answers a window by combining its pages.
DOCUMENT: dict[int, dict[str, Any]] = {
    1: {"po_number": "PO-1001", "supplier_name": "Acme Tools", "order_date": "2026-03-14", "currency": "USD",
        "lines": [line("00123", "2", "10.00", "20.00")]},
    2: {"lines": [line("B-2", "1", "5.50", "5.50"), line("C-3", "4", "12.5", "50.00")]},
    # a continuation page repeats the last line of page 2 and carries a misleading header
    3: {"po_number": "PO-9999", "supplier_name": "Someone Else",
        "lines": [line("C-3", "4", "12.50", "50.00"), line("D-4", "3", "1.00", "3.00")]},
    4: {"subtotal": "78.50", "lines": [line("E-5", "1", "100.00", "100.00")]},  # "carried forward"
    5: {"lines": [line("F-6", "2", "7.25", "14.50", confidence=0.7)]},
    6: {"subtotal": "193.00", "tax": "19.30", "shipping": "5.00", "total": "217.30", "lines": []},
}
EXPECTED_SKUS = ["00123", "B-2", "C-3", "D-4", "E-5", "F-6"]


def pages_in(body: dict[str, Any]) -> list[int]:
    return [int(n) for n in _PAGE_RE.findall(request_text(body))]


def answer_for(pages: list[int], document: dict[int, dict[str, Any]] = DOCUMENT) -> dict[str, Any]:
    """The model's answer for a window: header from its first page that has it, totals from the last."""
    parts = [document[n] for n in pages]
    answer: dict[str, Any] = {name: next((p[name] for p in parts if p.get(name)), None) for name in _HEADER}
    answer.update({name: next((p[name] for p in reversed(parts) if p.get(name)), None) for name in _TOTALS})
    answer["lines"] = [item for p in parts for item in p.get("lines", [])]
    answer["confidence"] = 0.9
    return answer


def faithful(body: dict[str, Any]) -> Reply:
    return Reply.json(answer_for(pages_in(body)))


def text_pages(count: int) -> list[LLMPage]:
    return [LLMPage(number=n, text=f"Acme purchase order, sheet {n}") for n in range(1, count + 1)]


def settings(server: OpenAIServer, **overrides: Any) -> LLMSettings:
    values: dict[str, Any] = {"api_key": API_KEY, "base_url": server.base_url, "window_pages": 2, "max_retries": 1,
                              "backoff_seconds": 0.01}
    return LLMSettings(**{**values, **overrides})


def test_three_windows_merge_header_first_totals_last_and_dedupe(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = faithful
    po = extract_with_llm(text_pages(6), settings(openai_server), source_format="pdf")

    assert (po.po_number, po.supplier_name, po.order_date, po.currency) == (
        "PO-1001", "Acme Tools", dt.date(2026, 3, 14), "USD")
    assert (po.subtotal, po.tax, po.shipping, po.total) == (
        Decimal("193.00"), Decimal("19.30"), Decimal("5.00"), Decimal("217.30"))
    assert [ln.sku for ln in po.lines] == EXPECTED_SKUS
    assert [ln.line_no for ln in po.lines] == [1, 2, 3, 4, 5, 6]
    assert po.lines[2].unit_cost == Decimal("12.5") and po.lines[0].sku == "00123"
    assert [i.code for i in po.issues] == ["DUPLICATE_LINES_REMOVED"]
    assert po.extractor == "llm" and po.source_format == "pdf"
    assert po.confidence == pytest.approx(0.7)
    assert {k: po.stats[k] for k in ("windows", "pages", "calls", "retries", "split_windows", "duplicate_lines")} == {
        "windows": 3, "pages": 6, "calls": 3, "retries": 0, "split_windows": 0, "duplicate_lines": 1}

    requests = openai_server.completion_requests()
    assert sorted(pages_in(r.body) for r in requests) == [[1, 2], [3, 4], [5, 6]]
    body = requests[0].body
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"][0]["role"] == "system" and "never compute" in body["messages"][0]["content"].lower()
    schema = body["response_format"]
    assert schema["type"] == "json_schema" and schema["json_schema"]["strict"] is True
    root = schema["json_schema"]["schema"]
    assert root["additionalProperties"] is False and set(root["required"]) == set(root["properties"])
    assert root["properties"]["total"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    line_schema = root["$defs"]["LLMLine"]
    assert line_schema["additionalProperties"] is False
    assert set(line_schema["required"]) == set(line_schema["properties"])
    assert _depth(root, root) <= 5


def _depth(schema: Any, root: dict[str, Any]) -> int:
    """Nesting depth of objects/arrays in a JSON schema (``$ref`` followed)."""
    if not isinstance(schema, dict):
        return 0
    if "$ref" in schema:
        return _depth(root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root)
    children = [*schema.get("properties", {}).values(), *schema.get("anyOf", [])]
    if isinstance(schema.get("items"), dict):
        children.append(schema["items"])
    inner = max((_depth(child, root) for child in children), default=0)
    return inner + (1 if schema.get("type") in ("object", "array") else 0)


def test_windows_run_concurrently(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.json(answer_for(pages_in(body)), delay=0.3)
    pages = text_pages(4)
    po = extract_with_llm(pages, settings(openai_server, window_pages=1, max_concurrency=4), source_format="pdf")
    assert po.stats["windows"] == 4
    assert max_overlap(openai_server.completion_requests()) == 4


def test_max_concurrency_one_is_sequential(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.json(answer_for(pages_in(body)), delay=0.05)
    extract_with_llm(text_pages(4), settings(openai_server, window_pages=1, max_concurrency=1), source_format="pdf")
    assert max_overlap(openai_server.completion_requests()) == 1


def test_truncated_window_is_split_never_accepted(openai_server: OpenAIServer) -> None:
    def behaviour(body: dict[str, Any]) -> Reply:
        pages = pages_in(body)
        return Reply.truncated(answer_for(pages)) if len(pages) > 1 else Reply.json(answer_for(pages))

    openai_server.behaviour = behaviour
    po = extract_with_llm(text_pages(6), settings(openai_server, window_pages=4), source_format="pdf")

    assert [ln.sku for ln in po.lines] == EXPECTED_SKUS
    assert po.total == Decimal("217.30") and po.po_number == "PO-1001"
    # [1-4] -> [1,2] [3,4] -> singles (3 splits, 7 calls); [5,6] -> singles (1 split, 3 calls)
    assert po.stats["split_windows"] == 4 and po.stats["calls"] == 10
    answered = sorted(pages_in(r.body) for r in openai_server.completion_requests())
    assert [[1], [2], [3], [4], [5], [6]] == [p for p in answered if len(p) == 1]


def test_single_page_truncation_retries_with_double_tokens(openai_server: OpenAIServer) -> None:
    def behaviour(body: dict[str, Any]) -> Reply:
        answer = answer_for(pages_in(body))
        return Reply.json(answer) if body["max_completion_tokens"] >= 2000 else Reply.truncated(answer)

    openai_server.behaviour = behaviour
    po = extract_with_llm(text_pages(1), settings(openai_server, max_output_tokens=1000), source_format="image")
    assert [ln.sku for ln in po.lines] == ["00123"]
    assert [r.body["max_completion_tokens"] for r in openai_server.completion_requests()] == [1000, 2000]
    assert po.stats["retries"] == 1


def test_single_page_that_always_truncates_fails(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.truncated()
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), settings(openai_server), source_format="pdf")
    assert err.value.code == "llm_truncated"
    assert len(openai_server.completion_requests()) == 2


def test_rate_limited_then_success_counts_the_retry(openai_server: OpenAIServer) -> None:
    calls: list[int] = []

    def behaviour(body: dict[str, Any]) -> Reply:
        calls.append(1)
        return Reply.rate_limited("0") if len(calls) == 1 else faithful(body)

    openai_server.behaviour = behaviour
    po = extract_with_llm(text_pages(2), settings(openai_server), source_format="pdf")
    assert [ln.sku for ln in po.lines] == ["00123", "B-2", "C-3"]
    assert po.stats["retries"] == 1 and po.stats["calls"] == 1
    requests = openai_server.completion_requests()
    assert [r.status for r in requests] == [429, 200]
    assert requests[1].headers.get("x-stainless-retry-count") == "1"


def test_rate_limited_after_retries(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.rate_limited("0")
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), settings(openai_server, max_retries=1), source_format="pdf")
    assert err.value.code == "llm_rate_limited"
    assert len(openai_server.completion_requests()) == 2


@pytest.mark.parametrize("bad", [Reply.malformed(), Reply.json({"po_number": "PO-1"})], ids=["json", "schema"])
def test_bad_answer_is_retried_once(openai_server: OpenAIServer, bad: Reply) -> None:
    calls: list[int] = []

    def behaviour(body: dict[str, Any]) -> Reply:
        calls.append(1)
        return bad if len(calls) == 1 else faithful(body)

    openai_server.behaviour = behaviour
    po = extract_with_llm(text_pages(1), settings(openai_server), source_format="pdf")
    assert po.po_number == "PO-1001"
    assert po.stats["calls"] == 2 and po.stats["retries"] == 1
    assert po.stats["prompt_tokens"] == 200  # the bad answer's usage is counted too


def test_twice_malformed_is_a_bad_response(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.malformed()
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), settings(openai_server), source_format="pdf")
    assert err.value.code == "llm_bad_response"
    assert "not valid JSON" in err.value.message
    assert len(openai_server.completion_requests()) == 2


def test_refusal(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.refused("I'm sorry,\nI can't help with that.")
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), settings(openai_server), source_format="pdf")
    assert err.value.code == "llm_refused"
    assert err.value.message == "I'm sorry, I can't help with that."


def test_a_failing_window_stops_the_windows_not_started(openai_server: OpenAIServer) -> None:
    def behaviour(body: dict[str, Any]) -> Reply:
        pages = pages_in(body)
        return Reply.refused("no", delay=0.1) if pages == [2] else Reply.json(answer_for(pages), delay=0.1)

    openai_server.behaviour = behaviour
    seen: list[tuple[int, int]] = []
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(5), settings(openai_server, window_pages=1, max_concurrency=1),
                         source_format="pdf", on_progress=lambda done, total: seen.append((done, total)))
    assert err.value.code == "llm_refused"
    assert seen == [(1, 5)]
    assert [5] not in [pages_in(r.body) for r in openai_server.completion_requests()]


@pytest.mark.parametrize("mime_type, data", [
    ("image/png", b"\x89PNG\r\n\x1a\n fake image bytes"),
    ("image/jpeg", b"\xff\xd8\xff\xe0 fake image bytes"),
])
def test_vision_page_is_sent_as_image_url_of_its_type(openai_server: OpenAIServer, mime_type: str, data: bytes) -> None:
    openai_server.behaviour = lambda body: Reply.json(answer_for([1]))
    page = LLMPage(number=1, image=data, mime_type=mime_type)
    po = extract_with_llm([page], settings(openai_server), source_format="image")
    assert po.po_number == "PO-1001"
    body = openai_server.completion_requests()[0].body
    assert image_urls(body) == [f"data:{mime_type};base64," + base64.b64encode(data).decode()]
    assert image_payloads(body) == [(mime_type, data)]
    parts = body["messages"][1]["content"]
    assert {"type": "image_url", "image_url": {"url": image_urls(body)[0], "detail": "high"}} in parts


def test_a_page_is_text_or_an_image_of_a_declared_type() -> None:
    with pytest.raises(ValueError):
        LLMPage(number=1, image=b"\x89PNG")  # no mime type
    with pytest.raises(ValueError):
        LLMPage(number=1, image=b"%PDF", mime_type="application/pdf")
    with pytest.raises(ValueError):
        LLMPage(number=1, text="words", mime_type="image/png")
    with pytest.raises(ValueError):
        LLMPage(number=1, text="words", image=b"\x89PNG", mime_type="image/png")


def test_on_progress_reports_each_window(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = faithful
    seen: list[tuple[int, int]] = []
    extract_with_llm(text_pages(6), settings(openai_server), source_format="pdf",
                     on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_on_progress_gets_a_message_when_it_takes_one(openai_server: OpenAIServer) -> None:
    """``report_fraction(done, total, message=None)`` (the stage reporter's shape) gets the window text."""
    openai_server.behaviour = faithful
    seen: list[tuple[int, int, str | None]] = []

    def report(done: int, total: int, message: str | None = None) -> None:
        seen.append((done, total, message))

    extract_with_llm(text_pages(6), settings(openai_server), source_format="pdf", on_progress=report)
    assert seen == [(1, 3, "Parsing window 1/3"), (2, 3, "Parsing window 2/3"), (3, 3, "Parsing window 3/3")]


def test_cost_from_price_table_and_usage(openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    openai_server.behaviour = lambda body: Reply.json(answer_for(pages_in(body)), prompt_tokens=1000,
                                                      completion_tokens=500)
    po = extract_with_llm(text_pages(4), settings(openai_server), source_format="pdf")
    assert (po.stats["prompt_tokens"], po.stats["completion_tokens"]) == (2000, 1000)
    assert po.stats["cost"] == "0.0009"  # 2 x 0.00015 + 1 x 0.0006 (gpt-4o-mini, USD per 1K)
    assert po.stats["model"] == "gpt-4o-mini" and po.stats["seconds"] >= 0

    monkeypatch.setenv("POFLOW_LLM_PRICES", '{"local-model": ["0.001", "0.002"]}')
    po = extract_with_llm(text_pages(2), settings(openai_server, model="local-model"), source_format="pdf")
    assert po.stats["cost"] == "0.002" and po.stats["model"] == "local-model"
    assert openai_server.completion_requests()[-1].body["model"] == "local-model"
    assert LLMSettings(api_key="k", model="unknown-model").prices() is None
    repriced = dataclasses.replace(LLMSettings(api_key="k"), model="local-model")
    assert repriced.prices() == (Decimal("0.001"), Decimal("0.002"))
    explicit = LLMSettings(api_key="k", price_per_1k_input=Decimal("1"), price_per_1k_output=Decimal("2"))
    assert explicit.prices() == (Decimal("1"), Decimal("2"))


def test_from_env_without_key_is_none_and_key_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LLMSettings.from_env() is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-value")
    monkeypatch.setenv("POFLOW_LLM_CONCURRENCY", "8")
    monkeypatch.setenv("POFLOW_LLM_WINDOW_PAGES", "2")
    monkeypatch.setenv("POFLOW_LLM_TIMEOUT", "12.5")
    monkeypatch.setenv("POFLOW_LLM_MODEL", "gpt-4o")
    found = LLMSettings.from_env()
    assert found is not None and found.api_key == "sk-very-secret-value"
    assert (found.max_concurrency, found.window_pages, found.timeout_seconds, found.model) == (8, 2, 12.5, "gpt-4o")
    assert found.base_url is None and found.prices() == (Decimal("0.0025"), Decimal("0.01"))
    assert "sk-very-secret-value" not in repr(found) and "sk-very-secret-value" not in str(found)
    assert (found.max_retries, found.retry_budget_seconds, found.window_chars, found.max_windows) == (5, 180, 12000, 200)
    monkeypatch.setenv("POFLOW_LLM_MAX_RETRIES", "0")
    monkeypatch.setenv("POFLOW_LLM_RETRY_BUDGET", "30")
    monkeypatch.setenv("POFLOW_LLM_WINDOW_CHARS", "8000")
    monkeypatch.setenv("POFLOW_LLM_MAX_WINDOWS", "50")
    found = LLMSettings.from_env()
    assert found is not None
    assert (found.max_retries, found.retry_budget_seconds, found.window_chars, found.max_windows) == (0, 30, 8000, 50)
    for name, bad in (("POFLOW_LLM_CONCURRENCY", "many"), ("POFLOW_LLM_MAX_RETRIES", "-1"),
                      ("POFLOW_LLM_RETRY_BUDGET", "0"), ("POFLOW_LLM_MAX_WINDOWS", "2.5")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(PoflowError) as err:
            LLMSettings.from_env()
        assert err.value.code == "llm_config_invalid" and name in err.value.message
        monkeypatch.delenv(name)


def test_wrong_key_is_auth_failed_without_echoing_it(openai_server: OpenAIServer) -> None:
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), settings(openai_server, api_key="sk-wrong-secret"), source_format="pdf")
    assert err.value.code == "llm_auth_failed" and "sk-wrong-secret" not in str(err.value)


def test_server_errors_and_unreachable_are_unavailable(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.error(503)
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), settings(openai_server, max_retries=0), source_format="pdf")
    assert err.value.code == "llm_unavailable"

    closed = LLMSettings(api_key=API_KEY, base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_seconds=2)
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), closed, source_format="pdf")
    assert err.value.code == "llm_unavailable"


def test_to_parsed_po_flags_unreadable_values() -> None:
    extraction = LLMExtraction.model_validate({
        "po_number": " PO-7 ", "supplier_name": None, "order_date": "sometime soon", "currency": "€",
        "subtotal": "1,234.50", "tax": "n/a", "shipping": None, "total": "$1234.50", "confidence": 1.4,
        "lines": [line("A", "two", "1.00", "2.00", confidence=0.5)],
    })
    po = to_parsed_po(extraction, source_format="pdf")
    assert (po.po_number, po.order_date, po.currency) == ("PO-7", None, "EUR")
    assert (po.subtotal, po.tax, po.total) == (Decimal("1234.50"), None, Decimal("1234.50"))
    assert po.lines[0].quantity is None and po.lines[0].unit_cost == Decimal("1.00")
    assert sorted((i.code, i.severity) for i in po.issues) == [
        ("UNREADABLE_DATE", "warning"), ("UNREADABLE_NUMBER", "warning"), ("UNREADABLE_NUMBER", "warning")]
    assert po.confidence == 0.5


# --- transient faults: one retry layer (ours), per window, honouring Retry-After ----------------------------


def gaps(requests: list[RecordedRequest]) -> list[float]:
    """Server-side seconds between answering a request and receiving the next one."""
    return [later.started - earlier.finished for earlier, later in zip(requests, requests[1:])]


@pytest.mark.parametrize(
    "limited",
    [Reply.rate_limited("0.2"), Reply.rate_limited(None, retry_after_ms="200")],
    ids=["retry-after", "retry-after-ms"],
)
def test_rate_limited_requests_wait_as_the_server_asks(openai_server: OpenAIServer, limited: Reply) -> None:
    openai_server.behaviour = fail_first(2, limited, faithful)
    po = extract_with_llm(text_pages(2), settings(openai_server, max_retries=3), source_format="pdf")

    assert [ln.sku for ln in po.lines] == ["00123", "B-2", "C-3"]
    requests = openai_server.completion_requests()
    assert [r.status for r in requests] == [429, 429, 200]
    assert all(gap >= 0.2 for gap in gaps(requests))  # the server saw each retry only after the hinted delay
    assert [r.headers.get("x-stainless-retry-count") for r in requests] == ["0", "1", "2"]
    assert (po.stats["transient_retries"], po.stats["rate_limited"], po.stats["calls"]) == (2, 2, 1)
    assert po.stats["retries"] == 2 and po.stats["retry_wait_seconds"] >= 0.4


def test_rate_limit_that_never_lifts_gives_up_with_llm_rate_limited(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.rate_limited("0.01")
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), settings(openai_server, max_retries=2), source_format="pdf")
    assert err.value.code == "llm_rate_limited"
    assert "after 3 attempts" in err.value.message and "\n" not in str(err.value)
    assert API_KEY not in str(err.value)
    assert len(openai_server.completion_requests()) == 3  # ours only: the SDK's own retries are off


def test_retry_after_beyond_the_window_budget_gives_up_at_once(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.rate_limited("30")
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), settings(openai_server, max_retries=5, retry_budget_seconds=1),
                         source_format="pdf")
    assert err.value.code == "llm_rate_limited" and "retry budget of 1 s" in err.value.message
    assert len(openai_server.completion_requests()) == 1


def test_insufficient_quota_is_not_retried(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.error(429, "insufficient_quota")
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), settings(openai_server, max_retries=3), source_format="pdf")
    assert err.value.code == "llm_rate_limited" and "quota" in err.value.message
    assert len(openai_server.completion_requests()) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_with_backoff(openai_server: OpenAIServer, status: int) -> None:
    openai_server.behaviour = fail_first(2, Reply.error(status), faithful)
    po = extract_with_llm(text_pages(1), settings(openai_server, max_retries=2), source_format="pdf")
    assert po.po_number == "PO-1001"
    assert [r.status for r in openai_server.completion_requests()] == [status, status, 200]
    assert (po.stats["transient_retries"], po.stats["rate_limited"]) == (2, 0)


def test_server_errors_that_persist_are_llm_unavailable(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.error(503)
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), settings(openai_server, max_retries=2), source_format="pdf")
    assert err.value.code == "llm_unavailable" and "HTTP 503" in err.value.message
    assert "after 3 attempts" in err.value.message
    assert len(openai_server.completion_requests()) == 3


def test_a_timeout_is_retried(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = fail_first(1, lambda body: Reply.slow(answer_for(pages_in(body)), delay=1.0), faithful)
    po = extract_with_llm(text_pages(1), settings(openai_server, timeout_seconds=0.3), source_format="pdf")
    assert po.po_number == "PO-1001"
    assert len(openai_server.completion_requests()) == 2
    assert (po.stats["transient_retries"], po.stats["calls"]) == (1, 1)


def test_timeouts_that_persist_are_llm_unavailable(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body: Reply.slow(answer_for([1]), delay=1.0)
    with pytest.raises(PoflowError) as err:
        extract_with_llm(text_pages(1), settings(openai_server, timeout_seconds=0.2, max_retries=1),
                         source_format="pdf")
    assert err.value.code == "llm_unavailable"
    assert err.value.message == "the LLM provider did not answer within 0.2 s after 2 attempts"


def test_other_windows_keep_going_while_one_waits(openai_server: OpenAIServer) -> None:
    def answer(body: dict[str, Any]) -> Reply:
        return Reply.json(answer_for(pages_in(body)), delay=0.02)

    openai_server.behaviour = fail_first(1, Reply.rate_limited("0.5"), answer, key=lambda body: "p1" if pages_in(body) == [1] else None)
    po = extract_with_llm(text_pages(4), settings(openai_server, window_pages=1, max_concurrency=2),
                          source_format="pdf")
    assert [ln.sku for ln in po.lines] == ["00123", "B-2", "C-3", "D-4", "E-5"]

    requests = openai_server.completion_requests()
    first = [r for r in requests if pages_in(r.body) == [1]]
    others = [r for r in requests if pages_in(r.body) != [1]]
    assert [r.status for r in first] == [429, 200] and first[1].started - first[0].finished >= 0.5
    assert len(others) == 3 and all(r.finished <= first[1].started for r in others)  # served during the wait


# --- text documents are windowed like scans ---------------------------------------------------------------


_SKU_RE = re.compile(r"SKU-\d{5}")


def item_text(count: int) -> str:
    """A free-text PO body: one order line per text line (no delimiters, so it sniffs as text)."""
    return "".join(f"Item SKU-{n:05d} Widget number {n} quantity 2 at 9.99 each\n" for n in range(1, count + 1))


def echo_items(body: dict[str, Any]) -> Reply:
    """The model reads every SKU in the request (header on the window with SKU-00001)."""
    skus = _SKU_RE.findall(request_text(body))
    first = "SKU-00001" in skus
    return Reply.json({
        "po_number": "TXT-1" if first else None, "supplier_name": None, "order_date": None, "currency": None,
        "subtotal": None, "tax": None, "shipping": None, "total": None, "confidence": 0.9,
        "lines": [line(sku, "2", "9.99", "19.98") for sku in skus],
    })


def test_a_long_text_document_is_split_into_bounded_windows(openai_server: OpenAIServer) -> None:
    text = item_text(2000)  # ~118k characters
    openai_server.behaviour = lambda body: dataclasses.replace(echo_items(body), delay=0.05)
    po = extract_with_llm(text_document_pages(text), settings(openai_server, max_concurrency=4), source_format="text")

    requests = openai_server.completion_requests()
    assert len(requests) == po.stats["windows"] >= 10
    assert max(len(request_text(r.body)) for r in requests) <= 12_000 + 300  # a window plus intro and markers
    assert max(r.size for r in requests) < 30_000 < len(text)
    assert max_overlap(requests) > 1
    assert [ln.sku for ln in po.lines] == [f"SKU-{n:05d}" for n in range(1, 2001)]  # every line once, in order
    assert po.po_number == "TXT-1" and po.stats["text_chars"] == len(text) and po.stats["pages"] == 1
    assert any("--- page 1 (part 1 of " in request_text(r.body) for r in requests)


def test_form_feeds_are_pages_and_blank_pages_are_skipped() -> None:
    pages = text_document_pages("page one\f\n  \fpage three\n")
    assert [(p.number, p.text) for p in pages] == [(1, "page one"), (3, "page three\n")]


def test_a_truncated_long_text_window_is_split_at_a_line(openai_server: OpenAIServer) -> None:
    def behaviour(body: dict[str, Any]) -> Reply:
        return Reply.truncated() if len(request_text(body)) > 2_500 else echo_items(body)

    openai_server.behaviour = behaviour
    po = extract_with_llm(text_document_pages(item_text(150)), settings(openai_server), source_format="text")
    assert [ln.sku for ln in po.lines] == [f"SKU-{n:05d}" for n in range(1, 151)]
    assert po.stats["split_windows"] >= 2 and po.stats["windows"] == 1


def test_text_file_through_extract_file_is_windowed(openai_server: OpenAIServer, tmp_path: Any) -> None:
    path = tmp_path / "note.txt"
    path.write_text(item_text(600), encoding="utf-8")
    openai_server.behaviour = echo_items
    po = extract_file(path, llm=settings(openai_server, window_chars=5_000))
    requests = openai_server.completion_requests()
    assert po.source_format == "text" and len(po.lines) == 600 and len(requests) >= 7
    assert max(len(request_text(r.body)) for r in requests) <= 5_000 + 300


def test_too_many_windows_is_file_too_complex_before_any_request(openai_server: OpenAIServer, tmp_path: Any) -> None:
    path = tmp_path / "huge.txt"
    path.write_text(item_text(30_000), encoding="utf-8")  # ~1.8 MB of text: ~150 windows of 12k characters
    openai_server.behaviour = echo_items
    with pytest.raises(PoflowError) as err:
        extract_file(path, llm=settings(openai_server, max_windows=100))
    assert err.value.code == "file_too_complex" and "POFLOW_LLM_MAX_WINDOWS" in err.value.message
    assert openai_server.completion_requests() == []


@pytest.mark.parametrize("sandbox", ["1", "0"])
def test_bounded_extraction_hands_llm_documents_to_the_parent_with_the_sandbox_on_or_off(
    openai_server: OpenAIServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, sandbox: str
) -> None:
    """The child prepares the pages and this process calls the LLM; with the sandbox off the same code runs
    in-process, and must leave nothing behind: a later plain ``extract_file`` calls the LLM itself."""
    from poflow_dagster.extraction import extract_file_bounded

    monkeypatch.setenv("POFLOW_EXTRACT_SANDBOX", sandbox)
    path = tmp_path / "note.txt"
    path.write_text(item_text(40), encoding="utf-8")
    openai_server.behaviour = echo_items
    bounded = extract_file_bounded(path, llm=settings(openai_server))
    plain = extract_file(path, llm=settings(openai_server))
    assert len(bounded.lines) == len(plain.lines) == 40
    assert len(openai_server.completion_requests()) >= 2
