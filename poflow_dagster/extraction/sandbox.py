"""Run document parsing in a child process with a memory and a time bound.

Untrusted files reach parsers (openpyxl/expat, pdfminer, pdfium, Pillow) whose cost can explode on a
crafted input. :func:`run_bounded` calls a module-level function in a child forked from a
``multiprocessing`` *forkserver* whose start preloads the extraction modules, so each call costs a fork
(milliseconds), not a Python start-up. In the child:

* ``RLIMIT_AS`` = the address space it inherited + ``POFLOW_EXTRACT_MEMORY_MB`` (default 1024): an
  allocation beyond it fails (``MemoryError``, or the C parser dies);
* ``RLIMIT_CPU`` = ``POFLOW_EXTRACT_TIMEOUT`` seconds (default 60); the parent also kills the child when
  that many wall-clock seconds pass without an answer.

The result (a pickled ``ParsedPO``, or anything picklable) comes back over a pipe; a ``PoflowError`` raised
in the child is re-raised unchanged. A child stopped by a limit is ``PoflowError("resource_limit", ...)``.
``POFLOW_EXTRACT_SANDBOX=0`` runs the function in-process (platforms without fork, debugging).

The first call in a process starts the forkserver (a Python start-up plus the preloads, ~1 s); later
calls reuse it.
"""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.context
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from multiprocessing.connection import Connection, wait
from multiprocessing.context import set_spawning_popen
from typing import Any

from poflow_dagster.domain.errors import PoflowError

__all__ = ["DEFAULT_MEMORY_MB", "DEFAULT_TIMEOUT_S", "SandboxLimits", "SandboxStats", "run_bounded"]

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
    "click",
)

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
    try:
        if not limits.enabled:
            return func(*args)
        return _run_child(func, args, limits, stats, what)
    finally:
        stats.wall_s = time.perf_counter() - started


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


def _run_child(
    func: Callable[..., Any], args: tuple[Any, ...], limits: SandboxLimits, stats: SandboxStats, what: str
) -> Any:
    context = _forkserver()
    receiver, sender = context.Pipe(duplex=False)
    child = _process_class(context)(
        target=_child_main, args=(sender, func, args, limits.memory_mb, limits.timeout_s, what), daemon=True
    )
    child.start()
    sender.close()
    try:
        message = _await(child, receiver, limits, stats, what)
    finally:
        receiver.close()
        child.join(2)  # it exits right after answering
        if child.is_alive():
            child.kill()
            child.join(5)
        stats.exitcode = child.exitcode
    kind, payload, peak_kb = message
    stats.peak_rss_mb = max(stats.peak_rss_mb, peak_kb / 1024)
    if kind == "error":
        raise payload
    return payload


def _await(child: Any, receiver: Connection, limits: SandboxLimits, stats: SandboxStats, what: str) -> tuple:
    """Wait for the child's one message, sampling its peak RSS; enforce the wall-clock bound."""
    deadline = time.monotonic() + limits.timeout_s
    while True:
        ready = wait([receiver, child.sentinel], timeout=_SAMPLE_SECONDS)
        stats.peak_rss_mb = max(stats.peak_rss_mb, _peak_rss_mb(child.pid))
        if ready and receiver.poll():
            try:
                return receiver.recv()
            except EOFError:
                pass  # died without answering
        if ready:
            child.join(5)
            raise _death_error(child.exitcode, limits, what)
        if time.monotonic() > deadline:
            child.kill()
            raise PoflowError(
                "resource_limit", f"reading {what} took longer than {limits.timeout_s:g} s and was stopped"
            )


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


def _child_main(
    sender: Connection, func: Callable[..., Any], args: tuple[Any, ...], memory_mb: int, timeout_s: float, what: str
) -> None:
    """In the child: set the limits, run ``func``, send ``(kind, payload, peak KB)`` once."""
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
