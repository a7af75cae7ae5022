from __future__ import annotations

import dagster as dg

from poflow_dagster import config
from poflow_dagster.pipeline.assets import purchase_order
from poflow_dagster.pipeline.images import product_images

#: Wall-clock budget of one PO run in seconds (``POFLOW_PO_RUN_MAX_RUNTIME``, default 30 min). Dagster's run
#: monitoring (the daemon, ``run_monitoring.enabled`` in dagster.yaml, checked every ``poll_interval_seconds``)
#: cancels a run tagged ``dagster/max_runtime`` once it has run longer, and marks it failed; po_failure_sensor
#: then marks the upload failed. Generous on purpose: Shopify pacing of a 1,000-SKU PO takes minutes. The tight
#: per-file bound is the extraction sandbox's (``POFLOW_EXTRACT_TIMEOUT``, see extraction/sandbox.py).
PO_RUN_MAX_RUNTIME_SECONDS = config.po_run_max_runtime_seconds()

#: One run per upload: the PO graph, its checks and its images, in one process (steps are I/O-bound; ~10 ms/step).
#: ``image_attachment`` depends on the PO and so runs after ``status_update`` has marked the upload completed (or
#: held it for review): it never holds the PO back, and it never fails the run (see ``pipeline/images.py``). Images
#: used to be a run of their own, started by a sensor after each PO run; that second run cost 0.39 of the 1.52
#: CPU-s a PO took in a burst (benchmarks/throughput.py) for a step of ~10 ms, so they moved into this run.
po_job = dg.define_asset_job(
    "po_job",
    selection=dg.AssetSelection.assets(purchase_order, product_images),
    executor_def=dg.in_process_executor,
    description="Process one uploaded PO end to end (partition = upload id), with its asset checks, then attach "
                "its product images.",
    tags={"poflow/kind": "po", "dagster/max_runtime": str(PO_RUN_MAX_RUNTIME_SECONDS)},
)
