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
    builds these, with exactly these field names). ``updated_at`` is the product's ``updatedAt`` (UTC)."""

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
