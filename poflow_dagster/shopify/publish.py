"""Drafts -> Shopify products, and the read-back that proves Shopify holds what the drafts say."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, SyncedProduct, handle_for_sku
from poflow_dagster.shopify.sync import sync_products, verify_products
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import DraftRecord, record_shopify_links
from poflow_dagster.store.schema import ShopifyProduct

PRODUCT_STATUS = "DRAFT"  # products arrive as drafts; the merchant publishes them in Shopify


@dataclass(frozen=True)
class ShopifyLink:
    """Where a draft was last synced to in one shop (a row of ``shopify_products``)."""

    handle: str
    product_gid: str
    variant_gid: str


@dataclass(frozen=True)
class Verification:
    """The outcome of one read-back: mismatch lines (empty = all good) and what it took."""

    problems: list[str]
    checked: int
    requests: int


def product_specs(merchant_id: str, drafts: list[DraftRecord], vendor: str | None = None) -> list[ProductSpec]:
    return [
        ProductSpec(
            sku=draft.sku,
            title=draft.title,
            price=draft.price,
            handle=handle_for_sku(merchant_id, draft.sku),
            status=PRODUCT_STATUS,
            description=draft.description,
            vendor=vendor,
        )
        for draft in drafts
    ]


def recorded_links(db: Database, shop_url: str, drafts: list[DraftRecord]) -> dict[str, ShopifyLink]:
    """The links recorded for these drafts in ``shop_url``, by handle (links to other shops are ignored)."""
    if not drafts:
        return {}
    with db.session() as session:
        rows = session.scalars(
            select(ShopifyProduct).where(
                ShopifyProduct.draft_id.in_([draft.id for draft in drafts]), ShopifyProduct.shop_url == shop_url
            )
        )
        return {row.handle: ShopifyLink(row.handle, row.product_gid, row.variant_gid) for row in rows}


def publish_drafts(
    db: Database, client: ShopifyClient, shop_url: str, merchant_id: str, drafts: list[DraftRecord]
) -> list[SyncedProduct]:
    """Upsert every draft as a Shopify product (idempotent by handle) and remember the GIDs.

    A product counts as created unless this shop already had it recorded for the draft under the same GID.
    """
    specs = product_specs(merchant_id, drafts)
    known = {handle: link.product_gid for handle, link in recorded_links(db, shop_url, drafts).items()}
    synced = sync_products(client, specs, known_products=known)
    record_shopify_links(
        db,
        shop_url,
        [
            (draft.id, product.handle, product.product_gid, product.variant_gid, draft.price)
            for draft, product in zip(drafts, synced, strict=True)
        ],
    )
    return synced


def verify_published(
    db: Database, client: ShopifyClient, shop_url: str, merchant_id: str, drafts: list[DraftRecord]
) -> Verification:
    """Read the drafts back from Shopify by their recorded variant GIDs (250 per request).

    Drafts with no recorded GID in this shop are looked up by handle instead.
    """
    specs = product_specs(merchant_id, drafts)
    gids = {handle: link.variant_gid for handle, link in recorded_links(db, shop_url, drafts).items()}
    before = client.stats.requests
    problems = verify_products(client, specs, gids)
    return Verification(problems=problems, checked=len(specs), requests=client.stats.requests - before)
