"""The PO stages as ops. Each is short: call one core function, record the stage, attach metadata."""

# No `from __future__ import annotations` here: Dagster reads these type hints at definition time.

from dataclasses import dataclass, field

import dagster as dg

from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.domain.stages import Stage
from poflow_dagster.parsing import parse_upload
from poflow_dagster.pipeline.metadata import md_text, po_lines_markdown
from poflow_dagster.pipeline.stage_runner import run_stage
from poflow_dagster.resources import DatabaseResource, ProgressResource, ShopifyResource
from poflow_dagster.shopify.publish import publish_drafts
from poflow_dagster.store.drafts import DraftRecord, create_drafts_for_po
from poflow_dagster.store.purchase_orders import SavedPO, save_purchase_order
from poflow_dagster.store.uploads import merchant_for_upload, upload_info
from poflow_dagster.store.workflow import mark_completed

#: For stages that call the network (LLM, Shopify): three more tries, 0.5 s, 1 s, 2 s apart (± jitter).
NETWORK_RETRY = dg.RetryPolicy(max_retries=3, delay=0.5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


@dataclass(frozen=True)
class SyncSummary:
    """What ``shopify_sync`` did: products synced, or why it was skipped."""

    shop_url: str | None
    products: list[tuple[str, str]] = field(default_factory=list)  # (sku, product gid)
    created: int = 0
    skipped_reason: str | None = None


@dg.op(retry_policy=NETWORK_RETRY, tags={"poflow/stage": Stage.AI_PARSING.value})
def ai_parsing(context: dg.OpExecutionContext, db: DatabaseResource, progress: ProgressResource) -> ParsedPO:
    """Read the uploaded document (CSV, TSV, XLSX, …) into a structured purchase order.

    Unreadable or unsupported documents fail here with a stable code; the upload is marked failed
    and the original file is kept.
    """
    database = db.database
    with run_stage(context, Stage.AI_PARSING, database, progress) as stage:
        upload = upload_info(database, context.partition_key)
        parsed = parse_upload(upload)
        stage.items, stage.bytes = len(parsed.lines), upload.size_bytes
    context.add_output_metadata(
        {
            **stage.metadata(),
            "file": upload.original_filename,
            "bytes": upload.size_bytes,
            "format": parsed.source_format,
            "extractor": parsed.extractor,
            "po_number": parsed.po_number or "",
            "lines": len(parsed.lines),
            "issues": len(parsed.issues),
            "parsed_po": dg.MetadataValue.md(po_lines_markdown(parsed)),
        }
    )
    return parsed


@dg.op(tags={"poflow/stage": Stage.DATABASE_SAVE.value})
def database_save(
    context: dg.OpExecutionContext, parsed: ParsedPO, db: DatabaseResource, progress: ProgressResource
) -> SavedPO:
    """Save the PO and its lines in one transaction; saving the same upload again replaces, never duplicates."""
    database = db.database
    with run_stage(context, Stage.DATABASE_SAVE, database, progress) as stage:
        saved = save_purchase_order(database, context.partition_key, parsed)
        stage.items = saved.line_count
    context.add_output_metadata(
        {
            **stage.metadata(),
            "po_id": saved.po_id,
            "lines_saved": saved.line_count,
            "replaced_earlier_save": saved.replaced,
            "saved_lines": dg.MetadataValue.md(po_lines_markdown(parsed)),
        }
    )
    return saved


@dg.op(tags={"poflow/stage": Stage.PRODUCT_DRAFT_CREATION.value})
def product_draft_creation(
    context: dg.OpExecutionContext,
    parsed: ParsedPO,
    saved: SavedPO,
    db: DatabaseResource,
    progress: ProgressResource,
) -> list[DraftRecord]:
    """Create or update one product draft per distinct SKU, priced at unit cost plus the merchant's markup."""
    database = db.database
    with run_stage(context, Stage.PRODUCT_DRAFT_CREATION, database, progress) as stage:
        outcome = create_drafts_for_po(database, saved.upload_id, parsed)
        stage.items = len(outcome.drafts)
        stage.notes = outcome.skipped
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


@dg.op(retry_policy=NETWORK_RETRY, tags={"poflow/stage": Stage.SHOPIFY_SYNC.value})
def shopify_sync(
    context: dg.OpExecutionContext,
    drafts: list[DraftRecord],
    db: DatabaseResource,
    shopify: ShopifyResource,
    progress: ProgressResource,
) -> SyncSummary:
    """Upsert every draft into Shopify through the Admin GraphQL API (``productSet`` by handle: idempotent).

    Skipped, and says so, when the merchant has Shopify sync turned off.
    """
    database = db.database
    with run_stage(context, Stage.SHOPIFY_SYNC, database, progress) as stage:
        merchant = merchant_for_upload(database, context.partition_key)
        if not merchant.shopify_sync_enabled:
            stage.outcome, stage.items = "skipped", 0
            summary = SyncSummary(shop_url=None, skipped_reason=f"Shopify sync is off for merchant {merchant.id}")
        else:
            target = shopify.target_for(merchant)
            with shopify.client_for(target) as client:
                synced = publish_drafts(database, client, target.url, merchant.id, drafts)
            stage.items = len(synced)
            summary = SyncSummary(
                shop_url=target.url,
                products=[(p.sku, p.product_gid) for p in synced],
                created=sum(p.created for p in synced),
            )
    meta: dict[str, dg.RawMetadataValue] = {**stage.metadata(), "products": len(summary.products)}
    if summary.skipped_reason:
        meta["skipped"] = summary.skipped_reason
    else:
        meta["shop"] = summary.shop_url or ""
        meta["products_created"] = summary.created
        meta["shopify_products"] = dg.MetadataValue.md(
            "\n".join(["| SKU | Product |", "|---|---|"] + [f"| {md_text(s)} | `{g}` |" for s, g in summary.products])
        )
    context.add_output_metadata(meta)
    return summary


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
    """Mark the upload and its workflow completed; the PO's summary becomes the asset's value."""
    database = db.database
    with run_stage(context, Stage.STATUS_UPDATE, database, progress) as stage:
        mark_completed(database, context.partition_key, context.run_id)
        stage.items = 1
    summary = {
        "upload_id": context.partition_key,
        "po_id": saved.po_id,
        "po_number": parsed.po_number,
        "supplier": parsed.supplier_name,
        "currency": parsed.currency,
        "line_count": len(parsed.lines),
        "subtotal": None if parsed.subtotal is None else format(parsed.subtotal, "f"),
        "total": None if parsed.total is None else format(parsed.total, "f"),
        "drafts": len(drafts),
        "shopify_products": len(sync.products),
        "shopify_sync": "skipped" if sync.skipped_reason else "done",
    }
    context.add_output_metadata(
        {
            **stage.metadata(),
            **{k: ("" if v is None else v) for k, v in summary.items()},
            "parsed_po": dg.MetadataValue.md(po_lines_markdown(parsed)),
        }
    )
    return summary
