"""Streaming scans: pages rendered window by window in the sandbox child while earlier windows are at the LLM.

The LLM is a local server speaking the OpenAI wire format (``openai_server``), reached through the real
``openai`` client; scans come from ``samples.pdf_documents.make_scanned_pdf`` (black on white, sent as PNG)
and :func:`make_colour_scan` (grey paper grain, sent as JPEG; the server reads each page's number from its
pixels). Ordering claims rest on the back-pressure, not on timing: with one request at a time and one window of credit, page 3 cannot be
rendered before the first window's answer was read (see ``test_the_first_window_is_answered_before_...``).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.reconcile import reconcile
from poflow_dagster.extraction import extract_file, extract_file_bounded, pdf
from poflow_dagster.extraction.llm import LLMPage, LLMSettings, extract_with_llm
from poflow_dagster.extraction.sandbox import SandboxLimits, SandboxStats
from poflow_dagster.samples.pdf_documents import make_scanned_pdf
from poflow_dagster_tests.openai_server import (  # noqa: F401 - the fixture
    API_KEY,
    OpenAIServer,
    Reply,
    decoded_images,
    image_payloads,
    max_overlap,
    openai_server,
    request_text,
)

_PAGE_RE = re.compile(r"--- page (\d+) \(image\) ---")


def page_lines(body: dict[str, Any]) -> Reply:
    """One order line per page the request carries: the answer depends on the pages, not on the call order."""
    pages = [int(n) for n in _PAGE_RE.findall(request_text(body))]
    return Reply.json({
        "po_number": "PO-7788", "supplier_name": "Scan & Co", "order_date": "2026-03-03", "currency": "USD",
        "subtotal": None, "tax": None, "shipping": None, "total": None, "confidence": 0.9,
        "lines": [{"sku": f"P{n:03d}", "description": f"Item on page {n}", "quantity": str(n), "unit_cost": "2.50",
                   "line_total": format(n * 2.5, ".2f"), "confidence": 0.9} for n in pages],
    })


def settings(server: OpenAIServer, **overrides: Any) -> LLMSettings:
    return LLMSettings(api_key=API_KEY, base_url=server.base_url, backoff_seconds=0.01, **overrides)


def without_timing(po: Any) -> Any:
    """The purchase order without the one stat that is a duration."""
    copy = po.model_copy(deep=True)
    copy.stats.pop("seconds", None)
    return copy


class Progress:
    """Records ``on_progress(done, total, message)`` calls (thread-safe; the server thread reads it too)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, str]] = []
        self.lock = threading.Lock()

    def __call__(self, done: int, total: int, message: str | None = None) -> None:
        with self.lock:
            self.calls.append((done, total, message or ""))

    def messages(self) -> list[str]:
        with self.lock:
            return [message for *_, message in self.calls]

    def pages_rendered(self) -> int:
        return sum(1 for message in self.messages() if message.startswith("Rendering page "))


def sandbox_children() -> set[int]:
    """Pids of the sandbox children alive now (children of this process's forkserver)."""
    def children(pid: int) -> list[int]:
        try:
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    return {child for server in children(os.getpid()) for child in children(server)}


def gone(pid: int) -> bool:
    """True once ``pid`` has exited and been reaped (not even a zombie left), waiting up to 10 s."""
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sandbox", ["1", "0"])
def test_a_streamed_scan_gives_the_same_po_as_rendering_all_pages_first(
    openai_server: OpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: str
) -> None:
    """9 pages, 2 a window: the streamed path (sandbox on or off) and the render-all path agree exactly."""
    monkeypatch.setenv("POFLOW_EXTRACT_SANDBOX", sandbox)
    scan = make_scanned_pdf(tmp_path / "scan.pdf", pages=9)
    openai_server.behaviour = page_lines
    llm = settings(openai_server, window_pages=2, max_concurrency=2)
    numbers = list(range(1, 10))
    images = pdf.render_page_images(scan, numbers)
    all_pages = [LLMPage(number=n, image=data, mime_type=mime) for n, (data, mime) in zip(numbers, images)]
    before = reconcile(extract_with_llm(all_pages, llm, source_format="pdf"))

    progress = Progress()
    streamed = extract_file_bounded(scan, llm=llm, on_progress=progress)
    in_process = extract_file(scan, llm=llm)

    assert len(before.lines) == 9 and [line.sku for line in before.lines] == [f"P{n:03d}" for n in numbers]
    assert without_timing(streamed) == without_timing(before) == without_timing(in_process)
    assert streamed.stats["windows"] == 5 and streamed.stats["pages"] == 9
    # Progress: 9 pages and 5 windows as 14 items, one call each, monotonic, with their messages.
    assert [(done, total) for done, total, _ in progress.calls] == [(n, 14) for n in range(1, 15)]
    messages = progress.messages()
    assert [m for m in messages if m.startswith("Rendering")] == [f"Rendering page {n}/9" for n in numbers]
    assert [m for m in messages if m.startswith("Parsing")] == [f"Parsing window {n}/5" for n in range(1, 6)]


@pytest.mark.parametrize("sandbox", ["1", "0"])
def test_the_first_window_is_answered_before_the_last_pages_are_rendered(
    openai_server: OpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: str
) -> None:
    """One request at a time, one page a window: the renderer gets a credit for page 3 only when window 2 is
    sent, i.e. after window 1 was answered. Rendering everything first would report all 5 pages before any
    window, and the server would see the first request only after the last page."""
    monkeypatch.setenv("POFLOW_EXTRACT_SANDBOX", sandbox)
    scan = make_scanned_pdf(tmp_path / "scan.pdf", pages=5)
    progress = Progress()
    rendered_at_first_request: list[int] = []

    def behaviour(body: dict[str, Any]) -> Reply:
        if not rendered_at_first_request:
            rendered_at_first_request.append(progress.pages_rendered())
        return page_lines(body)

    openai_server.behaviour = behaviour
    po = extract_file_bounded(scan, llm=settings(openai_server, window_pages=1, max_concurrency=1),
                              on_progress=progress)

    assert len(po.lines) == 5
    messages = progress.messages()
    assert messages.index("Parsing window 1/5") < messages.index("Rendering page 3/5")
    assert messages.index("Rendering page 5/5") < messages.index("Parsing window 5/5")
    assert rendered_at_first_request and 1 <= rendered_at_first_request[0] <= 2  # of 5 pages


def test_the_time_limit_does_not_count_waiting_for_a_slow_llm(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    """The child waits for credits while the LLM answers slowly: 5 × 1.5 s of LLM time outlasts a 5 s limit,
    which only counts the child's own work (render 5 small pages)."""
    scan = make_scanned_pdf(tmp_path / "scan.pdf", pages=5)
    def slow(body: dict[str, Any]) -> Reply:
        reply = page_lines(body)
        reply.delay = 1.5
        return reply

    openai_server.behaviour = slow
    stats = SandboxStats()
    po = extract_file_bounded(scan, llm=settings(openai_server, window_pages=1, max_concurrency=1),
                              limits=SandboxLimits(timeout_s=5), stats=stats)
    assert len(po.lines) == 5
    requests = openai_server.completion_requests()
    assert len(requests) == 5 and requests[-1].finished - requests[0].started > 5  # the child lived through it
    assert stats.exitcode == 0


def test_a_child_killed_mid_stream_is_the_same_one_line_error_and_is_reaped(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    scan = make_scanned_pdf(tmp_path / "scan.pdf", pages=6)
    openai_server.behaviour = page_lines
    killed: list[int] = []

    def kill_the_child(done: int, total: int, message: str | None = None) -> None:
        if message == "Rendering page 2/6" and not killed:
            (child,) = sandbox_children()
            os.kill(child, signal.SIGKILL)
            killed.append(child)

    with pytest.raises(PoflowError) as error:
        extract_file_bounded(scan, filename="scan.pdf", llm=settings(openai_server, window_pages=1,
                                                                      max_concurrency=1),
                             on_progress=kill_the_child, limits=SandboxLimits(memory_mb=1024, timeout_s=60))
    assert error.value.code == "resource_limit", error.value.message
    assert error.value.message == ("reading scan.pdf was stopped by SIGKILL (memory limit 1024 MB or time limit "
                                   "60 s)")
    assert killed and gone(killed[0]) and sandbox_children() == set()
    assert len(openai_server.completion_requests()) < 6


def test_a_failed_window_cancels_the_rest_and_ends_the_child(openai_server: OpenAIServer, tmp_path: Path) -> None:
    """The first failure wins: the renderer is stopped (not left waiting for a credit) and reaped."""
    scan = make_scanned_pdf(tmp_path / "scan.pdf", pages=8)
    openai_server.behaviour = lambda body: (
        Reply.error(400, "invalid_request") if "--- page 2 (image) ---" in request_text(body) else page_lines(body)
    )
    progress = Progress()
    stats = SandboxStats()
    with pytest.raises(PoflowError) as error:
        extract_file_bounded(scan, llm=settings(openai_server, window_pages=1, max_concurrency=1),
                             on_progress=progress, stats=stats)
    assert error.value.code == "llm_request_rejected" and "\n" not in error.value.message
    assert progress.pages_rendered() < 8 and len(openai_server.completion_requests()) == 2
    assert stats.exitcode is not None and sandbox_children() == set()


def test_a_render_error_in_the_child_keeps_its_code(
    openai_server: OpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that raises while streaming (here: the scan vanished before rendering) fails with one line."""
    scan = make_scanned_pdf(tmp_path / "scan.pdf", pages=3)
    openai_server.behaviour = page_lines
    real_read = pdf.read_pdf

    def read_then_remove(path: Path, **kwargs: Any) -> Any:
        document = real_read(path, **kwargs)
        Path(path).unlink()
        return document

    monkeypatch.setenv("POFLOW_EXTRACT_SANDBOX", "0")  # a monkeypatch reaches the renderer only in-process
    monkeypatch.setattr(pdf, "read_pdf", read_then_remove)
    with pytest.raises(PoflowError) as error:
        extract_file_bounded(scan, filename="scan.pdf", llm=settings(openai_server))
    assert error.value.code == "unreadable_file" and error.value.message.startswith("could not read scan.pdf")
    assert openai_server.completion_requests() == []


def test_page_images_at_the_model_stay_within_the_image_budget(openai_server: OpenAIServer) -> None:
    """Four 1-page windows of 0.6 MB each, 4 requests allowed at once, 1 MB of images allowed at the model:
    one window at a time (a window alone always goes); with the default budget they overlap."""
    def slow_answer(body: dict[str, Any]) -> Reply:
        reply = page_lines(body)
        reply.delay = 0.3
        return reply

    openai_server.behaviour = slow_answer
    pages = [LLMPage(number=n, image=bytes([n]) * 600_000, mime_type="image/png") for n in range(1, 5)]
    budgeted = extract_with_llm(pages, settings(openai_server, window_pages=1, max_concurrency=4,
                                                max_image_mb_in_flight=1.0), source_format="image")
    assert len(budgeted.lines) == 4 and max_overlap(openai_server.completion_requests()) == 1
    openai_server.requests.clear()
    extract_with_llm(pages, settings(openai_server, window_pages=1, max_concurrency=4), source_format="image")
    assert max_overlap(openai_server.completion_requests()) > 1


_BITS, _CELL = 8, 60  # a page number as 8 dark squares (1) or paper (0) across the top of a colour scan page


def make_colour_scan(path: Path, pages: int) -> Path:
    """Image-only pages like a flatbed scanner's (grey paper grain, JPEG in the PDF), the page number printed
    as a bit pattern the server decodes from the image it receives."""
    from PIL import Image, ImageDraw, ImageFont

    from poflow_dagster.samples.pdf_documents import _new_pdf, add_image_page

    document = _new_pdf()
    grain = Image.effect_noise((1240, 1754), 18)
    font = ImageFont.load_default(size=30)
    for number in range(1, pages + 1):
        image = Image.blend(Image.new("L", grain.size, 235), grain, 0.25)
        draw = ImageDraw.Draw(image)
        for bit in range(_BITS):
            if number >> (_BITS - 1 - bit) & 1:
                draw.rectangle((100 + bit * _CELL, 40, 100 + bit * _CELL + _CELL - 10, 90), fill=0)
        for row in range(12):
            draw.text((100, 160 + row * 60), f"{number:03d}-{row:02d}  Scanned item {row}  {row}  {row}.50",
                      fill=20, font=font)
        add_image_page(document, image)
    path.write_bytes(bytes(document.output()))
    return path


def printed_page_number(image: Any) -> int:
    """The page number :func:`make_colour_scan` printed, read from the pixels (any size, any format)."""
    grey = image.convert("L")
    scale = grey.size[0] / 1240
    number = 0
    for bit in range(_BITS):
        x, y = int((100 + bit * _CELL + (_CELL - 10) / 2) * scale), int(65 * scale)
        number = number << 1 | (1 if grey.getpixel((x, y)) < 128 else 0)
    return number


def lines_of_printed_pages(body: dict[str, Any]) -> Reply:
    """One order line per page image, numbered by what is printed on it (not by the prompt's text)."""
    pages = [printed_page_number(image) for image in decoded_images(body)]
    return Reply.json({
        "po_number": "PO-7788", "supplier_name": "Scan & Co", "order_date": None, "currency": "USD",
        "subtotal": None, "tax": None, "shipping": None, "total": None, "confidence": 0.9,
        "lines": [{"sku": f"P{n:03d}", "description": f"Item on page {n}", "quantity": "1", "unit_cost": "2.50",
                   "line_total": "2.50", "confidence": 0.9} for n in pages],
    })


@pytest.mark.parametrize("sandbox", ["1", "0"])
def test_a_colour_scan_goes_as_jpeg_and_every_page_is_read_from_its_pixels(
    openai_server: OpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: str
) -> None:
    """Photo-like pages go as JPEG at full resolution, several times smaller than PNG, and still carry what is
    printed: the server decodes each image with Pillow and reads its page number from the pixels."""
    monkeypatch.setenv("POFLOW_EXTRACT_SANDBOX", sandbox)
    scan = make_colour_scan(tmp_path / "colour.pdf", pages=6)
    openai_server.behaviour = lines_of_printed_pages
    po = extract_file_bounded(scan, llm=settings(openai_server, window_pages=2))

    assert [line.sku for line in po.lines] == [f"P{n:03d}" for n in range(1, 7)]
    payloads = [p for r in openai_server.completion_requests() for p in image_payloads(r.body)]
    assert len(payloads) == 6 and {mime for mime, _ in payloads} == {"image/jpeg"}
    images = [image for r in openai_server.completion_requests() for image in decoded_images(r.body)]
    assert {image.size for image in images} == {(1241, 1754)}  # A4 at 150 dpi: resolution unchanged
    assert max(len(data) for _, data in payloads) < 600_000  # a PNG of such a page is ~1.7 MB


def test_a_clean_scan_stays_png(openai_server: OpenAIServer, tmp_path: Path) -> None:
    scan = make_scanned_pdf(tmp_path / "scan.pdf", pages=2)
    openai_server.behaviour = page_lines
    po = extract_file_bounded(scan, llm=settings(openai_server))
    assert len(po.lines) == 2
    (request,) = openai_server.completion_requests()
    assert [mime for mime, _ in image_payloads(request.body)] == ["image/png", "image/png"]
    assert all(image.mode == "L" for image in decoded_images(request.body))  # black on white: greyscale PNG


def sdk_loaded() -> bool:
    """In the sandbox child: whether the ``openai`` SDK is imported there."""
    import sys

    return "openai" in sys.modules


def test_the_sandbox_child_does_not_carry_the_llm_sdk() -> None:
    """The child plans and renders scans but never calls the model: forked from a forkserver that does not load
    the SDK, it does not carry its ~18 MB (``benchmarks/scan_memory.py``)."""
    from poflow_dagster.extraction.sandbox import run_bounded

    assert run_bounded(sdk_loaded, (), limits=SandboxLimits()) is False
