"""Incremental sync of a merchant's Shopify catalog into ``catalog_variants``.

A *pass* asks ``fetch_page(updated_after, after_cursor)`` for the variants updated after the last pass's
cursor (minus ``OVERLAP``, for Shopify's search index lagging behind writes), page by page until the next
cursor is ``None``. Shopify keeps a product's own fields (title, vendor, status) on the product: editing them
moves the product's ``updatedAt``, not its variants'. So an incremental pass, given ``fetch_products``, goes on
with the products updated after the same moment and carries their fields to the rows of their variants (a
full pass reads every variant with its product anyway). Each page and the sync state are written in one
transaction, so a pass that stops half way (a crash, a deploy, ``max_pages``) is continued by the next
``sync_catalog`` from its page cursor (``products:<cursor>`` once in the products step); only a complete pass
moves the ``updated_at`` cursor, and never past the moment the pass began (an edit made during a long pass
to a variant already read is read again next time).

Concurrency (a PO run's sync and the scheduled one at once): there is one pass per shop. Each page is stored
only if the state still stands where this call read it from (an ``UPDATE … WHERE`` on the pass's start and
cursor: a row lock on PostgreSQL, the write lock on SQLite); a call that lost that race drops its page and goes
on from where the other one got to, and stops once the pass is finished. A full pass asked for while an
incremental one runs replaces it: the incremental call's next page is refused, never stored under the full
pass's cursor (which would make the full pass prune variants it skipped).

Variants' ``poflow.supplier_skus`` metafields are stored with them and teach ``supplier_sku_map`` the
entries it lacks (``seed_supplier_skus``).

Deleted and archived products: an archived product is updated, so it comes back with
``product_status = ARCHIVED`` and stays in the catalog (matching can still find it; whether to reuse it is
the caller's choice). A deleted product (or a variant removed from a product) never appears in an
"updated after" query: a *full* pass (``full=True``; the first pass always is one) removes every variant of
the shop it did not see. Run one periodically (nightly: ``catalog_sync_schedule``) until a
``products/delete`` webhook exists.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from poflow_dagster.catalog.models import CatalogProduct, CatalogVariant
from poflow_dagster.catalog.store import (
    delete_variants_not_synced_since, seed_supplier_skus, write_catalog_products, write_catalog_variants,
)
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import CatalogSyncState
from poflow_dagster.store.types import utcnow

__all__ = ["OVERLAP", "CatalogVariant", "FetchPage", "FetchProducts", "SyncResult", "sync_catalog"]

#: How far before the last pass's cursor the next pass starts: products written just before a pass may
#: reach Shopify's search index after it. Re-reading them is harmless (upserts are idempotent).
OVERLAP = dt.timedelta(minutes=5)

#: ``pass_cursor`` of the products step (followed by the products page's cursor; nothing on its first page).
PRODUCTS_STEP = "products:"

_STATE = CatalogSyncState.__table__


class FetchPage(Protocol):
    """One page of the catalog: variants updated after ``updated_after`` (all when ``None``),
    from ``after_cursor`` on (the first page when ``None``); returns the variants and the next page's cursor
    (``None`` after the last page). ``ShopifyClient.catalog_page`` fits."""

    def __call__(self, updated_after: dt.datetime | None, after_cursor: str | None
                 ) -> tuple[Sequence[CatalogVariant], str | None]: ...


class FetchProducts(Protocol):
    """One page of the products updated after ``updated_after``, with their own fields (title, vendor,
    status); ``ShopifyClient.catalog_products_page`` fits."""

    def __call__(self, updated_after: dt.datetime | None, after_cursor: str | None
                 ) -> tuple[Sequence[CatalogProduct], str | None]: ...


@dataclass(frozen=True)
class SyncResult:
    pages: int
    variants: int
    deleted: int
    full: bool
    resumed: bool  # this call continued a pass an earlier (or a concurrent) call had begun
    complete: bool  # the pass reached its last page (False: stopped at ``max_pages``; the next call continues)
    cursor: dt.datetime | None  # ``last_updated_at`` after this call
    products: int = 0  # products whose own fields were read (the incremental pass's products step)

    def to_json(self) -> dict[str, object]:
        return {"pages": self.pages, "variants": self.variants, "products": self.products,
                "deleted": self.deleted, "full": self.full, "resumed": self.resumed, "complete": self.complete,
                "cursor": self.cursor.isoformat() if self.cursor else None}


@dataclass(frozen=True)
class _Pass:
    """What identifies the pass a call works on: its start, and what it asks Shopify for."""

    started_at: dt.datetime
    full: bool
    updated_after: dt.datetime | None


def sync_catalog(db: Database, merchant_id: str, shop_url: str, fetch_page: FetchPage, *,
                 fetch_products: FetchProducts | None = None, full: bool = False,
                 max_pages: int | None = None, keep: Callable[[CatalogVariant], bool] | None = None) -> SyncResult:
    """Bring the shop's variants up to date: continue an unfinished pass, else start one (full when asked or
    when the shop was never synced). Stops after ``max_pages`` pages if given (the next call continues).
    ``keep`` chooses the variants stored (poflow's own products are not "the catalog"); the cursor moves past
    every variant read, kept or not, so the next pass does not read the others again."""
    state, resumed = _begin_pass(db, merchant_id, shop_url, full)
    run = _Pass(state.pass_started_at, state.pass_full, state.pass_updated_after)
    pages = variants = products = deleted = 0
    cursor, complete, last = state.pass_cursor, False, state.last_updated_at
    while max_pages is None or pages < max_pages:
        found_variants: Sequence[CatalogVariant] = ()
        found_products: Sequence[CatalogProduct] = ()
        if cursor is not None and cursor.startswith(PRODUCTS_STEP):
            found_products, after = fetch_products(run.updated_after, cursor[len(PRODUCTS_STEP):] or None) \
                if fetch_products is not None else ((), None)
            next_cursor = PRODUCTS_STEP + after if after else None
        else:
            found_variants, after = fetch_page(run.updated_after, cursor)
            step_two = fetch_products is not None and not run.full
            next_cursor = after if after is not None else (PRODUCTS_STEP if step_two else None)
        pages += 1
        newest = max((item.updated_at for item in (*found_variants, *found_products)), default=None)
        if keep is not None:
            found_variants = [variant for variant in found_variants if keep(variant)]
        stored = _store_page(db, merchant_id, shop_url, run, cursor, next_cursor, found_variants, found_products,
                             newest)
        if stored.moved:
            resumed = True
            if stored.finished:  # another call finished this pass
                complete, last = True, stored.last_updated_at
                break
            cursor = stored.cursor
            continue
        variants += len(found_variants)
        products += len(found_products)
        cursor, last = next_cursor, stored.last_updated_at
        if cursor is None:
            complete, deleted = True, stored.deleted
            break
    return SyncResult(pages=pages, variants=variants, deleted=deleted, full=run.full, resumed=resumed,
                      complete=complete, cursor=last, products=products)


@dataclass(frozen=True)
class _Stored:
    moved: bool  # the state no longer stood where this call read from: the page was dropped
    finished: bool = False  # (moved) the pass is over
    cursor: str | None = None  # (moved) where the pass stands now
    deleted: int = 0
    last_updated_at: dt.datetime | None = None


def _store_page(db: Database, merchant_id: str, shop_url: str, run: _Pass, cursor: str | None,
                next_cursor: str | None, variants: Sequence[CatalogVariant],
                products: Sequence[CatalogProduct], newest: dt.datetime | None) -> _Stored:
    """Store one page and advance the pass, if the pass still stands at ``cursor`` (compare and set);
    ``newest`` is the newest ``updatedAt`` the page read (stored or not)."""
    with db.session() as session:
        connection = session.connection()
        claimed = connection.execute(update(_STATE).where(
            _STATE.c.merchant_id == merchant_id, _STATE.c.shop_url == shop_url,
            _STATE.c.pass_started_at == run.started_at,
            _STATE.c.pass_cursor.is_(None) if cursor is None else _STATE.c.pass_cursor == cursor,
        ).values(updated_at=utcnow())).rowcount
        state = session.get_one(CatalogSyncState, (merchant_id, shop_url), populate_existing=True)
        if claimed != 1:
            same_pass = state.pass_started_at == run.started_at
            return _Stored(moved=True, finished=not same_pass, cursor=state.pass_cursor,
                           last_updated_at=state.last_updated_at)
        now = utcnow()
        write_catalog_variants(connection, merchant_id, shop_url, variants, now)
        seed_supplier_skus(connection, merchant_id, shop_url, variants, now)
        write_catalog_products(connection, merchant_id, shop_url, products)
        _advance(state, newest, next_cursor)
        deleted = _finish_pass(connection, state) if next_cursor is None else 0
        return _Stored(moved=False, deleted=deleted, last_updated_at=state.last_updated_at)


def _begin_pass(db: Database, merchant_id: str, shop_url: str, full: bool) -> tuple[CatalogSyncState, bool]:
    """The shop's sync state with a pass under way: the unfinished one (unless a full pass is asked for and
    it is not one), else a new pass from the cursor. (The ``INSERT`` first takes SQLite's write lock, the
    ``FOR UPDATE`` PostgreSQL's row lock: two callers never both start a pass.)"""
    with db.session() as session:
        _ensure_state(session.connection(), merchant_id, shop_url)
        state = session.get_one(CatalogSyncState, (merchant_id, shop_url), with_for_update=True)
        if state.pass_started_at is not None and (state.pass_full or not full):
            return state, True
        full = full or state.last_updated_at is None
        state.pass_started_at = utcnow()
        state.pass_full = full
        state.pass_updated_after = None if full else state.last_updated_at - OVERLAP
        state.pass_cursor = None
        state.pass_max_updated_at = None
        return state, False


def _ensure_state(connection: Connection, merchant_id: str, shop_url: str) -> None:
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    connection.execute(insert(CatalogSyncState).values(
        merchant_id=merchant_id, shop_url=shop_url, pass_full=False, updated_at=utcnow(),
    ).on_conflict_do_nothing(index_elements=["merchant_id", "shop_url"]))


def _advance(state: CatalogSyncState, newest: dt.datetime | None, cursor: str | None) -> CatalogSyncState:
    """Record a stored page: the next page's cursor and the newest ``updatedAt`` seen in the pass."""
    if newest is not None and (state.pass_max_updated_at is None or newest > state.pass_max_updated_at):
        state.pass_max_updated_at = newest
    state.pass_cursor = cursor
    return state


def _finish_pass(connection: Connection, state: CatalogSyncState) -> int:
    """Move the cursor to the pass's newest ``updatedAt`` (at most its start); after a full pass, drop the variants
    it did not see (unless it saw none at all: a shop whose every product is gone is far rarer than a fetch that
    went wrong). A shop that never had a variant gets the pass's start (this machine's clock; ``OVERLAP`` covers a
    skew with Shopify's): its next pass is incremental, not another full one — before this, every PO run of a new
    merchant (an empty store, or one holding only poflow's products) re-read the whole store."""
    deleted = 0
    if state.pass_full and state.pass_max_updated_at is not None:  # an empty answer is no proof of an empty shop
        deleted = delete_variants_not_synced_since(connection, state.merchant_id, state.shop_url,
                                                   state.pass_started_at)
        state.last_full_sync_at = state.pass_started_at
    newest = state.pass_max_updated_at
    if newest is not None and state.pass_started_at is not None:
        newest = min(newest, state.pass_started_at)  # edits made while the pass ran are read again next time
    candidates = [moment for moment in (state.last_updated_at, newest) if moment is not None]
    state.last_updated_at = max(candidates, default=state.pass_started_at)
    state.pass_started_at = state.pass_updated_after = state.pass_cursor = state.pass_max_updated_at = None
    state.pass_full = False
    return deleted


def sync_state(db: Database, merchant_id: str, shop_url: str) -> CatalogSyncState | None:
    """The shop's sync state (a detached row), or ``None`` if it was never synced."""
    with db.session() as session:
        return session.scalar(select(CatalogSyncState).where(
            CatalogSyncState.merchant_id == merchant_id, CatalogSyncState.shop_url == shop_url))
