"""Drafts -> Shopify products, and the read-back that proves Shopify holds what the drafts say."""

from __future__ import annotations

from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, SyncedProduct, handle_for_sku
from poflow_dagster.shopify.sync import sync_products, verify_products
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import DraftRecord, record_shopify_links

PRODUCT_STATUS = "DRAFT"  # products arrive as drafts; the merchant publishes them in Shopify


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


def publish_drafts(
    db: Database, client: ShopifyClient, shop_url: str, merchant_id: str, drafts: list[DraftRecord]
) -> list[SyncedProduct]:
    """Upsert every draft as a Shopify product (idempotent by handle) and remember the GIDs."""
    specs = product_specs(merchant_id, drafts)
    synced = sync_products(client, specs)
    record_shopify_links(
        db,
        shop_url,
        [
            (draft.id, product.handle, product.product_gid, product.variant_gid, draft.price)
            for draft, product in zip(drafts, synced, strict=True)
        ],
    )
    return synced


def verify_published(client: ShopifyClient, merchant_id: str, drafts: list[DraftRecord]) -> list[str]:
    """Mismatches between the drafts and what Shopify returns for their SKUs (empty = all good)."""
    return verify_products(client, product_specs(merchant_id, drafts))
