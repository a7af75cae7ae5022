"""Product drafts and their Shopify links, matched by (merchant, SKU) so re-runs never duplicate."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import Column, Connection, String, bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

from poflow_dagster.domain.drafts import DraftPlan, plan_drafts
from poflow_dagster.domain.models import ParsedPO
from poflow_dagster.catalog.normalize import barcode_key
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
    barcode: str | None = None  # the product's GTIN (UPC / EAN), sent to Shopify as the variant's barcode


#: Drafts are written in about this many chunks (``on_progress`` is called after each), at most
#: ``MAX_CHUNK_DRAFTS`` a chunk: 1,000 drafts × 12 parameters stays far below SQLite's limit (PostgreSQL gets a
#: chunk as one JSON parameter).
DRAFT_CHUNKS = 50
MAX_CHUNK_DRAFTS = 1000


def upsert_drafts(
    db: Database, merchant_id: str, upload_id: str, plans: list[DraftPlan],
    on_progress: Callable[..., None] | None = None, *, barcodes: Mapping[str, str] | None = None,
) -> list[DraftRecord]:
    """Create or update one draft per planned SKU, in one transaction, and return them in plan order.

    ``barcodes`` (SKU -> GTIN) gives drafts their barcode; a draft keeps the barcode it has when this PO gives
    its SKU none (a PO without an EAN column never erases what an earlier PO said).

    Set-based: the merchant's drafts for these SKUs are read in one query, drafts that already say exactly
    this are left alone (``changed=False``), and the rest are written with one
    ``INSERT … ON CONFLICT (merchant_id, sku) DO UPDATE … RETURNING`` per chunk, in SKU order, so two POs of
    one merchant writing the same SKUs at once lock them in the same order and never deadlock. The values are
    converted once, by the columns' own bind processors (the stored text and timestamps are exactly what the
    ORM writes), and sent straight to the driver. ``on_progress(drafts done, drafts, message)`` is called
    after each chunk.
    """
    plans = list({plan.sku: plan for plan in plans}.values())  # one row per SKU: ON CONFLICT may touch a row once
    total = len(plans)
    chunk = max(1, min(MAX_CHUNK_DRAFTS, -(-total // DRAFT_CHUNKS)))
    records: dict[str, DraftRecord] = {}
    with db.session() as session:
        connection = session.connection()
        existing = _existing_drafts(connection, merchant_id, [plan.sku for plan in plans])
        codes = dict(barcodes or {})
        write = _writer(connection, merchant_id, upload_id, existing, codes)
        in_sku_order = sorted(plans, key=lambda plan: plan.sku)
        for first in range(0, total, chunk):
            to_write: list[DraftPlan] = []
            for plan in in_sku_order[first:first + chunk]:
                draft = existing.get(plan.sku)
                barcode = codes.get(plan.sku) or (draft[6] if draft is not None else None)
                if draft is not None and draft[1:] == (plan.title, plan.description, plan.unit_cost, plan.price,
                                                       plan.currency, barcode):
                    draft_id, title, description, unit_cost, price, _, _ = draft
                    records[plan.sku] = DraftRecord(id=draft_id, sku=plan.sku, title=title,
                                                    description=description, price=price, unit_cost=unit_cost,
                                                    created=False, changed=False, barcode=barcode)
                else:
                    to_write.append(plan)
            if to_write:
                written = write(to_write)
                for plan in to_write:
                    draft_id, created, barcode = written[plan.sku]
                    records[plan.sku] = DraftRecord(
                        id=draft_id, sku=plan.sku, title=plan.title, description=plan.description,
                        price=plan.price, unit_cost=plan.unit_cost, created=created, barcode=barcode,
                    )
            if on_progress is not None:
                done = min(first + chunk, total)
                on_progress(done, total, f"Saved {done:,}/{total:,} product drafts")
    return [records[plan.sku] for plan in plans]


_DRAFTS = ProductDraft.__table__
_EXISTING_COLUMNS = (_DRAFTS.c.id, _DRAFTS.c.sku, _DRAFTS.c.title, _DRAFTS.c.description, _DRAFTS.c.unit_cost,
                     _DRAFTS.c.price, _DRAFTS.c.currency, _DRAFTS.c.barcode)
#: The merchant's drafts for a list of SKUs, the list bound as one JSON array (one small statement whatever the
#: PO's size, nothing for the driver to adapt per SKU).
_EXISTING = {
    dialect: select(*_EXISTING_COLUMNS).where(
        _DRAFTS.c.merchant_id == bindparam("merchant_id"),
        _DRAFTS.c.sku.in_(select(elements.table_valued("value").c.value)),
    )
    for dialect, elements in (
        ("postgresql", func.jsonb_array_elements_text(cast(bindparam("skus", type_=String), JSONB))),
        ("sqlite", func.json_each(bindparam("skus", type_=String))),
    )
}


def _existing_drafts(connection: Connection, merchant_id: str, skus: list[str]) -> dict[str, tuple[Any, ...]]:
    """The merchant's drafts for these SKUs: ``{sku: (id, title, description, unit_cost, price, currency,
    barcode)}``
    (read through the columns' types: exact decimals, as the ORM reads them)."""
    rows = connection.execute(_EXISTING[connection.dialect.name], {
        "merchant_id": merchant_id, "skus": json.dumps(skus, ensure_ascii=False),
    }).all()
    return {row[1]: (row[0], *row[2:]) for row in rows}


#: The columns a new draft is written with, and those an existing draft takes from this PO (its ``status`` and
#: ``created_at`` are kept).
_INSERTED = ("merchant_id", "sku", "title", "description", "unit_cost", "price", "currency", "barcode", "status",
             "source_upload_id", "created_at", "updated_at")
_UPDATED = ("title", "description", "unit_cost", "price", "currency", "source_upload_id", "updated_at")
_INSERT_INTO = f"INSERT INTO product_drafts ({', '.join(_INSERTED)}) "
#: A PO that gives the SKU no barcode leaves the draft's barcode as it is.
_ON_CONFLICT = "ON CONFLICT (merchant_id, sku) DO UPDATE SET " + ", ".join(
    [f"{name} = excluded.{name}" for name in _UPDATED]
    + ["barcode = COALESCE(excluded.barcode, product_drafts.barcode)"]
)
#: PostgreSQL: a chunk as one JSON array of ``[sku, title, description, unit_cost, price, currency, barcode]``
#: rows (one parameter the drivers pass as it is; the decimals as text, parsed exactly by NUMERIC), inserted in SKU
#: order (``COLLATE "C"``: code-point order, as Python sorts the chunks). A fresh row has no ``xmax``: ``inserted`` is
#: right even if a concurrent PO inserted the SKU after this one read.
_POSTGRESQL_UPSERT = (
    _INSERT_INTO + "SELECT %(merchant_id)s, d->>0, d->>1, d->>2, (d->>3)::numeric, (d->>4)::numeric, d->>5, "
    "d->>6, 'draft', %(upload_id)s, %(now)s, %(now)s FROM jsonb_array_elements(%(drafts)s::jsonb) AS d "
    'ORDER BY (d->>0) COLLATE "C" ' + _ON_CONFLICT + " RETURNING id, sku, xmax = 0, barcode"
)

#: Writes a chunk of drafts (in SKU order); returns ``{sku: (draft id, created, barcode now stored)}``.
_Writer = Callable[[list[DraftPlan]], dict[str, tuple[int, bool, str | None]]]


def _writer(
    connection: Connection, merchant_id: str, upload_id: str, existing: dict[str, tuple[Any, ...]],
    barcodes: Mapping[str, str],
) -> _Writer:
    """The dialect's chunk writer, with this call's constants (merchant, upload, one ``now``) converted once."""
    dialect = connection.dialect
    unit_cost, price = _bind_processor(_DRAFTS.c.unit_cost, dialect), _bind_processor(_DRAFTS.c.price, dialect)
    now = _bind_processor(_DRAFTS.c.updated_at, dialect)(utcnow())

    def write_sqlite(plans: list[DraftPlan]) -> dict[str, tuple[int, bool, str | None]]:
        # SQLite has no ``xmax``: a draft not among those read above is reported as created.
        params: list[Any] = []
        for plan in plans:
            params += (merchant_id, plan.sku, plan.title, plan.description, unit_cost(plan.unit_cost),
                       price(plan.price), plan.currency, barcodes.get(plan.sku), "draft", upload_id, now, now)
        rows = connection.exec_driver_sql(_sqlite_upsert(len(plans)), tuple(params))
        return {sku: (draft_id, sku not in existing, barcode) for draft_id, sku, barcode in rows}

    def write_postgresql(plans: list[DraftPlan]) -> dict[str, tuple[int, bool, str | None]]:
        drafts = json.dumps([(plan.sku, plan.title, plan.description, str(unit_cost(plan.unit_cost)),
                              str(price(plan.price)), plan.currency, barcodes.get(plan.sku)) for plan in plans],
                            ensure_ascii=False)
        rows = connection.exec_driver_sql(_POSTGRESQL_UPSERT, {
            "merchant_id": merchant_id, "upload_id": upload_id, "now": now, "drafts": drafts,
        })
        return {sku: (draft_id, inserted, barcode) for draft_id, sku, inserted, barcode in rows}

    return write_sqlite if dialect.name == "sqlite" else write_postgresql


@cache
def _sqlite_upsert(rows: int) -> str:
    """SQLite: ``INSERT … VALUES`` of ``rows`` drafts ``ON CONFLICT DO UPDATE … RETURNING id, sku, barcode``."""
    row = "(" + ", ".join("?" * len(_INSERTED)) + ")"
    return _INSERT_INTO + "VALUES " + ", ".join([row] * rows) + " " + _ON_CONFLICT + " RETURNING id, sku, barcode"


def _bind_processor(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """What SQLAlchemy would send the driver for a value of this column (exact decimal text on SQLite, an
    aware UTC datetime or SQLite's timestamp text…), as one function to call once per value."""
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else (lambda value: value)


def _insert_for(dialect: str):
    """The dialect's ``INSERT`` with ``ON CONFLICT`` (PostgreSQL or SQLite)."""
    return postgresql_insert if dialect == "postgresql" else sqlite_insert


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
        replace(draft, title=row.title, description=row.description, price=row.price, unit_cost=row.unit_cost,
                barcode=row.barcode)
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
        barcode=draft.barcode,
    )


@dataclass(frozen=True)
class DraftOutcome:
    drafts: list[DraftRecord]
    skipped: list[str]  # lines that got no draft, and why


def sku_barcodes(po: ParsedPO) -> dict[str, str]:
    """SKU -> the barcode of the SKU's first line that has a valid GTIN (an ``INVALID_BARCODE`` one stays on the
    line and is never sent to Shopify). SKUs are keyed as drafts are (stripped)."""
    found: dict[str, str] = {}
    for line in po.lines:
        sku = (line.sku or "").strip()
        if sku and line.barcode and barcode_key(line.barcode) is not None:
            found.setdefault(sku, line.barcode)
    return found


def create_drafts_for_po(
    db: Database, upload_id: str, po: ParsedPO, *, on_progress: Callable[..., None] | None = None
) -> DraftOutcome:
    """One draft per distinct SKU of the PO, priced with the merchant's markup and carrying the SKU's barcode
    (:func:`sku_barcodes`); re-runs update, never add.
    ``on_progress(drafts done, drafts, message)`` is called as each chunk of drafts is written."""
    from poflow_dagster.store.uploads import merchant_for_upload

    merchant = merchant_for_upload(db, upload_id)
    plans, skipped = plan_drafts(po, merchant.markup_percent)
    barcodes = sku_barcodes(po)
    for attempt in range(3):  # ON CONFLICT absorbs a concurrent PO's same SKU; retried for any other race
        try:
            return DraftOutcome(upsert_drafts(db, merchant.id, upload_id, plans, on_progress, barcodes=barcodes),
                                skipped)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
