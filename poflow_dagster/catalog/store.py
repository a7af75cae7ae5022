"""The catalog in the app database: synced variants, learned supplier SKUs and the matches of PO lines.

Every write is set-based (``INSERT … ON CONFLICT``, chunked) and idempotent: the same page or the same matches
written twice leave the same rows. Reads for a PO fetch only its candidates: the variants with one of its SKU or
barcode keys, its supplier's vendor, or a learned variant (one statement, each branch an index lookup).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, String, bindparam, case, cast, func, select, union
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from poflow_dagster.catalog.models import (
    Candidate, CatalogProduct, CatalogVariant, LineMatch, MatchableLine, split_supplier_sku_entry,
)
from poflow_dagster.catalog.normalize import barcode_key, sku_key, supplier_key
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import (
    CatalogVariantRow, LineItem, LineMatchRow, PurchaseOrder, Supplier, SupplierSkuMap,
)
from poflow_dagster.store.types import utcnow

#: Rows per ``INSERT`` statement: 500 variants × 20 columns stays far below SQLite's 32,766 parameters.
CHUNK_ROWS = 500

_VARIANTS = CatalogVariantRow.__table__
_MAP = SupplierSkuMap.__table__
_MATCHES = LineMatchRow.__table__


def _insert(connection: Connection):
    return postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert


# --- catalog variants ------------------------------------------------------------------------------------------

_VARIANT_UPDATED = ("merchant_id", "product_gid", "inventory_item_gid", "sku", "sku_key", "barcode", "barcode_key",
                    "product_title", "variant_title", "vendor", "vendor_key", "unit_cost", "price", "product_status",
                    "shopify_updated_at", "supplier_skus", "synced_at")


def upsert_catalog_variants(db: Database, merchant_id: str, shop_url: str, variants: Iterable[CatalogVariant]) -> int:
    """Store a page of variants in one transaction (see ``write_catalog_variants``); returns rows written."""
    with db.session() as session:
        return write_catalog_variants(session.connection(), merchant_id, shop_url, variants)


def write_catalog_variants(
    connection: Connection, merchant_id: str, shop_url: str, variants: Iterable[CatalogVariant],
    now: dt.datetime | None = None,
) -> int:
    """``INSERT … ON CONFLICT (shop_url, variant_gid) DO UPDATE`` in variant order, chunked, with the keys
    computed here. A row already holding a newer ``updatedAt`` is left alone (a late page never rolls a
    variant back); every other row, even unchanged, gets ``synced_at = now`` (a full sync prunes by it)."""
    latest: dict[str, CatalogVariant] = {}
    for variant in variants:  # one row per variant: ON CONFLICT may touch a row only once per statement
        kept = latest.get(variant.variant_gid)
        if kept is None or variant.updated_at >= kept.updated_at:
            latest[variant.variant_gid] = variant
    if not latest:
        return 0
    now = now or utcnow()
    rows = [_variant_row(merchant_id, shop_url, latest[gid], now) for gid in sorted(latest)]
    insert = _insert(connection)(_VARIANTS)
    upsert = insert.on_conflict_do_update(
        index_elements=["shop_url", "variant_gid"],
        set_={name: insert.excluded[name] for name in _VARIANT_UPDATED},
        where=_VARIANTS.c.shopify_updated_at <= insert.excluded.shopify_updated_at,
    )
    seen = _VARIANTS.update().where(
        _VARIANTS.c.shop_url == shop_url, _VARIANTS.c.variant_gid.in_(bindparam("gids", expanding=True)),
        _VARIANTS.c.synced_at < now,
    ).values(synced_at=now)
    for first in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[first:first + CHUNK_ROWS]
        connection.execute(upsert, chunk)
        connection.execute(seen, {"gids": [row["variant_gid"] for row in chunk]})  # rows the WHERE kept as they were
    return len(rows)


def _variant_row(merchant_id: str, shop_url: str, variant: CatalogVariant, now: dt.datetime) -> dict[str, Any]:
    return {
        "merchant_id": merchant_id, "shop_url": shop_url, "product_gid": variant.product_gid,
        "variant_gid": variant.variant_gid, "inventory_item_gid": variant.inventory_item_gid,
        "sku": variant.sku, "sku_key": sku_key(variant.sku),
        "barcode": variant.barcode, "barcode_key": barcode_key(variant.barcode),
        "product_title": variant.product_title, "variant_title": variant.variant_title,
        "vendor": variant.vendor, "vendor_key": supplier_key(variant.vendor),
        "unit_cost": variant.unit_cost, "price": variant.price, "product_status": variant.product_status,
        "shopify_updated_at": variant.updated_at, "synced_at": now,
        "supplier_skus": supplier_skus_text(getattr(variant, "supplier_skus", ())),
    }


def supplier_skus_text(entries) -> str | None:
    """``catalog_variants.supplier_skus``: the metafield's entries as a sorted JSON list (``None``: none)."""
    return json.dumps(sorted(set(entries))) if entries else None


def write_catalog_products(connection: Connection, merchant_id: str, shop_url: str,
                           products: Iterable[CatalogProduct]) -> int:
    """Carry product-level edits (title, vendor, status) to the rows of the products' variants already in the
    catalog; returns the variant rows changed. Products with no synced variant (poflow's own, or new ones
    whose variants the variants query brings) change nothing."""
    rows = [{"gid": product.product_gid, "title": product.title, "vendor": product.vendor,
             "vendor_key": supplier_key(product.vendor), "status": product.status} for product in products]
    if not rows:
        return 0
    update = _VARIANTS.update().where(
        _VARIANTS.c.merchant_id == merchant_id, _VARIANTS.c.shop_url == shop_url,
        _VARIANTS.c.product_gid == bindparam("gid"),
    ).values(product_title=bindparam("title"), vendor=bindparam("vendor"), vendor_key=bindparam("vendor_key"),
             product_status=bindparam("status"))
    changed = 0
    for first in range(0, len(rows), CHUNK_ROWS):
        changed += connection.execute(update, rows[first:first + CHUNK_ROWS]).rowcount or 0
    return changed


def delete_variants_not_synced_since(connection: Connection, merchant_id: str, shop_url: str,
                                     since: dt.datetime) -> int:
    """Remove the shop's variants a complete full sync started at ``since`` did not see (deleted in Shopify)."""
    result = connection.execute(_VARIANTS.delete().where(
        _VARIANTS.c.merchant_id == merchant_id, _VARIANTS.c.shop_url == shop_url, _VARIANTS.c.synced_at < since,
    ))
    return result.rowcount or 0


#: A list bound as one JSON array parameter: one statement of one shape whatever the PO's size.
def _json_list(dialect: str, name: str):
    if dialect == "postgresql":
        elements = func.jsonb_array_elements_text(cast(bindparam(name, type_=String), JSONB))
    else:
        elements = func.json_each(bindparam(name, type_=String))
    return select(elements.table_valued("value").c.value)


_CANDIDATE_COLUMNS = (
    _VARIANTS.c.product_gid, _VARIANTS.c.variant_gid, _VARIANTS.c.inventory_item_gid, _VARIANTS.c.sku,
    _VARIANTS.c.barcode, _VARIANTS.c.product_title, _VARIANTS.c.variant_title, _VARIANTS.c.vendor,
    _VARIANTS.c.unit_cost, _VARIANTS.c.price, _VARIANTS.c.product_status, _VARIANTS.c.shopify_updated_at,
)


def _candidates_query(dialect: str):
    """Variants of one merchant's shop by SKU keys, barcode keys, vendor key or GIDs: a ``UNION`` of four
    index lookups (``ix_catalog_variants_merchant_*`` and the shop + GID unique index)."""
    shop = (_VARIANTS.c.merchant_id == bindparam("merchant_id"), _VARIANTS.c.shop_url == bindparam("shop_url"))

    def branch(condition):
        return select(*_CANDIDATE_COLUMNS).where(*shop, condition)

    return union(
        branch(_VARIANTS.c.sku_key.in_(_json_list(dialect, "sku_keys"))),
        branch(_VARIANTS.c.barcode_key.in_(_json_list(dialect, "barcode_keys"))),
        branch(_VARIANTS.c.vendor_key == bindparam("vendor_key")),
        branch(_VARIANTS.c.variant_gid.in_(_json_list(dialect, "variant_gids"))),
    )


_QUERIES = {dialect: _candidates_query(dialect) for dialect in ("postgresql", "sqlite")}


def catalog_candidates(
    db: Database, merchant_id: str, shop_url: str, *, sku_keys: Iterable[str] = (),
    barcode_keys: Iterable[str] = (), vendor_key: str | None = None, variant_gids: Iterable[str] = (),
) -> list[CatalogVariant]:
    """The shop's variants with one of these SKU or barcode keys, this vendor key, or one of these GIDs
    (each once, in variant-GID order)."""
    with db.session() as session:
        connection = session.connection()
        query = _QUERIES[connection.dialect.name]
        rows = connection.execute(query, {
            "merchant_id": merchant_id, "shop_url": shop_url, "vendor_key": vendor_key,
            "sku_keys": json.dumps(sorted(set(sku_keys))), "barcode_keys": json.dumps(sorted(set(barcode_keys))),
            "variant_gids": json.dumps(sorted(set(variant_gids))),
        }).all()
    variants = [CatalogVariant(*row) for row in rows]
    return sorted(variants, key=lambda variant: variant.variant_gid)


@dataclass(frozen=True)
class MatchInputs:
    """What ``match_lines`` needs for one PO, read from the database."""

    catalog: list[CatalogVariant]
    supplier_map: dict[str, str]


def load_match_inputs(
    db: Database, merchant_id: str, shop_url: str, supplier: str | None, lines: Sequence[MatchableLine],
    barcodes: Mapping[int, str] | None = None,
) -> MatchInputs:
    """The PO's candidate variants and its supplier's learned SKUs (two statements)."""
    supplier_map = learned_supplier_skus(db, merchant_id, shop_url, supplier)
    catalog = catalog_candidates(
        db, merchant_id, shop_url,
        sku_keys=(key for line in lines if (key := sku_key(line.sku)) is not None),
        barcode_keys=(key for code in (barcodes or {}).values() if (key := barcode_key(code)) is not None),
        vendor_key=supplier_key(supplier),
        variant_gids=supplier_map.values(),
    )
    return MatchInputs(catalog=catalog, supplier_map=supplier_map)


# --- learned supplier SKUs -------------------------------------------------------------------------------------

def learned_supplier_skus(db: Database, merchant_id: str, shop_url: str, supplier: str | None) -> dict[str, str]:
    """This supplier's learned ``{supplier SKU key: variant_gid}`` in the merchant's shop."""
    key = supplier_key(supplier)
    if key is None:
        return {}
    with db.session() as session:
        rows = session.execute(select(_MAP.c.supplier_sku_key, _MAP.c.variant_gid).where(
            _MAP.c.merchant_id == merchant_id, _MAP.c.supplier_key == key, _MAP.c.shop_url == shop_url,
        )).all()
    return dict(rows)


def seed_supplier_skus(connection: Connection, merchant_id: str, shop_url: str,
                       variants: Iterable[CatalogVariant], now: dt.datetime | None = None) -> int:
    """Learn the supplier SKUs found in variants' ``poflow.supplier_skus`` metafields that the app database lacks
    (a new database, or another installation taught them). What the database already maps stays as it is;
    an entry it maps to this same variant is marked as on the metafield. Returns the entries seen."""
    now = now or utcnow()
    rows = [{"merchant_id": merchant_id, "supplier_key": supplier, "supplier_sku_key": sku, "shop_url": shop_url,
             "variant_gid": variant.variant_gid, "learned_from_upload_id": None, "created_at": now,
             "metafield_written_at": now}
            for variant in variants for entry in getattr(variant, "supplier_skus", ())
            if (parts := split_supplier_sku_entry(entry)) is not None for supplier, sku in [parts]]
    latest = {(row["supplier_key"], row["supplier_sku_key"]): row for row in rows}  # once per statement
    if not latest:
        return 0
    insert = _insert(connection)(_MAP)
    upsert = insert.on_conflict_do_update(
        index_elements=["merchant_id", "supplier_key", "supplier_sku_key", "shop_url"],
        set_={"metafield_written_at": insert.excluded.metafield_written_at},
        where=(_MAP.c.variant_gid == insert.excluded.variant_gid) & _MAP.c.metafield_written_at.is_(None),
    )
    ordered = [latest[key] for key in sorted(latest)]
    for first in range(0, len(ordered), CHUNK_ROWS):
        connection.execute(upsert, ordered[first:first + CHUNK_ROWS])
    return len(ordered)


def learn_supplier_sku(connection: Connection, merchant_id: str, shop_url: str, supplier: str | None,
                       supplier_sku: str | None, variant_gid: str, upload_id: str | None) -> bool:
    """Remember that this supplier's SKU is this variant (replacing what was learned before). ``False`` when
    there is nothing to learn from: no supplier name or no SKU on the line. An entry moved to another variant
    waits for its metafield again (``metafield_written_at`` cleared; ``write_supplier_sku_metafields``)."""
    supplier_k, sku_k = supplier_key(supplier), sku_key(supplier_sku)
    if supplier_k is None or sku_k is None:
        return False
    insert = _insert(connection)(_MAP)
    connection.execute(insert.values(
        merchant_id=merchant_id, supplier_key=supplier_k, supplier_sku_key=sku_k, shop_url=shop_url,
        variant_gid=variant_gid, learned_from_upload_id=upload_id, created_at=utcnow(),
    ).on_conflict_do_update(
        index_elements=["merchant_id", "supplier_key", "supplier_sku_key", "shop_url"],
        set_={**{name: insert.excluded[name] for name in ("variant_gid", "learned_from_upload_id", "created_at")},
              "metafield_written_at": case((_MAP.c.variant_gid == insert.excluded.variant_gid,
                                            _MAP.c.metafield_written_at), else_=None)},
    ))
    return True


# --- line matches ----------------------------------------------------------------------------------------------

_MATCH_UPDATED = ("upload_id", "method", "score", "variant_gid", "status", "candidates", "matched_at")


def record_line_matches(db: Database, upload_id: str, matches: Sequence[LineMatch]) -> int:
    """Store the matches of an upload's PO lines (by ``line_no``), one row per line, in one transaction.

    Recording again replaces the automatic result; a line a reviewer approved keeps the approval (the
    ``ON CONFLICT`` update skips ``approved`` rows). Returns the rows written or kept; a ``line_no`` the
    saved PO does not have raises ``KeyError``."""
    with db.session() as session:
        line_ids = _line_ids(session, upload_id)
        connection = session.connection()
        now = utcnow()
        latest = {match.line_no: match for match in matches}  # ON CONFLICT may touch a row only once
        rows = sorted(({
            "line_item_id": line_ids[match.line_no], "upload_id": upload_id, "method": match.method,
            "score": match.score, "variant_gid": match.variant_gid, "status": match.status,
            "candidates": [candidate.to_json() for candidate in match.candidates], "matched_at": now,
        } for match in latest.values()), key=lambda row: row["line_item_id"])
        if not rows:
            return 0
        insert = _insert(connection)(_MATCHES)
        upsert = insert.on_conflict_do_update(
            index_elements=["line_item_id"],
            set_={name: insert.excluded[name] for name in _MATCH_UPDATED},
            where=_MATCHES.c.status != "approved",
        )
        for first in range(0, len(rows), CHUNK_ROWS):
            connection.execute(upsert, rows[first:first + CHUNK_ROWS])
        return len(rows)


def _line_ids(session: Session, upload_id: str) -> dict[int, int]:
    """``{line_no: line_items.id}`` of the upload's saved PO."""
    rows = session.execute(
        select(LineItem.line_no, LineItem.id).join(PurchaseOrder, LineItem.po_id == PurchaseOrder.id)
        .where(PurchaseOrder.upload_id == upload_id)
    ).all()
    return dict(rows)


@dataclass(frozen=True)
class StoredLineMatch:
    """A recorded match with its line and any reviewer decision."""

    match: LineMatch
    decided_by: str | None
    decided_at: dt.datetime | None


def line_matches_for_upload(db: Database, upload_id: str) -> list[StoredLineMatch]:
    """The recorded matches of an upload's PO lines, in line order."""
    with db.session() as session:
        rows = session.execute(
            select(LineItem.line_no, LineMatchRow).join(LineMatchRow, LineMatchRow.line_item_id == LineItem.id)
            .where(LineMatchRow.upload_id == upload_id).order_by(LineItem.line_no)
        ).all()
    return [StoredLineMatch(match=_line_match(line_no, row), decided_by=row.decided_by, decided_at=row.decided_at)
            for line_no, row in rows]


def _line_match(line_no: int, row: LineMatchRow) -> LineMatch:
    return LineMatch(line_no=line_no, method=row.method, score=row.score, status=row.status,  # type: ignore[arg-type]
                     variant_gid=row.variant_gid, candidates=tuple(Candidate(**c) for c in row.candidates))


def approve_match(db: Database, upload_id: str, line_no: int, variant_gid: str, decided_by: str) -> LineMatch:
    """A reviewer's decision: this line is this variant of the merchant's catalog.

    The line's match becomes ``approved`` (method kept when the reviewer confirms the chosen variant,
    ``manual`` otherwise), and the supplier's SKU on the line is learned as this variant, so the supplier's
    next PO matches it by ``supplier_sku``. Raises ``LookupError`` for an unknown line or variant."""
    with db.session() as session:
        line, po = _line_and_po(session, upload_id, line_no)
        variant = session.scalar(select(CatalogVariantRow).where(
            CatalogVariantRow.merchant_id == po.merchant_id, CatalogVariantRow.variant_gid == variant_gid))
        if variant is None:
            raise LookupError(f"variant {variant_gid} is not in merchant {po.merchant_id}'s synced catalog")
        row = session.scalar(select(LineMatchRow).where(LineMatchRow.line_item_id == line.id))
        if row is None:
            row = LineMatchRow(line_item_id=line.id, upload_id=upload_id, method="manual", score=100.0,
                               status="unmatched", candidates=[])
            session.add(row)
        if row.variant_gid != variant_gid:
            row.method, row.score, row.variant_gid = "manual", 100.0, variant_gid
        row.status, row.decided_by, row.decided_at = "approved", decided_by, utcnow()
        session.flush()
        supplier = session.get(Supplier, po.supplier_id) if po.supplier_id is not None else None
        learn_supplier_sku(session.connection(), po.merchant_id, variant.shop_url,
                           supplier.name if supplier else None, line.sku, variant_gid, upload_id)
        return _line_match(line_no, row)


def _line_and_po(session: Session, upload_id: str, line_no: int) -> tuple[LineItem, PurchaseOrder]:
    found = session.execute(
        select(LineItem, PurchaseOrder).join(PurchaseOrder, LineItem.po_id == PurchaseOrder.id)
        .where(PurchaseOrder.upload_id == upload_id, LineItem.line_no == line_no)
    ).first()
    if found is None:
        raise LookupError(f"upload {upload_id} has no saved PO line {line_no}")
    return found[0], found[1]
