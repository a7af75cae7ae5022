"""Product images: a side stage that runs after the PO is complete and never holds it back."""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import dagster as dg

from poflow_dagster.domain.stages import Stage
from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.pipeline.stage_runner import run_stage
from poflow_dagster.resources import DatabaseResource, ProgressResource
from poflow_dagster.store.drafts import drafts_for_upload

NO_IMAGE_SOURCE = "no image source is configured; drafts keep no images"


@dg.op(ins={"purchase_order": dg.In(dg.Nothing)}, tags={"poflow/stage": Stage.IMAGE_ATTACHMENT.value})
def image_attachment(context: dg.OpExecutionContext, db: DatabaseResource, progress: ProgressResource) -> dict:
    """Attach product images to this PO's drafts. No image source is configured yet, so it records that."""
    with run_stage(context, Stage.IMAGE_ATTACHMENT, db, progress) as stage:
        database = stage.database
        drafts = drafts_for_upload(database, context.partition_key)
        stage.outcome, stage.items = "skipped", 0
        stage.notes = [NO_IMAGE_SOURCE]
    context.add_output_metadata({**stage.metadata(), "drafts": len(drafts), "images_attached": 0})
    return {"drafts": len(drafts), "images_attached": 0, "reason": NO_IMAGE_SOURCE}


@dg.graph_asset(
    partitions_def=po_uploads,
    group_name="purchase_orders",
    ins={"purchase_order": dg.AssetIn(dagster_type=dg.Nothing)},
)
def product_images(purchase_order) -> dict:
    """Images for the PO's product drafts (step ``image_attachment``), materialised by
    ``image_attachment_sensor`` after the PO run succeeds, in its own run."""
    return image_attachment(purchase_order)
