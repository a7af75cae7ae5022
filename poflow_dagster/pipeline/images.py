"""Product images: a side stage of the PO run that runs after the PO is finished and never holds it back.

``po_job`` materialises ``product_images`` after ``purchase_order``: ``image_attachment`` starts once
``status_update`` has marked the upload completed (or held it for review), so the PO's status, percent and
``end_to_end`` never wait for it. It runs :func:`~poflow_dagster.images.collect.collect_images` (document, supplier
feed, search; fetched concurrently, stored by content, de-duplicated) and attaches each draft's kept images to its
Shopify product as they are ready (:mod:`poflow_dagster.images.shopify_attach`). A PO held for review (a dry run
too) or a merchant with Shopify sync off gets its images fetched and stored only: nothing reaches Shopify before
the approval, whose continuation run attaches them (idempotently: what is attached is never sent again).
A duplicate PO has no ``purchase_order`` output, so its images are skipped; so are they when the blocking check
``po_saved_correctly`` fails.

Every image's step is a small ``progress`` event (found, fetched, rejected, attached, skipped) that leaves the PO's
percent and ETA alone; the stage's items are the images attached, its signals the counts the analytics assets read
(``images_found``, ``images_fetched``, ``images_deduplicated``, ``images_attached``, ``images_rejected``...), and
its outcome ``skipped`` (with the reason) when no source gave any image.

The step never fails the run: whatever goes wrong is recorded as the failed ``image_attachment`` stage
(``stage_metrics`` and a ``stage_failed`` event, by ``run_stage``, which leaves the workflow alone for side
stages) and in the output's metadata. Only the database being away is retried, like every stage, and given up
silently once its retries are spent.
"""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

import contextlib
from collections.abc import Iterator
from typing import Any

import dagster as dg

from poflow_dagster.domain.stages import Stage, UploadStatus
from poflow_dagster.images.collect import (
    AttachFn,
    ImageRun,
    ImageSettings,
    collect_images,
)
from poflow_dagster.images.shopify_attach import shopify_attach
from poflow_dagster.pipeline.metadata import md_text
from poflow_dagster.pipeline.partitions import po_uploads
from poflow_dagster.pipeline.stage_runner import DATABASE_RETRIES, StageRun, run_stage
from poflow_dagster.resources import DatabaseResource, ProgressResource, ShopifyResource
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import drafts_for_upload
from poflow_dagster.store.uploads import merchant_for_upload, upload_info

NO_IMAGE_SOURCE = "no image source is configured; drafts keep no images"
NO_IMAGE_FOUND = "no image source gave an image for any draft (document, supplier feed, search)"
HELD = "the PO is held for review: images are fetched and stored, and attach once it is approved"
SYNC_OFF = "Shopify sync is off for this merchant: images are fetched and stored only"
#: Notes shown in the output's metadata (a 5,000-line PO may have a note per draft); the rest are counted.
NOTES_SHOWN = 20
#: What each image event says (``poflow watch``, SSE): ``{sku}``, and ``{reason}`` where there is one.
_EVENT_TEXT = {
    "found": "Image found for {sku}", "fetched": "Image fetched for {sku}", "duplicate": "Duplicate image for {sku}",
    "rejected": "Image rejected for {sku} ({reason})", "attached": "Image attached to {sku}",
    "skipped": "Image skipped for {sku} ({reason})", "failed": "Image not attached to {sku} ({reason})",
}


#: Below every other step of the run: among the steps ready after ``po_saved_correctly`` (the blocking check this
#: step waits for), ``shopify_matches_drafts`` goes first, so images are the run's last step and the PO's timeline
#: (its checks, its ``end_to_end``) ends where they start.
IMAGE_STEP_PRIORITY = "-1"


@dg.op(
    ins={"purchase_order": dg.In(dg.Nothing)},
    tags={"poflow/stage": Stage.IMAGE_ATTACHMENT.value, "dagster/priority": IMAGE_STEP_PRIORITY},
)
def image_attachment(context: dg.OpExecutionContext, db: DatabaseResource, progress: ProgressResource,
                     shopify: ShopifyResource) -> dict:
    """Find, fetch, store, de-duplicate and attach this PO's product images (``images.collect``).

    Images attach to the drafts' Shopify products when the merchant syncs to Shopify and the PO is not held for
    review; otherwise they are fetched and stored, and a later run (the approval's continuation) attaches them.
    Never fails: an error becomes the stage's ``failed`` outcome (with its code) and this output's ``error``."""
    try:
        with run_stage(context, Stage.IMAGE_ATTACHMENT, db, progress) as stage:
            drafts = drafts_for_upload(stage.database, context.partition_key)
            run, attach_note, configured = _collect(context.partition_key, stage, shopify, bool(drafts))
            _record(stage, run, attach_note, configured)
    except dg.RetryRequested:  # the database is away: try again like any stage, but never fail the run for it
        if context.retry_number < DATABASE_RETRIES:  # Dagster fails the step once they are spent
            raise
        return _failed(context, "the database stayed unavailable")
    except Exception as error:  # noqa: BLE001 - images never fail the PO's run
        # run_stage turned a PoflowError into a clean Failure (its code and one line); anything else is named.
        return _failed(context, error.description if isinstance(error, dg.Failure) else
                       f"{type(error).__name__}: {error}")
    context.add_output_metadata({**stage.metadata(), **_metadata(run, attach_note, len(drafts))})
    if stage.outcome == "skipped":
        return {"drafts": len(drafts), "images_attached": 0, "reason": stage.notes[0]}
    return {"drafts": len(drafts), "images_attached": run.attached, "attach": attach_note or "shopify",
            **{k: v for k, v in run.to_dict().items() if k not in ("notes", "drafts", "attached")}}


def _collect(upload_id: str, stage: StageRun, shopify: ShopifyResource,
             any_drafts: bool) -> tuple[ImageRun, str | None, bool]:
    """Run ``collect_images`` with the attach function this PO may use; the run, why nothing attaches (``None``:
    images go to Shopify) and whether a feed or search is configured (a document's images need no configuration)."""
    database = stage.database
    merchant = merchant_for_upload(database, upload_id)
    settings = ImageSettings.from_env()
    configured = bool(merchant.image_feed_url or settings.search)
    if not any_drafts:
        return ImageRun(), None, configured
    note = _why_not_attached(database, upload_id, merchant.shopify_sync_enabled)
    events = _EventCounter(stage)
    with _attach_fn(database, shopify, merchant, note) as attach:
        run = collect_images(database, upload_id, settings=settings, attach=attach, on_event=events)
    return run, note, configured


def _why_not_attached(database: Database, upload_id: str, sync_enabled: bool) -> str | None:
    """Why this run stores images without attaching them (``None``: it attaches)."""
    if not sync_enabled:
        return SYNC_OFF
    if upload_info(database, upload_id).status in (UploadStatus.NEEDS_REVIEW, UploadStatus.DUPLICATE):
        return HELD  # held for review (a dry run is too): nothing reaches Shopify before the approval
    return None


@contextlib.contextmanager
def _attach_fn(database: Database, shopify: ShopifyResource, merchant: Any,
               not_attaching: str | None) -> Iterator[AttachFn | None]:
    """The Shopify attach function for the merchant's shop, or ``None``. The shop is resolved and its client
    opened on the first image to attach (a PO without images never talks to Shopify), and closed afterwards."""
    if not_attaching is not None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        attach: list[AttachFn] = []

        def lazily(draft, image):
            if not attach:
                target = shopify.target_for(merchant)
                client = stack.enter_context(shopify.client_for(target))
                attach.append(shopify_attach(database, client, target.url))
            return attach[0](draft, image)

        yield lazily


class _EventCounter:
    """Turns ``collect_images`` events into one small progress event each (items = images attached so far)."""

    def __init__(self, stage: StageRun) -> None:
        self.stage, self.attached = stage, 0

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "attached":
            self.attached += 1
        text = _EVENT_TEXT.get(kind, "Image {kind} for {sku}")
        self.stage.report_event(text.format(kind=kind, sku=payload.get("sku"), reason=payload.get("reason")),
                                self.attached)


def _record(stage: StageRun, run: ImageRun, attach_note: str | None, configured: bool) -> None:
    """The stage's outcome, items (images attached), signals for the analytics assets, and notes."""
    stage.items = run.attached
    stage.signals.update({
        "images_found": run.found, "images_fetched": run.fetched, "images_reused": run.reused,
        "images_not_modified": run.not_modified, "images_deduplicated": run.deduplicated,
        "images_attached": run.attached, "images_already_attached": run.already_attached,
        "images_rejected": sum(run.rejected.values()), "images_skipped": run.skipped,
        "images_attach_failed": run.attach_failed,
        **{f"images_rejected_{reason}": count for reason, count in sorted(run.rejected.items())},
        "images_sources_s": round(run.sources_s, 3), "images_fetch_s": round(run.fetch_s, 3),
        "images_attach_s": round(run.attach_s, 3),
    })
    notes = list(run.notes)
    handled = (run.found, run.fetched, run.reused, run.not_modified, run.deduplicated,
               run.already_duplicate, run.attached,
               run.already_attached, run.attach_failed, run.skipped, sum(run.rejected.values()))
    if not any(handled):
        stage.outcome = "skipped"
        notes.insert(0, NO_IMAGE_FOUND if configured else NO_IMAGE_SOURCE)
    elif attach_note is not None:
        notes.insert(0, attach_note)
    stage.notes = notes[:NOTES_SHOWN] + ([f"… and {len(notes) - NOTES_SHOWN} more notes"]
                                         if len(notes) > NOTES_SHOWN else [])


def _metadata(run: ImageRun, attach_note: str | None, drafts: int) -> dict[str, Any]:
    """Counts, refusals by reason and phase timings for the Dagster UI."""
    counts = run.to_dict()
    rejected = counts.pop("rejected")
    meta: dict[str, Any] = {
        "drafts": drafts, "images_attached": run.attached,
        "attach": attach_note or "to the drafts' Shopify products",
        "counts": dg.MetadataValue.json({k: v for k, v in counts.items()
                                         if k not in ("notes", "sources_s", "fetch_s", "attach_s")}),
        "timings_s": dg.MetadataValue.json({"sources": counts["sources_s"], "fetch": counts["fetch_s"],
                                            "attach": counts["attach_s"]}),
    }
    if rejected:
        meta["rejected"] = dg.MetadataValue.md("\n".join(
            ["| reason | images |", "|---|---|"] + [f"| {md_text(r)} | {n} |" for r, n in sorted(rejected.items())]))
    return meta


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
