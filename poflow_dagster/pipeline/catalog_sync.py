"""Keeping merchants' Shopify catalogs synced outside PO runs: ``catalog_sync_job`` and its two schedules.

Every hour an incremental pass (variants and products updated since the last pass) over every merchant with Shopify
sync on, so a PO run's own pass only reads the last hour's changes; every night a full pass, which also removes the
variants of products deleted in Shopify. A run of either is skipped while an earlier one of the same kind is
unfinished; an hourly and a nightly run at once are safe (``catalog.sync``: one pass per shop, pages
compare-and-set). The same passes run by hand: ``poflow catalog sync``.
"""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import dagster as dg

from poflow_dagster.catalog.shop_catalog import merchants_to_sync, sync_merchants
from poflow_dagster.resources import DatabaseResource, ShopifyResource

CATALOG_TAG = {"poflow/kind": "maintenance"}
#: ``poflow/catalog_sync``: ``incremental`` or ``full`` (what the schedules look at to skip).
PASS_TAG = "poflow/catalog_sync"
MAX_RUNTIME_SECONDS = 60 * 60
HOURLY_CRON = "23 * * * *"
NIGHTLY_CRON = "53 2 * * *"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
]


class CatalogSyncConfig(dg.Config):
    full: bool = False
    merchant_id: str = ""


@dg.op(tags=CATALOG_TAG)
def sync_catalogs(context: dg.OpExecutionContext, config: CatalogSyncConfig, db: DatabaseResource,
                  shopify: ShopifyResource) -> dict:
    """Sync the catalog of every merchant with Shopify sync on (or of ``merchant_id``): incremental, or ``full``
    (pruning deleted products). A merchant whose shop fails is logged and the others still sync; the run fails at
    the end if any did (its pass resumes next time)."""
    merchants = merchants_to_sync(db.database, config.merchant_id or None)
    done = sync_merchants(db.database, shopify, merchants, full=config.full)
    for item in done:
        if item.error is not None:
            context.log.error(f"{item.merchant_id} ({item.shop_url}): {item.error}")
        else:
            r = item.result
            context.log.info(f"{item.merchant_id} ({item.shop_url}): {r.pages} pages, {r.variants} variants, "
                             f"{r.products} products, {r.deleted} deleted, {'complete' if r.complete else 'partial'}")
    failed = [item for item in done if item.error is not None]
    context.add_output_metadata({
        "merchants": len(done), "failed": len(failed),
        "variants": sum(item.result.variants for item in done if item.result is not None),
        "deleted": sum(item.result.deleted for item in done if item.result is not None),
    })
    if failed:
        raise dg.Failure(f"catalog sync failed for {', '.join(item.merchant_id for item in failed)}",
                         metadata={"errors": [str(item.error) for item in failed]})
    return {"merchants": len(done), "full": config.full}


@dg.job(
    name="catalog_sync_job",
    executor_def=dg.in_process_executor,
    tags={**CATALOG_TAG, "dagster/max_runtime": str(MAX_RUNTIME_SECONDS)},
    description="Sync merchants' Shopify catalogs into the app database (incremental; full = also prune products "
    "deleted in Shopify), so PO runs only read what changed since.",
)
def catalog_sync_job():
    sync_catalogs()


def _request(context: dg.ScheduleEvaluationContext, kind: str):
    unfinished = context.instance.get_runs_count(dg.RunsFilter(
        job_name=catalog_sync_job.name, statuses=IN_FLIGHT, tags={PASS_TAG: kind}))
    if unfinished:
        return dg.SkipReason(f"{unfinished} {kind} catalog_sync_job run(s) not finished yet")
    return dg.RunRequest(run_config={"ops": {"sync_catalogs": {"config": {"full": kind == "full"}}}},
                         tags={PASS_TAG: kind})


@dg.schedule(cron_schedule=HOURLY_CRON, job=catalog_sync_job, default_status=dg.DefaultScheduleStatus.RUNNING,
             execution_timezone="UTC")
def catalog_sync_schedule(context: dg.ScheduleEvaluationContext):
    """Hourly incremental catalog sync of every merchant with Shopify sync on."""
    return _request(context, "incremental")


@dg.schedule(cron_schedule=NIGHTLY_CRON, job=catalog_sync_job, default_status=dg.DefaultScheduleStatus.RUNNING,
             execution_timezone="UTC")
def catalog_full_sync_schedule(context: dg.ScheduleEvaluationContext):
    """Nightly full catalog sync: also removes the variants of products deleted in Shopify."""
    return _request(context, "full")
