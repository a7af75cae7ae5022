"""The ``dry_run`` of ``shopify_sync``: what the PO's sync would change, computed and shown, nothing written.

``ops: {shopify_sync: {config: {dry_run: true}}}`` (inside the ``purchase_order`` graph asset: ``ops:
{purchase_order: {ops: {shopify_sync: {config: {dry_run: true}}}}}``) makes the stage build the diff of
``poflow shopify diff`` (``shopify_diff.shopify_diff``: reads only) instead of syncing: no product, cost, receipt
or ``shopify_products`` link is written. The diff goes into the step's metadata (a markdown table and counts),
and a PO never synced is held as ``needs_review`` with reason ``DRY_RUN`` — never reported completed or synced — so
a person reads the diff and then approves it (``poflow approve`` / ``POST /api/uploads/{id}/approve``), or a normal
run of the partition syncs it. A PO whose last run completed it (:func:`completed_before`) stays completed: the dry
run only adds its diff and a note that it was a dry run.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import dagster as dg

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.pipeline.metadata import md_text
from poflow_dagster.shopify.client import ShopifyClient
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Merchant

#: The review reason of a PO whose sync was only previewed.
DRY_RUN = "DRY_RUN"
#: Rows of the markdown table (the JSON metadata keeps everything).
MAX_ROWS = 200
#: The asset whose materializations say how each run of a PO ended (its ``status`` metadata).
PO_ASSET = dg.AssetKey("purchase_order")


def completed_before(instance: dg.DagsterInstance, job_name: str, upload_id: str, run_id: str) -> bool:
    """Whether the PO was completed when this run started: the latest earlier run of ``job_name`` for the upload
    is the one that last materialized the PO, with ``status`` completed. (The workflow row cannot say: every run
    shows it processing from its first stage on.) A PO never run, held for review, or whose latest run failed
    before it ended is not completed."""
    this = instance.get_run_record_by_id(run_id)
    runs = instance.get_run_records(dg.RunsFilter(
        job_name=job_name, tags={"dagster/partition": upload_id},
        created_before=this.create_timestamp if this is not None else None), limit=2)
    earlier = next((r.dagster_run.run_id for r in runs if r.dagster_run.run_id != run_id), None)
    if earlier is None:
        return False
    found = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=PO_ASSET, asset_partitions=[upload_id]),
                                            limit=1).records
    if not found or found[0].run_id != earlier:
        return False
    status = (found[0].asset_materialization.metadata or {}).get("status") if found[0].asset_materialization else None
    return getattr(status, "value", status) == "completed"


def preview_sync(db: Database, client: ShopifyClient, merchant: Merchant, shop_url: str, upload_id: str) -> dict:
    """The diff as ``poflow shopify diff --format json`` prints it; a PO without drafts (no line has a SKU) would
    change nothing, so its diff is empty."""
    from poflow_dagster.shopify_diff import shopify_diff

    try:
        return shopify_diff(db, client, merchant, shop_url, upload_id).to_json()
    except PoflowError as error:
        if error.code != "not_drafted":
            raise
        return {"upload_id": upload_id, "shop": shop_url, "products": [], "matched": [], "awaiting_pick": [],
                "receipts": []}


def diff_counts(diff: dict) -> dict[str, int]:
    """What the diff adds up to: products to create / update, variant costs (fields) to change, lines awaiting a
    pick, receipts and units to receive."""
    products, matched = diff.get("products") or [], diff.get("matched") or []
    receipts = diff.get("receipts") or []
    return {
        "products_to_create": sum(p.get("action") == "create" for p in products),
        "products_to_update": sum(p.get("action") == "update" for p in products),
        "products_unchanged": sum(p.get("action") == "unchanged" for p in products),
        "variants_to_update": sum(p.get("action") == "update" for p in matched),
        "lines_awaiting_pick": len(diff.get("awaiting_pick") or []),
        "receipts": len(receipts),
        "units_to_receive": int(sum((_units(r.get("quantity")) for r in receipts), Decimal(0))),
    }


def _units(value: object) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def dry_run_note(counts: dict[str, int]) -> str:
    """The note of a dry run of a completed PO (it stays completed)."""
    return (f"dry run: nothing was written to Shopify; the PO was completed before and stays completed (the diff: "
            f"{counts['products_to_create']} products to create, {counts['products_to_update']} to update, "
            f"{counts['variants_to_update']} existing variants to update, {counts['units_to_receive']} units to "
            "receive)")


def dry_run_reason(counts: dict[str, int]) -> str:
    """The one-line ``DRY_RUN`` review reason the PO is held with."""
    return (f"{DRY_RUN}: nothing was written to Shopify (dry run): {counts['products_to_create']} products to "
            f"create, {counts['products_to_update']} to update, {counts['variants_to_update']} existing variants "
            f"to update, {counts['units_to_receive']} units to receive; approve the PO (`poflow approve UPLOAD`) or "
            "run it again without dry_run to sync")


def diff_markdown(diff: dict) -> str:
    """The diff as the Dagster UI shows it: one row per product or variant (changes field by field), then the
    lines awaiting a pick and the receipts."""
    rows = ["| Action | Kind | SKU | Target | Changes |", "|---|---|---|---|---|"]
    items = [("product", p) for p in diff.get("products") or []] + [("variant", p) for p in diff.get("matched") or []]
    for kind, item in items[:MAX_ROWS]:
        changes = "<br>".join(f"{md_text(c.get('field'))}: {md_text(c.get('old')) or '–'} → "
                              f"{md_text(c.get('new')) or '–'}" for c in item.get("changes") or [])
        rows.append(f"| {md_text(item.get('action'))} | {kind} | {md_text(item.get('sku'))} | "
                    f"`{md_text(item.get('target'))}` | {changes} |")
    if len(items) > MAX_ROWS:
        rows.append(f"| … | | {len(items) - MAX_ROWS} more (see `diff_json`) | | |")
    if len(items) == 0:
        rows.append("| none | | | | |")
    parts = ["\n".join(rows)]
    if diff.get("awaiting_pick"):
        parts.append("**Awaiting a pick**\n\n" + "\n".join(f"- {md_text(r)}" for r in diff["awaiting_pick"]))
    if diff.get("receipts"):
        receipt_rows = ["| Line | Quantity | Into |", "|---:|---:|---|"] + [
            f"| {md_text(r.get('line_no'))} | {md_text(r.get('quantity'))} | {md_text(r.get('variant'))} |"
            for r in diff["receipts"][:MAX_ROWS]]
        parts.append("**Stock to receive**\n\n" + "\n".join(receipt_rows))
    return "\n\n".join(parts)
