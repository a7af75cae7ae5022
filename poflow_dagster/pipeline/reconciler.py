"""``workflow_reconciler``: the sensor that keeps every workflow's status equal to its Dagster run's.

The decisions live in ``store/workflow_repair.py`` (no Dagster); this module only asks Dagster, in one
batched query per tick, what happened to the runs of the unfinished workflows it looks at.
"""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import datetime as dt
import logging

import dagster as dg

from poflow_dagster.pipeline.jobs import po_job
from poflow_dagster.pipeline.sensors import PARTITION_TAG, run_failure_text
from poflow_dagster.resources import DatabaseResource
from poflow_dagster.store.db import Database
from poflow_dagster.store.types import utcnow
from poflow_dagster.store.workflow_repair import RunState, apply_repair, open_workflows, plan_repair

#: Unfinished workflows examined per tick (the cursor walks through the rest on later ticks).
RECONCILE_BATCH = 100
#: Seconds between ticks: a workflow whose run ended is repaired within this (plus a tick's work).
RECONCILE_INTERVAL = 20


@dg.sensor(minimum_interval_seconds=RECONCILE_INTERVAL, default_status=dg.DefaultSensorStatus.RUNNING)
def workflow_reconciler(context: dg.SensorEvaluationContext, db: DatabaseResource):
    """Repairs workflows left ``pending``/``processing`` whose Dagster run has ended or vanished: a
    successful run → the state its ops leave; a failed or canceled run → ``failed`` with the run's
    reason; a requested run that was never created → requested again by ``upload_sensor``. Catches
    what ``po_failure_sensor`` missed (its tick errored, e.g. while the database was down) and runs
    whose worker died. Each tick reads at most ``RECONCILE_BATCH`` unfinished workflows and their runs
    in one query."""
    repaired, examined, cursor = reconcile_workflows(
        context.instance, db.database, after_id=int(context.cursor or 0), log=context.log
    )
    context.update_cursor(str(cursor))
    return dg.SkipReason(f"examined {examined} unfinished workflows, repaired {repaired}")


def reconcile_workflows(
    instance: dg.DagsterInstance,
    database: Database,
    *,
    after_id: int = 0,
    limit: int = RECONCILE_BATCH,
    now: dt.datetime | None = None,
    log: logging.Logger | None = None,
) -> tuple[int, int, int]:
    """One reconciler pass over up to ``limit`` unfinished workflows after ``after_id``.

    Returns (repaired, examined, next cursor); the cursor wraps to 0 at the end of the table.
    """
    workflows = open_workflows(database, after_id=after_id, limit=limit)
    if not workflows:
        return 0, 0, 0
    runs = _po_runs(instance, [w.upload_id for w in workflows])
    now = now or utcnow()
    repaired = attempted = 0
    errors: list[Exception] = []
    for workflow in workflows:
        repair = plan_repair(workflow, runs.get(workflow.upload_id, []), now)
        if repair is None:
            continue
        attempted += 1
        run_id = repair.run.run_id if repair.run else workflow.run_id
        try:
            step_key, text = (None, None)
            if repair.run is not None and repair.action in ("failed", "canceled"):
                step_key, text = run_failure_text(instance, repair.run.run_id)
            changed = apply_repair(database, repair, step_key=step_key, error_text=text)
        except Exception as error:  # one bad row must not block the others; all failing = the tick fails
            errors.append(error)
            if log is not None:
                log.warning(f"{workflow.upload_id}: repair {repair.action} (run {run_id}) failed: {error}")
            continue
        if changed:
            repaired += 1
            if log is not None:
                log.info(f"{workflow.upload_id}: workflow {workflow.status} repaired ({repair.action}, run {run_id})")
    if errors and len(errors) == attempted:
        raise errors[0]
    cursor = workflows[-1].id if len(workflows) == limit else 0
    return repaired, len(workflows), cursor


def _po_runs(instance: dg.DagsterInstance, upload_ids: list[str]) -> dict[str, list[RunState]]:
    """Every ``po_job`` run of these partitions, in one query."""
    records = instance.get_run_records(
        dg.RunsFilter(job_name=po_job.name, tags={PARTITION_TAG: upload_ids})
    )
    runs: dict[str, list[RunState]] = {}
    for record in records:
        run = record.dagster_run
        partition = run.tags.get(PARTITION_TAG)
        if partition is None:
            continue
        runs.setdefault(partition, []).append(
            RunState(
                run_id=run.run_id,
                status=run.status.value,
                created_at=record.create_timestamp.astimezone(dt.UTC),
                started_at=_time(record.start_time),
                ended_at=_time(record.end_time),
            )
        )
    return runs


def _time(timestamp: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC) if timestamp else None
