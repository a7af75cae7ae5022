"""Run document parsing in a child process with a memory and a time bound.

Untrusted files reach parsers (openpyxl/expat, pdfminer, pdfium, Pillow) whose cost can explode on a
crafted input. :func:`run_bounded` calls a module-level function in a child forked from a
``multiprocessing`` *forkserver* whose start preloads the extraction modules, so each call costs a fork
(milliseconds), not a Python start-up. In the child:

* ``RLIMIT_AS`` = the address space it inherited + ``POFLOW_EXTRACT_MEMORY_MB`` (default 1024): an
  allocation beyond it fails (``MemoryError``, or the C parser dies);
* ``RLIMIT_CPU`` = ``POFLOW_EXTRACT_TIMEOUT`` seconds (default 60); the parent also kills the child when
  it has worked that many wall-clock seconds without an answer (see *Streaming* for what counts as work).

The result (a pickled ``ParsedPO``, or anything picklable) comes back over a pipe; a ``PoflowError`` raised
in the child is re-raised unchanged. A child stopped by a limit is ``PoflowError("resource_limit", ...)``.
``POFLOW_EXTRACT_SANDBOX=0`` runs the function in-process (platforms without fork, debugging).

**Streaming** (:func:`start_bounded`): the child may also send items while it works, so the parent can use
them before the child is done (a scan's pages, window by window, while earlier windows are at the LLM). In
the child, :func:`stream_channel` gives the channel: ``note(x)`` sends at once (progress, or a page of the
current item), ``acquire()`` waits for a *credit* from the parent and ``send(x)`` then sends the item it paid for. The
parent grants credits (:meth:`BoundedRun.grant`) as it takes items into use, so the child never runs more
than the granted number of items ahead (back-pressure bounds the memory of both sides). The wall-clock
bound counts only the time the child has work to do: while every granted credit has been used (the child
is waiting for the parent, e.g. for a slow LLM) its clock is paused, so a slow model never gets a healthy
renderer killed; ``RLIMIT_CPU`` bounds its CPU as before (waiting costs none). The parent's own work (the
LLM calls) is bounded by the LLM's timeouts and retry budgets, not by this clock.

The first call in a process starts the forkserver (a Python start-up plus the preloads, ~1 s); later
calls reuse it.

**Allocator** (glibc only; :func:`fix_mmap_threshold`): both the caller and the child give every allocation of
``MMAP_THRESHOLD_BYTES`` or more its own mapping, returned to the system when freed. glibc's default raises
that threshold (up to 32 MB) each time such a block is freed, and then keeps later blocks of that size in its
per-thread arenas: page bitmaps in the child, image bodies in the LLM request threads of the caller stayed
resident after use. Measured on a 50-page colour scan (``benchmarks/scan_memory.py``, 8 s LLM latency):
peak RSS of caller + child 204 → 175 MiB, wall time unchanged.
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import multiprocessing.context
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.connection import Connection, wait
from multiprocessing.context import set_spawning_popen
from typing import Any

from poflow_dagster.domain.errors import PoflowError

__all__ = [
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
    "MMAP_THRESHOLD_BYTES",
    "BoundedRun",
    "SandboxLimits",
    "SandboxStats",
    "fix_mmap_threshold",
    "run_bounded",
    "start_bounded",
    "stream_channel",
]

DEFAULT_MEMORY_MB = 1024
DEFAULT_TIMEOUT_S = 60.0

#: Imported once by the forkserver, so a child starts with them loaded.
PRELOAD = (
    "poflow_dagster.extraction",
    "poflow_dagster.extraction.sandbox",
    "poflow_dagster.extraction.spreadsheet",
    "poflow_dagster.extraction.pdf",
    "poflow_dagster.extraction.x12",
    "poflow_dagster.extraction.ubl",
    "poflow_dagster.extraction.llm",
    "openpyxl",
    "pdfplumber",
    "pypdfium2",
    "PIL.Image",
    "PIL.ImageChops",
    "PIL.JpegImagePlugin",
    "PIL.PngImagePlugin",
    "click",
)

#: Allocations at least this big get their own mapping (glibc's initial ``M_MMAP_THRESHOLD``, kept fixed).
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
_mmap_threshold_fixed = False

_SAMPLE_SECONDS = 0.1
_context_lock = threading.Lock()
_context: Any = None


@dataclass(frozen=True)
class SandboxLimits:
    """Bounds for one child: extra address space (MB), CPU and wall-clock seconds; ``enabled=False``: in-process."""

    memory_mb: int = DEFAULT_MEMORY_MB
    timeout_s: float = DEFAULT_TIMEOUT_S
    enabled: bool = True

    @classmethod
    def from_env(cls) -> SandboxLimits:
        """``POFLOW_EXTRACT_MEMORY_MB``, ``POFLOW_EXTRACT_TIMEOUT``, ``POFLOW_EXTRACT_SANDBOX`` (``0`` = off)."""
        return cls(
            memory_mb=_env_number("POFLOW_EXTRACT_MEMORY_MB", DEFAULT_MEMORY_MB, int),
            timeout_s=_env_number("POFLOW_EXTRACT_TIMEOUT", DEFAULT_TIMEOUT_S, float),
            enabled=os.environ.get("POFLOW_EXTRACT_SANDBOX", "1").strip().lower() not in ("0", "false", "no", "off"),
        )


@dataclass
class SandboxStats:
    """What one :func:`run_bounded` call measured (for benchmarks and tests)."""

    wall_s: float = 0.0
    peak_rss_mb: float = 0.0  # the child's peak resident set (VmHWM)
    exitcode: int | None = None


def _env_number(name: str, default: Any, kind: Callable[[str], Any]) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise PoflowError("invalid_config", f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise PoflowError("invalid_config", f"{name} must be positive, not {raw!r}")
    return value


def run_bounded(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    limits: SandboxLimits | None = None,
    stats: SandboxStats | None = None,
    what: str = "the file",
) -> Any:
    """``func(*args)`` in a bounded child process (``func`` must be importable by name); its result.

    ``PoflowError`` from the child passes through; a child that hits a limit or dies is
    ``resource_limit`` naming ``what``.
    """
    limits = limits or SandboxLimits.from_env()
    stats = stats if stats is not None else SandboxStats()
    started = time.perf_counter()
    fix_mmap_threshold()
    try:
        if not limits.enabled:
            return func(*args)
        with BoundedRun(func, args, limits, stats, what, streaming=False) as run:
            return run.result()
    finally:
        stats.wall_s = time.perf_counter() - started


@contextmanager
def start_bounded(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    *,
    limits: SandboxLimits,
    stats: SandboxStats | None = None,
    what: str = "the file",
) -> Iterator[BoundedRun]:
    """A streaming :func:`run_bounded` (sandbox enabled only): the running child, ended and reaped on exit.

    Read its items with :meth:`BoundedRun.next`, grant credits with :meth:`BoundedRun.grant`. Leaving the
    block kills a child that has not finished (a failed LLM window, an exception) and waits for it.
    """
    stats = stats if stats is not None else SandboxStats()
    started = time.perf_counter()
    fix_mmap_threshold()
    run = BoundedRun(func, args, limits, stats, what, streaming=True)
    try:
        yield run
    finally:
        run.close()
        stats.wall_s = time.perf_counter() - started


class BoundedRun:
    """The parent's side of one bounded child: its messages, its credits, its limits.

    :meth:`next` returns ``("note", x)`` / ``("item", x)`` while the child works and ``("result", x)`` at
    the end (a ``PoflowError`` from the child, or its death, is raised). One thread reads; :meth:`grant`
    may be called from any thread.
    """

    def __init__(
        self, func: Callable[..., Any], args: tuple[Any, ...], limits: SandboxLimits, stats: SandboxStats,
        what: str, *, streaming: bool,
    ) -> None:
        self.limits, self.stats, self.what = limits, stats, what
        context = _forkserver()
        self._receiver, sender = context.Pipe(duplex=False)
        credit_reader, self._credits = context.Pipe(duplex=False) if streaming else (None, None)
        self._child = _process_class(context)(
            target=_child_main,
            args=(sender, func, args, limits.memory_mb, limits.timeout_s, what, credit_reader),
            daemon=True,
        )
        self._child.start()
        sender.close()
        if credit_reader is not None:
            credit_reader.close()
        self._lock = threading.Lock()
        self._granted = 0
        self._received = 0  # items (paid with credits) received
        self._busy_s = 0.0
        self._clock = time.monotonic()
        self._finished = False

    def __enter__(self) -> BoundedRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def grant(self, count: int = 1) -> None:
        """Let the child send ``count`` more items (thread-safe; ignored once the child has ended)."""
        with self._lock:
            if self._credits is None or self._finished or count <= 0:
                return
            self._tick()
            try:
                self._credits.send(count)
            except OSError:
                return  # the child is gone: its death is reported by next()
            self._granted += count

    def result(self) -> Any:
        """Wait for the final result, ignoring items (the non-streaming call)."""
        while True:
            kind, payload = self.next()
            if kind == "result":
                return payload

    def next(self) -> tuple[str, Any]:
        """The child's next message, sampling its peak RSS and enforcing the time bound while it works."""
        while True:
            ready = wait([self._receiver, self._child.sentinel], timeout=_SAMPLE_SECONDS)
            self.stats.peak_rss_mb = max(self.stats.peak_rss_mb, _peak_rss_mb(self._child.pid))
            with self._lock:
                self._tick()
                busy = self._busy_s
            if ready and self._receiver.poll():
                try:
                    message = self._receiver.recv()
                except (EOFError, OSError):  # OSError: "end of file during message" (died mid-send)
                    message = None  # died without answering
                if message is not None:
                    return self._read(message)
            if ready:
                self._child.join(5)
                self._end()
                raise _death_error(self._child.exitcode, self.limits, self.what)
            if busy > self.limits.timeout_s:
                self._child.kill()
                self._end()
                limit = f"{self.limits.timeout_s:g} s"
                raise PoflowError("resource_limit", f"reading {self.what} took longer than {limit} and was stopped")

    def stop(self) -> None:
        """Kill the child if it is still running (thread-safe; a reader in :meth:`next` sees it die)."""
        self._child.kill()  # a no-op once it has been reaped; never polls (another thread may be reading)

    def close(self) -> None:
        """End the child (kill it unless it already answered) and reap it; close the pipes."""
        self._end()
        self._receiver.close()
        if self._credits is not None:
            self._credits.close()
        self._child.join(2)  # it exits right after answering
        if self._child.is_alive():
            self._child.kill()
            self._child.join(5)
        self.stats.exitcode = self._child.exitcode

    def _read(self, message: tuple) -> tuple[str, Any]:
        kind = message[0]
        if kind in ("note", "item"):
            if kind == "item":
                with self._lock:
                    self._tick()
                    self._received += 1
            return kind, message[1]
        _, payload, peak_kb = message
        self.stats.peak_rss_mb = max(self.stats.peak_rss_mb, peak_kb / 1024)
        self._end()
        if kind == "error":
            raise payload
        return "result", payload

    def _tick(self) -> None:
        """Count the time since the last tick as busy unless the child waits for a credit (lock held)."""
        now = time.monotonic()
        waiting = self._granted > 0 and self._received >= self._granted
        if not waiting:
            self._busy_s += now - self._clock
        self._clock = now

    def _end(self) -> None:
        with self._lock:
            self._finished = True


class _Popen(popen_forkserver.Popen):
    """The forkserver ``Popen`` without the parent's ``__main__`` in the child's preparation data.

    multiprocessing re-runs the parent's main script in every child (as ``__mp_main__``) unless it was
    started with ``-m``; that costs an import per extraction (a whole CLI or a user script without a
    ``__main__`` guard). The child only needs ``_child_main`` and the function it is given, which are
    importable by name. Same steps as ``popen_forkserver.Popen._launch`` otherwise (Python 3.11-3.13).
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buffer = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buffer)
            reduction.dump(process_obj, buffer)
        finally:
            set_spawning_popen(None)
        self.sentinel, write_fd = forkserver.connect_to_new_process(self._fds)
        parent_w = os.dup(write_fd)  # the parent's sentinel for the child, as in the original
        self.finalizer = util.Finalize(self, util.close_fds, (parent_w, self.sentinel))
        with open(write_fd, "wb", closefd=True) as handle:
            handle.write(buffer.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _ChildProcess(multiprocessing.context.ForkServerProcess):
    """A forkserver process launched by :class:`_Popen`."""

    @staticmethod
    def _Popen(process_obj: Any) -> _Popen:  # noqa: N802 - multiprocessing's name
        return _Popen(process_obj)


def _process_class(context: Any) -> Any:
    """:class:`_ChildProcess` where its copy of the stdlib launch steps is known to match (3.11-3.13);
    on other versions the stock forkserver process (which also re-imports the parent's main script)."""
    return _ChildProcess if (3, 11) <= sys.version_info[:2] <= (3, 13) else context.Process


def _forkserver() -> Any:
    """The forkserver context, with the extraction modules preloaded (configured once per process)."""
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(PRELOAD))
            _context = context
        return _context


def _death_error(exitcode: int | None, limits: SandboxLimits, what: str) -> PoflowError:
    """The one-line error for a child that ended without an answer."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        if -exitcode == signal.SIGXCPU:
            return PoflowError("resource_limit", f"reading {what} used more than {limits.timeout_s:g} s of CPU")
        return PoflowError(
            "resource_limit",
            f"reading {what} was stopped by {name} (memory limit {limits.memory_mb} MB or time limit "
            f"{limits.timeout_s:g} s)",
        )
    return PoflowError("extraction_failed", f"the parser for {what} exited unexpectedly (status {exitcode})")


def _peak_rss_mb(pid: int | None) -> float:
    """VmHWM of a live process in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def _address_space_kb() -> int:
    """This process's current virtual size (VmSize) in KB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1])
    return 0


class StreamChannel:
    """The child's side of a streaming run: notes at once, items against the parent's credits."""

    def __init__(self, sender: Connection, credits: Connection) -> None:
        self._sender, self._credits = sender, credits
        self._available = 0
        self._paid = 0

    def note(self, payload: Any) -> None:
        """Send a small message now (progress); it needs no credit."""
        self._sender.send(("note", payload))

    def acquire(self) -> None:
        """Wait until the parent grants a credit for one more item (call before preparing the item)."""
        while self._available == 0:
            try:
                self._available += int(self._credits.recv())
            except EOFError:
                os._exit(0)  # the parent stopped reading (cancelled): nothing more to do
        self._available -= 1
        self._paid += 1

    def send(self, payload: Any) -> None:
        """Send an item paid for by :meth:`acquire`."""
        if self._paid == 0:
            raise RuntimeError("StreamChannel.send without acquire")
        self._paid -= 1
        self._sender.send(("item", payload))


_channel: StreamChannel | None = None


def stream_channel() -> StreamChannel | None:
    """In a child started by :func:`start_bounded`: its channel to the parent; elsewhere ``None``."""
    return _channel


def fix_mmap_threshold() -> None:
    """glibc: keep ``M_MMAP_THRESHOLD`` at ``MMAP_THRESHOLD_BYTES`` in this process (see *Allocator* above).

    Once per process; does nothing on other C libraries or platforms.
    """
    global _mmap_threshold_fixed
    if _mmap_threshold_fixed:
        return
    _mmap_threshold_fixed = True
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (ValueError, OSError, AttributeError):  # not glibc: nothing to tune
        return


def _child_main(
    sender: Connection, func: Callable[..., Any], args: tuple[Any, ...], memory_mb: int, timeout_s: float, what: str,
    credits: Connection | None = None,
) -> None:
    """In the child: set the limits, run ``func``, send ``(kind, payload, peak KB)`` once (after any items)."""
    global _channel
    if credits is not None:
        _channel = StreamChannel(sender, credits)
    fix_mmap_threshold()
    limit = (_address_space_kb() + memory_mb * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = max(1, int(timeout_s + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))
    try:
        message: tuple = ("ok", func(*args))
    except PoflowError as error:
        message = ("error", _memory_error(error, memory_mb, what) or error)
    except MemoryError:
        message = ("error", _out_of_memory(memory_mb, what))
    except Exception as error:  # a bug: report it in one line, like extract_file does
        message = ("error", PoflowError("extraction_failed", f"unexpected {type(error).__name__}"))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        sender.send((*message, peak_kb))
    except MemoryError:
        sender.send(("error", _out_of_memory(memory_mb, what), peak_kb))
    except Exception as error:  # an unpicklable result
        sender.send(("error", PoflowError("extraction_failed", f"result not transferable: {error}"), peak_kb))
    sender.close()


def _out_of_memory(memory_mb: int, what: str) -> PoflowError:
    return PoflowError("resource_limit", f"reading {what} needed more than {memory_mb} MB of memory")


def _memory_error(error: PoflowError, memory_mb: int, what: str) -> PoflowError | None:
    """``resource_limit`` when a parser's catch-all turned a ``MemoryError`` into another code."""
    seen: BaseException | None = error
    depth = 0
    while seen is not None and depth < 20:
        if isinstance(seen, MemoryError):
            return _out_of_memory(memory_mb, what)
        seen = seen.__cause__ or seen.__context__
        depth += 1
    return None
