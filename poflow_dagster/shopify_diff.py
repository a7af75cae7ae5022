"""``poflow shopify diff UPLOAD``: what syncing this PO would change in Shopify, without changing anything there.

Reads only (the merchant's catalog is brought up to date in the app database, as a sync would; line matches are
computed but not recorded): products that would be created, products that exist and would change (field by field),
existing variants whose cost per item would change, lines still waiting for a reviewer's pick, and — for a merchant
that receives stock — the units each line would receive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from poflow_dagster.catalog.po_matching import match_po, wanted_costs
from poflow_dagster.catalog.store import catalog_candidates
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.client import ShopifyClient, money_to_wire
from poflow_dagster.shopify.publish import product_specs
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import drafts_for_upload
from poflow_dagster.store.schema import Merchant
from poflow_dagster.store.parse_cache import cached_parse


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class PlannedProduct:
    """One Shopify object the sync would touch: ``create``, ``update`` (with its changes) or ``unchanged``."""

    action: str
    sku: str
    target: str  # a handle for poflow's products, a variant gid for matched ones
    changes: tuple[FieldChange, ...] = ()


@dataclass(frozen=True)
class ShopifyDiff:
    upload_id: str
    shop_url: str
    products: list[PlannedProduct] = field(default_factory=list)  # poflow's DRAFT products (unmatched lines)
    matched: list[PlannedProduct] = field(default_factory=list)  # existing variants (cost per item)
    awaiting_pick: list[str] = field(default_factory=list)  # AMBIGUOUS_MATCH lines (new products if approved as is)
    receipts: list[tuple[int, str, Decimal]] = field(default_factory=list)  # (line no, variant or "after sync", units)

    def to_json(self) -> dict:
        def product(p: PlannedProduct) -> dict:
            return {"action": p.action, "sku": p.sku, "target": p.target,
                    "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in p.changes]}

        return {"upload_id": self.upload_id, "shop": self.shop_url,
                "products": [product(p) for p in self.products], "matched": [product(p) for p in self.matched],
                "awaiting_pick": self.awaiting_pick,
                "receipts": [{"line_no": n, "variant": v, "quantity": format(q, "f")} for n, v, q in self.receipts]}


def shopify_diff(db: Database, client: ShopifyClient, merchant: Merchant, shop_url: str, upload_id: str) -> ShopifyDiff:
    """The dry run (see the module docstring). The PO must have been saved and drafted (a run got that far,
    e.g. a PO held for review); otherwise ``not_drafted``."""
    parsed = cached_parse(db, upload_id)
    drafts = drafts_for_upload(db, upload_id)
    if parsed is None or not drafts:
        raise PoflowError("not_drafted", f"upload {upload_id} has no saved PO with drafts yet; run it first "
                                         "(`poflow run`), a PO held for review has both")
    matching = match_po(db, client, merchant.id, shop_url, upload_id, parsed, record=False)
    existing = matching.matched_skus(parsed.lines)
    undecided = {line.sku for line in parsed.lines if line.line_no in {m.line_no for m in matching.ambiguous}}
    diff = ShopifyDiff(upload_id=upload_id, shop_url=shop_url, awaiting_pick=matching.review_reasons(parsed))
    for spec in product_specs(merchant.id, [d for d in drafts if d.sku not in existing | undecided]):
        diff.products.append(_planned_product(client, spec))
    wanted = wanted_costs(parsed.lines, matching)
    current = {v.variant_gid: v for v in catalog_candidates(db, merchant.id, shop_url, variant_gids=wanted)}
    sku_of = {gid: line.sku or "" for line in parsed.lines if (gid := matching.matched.get(line.line_no))}
    for gid, cost in sorted(wanted.items()):
        old = current[gid].unit_cost if gid in current else None
        changes = () if old == cost else (FieldChange("cost", _money(old), _money(cost)),)
        diff.matched.append(PlannedProduct("update" if changes else "unchanged", sku_of.get(gid, ""), gid, changes))
    if merchant.receive_stock:
        diff.receipts.extend(_receipts(db, upload_id))
    return diff


def _planned_product(client: ShopifyClient, spec) -> PlannedProduct:
    product = client.get_product(spec.handle)
    variant = product.variant_for_sku(spec.sku) if product is not None else None
    if product is None or variant is None:
        return PlannedProduct("create", spec.sku, spec.handle, (
            FieldChange("title", None, spec.title), FieldChange("price", None, _money(spec.price)),
            FieldChange("status", None, spec.status)))
    changes = tuple(change for change in (
        FieldChange("title", product.title, spec.title),
        FieldChange("price", _money(variant.price), _money(spec.price)),
        FieldChange("status", product.status.upper(), spec.status),
    ) if change.old != change.new)
    return PlannedProduct("update" if changes else "unchanged", spec.sku, spec.handle, changes)


def _receipts(db: Database, upload_id: str) -> list[tuple[int, str, Decimal]]:
    """Units per line a full receipt would bring in (lines without a variant yet get theirs at sync)."""
    from poflow_dagster.receiving import plan_receipt

    plan = plan_receipt(db, upload_id, None, skip_unsynced=True)
    rows = [(r.line_no, r.variant_gid, r.quantity) for r in plan.receipts]
    return rows + [(line_no, "after sync", Decimal(0)) for line_no in plan.unsynced]


def _money(value: Decimal | None) -> str | None:
    return None if value is None else money_to_wire(value)
