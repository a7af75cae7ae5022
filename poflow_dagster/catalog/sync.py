"""Incremental sync of a merchant's Shopify catalog into ``catalog_variants``.

A *pass* asks ``fetch_page(updated_after, after_cursor)`` for the variants of products updated after the last
pass's newest ``updatedAt`` (minus ``OVERLAP``, for Shopify's search index lagging behind writes), page by
page until the next cursor is ``None``. Each page and the sync state are written in one transaction, so a pass
that stops half way (a crash, a deploy, ``max_pages``) is continued by the next ``sync_catalog`` from its
page cursor; only a complete pass moves the ``updated_at`` cursor.

Deleted and archived products: an archived product is updated, so it comes back with
``product_status = ARCHIVED`` and stays in the catalog (matching can still find it; whether to reuse it is
the caller's choice). A deleted product (or a variant removed from a product) never appears in an
"updated after" query: a *full* pass (``full=True``; the first pass always is one) removes every variant of
the shop it did not see. Run one periodically (e.g. nightly) until a ``products/delete`` webhook exists.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from poflow_dagster.catalog.models import CatalogVariant
from poflow_dagster.catalog.store import delete_variants_not_synced_since, write_catalog_variants
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import CatalogSyncState
from poflow_dagster.store.types import utcnow

__all__ = ["OVERLAP", "CatalogVariant", "FetchPage", "SyncResult", "sync_catalog"]

#: How far before the last pass's newest ``updatedAt`` the next pass starts: products written just before a
#: pass may reach Shopify's search index after it. Re-reading them is harmless (upserts are idempotent).
OVERLAP = dt.timedelta(minutes=5)


class FetchPage(Protocol):
    """One page of the catalog: variants of products updated after ``updated_after`` (all when ``None``),
    from ``after_cursor`` on (the first page when ``None``); returns the variants and the next page's cursor
    (``None`` after the last page). ``ShopifyClient.catalog_page`` fits."""

    def __call__(self, updated_after: dt.datetime | None, after_cursor: str | None
                 ) -> tuple[Sequence[CatalogVariant], str | None]: ...


@dataclass(frozen=True)
class SyncResult:
    pages: int
    variants: int
    deleted: int
    full: bool
    resumed: bool  # this call continued a pass an earlier call had not finished
    complete: bool  # the pass reached its last page (False: stopped at ``max_pages``; the next call continues)
    cursor: dt.datetime | None  # ``last_updated_at`` after this call


def sync_catalog(db: Database, merchant_id: str, shop_url: str, fetch_page: FetchPage, *, full: bool = False,
                 max_pages: int | None = None) -> SyncResult:
    """Bring the shop's variants up to date: continue an unfinished pass, else start one (full when asked or
    when the shop was never synced). Stops after ``max_pages`` pages if given (the next call continues)."""
    state, resumed = _begin_pass(db, merchant_id, shop_url, full)
    full_pass = state.pass_full
    pages = variants = deleted = 0
    cursor = state.pass_cursor
    while max_pages is None or pages < max_pages:
        page, cursor = fetch_page(state.pass_updated_after, cursor)
        pages += 1
        variants += len(page)
        with db.session() as session:
            connection = session.connection()
            write_catalog_variants(connection, merchant_id, shop_url, page)
            state = _advance(session.get_one(CatalogSyncState, (merchant_id, shop_url)), page, cursor)
            if cursor is None:
                deleted = _finish_pass(connection, state)
                break
    return SyncResult(pages=pages, variants=variants, deleted=deleted, full=full_pass,
                      resumed=resumed, complete=cursor is None, cursor=state.last_updated_at)


def _begin_pass(db: Database, merchant_id: str, shop_url: str, full: bool) -> tuple[CatalogSyncState, bool]:
    """The shop's sync state with a pass under way: the unfinished one (unless a full pass is asked for and
    it is not one), else a new pass from the cursor."""
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


def _advance(state: CatalogSyncState, page: Sequence[CatalogVariant], cursor: str | None) -> CatalogSyncState:
    """Record a stored page: the next page's cursor and the newest ``updatedAt`` seen in the pass."""
    newest = max((variant.updated_at for variant in page), default=None)
    if newest is not None and (state.pass_max_updated_at is None or newest > state.pass_max_updated_at):
        state.pass_max_updated_at = newest
    state.pass_cursor = cursor
    return state


def _finish_pass(connection: Connection, state: CatalogSyncState) -> int:
    """Move the cursor to the pass's newest ``updatedAt``; after a full pass, drop the variants it did not see
    (unless it saw none at all: a shop whose every product is gone is far rarer than a fetch that went wrong)."""
    deleted = 0
    if state.pass_full and state.pass_max_updated_at is not None:  # an empty answer is no proof of an empty shop
        deleted = delete_variants_not_synced_since(connection, state.merchant_id, state.shop_url,
                                                   state.pass_started_at)
        state.last_full_sync_at = state.pass_started_at
    candidates = [moment for moment in (state.last_updated_at, state.pass_max_updated_at) if moment is not None]
    state.last_updated_at = max(candidates, default=None)
    state.pass_started_at = state.pass_updated_after = state.pass_cursor = state.pass_max_updated_at = None
    state.pass_full = False
    return deleted


def sync_state(db: Database, merchant_id: str, shop_url: str) -> CatalogSyncState | None:
    """The shop's sync state (a detached row), or ``None`` if it was never synced."""
    with db.session() as session:
        return session.scalar(select(CatalogSyncState).where(
            CatalogSyncState.merchant_id == merchant_id, CatalogSyncState.shop_url == shop_url))
