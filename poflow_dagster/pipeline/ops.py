"""The PO stages as ops. Each is short: call one core function, record the stage, attach metadata."""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

from dataclasses import dataclass, field

import dagster as dg
from pydantic import Field

from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.domain.reconcile import needs_review, review_reasons
from poflow_dagster.domain.stages import Stage
from poflow_dagster.parsing import parse_upload
from poflow_dagster.pipeline.dry_run import (
    completed_before, diff_counts, diff_markdown, dry_run_note, dry_run_reason, preview_sync,
)
from poflow_dagster.pipeline.metadata import md_text, po_lines_markdown
from poflow_dagster.pipeline.run_history import po_timeline_metadata
from poflow_dagster.pipeline.stage_runner import run_stage
from poflow_dagster.resources import DatabaseResource, LLMResource, ProgressResource, ShopifyResource
from poflow_dagster.shop_sync import sync_po_to_shop
from poflow_dagster.store.drafts import DraftRecord, create_drafts_for_po
from poflow_dagster.store.purchase_orders import SavedPO, save_purchase_order
from poflow_dagster.store.review import is_approved
from poflow_dagster.store.uploads import merchant_for_upload, upload_info
from poflow_dagster.store.workflow import mark_completed, mark_duplicate_po, mark_needs_review


@dataclass(frozen=True)
class SyncSummary:
    """What ``shopify_sync`` did: products synced, or why it was skipped."""

    shop_url: str | None
    products: list[tuple[str, str]] = field(default_factory=list)  # (sku, product gid)
    created: int = 0
    skipped_reason: str | None = None
    held_for_review: list[str] = field(default_factory=list)  # error issues / ambiguous matches nobody decided yet
    matched: int = 0  # lines that are existing variants of the merchant's catalog (no new product)
    cost_updates: int = 0  # matched variants whose cost per item changed to the PO's unit cost
    receipts: int | None = None  # stock receipts applied at sync (None: the merchant does not receive stock)
    receipts_failed: int | None = None  # of those, refused by Shopify (e.g. item not stocked at the location)
    dry_run: dict | None = None  # the diff (``poflow shopify diff --format json``) of a dry run; nothing was written


class ParsingConfig(dg.Config):
    force_reparse: bool = False
    """Parse the document again even if this upload's bytes were parsed before (e.g. after an extractor fix)."""


# Retry owners: the LLM and Shopify clients retry their own calls (backoff, Retry-After, time budgets) and
# give up with a PoflowError, which run_stage turns into a final Failure; run_stage re-runs an op only while
# the database is away (outage, restart). No op carries a RetryPolicy of its own.
@dg.op(
    tags={"poflow/stage": Stage.AI_PARSING.value},
    out=dg.Out(ParsedPO, is_required=False),
)
def ai_parsing(
    context: dg.OpExecutionContext,
    config: ParsingConfig,
    db: DatabaseResource,
    llm: LLMResource,
    progress: ProgressResource,
):
    """Read the uploaded document (spreadsheet, PDF, scan, EDI X12 850, UBL XML) into a purchase order
    and check its arithmetic.

    Unreadable documents fail here with a stable code (the upload is marked failed, the file kept). A PO
    with the same supplier and PO number as an earlier upload is recorded as its duplicate and goes no
    further. A parse is cached per upload, so later runs of this partition reuse it.
    """
    upload_id = context.partition_key
    with run_stage(context, Stage.AI_PARSING, db, progress) as stage:
        database = stage.database
        upload = upload_info(database, upload_id)
        outcome = parse_upload(
            database, upload, llm=llm.settings(), force=config.force_reparse, on_progress=stage.report_fraction
        )
        parsed = outcome.parsed
        stage.items, stage.bytes = len(parsed.lines), upload.size_bytes
        stage.outcome = "reused" if outcome.reused else "success"
        stats = parsed.stats
        if isinstance(stats.get("pages"), int):  # PDFs, scans and LLM documents
            stage.signals["pages"] = stats["pages"]
        if not outcome.reused and "windows" in stats:  # the LLM read the document in this run
            stage.signals.update(llm_windows=stats["windows"], llm_seconds=stats.get("seconds", 0.0),
                                 llm_retries=stats.get("retries", 0))
        if outcome.duplicate_of:
            stage.notes = [f"same supplier and PO number as upload {outcome.duplicate_of}: recorded as its duplicate"]
            mark_duplicate_po(database, upload_id, context.run_id, outcome.duplicate_of)
            stage.finish_as("duplicate", f"Same supplier and PO number as upload {outcome.duplicate_of}")
    meta = {
        **stage.metadata(),
        "file": upload.original_filename,
        "bytes": upload.size_bytes,
        "format": parsed.source_format,
        "extractor": parsed.extractor,
        "po_number": parsed.po_number or "",
        "lines": len(parsed.lines),
        "issues": len(parsed.issues),
        "needs_review": needs_review(parsed),
        "parsed_po": dg.MetadataValue.md(po_lines_markdown(parsed)),
        **{f"extraction_{k}": v for k, v in parsed.stats.items() if isinstance(v, (int, float, str))},
    }
    if outcome.duplicate_of:
        context.log.info(f"duplicate of upload {outcome.duplicate_of}; no second PO")
        context.log_event(dg.AssetObservation(asset_key="purchase_order", partition=upload_id, metadata=meta))
        return
    yield dg.Output(parsed, metadata=meta)


@dg.op(tags={"poflow/stage": Stage.DATABASE_SAVE.value}, out=dg.Out(SavedPO, is_required=False))
def database_save(context: dg.OpExecutionContext, parsed: ParsedPO, db: DatabaseResource, progress: ProgressResource):
    """Save the PO and its lines in one transaction; saving the same upload again replaces, never duplicates.

    One PO per merchant + supplier + PO number: if another upload saved the same PO first (even at the same
    moment), this upload is recorded as its duplicate (``duplicate_po``) and the run stops here, cleanly —
    no drafts, no Shopify.
    """
    upload_id = context.partition_key
    with run_stage(context, Stage.DATABASE_SAVE, db, progress) as stage:
        database = stage.database
        saved = save_purchase_order(database, upload_id, parsed, on_progress=stage.report_fraction)
        stage.items = saved.line_count
        stage.outcome = "reused" if saved.unchanged else "success"
        if saved.duplicate_of:
            stage.outcome = "skipped"
            stage.notes = [f"same supplier and PO number as upload {saved.duplicate_of}: recorded as its duplicate"]
            mark_duplicate_po(database, upload_id, context.run_id, saved.duplicate_of, stage=Stage.DATABASE_SAVE)
            stage.finish_as("duplicate", f"Same supplier and PO number as upload {saved.duplicate_of}")
    meta = {
        **stage.metadata(),
        "po_id": saved.po_id,
        "lines_saved": saved.line_count,
        "replaced_earlier_save": saved.replaced,
        "saved_lines": dg.MetadataValue.md(po_lines_markdown(parsed)),
    }
    if saved.duplicate_of:
        context.log.info(f"duplicate of upload {saved.duplicate_of}; no second PO")
        meta["duplicate_of"] = saved.duplicate_of
        context.log_event(dg.AssetObservation(asset_key="purchase_order", partition=upload_id, metadata=meta))
        return
    yield dg.Output(saved, metadata=meta)


@dg.op(tags={"poflow/stage": Stage.PRODUCT_DRAFT_CREATION.value})
def product_draft_creation(
    context: dg.OpExecutionContext,
    parsed: ParsedPO,
    saved: SavedPO,
    db: DatabaseResource,
    progress: ProgressResource,
) -> list[DraftRecord]:
    """Create or update one product draft per distinct SKU, priced at unit cost plus the merchant's markup."""
    with run_stage(context, Stage.PRODUCT_DRAFT_CREATION, db, progress) as stage:
        database = stage.database
        outcome = create_drafts_for_po(database, saved.upload_id, parsed, on_progress=stage.report_fraction)
        stage.items = len(outcome.drafts)
        stage.signals["skus"] = len(outcome.drafts)
        stage.notes = outcome.skipped
        if outcome.drafts and not any(d.changed for d in outcome.drafts):
            stage.outcome = "reused"
    rows = ["| SKU | Title | Cost | Price | New |", "|---|---|---:|---:|---|"] + [
        f"| {md_text(d.sku)} | {md_text(d.title)} | {d.unit_cost} | {d.price} | {'yes' if d.created else 'updated'} |"
        for d in outcome.drafts
    ]
    context.add_output_metadata(
        {
            **stage.metadata(),
            "drafts": len(outcome.drafts),
            "drafts_created": sum(d.created for d in outcome.drafts),
            "lines_without_draft": len(outcome.skipped),
            "draft_table": dg.MetadataValue.md("\n".join(rows)),
        }
    )
    return outcome.drafts


class SyncConfig(dg.Config):
    dry_run: bool = Field(
        default=False,
        description="Preview only: compute what this PO's sync would change in Shopify (products to create or update, "
        "field by field; existing variants' cost; units to receive) and write nothing to Shopify — no products, cost "
        "updates, receipts or shopify_products links. The diff goes into this step's metadata; a PO never synced is held "
        "for review (DRY_RUN), never reported completed (approve it or run it again without dry_run to sync), and a "
        "completed PO stays completed.",
    )


# No op retry: the Shopify client owns Shopify retries (THROTTLED within a time budget, 5xx/transport with
# backoff); an error it gives up on fails the stage cleanly with its code.
@dg.op(tags={"poflow/stage": Stage.SHOPIFY_SYNC.value}, pool="shopify")
def shopify_sync(
    context: dg.OpExecutionContext,
    config: SyncConfig,
    parsed: ParsedPO,
    drafts: list[DraftRecord],
    db: DatabaseResource,
    shopify: ShopifyResource,
    progress: ProgressResource,
) -> SyncSummary:
    """Bring the PO into the merchant's Shopify store: lines that are existing variants of the store's catalog get
    their cost per item updated (no duplicate product), the other drafts become DRAFT products (``productSet`` by
    handle, a bulk operation for large POs: idempotent), and stock is received for merchants who opted in.

    Held back, and says why, while the PO has error-severity issues or ambiguous catalog matches nobody decided
    (``poflow approve [--match LINE=VARIANT]``); skipped, and says so, when the merchant has Shopify sync off.
    With ``dry_run`` (config) it only computes the diff (``poflow shopify diff``), shows it in its metadata and holds
    a PO never synced for review (``DRY_RUN``; a completed PO stays completed): nothing is written to Shopify.
    """
    with run_stage(context, Stage.SHOPIFY_SYNC, db, progress) as stage:
        database = stage.database
        merchant = merchant_for_upload(database, context.partition_key)
        held = needs_review(parsed) and not is_approved(database, context.partition_key)
        if config.dry_run and merchant.shopify_sync_enabled:  # reads only: the diff goes into the metadata
            target = shopify.target_for(merchant)
            completed = completed_before(context.instance, context.job_name, context.partition_key, context.run_id)
            with shopify.client_for(target) as client:
                summary = _dry_run(database, client, merchant, target.url, context.partition_key,
                                   review_reasons(parsed) if held else [], completed=completed)
                stage.signals.update(shopify_requests=client.stats.requests)
            stage.outcome, stage.items = "skipped", 0
        elif held:
            stage.outcome, stage.items = "skipped", 0
            summary = SyncSummary(shop_url=None, skipped_reason="held for review: the PO has error-severity issues",
                                  held_for_review=review_reasons(parsed))
        elif not merchant.shopify_sync_enabled:
            stage.outcome, stage.items = "skipped", 0
            summary = SyncSummary(shop_url=None, skipped_reason=f"Shopify sync is off for merchant {merchant.id}")
        else:
            target = shopify.target_for(merchant)
            with shopify.client_for(target) as client:
                before = (client.stats.requests, client.stats.points,
                          client.stats.paced_seconds + client.stats.throttled_seconds)
                done = sync_po_to_shop(database, client, merchant.id, target.url, context.partition_key, parsed,
                                       drafts, on_progress=stage.report_fraction)
                summary = SyncSummary(
                    shop_url=None if done.held_for_review else target.url,
                    products=[(p.sku, p.product_gid) for p in done.synced],
                    created=sum(p.created for p in done.synced),
                    skipped_reason="held for review: ambiguous catalog matches" if done.held_for_review else None,
                    held_for_review=done.held_for_review,
                    matched=done.matched, cost_updates=done.cost_updates,
                    receipts=done.receipts, receipts_failed=done.receipts_failed,
                )
                stage.signals.update(
                    shopify_requests=client.stats.requests - before[0],
                    shopify_points=round(client.stats.points - before[1], 3),
                    shopify_throttled_s=round(client.stats.paced_seconds + client.stats.throttled_seconds - before[2], 3),
                    catalog_matched=done.matched, catalog_ambiguous=done.ambiguous,
                )
            if summary.skipped_reason:
                stage.outcome, stage.items = "skipped", 0
            else:
                stage.items = len(done.synced) + done.matched
        if summary.skipped_reason:  # the stage_skipped event says why
            stage.notes = [summary.skipped_reason]
    meta: dict[str, dg.RawMetadataValue] = {**stage.metadata(), "products": len(summary.products)}
    if summary.dry_run is not None:
        meta.update({"dry_run": True, **diff_counts(summary.dry_run),
                     "diff": dg.MetadataValue.md(diff_markdown(summary.dry_run)),
                     "diff_json": dg.MetadataValue.json(summary.dry_run)})
    if summary.skipped_reason:
        meta["skipped"] = summary.skipped_reason
        if summary.held_for_review:
            meta["review_reasons"] = dg.MetadataValue.md("\n".join(f"- {md_text(r)}" for r in summary.held_for_review))
    else:
        meta["shop"] = summary.shop_url or ""
        meta["products_created"] = summary.created
        meta["matched_existing_variants"] = summary.matched
        meta["variant_cost_updates"] = summary.cost_updates
        if summary.receipts is not None:
            meta["stock_receipts"] = summary.receipts
            meta["stock_receipts_failed"] = summary.receipts_failed or 0
        meta["shopify_products"] = dg.MetadataValue.md(
            "\n".join(["| SKU | Product |", "|---|---|"] + [f"| {md_text(s)} | `{g}` |" for s, g in summary.products])
        )
    context.add_output_metadata(meta)
    return summary


def _dry_run(database, client, merchant, shop_url: str, upload_id: str, issues: list[str], *,
             completed: bool = False) -> SyncSummary:
    """The dry run's summary: the diff, and the PO held for review with a ``DRY_RUN`` reason (plus its unapproved
    error ``issues`` and the lines still awaiting a pick), so it is never reported completed — unless it was
    ``completed`` before this run: then its status is left alone and a note says it was a dry run. Nothing is
    written to Shopify."""
    diff = preview_sync(database, client, merchant, shop_url, upload_id)
    if completed:
        return SyncSummary(shop_url=None, skipped_reason=dry_run_note(diff_counts(diff)), dry_run=diff)
    return SyncSummary(shop_url=None, skipped_reason="dry run: nothing was written to Shopify",
                       held_for_review=[dry_run_reason(diff_counts(diff)), *issues, *(diff.get("awaiting_pick") or [])],
                       dry_run=diff)


@dg.op(tags={"poflow/stage": Stage.STATUS_UPDATE.value})
def status_update(
    context: dg.OpExecutionContext,
    parsed: ParsedPO,
    saved: SavedPO,
    drafts: list[DraftRecord],
    sync: SyncSummary,
    db: DatabaseResource,
    progress: ProgressResource,
) -> dict:
    """Mark the upload and its workflow completed, or ``needs_review`` with the reasons when the PO was
    held back before Shopify; the PO's summary becomes the asset's value.

    Its metadata carries the run's whole timeline so far (``timeline``: the waits no op sees — upload received →
    run created → launched → first stage — and every stage with its own duration), plus ``end_to_end_s_so_far``,
    ``waits_s`` and ``<stage>_s``."""
    with run_stage(context, Stage.STATUS_UPDATE, db, progress) as stage:
        database = stage.database
        if sync.held_for_review:
            mark_needs_review(database, context.partition_key, context.run_id, sync.held_for_review)
            stage.finish_as("needs_review", "; ".join(sync.held_for_review))
        else:
            mark_completed(database, context.partition_key, context.run_id)
            stage.finish_as("completed", "Completed")
        stage.items = 1
    # The whole run so far (waits no op sees, every stage), so the partition page tells the real story.
    timeline = po_timeline_metadata(context.instance, database, context.run_id, context.partition_key, context.log)
    summary = {
        "upload_id": context.partition_key,
        "po_id": saved.po_id,
        "po_number": parsed.po_number,
        "supplier": parsed.supplier_name,
        "currency": parsed.currency,
        "line_count": len(parsed.lines),
        "subtotal": None if parsed.subtotal is None else format(parsed.subtotal, "f"),
        "lines_sum": format(parsed.lines_sum(), "f"),
        "total": None if parsed.total is None else format(parsed.total, "f"),
        "drafts": len(drafts),
        "shopify_products": len(sync.products),
        "shopify_sync": "held_for_review" if sync.held_for_review else ("skipped" if sync.skipped_reason else "done"),
        "status": "needs_review" if sync.held_for_review else "completed",
        "issues": [f"{i.code} ({i.severity}): {i.message}" for i in parsed.issues],
    }
    # This output's metadata is the PO partition's materialization: the run's timeline and total lead, so the
    # partition page never shows this last step's few milliseconds as if they were the PO's duration.
    own = {k: v for k, v in stage.metadata().items() if k not in ("stage", "duration_ms", "outcome", "items")}
    context.add_output_metadata(
        {
            **own,
            "status_update_ms": stage.duration_ms,
            **{k: ("" if v is None else v) for k, v in summary.items() if k != "issues"},
            "review_reasons": dg.MetadataValue.md(
                "\n".join(f"- {md_text(r)}" for r in sync.held_for_review) or "none"
            ),
            "parsed_po": dg.MetadataValue.md(po_lines_markdown(parsed)),
            **timeline,
        }
    )
    return summary
