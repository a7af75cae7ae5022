"""Read a purchase order with an LLM (OpenAI chat completions + Structured Outputs).

``extract_with_llm`` plans windows (at most ``window_pages`` pages and ``window_chars``
characters of text each; a text page longer than that is cut at line boundaries into
parts), asks the model for each window concurrently (one shared ``openai.OpenAI``
client, a bounded thread pool), and merges the answers: header fields from the first
window that has them, totals from the last one, lines in page order with repeats
removed. A plain-text document becomes pages with :func:`text_document_pages` (form
feeds separate pages). More than ``max_windows`` windows -> ``file_too_complex`` before
any request is sent.

Transient faults have one owner, :func:`_call` (the SDK's own retries are off,
``max_retries=0``): HTTP 429 (except ``insufficient_quota``), 408/409, 5xx, timeouts and
connection errors are retried per request up to ``max_retries`` times with exponential
back-off and jitter (from ``backoff_seconds``, at most ``max_backoff_seconds``), or after
the server's ``retry-after-ms`` / ``Retry-After`` (seconds or HTTP date) when it sends
one, while the window's ``retry_budget_seconds`` lasts. A waiting window holds only its
own thread: the other windows keep going. Retries and waits are counted in
``ParsedPO.stats`` (``transient_retries``, ``rate_limited``, ``retry_wait_seconds``).

Failure handling (every failure is a :class:`PoflowError` with a stable code):

* ``finish_reason == "length"`` is never accepted: the window is split in halves (a
  single long text page at a line boundary); a single page that still truncates is
  retried once with twice the output tokens, then ``llm_truncated``;
* malformed / schema-invalid answers are re-asked once, then ``llm_bad_response``;
* a refusal (or the provider's content filter) -> ``llm_refused`` (the refusal text);
* HTTP 401/403 -> ``llm_auth_failed``; 429 when retries or the budget run out (or
  ``insufficient_quota``) -> ``llm_rate_limited``; connection errors, timeouts and 5xx
  when retries or the budget run out -> ``llm_unavailable``; any other rejected request
  (400/404/422...) -> ``llm_request_rejected``; too many windows -> ``file_too_complex``.

The API key is never logged and never appears in reprs or error messages.
"""

from __future__ import annotations

import base64
import collections
import email.utils
import inspect
import json
import logging
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol

import pydantic

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import Issue, ParsedPO
from poflow_dagster.extraction.llm_schema import LLMExtraction, LLMLine, to_parsed_po
from poflow_dagster.extraction.numbers import parse_decimal

if TYPE_CHECKING:
    # The SDK (~18 MB of modules with httpx) is imported only by the functions that make or read requests:
    # the sandbox child imports this module for page plans and its forkserver preloads it, and every child
    # forked from there would carry the SDK's memory without ever using it (benchmarks/scan_memory.py).
    import openai

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRICES",
    "SYSTEM_PROMPT",
    "LLMPage",
    "LLMSettings",
    "ListFeed",
    "WindowFeed",
    "extract_windows",
    "extract_with_llm",
    "plan_windows",
    "price_table",
    "text_document_pages",
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
- barcode: the item's UPC / EAN / GTIN (a column such as EAN, UPC, GTIN, Barcode), digits as printed \
with leading zeros; null if the line has none. The supplier's item code is the SKU, not the barcode.
- document_type from the title (Purchase Order/Bestellung: purchase_order; Invoice/Rechnung/Facture: invoice; \
Order confirmation: order_confirmation; Delivery note: delivery_note; Quote/Angebot: quote); null if untitled.
- prices_include_tax: true only if the document says prices include VAT/tax, false if it says net/excl.
- unit: the unit printed with a line's quantity (kg, pcs, h...); discount: money off a line, when printed.
- Document-level discount (allowance) and charges (handling, insurance; not shipping) only when printed.
- confidence: 0 to 1, how sure you are the values are exactly what is printed.
"""

_REFUSAL_LIMIT = 300

#: Characters of text per window (a ~12k-character window is ~3k input tokens).
DEFAULT_WINDOW_CHARS = 12_000
#: Windows per document; more -> ``file_too_complex`` (200 = a 200-page scan one page per window).
DEFAULT_MAX_WINDOWS = 200
#: Retries of one request on 429/5xx/timeouts/connection errors, and the retry time budget of one window.
DEFAULT_MAX_RETRIES = 5
DEFAULT_RETRY_BUDGET_SECONDS = 180.0
#: Megabytes of encoded page images at the model at once (see ``LLMSettings.max_image_mb_in_flight``).
DEFAULT_MAX_IMAGE_MB_IN_FLIGHT = 16.0
#: A truncated text piece shorter than this is not split again (double output tokens instead).
_MIN_SPLIT_CHARS = 1_000


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
    #: Retries of one request on a transient fault (429, 408/409, 5xx, timeout, connection error).
    max_retries: int = DEFAULT_MAX_RETRIES
    #: Seconds a window may spend in total before it stops retrying (requests and waits).
    retry_budget_seconds: float = DEFAULT_RETRY_BUDGET_SECONDS
    #: First back-off without a server hint; doubles per retry (jitter 50-100 %), at most ``max_backoff_seconds``.
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    max_concurrency: int = 4
    window_pages: int = 4
    window_chars: int = DEFAULT_WINDOW_CHARS
    max_windows: int = DEFAULT_MAX_WINDOWS
    #: Megabytes of page images (as encoded: PNG or JPEG) at the model at once: a window that would go beyond
    #: waits for one to return (one window always goes). Each image is held ~3.7 times while its request runs
    #: (bytes, base64 data URL, request body), so this bounds a scan's memory: at 150 dpi a clean page is
    #: ~80 KB of PNG, a colour scan's page ~0.3 MB of JPEG, so 16 MB lets 4 windows of either go at once.
    max_image_mb_in_flight: float = DEFAULT_MAX_IMAGE_MB_IN_FLIGHT
    max_output_tokens: int = 4096
    #: USD per 1K tokens. ``None`` = the :func:`price_table` entry for ``model``, looked up when
    #: used (so ``dataclasses.replace(settings, model=...)`` reprices); unknown model -> no cost.
    price_per_1k_input: Decimal | None = None
    price_per_1k_output: Decimal | None = None
    #: Sampling temperature; ``None`` omits it (for models that reject it).
    temperature: float | None = 0.0

    def __post_init__(self) -> None:
        for name in ("max_concurrency", "window_pages", "window_chars", "max_windows", "max_output_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"LLMSettings.{name} must be >= 1")
        if self.max_retries < 0 or self.backoff_seconds < 0 or self.max_backoff_seconds < 0:
            raise ValueError("LLMSettings.max_retries, backoff_seconds and max_backoff_seconds must be >= 0")
        if self.timeout_seconds <= 0 or self.retry_budget_seconds <= 0 or self.max_image_mb_in_flight <= 0:
            raise ValueError("LLMSettings.timeout_seconds, retry_budget_seconds and max_image_mb_in_flight must be > 0")

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
            max_retries=_env_number("POFLOW_LLM_MAX_RETRIES", DEFAULT_MAX_RETRIES, int, allow_zero=True),
            retry_budget_seconds=_env_number("POFLOW_LLM_RETRY_BUDGET", DEFAULT_RETRY_BUDGET_SECONDS, float),
            window_chars=_env_number("POFLOW_LLM_WINDOW_CHARS", DEFAULT_WINDOW_CHARS, int),
            max_windows=_env_number("POFLOW_LLM_MAX_WINDOWS", DEFAULT_MAX_WINDOWS, int),
            max_image_mb_in_flight=_env_number("POFLOW_LLM_IMAGE_MB_IN_FLIGHT", DEFAULT_MAX_IMAGE_MB_IN_FLIGHT, float),
        )


def _env_number(name: str, default: Any, kind: type, *, allow_zero: bool = False) -> Any:
    """A positive (or, with ``allow_zero``, non-negative) number from the environment; unset/empty -> default."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind_text = "a non-negative" if allow_zero else "a positive"
        raise PoflowError("llm_config_invalid", f"{name} must be {kind_text} number, not {raw!r}")
    return value


@dataclass(frozen=True)
class LLMPage:
    """One page of input: its text, or an image of it (``image`` bytes of ``mime_type``, e.g. ``image/jpeg``).

    ``part`` names a piece of a long text page (e.g. ``"part 2 of 5"``); ``None`` = the whole page.
    """

    number: int
    text: str | None = field(default=None, repr=False)
    image: bytes | None = field(default=None, repr=False)
    mime_type: str | None = None
    part: str | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise ValueError("LLMPage needs exactly one of text or image")
        if (self.image is None) != (self.mime_type is None) or not (self.mime_type or "image/").startswith("image/"):
            raise ValueError("LLMPage needs an image/* mime_type with an image, and none with text")

    @property
    def label(self) -> str:
        """``"3"``, or ``"3 (part 2 of 5)"`` for a piece of page 3."""
        return str(self.number) if self.part is None else f"{self.number} ({self.part})"


def text_document_pages(text: str) -> list[LLMPage]:
    """A plain-text document as pages: form feeds separate pages; blank pages are left out.

    Pages longer than a window are cut into parts by :func:`extract_with_llm`, so any size is safe here.
    """
    return [LLMPage(number=n, text=piece) for n, piece in enumerate(text.split("\f"), start=1) if piece.strip()]


# --- orchestration -----------------------------------------------------------------------


@dataclass
class _Stats:
    """Counters shared by the worker threads."""

    calls: int = 0
    retries: int = 0
    transient_retries: int = 0
    rate_limited: int = 0
    retry_wait_seconds: float = 0.0
    split_windows: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class _Cancelled(Exception):
    """A window stopped waiting because another window already failed the document."""


@dataclass(frozen=True)
class _Context:
    """What every window needs: the client, the settings, the shared counters, the stop signal."""

    client: openai.OpenAI
    settings: LLMSettings
    stats: _Stats
    total_pages: int
    stop: threading.Event = field(default_factory=threading.Event)


def extract_with_llm(
    pages: list[LLMPage],
    settings: LLMSettings,
    *,
    source_format: str,
    on_progress: Callable[..., None] | None = None,
) -> ParsedPO:
    """Extract one purchase order from ``pages`` with the configured model.

    ``on_progress(done_windows, total_windows, message)`` is called (in the calling thread) as
    each window finishes (a callback taking only ``(done, total)`` is called so). Raises
    :class:`PoflowError` (codes in the module docstring).
    """
    if not pages:
        raise PoflowError("empty_file", "the document has no pages to read")
    ordered = sorted(pages, key=lambda page: page.number)
    feed = ListFeed(plan_windows(ordered, settings), total_pages=len({page.number for page in ordered}))
    po = extract_windows(feed, settings, source_format=source_format, on_progress=on_progress)
    po.stats["text_chars"] = _text_chars(ordered)
    return po


class WindowFeed(Protocol):
    """Where the windows of one document come from: all at once (:class:`ListFeed`) or as they are made.

    :func:`extract_windows` calls ``start(post)`` once, then ``grant(n)`` whenever it can hold ``n`` more
    windows, and ``step()`` when it has nothing else to do (a feed that prepares windows in the calling
    thread does it there; others return ``False``); ``close()`` always, last. The feed calls ``post`` with
    ``("page", number)`` when a page is ready (progress), ``("window", index, pages)`` for a window (in plan
    order), and ``("failed", error)`` if it cannot go on. ``post`` may be called from any thread.
    """

    windows: int  # how many windows the plan has
    pages: int  # pages of the document (for the prompt)
    page_items: int  # pages reported as progress items (0: only windows are)

    def start(self, post: Callable[[tuple[Any, ...]], None]) -> None: ...

    def grant(self, count: int) -> None: ...

    def step(self) -> bool: ...

    def close(self) -> None: ...


class ListFeed:
    """A feed of windows that are all in memory already."""

    def __init__(self, windows: list[list[LLMPage]], *, total_pages: int) -> None:
        self._windows = windows
        self.windows, self.pages, self.page_items = len(windows), total_pages, 0

    def start(self, post: Callable[[tuple[Any, ...]], None]) -> None:
        for index, window in enumerate(self._windows):
            post(("window", index, window))

    def grant(self, count: int) -> None:
        """All windows were posted at start."""

    def step(self) -> bool:
        return False

    def close(self) -> None:
        """Nothing to release."""


def extract_windows(
    feed: WindowFeed,
    settings: LLMSettings,
    *,
    source_format: str,
    on_progress: Callable[..., None] | None = None,
) -> ParsedPO:
    """Extract one purchase order from the windows ``feed`` delivers, sending each to the model as it arrives.

    Progress items are the feed's pages (``"Rendering page 4/50"``) and the windows (``"Parsing window 2/13"``):
    ``on_progress(done, pages + windows, message)``, always in the calling thread. The feed is closed on
    the way out, whatever happens (a failed window cancels the rest and stops the feed).
    """
    started = time.monotonic()
    stats = _Stats()
    client = _make_client(settings)
    try:
        context = _Context(client, settings, stats, feed.pages)
        answers = _run_windows(context, feed, _progress_caller(on_progress))
    finally:
        feed.close()
        client.close()
    po, removed = _merge(answers, source_format=source_format)
    po.stats = _stats_dict(stats, settings, windows=feed.windows, pages=feed.pages, started=started)
    po.stats["text_chars"] = 0
    po.stats["duplicate_lines"] = removed
    return po


def _progress_caller(on_progress: Callable[..., None] | None) -> Callable[[int, int, str], None] | None:
    """``on_progress`` as a ``(done, total, message)`` callable; a callback taking two arguments gets two."""
    if on_progress is None:
        return None
    try:
        inspect.signature(on_progress).bind(0, 0, "")
    except TypeError:
        return lambda done, total, message: on_progress(done, total)
    except ValueError:  # no signature (a builtin): the documented two-argument form
        return lambda done, total, message: on_progress(done, total)
    return on_progress


def _make_client(settings: LLMSettings) -> openai.OpenAI:
    """One client for all windows. Its own retries are off: :func:`_call` owns retrying."""
    import openai

    return openai.OpenAI(
        api_key=settings.api_key,
        base_url=settings.base_url,
        timeout=settings.timeout_seconds,
        max_retries=0,
    )


# --- windows -----------------------------------------------------------------------------


def plan_windows(pages: list[LLMPage], settings: LLMSettings) -> list[list[LLMPage]]:
    """Cut long text pages into parts, then group pages into windows of bounded pages and characters.

    Raises ``file_too_complex`` when the document needs more than ``settings.max_windows`` windows
    (checked on a lower bound first, so a huge text is refused before it is cut up).
    """
    _check_window_count(_minimum_windows(pages, settings), settings, pages, at_least=True)
    pieces = [piece for page in pages for piece in _split_page(page, settings.window_chars)]
    windows = _pack(pieces, settings.window_pages, settings.window_chars)
    _check_window_count(len(windows), settings, pages, at_least=False)
    return windows


def _minimum_windows(pages: list[LLMPage], settings: LLMSettings) -> int:
    """No plan can use fewer windows than this (page count and text size)."""
    by_pages = math.ceil(len(pages) / settings.window_pages)
    return max(by_pages, math.ceil(_text_chars(pages) / settings.window_chars))


def _check_window_count(count: int, settings: LLMSettings, pages: list[LLMPage], *, at_least: bool) -> None:
    if count <= settings.max_windows:
        return
    size = f"{_text_chars(pages):,} characters of text" if _text_chars(pages) else f"{len(pages)} pages"
    raise PoflowError(
        "file_too_complex",
        f"the document ({size}) would need {'at least ' if at_least else ''}{count:,} LLM requests; "
        f"the limit is {settings.max_windows} (POFLOW_LLM_MAX_WINDOWS)",
    )


def _text_chars(pages: Sequence[LLMPage]) -> int:
    return sum(len(page.text) for page in pages if page.text is not None)


def _split_page(page: LLMPage, max_chars: int) -> list[LLMPage]:
    """A text page longer than ``max_chars`` as numbered parts (cut at line ends); other pages as they are."""
    if page.text is None or len(page.text) <= max_chars:
        return [page]
    chunks = _split_text(page.text, max_chars)
    if len(chunks) == 1:
        return [LLMPage(number=page.number, text=chunks[0], part=page.part)]
    prefix = f"{page.part}, " if page.part else ""
    return [
        LLMPage(number=page.number, text=chunk, part=f"{prefix}part {i} of {len(chunks)}")
        for i, chunk in enumerate(chunks, start=1)
    ]


def _split_text(text: str, max_chars: int) -> list[str]:
    """Non-blank chunks of at most ``max_chars``, cut after whole lines (an overlong line is cut hard)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:
            chunks.append(line[:max_chars])
            line = line[max_chars:]
        if current and size + len(line) > max_chars:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append("".join(current))
    return [chunk for chunk in chunks if chunk.strip()]


def _pack(pieces: list[LLMPage], max_pages: int, max_chars: int) -> list[list[LLMPage]]:
    """Consecutive pieces into windows of at most ``max_pages`` pieces and ``max_chars`` characters of text."""
    windows: list[list[LLMPage]] = []
    current: list[LLMPage] = []
    size = 0
    for piece in pieces:
        length = len(piece.text) if piece.text is not None else 0
        if current and (len(current) >= max_pages or size + length > max_chars):
            windows.append(current)
            current, size = [], 0
        current.append(piece)
        size += length
    if current:
        windows.append(current)
    return windows


def _halves(pages: list[LLMPage]) -> tuple[list[LLMPage], list[LLMPage]] | None:
    """Two smaller windows for a truncated answer: halves of the pages, or of one long text page."""
    if len(pages) > 1:
        middle = len(pages) // 2
        return pages[:middle], pages[middle:]
    page = pages[0]
    if page.text is None or len(page.text) < _MIN_SPLIT_CHARS:
        return None
    lines = page.text.splitlines(keepends=True)
    if len(lines) < 2:
        return None
    middle = len(lines) // 2
    prefix = f"{page.part}, " if page.part else ""
    first, second = "".join(lines[:middle]), "".join(lines[middle:])
    return (
        [LLMPage(number=page.number, text=first, part=f"{prefix}first half")],
        [LLMPage(number=page.number, text=second, part=f"{prefix}second half")],
    )


#: Windows a feed may have ready (or in the making) beyond those at the model: back-pressure on a scan's
#: renderer. Two keep the model fed (a window renders in under a second, a vision request takes longer) and bound what
#: waits in memory (a window of a 150-dpi colour scan is ~1.3 MB of JPEG); ``benchmarks/scan_memory.py``.
PREFETCH_WINDOWS = 2


def _run_windows(
    context: _Context,
    feed: WindowFeed,
    on_progress: Callable[[int, int, str], None] | None,
) -> list[LLMExtraction]:
    """Send the feed's windows to a bounded pool as they arrive; answers come back in page order.

    At most ``max_concurrency`` windows, and ``max_image_mb_in_flight`` of page images, are at the model;
    the feed is never more than ``PREFETCH_WINDOWS`` windows ahead of them (made, in transit or waiting
    here): it starts with that many credits and gets one more each time a window is sent to the model.
    Everything but the requests themselves happens in the calling thread (progress included). The first failure
    (of a window, of the feed, or an exception from ``on_progress``) cancels the windows not started
    yet, wakes the ones waiting to retry, waits for the running ones, and propagates.
    """
    total = feed.windows
    workers = min(context.settings.max_concurrency, total)
    items = feed.page_items + total
    events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    results: dict[int, list[LLMExtraction]] = {}
    waiting: collections.deque[tuple[int, list[LLMPage]]] = collections.deque()
    running: dict[Future[list[LLMExtraction]], int] = {}
    rendered = 0
    granted = min(total, PREFETCH_WINDOWS)
    image_budget = context.settings.max_image_mb_in_flight * 1_048_576
    image_bytes: dict[Future[list[LLMExtraction]], int] = {}

    def report(message: str) -> None:
        if on_progress is not None:
            on_progress(rendered + len(results), items, message)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poflow-llm") as pool:
        try:
            feed.start(events.put)
            feed.grant(granted)
            while len(results) < total:
                if events.empty() and feed.step():
                    continue
                event = events.get()
                if event[0] == "page":
                    rendered += 1
                    report(f"Rendering page {rendered}/{feed.page_items}")
                elif event[0] == "window":
                    waiting.append((event[1], event[2]))
                elif event[0] == "done":
                    future = event[1]
                    image_bytes.pop(future, None)
                    results[running.pop(future)] = future.result()
                    report(f"Parsing window {len(results)}/{total}")
                else:  # "failed"
                    raise event[1]
                while waiting and len(running) < workers and (
                    not running or sum(image_bytes.values()) + _image_bytes(waiting[0][1]) <= image_budget
                ):
                    index, window = waiting.popleft()
                    future = pool.submit(_run_window, context, window)
                    running[future] = index
                    image_bytes[future] = _image_bytes(window)
                    future.add_done_callback(lambda done: events.put(("done", done)))
                    if granted < total:
                        feed.grant(1)
                        granted += 1
        except BaseException:
            context.stop.set()
            feed.close()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [answer for i in range(total) for answer in results[i]]


def _image_bytes(window: list[LLMPage]) -> int:
    return sum(len(page.image) for page in window if page.image is not None)


def _run_window(context: _Context, pages: list[LLMPage]) -> list[LLMExtraction]:
    """One window with its own retry time budget (starting now)."""
    return _extract_window(context, pages, deadline=time.monotonic() + context.settings.retry_budget_seconds)


def _extract_window(context: _Context, pages: list[LLMPage], *, deadline: float) -> list[LLMExtraction]:
    """Answers for one window: split it in halves while the model's answer is truncated."""
    tokens = context.settings.max_output_tokens
    answer = _ask_until_valid(context, pages, tokens, deadline)
    if answer is not None:
        return [answer]
    halves = _halves(pages)
    if halves is not None:
        context.stats.add(split_windows=1)
        logger.info("LLM answer truncated for pages %s; splitting the window", _page_range(pages))
        first, second = halves
        return _extract_window(context, first, deadline=deadline) + _extract_window(context, second, deadline=deadline)
    context.stats.add(retries=1)
    answer = _ask_until_valid(context, pages, tokens * 2, deadline)
    if answer is None:
        raise PoflowError(
            "llm_truncated",
            f"the model's answer for page {_page_range(pages)} did not fit in {tokens * 2} output tokens",
        )
    return [answer]


def _ask_until_valid(
    context: _Context, pages: list[LLMPage], max_tokens: int, deadline: float
) -> LLMExtraction | None:
    """Ask for one window; re-ask once on a malformed answer. ``None`` = truncated."""
    for attempt in (1, 2):
        outcome = _ask(context, pages, max_tokens, deadline)
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


def _ask(
    context: _Context, pages: list[LLMPage], max_tokens: int, deadline: float
) -> LLMExtraction | _BadAnswer | None:
    """One chat-completion exchange: the parsed answer, a bad answer, or ``None`` if truncated."""
    settings = context.settings
    optional: dict[str, Any] = {} if settings.temperature is None else {"temperature": settings.temperature}
    messages = _messages(pages, context.total_pages)

    def send(attempt: int) -> Any:
        return context.client.chat.completions.with_raw_response.parse(
            model=settings.model,
            messages=messages,
            response_format=LLMExtraction,
            max_completion_tokens=max_tokens,
            extra_headers={"x-stainless-retry-count": str(attempt)},
            **optional,
        )

    raw = _call(context, send, pages, deadline)
    context.stats.add(calls=1)
    return _read_answer(context, raw)


def _call(context: _Context, send: Callable[[int], Any], pages: list[LLMPage], deadline: float) -> Any:
    """``send(attempt)`` until it answers: the one retry layer for transient faults.

    Retries 429/408/409/5xx, timeouts and connection errors up to ``max_retries`` times while
    the window's budget (``deadline``) lasts, waiting as the server asks or with back-off.
    """
    import openai

    settings = context.settings
    attempt = 0
    while True:
        if context.stop.is_set():
            raise _Cancelled()
        try:
            return send(attempt)
        except openai.APIError as exc:
            if not _is_transient(exc):
                raise _api_error(exc, settings) from None
            wait = _retry_wait(exc, attempt, settings)
            why_not = _why_no_retry(attempt, wait, deadline, settings)
            if why_not is not None:
                raise _api_error(exc, settings, tried=why_not) from None
            logger.warning(
                "LLM %s for pages %s; retry %d of %d in %.2f s",
                _fault(exc), _page_range(pages), attempt + 1, settings.max_retries, wait,
            )
            rate_limited = int(isinstance(exc, openai.RateLimitError))
            context.stats.add(retries=1, transient_retries=1, rate_limited=rate_limited, retry_wait_seconds=wait)
            if context.stop.wait(wait):
                raise _Cancelled() from None
            attempt += 1


def _is_transient(exc: openai.APIError) -> bool:
    """Worth retrying: timeouts, connection errors, 429 (not an exhausted quota), 408/409, 5xx."""
    import openai

    if isinstance(exc, openai.APIConnectionError):
        return True
    if not isinstance(exc, openai.APIStatusError):
        return False
    should_retry = (exc.response.headers.get("x-should-retry") or "").strip().lower()
    if should_retry in ("true", "false"):
        return should_retry == "true"
    if isinstance(exc, openai.RateLimitError):
        return exc.code != "insufficient_quota"
    return exc.status_code in (408, 409) or exc.status_code >= 500


def _retry_wait(exc: openai.APIError, attempt: int, settings: LLMSettings) -> float:
    """Seconds to wait before retry ``attempt + 1``: the server's hint (plus up to 10 %), else back-off."""
    hint = _retry_after(exc)
    if hint is not None:
        return hint + random.uniform(0, 0.1 * hint)
    backoff = min(settings.max_backoff_seconds, settings.backoff_seconds * 2 ** min(attempt, 30))
    return backoff * random.uniform(0.5, 1.0)


def _retry_after(exc: openai.APIError) -> float | None:
    """The server's ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date) in seconds, if usable."""
    import openai

    response = getattr(exc, "response", None)
    if not isinstance(exc, openai.APIStatusError) or response is None:
        return None
    headers = response.headers
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name) or "nan") / divisor
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            return value
    return _http_date_delay(headers.get("retry-after"))


def _http_date_delay(value: str | None) -> float | None:
    """Seconds until an HTTP date (``Retry-After: Wed, 21 Oct 2026 07:28:00 GMT``); None if unparsable."""
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - time.time())


def _why_no_retry(attempt: int, wait: float, deadline: float, settings: LLMSettings) -> str | None:
    """Why the request must not be retried now (``None`` = retry after ``wait``)."""
    tries = f"after {attempt + 1} attempt{'s' if attempt else ''}"
    if attempt >= settings.max_retries:
        return tries
    remaining = deadline - time.monotonic()
    if wait > remaining:
        budget = f"{settings.retry_budget_seconds:g} s"
        return f"{tries} (the next try, in {wait:.1f} s, would pass the window's retry budget of {budget})"
    return None


def _fault(exc: openai.APIError) -> str:
    """A short name for a transient fault (for logs)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    return f"HTTP {getattr(exc, 'status_code', '?')}"


def _read_answer(context: _Context, raw: Any) -> LLMExtraction | _BadAnswer | None:
    """Interpret the HTTP answer (usage is counted whatever the outcome)."""
    import openai

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
    import openai

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
        f"{_describe(pages)} of a {total_pages}-page purchase order. Other pages and parts are read "
        "separately: report only what is in this excerpt (null for header fields and totals that "
        "are not in it)."
    )
    parts: list[dict[str, Any]] = [{"type": "text", "text": intro}]
    for page in pages:
        parts.extend(_page_parts(page))
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": parts}]


def _describe(pages: Sequence[LLMPage]) -> str:
    """``Page 3``, ``Pages 1-4`` or ``Page 2 (part 1 of 3) to page 3``."""
    if len(pages) == 1:
        return f"Page {pages[0].label}"
    if all(page.part is None for page in pages):
        return f"Pages {_page_range(pages)}"
    return f"Page {pages[0].label} to page {pages[-1].label}"


def _page_parts(page: LLMPage) -> list[dict[str, Any]]:
    """Content parts for one page (chat-completions wire format)."""
    if page.image is not None:
        url = f"data:{page.mime_type};base64,{base64.b64encode(page.image).decode('ascii')}"
        return [
            {"type": "text", "text": f"--- page {page.label} (image) ---"},
            {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
        ]
    return [{"type": "text", "text": f"--- page {page.label} ---\n{page.text}"}]


def _page_range(pages: Sequence[LLMPage]) -> str:
    first, last = pages[0].label, pages[-1].label
    return first if first == last else f"{first}-{last}"


# --- errors ------------------------------------------------------------------------------


def _api_error(exc: openai.APIError, settings: LLMSettings, *, tried: str = "at once") -> PoflowError:
    """Map an SDK error to a PoflowError (``tried``: how many attempts were made); never echoes the key."""
    import openai

    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return PoflowError("llm_auth_failed", f"the LLM provider rejected the API key (HTTP {exc.status_code})")
    if isinstance(exc, openai.RateLimitError):
        if exc.code == "insufficient_quota":
            return PoflowError("llm_rate_limited", "the LLM account has no quota left (HTTP 429 insufficient_quota)")
        return PoflowError("llm_rate_limited", f"the LLM provider is still rate limiting (HTTP 429) {tried}")
    if isinstance(exc, openai.APITimeoutError):
        seconds = f"{settings.timeout_seconds:g} s"
        return PoflowError("llm_unavailable", f"the LLM provider did not answer within {seconds} {tried}")
    if isinstance(exc, openai.APIConnectionError):
        return PoflowError("llm_unavailable", f"could not reach the LLM provider {tried}")
    if isinstance(exc, openai.APIStatusError) and (exc.status_code >= 500 or _is_transient(exc)):
        return PoflowError("llm_unavailable", f"the LLM provider failed (HTTP {exc.status_code}) {tried}")
    status = getattr(exc, "status_code", None)
    detail = _scrub(_shorten(str(exc.message), 200), settings.api_key)
    return PoflowError("llm_request_rejected", f"the LLM provider rejected the request (HTTP {status}): {detail}")


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _shorten(text: str, limit: int) -> str:
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


# --- merge -------------------------------------------------------------------------------

_HEADER_FIELDS = ("po_number", "supplier_name", "order_date", "currency", "document_type", "prices_include_tax")
_TOTAL_FIELDS = ("subtotal", "discount", "charges", "tax", "shipping", "total")


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


def _present(value: str | bool | None) -> bool:
    return value is not None and (not isinstance(value, str) or bool(value.strip()))


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
        "transient_retries": stats.transient_retries,
        "rate_limited": stats.rate_limited,
        "retry_wait_seconds": round(stats.retry_wait_seconds, 3),
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
