"""Drafts -> Shopify products, and the read-back that proves Shopify holds what the drafts say."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import select

from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, SyncedProduct, handle_for_sku
from poflow_dagster.shopify.sync import sync_products, verify_products
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import DraftRecord, current_drafts, record_shopify_links
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
    db: Database, client: ShopifyClient, shop_url: str, merchant_id: str, drafts: list[DraftRecord],
    *, on_progress: Callable[[int, int], None] | None = None,
) -> list[SyncedProduct]:
    """Upsert every draft as a Shopify product (idempotent by handle) and remember the GIDs.
    ``on_progress(products done, products)`` is called (from the sync's threads) as each product is upserted.

    A product counts as created unless this shop already had it recorded for the draft under the same GID.
    Drafts are shared by every PO of the merchant with the same SKU, and two such POs may sync at once:
    each pushes the drafts as the database holds them *now*, then pushes again any draft another PO changed
    meanwhile, so whichever finishes last leaves Shopify holding the latest draft (never a stale one).
    """
    known = {handle: link.product_gid for handle, link in recorded_links(db, shop_url, drafts).items()}
    pushed = current_drafts(db, drafts)
    counting = _CountingClient(client, len({handle_for_sku(merchant_id, d.sku) for d in pushed}), on_progress)
    synced = _push(db, counting if on_progress is not None else client, shop_url, merchant_id, pushed, known)
    for _ in range(CATCH_UP_ROUNDS):
        latest = current_drafts(db, drafts)
        changed = [i for i, (now, then) in enumerate(zip(latest, pushed)) if _content(now) != _content(then)]
        if not changed:
            break
        again = _push(db, client, shop_url, merchant_id, [latest[i] for i in changed], known)
        for i, product in zip(changed, again, strict=True):
            synced[i] = replace(product, created=synced[i].created)
        pushed = latest
    return synced


class _CountingClient:
    """The client, counting upserts as they finish for ``on_progress`` (every other call passes through)."""

    def __init__(self, client: ShopifyClient, total: int, on_progress: Callable[[int, int], None] | None) -> None:
        self._client, self._total, self._on_progress = client, total, on_progress
        self._done = 0
        self._lock = threading.Lock()

    def product_set(self, *args, **kwargs) -> SyncedProduct:
        product = self._client.product_set(*args, **kwargs)
        with self._lock:
            self._done += 1
            done = min(self._done, self._total)
        if self._on_progress is not None:
            self._on_progress(done, self._total)
        return product

    def __getattr__(self, name: str):
        return getattr(self._client, name)


#: How often a sync catches up with drafts another PO changed while it was pushing.
CATCH_UP_ROUNDS = 3


def _content(draft: DraftRecord) -> tuple[object, ...]:
    return (draft.title, draft.description, draft.price)


def _push(
    db: Database, client: ShopifyClient, shop_url: str, merchant_id: str, drafts: list[DraftRecord],
    known: dict[str, str],
) -> list[SyncedProduct]:
    synced = sync_products(client, product_specs(merchant_id, drafts), known_products=known)
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
