"""The analytics refresh: one job for the analytics group (assets + checks) and a schedule every few minutes.

The same assets can be materialised on demand from the UI (Materialize all in the ``analytics`` group).
"""

import datetime as dt
import logging
import os

import dagster as dg

from poflow_dagster.pipeline.analytics_assets import GROUP

log = logging.getLogger(__name__)

#: A refresh in one of these states is still to come or under way.
_UNFINISHED = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
#: Run monitoring fails a refresh running longer than this (``dagster/max_runtime``): a hung one never blocks
#: the next for good.
ANALYTICS_MAX_RUNTIME_SECONDS = 15 * 60
#: The run-queue tag every analytics run carries; ``dagster.yaml`` limits runs with it to one at a time
#: (``run_queue.tag_concurrency_limits``), so refreshes never take more than one of the PO runs' slots.
ANALYTICS_TAG = {"poflow/kind": "analytics"}

#: Default refresh: every five minutes (``POFLOW_ANALYTICS_CRON``).
DEFAULT_ANALYTICS_CRON = "*/5 * * * *"


def analytics_cron() -> str:
    """``POFLOW_ANALYTICS_CRON`` (default every 5 minutes); an invalid expression falls back with a warning."""
    from dagster._utils.schedules import is_valid_cron_string

    raw = (os.environ.get("POFLOW_ANALYTICS_CRON") or "").strip()
    if not raw:
        return DEFAULT_ANALYTICS_CRON
    if not is_valid_cron_string(raw):
        log.warning("POFLOW_ANALYTICS_CRON=%r is not a cron expression; using %r", raw, DEFAULT_ANALYTICS_CRON)
        return DEFAULT_ANALYTICS_CRON
    return raw


analytics_job = dg.define_asset_job(
    "analytics_job",
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.in_process_executor,
    description="Refresh the analytics: stage_runs from the run history, then stage performance, bottlenecks, "
    "merchant health and the ETA model, with their checks.",
    tags={**ANALYTICS_TAG, "dagster/max_runtime": str(ANALYTICS_MAX_RUNTIME_SECONDS)},
)


@dg.schedule(
    cron_schedule=analytics_cron(),
    job=analytics_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    execution_timezone="UTC",
)
def analytics_schedule(context: dg.ScheduleEvaluationContext):
    """Refresh the analytics group every few minutes (``POFLOW_ANALYTICS_CRON``); a tick is skipped while a
    refresh created within the last ``2 × max_runtime`` is still queued or running, so refreshes never pile up —
    and an older one (hung, or never launched) never stops them."""
    recent = dt.datetime.now(dt.UTC)
    running = context.instance.get_runs_count(
        dg.RunsFilter(
            job_name=analytics_job.name, statuses=_UNFINISHED,
            created_after=recent - dt.timedelta(seconds=2 * ANALYTICS_MAX_RUNTIME_SECONDS),
        )
    )
    if running:
        return dg.SkipReason(f"{running} analytics_job run(s) not finished yet")
    return dg.RunRequest()
