"""The one ``Definitions`` of poflow: PO assets and checks, analytics assets and checks, jobs, sensors, schedules
and resources."""

from __future__ import annotations

import os

import dagster as dg

from poflow_dagster.pipeline.analytics_assets import analytics_assets
from poflow_dagster.pipeline.analytics_checks import analytics_checks
from poflow_dagster.pipeline.analytics_schedules import analytics_job, analytics_schedule
from poflow_dagster.pipeline.assets import purchase_order
from poflow_dagster.pipeline.checks import po_saved_correctly, shopify_matches_drafts
from poflow_dagster.pipeline.images import product_images
from poflow_dagster.pipeline.jobs import image_job, po_job
from poflow_dagster.pipeline.reconciler import workflow_reconciler
from poflow_dagster.pipeline.sensors import image_attachment_sensor, po_failure_sensor, upload_sensor
from poflow_dagster.resources import DatabaseResource, LLMResource, ProgressResource, ShopifyResource, StorageResource


def _shopify() -> ShopifyResource:
    # Secrets come through dg.EnvVar (never logged); unset means the bundled emulator needs none.
    if os.environ.get("SHOPIFY_ACCESS_TOKEN"):
        return ShopifyResource(access_token=dg.EnvVar("SHOPIFY_ACCESS_TOKEN"))
    return ShopifyResource()


def _llm() -> LLMResource:
    if os.environ.get("OPENAI_API_KEY"):
        return LLMResource(api_key=dg.EnvVar("OPENAI_API_KEY"))
    return LLMResource()


defs = dg.Definitions(
    assets=[purchase_order, product_images, *analytics_assets],
    asset_checks=[po_saved_correctly, shopify_matches_drafts, *analytics_checks],
    jobs=[po_job, image_job, analytics_job],
    schedules=[analytics_schedule],
    sensors=[upload_sensor, po_failure_sensor, image_attachment_sensor, workflow_reconciler],
    resources={
        "db": DatabaseResource(),
        "storage": StorageResource(),
        "shopify": _shopify(),
        "progress": ProgressResource(),
        "llm": _llm(),
    },
)
