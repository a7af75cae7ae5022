"""Scanned PDFs, streamed: pages rendered window by window while earlier windows are at the LLM.

A scan needs every page as an image, and rendering is slow and big (at 150 dpi a colour scan's page is
6.5 MB of pixels; encoded, ≈ 0.3 MB of JPEG, see :func:`.pdf.encode_page_image`). Rendering all pages before
the first request made a 50-page scan wait for all of them and hold all of them. Here the pages are rendered lazily, one window (``window_pages``
pages) at a time, and each window goes to the model as soon as it is ready; back-pressure (credits, see
:func:`.llm.extract_windows`) keeps the renderer only a few windows ahead of the model.

* In the sandbox child (:func:`stream_scan`): the window plan goes to the parent as a note, then each page
  (its encoded image) as a note as soon as it is rendered, and each window as an item paid for with a credit
  (:mod:`.sandbox`); the parent reads them in :class:`ChildScanFeed`.
* In-process (sandbox off, or plain :func:`~poflow_dagster.extraction.extract_file`): :class:`LocalScanFeed`
  renders a window in the calling thread whenever the LLM loop has a credit and nothing else to do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.extraction import pdf
from poflow_dagster.extraction.llm import LLMPage, LLMSettings, plan_windows
from poflow_dagster.extraction.sandbox import BoundedRun, StreamChannel

__all__ = ["ChildScanFeed", "LocalScanFeed", "ScanPlan", "plan_scan", "stream_scan"]

Post = Callable[[tuple[Any, ...]], None]


@dataclass(frozen=True)
class ScanPlan:
    """Which pages each window carries (page numbers, in order), and why the document needs the LLM."""

    windows: list[list[int]]
    pages: int
    source_format: str
    why: str


def plan_scan(numbers: list[int], settings: LLMSettings, *, source_format: str, why: str) -> ScanPlan:
    """The windows :func:`.llm.plan_windows` makes of image pages (``file_too_complex`` before any rendering)."""
    windows = plan_windows([LLMPage(number=n, image=b"", mime_type="image/png") for n in numbers], settings)
    return ScanPlan([[page.number for page in window] for window in windows], len(set(numbers)), source_format, why)


def _pages(path: str, plan: ScanPlan) -> Iterator[LLMPage]:
    """The plan's pages in window order, each rendered when asked for."""
    for number, image, mime_type in pdf.iter_page_images(path, [n for window in plan.windows for n in window]):
        yield LLMPage(number=number, image=image, mime_type=mime_type)


def stream_scan(channel: StreamChannel, path: str, plan: ScanPlan) -> None:
    """In the sandbox child: send the plan, then each window's pages as soon as they are rendered.

    A credit is taken *before* a window is rendered (back-pressure); each page goes out as soon as it is
    rendered (so the child holds one page at a time), then the window's item closes it.
    """
    channel.note(("plan", plan))
    pages = _pages(path, plan)
    try:
        for index, window in enumerate(plan.windows):
            channel.acquire()
            for _ in window:
                channel.note(("page", next(pages)))
            channel.send(("window", index))
    finally:
        pages.close()


class ChildScanFeed:
    """The windows a sandbox child streams (:func:`stream_scan`), read by a background thread.

    The thread only moves messages from the pipe to the LLM loop's queue (and the child's death or
    time-out into a ``("failed", error)``), gathering each window's pages; progress and requests stay in
    the loop's threads.
    """

    def __init__(self, run: BoundedRun, plan: ScanPlan) -> None:
        self._run, self._plan = run, plan
        self.windows, self.pages, self.page_items = len(plan.windows), plan.pages, plan.pages
        self._closed = threading.Event()
        self._reader: threading.Thread | None = None
        self._posted = 0

    def start(self, post: Post) -> None:
        self._reader = threading.Thread(target=self._read, args=(post,), name="poflow-scan-feed", daemon=True)
        self._reader.start()

    def _read(self, post: Post) -> None:
        pages: list[LLMPage] = []
        try:
            while not self._closed.is_set():
                kind, payload = self._run.next()
                if kind == "result":
                    return
                if kind == "note" and payload[0] == "page":
                    pages.append(payload[1])
                    post(("page", payload[1].number))
                elif kind == "item":
                    self._posted += 1
                    post(("window", payload[1], pages))
                    pages = []
        except PoflowError as error:
            if not self._closed.is_set():
                post(("failed", error))
        except Exception as error:  # a broken pipe or a bug: one line, like every extraction failure
            if not self._closed.is_set():
                post(("failed", PoflowError("extraction_failed", f"the scan renderer failed: {type(error).__name__}")))

    def grant(self, count: int) -> None:
        self._run.grant(count)

    def step(self) -> bool:
        return False

    def close(self) -> None:
        """Stop reading; end the child unless it already finished (it is reaped by its ``start_bounded``)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._posted < self.windows:  # cancelled mid-way: the child may be waiting for a credit
            self._run.stop()
        if self._reader is not None:
            self._reader.join(30)  # after its last window the child only sends its result
        self._run.stop()


class LocalScanFeed:
    """Windows rendered in the calling thread, one per credit, when the LLM loop is otherwise idle."""

    def __init__(self, path: str, plan: ScanPlan) -> None:
        self._path, self._plan = path, plan
        self.windows, self.pages, self.page_items = len(plan.windows), plan.pages, plan.pages
        self._credits = 0
        self._next = 0
        self._post: Post | None = None
        self._source: Iterator[LLMPage] | None = None

    def start(self, post: Post) -> None:
        self._post = post
        self._source = _pages(self._path, self._plan)

    def grant(self, count: int) -> None:
        self._credits += count

    def step(self) -> bool:
        if self._credits == 0 or self._next >= self.windows or self._source is None or self._post is None:
            return False
        window = []
        for _ in self._plan.windows[self._next]:
            window.append(next(self._source))
            self._post(("page", window[-1].number))
        self._post(("window", self._next, window))
        self._next += 1
        self._credits -= 1
        return True

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
