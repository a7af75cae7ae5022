"""The catalog sync against a real shop: ``sync_catalog`` fed by a ``ShopifyClient``, poflow's own products left out.

Used by a PO run (``po_matching.match_po``), ``poflow catalog sync`` and the scheduled ``catalog_sync_job``, so all
three keep the same copy of the shop's catalog.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import or_, select

from poflow_dagster.catalog.config import seconds_from_env
from poflow_dagster.catalog.models import CatalogVariant
from poflow_dagster.catalog.sync import SyncResult, sync_catalog, sync_state
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.client import MAX_NODE_IDS, ShopifyClient, handle_for_sku
from poflow_dagster.shopify.connection import ShopTarget
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Merchant
from poflow_dagster.store.types import utcnow


def sync_shop_catalog(db: Database, client: ShopifyClient, merchant_id: str, shop_url: str, *, full: bool = False,
                      max_pages: int | None = None) -> SyncResult:
    """One (resumable) catalog sync of the merchant's shop: variants updated since the last pass, then the products
    whose own fields changed (``full``: every variant, pruning the deleted)."""
    return sync_catalog(db, merchant_id, shop_url, _sized(client.catalog_page),
                        fetch_products=_sized(client.catalog_products_page), full=full, max_pages=max_pages,
                        keep=not_poflow_product(shop_merchants(db, shop_url)))


#: Variants (or products) asked for by the first page of an incremental pass. Shopify takes a query's *requested*
#: cost from the bucket before it runs (``first`` x the per-node cost) and refunds the unused part afterwards, so a
#: 250-node page needs ~750 points available although an incremental pass usually finds a handful of changes: with
#: several PO runs per shop at standard limits (100 points/s) each run waited seconds for the bucket. The first page
#: is small; a full one means more changed, and the pass goes on with full pages.
INCREMENTAL_FIRST_PAGE = 10


def page_size(updated_after, after) -> int:
    """How many nodes to ask for: few on the first page of an incremental pass, else as many as a page may hold."""
    return INCREMENTAL_FIRST_PAGE if updated_after is not None and after is None else MAX_NODE_IDS


def _sized(fetch):
    """``fetch(updated_after, after)`` asking for :func:`page_size` nodes."""
    def sized(updated_after, after):
        return fetch(updated_after, after, first=page_size(updated_after, after))

    return sized


#: A PO run skips its catalog pass when a pass of this shop finished less than this many seconds ago
#: (``POFLOW_CATALOG_MAX_AGE_SECONDS``; 0: every run syncs). Every pass re-reads what changed in the last
#: ``sync.OVERLAP`` (poflow's own new products included), so during a burst of POs one pass per shop every
#: half minute, not one per run, keeps the Shopify bucket for the products themselves. ``catalog_sync_job`` and
#: ``poflow catalog sync`` always sync.
DEFAULT_MAX_AGE_SECONDS = 30.0


def catalog_is_fresh(db: Database, merchant_id: str, shop_url: str) -> bool:
    """Whether the shop's last pass finished within ``POFLOW_CATALOG_MAX_AGE_SECONDS`` and none is under way."""
    max_age = seconds_from_env("POFLOW_CATALOG_MAX_AGE_SECONDS", DEFAULT_MAX_AGE_SECONDS)
    state = sync_state(db, merchant_id, shop_url)
    if max_age <= 0 or state is None or state.last_updated_at is None or state.pass_started_at is not None:
        return False
    return utcnow() - state.updated_at < dt.timedelta(seconds=max_age)


def not_poflow_product(merchant_ids: list[str]) -> Callable[[CatalogVariant], bool]:
    """Whether a variant is the merchant's own, not one of the products poflow made itself: their handle is
    ``handle_for_sku`` of one of the merchants using this shop and the variant's SKU. They are never "the existing
    catalog" (a line whose SKU poflow already turned into a product keeps being upserted by handle), even while a
    concurrent run is still recording its links, and even where several merchants share one shop (the bundled
    emulator). The sync still moves its cursor past them."""
    def keep(variant: CatalogVariant) -> bool:
        return not variant.sku or variant.product_handle not in {
            handle_for_sku(merchant_id, variant.sku) for merchant_id in merchant_ids}

    return keep


def shop_merchants(db: Database, shop_url: str) -> list[str]:
    """Merchants whose products may be in this shop: those configured for it, and those on the default shop."""
    with db.session() as session:
        return list(session.scalars(select(Merchant.id).where(
            or_(Merchant.shop_url == shop_url, Merchant.shop_url.is_(None)))))


def merchants_to_sync(db: Database, merchant_id: str | None = None) -> list[Merchant]:
    """The merchant asked for (``unknown_merchant`` / ``sync_off`` when it cannot be synced), or every merchant with
    Shopify sync on (``merchant_id`` ``None``), in id order."""
    with db.session() as session:
        if merchant_id is None:
            return list(session.scalars(select(Merchant).where(Merchant.shopify_sync_enabled.is_(True))
                                        .order_by(Merchant.id)))
        merchant = session.get(Merchant, merchant_id)
    if merchant is None:
        raise PoflowError("unknown_merchant", f"no merchant {merchant_id!r}")
    if not merchant.shopify_sync_enabled:
        raise PoflowError("sync_off", f"Shopify sync is off for merchant {merchant_id}: no catalog to sync")
    return [merchant]


class ShopClients(Protocol):
    """Where each merchant's shop is and a client for it (``resources.ShopifyResource`` fits)."""

    def target_for(self, merchant: Merchant) -> ShopTarget: ...

    def client_for(self, target: ShopTarget) -> ShopifyClient: ...


@dataclass(frozen=True)
class MerchantSync:
    """One merchant's catalog sync: its result, or the one-line failure that stopped it."""

    merchant_id: str
    shop_url: str
    result: SyncResult | None = None
    error: PoflowError | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"merchant": self.merchant_id, "shop_url": self.shop_url}
        if self.result is not None:
            data.update(self.result.to_json())
        if self.error is not None:
            data["error"] = {"code": self.error.code, "message": self.error.message}
        return data


def sync_merchants(db: Database, shops: ShopClients, merchants: list[Merchant], *, full: bool = False
                   ) -> list[MerchantSync]:
    """Sync each merchant's shop in turn; a merchant whose shop fails (``PoflowError``: unreachable, bad token,
    throttled...) is reported and the others still run (its pass resumes next time)."""
    done: list[MerchantSync] = []
    for merchant in merchants:
        shop_url = merchant.shop_url or ""
        try:
            target = shops.target_for(merchant)
            shop_url = target.url
            with shops.client_for(target) as client:
                result = sync_shop_catalog(db, client, merchant.id, target.url, full=full)
        except PoflowError as error:  # a bad token, an unreachable or throttled shop: one line, the others go on
            done.append(MerchantSync(merchant.id, shop_url, error=error))
            continue
        done.append(MerchantSync(merchant.id, shop_url, result=result))
    return done
