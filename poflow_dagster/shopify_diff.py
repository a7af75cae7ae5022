"""``poflow shopify diff UPLOAD``: what syncing this PO would change in Shopify, without changing anything there.

Reads only (the merchant's catalog is brought up to date in the app database, as a sync would; line matches are
computed but not recorded): products that would be created, products that exist and would change (field by field),
existing variants whose cost per item (and, for a merchant who opts in to price updates, price) would change, lines
still waiting for a reviewer's pick, and the stock: for a merchant who receives on sync, the units each line would
receive; for one who receives manually, nothing is received by the sync, so what each line has received so far.

Fast for big POs: poflow's products already synced are read back by their recorded variant (``nodes(ids:)``, up to
250 a request), the others by handle (aliased ``productByIdentifier``, :data:`HANDLES_PER_REQUEST` a request), never
one request per product.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import select

from poflow_dagster.catalog.po_matching import match_po, wanted_costs, wanted_prices
from poflow_dagster.catalog.store import catalog_candidates
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.receiving import plan_receipt, received_lines, receives_on_sync
from poflow_dagster.shopify.client import (
    MAX_NODE_IDS, ProductInfo, ProductSpec, ShopifyClient, VariantInfo, money_from_wire, money_to_wire,
)
from poflow_dagster.shopify.publish import product_specs
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import drafts_for_upload
from poflow_dagster.store.schema import Merchant, ShopifyProduct
from poflow_dagster.store.parse_cache import cached_parse

#: Handles looked up in one request (aliased ``productByIdentifier``, each with up to 10 variants: about 13 points
#: each, so a request stays well below Shopify's 1,000-point single-query limit).
HANDLES_PER_REQUEST = 50

_VARIANTS_QUERY = """
query PoflowDiffVariants($ids: [ID!]!) {
  nodes(ids: $ids) { ... on ProductVariant { id sku price product { id handle title status } } }
}
"""
_PRODUCT_FIELDS = "id handle title status variants(first: 10) { nodes { id sku price } }"


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
class ManualReceipt:
    """A line of a merchant who receives by hand: the sync receives nothing; this much is received so far."""

    line_no: int
    ordered: Decimal | None
    received: Decimal


@dataclass(frozen=True)
class ShopifyDiff:
    upload_id: str
    shop_url: str
    products: list[PlannedProduct] = field(default_factory=list)  # poflow's DRAFT products (unmatched lines)
    matched: list[PlannedProduct] = field(default_factory=list)  # existing variants (cost, opted-in price)
    awaiting_pick: list[str] = field(default_factory=list)  # AMBIGUOUS_MATCH lines (new products if approved as is)
    receipts: list[tuple[int, str, Decimal]] = field(default_factory=list)  # (line no, variant or "after sync", units)
    receive_on: str | None = None  # None: the merchant does not receive stock
    received_manually: list[ManualReceipt] = field(default_factory=list)  # receive_on == "manual"

    def to_json(self) -> dict:
        def product(p: PlannedProduct) -> dict:
            return {"action": p.action, "sku": p.sku, "target": p.target,
                    "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in p.changes]}

        return {"upload_id": self.upload_id, "shop": self.shop_url,
                "products": [product(p) for p in self.products], "matched": [product(p) for p in self.matched],
                "awaiting_pick": self.awaiting_pick, "receive_on": self.receive_on,
                "receipts": [{"line_no": n, "variant": v, "quantity": format(q, "f")} for n, v, q in self.receipts],
                "received_manually": [{"line_no": r.line_no, "ordered": None if r.ordered is None else str(r.ordered),
                                       "received": str(r.received)} for r in self.received_manually]}


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
    diff = ShopifyDiff(upload_id=upload_id, shop_url=shop_url, awaiting_pick=matching.review_reasons(parsed),
                       receive_on=merchant.receive_on if merchant.receive_stock else None)
    specs = product_specs(merchant.id, [d for d in drafts if d.sku not in existing | undecided])
    held = shop_products(db, client, shop_url, specs)
    diff.products.extend(_planned_product(spec, held.get(spec.handle)) for spec in specs)
    wanted = wanted_costs(parsed.lines, matching)
    prices = wanted_prices(wanted, merchant.markup_percent if merchant.update_price else None)
    current = {v.variant_gid: v for v in catalog_candidates(db, merchant.id, shop_url, variant_gids=wanted)}
    sku_of = {gid: line.sku or "" for line in parsed.lines if (gid := matching.matched.get(line.line_no))}
    for gid, cost in sorted(wanted.items()):
        variant = current.get(gid)
        changes = tuple(change for change in (
            FieldChange("cost", _money(variant.unit_cost if variant else None), _money(cost)),
            *([FieldChange("price", _money(variant.price if variant else None), _money(prices[gid]))]
              if gid in prices else []),
        ) if change.old != change.new)
        diff.matched.append(PlannedProduct("update" if changes else "unchanged", sku_of.get(gid, ""), gid, changes))
    if receives_on_sync(merchant):
        diff.receipts.extend(_receipts(db, upload_id))
    elif merchant.receive_stock:
        diff.received_manually.extend(ManualReceipt(r.line_no, r.ordered, r.received)
                                      for r in received_lines(db, upload_id))
    return diff


def shop_products(db: Database, client: ShopifyClient, shop_url: str,
                  specs: Iterable[ProductSpec]) -> dict[str, ProductInfo]:
    """``{handle: product}`` for the specs' products that exist in the shop, read in batches: those poflow
    synced by their recorded variant (``nodes``), the rest (and any whose record no longer holds) by handle."""
    wanted = {spec.handle: spec.sku for spec in specs}
    found: dict[str, ProductInfo] = {}
    recorded = _recorded_variants(db, shop_url, wanted)
    gids = sorted(recorded)
    for start in range(0, len(gids), MAX_NODE_IDS):
        batch = gids[start:start + MAX_NODE_IDS]
        nodes = client.execute(_VARIANTS_QUERY, {"ids": batch}, expected_cost=2.0 * len(batch))["nodes"]
        for node in nodes:
            product = _from_variant_node(node) if node else None
            if product is not None and product.handle in wanted and product.variant_for_sku(wanted[product.handle]):
                found[product.handle] = product
    rest = sorted(handle for handle in wanted if handle not in found)
    for start in range(0, len(rest), HANDLES_PER_REQUEST):
        found.update(_by_handles(client, rest[start:start + HANDLES_PER_REQUEST]))
    return found


def _recorded_variants(db: Database, shop_url: str, handles: Iterable[str]) -> dict[str, str]:
    """``{variant gid: handle}`` of the products poflow recorded in this shop under these handles."""
    handles = list(handles)
    recorded: dict[str, str] = {}
    with db.session() as session:
        for start in range(0, len(handles), 1000):
            recorded.update(session.execute(select(ShopifyProduct.variant_gid, ShopifyProduct.handle).where(
                ShopifyProduct.shop_url == shop_url, ShopifyProduct.handle.in_(handles[start:start + 1000]))).all())
    return recorded


def _by_handles(client: ShopifyClient, handles: list[str]) -> dict[str, ProductInfo]:
    """The products with these handles (one request: one aliased ``productByIdentifier`` per handle)."""
    if not handles:
        return {}
    params = ", ".join(f"$h{i}: String!" for i in range(len(handles)))
    fields = " ".join(f"p{i}: productByIdentifier(identifier: {{handle: $h{i}}}) {{ {_PRODUCT_FIELDS} }}"
                      for i in range(len(handles)))
    data = client.execute(f"query PoflowDiffProducts({params}) {{ {fields} }}",
                          {f"h{i}": handle for i, handle in enumerate(handles)}, expected_cost=13.0 * len(handles))
    products = (_from_product_node(data.get(f"p{i}")) for i in range(len(handles)))
    return {product.handle: product for product in products if product is not None}


def _from_product_node(node: dict | None) -> ProductInfo | None:
    if not node:
        return None
    return _product(node, [(v["id"], v.get("sku"), v["price"]) for v in (node.get("variants") or {}).get("nodes", [])])


def _from_variant_node(node: dict) -> ProductInfo | None:
    """A variant node as its product holding just that variant (``None`` if it is not a variant)."""
    if not node.get("product"):
        return None
    return _product(node["product"], [(node["id"], node.get("sku"), node["price"])])


def _product(node: dict, variants: list[tuple[str, str | None, str]]) -> ProductInfo:
    common = {"product_gid": node["id"], "product_status": str(node["status"]), "title": str(node["title"]),
              "handle": str(node["handle"])}
    return ProductInfo(product_gid=node["id"], handle=str(node["handle"]), title=str(node["title"]),
                       status=str(node["status"]), variants=tuple(
                           VariantInfo(sku=str(sku or ""), price=money_from_wire(price), variant_gid=gid, **common)
                           for gid, sku, price in variants))


def _planned_product(spec: ProductSpec, product: ProductInfo | None) -> PlannedProduct:
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
    plan = plan_receipt(db, upload_id, None, skip_unsynced=True)
    rows = [(r.line_no, r.variant_gid, r.quantity) for r in plan.receipts]
    return rows + [(line_no, "after sync", Decimal(0)) for line_no in plan.unsynced]


def _money(value: Decimal | None) -> str | None:
    return None if value is None else money_to_wire(value)
