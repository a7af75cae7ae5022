"""Celery queues by workload: which queue a PO run goes to and how many runs a worker of it runs at once.

A run's queue is its ``dagster-celery/queue`` tag (read by ``CeleryRunLauncher``), set from the run's
``poflow/workload`` tag: ``scan`` (scanned PDFs, images, free text: LLM calls and page rendering, memory-heavy)
or ``sheet`` (CSV/TSV/XLSX, text PDFs, EDI, UBL: milliseconds of parsing, then DB and Shopify I/O). Names are
``<POFLOW_CELERY_QUEUE_PREFIX><workload>`` (prefix default ``po-``: ``po-scan``, ``po-sheet``), so two
deployments on one broker can keep apart. Runs without a workload tag (analytics, maintenance) go to the
launcher's ``default_queue``.

Concurrency per queue (``poflow worker --queue sheet``): ``POFLOW_WORKER_CONCURRENCY_<WORKLOAD>``, default
``scan`` 2 and ``sheet`` 4 — the old system ran 1 / 3 / 10 workers per job type; a run here is I/O-bound
once parsed, and a scan holds up to a few hundred MiB while it renders.
"""

from __future__ import annotations

import os

QUEUE_TAG = "dagster-celery/queue"
WORKLOAD_TAG = "poflow/workload"
WORKLOADS = ("sheet", "scan")
DEFAULT_CONCURRENCY = {"sheet": 4, "scan": 2}


def queue_prefix() -> str:
    return os.environ.get("POFLOW_CELERY_QUEUE_PREFIX", "po-")


def queue_for(workload: str) -> str:
    """The Celery queue of runs of ``workload`` (``sheet`` or ``scan``)."""
    return f"{queue_prefix()}{workload}"


def concurrency_for(workload: str) -> int:
    """How many runs one worker of ``workload``'s queue executes at once."""
    raw = os.environ.get(f"POFLOW_WORKER_CONCURRENCY_{workload.upper()}", "")
    try:
        value = int(raw)
    except ValueError:
        value = DEFAULT_CONCURRENCY.get(workload, 2)
    return max(1, value)


def queue_tags(run_tags: dict[str, str]) -> dict[str, str]:
    """The queue tag for a run with these tags (empty when it has no workload: the default queue)."""
    workload = run_tags.get(WORKLOAD_TAG)
    return {QUEUE_TAG: queue_for(workload)} if workload in WORKLOADS else {}
