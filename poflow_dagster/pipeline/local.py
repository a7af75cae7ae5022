"""Run one upload's PO job (its PO, checks and images) in this process, on a given Dagster instance.

Used by ``poflow demo``, ``poflow run`` and the end-to-end tests; the daemon path (sensors) runs the
very same jobs. A failed run goes through the same failure recording as ``po_failure_sensor``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from poflow_dagster import config
from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.pipeline.run_tags import upload_run_tags
from poflow_dagster.pipeline.sensors import is_side_step, root_error_message
from poflow_dagster.store.db import Database
from poflow_dagster.store.uploads import mark_run_requested
from poflow_dagster.store.workflow import record_run_failure


@dataclass
class LocalRunResult:
    upload_id: str
    run_id: str
    success: bool
    seconds: float
    checks: dict[str, bool] = field(default_factory=dict)
    summary: dict | None = None
    failed_step: str | None = None
    error: str | None = None
    #: The ``product_images`` output of the run (``images_attached``, and ``error`` if the step failed; it never
    #: fails the run); ``None`` when images did not run (a duplicate PO, a failed run, ``with_images=False``).
    images: dict | None = None

    @property
    def checks_passed(self) -> int:
        return sum(self.checks.values())


def run_upload(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    db: Database,
    upload_id: str,
    *,
    resources: dict | None = None,
    with_images: bool = True,
    log_level: str = "DEBUG",
) -> LocalRunResult:
    """Execute ``po_job`` for partition ``upload_id``: the PO, its checks and (unless ``with_images`` is False)
    its images, in one run."""
    if not instance.has_dynamic_partition(po_uploads.name, upload_id):
        instance.add_dynamic_partitions(po_uploads.name, [upload_id])
    mark_run_requested(db, upload_id)  # a daemon's upload_sensor need not request it too
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    tags = upload_run_tags(db, [upload_id]).get(upload_id, {})  # poflow/merchant, poflow/file
    job = defs.resolve_job_def("po_job")
    if not with_images:  # the PO and its checks only (subset first: a selection at execution conflicts with resources)
        job = job.get_subset(asset_selection={dg.AssetKey("purchase_order")})
    started = time.perf_counter()
    result = job.execute_in_process(
        partition_key=upload_id, instance=instance, raise_on_error=False, resources=resources, run_config=run_config,
        tags=tags,
    )
    seconds = time.perf_counter() - started
    run = LocalRunResult(upload_id=upload_id, run_id=result.run_id, success=result.success, seconds=seconds)
    run.checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    if result.success:
        materialized = any(e.step_key == "purchase_order.status_update" for e in result.get_step_success_events())
        run.summary = result.output_for_node("purchase_order") if materialized else None  # None: duplicate PO
        imaged = any(e.step_key == "product_images.image_attachment" for e in result.get_step_success_events())
        run.images = result.output_for_node("product_images") if imaged else None
    else:
        failures = result.get_step_failure_events()
        step_key = failures[0].step_key if failures else None
        error = failures[0].step_failure_data.error if failures else None
        run.failed_step = step_key
        run.error = root_error_message(error) or "run failed"
        if is_side_step(step_key):  # like po_failure_sensor: images never fail the PO
            return run
        record = instance.get_run_record_by_id(result.run_id)
        started = record.start_time if record is not None else None
        record_run_failure(db, upload_id, result.run_id, step_key, run.error,
                           run_started_at=dt.datetime.fromtimestamp(started, dt.UTC) if started else None)
    return run


@contextlib.contextmanager
def local_instance(home: Path | None = None) -> Iterator[dg.DagsterInstance]:
    """The persistent Dagster instance of ``config.dagster_home()`` (or ``home``): ``poflow demo``, ``poflow run``
    and ``dagster dev`` started with ``DAGSTER_HOME=<that path>`` share it, so every local run shows in the UI.

    Opening a fresh SQLite instance from several processes at once can stamp its schema twice, so the first
    opening is serialised by a lock file in the home."""
    import fcntl

    home = Path(home) if home is not None else config.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".poflow-instance.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = dg.DagsterInstance.from_config(str(home))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    with instance:
        yield instance
