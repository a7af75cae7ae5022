"""``poflow shopify diff UPLOAD``: what syncing this PO would change in Shopify, without changing anything there.

Reads only (the merchant's catalog is brought up to date in the app database, as a sync would; line matches are
computed but not recorded): products that would be created, products that exist and would change (field by field),
existing variants whose cost per item (and, for a merchant who opts in to price updates, price) would change, lines
still waiting for a reviewer's pick, and the stock: for a merchant who receives on sync, the units each line would
receive and where (the matched variant, as this diff's own matching found it, or the product the sync creates); for
one who receives manually, nothing is received by the sync, so what each line has received so far. Barcodes are
part of the product: a new product's, and a change to one of poflow's products.

Fast for big POs: poflow's products already synced are read back by their recorded variant (``nodes(ids:)``, up to
250 a request), the others by handle (aliased ``productByIdentifier``, :data:`HANDLES_PER_REQUEST` a request), never
one request per product.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import select

from poflow_dagster.catalog.po_matching import PoMatching, match_po, wanted_costs, wanted_prices
from poflow_dagster.catalog.store import catalog_candidates
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.receiving import plan_receipt, received_lines, receives_on_sync
from poflow_dagster.shopify.client import (
    MAX_NODE_IDS, ProductInfo, ProductSpec, ShopifyClient, VariantInfo, handle_for_sku, money_from_wire,
    money_to_wire,
)
from poflow_dagster.shopify.publish import product_specs
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import DraftRecord, drafts_for_upload
from poflow_dagster.store.parse_cache import cached_parse
from poflow_dagster.store.schema import Merchant, ShopifyProduct, StockReceipt

#: Handles looked up in one request (aliased ``productByIdentifier``, each with up to 10 variants: about 13 points
#: each, so a request stays well below Shopify's 1,000-point single-query limit).
HANDLES_PER_REQUEST = 50

_VARIANTS_QUERY = """
query PoflowDiffVariants($ids: [ID!]!) {
  nodes(ids: $ids) { ... on ProductVariant { id sku price barcode product { id handle title status } } }
}
"""
_PRODUCT_FIELDS = "id handle title status variants(first: 10) { nodes { id sku price barcode } }"
#: Receipt targets that are not a variant yet (the variant gid otherwise).
NEW_PRODUCT = "new product"  # + the handle: the product the sync creates for the line's SKU
AWAITING_PICK = "awaiting a pick"  # an ambiguous line: the variant a reviewer picks, or a new product
NOT_RECEIVED = "not received: no variant"  # no SKU and no match: the sync has nowhere to put the units


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
class ShopProduct:
    """A product as the shop holds it, with each variant's barcode (``ProductInfo`` carries none)."""

    info: ProductInfo
    barcodes: Mapping[str, str | None] = field(default_factory=dict)  # variant gid -> barcode

    def barcode_of(self, variant: VariantInfo) -> str | None:
        return self.barcodes.get(variant.variant_gid)


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
    receipts: list[tuple[int, str, Decimal]] = field(default_factory=list)  # (line no, variant or target, units)
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
        diff.receipts.extend(_sync_receipts(db, merchant.id, upload_id, parsed, matching, drafts))
    elif merchant.receive_stock:
        diff.received_manually.extend(ManualReceipt(r.line_no, r.ordered, r.received)
                                      for r in received_lines(db, upload_id))
    return diff


def shop_products(db: Database, client: ShopifyClient, shop_url: str,
                  specs: Iterable[ProductSpec]) -> dict[str, ShopProduct]:
    """``{handle: product}`` for the specs' products that exist in the shop, read in batches: those poflow
    synced by their recorded variant (``nodes``), the rest (and any whose record no longer holds) by handle."""
    wanted = {spec.handle: spec.sku for spec in specs}
    found: dict[str, ShopProduct] = {}
    recorded = _recorded_variants(db, shop_url, wanted)
    gids = sorted(recorded)
    for start in range(0, len(gids), MAX_NODE_IDS):
        batch = gids[start:start + MAX_NODE_IDS]
        nodes = client.execute(_VARIANTS_QUERY, {"ids": batch}, expected_cost=2.0 * len(batch))["nodes"]
        for node in nodes:
            product = _from_variant_node(node) if node else None
            if product is not None and product.info.handle in wanted and \
                    product.info.variant_for_sku(wanted[product.info.handle]):
                found[product.info.handle] = product
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


def _by_handles(client: ShopifyClient, handles: list[str]) -> dict[str, ShopProduct]:
    """The products with these handles (one request: one aliased ``productByIdentifier`` per handle)."""
    if not handles:
        return {}
    params = ", ".join(f"$h{i}: String!" for i in range(len(handles)))
    fields = " ".join(f"p{i}: productByIdentifier(identifier: {{handle: $h{i}}}) {{ {_PRODUCT_FIELDS} }}"
                      for i in range(len(handles)))
    data = client.execute(f"query PoflowDiffProducts({params}) {{ {fields} }}",
                          {f"h{i}": handle for i, handle in enumerate(handles)}, expected_cost=13.0 * len(handles))
    products = (_from_product_node(data.get(f"p{i}")) for i in range(len(handles)))
    return {product.info.handle: product for product in products if product is not None}


def _from_product_node(node: dict | None) -> ShopProduct | None:
    if not node:
        return None
    return _product(node, (node.get("variants") or {}).get("nodes", []))


def _from_variant_node(node: dict) -> ShopProduct | None:
    """A variant node as its product holding just that variant (``None`` if it is not a variant)."""
    if not node.get("product"):
        return None
    return _product(node["product"], [node])


def _product(node: dict, variants: list[dict]) -> ShopProduct:
    common = {"product_gid": node["id"], "product_status": str(node["status"]), "title": str(node["title"]),
              "handle": str(node["handle"])}
    info = ProductInfo(product_gid=node["id"], handle=str(node["handle"]), title=str(node["title"]),
                       status=str(node["status"]), variants=tuple(
                           VariantInfo(sku=str(v.get("sku") or ""), price=money_from_wire(v["price"]),
                                       variant_gid=v["id"], **common) for v in variants))
    return ShopProduct(info, {v["id"]: v.get("barcode") or None for v in variants})


def _planned_product(spec: ProductSpec, product: ShopProduct | None) -> PlannedProduct:
    """``create`` (every field new), or ``update`` / ``unchanged`` against the shop's product. A barcode is
    compared only when the draft has one: the sync sends none otherwise, so the shop's stays."""
    variant = product.info.variant_for_sku(spec.sku) if product is not None else None
    if product is None or variant is None:
        return PlannedProduct("create", spec.sku, spec.handle, (
            FieldChange("title", None, spec.title), FieldChange("price", None, _money(spec.price)),
            FieldChange("status", None, spec.status),
            *([FieldChange("barcode", None, spec.barcode)] if spec.barcode else [])))
    changes = tuple(change for change in (
        FieldChange("title", product.info.title, spec.title),
        FieldChange("price", _money(variant.price), _money(spec.price)),
        FieldChange("status", product.info.status.upper(), spec.status),
        *([FieldChange("barcode", product.barcode_of(variant), spec.barcode)] if spec.barcode else []),
    ) if change.old != change.new)
    return PlannedProduct("update" if changes else "unchanged", spec.sku, spec.handle, changes)


def _sync_receipts(db: Database, merchant_id: str, upload_id: str, parsed: ParsedPO, matching: PoMatching,
                   drafts: list[DraftRecord]) -> list[tuple[int, str, Decimal]]:
    """What the sync of a receive-on-sync merchant would receive, line by line, as ``receive_on_sync`` does it:
    nothing new once the upload has receipts (only pending ones are finished); otherwise every ordered unit, into
    the variant this diff matched the line to (the matching is not recorded in a dry run, so a recorded one is not
    needed), the variant poflow made for the SKU, or the product the sync creates (:data:`NEW_PRODUCT`)."""
    pending = _pending_receipts(db, upload_id)
    if pending is not None:
        return pending
    plan = plan_receipt(db, upload_id, None, skip_unsynced=True)
    rows = {r.line_no: (r.variant_gid, r.quantity) for r in plan.receipts}
    lines = {line.line_no: line for line in parsed.lines}
    undecided = {m.line_no for m in matching.ambiguous}
    drafted = {d.sku for d in drafts}
    for line_no in plan.unsynced:
        line = lines.get(line_no)
        units = (line.quantity if line is not None else None) or Decimal(0)
        if line_no in undecided:
            rows[line_no] = (AWAITING_PICK, units)
        elif line is not None and line.sku in drafted:
            rows[line_no] = (f"{NEW_PRODUCT} {handle_for_sku(merchant_id, line.sku)}", units)
        else:
            rows[line_no] = (NOT_RECEIVED, Decimal(0))
    for line_no, gid in matching.matched.items():
        if line_no in rows:
            rows[line_no] = (gid, rows[line_no][1])
    return [(line_no, target, units) for line_no, (target, units) in sorted(rows.items())]


def _pending_receipts(db: Database, upload_id: str) -> list[tuple[int, str, Decimal]] | None:
    """``None`` when the upload has no receipts yet; else the pending ones the sync would finish (once means
    once: a PO received before, by hand or by an earlier sync, is not received again)."""
    with db.session() as session:
        rows = session.execute(select(StockReceipt.line_no, StockReceipt.variant_gid, StockReceipt.quantity,
                                      StockReceipt.status).where(StockReceipt.upload_id == upload_id)
                               .order_by(StockReceipt.line_no, StockReceipt.receipt_no)).all()
    if not rows:
        return None
    return [(line_no, gid, quantity) for line_no, gid, quantity, status in rows if status == "pending"]


def _money(value: Decimal | None) -> str | None:
    return None if value is None else money_to_wire(value)
