"""Product images: a side stage of the PO run that runs after the PO is finished and never holds it back.

``po_job`` materialises ``product_images`` after ``purchase_order``: ``image_attachment`` starts once
``status_update`` has marked the upload completed (or held it for review), so the PO's status, percent and
``end_to_end`` never wait for it. A PO held for review gets its images too: they attach to its drafts, which
exist already, and nothing reaches Shopify before the approval (the continuation run attaches them again,
idempotently). A duplicate PO has no ``purchase_order`` output, so its images are skipped; so are they when the
blocking check ``po_saved_correctly`` fails.

The step never fails the run: whatever goes wrong is recorded as the failed ``image_attachment`` stage
(``stage_metrics`` and a ``stage_failed`` event, by ``run_stage``, which leaves the workflow alone for side
stages) and in the output's metadata. Only the database being away is retried, like every stage, and given up
silently once its retries are spent.
"""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import dagster as dg

from poflow_dagster.domain.stages import Stage
from poflow_dagster.pipeline.metadata import md_text
from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.pipeline.stage_runner import DATABASE_RETRIES, run_stage
from poflow_dagster.resources import DatabaseResource, ProgressResource
from poflow_dagster.store.drafts import drafts_for_upload

NO_IMAGE_SOURCE = "no image source is configured; drafts keep no images"


#: Below every other step of the run: among the steps ready after ``po_saved_correctly`` (the blocking check this
#: step waits for), ``shopify_matches_drafts`` goes first, so images are the run's last step and the PO's timeline
#: (its checks, its ``end_to_end``) ends where they start.
IMAGE_STEP_PRIORITY = "-1"


@dg.op(
    ins={"purchase_order": dg.In(dg.Nothing)},
    tags={"poflow/stage": Stage.IMAGE_ATTACHMENT.value, "dagster/priority": IMAGE_STEP_PRIORITY},
)
def image_attachment(context: dg.OpExecutionContext, db: DatabaseResource, progress: ProgressResource) -> dict:
    """Attach product images to this PO's drafts. No image source is configured yet, so it records that.

    Never fails: an error becomes the stage's ``failed`` outcome (with its code) and this output's ``error``."""
    try:
        with run_stage(context, Stage.IMAGE_ATTACHMENT, db, progress) as stage:
            drafts = drafts_for_upload(stage.database, context.partition_key)
            stage.outcome, stage.items = "skipped", 0
            stage.notes = [NO_IMAGE_SOURCE]
    except dg.RetryRequested:  # the database is away: try again like any stage, but never fail the run for it
        if context.retry_number < DATABASE_RETRIES:  # Dagster fails the step once they are spent
            raise
        return _failed(context, "the database stayed unavailable")
    except Exception as error:  # noqa: BLE001 - images never fail the PO's run
        # run_stage turned a PoflowError into a clean Failure (its code and one line); anything else is named.
        return _failed(context, error.description if isinstance(error, dg.Failure) else
                       f"{type(error).__name__}: {error}")
    context.add_output_metadata({**stage.metadata(), "drafts": len(drafts), "images_attached": 0})
    return {"drafts": len(drafts), "images_attached": 0, "reason": NO_IMAGE_SOURCE}


def _failed(context: dg.OpExecutionContext, error: str) -> dict:
    """The output of an image stage that failed: recorded already by ``run_stage`` (when it got that far), logged
    here, and put on the output's metadata. The run goes on (it succeeds)."""
    error = " ".join(error.split())[:500]
    context.log.warning(f"{context.partition_key}: images not attached ({error}); the PO is not affected")
    context.add_output_metadata({
        "stage": Stage.IMAGE_ATTACHMENT.value, "outcome": "failed", "error": error,
        "attempt": context.retry_number + 1, "images_attached": 0,
        "notes": dg.MetadataValue.md(f"- images not attached: {md_text(error)}"),
    })
    return {"drafts": None, "images_attached": 0, "error": error}


@dg.graph_asset(
    partitions_def=po_uploads,
    group_name="purchase_orders",
    ins={"purchase_order": dg.AssetIn(dagster_type=dg.Nothing)},
)
def product_images(purchase_order) -> dict:
    """Images for the PO's product drafts (step ``image_attachment``), in the PO's own run (``po_job``) after
    ``status_update``: they never hold the PO back and never fail its run."""
    return image_attachment(purchase_order)
