"""The one ``Definitions`` of poflow: PO assets and checks, analytics assets and checks, jobs, sensors, schedules
and resources.

Every resource field reads its environment variable through ``dg.EnvVar``, so the UI's resource pages show
where the configuration comes from and never a secret's value. A ``dg.EnvVar`` whose variable is unset fails
when the resource is resolved, so a field is wrapped only when its variable is set at load time; otherwise it
keeps its empty default, and the resource falls back to the embedded default (the SQLite database under
``POFLOW_HOME``, the bundled Shopify emulator, no Redis, no LLM) when it is used. Set a variable before the
code location loads (``dagster dev`` reloads it on demand) and keep it set.
"""

from __future__ import annotations

import os

import dagster as dg

from poflow_dagster.pipeline.analytics_assets import analytics_assets
from poflow_dagster.pipeline.analytics_checks import analytics_checks
from poflow_dagster.pipeline.analytics_schedules import analytics_job, analytics_schedule
from poflow_dagster.pipeline.assets import purchase_order
from poflow_dagster.pipeline.catalog_sync import catalog_full_sync_schedule, catalog_sync_job, catalog_sync_schedule
from poflow_dagster.pipeline.checks import po_saved_correctly, shopify_matches_drafts
from poflow_dagster.pipeline.images import product_images
from poflow_dagster.pipeline.jobs import po_job
from poflow_dagster.pipeline.reconciler import workflow_reconciler
from poflow_dagster.pipeline.retention import partition_retention_job, partition_retention_schedule
from poflow_dagster.pipeline.sensors import po_failure_sensor, upload_sensor
from poflow_dagster.resources import DatabaseResource, LLMResource, ProgressResource, ShopifyResource, StorageResource

#: Resource key → {field: environment variable}. Integer fields are listed in ``INT_FIELDS``.
RESOURCE_ENV: dict[str, dict[str, str]] = {
    "db": {"url": "POFLOW_DATABASE_URL"},
    "storage": {"home": "POFLOW_HOME"},
    "shopify": {
        "shop_url": "SHOPIFY_SHOP_URL",
        "access_token": "SHOPIFY_ACCESS_TOKEN",
        "api_version": "SHOPIFY_API_VERSION",
        "home": "POFLOW_HOME",
        "max_attempts": "POFLOW_SHOPIFY_MAX_ATTEMPTS",
        "throttle_timeout": "POFLOW_SHOPIFY_THROTTLE_TIMEOUT",
    },
    "progress": {"redis_url": "REDIS_URL"},
    "llm": {"api_key": "OPENAI_API_KEY", "base_url": "OPENAI_BASE_URL", "model": "POFLOW_LLM_MODEL"},
}
INT_FIELDS = {"max_attempts", "throttle_timeout"}


def env_fields(resource_key: str) -> dict[str, object]:
    """``dg.EnvVar`` (``dg.EnvVar.int`` for integer fields) for each field of ``resource_key`` whose variable is
    set now; unset variables are left out, so the field keeps its default."""
    fields: dict[str, object] = {}
    for field, name in RESOURCE_ENV[resource_key].items():
        if (os.environ.get(name) or "").strip():
            fields[field] = dg.EnvVar.int(name) if field in INT_FIELDS else dg.EnvVar(name)
    return fields


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources of the code location, configured from the environment as it is now."""
    return {
        "db": DatabaseResource(**env_fields("db")),
        "storage": StorageResource(**env_fields("storage")),
        "shopify": ShopifyResource(**env_fields("shopify")),
        "progress": ProgressResource(**env_fields("progress")),
        "llm": LLMResource(**env_fields("llm")),
    }


defs = dg.Definitions(
    assets=[purchase_order, product_images, *analytics_assets],
    asset_checks=[po_saved_correctly, shopify_matches_drafts, *analytics_checks],
    jobs=[po_job, analytics_job, partition_retention_job, catalog_sync_job],
    schedules=[analytics_schedule, partition_retention_schedule, catalog_sync_schedule, catalog_full_sync_schedule],
    sensors=[upload_sensor, po_failure_sensor, workflow_reconciler],
    resources=build_resources(),
)
