"""``GET /api/uploads/{id}/diff`` without FastAPI: the dry run of the upload's Shopify sync."""

from __future__ import annotations

from poflow_dagster.api.review import own_upload
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.store.db import Database


def upload_diff(db: Database, shops, merchant_id: str, upload_id: str) -> dict:
    """``GET /api/uploads/{id}/diff``: ``poflow shopify diff ID --format json`` of the merchant's upload
    (``sync_off`` when the merchant does not sync to Shopify). Nothing is written to Shopify."""
    from poflow_dagster.shopify_diff import shopify_diff
    from poflow_dagster.store.uploads import merchant_for_upload

    own_upload(db, merchant_id, upload_id)
    merchant = merchant_for_upload(db, upload_id)
    if not merchant.shopify_sync_enabled:
        raise PoflowError("sync_off", f"Shopify sync is off for merchant {merchant.id}: nothing would change")
    target = shops.target_for(merchant)
    with shops.client_for(target) as client:
        return shopify_diff(db, client, merchant, target.url, upload_id).to_json()
