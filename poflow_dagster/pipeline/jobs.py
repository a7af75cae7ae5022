from __future__ import annotations

import dagster as dg

from poflow_dagster.pipeline.assets import purchase_order
from poflow_dagster.pipeline.images import product_images

#: One run per upload: the PO graph and its checks, in one process (steps are I/O-bound; ~10 ms/step).
po_job = dg.define_asset_job(
    "po_job",
    selection=dg.AssetSelection.assets(purchase_order),
    executor_def=dg.in_process_executor,
    description="Process one uploaded PO end to end (partition = upload id), with its asset checks.",
    tags={"poflow/kind": "po"},
)

#: Images run in their own run after the PO completed, so they can never hold it back.
image_job = dg.define_asset_job(
    "image_job",
    selection=dg.AssetSelection.assets(product_images),
    executor_def=dg.in_process_executor,
    description="Attach images to one PO's product drafts (after the PO completed).",
    tags={"poflow/kind": "images"},
)
