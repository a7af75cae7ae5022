"""Streaming scans: peak memory and wall time of a 50-page scan, render-all (before) vs streamed (now).

    .venv/bin/python benchmarks/scan_memory.py [--pages 50] [--latency 2.0] [--repeat 1] [--kinds colour,clean]
        [--modes render-all,streamed,streamed-8]

Two 50-page scans are generated: ``colour`` (noisy grey paper, JPEG pages like a flatbed scanner's, ~16 MB;
a rendered page is sent as ~0.3 MB of JPEG, it was ~1.7 MB of PNG) and ``clean``
(``samples.pdf_documents.make_scanned_pdf``: black text on white, ~80 KB of greyscale PNG a rendered page). Each
mode runs in a fresh worker process (so one mode's freed memory cannot lower or raise the other's),
alternating, ``--repeat`` times each; the local OpenAI-compatible server runs here, outside the measured
processes, and answers each request after ``--latency`` seconds.

* ``render-all`` is the code before streaming: the sandbox child renders every page
  (``pdf.render_page_images``) and returns them over the pipe; then the parent calls the LLM
  (``llm.extract_with_llm``).
* ``streamed`` is ``extract_file_bounded``: the child renders window by window under back-pressure
  while the parent sends earlier windows to the LLM (default settings: 4 requests at once, at most 16 MB
  of page images at the model); ``streamed-8`` allows 8 MB of images at the model (one window of a colour
  scan at a time, still four of a clean one).

Memory is polled every 20 ms over the worker's process tree (the worker, the multiprocessing
forkserver and the sandbox child): **peak RSS of worker + sandbox child** (the child's RSS includes the
~85 MB of preloaded modules it shares with the forkserver), the peak of their summed PSS (shared pages
split between the processes sharing them), and the tree's PSS with the forkserver (an idle fork parent
that every extraction of the process shares; its RSS is shown apart).
Also: seconds until the first LLM request and the wall time of the extraction (the ``openai`` SDK is
imported before the clock starts, as in a worker process that has made LLM calls before). Both modes must give
the same purchase order (checked).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poflow_dagster_tests.openai_server import API_KEY, Reply, request_text, start_openai_server  # noqa: E402

_PAGE_RE = re.compile(r"--- page (\d+) \(image\) ---")


def make_colour_scan(path: Path, pages: int) -> Path:
    """Image-only pages like a flatbed scanner's: grey paper grain, text, JPEG-compressed, A4 at 150 dpi."""
    from PIL import Image, ImageDraw, ImageFont

    from poflow_dagster.samples.pdf_documents import _new_pdf

    document = _new_pdf()
    grain = Image.effect_noise((1240, 1754), 18)
    font = ImageFont.load_default(size=30)
    for number in range(1, pages + 1):
        image = Image.blend(Image.new("L", (1240, 1754), 235), grain, 0.25)
        draw = ImageDraw.Draw(image)
        lines = ["PURCHASE ORDER  PO-5050", "Supplier: Scan & Co", "SKU    Description    Qty    Price"]
        lines += [f"{number:03d}-{i:02d}  Scanned item {i}   {i}   {i}.50" for i in range(1, 18)]
        lines += [f"Page {number} of {pages}"]
        for row, text in enumerate(lines):
            draw.text((100, 100 + row * 60), text, fill=20, font=font)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=80)
        document.add_page()
        document.image(buffer, x=0, y=0, w=210, h=297)
    path.write_bytes(bytes(document.output()))
    return path


def answer(body: dict[str, Any]) -> Reply:
    """One order line per page the request carries (deterministic whatever the order of requests)."""
    pages = [int(n) for n in _PAGE_RE.findall(request_text(body))]
    return Reply.json({
        "po_number": "PO-5050", "supplier_name": "Scan & Co", "order_date": None, "currency": "USD",
        "subtotal": None, "tax": None, "shipping": None, "total": None, "confidence": 0.9,
        "lines": [{"sku": f"P{n:03d}", "description": f"Item on page {n}", "quantity": "1", "unit_cost": "2.50",
                   "line_total": "2.50", "confidence": 0.9} for n in pages],
    }, delay=LATENCY)


LATENCY = 2.0


# --- the worker (one mode, one process) ------------------------------------------------------------


def _render_all(path: str) -> list[Any]:
    """The sandbox child's work before streaming: every page rendered, all returned at once."""
    from poflow_dagster.extraction import pdf
    from poflow_dagster.extraction.llm import LLMPage

    numbers = [page.number for page in pdf.read_pdf(Path(path)).pages]
    images = pdf.render_page_images(Path(path), numbers)
    return [LLMPage(number=n, image=data, mime_type=mime) for n, (data, mime) in zip(numbers, images)]


def worker(mode: str, path: Path, base_url: str) -> dict[str, Any]:
    from poflow_dagster.domain.reconcile import reconcile
    from poflow_dagster.extraction import extract_file_bounded
    from poflow_dagster.extraction.llm import LLMSettings, extract_with_llm
    from poflow_dagster.extraction.sandbox import SandboxLimits, SandboxStats, run_bounded

    import openai  # noqa: F401 - loaded before the clock, as a worker that has made LLM calls before has it

    # render-all ran before the image budget existed; "streamed-8" halves the default budget of 16 MB
    budget = {"streamed": 16.0, "streamed-8": 8.0}.get(mode, 10_000.0)
    settings = LLMSettings(api_key=API_KEY, base_url=base_url, timeout_seconds=120, max_image_mb_in_flight=budget)
    limits = SandboxLimits(timeout_s=300)
    stats = SandboxStats()
    started = time.monotonic()  # CLOCK_MONOTONIC: comparable with the server's request times (same machine)
    if mode == "render-all":
        pages = run_bounded(_render_all, (str(path),), limits=limits, stats=stats, what=path.name)
        po = reconcile(extract_with_llm(pages, settings, source_format="pdf"))
    else:
        po = extract_file_bounded(path, llm=settings, limits=limits, stats=stats)
    seconds = time.monotonic() - started
    lines = [(line.sku, line.description, str(line.quantity)) for line in po.lines]
    return {"started": started, "seconds": seconds, "child_peak_mb": stats.peak_rss_mb, "lines": lines,
            "po_number": po.po_number}


# --- the driver --------------------------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


class TreeSampler:
    """Polls a worker's process tree: peak of worker + sandbox child RSS, forkserver RSS, summed PSS."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss_kb = self.peak_pss_kb = self.peak_forkserver_kb = self.peak_own_pss_kb = 0
        self.peak_worker_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            forkservers = _children(self.pid)  # the worker's only child is the forkserver
            sandboxed = [c for f in forkservers for c in _children(f)]
            worker = _status_kb(self.pid, "VmRSS")
            self.peak_worker_kb = max(self.peak_worker_kb, worker)
            rss = worker + sum(_status_kb(c, "VmRSS") for c in sandboxed)
            pss = sum(_pss_kb(p) for p in [self.pid, *forkservers, *sandboxed])
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            own = _pss_kb(self.pid) + sum(_pss_kb(c) for c in sandboxed)
            self.peak_own_pss_kb = max(self.peak_own_pss_kb, own)
            self.peak_forkserver_kb = max(self.peak_forkserver_kb, sum(_status_kb(f, "VmRSS") for f in forkservers))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_mode(mode: str, path: Path, server: Any) -> dict[str, Any]:
    before = len(server.completion_requests())
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks import scan_memory; "
         "scan_memory.worker_main()", str(REPO), mode, str(path), server.base_url],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    sampler = TreeSampler(process.pid)
    out, _ = process.communicate(timeout=900)
    sampler.stop()
    if process.returncode != 0:
        raise SystemExit(f"{mode} worker failed ({process.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    requests = server.completion_requests()[before:]
    first_request = min(r.started for r in requests)
    result.update(
        peak_mb=sampler.peak_rss_kb / 1024, pss_mb=sampler.peak_pss_kb / 1024, worker_mb=sampler.peak_worker_kb / 1024,
        own_pss_mb=sampler.peak_own_pss_kb / 1024,
        forkserver_mb=sampler.peak_forkserver_kb / 1024, requests=len(requests),
        first_request_s=first_request - result.pop("started"),
    )
    return result


def worker_main() -> None:
    """Entry point of a worker process: ``mode path base_url``; prints one JSON line."""
    mode, path, base_url = sys.argv[2:5]  # after -c and the repository path
    from poflow_dagster.extraction.sandbox import run_bounded

    run_bounded(os.getpid, ())  # start-up (imports, the forkserver) is not the extraction's
    print(json.dumps(worker(mode, Path(path), base_url)))


def main() -> None:
    global LATENCY
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds the LLM server takes per request")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--kinds", default="colour,clean", help="scans to run: colour, clean")
    parser.add_argument("--modes", default="render-all,streamed,streamed-8", help="modes to run (see above)")
    options = parser.parse_args()
    LATENCY = options.latency
    random.seed(7)
    with tempfile.TemporaryDirectory() as tmp, start_openai_server(answer) as server:
        for kind in options.kinds.split(","):
            run_kind(kind, Path(tmp), server, options)


def run_kind(kind: str, tmp: Path, server: Any, options: argparse.Namespace) -> None:
    from poflow_dagster.samples.pdf_documents import make_scanned_pdf

    path = tmp / f"{kind}.pdf"
    if kind == "colour":
        make_colour_scan(path, options.pages)
    else:
        make_scanned_pdf(path, pages=options.pages)
    print(f"\n{options.pages}-page {kind} scan, {path.stat().st_size / 1e6:.1f} MB; LLM latency {LATENCY:g} s, "
          f"4 windows at a time, 4 pages a window; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print("| mode | peak RSS worker + child | peak PSS worker + child | peak PSS (tree) | worker peak RSS | "
          "child VmHWM | forkserver RSS | first LLM request | wall | requests |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in options.modes.split(",")}
    for _ in range(options.repeat):
        for mode in results:
            row = run_mode(mode, path, server)
            results[mode].append(row)
            print(f"| {mode} | {row['peak_mb']:.0f} MiB | {row['own_pss_mb']:.0f} MiB | {row['pss_mb']:.0f} MiB "
                  f"| {row['worker_mb']:.0f} MiB | {row['child_peak_mb']:.0f} MiB "
                  f"| {row['forkserver_mb']:.0f} MiB | {row['first_request_s']:.1f} s | {row['seconds']:.1f} s "
                  f"| {row['requests']} |", flush=True)
    first = next(iter(results.values()))[0]
    assert all(r["lines"] == first["lines"] for rows in results.values() for r in rows), "the modes disagree"
    assert len(first["lines"]) == options.pages
    if "render-all" not in results or "streamed" not in results:
        return
    old, new = results["render-all"], results["streamed"]

    def best(rows: list[dict[str, Any]], key: str) -> float:
        return min(r[key] for r in rows)

    print(f"\nstreamed / render-all (best of {options.repeat}): peak RSS "
          f"{best(new, 'peak_mb') / best(old, 'peak_mb'):.2f}×, "
          f"PSS {best(new, 'own_pss_mb') / best(old, 'own_pss_mb'):.2f}×, "
          f"first request {best(new, 'first_request_s') / best(old, 'first_request_s'):.2f}×, "
          f"wall {best(new, 'seconds') / best(old, 'seconds'):.2f}×; same order lines: yes", flush=True)

if __name__ == "__main__":
    from benchmarks import scan_memory  # functions by their importable name (the sandbox child imports them)

    scan_memory.main()
