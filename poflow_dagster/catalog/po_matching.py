"""One PO against the merchant's Shopify catalog: sync the catalog, match the lines, update matched variants' cost.

Called by the ``shopify_sync`` stage before anything is written to Shopify:

1. ``sync_shop_catalog`` brings the app database's copy of the shop's catalog up to date (incremental after the first,
   full pass: only variants updated since the last sync are read), unless a pass finished within
   ``POFLOW_CATALOG_MAX_AGE_SECONDS`` (``catalog_is_fresh``: one pass per shop per half minute in a burst).
2. The PO's lines are matched (``match_lines``: SKU -> barcode -> learned supplier SKU -> fuzzy title within the
   supplier's vendor) and recorded in ``line_matches`` (a reviewer's approved matches are kept).
   Products poflow itself created (recognised by their handle) are not "the existing catalog": a line whose SKU
   poflow already turned into a product keeps going through ``productSet`` by handle (idempotent), never a cost
   update.
3. ``matched`` (and ``approved``) lines are existing variants: their cost per item is set to the PO's unit cost
   and, for a merchant who opts in (``update_price``), their price to the price poflow would give a new draft
   (``retail_price``: unit cost with the merchant's markup), in one ``productVariantsBulkUpdate`` per product, only
   where a value differs; no new product is made for them. ``ambiguous`` lines hold
   the PO for review (``AMBIGUOUS_MATCH``) until a person picks (``poflow approve --match LINE=VARIANT``) or approves
   as is (then they become new products). ``unmatched`` lines become DRAFT products as before.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from poflow_dagster.catalog.config import MatchConfig
from poflow_dagster.catalog.match import match_lines
from poflow_dagster.catalog.models import CatalogVariant, LineMatch
from poflow_dagster.catalog.shop_catalog import catalog_is_fresh, sync_shop_catalog
from poflow_dagster.catalog.store import (
    catalog_candidates, line_matches_for_upload, load_match_inputs, record_line_matches, upsert_catalog_variants,
)
from poflow_dagster.domain.drafts import retail_price
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.shopify.client import (
    MAX_NODE_IDS, ShopifyClient, VariantUpdate, money_from_wire, money_to_wire,
)
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Merchant

#: The review reason code of a line that could be several existing variants.
AMBIGUOUS_MATCH = "AMBIGUOUS_MATCH"


@dataclass(frozen=True)
class PoMatching:
    """The outcome for one PO: every line's match, which lines are existing variants, which wait for a person."""

    matches: list[LineMatch]
    matched: dict[int, str] = field(default_factory=dict)  # line_no -> variant gid (matched or approved)
    ambiguous: list[LineMatch] = field(default_factory=list)
    catalog_variants_read: int = 0

    def matched_skus(self, lines: Iterable[PricedLine]) -> set[str]:
        """SKUs of the PO's lines that are existing variants (no new product for them)."""
        return {line.sku for line in lines if line.line_no in self.matched and line.sku}

    def review_reasons(self, parsed: ParsedPO) -> list[str]:
        """One ``AMBIGUOUS_MATCH`` line per undecided line, naming its candidates."""
        by_no = {line.line_no: line for line in parsed.lines}
        reasons = []
        for match in self.ambiguous:
            line = by_no.get(match.line_no)
            what = f"SKU {line.sku}" if line is not None and line.sku else "no SKU"
            options = ", ".join(f"{c.variant_gid} ({c.sku or 'no SKU'}, {c.title!r}, {c.method} {c.score:g})"
                                for c in match.candidates)
            reasons.append(f"{AMBIGUOUS_MATCH}: line {match.line_no} ({what}) could be {options}; "
                           f"pick one with `poflow approve UPLOAD --match {match.line_no}=VARIANT_GID`")
        return reasons


def match_po(
    db: Database, client: ShopifyClient, merchant_id: str, shop_url: str, upload_id: str, parsed: ParsedPO,
    *, config: MatchConfig | None = None, record: bool = True,
) -> PoMatching:
    """Steps 1 and 2 of the module docstring; returns what to do with each line. ``record=False`` (a dry run)
    matches without recording: recorded decisions (a reviewer's picks) still count, new results are not kept."""
    read = 0 if catalog_is_fresh(db, merchant_id, shop_url) else \
        sync_shop_catalog(db, client, merchant_id, shop_url).variants
    barcodes = {line.line_no: line.barcode for line in parsed.lines if line.barcode}
    inputs = load_match_inputs(db, merchant_id, shop_url, parsed.supplier_name, parsed.lines, barcodes)
    found = match_lines(parsed.lines, inputs.catalog, inputs.supplier_map, supplier=parsed.supplier_name,
                        config=config or MatchConfig.from_env(), barcodes=barcodes)
    if found and record:
        record_line_matches(db, upload_id, found)
    final = [stored.match for stored in line_matches_for_upload(db, upload_id)]
    if not record:  # the reviewer's approvals win, as record_line_matches would keep them
        approved = {m.line_no: m for m in final if m.status == "approved"}
        final = [approved.get(m.line_no, m) for m in found]
    return PoMatching(
        matches=final,
        matched={m.line_no: m.variant_gid for m in final if m.status in ("matched", "approved") and m.variant_gid},
        ambiguous=[m for m in final if m.status == "ambiguous"],
        catalog_variants_read=read,
    )


def update_matched_costs(
    db: Database, client: ShopifyClient, merchant_id: str, shop_url: str, parsed: ParsedPO, matching: PoMatching,
) -> int:
    """Step 3: set each matched variant's cost per item to the PO's unit cost, and its price too when the merchant
    opts in (``update_price``), where they differ (one ``productVariantsBulkUpdate`` per product, cost and price
    together). Returns the variants changed; a re-run changes none. Price is never touched otherwise."""
    wanted = wanted_costs(parsed.lines, matching)
    if not wanted:
        return 0
    prices = wanted_prices(wanted, _price_markup(db, merchant_id))
    current = {v.variant_gid: v for v in catalog_candidates(db, merchant_id, shop_url, variant_gids=wanted)}
    by_product: dict[str, list[VariantUpdate]] = defaultdict(list)
    for variant_gid, cost in wanted.items():
        variant = current.get(variant_gid)
        update = _variant_update(variant, cost, prices.get(variant_gid)) if variant is not None else None
        if update is not None:
            by_product[variant.product_gid].append(update)
    changed: list[CatalogVariant] = []
    for product_gid, updates in sorted(by_product.items()):
        changed.extend(client.update_variants(product_gid, updates))
    if changed:  # the local copy follows at once (the next incremental sync would read them again anyway)
        upsert_catalog_variants(db, merchant_id, shop_url, changed)
    return sum(len(updates) for updates in by_product.values())


def _variant_update(variant: CatalogVariant, cost: Decimal, price: Decimal | None) -> VariantUpdate | None:
    """What to change on one matched variant: its cost and (``price`` given) its price where they differ;
    ``None`` when it already has both."""
    new_cost = cost if variant.unit_cost != cost else None
    new_price = price if price is not None and price != variant.price else None
    if new_cost is None and new_price is None:
        return None
    return VariantUpdate(variant_gid=variant.variant_gid, price=new_price, unit_cost=new_cost)


def _price_markup(db: Database, merchant_id: str) -> Decimal | None:
    """The merchant's markup if matched variants get the PO's price (``update_price``), else ``None``."""
    with db.session() as session:
        merchant = session.get(Merchant, merchant_id)
        return merchant.markup_percent if merchant is not None and merchant.update_price else None


def recorded_matching(db: Database, upload_id: str) -> PoMatching:
    """The matching recorded for an upload (for the read-back check: no Shopify call, no new matching)."""
    final = [stored.match for stored in line_matches_for_upload(db, upload_id)]
    return PoMatching(
        matches=final,
        matched={m.line_no: m.variant_gid for m in final if m.status in ("matched", "approved") and m.variant_gid},
        ambiguous=[m for m in final if m.status == "ambiguous"],
    )


_COSTS_QUERY = """
query PoflowMatchedCosts($ids: [ID!]!) {
  nodes(ids: $ids) { ... on ProductVariant { id price inventoryItem { unitCost { amount } } } }
}
"""


def verify_matched_costs(
    client: ShopifyClient, lines: Iterable[PricedLine], matching: PoMatching, *, price_markup: Decimal | None = None,
) -> tuple[list[str], int]:
    """Read the matched variants back (by id, up to 250 a request): mismatch lines where Shopify's cost per item
    is not the PO's unit cost, where (``price_markup`` given: the merchant opts in to price updates) its price is
    not the PO's price, or where the variant is gone; and the number of requests made."""
    wanted = wanted_costs(lines, matching)
    prices = wanted_prices(wanted, price_markup)
    gids = sorted(wanted)
    problems: list[str] = []
    requests = 0
    for start in range(0, len(gids), MAX_NODE_IDS):
        batch = gids[start:start + MAX_NODE_IDS]
        nodes = client.execute(_COSTS_QUERY, {"ids": batch})["nodes"]
        requests += 1
        for gid, node in zip(batch, nodes, strict=True):
            if node is None:
                problems.append(f"matched variant {gid}: gone from Shopify")
                continue
            cost = (node.get("inventoryItem") or {}).get("unitCost")
            problems.extend(_differs(gid, "cost", wanted[gid], money_from_wire(cost["amount"]) if cost else None))
            if gid in prices:
                problems.extend(_differs(gid, "price", prices[gid], money_from_wire(node["price"])))
    return problems, requests


def _differs(gid: str, what: str, expected: Decimal, have: Decimal | None) -> list[str]:
    if have == expected:
        return []
    shown = f"no {what}" if have is None else money_to_wire(have)
    return [f"matched variant {gid}: {what} differs (expected {money_to_wire(expected)}, Shopify has {shown})"]


class PricedLine(Protocol):
    """A PO line as matching's cost step reads it (a ``POLine`` or a saved ``LineItem``)."""

    line_no: int
    sku: str | None
    unit_cost: Decimal | None


def wanted_costs(lines: Iterable[PricedLine], matching: PoMatching) -> dict[str, Decimal]:
    """Variant gid -> the unit cost the PO gives it (the first line of a variant that has a cost)."""
    wanted: dict[str, Decimal] = {}
    for line in lines:
        variant_gid = matching.matched.get(line.line_no)
        if variant_gid and line.unit_cost is not None:
            wanted.setdefault(variant_gid, line.unit_cost)
    return wanted


def wanted_prices(costs: dict[str, Decimal], markup_percent: Decimal | None) -> dict[str, Decimal]:
    """Variant gid -> the price a new draft of that line would get (``retail_price`` of its unit cost with the
    merchant's markup); empty when ``markup_percent`` is ``None`` (the merchant does not opt in)."""
    if markup_percent is None:
        return {}
    return {gid: retail_price(cost, markup_percent) for gid, cost in costs.items()}
