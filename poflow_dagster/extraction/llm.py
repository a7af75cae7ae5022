"""Read a purchase order with an LLM (OpenAI chat completions + Structured Outputs).

``extract_with_llm`` splits the pages into windows of ``window_pages``, asks the model
for each window concurrently (one shared ``openai.OpenAI`` client, a bounded thread
pool), and merges the answers: header fields from the first window that has them,
totals from the last one, lines in page order with repeats removed.

Failure handling (every failure is a :class:`PoflowError` with a stable code):

* ``finish_reason == "length"`` is never accepted: the window is split in halves; a
  single page that still truncates is retried once with twice the output tokens,
  then ``llm_truncated``;
* malformed / schema-invalid answers are re-asked once, then ``llm_bad_response``;
* a refusal (or the provider's content filter) -> ``llm_refused`` (the refusal text);
* HTTP 401/403 -> ``llm_auth_failed``; 429 after the SDK's retries -> ``llm_rate_limited``;
  connection errors, timeouts and 5xx after the SDK's retries -> ``llm_unavailable``;
  any other rejected request (400/404/422...) -> ``llm_request_rejected``.

The SDK itself retries 408/409/429/5xx and connection errors ``max_retries`` times,
honouring ``Retry-After`` (values > 0 up to 120 s; otherwise exponential back-off from
0.5 s). The API key is never logged and never appears in reprs or error messages.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import openai
import pydantic

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import Issue, ParsedPO
from poflow_dagster.extraction.llm_schema import LLMExtraction, LLMLine, to_parsed_po
from poflow_dagster.extraction.numbers import parse_decimal

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRICES",
    "SYSTEM_PROMPT",
    "LLMPage",
    "LLMSettings",
    "extract_with_llm",
    "price_table",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"

#: USD per 1,000 (input, output) tokens. Extend/override with ``POFLOW_LLM_PRICES``
#: (JSON ``{"model": ["in", "out"]}``); a model missing from the table has no cost.
DEFAULT_PRICES: dict[str, tuple[Decimal, Decimal]] = {
    "gpt-4o-mini": (Decimal("0.00015"), Decimal("0.0006")),
    "gpt-4o": (Decimal("0.0025"), Decimal("0.01")),
    "gpt-4.1-mini": (Decimal("0.0004"), Decimal("0.0016")),
    "gpt-4.1": (Decimal("0.002"), Decimal("0.008")),
}

SYSTEM_PROMPT = """\
You extract purchase orders for a bookkeeping system. You receive some pages of ONE \
purchase order (as text or images) and fill in the JSON schema.
Rules:
- Extract exactly what the document says. Never compute, infer or guess a value that \
is not printed (no line totals from quantity x price, no totals from the lines).
- Money and quantities: plain decimal strings with a dot as decimal separator, without \
currency symbols, codes or thousands separators (e.g. "1234.56", "12").
- Dates: YYYY-MM-DD. Currency: the ISO 4217 code (e.g. "USD", "EUR").
- Use null for anything that is not on these pages or cannot be read.
- Subtotal, tax/VAT, shipping/freight and total rows are totals, never item lines.
- Item lines in reading order; keep SKUs exactly as printed (leading zeros included).
- confidence: 0 to 1, how sure you are the values are exactly what is printed.
"""

_REFUSAL_LIMIT = 300


def price_table() -> dict[str, tuple[Decimal, Decimal]]:
    """The price table: ``DEFAULT_PRICES`` updated with ``POFLOW_LLM_PRICES`` (JSON)."""
    table = dict(DEFAULT_PRICES)
    raw = os.environ.get("POFLOW_LLM_PRICES")
    if not raw:
        return table
    try:
        overrides = json.loads(raw)
        for model, (price_in, price_out) in overrides.items():
            table[str(model)] = (Decimal(str(price_in)), Decimal(str(price_out)))
    except (ValueError, TypeError, InvalidOperation, AttributeError):
        raise PoflowError(
            "llm_config_invalid",
            'POFLOW_LLM_PRICES must be JSON like {"gpt-4o-mini": ["0.00015", "0.0006"]} (USD per 1K tokens)',
        ) from None
    return table


@dataclass(frozen=True)
class LLMSettings:
    """How to reach the model and how to split the work. ``api_key`` is kept out of the repr."""

    api_key: str = field(repr=False)
    base_url: str | None = None
    model: str = DEFAULT_MODEL
    timeout_seconds: float = 60.0
    max_retries: int = 3
    max_concurrency: int = 4
    window_pages: int = 4
    max_output_tokens: int = 4096
    #: USD per 1K tokens. ``None`` = the :func:`price_table` entry for ``model``, looked up when
    #: used (so ``dataclasses.replace(settings, model=...)`` reprices); unknown model -> no cost.
    price_per_1k_input: Decimal | None = None
    price_per_1k_output: Decimal | None = None
    #: Sampling temperature; ``None`` omits it (for models that reject it).
    temperature: float | None = 0.0

    def __post_init__(self) -> None:
        for name in ("max_concurrency", "window_pages", "max_output_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"LLMSettings.{name} must be >= 1")
        if self.max_retries < 0 or self.timeout_seconds <= 0:
            raise ValueError("LLMSettings.max_retries must be >= 0 and timeout_seconds > 0")

    def prices(self) -> tuple[Decimal, Decimal] | None:
        """(input, output) USD per 1K tokens: the explicit prices, else the table's; None if unknown."""
        if self.price_per_1k_input is not None and self.price_per_1k_output is not None:
            return self.price_per_1k_input, self.price_per_1k_output
        return price_table().get(self.model)

    @classmethod
    def from_env(cls, *, api_key: str | None = None) -> LLMSettings | None:
        """Settings from ``OPENAI_API_KEY``/``OPENAI_BASE_URL``/``POFLOW_LLM_*``; None without a key.

        ``api_key`` (e.g. resolved by Dagster from ``dg.EnvVar``) takes precedence over the environment.
        """
        api_key = (api_key or os.environ.get("OPENAI_API_KEY") or "").strip()
        if not api_key:
            return None
        return cls(
            api_key=api_key,
            base_url=(os.environ.get("OPENAI_BASE_URL") or "").strip() or None,
            model=(os.environ.get("POFLOW_LLM_MODEL") or "").strip() or DEFAULT_MODEL,
            max_concurrency=_env_number("POFLOW_LLM_CONCURRENCY", 4, int),
            window_pages=_env_number("POFLOW_LLM_WINDOW_PAGES", 4, int),
            timeout_seconds=_env_number("POFLOW_LLM_TIMEOUT", 60.0, float),
        )


def _env_number(name: str, default: Any, kind: type) -> Any:
    """A positive number from the environment (unset/empty -> default)."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not math.isfinite(value) or value <= 0:
        raise PoflowError("llm_config_invalid", f"{name} must be a positive number, not {raw!r}")
    return value


@dataclass(frozen=True)
class LLMPage:
    """One page of input: its text, or a PNG rendering of it (sent as an image)."""

    number: int
    text: str | None = field(default=None, repr=False)
    png: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.text is None) == (self.png is None):
            raise ValueError("LLMPage needs exactly one of text or png")


# --- orchestration -----------------------------------------------------------------------


@dataclass
class _Stats:
    """Counters shared by the worker threads."""

    calls: int = 0
    retries: int = 0
    split_windows: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class _Context:
    """What every window needs: the client, the settings, the shared counters."""

    client: openai.OpenAI
    settings: LLMSettings
    stats: _Stats
    total_pages: int


def extract_with_llm(
    pages: list[LLMPage],
    settings: LLMSettings,
    *,
    source_format: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> ParsedPO:
    """Extract one purchase order from ``pages`` with the configured model.

    ``on_progress(done_windows, total_windows)`` is called (in the calling thread) as
    each window finishes. Raises :class:`PoflowError` (codes in the module docstring).
    """
    if not pages:
        raise PoflowError("empty_file", "the document has no pages to read")
    started = time.monotonic()
    ordered = sorted(pages, key=lambda page: page.number)
    windows = _chunk(ordered, settings.window_pages)
    stats = _Stats()
    client = _make_client(settings)
    try:
        context = _Context(client, settings, stats, len(ordered))
        answers = _run_windows(context, windows, on_progress)
    finally:
        client.close()
    po, removed = _merge(answers, source_format=source_format)
    po.stats = _stats_dict(stats, settings, windows=len(windows), pages=len(ordered), started=started)
    po.stats["duplicate_lines"] = removed
    return po


def _make_client(settings: LLMSettings) -> openai.OpenAI:
    """One client for all windows; the SDK retries 429/5xx/connection errors itself."""
    return openai.OpenAI(
        api_key=settings.api_key,
        base_url=settings.base_url,
        timeout=settings.timeout_seconds,
        max_retries=settings.max_retries,
    )


def _chunk(pages: list[LLMPage], size: int) -> list[list[LLMPage]]:
    return [pages[i : i + size] for i in range(0, len(pages), size)]


def _run_windows(
    context: _Context,
    windows: list[list[LLMPage]],
    on_progress: Callable[[int, int], None] | None,
) -> list[LLMExtraction]:
    """Run the windows on a bounded pool; answers come back in page order.

    The first failure (or an exception from ``on_progress``) cancels the windows not
    started yet, waits for the running ones, and propagates.
    """
    results: dict[int, list[LLMExtraction]] = {}
    workers = min(context.settings.max_concurrency, len(windows))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poflow-llm") as pool:
        futures = {pool.submit(_extract_window, context, window): i for i, window in enumerate(windows)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_progress is not None:
                    on_progress(len(results), len(windows))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [answer for i in range(len(windows)) for answer in results[i]]


def _extract_window(context: _Context, pages: list[LLMPage]) -> list[LLMExtraction]:
    """Answers for one window: split it in halves while the model's answer is truncated."""
    tokens = context.settings.max_output_tokens
    answer = _ask_until_valid(context, pages, tokens)
    if answer is not None:
        return [answer]
    if len(pages) > 1:
        context.stats.add(split_windows=1)
        middle = len(pages) // 2
        logger.info("LLM answer truncated for pages %s; splitting the window", _page_range(pages))
        return _extract_window(context, pages[:middle]) + _extract_window(context, pages[middle:])
    context.stats.add(retries=1)
    answer = _ask_until_valid(context, pages, tokens * 2)
    if answer is None:
        raise PoflowError(
            "llm_truncated",
            f"the model's answer for page {pages[0].number} did not fit in {tokens * 2} output tokens",
        )
    return [answer]


def _ask_until_valid(context: _Context, pages: list[LLMPage], max_tokens: int) -> LLMExtraction | None:
    """Ask for one window; re-ask once on a malformed answer. ``None`` = truncated."""
    for attempt in (1, 2):
        outcome = _ask(context, pages, max_tokens)
        if not isinstance(outcome, _BadAnswer):
            return outcome
        logger.warning("LLM answer for pages %s was unusable (%s)", _page_range(pages), outcome.reason)
        if attempt == 1:
            context.stats.add(retries=1)
    raise PoflowError(
        "llm_bad_response",
        f"the model twice returned an unusable answer for pages {_page_range(pages)}: {outcome.reason}",
    )


# --- one request -------------------------------------------------------------------------


@dataclass(frozen=True)
class _BadAnswer:
    reason: str


def _ask(context: _Context, pages: list[LLMPage], max_tokens: int) -> LLMExtraction | _BadAnswer | None:
    """One chat-completion call: the parsed answer, a bad answer, or ``None`` if truncated."""
    settings = context.settings
    optional: dict[str, Any] = {} if settings.temperature is None else {"temperature": settings.temperature}
    try:
        raw = context.client.chat.completions.with_raw_response.parse(
            model=settings.model,
            messages=_messages(pages, context.total_pages),
            response_format=LLMExtraction,
            max_completion_tokens=max_tokens,
            **optional,
        )
    except openai.APIError as exc:
        raise _api_error(exc, settings) from None
    context.stats.add(calls=1, retries=raw.retries_taken)
    return _read_answer(context, raw)


def _read_answer(context: _Context, raw: Any) -> LLMExtraction | _BadAnswer | None:
    """Interpret the HTTP answer (usage is counted whatever the outcome)."""
    try:
        completion = raw.parse()
    except openai.LengthFinishReasonError as exc:
        _count_usage(context, exc.completion.usage)
        return None
    except openai.ContentFilterFinishReasonError:
        raise PoflowError("llm_refused", "the provider's content filter stopped the model's answer") from None
    except (pydantic.ValidationError, ValueError, openai.APIResponseValidationError) as exc:
        _count_usage(context, _usage_from_body(raw))
        return _BadAnswer(_reason(exc))
    _count_usage(context, completion.usage)
    if not completion.choices:
        return _BadAnswer("no choices in the answer")
    message = completion.choices[0].message
    if message.refusal:
        raise PoflowError("llm_refused", _shorten(message.refusal, _REFUSAL_LIMIT))
    if message.parsed is None:
        return _BadAnswer("empty answer")
    return message.parsed


def _count_usage(context: _Context, usage: Any) -> None:
    if usage is not None:
        context.stats.add(
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )


def _usage_from_body(raw: Any) -> Any:
    """Usage of an answer whose content could not be parsed (best effort)."""
    try:
        usage = json.loads(raw.text).get("usage") or {}
    except (ValueError, AttributeError):
        return None
    return openai.types.CompletionUsage.model_construct(**usage) if isinstance(usage, dict) else None


def _reason(exc: Exception) -> str:
    """A short, one-line reason for a bad answer (never the answer itself)."""
    if isinstance(exc, pydantic.ValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        kind = first.get("type", "invalid")
        where = ".".join(str(part) for part in first.get("loc", ())) or "answer"
        return "not valid JSON" if kind == "json_invalid" else f"does not match the schema ({where}: {kind})"
    return f"unreadable answer ({type(exc).__name__})"


def _messages(pages: list[LLMPage], total_pages: int) -> list[dict[str, Any]]:
    """System prompt plus one user message: an intro, then each page as text or image_url."""
    intro = (
        f"Pages {_page_range(pages)} of a {total_pages}-page purchase order. Other pages are read "
        "separately: report only what is on these pages (null for header fields and totals that "
        "are not on them)."
    )
    parts: list[dict[str, Any]] = [{"type": "text", "text": intro}]
    for page in pages:
        parts.extend(_page_parts(page))
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": parts}]


def _page_parts(page: LLMPage) -> list[dict[str, Any]]:
    """Content parts for one page (chat-completions wire format)."""
    if page.png is not None:
        url = "data:image/png;base64," + base64.b64encode(page.png).decode("ascii")
        return [
            {"type": "text", "text": f"--- page {page.number} (image) ---"},
            {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
        ]
    return [{"type": "text", "text": f"--- page {page.number} ---\n{page.text}"}]


def _page_range(pages: Sequence[LLMPage]) -> str:
    first, last = pages[0].number, pages[-1].number
    return str(first) if first == last else f"{first}-{last}"


# --- errors ------------------------------------------------------------------------------


def _api_error(exc: openai.APIError, settings: LLMSettings) -> PoflowError:
    """Map an SDK error (after its own retries) to a PoflowError; never echoes the key."""
    retries = f"after {settings.max_retries} retries"
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return PoflowError("llm_auth_failed", f"the LLM provider rejected the API key (HTTP {exc.status_code})")
    if isinstance(exc, openai.RateLimitError):
        if exc.code == "insufficient_quota":
            return PoflowError("llm_rate_limited", "the LLM account has no quota left (HTTP 429 insufficient_quota)")
        return PoflowError("llm_rate_limited", f"the LLM provider is still rate limiting (HTTP 429) {retries}")
    if isinstance(exc, openai.APITimeoutError):
        seconds = f"{settings.timeout_seconds:g} s"
        return PoflowError("llm_unavailable", f"the LLM provider did not answer within {seconds} {retries}")
    if isinstance(exc, openai.APIConnectionError):
        return PoflowError("llm_unavailable", f"could not reach the LLM provider {retries}")
    if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        return PoflowError("llm_unavailable", f"the LLM provider failed (HTTP {exc.status_code}) {retries}")
    status = getattr(exc, "status_code", None)
    detail = _scrub(_shorten(str(exc.message), 200), settings.api_key)
    return PoflowError("llm_request_rejected", f"the LLM provider rejected the request (HTTP {status}): {detail}")


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _shorten(text: str, limit: int) -> str:
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


# --- merge -------------------------------------------------------------------------------

_HEADER_FIELDS = ("po_number", "supplier_name", "order_date", "currency")
_TOTAL_FIELDS = ("subtotal", "tax", "shipping", "total")


def _merge(answers: list[LLMExtraction], *, source_format: str) -> tuple[ParsedPO, int]:
    """Header from the first answer that has it, totals from the last, lines de-duplicated.

    Returns the purchase order and how many repeated lines were dropped.
    """
    fields: dict[str, Any] = {}
    for name in _HEADER_FIELDS:
        fields[name] = next((v for a in answers if _present(v := getattr(a, name))), None)
    for name in _TOTAL_FIELDS:
        fields[name] = next((v for a in reversed(answers) if _present(v := getattr(a, name))), None)
    lines, removed = _dedupe([answer.lines for answer in answers])
    merged = LLMExtraction(
        **fields, lines=lines, confidence=min(answer.confidence for answer in answers)
    )
    po = to_parsed_po(merged, source_format=source_format)
    if removed:
        po.issues.append(
            Issue(
                code="DUPLICATE_LINES_REMOVED",
                severity="info",
                message=f"{removed} repeated line(s) (same SKU, description, quantity and unit cost) were read once",
            )
        )
    return po, removed


def _present(value: str | None) -> bool:
    return value is not None and bool(value.strip())


def _dedupe(windows: list[list[LLMLine]]) -> tuple[list[LLMLine], int]:
    """Drop lines that repeat a line of an earlier window (a continued table, a page read twice).

    Identical lines inside one window are kept: they may be real order lines, and reconciliation
    flags them as ``DUPLICATE_LINE`` for a person to judge.
    """
    earlier: set[tuple[object, ...]] = set()
    kept: list[LLMLine] = []
    removed = 0
    for lines in windows:
        keys = [_line_key(line) for line in lines]
        for line, key in zip(lines, keys, strict=True):
            if key in earlier:
                removed += 1
            else:
                kept.append(line)
        earlier.update(keys)
    return kept, removed


def _line_key(line: LLMLine) -> tuple[object, ...]:
    """Identity of a line: normalised text and numeric values (``12.50`` == ``12.5``)."""

    def text(value: str | None) -> str:
        return " ".join((value or "").split()).casefold()

    def number(value: str | None) -> object:
        parsed = parse_decimal(value) if value is not None else None
        return parsed if parsed is not None else text(value)

    return (text(line.sku), text(line.description), number(line.quantity), number(line.unit_cost))


def _stats_dict(stats: _Stats, settings: LLMSettings, *, windows: int, pages: int, started: float) -> dict[str, Any]:
    """The ``ParsedPO.stats`` of an LLM extraction (cost as a decimal string, or None)."""
    return {
        "windows": windows,
        "pages": pages,
        "calls": stats.calls,
        "retries": stats.retries,
        "split_windows": stats.split_windows,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "cost": _cost(stats, settings),
        "model": settings.model,
        "seconds": round(time.monotonic() - started, 3),
    }


def _cost(stats: _Stats, settings: LLMSettings) -> str | None:
    """USD cost from the price table and the usage reported by the provider (None if unpriced)."""
    prices = settings.prices()
    if prices is None:
        return None
    price_in, price_out = prices
    cost = (Decimal(stats.prompt_tokens) * price_in + Decimal(stats.completion_tokens) * price_out) / 1000
    return format(cost.normalize(), "f") if cost else "0"
