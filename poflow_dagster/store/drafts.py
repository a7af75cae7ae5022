"""Product drafts and their Shopify links, matched by (merchant, SKU) so re-runs never duplicate."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Connection, Row, Table, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from poflow_dagster.domain.drafts import DraftPlan, plan_drafts
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import LineItem, ProductDraft, PurchaseOrder, ShopifyProduct
from poflow_dagster.store.types import utcnow


@dataclass(frozen=True)
class DraftRecord:
    id: int
    sku: str
    title: str
    description: str | None
    price: Decimal
    unit_cost: Decimal
    created: bool  # False: an existing draft of this SKU was updated (or left as it was)
    changed: bool = True  # False: the draft already said exactly this; nothing was written


#: Drafts are written in about this many chunks (``on_progress`` is called after each), at most
#: ``MAX_CHUNK_DRAFTS`` a chunk: 1,000 drafts × 11 columns stays far below both databases' parameter limits.
DRAFT_CHUNKS = 50
MAX_CHUNK_DRAFTS = 1000
#: The merchant's existing drafts are read this many SKUs at a time (one query for a 5,000-SKU PO).
READ_CHUNK_SKUS = 5000


def upsert_drafts(
    db: Database, merchant_id: str, upload_id: str, plans: list[DraftPlan],
    on_progress: Callable[..., None] | None = None,
) -> list[DraftRecord]:
    """Create or update one draft per planned SKU, in one transaction, and return them in plan order.

    Set-based: the merchant's drafts for these SKUs are read in a few queries, drafts that already say
    exactly this are left alone (``changed=False``), and the rest are written per chunk with one
    ``INSERT … ON CONFLICT (merchant_id, sku) DO UPDATE`` (PostgreSQL: ``COPY`` into a temporary table, then
    ``INSERT … SELECT … RETURNING``; SQLite: executemany, then the ids in one query), all in SKU order, so two POs of one merchant writing the same SKUs at once lock them
    in the same order and never deadlock. ``on_progress(drafts done, drafts, message)`` is called after each
    chunk.
    """
    plans = list({plan.sku: plan for plan in plans}.values())  # one row per SKU: ON CONFLICT may touch a row once
    total = len(plans)
    table = ProductDraft.__table__
    chunk = max(1, min(MAX_CHUNK_DRAFTS, -(-total // DRAFT_CHUNKS)))
    records: dict[str, DraftRecord] = {}
    with db.session() as session:
        connection = session.connection()
        existing: dict[str, Row[Any]] = {}
        for first in range(0, total, READ_CHUNK_SKUS):
            skus = [plan.sku for plan in plans[first:first + READ_CHUNK_SKUS]]
            rows = connection.execute(_EXISTING, {"merchant_id": merchant_id, "skus": skus}).all()
            existing.update((row.sku, row) for row in rows)
        sqlite = connection.dialect.name == "sqlite"
        upsert = _upsert_statement(connection.dialect.name, table)
        in_sku_order = sorted(plans, key=lambda plan: plan.sku)
        for first in range(0, total, chunk):
            to_write: list[DraftPlan] = []
            for plan in in_sku_order[first:first + chunk]:
                row = existing.get(plan.sku)
                if row is not None and _same(row, plan):
                    records[plan.sku] = DraftRecord(id=row.id, sku=row.sku, title=row.title,
                                                    description=row.description, price=row.price,
                                                    unit_cost=row.unit_cost, created=False, changed=False)
                else:
                    to_write.append(plan)
            if to_write:
                now = utcnow()
                values = [
                    {"merchant_id": merchant_id, "sku": plan.sku, "title": plan.title,
                     "description": plan.description, "unit_cost": plan.unit_cost, "price": plan.price,
                     "currency": plan.currency, "source_upload_id": upload_id, "status": "draft",
                     "created_at": now, "updated_at": now}
                    for plan in to_write
                ]
                if sqlite:
                    # SQLite: the driver's own executemany (no per-row RETURNING), then the ids in one query over
                    # the chunk's SKU range (chunks are in SKU order: the ranges never overlap).
                    connection.execute(upsert, values)
                    ids = connection.execute(_IDS_IN_RANGE, {"merchant_id": merchant_id, "low": to_write[0].sku,
                                                             "high": to_write[-1].sku}).all()
                    written = {sku: (draft_id, sku not in existing) for sku, draft_id in ids}
                elif connection.dialect.driver in ("psycopg", "psycopg2"):
                    written = _copy_upsert(connection, merchant_id, upload_id, now, to_write)
                else:
                    # PostgreSQL: batched multi-row VALUES … RETURNING; a fresh row has no ``xmax`` (inserted now,
                    # even if a concurrent PO inserted the SKU after this one read).
                    written = {row.sku: (row.id, row.inserted) for row in connection.execute(upsert, values)}
                for plan in to_write:
                    draft_id, created = written[plan.sku]
                    records[plan.sku] = DraftRecord(
                        id=draft_id, sku=plan.sku, title=plan.title, description=plan.description,
                        price=plan.price, unit_cost=plan.unit_cost, created=created,
                    )
            if on_progress is not None:
                done = min(first + chunk, total)
                on_progress(done, total, f"Saved {done:,}/{total:,} product drafts")
    return [records[plan.sku] for plan in plans]


_DRAFTS = ProductDraft.__table__
#: The merchant's drafts for a list of SKUs: one cached statement, the SKU list expanded at execution.
_EXISTING = select(
    _DRAFTS.c.id, _DRAFTS.c.sku, _DRAFTS.c.title, _DRAFTS.c.description, _DRAFTS.c.unit_cost, _DRAFTS.c.price,
    _DRAFTS.c.currency,
).where(_DRAFTS.c.merchant_id == bindparam("merchant_id"), _DRAFTS.c.sku.in_(bindparam("skus", expanding=True)))
#: The ids of the merchant's drafts whose SKUs lie in ``[low, high]``.
_IDS_IN_RANGE = select(_DRAFTS.c.sku, _DRAFTS.c.id).where(
    _DRAFTS.c.merchant_id == bindparam("merchant_id"), _DRAFTS.c.sku.between(bindparam("low"), bindparam("high"))
)


_COPY_COLUMNS = ("sku", "title", "description", "unit_cost", "price", "currency")


def _copy_upsert(
    connection: Connection, merchant_id: str, upload_id: str, now: dt.datetime, plans: list[DraftPlan]
) -> dict[str, tuple[int, bool]]:
    """PostgreSQL: ``COPY`` the chunk into a temporary table (dropped at commit), then one
    ``INSERT … SELECT … ON CONFLICT DO UPDATE … RETURNING id, sku, inserted`` in SKU order. A fresh row has no
    ``xmax``: ``inserted`` is right even if a concurrent PO inserted the SKU after this one read."""
    from poflow_dagster.store.purchase_orders import _copy_text

    cursor = connection.connection.dbapi_connection.cursor()  # the transaction's own connection
    try:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS poflow_draft_rows (sku text, title text, description text, "
            "unit_cost numeric, price numeric, currency text) ON COMMIT DROP"
        )
        cursor.execute("DELETE FROM poflow_draft_rows")  # an earlier chunk's rows (cheaper than TRUNCATE)
        copy_sql = f"COPY poflow_draft_rows ({', '.join(_COPY_COLUMNS)}) FROM STDIN"
        if connection.dialect.driver == "psycopg":
            with cursor.copy(copy_sql) as copy:
                for plan in plans:
                    copy.write_row(tuple(getattr(plan, column) for column in _COPY_COLUMNS))
        else:
            text = "".join("\t".join(_copy_text(getattr(plan, column)) for column in _COPY_COLUMNS) + "\n"
                           for plan in plans)
            cursor.copy_expert(copy_sql, io.StringIO(text))
        cursor.execute(
            "INSERT INTO product_drafts (merchant_id, sku, title, description, unit_cost, price, currency, status, "
            "source_upload_id, created_at, updated_at) "
            "SELECT %(merchant)s, sku, title, description, unit_cost, price, currency, 'draft', %(upload)s, "
            "%(now)s, %(now)s FROM poflow_draft_rows ORDER BY sku "
            "ON CONFLICT (merchant_id, sku) DO UPDATE SET title = excluded.title, "
            "description = excluded.description, unit_cost = excluded.unit_cost, price = excluded.price, "
            "currency = excluded.currency, source_upload_id = excluded.source_upload_id, "
            "updated_at = excluded.updated_at "
            "RETURNING id, sku, xmax = 0",
            {"merchant": merchant_id, "upload": upload_id, "now": now},
        )
        return {sku: (draft_id, inserted) for draft_id, sku, inserted in cursor.fetchall()}
    finally:
        cursor.close()


def _insert_for(dialect: str):
    """The dialect's ``INSERT`` with ``ON CONFLICT`` (PostgreSQL or SQLite)."""
    return postgresql_insert if dialect == "postgresql" else sqlite_insert


def _upsert_statement(dialect: str, table: Table):
    """``INSERT … ON CONFLICT (merchant_id, sku) DO UPDATE`` of a draft's content (``status`` and ``created_at``
    of an existing draft are kept); on PostgreSQL ``RETURNING id, sku, inserted``."""
    insert = _insert_for(dialect)(table)
    upsert = insert.on_conflict_do_update(
        index_elements=["merchant_id", "sku"],
        set_={name: insert.excluded[name] for name in
              ("title", "description", "unit_cost", "price", "currency", "source_upload_id", "updated_at")},
    )
    if dialect == "sqlite":
        return upsert
    return upsert.returning(table.c.id, table.c.sku, literal_column("xmax = 0", Boolean).label("inserted"))


def _same(draft: Row[Any], plan: DraftPlan) -> bool:
    return (draft.title, draft.description, draft.unit_cost, draft.price, draft.currency) == (
        plan.title, plan.description, plan.unit_cost, plan.price, plan.currency
    )


def drafts_for_upload(db: Database, upload_id: str) -> list[DraftRecord]:
    """The merchant's drafts for the SKUs on this upload's PO, in PO order."""
    with db.session() as session:
        po = session.scalar(select(PurchaseOrder).where(PurchaseOrder.upload_id == upload_id))
        if po is None:
            return []
        skus = list(
            dict.fromkeys(
                sku for sku in session.scalars(
                    select(LineItem.sku).where(LineItem.po_id == po.id).order_by(LineItem.line_no)
                ) if sku
            )
        )
        drafts = {
            draft.sku: draft
            for draft in session.scalars(
                select(ProductDraft).where(ProductDraft.merchant_id == po.merchant_id, ProductDraft.sku.in_(skus))
            )
        }
        return [_record(drafts[sku], False) for sku in skus if sku in drafts]


def current_drafts(db: Database, drafts: list[DraftRecord]) -> list[DraftRecord]:
    """The same drafts as the database holds them now (another PO with the same SKU may have changed them
    since they were read), in the same order; a draft that no longer exists is returned as it was."""
    if not drafts:
        return []
    with db.session() as session:
        rows = {
            row.id: row
            for row in session.scalars(select(ProductDraft).where(ProductDraft.id.in_([d.id for d in drafts])))
        }
    return [
        replace(draft, title=row.title, description=row.description, price=row.price, unit_cost=row.unit_cost)
        if (row := rows.get(draft.id)) is not None else draft
        for draft in drafts
    ]


def record_shopify_links(db: Database, shop_url: str, links: list[tuple[int, str, str, str, Decimal]]) -> None:
    """Remember where each draft lives in Shopify: ``(draft_id, handle, product_gid, variant_gid, price)``.

    One transaction of ``INSERT … ON CONFLICT (draft_id) DO UPDATE`` per chunk of links (in draft order):
    a link recorded again is replaced, never doubled."""
    latest = {link[0]: link for link in links}  # one row per draft: ON CONFLICT may touch a row only once
    if not latest:
        return
    table = ShopifyProduct.__table__
    now = utcnow()
    rows = [
        {"draft_id": draft_id, "shop_url": shop_url, "handle": handle, "product_gid": product_gid,
         "variant_gid": variant_gid, "synced_price": price, "synced_at": now}
        for draft_id, handle, product_gid, variant_gid, price in (latest[key] for key in sorted(latest))
    ]
    with db.session() as session:
        connection = session.connection()
        insert = _insert_for(connection.dialect.name)(table)
        upsert = insert.on_conflict_do_update(
            index_elements=["draft_id"],
            set_={name: insert.excluded[name] for name in
                  ("shop_url", "handle", "product_gid", "variant_gid", "synced_price", "synced_at")},
        )
        for first in range(0, len(rows), MAX_CHUNK_DRAFTS):
            connection.execute(upsert, rows[first:first + MAX_CHUNK_DRAFTS])


def count_shopify_links(db: Database, draft_ids: list[int]) -> int:
    """How many of these drafts have a Shopify link (counted in SQL)."""
    table = ShopifyProduct.__table__
    count = 0
    with db.session() as session:
        for first in range(0, len(draft_ids), MAX_CHUNK_DRAFTS):
            count += session.scalar(
                select(func.count()).select_from(table)
                .where(table.c.draft_id.in_(draft_ids[first:first + MAX_CHUNK_DRAFTS]))
            ) or 0
    return count


def _record(draft: ProductDraft, created: bool, changed: bool = True) -> DraftRecord:
    return DraftRecord(
        id=draft.id,
        sku=draft.sku,
        title=draft.title,
        description=draft.description,
        price=draft.price,
        unit_cost=draft.unit_cost,
        created=created,
        changed=changed,
    )


@dataclass(frozen=True)
class DraftOutcome:
    drafts: list[DraftRecord]
    skipped: list[str]  # lines that got no draft, and why


def create_drafts_for_po(
    db: Database, upload_id: str, po: ParsedPO, *, on_progress: Callable[..., None] | None = None
) -> DraftOutcome:
    """One draft per distinct SKU of the PO, priced with the merchant's markup; re-runs update, never add.
    ``on_progress(drafts done, drafts, message)`` is called as each chunk of drafts is written."""
    from poflow_dagster.store.uploads import merchant_for_upload

    merchant = merchant_for_upload(db, upload_id)
    plans, skipped = plan_drafts(po, merchant.markup_percent)
    for attempt in range(3):  # ON CONFLICT absorbs a concurrent PO's same SKU; retried for any other race
        try:
            return DraftOutcome(upsert_drafts(db, merchant.id, upload_id, plans, on_progress), skipped)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
