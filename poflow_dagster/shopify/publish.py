"""Drafts -> Shopify products, and the read-back that proves Shopify holds what the drafts say."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import select

from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, SyncedProduct, handle_for_sku
from poflow_dagster.shopify.sync import DEFAULT_BULK_THRESHOLD, ProductsNotSynced, upsert_products, verify_products
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import DraftRecord, current_drafts, record_shopify_links
from poflow_dagster.store.schema import ShopifyProduct

PRODUCT_STATUS = "DRAFT"  # products arrive as drafts; the merchant publishes them in Shopify

logger = logging.getLogger(__name__)


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
    """One DRAFT product per draft; a draft's barcode (GTIN) becomes its variant's ``barcode``."""
    return [
        ProductSpec(
            sku=draft.sku,
            title=draft.title,
            price=draft.price,
            handle=handle_for_sku(merchant_id, draft.sku),
            status=PRODUCT_STATUS,
            description=draft.description,
            vendor=vendor,
            barcode=draft.barcode,
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


def bulk_threshold() -> int:
    """``POFLOW_SHOPIFY_BULK_THRESHOLD``: POs with more products than this sync through a bulk mutation
    (default 250; a value that is not a whole number >= 0 falls back to the default with a warning)."""
    raw = (os.environ.get("POFLOW_SHOPIFY_BULK_THRESHOLD") or "").strip()
    if not raw:
        return DEFAULT_BULK_THRESHOLD
    if not raw.isdigit():
        logger.warning("POFLOW_SHOPIFY_BULK_THRESHOLD=%r is not a whole number of products; using %d",
                       raw, DEFAULT_BULK_THRESHOLD)
        return DEFAULT_BULK_THRESHOLD
    return int(raw)


def publish_drafts(
    db: Database, client: ShopifyClient, shop_url: str, merchant_id: str, drafts: list[DraftRecord],
    *, on_progress: Callable[[int, int], None] | None = None, threshold: int | None = None,
    poll_interval_s: float = 1.0,
) -> list[SyncedProduct]:
    """Upsert every draft as a Shopify product (idempotent by handle) and remember the GIDs.

    More than ``threshold`` products (default :func:`bulk_threshold`) go through one bulk mutation, polled
    every ``poll_interval_s``; fewer, one ``productSet`` each. ``on_progress(done, total)`` follows the
    products upserted (direct) or the bulk operation's processed lines. A product counts as created unless
    this shop already had it recorded for the draft under the same GID. Products some of which Shopify
    refused (in bulk, then once more directly) raise :class:`ProductsNotSynced` naming the SKUs, after the
    others' links are recorded.

    Drafts are shared by every PO of the merchant with the same SKU, and two such POs may sync at once:
    each pushes the drafts as the database holds them *now*, then pushes again any draft another PO changed
    meanwhile, so whichever finishes last leaves Shopify holding the latest draft (never a stale one).
    """
    known = {handle: link.product_gid for handle, link in recorded_links(db, shop_url, drafts).items()}
    push = _Pusher(db, client, shop_url, merchant_id, known,
                   bulk_threshold() if threshold is None else threshold, poll_interval_s)
    pushed = current_drafts(db, drafts)
    synced = push(pushed, on_progress)
    for _ in range(CATCH_UP_ROUNDS):
        latest = current_drafts(db, drafts)
        changed = [i for i, (now, then) in enumerate(zip(latest, pushed)) if _content(now) != _content(then)]
        if not changed:
            break
        again = push([latest[i] for i in changed], None)
        for i, product in zip(changed, again, strict=True):
            synced[i] = replace(product, created=synced[i].created)
        pushed = latest
    return synced


#: How often a sync catches up with drafts another PO changed while it was pushing.
CATCH_UP_ROUNDS = 3


def _content(draft: DraftRecord) -> tuple[object, ...]:
    return (draft.title, draft.description, draft.price, draft.barcode)


@dataclass(frozen=True)
class _Pusher:
    """One push of drafts to the shop (direct or bulk by their number), its links recorded."""

    db: Database
    client: ShopifyClient
    shop_url: str
    merchant_id: str
    known: dict[str, str]
    threshold: int
    poll_interval_s: float

    def __call__(
        self, drafts: list[DraftRecord], on_progress: Callable[[int, int], None] | None
    ) -> list[SyncedProduct]:
        try:
            synced = upsert_products(self.client, product_specs(self.merchant_id, drafts), known_products=self.known,
                                     on_progress=on_progress, bulk_threshold=self.threshold,
                                     poll_interval_s=self.poll_interval_s)
        except ProductsNotSynced as partial:
            self._record(drafts, partial.synced)  # what did sync is linked, so a re-run counts it as known
            raise
        self._record(drafts, synced)
        return synced

    def _record(self, drafts: list[DraftRecord], synced: list[SyncedProduct] | list[SyncedProduct | None]) -> None:
        record_shopify_links(
            self.db,
            self.shop_url,
            [
                (draft.id, product.handle, product.product_gid, product.variant_gid, draft.price)
                for draft, product in zip(drafts, synced, strict=True)
                if product is not None
            ],
        )


def verify_published(
    db: Database,
    client: ShopifyClient,
    shop_url: str,
    merchant_id: str,
    drafts: list[DraftRecord],
    *,
    settle_seconds: tuple[float, ...] = (1.0, 2.0),
) -> Verification:
    """Read the drafts back from Shopify by their recorded variant GIDs (250 per request).

    Drafts with no recorded GID in this shop are looked up by handle instead. A mismatch can be another PO
    with the same SKU in the middle of its sync (it changed the shared draft and has not pushed it yet), so
    before mismatches are reported the drafts are read again and checked again after each of
    ``settle_seconds``.
    """
    before = client.stats.requests
    drafts = current_drafts(db, drafts)
    problems = _read_back(db, client, shop_url, merchant_id, drafts)
    for wait in settle_seconds:
        if not problems:
            break
        time.sleep(wait)
        drafts = current_drafts(db, drafts)
        problems = _read_back(db, client, shop_url, merchant_id, drafts)
    return Verification(problems=problems, checked=len(drafts), requests=client.stats.requests - before)


def _read_back(
    db: Database, client: ShopifyClient, shop_url: str, merchant_id: str, drafts: list[DraftRecord]
) -> list[str]:
    gids = {handle: link.variant_gid for handle, link in recorded_links(db, shop_url, drafts).items()}
    return verify_products(client, product_specs(merchant_id, drafts), gids)
