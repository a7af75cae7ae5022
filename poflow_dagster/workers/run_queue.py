"""The run queue, dequeued twice a second.

Dagster's ``QueuedRunCoordinator`` takes its dequeue interval in whole seconds, and the daemon waits in steps of
0.5 s, so ``dequeue_interval_seconds: 1`` means a queued run waits 1.0–1.5 s for the next pass (0.5–0.75 s on
average: half of a PO run's start latency). This subclass accepts a fraction of a second; at 0.5 a pass runs every
~0.5 s (one indexed query of the run storage when nothing is queued). Everything else — tag concurrency limits,
``concurrency: runs:``, pools, threaded dequeue — is Dagster's own, unchanged.

In the instance YAML (instead of ``run_queue:``)::

    run_coordinator:
      module: poflow_dagster.workers.run_queue
      class: FastQueuedRunCoordinator
      config:
        dequeue_interval_seconds: 0.5
"""

from __future__ import annotations

from typing import Any

from dagster import Field
from dagster._core.run_coordinator import QueuedRunCoordinator

#: The daemon cannot wait less than this between passes (``shutdown_event.wait(0.5)``); below it a pass would
#: start again as soon as the previous one ended, polling the run storage without pause.
MIN_INTERVAL_SECONDS = 0.5


class FastQueuedRunCoordinator(QueuedRunCoordinator):
    """``QueuedRunCoordinator`` whose ``dequeue_interval_seconds`` may be fractional (at least 0.5 s)."""

    def __init__(self, dequeue_interval_seconds: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        interval = 1.0 if dequeue_interval_seconds is None else float(dequeue_interval_seconds)
        self._dequeue_interval_seconds = max(MIN_INTERVAL_SECONDS, interval)  # type: ignore[assignment]

    @property
    def dequeue_interval_seconds(self) -> float:  # type: ignore[override]
        return self._dequeue_interval_seconds

    @classmethod
    def config_type(cls):
        schema = dict(QueuedRunCoordinator.config_type())
        schema["dequeue_interval_seconds"] = Field(
            float, is_required=False,
            description=f"Seconds between dequeue passes (fractions allowed, at least {MIN_INTERVAL_SECONDS}).",
        )
        return schema
