"""The learned supplier SKUs on the variants themselves: the ``poflow.supplier_skus`` metafield.

``supplier_sku_map`` (the app database) learns a supplier's SKU when a reviewer approves a match. The same entry is
written to the variant's metafield (type ``json``: a sorted list of ``"supplier_key|supplier_sku_key"``), so the map
lives in the shop too: the catalog sync reads the metafield back (``catalog_variants.supplier_skus``) and seeds the
entries a new app database, or another installation, lacks.

``write_supplier_sku_metafields`` writes every entry not written yet (``metafield_written_at`` ``NULL``): it reads
what the variants carry now, merges, writes only the variants whose value changes (``metafieldsSet``, 25 a call)
and then marks the entries. An entry re-learned for another variant is taken off the variant that had it. Running
it again writes nothing; a call that fails half way is finished by the next one (the merge finds what got there).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, select

from poflow_dagster.catalog.models import split_supplier_sku_entry, supplier_sku_entry
from poflow_dagster.catalog.store import supplier_skus_text
from poflow_dagster.shopify.client import (
    SUPPLIER_SKUS_KEY, SUPPLIER_SKUS_NAMESPACE, SUPPLIER_SKUS_TYPE, MetafieldInput, ShopifyClient,
)
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import CatalogVariantRow, SupplierSkuMap
from poflow_dagster.store.types import utcnow

_MAP = SupplierSkuMap.__table__
_VARIANTS = CatalogVariantRow.__table__


@dataclass(frozen=True)
class _Pending:
    id: int
    entry: str
    variant_gid: str


def write_supplier_sku_metafields(db: Database, client: ShopifyClient, merchant_id: str, shop_url: str) -> int:
    """Write the merchant's not-yet-written supplier SKUs of this shop to their variants' metafields; returns the
    entries written (an entry whose variant Shopify no longer has stays pending)."""
    pending = _pending(db, merchant_id, shop_url)
    if not pending:
        return 0
    target = {item.entry: item.variant_gid for item in pending}
    holders = _local_holders(db, merchant_id, shop_url, target)
    current = client.supplier_skus_of({*target.values(), *holders})
    wanted = {gid: set(values) for gid, values in current.items() if values is not None}
    for entry, gid in target.items():
        for other, values in wanted.items():
            (values.add if other == gid else values.discard)(entry)
    changed = sorted(gid for gid, values in wanted.items() if values != set(current[gid] or ()))
    client.set_metafields([_metafield(gid, wanted[gid]) for gid in changed])
    return _mark_written(db, merchant_id, shop_url, [item for item in pending if item.variant_gid in wanted],
                         {gid: wanted[gid] for gid in wanted})


def _pending(db: Database, merchant_id: str, shop_url: str) -> list[_Pending]:
    with db.session() as session:
        rows = session.execute(select(_MAP.c.id, _MAP.c.supplier_key, _MAP.c.supplier_sku_key, _MAP.c.variant_gid)
                               .where(_MAP.c.merchant_id == merchant_id, _MAP.c.shop_url == shop_url,
                                      _MAP.c.metafield_written_at.is_(None)).order_by(_MAP.c.id)).all()
    return [_Pending(row.id, supplier_sku_entry(row.supplier_key, row.supplier_sku_key), row.variant_gid)
            for row in rows]


def _local_holders(db: Database, merchant_id: str, shop_url: str, target: dict[str, str]) -> set[str]:
    """Variants whose synced metafield holds one of these entries while the entry now belongs to another."""
    with db.session() as session:
        rows = session.execute(select(_VARIANTS.c.variant_gid, _VARIANTS.c.supplier_skus).where(
            _VARIANTS.c.merchant_id == merchant_id, _VARIANTS.c.shop_url == shop_url,
            _VARIANTS.c.supplier_skus.is_not(None))).all()
    return {gid for gid, text in rows for entry in _entries(text) if target.get(entry, gid) != gid}


def _entries(text: str | None) -> list[str]:
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return [entry for entry in value if isinstance(entry, str) and split_supplier_sku_entry(entry)] \
        if isinstance(value, list) else []


def _metafield(variant_gid: str, entries: Iterable[str]) -> MetafieldInput:
    return MetafieldInput(owner_gid=variant_gid, namespace=SUPPLIER_SKUS_NAMESPACE, key=SUPPLIER_SKUS_KEY,
                          type=SUPPLIER_SKUS_TYPE, value=json.dumps(sorted(entries)))


def _mark_written(db: Database, merchant_id: str, shop_url: str, written: list[_Pending],
                  values: dict[str, set[str]]) -> int:
    """Mark the entries written (unless re-learned for another variant meanwhile) and keep the local copy of the
    variants' metafields as Shopify now has them."""
    now = utcnow()
    with db.session() as session:
        connection = session.connection()
        marked = 0
        if written:
            mark = _MAP.update().where(
                _MAP.c.id == bindparam("row_id"), _MAP.c.variant_gid == bindparam("gid"),
                _MAP.c.metafield_written_at.is_(None),
            ).values(metafield_written_at=now)
            for item in written:
                marked += connection.execute(mark, {"row_id": item.id, "gid": item.variant_gid}).rowcount or 0
        if values:
            copy = _VARIANTS.update().where(
                _VARIANTS.c.merchant_id == merchant_id, _VARIANTS.c.shop_url == shop_url,
                _VARIANTS.c.variant_gid == bindparam("gid"),
            ).values(supplier_skus=bindparam("skus"))
            connection.execute(copy, [{"gid": gid, "skus": supplier_skus_text(entries)}
                                      for gid, entries in sorted(values.items())])
    return marked
