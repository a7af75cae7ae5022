"""The shapes catalog matching works with: a Shopify variant of the merchant's catalog, and a line's match."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

Method = Literal["sku", "barcode", "supplier_sku", "fuzzy_title", "manual", "none"]
Status = Literal["matched", "ambiguous", "unmatched", "approved"]

#: Shopify's variant title when a product has a single variant: not part of the product's name.
DEFAULT_VARIANT_TITLE = "Default Title"


@dataclass(frozen=True)
class CatalogVariant:
    """One variant of the merchant's Shopify catalog, as a catalog page returns it (``ShopifyClient.catalog_page``
    builds these, with exactly these field names). ``updated_at`` is the variant's ``updatedAt`` (UTC)."""

    product_gid: str
    variant_gid: str
    inventory_item_gid: str | None
    sku: str | None
    barcode: str | None
    product_title: str
    variant_title: str | None
    vendor: str | None
    unit_cost: Decimal | None
    price: Decimal
    product_status: str  # ACTIVE | DRAFT | ARCHIVED
    updated_at: dt.datetime
    #: The variant's ``poflow.supplier_skus`` metafield: ``"supplier_key|supplier_sku_key"`` entries.
    supplier_skus: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return full_title(self)


def full_title(variant: CatalogVariant) -> str:
    """Product and variant title as one name (``Tee`` + ``Red / M``); Shopify's ``Default Title`` left out.
    A function, so variants of another class with the same fields (``shopify.client.CatalogVariant``) work too."""
    if not variant.variant_title or variant.variant_title == DEFAULT_VARIANT_TITLE:
        return variant.product_title
    return f"{variant.product_title} {variant.variant_title}"


class MatchableLine(Protocol):
    """What matching reads from a PO line: a ``POLine`` or a saved ``LineItem`` both qualify."""

    line_no: int
    sku: str | None
    description: str | None


@dataclass(frozen=True)
class Candidate:
    """A variant a line may be: how it was found and how sure (0–100)."""

    variant_gid: str
    sku: str | None
    title: str
    vendor: str | None
    score: float
    method: Method

    def to_json(self) -> dict[str, object]:
        return {"variant_gid": self.variant_gid, "sku": self.sku, "title": self.title, "vendor": self.vendor,
                "score": self.score, "method": self.method}


@dataclass(frozen=True)
class LineMatch:
    """What one PO line matched: ``variant_gid`` is set only when ``status`` is ``matched`` (or ``approved``).

    ``ambiguous`` lists every variant the line could equally be; ``unmatched`` may list near misses that a
    reviewer can pick from (below the threshold, never automatic)."""

    line_no: int
    method: Method
    score: float
    status: Status
    variant_gid: str | None = None
    candidates: tuple[Candidate, ...] = field(default=())


@dataclass(frozen=True)
class CatalogProduct:
    """A product's own fields (``ShopifyClient.catalog_products_page`` builds these with the same field names):
    what a product-level edit changes on every one of its variants' rows."""

    product_gid: str
    title: str
    vendor: str | None
    status: str
    updated_at: dt.datetime


#: One ``poflow.supplier_skus`` entry: a supplier key and one of its SKU keys (supplier keys hold no ``|``).
SUPPLIER_SKU_SEPARATOR = "|"


def supplier_sku_entry(supplier_key: str, supplier_sku_key: str) -> str:
    return f"{supplier_key}{SUPPLIER_SKU_SEPARATOR}{supplier_sku_key}"


def split_supplier_sku_entry(entry: str) -> tuple[str, str] | None:
    """``(supplier_key, supplier_sku_key)`` of an entry, or ``None`` for one that is not of that form."""
    supplier, separator, sku = entry.partition(SUPPLIER_SKU_SEPARATOR)
    return (supplier, sku) if separator and supplier and sku else None
