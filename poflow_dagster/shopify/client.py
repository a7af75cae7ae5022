"""Our Shopify Admin GraphQL client (``httpx``), with a shared rate budget and the one Shopify retry layer.

Shopify is reached only through ``{shop_url}/admin/api/{version}/graphql.json`` with the
``X-Shopify-Access-Token`` header. Every response's ``extensions.cost.throttleStatus`` is read, kept in
:attr:`ShopifyClient.throttle` and reconciled into the shop's shared rate budget
(:mod:`poflow_dagster.shopify.rate_budget`); before each call the client reserves the call's expected
cost there and sleeps until the bucket should hold it. ``THROTTLED``/429 answers are retried within a
time budget, 502/503/504 and connection errors a bounded number of times (see :class:`ShopifyClient`).

Operations: ``productSet`` upserts (:meth:`ShopifyClient.product_set`; many at once through a bulk operation in
:mod:`poflow_dagster.shopify.bulk`), read-backs, the catalog read for incremental sync
(:meth:`~ShopifyClient.catalog_page`), variant updates, metafields, locations, inventory levels and idempotent
stock adjustments (:meth:`~ShopifyClient.adjust_inventory`).

Money is :class:`~decimal.Decimal` in Python and a decimal string on the wire, never a float.
The access token is never logged, repr'd or put in an error message.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import html
import json
import logging
import random
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, NamedTuple

import httpx

from poflow_dagster.config import DEFAULT_SHOPIFY_API_VERSION as DEFAULT_API_VERSION
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.rate_budget import Observation, RateBudget, shared_budget

__all__ = [
    "DEFAULT_API_VERSION",
    "AdjustmentResult",
    "AppliedChange",
    "CatalogPage",
    "CatalogVariant",
    "ClientStats",
    "InventoryChange",
    "InventoryLevel",
    "Location",
    "Metafield",
    "MetafieldInput",
    "VariantUpdate",
    "ProductInfo",
    "ProductSpec",
    "ShopifyAuthError",
    "ShopifyClient",
    "ShopifyError",
    "ShopifyGraphQLError",
    "ShopifyThrottledError",
    "ShopifyUnreachableError",
    "ShopifyUserError",
    "SyncedProduct",
    "ThrottleStatus",
    "VariantInfo",
    "handle_for_sku",
    "sku_search_query",
]

logger = logging.getLogger(__name__)

PRODUCT_STATUSES = frozenset({"ACTIVE", "ARCHIVED", "DRAFT"})
MAX_HANDLE_LENGTH = 255

#: The single option every poflow product has (Shopify's own default for one-variant products).
DEFAULT_OPTION_NAME = "Title"
DEFAULT_OPTION_VALUE = "Default Title"

_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
_DEFAULT_QUERY_COST = 10.0
#: How long THROTTLED answers are waited out before a call gives up (a long PO queues for minutes).
DEFAULT_THROTTLE_TIMEOUT = 900.0
#: Shopify refuses any single query whose requested cost exceeds this (``MAX_COST_EXCEEDED``).
SINGLE_QUERY_MAX_COST = 1000.0
#: ``productSet``'s dynamic cost since API 2025-10 (base + per variant; we send no files or metafields).
#: Only a first guess: what Shopify reports as ``requestedQueryCost`` is used from the first answer on.
PRODUCT_SET_BASE_COST = 10.0
PRODUCT_SET_VARIANT_COST = 0.2
#: Points one ``nodes(ids:)`` entry costs in the read-back query (the variant 1 + its product 1).
VARIANT_NODE_COST = 2.0
#: ``nodes(ids:)`` takes at most this many ids.
MAX_NODE_IDS = 250
#: Points one variant of a catalog page costs (the variant, its inventory item + unit cost, its product, its
#: ``poflow.supplier_skus`` metafield).
CATALOG_VARIANT_COST = 4.0
#: Points one product of a catalog products page costs (the product; its fields are scalars).
CATALOG_PRODUCT_COST = 1.0
#: The variant metafield holding the supplier SKUs learned for it: a JSON list of ``"supplier_key|sku_key"``.
SUPPLIER_SKUS_NAMESPACE = "poflow"
SUPPLIER_SKUS_KEY = "supplier_skus"
SUPPLIER_SKUS_TYPE = "json"
#: Points one ``nodes(ids:)`` entry costs in the inventory-levels query (item, level, quantities).
INVENTORY_NODE_COST = 3.0
#: ``metafieldsSet`` takes at most this many metafields per call; it costs 10 plus, per distinct owner,
#: the owner type's weight (products 4, variants 2).
MAX_METAFIELDS_PER_SET = 25
METAFIELDS_SET_BASE_COST = 10.0
METAFIELD_OWNER_COSTS = {"gid://shopify/Product/": 4.0, "gid://shopify/ProductVariant/": 2.0}
#: A reservation whose request is unanswered this long after the HTTP timeout is treated as charged.
_HOLD_SLACK_SECONDS = 5.0


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ShopifyError(PoflowError):
    """A Shopify failure with a stable ``code`` (see the subclasses for the codes we raise).

    ``errors`` keeps the raw GraphQL error objects (or ``userErrors``) when there were any.
    """

    def __init__(self, code: str, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(code, message)
        self.errors: list[dict[str, Any]] = list(errors or [])

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as ``cls(code, message)`` plus state (``Exception.args`` holds one string only)."""
        return (_rebuild_error, (self.__class__, self.code, self.message), self.__dict__)


def _rebuild_error(cls: type[ShopifyError], code: str, message: str) -> ShopifyError:
    error = cls.__new__(cls)
    ShopifyError.__init__(error, code, message)
    return error


class ShopifyAuthError(ShopifyError):
    """``shopify_auth_failed``: HTTP 401/403 or ``ACCESS_DENIED`` (bad token or missing scope)."""


class ShopifyUnreachableError(ShopifyError):
    """``shopify_unreachable``: connection errors / 502 / 503 / 504 persisted after all retries."""


class ShopifyThrottledError(ShopifyError):
    """``shopify_throttled``: still ``THROTTLED`` (or HTTP 429) after all retries."""


class ShopifyGraphQLError(ShopifyError):
    """``shopify_graphql_error``: a GraphQL error that is not throttling (bad query, bad variables, ...).

    Unexpected HTTP statuses raise the base class with code ``shopify_http_error``.
    """


class ShopifyUserError(ShopifyError):
    """``shopify_user_error``: a mutation answered with ``userErrors`` (Shopify refused the input)."""

    @property
    def user_errors(self) -> list[dict[str, Any]]:
        """The raw ``userErrors`` objects (``field``, ``message``, ``code``)."""
        return self.errors


# --------------------------------------------------------------------------------------------
# Value objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductSpec:
    """What one Shopify product (one variant) should look like.

    ``price`` is a :class:`Decimal` (``int``/``str`` are converted; ``float`` is refused).
    ``description`` is plain text and is sent HTML-escaped as ``descriptionHtml``.
    """

    sku: str
    title: str
    price: Decimal
    handle: str
    status: str = "DRAFT"
    description: str | None = None
    vendor: str | None = None
    barcode: str | None = None
    #: The inventory item's cost (what the merchant pays per unit), if known.
    unit_cost: Decimal | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sku, str) or not self.sku.strip():
            raise ValueError("ProductSpec.sku must be a non-empty string")
        if self.unit_cost is not None:
            object.__setattr__(self, "unit_cost", _to_decimal(self.unit_cost, what=f"unit cost of SKU {self.sku!r}"))
        if not isinstance(self.handle, str) or not self.handle:
            raise ValueError(f"ProductSpec.handle must be a non-empty string (SKU {self.sku!r})")
        object.__setattr__(self, "price", _to_decimal(self.price, what=f"price of SKU {self.sku!r}"))
        if self.price < 0:
            raise ValueError(f"price of SKU {self.sku!r} is negative: {self.price}")
        status = str(self.status).upper()
        if status not in PRODUCT_STATUSES:
            raise ValueError(f"ProductSpec.status must be one of {sorted(PRODUCT_STATUSES)}, got {self.status!r}")
        object.__setattr__(self, "status", status)

    @property
    def description_html(self) -> str | None:
        """``description`` as safe HTML (escaped, newlines kept as ``<br>``), or ``None``."""
        if self.description is None:
            return None
        return "<br>\n".join(html.escape(line) for line in self.description.splitlines())


@dataclass(frozen=True)
class SyncedProduct:
    """The outcome of one upsert: the Shopify ids and whether the product was new."""

    sku: str
    handle: str
    product_gid: str
    variant_gid: str
    created: bool


@dataclass(frozen=True)
class VariantInfo:
    """A variant as Shopify holds it (``title``, ``handle`` and status are the product's)."""

    sku: str
    price: Decimal
    product_gid: str
    variant_gid: str
    product_status: str
    title: str
    handle: str


@dataclass(frozen=True)
class ProductInfo:
    """A product as Shopify holds it, with its (first page of) variants."""

    product_gid: str
    handle: str
    title: str
    status: str
    variants: tuple[VariantInfo, ...]

    def variant_for_sku(self, sku: str) -> VariantInfo | None:
        """The variant whose SKU is exactly ``sku``, if any."""
        return next((v for v in self.variants if v.sku == sku), None)


@dataclass(frozen=True)
class CatalogVariant:
    """One variant of the merchant's catalog as Shopify holds it (money as Decimal, times in UTC)."""

    product_gid: str
    variant_gid: str
    inventory_item_gid: str
    sku: str | None
    barcode: str | None
    product_title: str
    variant_title: str
    vendor: str
    unit_cost: Decimal | None
    price: Decimal
    product_status: str
    updated_at: dt.datetime
    product_handle: str | None = None
    #: The variant's ``poflow.supplier_skus`` metafield (``"supplier_key|sku_key"`` entries; empty: none).
    supplier_skus: tuple[str, ...] = ()


@dataclass(frozen=True)
class CatalogProduct:
    """A product's own fields as the catalog keeps them (title, vendor and status are not variant fields)."""

    product_gid: str
    title: str
    vendor: str
    status: str
    handle: str | None
    updated_at: dt.datetime


class CatalogProductsPage(NamedTuple):
    """One page of :meth:`ShopifyClient.catalog_products_page`; ``next_cursor`` is ``None`` on the last page."""

    products: tuple[CatalogProduct, ...]
    next_cursor: str | None


class CatalogPage(NamedTuple):
    """One page of :meth:`ShopifyClient.catalog_page`; ``next_cursor`` is ``None`` on the last page.

    A named tuple, so it unpacks as ``variants, next_cursor`` (the catalog sync's ``FetchPage`` shape).
    """

    variants: tuple[CatalogVariant, ...]
    next_cursor: str | None


@dataclass(frozen=True)
class VariantUpdate:
    """What to change on one variant (``None``: leave as is). ``unit_cost`` is the inventory item's cost."""

    variant_gid: str
    price: Decimal | None = None
    barcode: str | None = None
    unit_cost: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("price", "unit_cost"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _to_decimal(value, what=f"{name} of {self.variant_gid}"))


@dataclass(frozen=True)
class MetafieldInput:
    """One metafield to set on a product or variant (``type`` as Shopify names it, value as a string)."""

    owner_gid: str
    namespace: str
    key: str
    type: str
    value: str


@dataclass(frozen=True)
class Metafield:
    """A metafield as Shopify stored it."""

    gid: str
    owner_gid: str
    namespace: str
    key: str
    type: str
    value: str


@dataclass(frozen=True)
class Location:
    """A shop location (where stock is held)."""

    gid: str
    name: str


@dataclass(frozen=True)
class InventoryLevel:
    """The quantities of one inventory item at one location."""

    available: int
    on_hand: int


@dataclass(frozen=True)
class InventoryChange:
    """One stock change: ``delta`` units of an inventory item at a location.

    ``change_from_quantity`` is the quantity we expect there before the change (Shopify refuses the
    whole adjustment with ``CHANGE_FROM_QUANTITY_STALE`` if it differs); ``None`` skips that check and must
    be chosen explicitly.
    """

    inventory_item_gid: str
    location_gid: str
    delta: int
    change_from_quantity: int | None
    ledger_document_uri: str | None = None


@dataclass(frozen=True)
class AppliedChange:
    """One quantity Shopify changed, with the quantity after the change."""

    inventory_item_gid: str
    location_gid: str
    name: str
    delta: int
    quantity_after: int | None


@dataclass(frozen=True)
class AdjustmentResult:
    """The outcome of :meth:`ShopifyClient.adjust_inventory` (the same for every retry of one key)."""

    group_gid: str
    changes: tuple[AppliedChange, ...]


@dataclass(frozen=True)
class ThrottleStatus:
    """The cost bucket as the last response reported it (``extensions.cost``)."""

    maximum_available: float
    currently_available: float
    restore_rate: float
    last_query_cost: float | None
    requested_query_cost: float | None = None
    actual_query_cost: float | None = None
    observed_at: float = field(default_factory=time.monotonic, compare=False)

    def available_at(self, when: float) -> float:
        """Points the bucket should hold at monotonic time ``when`` (it refills at ``restore_rate``)."""
        elapsed = max(0.0, when - self.observed_at)
        return min(self.maximum_available, self.currently_available + elapsed * self.restore_rate)


@dataclass
class ClientStats:
    """Counters for observability and tests (all responses, retries, pacing sleeps)."""

    requests: int = 0
    responses: int = 0
    cost_reports: int = 0
    throttled: int = 0
    retries: int = 0
    paced_sleeps: int = 0
    paced_seconds: float = 0.0
    #: Query cost Shopify charged (``extensions.cost.actualQueryCost``), summed over all answers.
    points: float = 0.0
    #: Seconds waited out after THROTTLED answers / HTTP 429 (on top of ``paced_seconds``).
    throttled_seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _to_decimal(value: object, *, what: str) -> Decimal:
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"{what} must be a Decimal (or int/str), not {type(value).__name__}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, (int, str)):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError(f"{what} is not a decimal number: {value!r}") from exc
    else:
        raise TypeError(f"{what} must be a Decimal (or int/str), not {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"{what} is not a finite number: {value!r}")
    return result


def money_to_wire(amount: Decimal) -> str:
    """A Decimal as Shopify's ``Money`` scalar (plain decimal string, no exponent)."""
    return format(amount, "f")


def money_from_wire(value: object) -> Decimal:
    """Shopify's ``Money`` (decimal string) as a Decimal; floats are parsed via ``str``."""
    if isinstance(value, float):
        value = repr(value)
    return _to_decimal(value, what="Shopify money value")


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def handle_for_sku(merchant_id: str, sku: str) -> str:
    """A stable, Shopify-valid product handle for a merchant's SKU.

    Lowercase ``[a-z0-9-]``, at most 255 characters: a readable slug of the SKU plus a 10-hex-digit
    hash of ``(merchant_id, sku)``, so SKUs that differ only in case or punctuation (``AB-1`` vs
    ``ab.1``) get different handles, and the same SKU always gets the same one.
    """
    digest = hashlib.sha256(f"{merchant_id}\x00{sku}".encode()).hexdigest()[:10]
    slug = _slug(sku) or "sku"
    slug = slug[: MAX_HANDLE_LENGTH - len(digest) - 1].strip("-") or "sku"
    return f"{slug}-{digest}"


def sku_search_query(sku: str) -> str:
    """The ``productVariants(query:)`` search for one SKU: ``sku:"..."`` with ``\\`` and ``"`` escaped.

    Quoting keeps spaces, colons and parentheses literal; Shopify search is still fuzzy, so callers
    must compare the returned SKUs exactly.
    """
    escaped = sku.replace("\\", "\\\\").replace('"', '\\"')
    return f'sku:"{escaped}"'


def _normalise_shop_url(shop_url: str) -> str:
    url = shop_url.strip().rstrip("/")
    if not url:
        raise ValueError("shop_url is empty")
    if "://" not in url:
        url = f"https://{url}"
    return url


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), ``None`` if absent/unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _error_code(error: dict[str, Any]) -> str | None:
    extensions = error.get("extensions")
    if isinstance(extensions, dict) and extensions.get("code") is not None:
        return str(extensions["code"])
    return None


def _throttle_status(payload: dict[str, Any]) -> ThrottleStatus | None:
    """``extensions.cost`` of one answer, or ``None`` when it has none (or an unreadable one)."""
    extensions = payload.get("extensions")
    cost = extensions.get("cost") if isinstance(extensions, dict) else None
    status = cost.get("throttleStatus") if isinstance(cost, dict) else None
    if not isinstance(cost, dict) or not isinstance(status, dict):
        return None
    try:
        requested = cost.get("requestedQueryCost")
        actual = cost.get("actualQueryCost")
        return ThrottleStatus(
            maximum_available=float(status["maximumAvailable"]),
            currently_available=float(status["currentlyAvailable"]),
            restore_rate=float(status["restoreRate"]),
            last_query_cost=float(actual) if actual is not None else (
                float(requested) if requested is not None else None
            ),
            requested_query_cost=float(requested) if requested is not None else None,
            actual_query_cost=float(actual) if actual is not None else None,
        )
    except (KeyError, TypeError, ValueError):
        logger.debug("unreadable extensions.cost in Shopify response: %r", cost)
        return None


def _describe_errors(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors[:5]:
        message = str(error.get("message", "unknown error"))
        code = _error_code(error)
        parts.append(f"{message} [{code}]" if code else message)
    if len(errors) > 5:
        parts.append(f"... and {len(errors) - 5} more")
    return "; ".join(parts)


def _describe_user_errors(mutation: str, user_errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in user_errors:
        path = error.get("field") or []
        where = ".".join(str(p) for p in path) if isinstance(path, list) else str(path)
        message = str(error.get("message", "invalid input"))
        parts.append(f"{where}: {message}" if where else message)
    return f"{mutation} refused the input: " + "; ".join(parts)


# --------------------------------------------------------------------------------------------
# GraphQL documents
# --------------------------------------------------------------------------------------------

PRODUCT_SET_MUTATION = """
mutation PoflowProductSet($identifier: ProductSetIdentifiers!, $input: ProductSetInput!) {
  productSet(synchronous: true, identifier: $identifier, input: $input) {
    product {
      id
      handle
      variants(first: 5) { nodes { id sku price } }
    }
    userErrors { field message code }
  }
}
"""

PRODUCT_BY_HANDLE_QUERY = """
query PoflowProductByHandle($handle: String!) {
  productByIdentifier(identifier: {handle: $handle}) {
    id
    handle
    title
    status
    variants(first: 10) { nodes { id sku price } }
  }
}
"""

VARIANTS_BY_SKU_QUERY = """
query PoflowVariantsBySku($query: String!, $after: String) {
  productVariants(first: 5, query: $query, after: $after) {
    nodes {
      id
      sku
      price
      product { id handle title status }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

VARIANT_NODES_QUERY = """
query PoflowVariantsByIds($ids: [ID!]!) {
  nodes(ids: $ids) {
    ... on ProductVariant {
      id
      sku
      price
      product { id handle title status }
    }
  }
}
"""

SHOP_QUERY = "query PoflowShop { shop { name } }"

_CATALOG_FIELDS = """
      id
      sku
      barcode
      title
      price
      updatedAt
      inventoryItem { id unitCost { amount currencyCode } }
      product { id title vendor status handle }
      supplierSkus: metafield(namespace: "%s", key: "%s") { value }
""" % (SUPPLIER_SKUS_NAMESPACE, SUPPLIER_SKUS_KEY)

CATALOG_QUERY = """
query PoflowCatalog($first: Int!, $after: String, $query: String) {
  productVariants(first: $first, after: $after, query: $query, sortKey: ID) {
    nodes {%s}
    pageInfo { hasNextPage endCursor }
  }
}
""" % _CATALOG_FIELDS

#: Products updated since a moment: product-level edits (title, vendor, status) need not touch the variants'
#: ``updatedAt``, so the variants query alone would miss them (``catalog.sync`` runs both).
CATALOG_PRODUCTS_QUERY = """
query PoflowCatalogProducts($first: Int!, $after: String, $query: String) {
  products(first: $first, after: $after, query: $query) {
    nodes { id title vendor status handle updatedAt }
    pageInfo { hasNextPage endCursor }
  }
}
"""

#: The ``poflow.supplier_skus`` metafield of variants by id (what is there before a merge).
SUPPLIER_SKUS_QUERY = """
query PoflowSupplierSkus($ids: [ID!]!) {
  nodes(ids: $ids) {
    ... on ProductVariant { id supplierSkus: metafield(namespace: "%s", key: "%s") { value } }
  }
}
""" % (SUPPLIER_SKUS_NAMESPACE, SUPPLIER_SKUS_KEY)

VARIANTS_BULK_UPDATE_MUTATION = """
mutation PoflowVariantsUpdate($productId: ID!, $variants: [ProductVariantsBulkInput!]!) {
  productVariantsBulkUpdate(productId: $productId, variants: $variants) {
    productVariants {%s}
    userErrors { field message code }
  }
}
""" % _CATALOG_FIELDS

METAFIELDS_SET_MUTATION = """
mutation PoflowMetafieldsSet($metafields: [MetafieldsSetInput!]!) {
  metafieldsSet(metafields: $metafields) {
    metafields { id namespace key type value }
    userErrors { field message code elementIndex }
  }
}
"""

LOCATIONS_QUERY = """
query PoflowLocations($after: String) {
  locations(first: 50, after: $after) { nodes { id name } pageInfo { hasNextPage endCursor } }
}
"""

INVENTORY_LEVELS_QUERY = """
query PoflowInventoryLevels($ids: [ID!]!, $locationId: ID!) {
  nodes(ids: $ids) {
    ... on InventoryItem {
      id
      inventoryLevel(locationId: $locationId) { quantities(names: ["available", "on_hand"]) { name quantity } }
    }
  }
}
"""

INVENTORY_ADJUST_MUTATION = """
mutation PoflowInventoryAdjust($input: InventoryAdjustQuantitiesInput!, $key: String!) {
  inventoryAdjustQuantities(input: $input) @idempotent(key: $key) {
    inventoryAdjustmentGroup {
      id
      changes { name delta quantityAfterChange item { id } location { id } }
    }
    userErrors { field message code }
  }
}
"""


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class ShopifyClient:
    """A thread-safe Shopify Admin GraphQL client for one shop; the one owner of Shopify retries.

    Every call first reserves its expected cost in the shop's shared :mod:`rate budget
    <poflow_dagster.shopify.rate_budget>` (one per shop across threads, clients and processes) and sleeps
    until the budget covers it; every answer's ``throttleStatus`` is reconciled into that budget.

    Retries, all here (ops and the stage runner do not retry Shopify again):

    * ``THROTTLED`` answers and HTTP 429 are retried for as long as ``throttle_timeout`` seconds allow,
      each time waiting for the restore time the answer implies (missing points / restore rate, behind
      every request already queued for the shop; ``Retry-After`` for 429). They give up only when the
      next wait would end past that time budget: :class:`ShopifyThrottledError`.
    * Connection errors and HTTP 502/503/504 are tried ``max_attempts`` times in all, with exponential
      backoff from ``backoff_base`` (capped at ``max_backoff``; ``Retry-After`` wins when present):
      then :class:`ShopifyUnreachableError`.

    ``pacing=False`` skips the budget (each THROTTLED answer is then waited out on its own numbers);
    ``budget`` replaces the shop's shared budget (tests, benchmarks).
    """

    def __init__(
        self,
        shop_url: str,
        access_token: str,
        api_version: str = DEFAULT_API_VERSION,
        *,
        timeout: float = 30.0,
        max_attempts: int = 10,
        backoff_base: float = 0.5,
        max_backoff: float = 30.0,
        throttle_timeout: float = DEFAULT_THROTTLE_TIMEOUT,
        pacing: bool = True,
        budget: RateBudget | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.shop_url = _normalise_shop_url(shop_url)
        self.api_version = api_version
        self.endpoint = f"{self.shop_url}/admin/api/{api_version}/graphql.json"
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.max_backoff = max_backoff
        self.throttle_timeout = throttle_timeout
        self.pacing = pacing
        self.budget: RateBudget = budget if budget is not None else shared_budget(self.shop_url)
        self.throttle: ThrottleStatus | None = None
        self.stats = ClientStats()
        self._sleep: Callable[[float], None] = time.sleep
        self._lock = threading.Lock()
        self._cost_by_query: dict[str, float] = {}
        # The token lives only in the httpx client's default headers (never on ``self``).
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            headers={
                "X-Shopify-Access-Token": access_token,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "poflow-shopify-client/1",
            },
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"ShopifyClient(shop_url={self.shop_url!r}, api_version={self.api_version!r})"

    __str__ = __repr__

    def __enter__(self) -> ShopifyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying HTTP connection pool (idempotent)."""
        self._http.close()

    def max_query_cost(self) -> float:
        """The most one query may cost here: Shopify's single-query limit, or a smaller bucket."""
        status = self.throttle
        if status is not None:
            return min(SINGLE_QUERY_MAX_COST, status.maximum_available)
        try:  # this client has no answer yet: the shop's shared budget may know the bucket already
            shared = self.budget.state()
        except Exception:  # noqa: BLE001 - a guess is enough; Shopify's MAX_COST_EXCEEDED corrects it
            return SINGLE_QUERY_MAX_COST
        return min(SINGLE_QUERY_MAX_COST, shared.maximum) if shared.known and shared.maximum > 0 else SINGLE_QUERY_MAX_COST

    # -- raw GraphQL ---------------------------------------------------------------------------

    def execute(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        expected_cost: float | None = None,
        first_guess: float | None = None,
        max_attempts: int | None = None,
    ) -> dict[str, Any]:
        """Run one GraphQL document and return its ``data`` (retrying as the class docstring says).

        The call reserves ``expected_cost`` points if given, else what this query cost last time, else
        ``first_guess`` (default 10). ``max_attempts`` overrides the client's for connection errors and
        502/503/504 (``1`` for a mutation that is not safe to send twice: the caller checks, then retries).

        Raises :class:`ShopifyUserError` when any top-level mutation payload carries
        ``userErrors``, :class:`ShopifyGraphQLError` for other GraphQL errors,
        :class:`ShopifyAuthError` for 401/403, :class:`ShopifyThrottledError` when the throttle time
        budget is spent and :class:`ShopifyUnreachableError` when ``max_attempts`` are used up.
        """
        body_bytes = json.dumps(
            {"query": query, "variables": variables or {}}, default=_json_default
        ).encode("utf-8")
        deadline = time.monotonic() + self.throttle_timeout
        failures = 0
        while True:
            cost = expected_cost if expected_cost is not None else self._expected_cost(query, first_guess)
            reservation = self._acquire(cost, deadline)
            kind, outcome, wait = self._attempt(query, body_bytes, cost, failures + 1, reservation)
            if kind is None:
                assert isinstance(outcome, dict)  # _attempt returns normally only with data
                return outcome
            assert isinstance(outcome, str)
            if kind == "throttled":
                if time.monotonic() + wait > deadline:
                    raise ShopifyThrottledError(
                        "shopify_throttled", f"{outcome} for longer than {self.throttle_timeout:g}s (gave up)"
                    )
            else:
                failures += 1
                if failures >= (max_attempts or self.max_attempts):
                    plural = "s" if failures > 1 else ""
                    raise ShopifyUnreachableError(
                        "shopify_unreachable", f"{outcome} (gave up after {failures} attempt{plural})"
                    )
            with self._lock:
                self.stats.retries += 1
                if kind == "throttled":
                    self.stats.throttled_seconds += wait
            logger.info("Shopify %s; retrying in %.2fs", outcome, wait)
            if wait > 0:
                self._sleep(wait)

    def _acquire(self, cost: float, deadline: float) -> str | None:
        """Reserve ``cost`` in the shop's budget and sleep until it is covered; the reservation id."""
        if not self.pacing:
            return None
        hold = self.timeout + _HOLD_SLACK_SECONDS
        while True:
            grant = self.budget.reserve(cost, hold=hold)
            if grant.reservation is not None and grant.wait <= 0:
                return grant.reservation
            self._paced_sleep(grant.wait, deadline, grant.reservation)
            if grant.reservation is None:
                continue  # the shop's first request is still out: ask again
            while (extra := self.budget.confirm(grant.reservation, hold=hold)) > 0:
                self._paced_sleep(extra, deadline, grant.reservation)  # sent late: the bucket is not ready yet
            return grant.reservation

    def _paced_sleep(self, seconds: float, deadline: float, reservation: str | None) -> None:
        """Sleep for the budget, or give up (releasing the reservation) if that ends past ``deadline``."""
        if time.monotonic() + seconds > deadline:
            if reservation is not None:
                self.budget.release(reservation)
            raise ShopifyThrottledError(
                "shopify_throttled",
                f"the rate budget of {self.shop_url} needs {seconds:.1f}s more, past the "
                f"{self.throttle_timeout:g}s throttle budget (gave up)",
            )
        with self._lock:
            self.stats.paced_sleeps += 1
            self.stats.paced_seconds += seconds
        logger.debug("pacing Shopify calls: sleeping %.3fs", seconds)
        self._sleep(seconds)

    def _attempt(
        self, query: str, body: bytes, cost: float, attempt: int, reservation: str | None
    ) -> tuple[str | None, dict[str, Any] | str, float]:
        """One HTTP round trip: ``(None, data, 0)`` on success, ``(kind, problem, wait)`` to retry.

        The reservation always ends here: reconciled with the answer's cost report, or released.
        """
        reconciled = False
        try:
            with self._lock:
                self.stats.requests += 1
            try:
                response = self._http.post(self.endpoint, content=body)
            except httpx.TransportError as exc:
                return "unreachable", f"cannot reach {self.endpoint} ({type(exc).__name__})", self._backoff(attempt)
            with self._lock:
                self.stats.responses += 1
            payload = _json_or_none(response)
            if isinstance(payload, dict):
                reconciled = self._observe(query, payload, reservation)
            return self._judge(response, payload, cost, attempt)
        finally:
            if reservation is not None and not reconciled:
                self.budget.release(reservation)

    def _judge(
        self, response: httpx.Response, payload: Any, cost: float, attempt: int
    ) -> tuple[str | None, dict[str, Any] | str, float]:
        """What one answer means: data, a retry (kind, problem, wait), or a final error (raised)."""
        status = response.status_code
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        if status in (401, 403):
            raise ShopifyAuthError(
                "shopify_auth_failed",
                f"Shopify rejected the access token for {self.shop_url} (HTTP {status})",
            )
        if status in _RETRYABLE_HTTP:
            if status == 429:
                with self._lock:
                    self.stats.throttled += 1
                wait = retry_after if retry_after is not None else self._backoff(attempt)
                return "throttled", f"HTTP 429 from {self.endpoint}", min(wait, self.max_backoff)
            wait = retry_after if retry_after is not None else self._backoff(attempt)
            return "unreachable", f"HTTP {status} from {self.endpoint}", min(wait, self.max_backoff)
        if status >= 400 or not isinstance(payload, dict):
            snippet = " ".join(response.text.split())[:200]
            raise ShopifyError(
                "shopify_http_error",
                f"unexpected HTTP {status} from {self.endpoint}: {snippet or '(empty body)'}",
            )
        errors = payload.get("errors")
        if errors:
            if not isinstance(errors, list):
                # Shopify uses a bare string / object for some transport-level refusals.
                raise ShopifyGraphQLError("shopify_graphql_error", f"Shopify error: {errors}")
            error_dicts = [e if isinstance(e, dict) else {"message": str(e)} for e in errors]
            codes = {_error_code(e) for e in error_dicts}
            if "THROTTLED" in codes:
                with self._lock:
                    self.stats.throttled += 1
                # With pacing, the next reservation waits for the restore time the answer implies.
                wait = 0.0 if self.pacing else self._throttle_wait(payload, cost)
                return "throttled", f"THROTTLED by {self.shop_url}", wait
            if "ACCESS_DENIED" in codes:
                raise ShopifyAuthError(
                    "shopify_auth_failed", f"Shopify denied access: {_describe_errors(error_dicts)}", errors=error_dicts
                )
            raise ShopifyGraphQLError(
                "shopify_graphql_error", f"GraphQL error: {_describe_errors(error_dicts)}", errors=error_dicts
            )
        data = payload.get("data")
        if not isinstance(data, dict):
            raise ShopifyGraphQLError("shopify_graphql_error", "Shopify answered without data or errors")
        _raise_user_errors(data)
        return None, data, 0.0

    # -- cost accounting -----------------------------------------------------------------------

    def _expected_cost(self, query: str, first_guess: float | None = None) -> float:
        with self._lock:
            known = self._cost_by_query.get(query)
        if known is not None:
            return known
        return first_guess if first_guess is not None else _DEFAULT_QUERY_COST

    def _observe(self, query: str, payload: dict[str, Any], reservation: str | None) -> bool:
        """Read ``extensions.cost`` of one answer into :attr:`throttle` and the shop's budget.

        Returns whether the reservation was reconciled (``False``: no readable cost report).
        """
        snapshot = _throttle_status(payload)
        if snapshot is None:
            return False
        with self._lock:
            self.throttle = snapshot
            self.stats.cost_reports += 1
            self.stats.points += snapshot.actual_query_cost or 0.0
            if snapshot.requested_query_cost is not None and snapshot.requested_query_cost > 0:
                self._cost_by_query[query] = snapshot.requested_query_cost
        if reservation is None:
            return False
        self.budget.observe(
            reservation,
            Observation(
                available=snapshot.currently_available,
                maximum=snapshot.maximum_available,
                restore_rate=snapshot.restore_rate,
                charged=snapshot.actual_query_cost,
            ),
        )
        return True

    def _throttle_wait(self, payload: dict[str, Any], cost: float) -> float:
        """Unpaced callers: the missing points over the restore rate, as the THROTTLED answer says."""
        status = _throttle_status(payload) or self.throttle
        if status is None or status.restore_rate <= 0:
            return self._backoff(1)
        requested = status.requested_query_cost if status.requested_query_cost is not None else cost
        missing = max(0.0, requested - status.currently_available)
        # A little jitter so parallel workers don't all wake in the same millisecond.
        wait = missing / status.restore_rate
        return wait + random.uniform(0.0, 0.05 * max(wait, 0.01)) + 0.001

    def _backoff(self, attempt: int) -> float:
        base = self.backoff_base * (2 ** max(0, attempt - 1))
        return min(self.max_backoff, base + random.uniform(0.0, self.backoff_base / 2))

    # -- products ------------------------------------------------------------------------------

    def check_connection(self) -> str:
        """The shop's name (cheap query proving URL, token and API version work)."""
        data = self.execute(SHOP_QUERY)
        return str((data.get("shop") or {}).get("name", ""))

    def get_product(self, handle: str) -> ProductInfo | None:
        """The product with this handle (``productByIdentifier``), or ``None``."""
        data = self.execute(PRODUCT_BY_HANDLE_QUERY, {"handle": handle})
        node = data.get("productByIdentifier")
        if not node:
            return None
        variants = tuple(
            VariantInfo(
                sku=str(v.get("sku") or ""),
                price=money_from_wire(v["price"]),
                product_gid=node["id"],
                variant_gid=v["id"],
                product_status=str(node["status"]),
                title=str(node["title"]),
                handle=str(node["handle"]),
            )
            for v in (node.get("variants") or {}).get("nodes", [])
        )
        return ProductInfo(
            product_gid=node["id"],
            handle=str(node["handle"]),
            title=str(node["title"]),
            status=str(node["status"]),
            variants=variants,
        )

    def product_set(self, spec: ProductSpec, *, known_product_gid: str | None = None) -> SyncedProduct:
        """Create or update the product ``spec.handle``: one ``productSet`` (synchronous, by handle).

        Idempotent: the same spec twice leaves one product with one variant (productSet matches the
        existing variant by its option value, so it is updated in place). Nothing is read first; the
        ids come from productSet's own answer. Shopify does not say whether it created the product, so
        ``created`` is judged against what the caller already knew: ``known_product_gid`` is the product
        the caller recorded for this handle (``None``: none), and the product counts as created unless
        Shopify answered with exactly that one.
        """
        product_input = product_set_input(spec)
        data = self.execute(
            PRODUCT_SET_MUTATION,
            {"identifier": {"handle": spec.handle}, "input": product_input},
            first_guess=PRODUCT_SET_BASE_COST + PRODUCT_SET_VARIANT_COST * len(product_input["variants"]),
        )
        return synced_product(spec, (data.get("productSet") or {}).get("product"), known_product_gid)

    def variants_by_ids(self, variant_gids: list[str]) -> dict[str, VariantInfo | None]:
        """Variants by GID with their product's handle, title and status: one ``nodes(ids:)`` query.

        At most :data:`MAX_NODE_IDS` ids; a GID Shopify no longer knows maps to ``None``. Costs about
        :data:`VARIANT_NODE_COST` points per id.
        """
        ids = list(dict.fromkeys(variant_gids))
        if not ids:
            return {}
        if len(ids) > MAX_NODE_IDS:
            raise ValueError(f"nodes(ids:) takes at most {MAX_NODE_IDS} ids, got {len(ids)}")
        data = self.execute(VARIANT_NODES_QUERY, {"ids": ids}, expected_cost=VARIANT_NODE_COST * len(ids))
        found: dict[str, VariantInfo | None] = dict.fromkeys(ids)
        for node in data.get("nodes") or []:
            if not node or not node.get("id") or "product" not in node:
                continue
            found[str(node["id"])] = _variant_from_node(node)
        return found

    def find_variant_by_sku(self, sku: str, *, max_pages: int = 4) -> VariantInfo | None:
        """The variant whose SKU is exactly ``sku`` (``productVariants(query: "sku:...")``).

        Shopify search is fuzzy, so results are filtered for an exact, case-sensitive match,
        following up to ``max_pages`` pages of 5 if the first ones hold only near misses.
        """
        query = sku_search_query(sku)
        after: str | None = None
        for _ in range(max(1, max_pages)):
            data = self.execute(VARIANTS_BY_SKU_QUERY, {"query": query, "after": after})
            connection = data.get("productVariants") or {}
            for node in connection.get("nodes") or []:
                if node.get("sku") == sku:
                    return _variant_from_node(node)
            page = connection.get("pageInfo") or {}
            if not page.get("hasNextPage") or not page.get("endCursor"):
                return None
            after = str(page["endCursor"])
        return None

    # -- catalog -------------------------------------------------------------------------------

    def catalog_page(
        self, updated_after: dt.datetime | None = None, after: str | None = None, first: int = 250
    ) -> CatalogPage:
        """One page of the shop's variants, oldest id first, for an incremental catalog sync.

        ``updated_after`` keeps variants updated at or after that instant (Shopify's ``updatedAt`` has whole
        seconds, so the bound is inclusive: a variant updated in the same second as the last sync is read
        again rather than missed). Pass ``next_cursor`` as ``after`` until it is ``None``. A page of 250 costs
        ``2 + 250 x`` :data:`CATALOG_VARIANT_COST` points (752), under the single-query limit; a shop whose
        bucket is smaller gets smaller pages (``first`` is lowered to what one query may cost there).
        """
        if not 1 <= first <= MAX_NODE_IDS:
            raise ValueError(f"first must be between 1 and {MAX_NODE_IDS}, got {first}")
        first = max(1, min(first, int((self.max_query_cost() - 2) // CATALOG_VARIANT_COST)))
        variables = {"first": first, "after": after, "query": catalog_search_query(updated_after)}
        data = self.execute(CATALOG_QUERY, variables, expected_cost=2 + first * CATALOG_VARIANT_COST)
        connection = data.get("productVariants") or {}
        page = connection.get("pageInfo") or {}
        return CatalogPage(
            variants=tuple(_catalog_variant(node) for node in connection.get("nodes") or []),
            next_cursor=str(page["endCursor"]) if page.get("hasNextPage") and page.get("endCursor") else None,
        )

    def catalog_products_page(
        self, updated_after: dt.datetime | None = None, after: str | None = None, first: int = 250
    ) -> CatalogProductsPage:
        """One page of the shop's products updated at or after ``updated_after`` (all when ``None``), with their
        own fields only (``2 + first`` points). The catalog sync's second incremental step: a product's title,
        vendor or status edited in the admin changes the product's ``updatedAt``, not its variants'."""
        if not 1 <= first <= MAX_NODE_IDS:
            raise ValueError(f"first must be between 1 and {MAX_NODE_IDS}, got {first}")
        variables = {"first": first, "after": after, "query": catalog_search_query(updated_after)}
        data = self.execute(CATALOG_PRODUCTS_QUERY, variables, expected_cost=2 + first * CATALOG_PRODUCT_COST)
        connection = data.get("products") or {}
        page = connection.get("pageInfo") or {}
        return CatalogProductsPage(
            products=tuple(_catalog_product(node) for node in connection.get("nodes") or []),
            next_cursor=str(page["endCursor"]) if page.get("hasNextPage") and page.get("endCursor") else None,
        )

    def supplier_skus_of(self, variant_gids: Iterable[str]) -> dict[str, tuple[str, ...] | None]:
        """The ``poflow.supplier_skus`` entries each variant carries now (up to 250 ids a request); ``None`` for a
        variant Shopify no longer has."""
        gids = sorted(set(variant_gids))
        found: dict[str, tuple[str, ...] | None] = {}
        for start in range(0, len(gids), MAX_NODE_IDS):
            batch = gids[start:start + MAX_NODE_IDS]
            nodes = self.execute(SUPPLIER_SKUS_QUERY, {"ids": batch}, expected_cost=len(batch) * 2.0)["nodes"]
            for gid, node in zip(batch, nodes, strict=True):
                found[gid] = None if node is None else supplier_skus_from_wire(node.get("supplierSkus"))
        return found

    def update_variants(self, product_gid: str, updates: list[VariantUpdate]) -> list[CatalogVariant]:
        """Change price, barcode and/or unit cost of variants of one product (``productVariantsBulkUpdate``).

        All or nothing: an unknown variant raises :class:`ShopifyUserError` and changes none. Setting the
        values a variant already has changes nothing (not even its ``updatedAt``). Returns the variants as
        Shopify holds them afterwards, in the order given.
        """
        if not updates:
            return []
        data = self.execute(
            VARIANTS_BULK_UPDATE_MUTATION,
            {"productId": product_gid, "variants": [_variant_update_input(u) for u in updates]},
        )
        nodes = (data.get("productVariantsBulkUpdate") or {}).get("productVariants") or []
        return [_catalog_variant(node) for node in nodes]

    def set_metafields(self, metafields: list[MetafieldInput]) -> list[Metafield]:
        """Create or update metafields (``metafieldsSet``, :data:`MAX_METAFIELDS_PER_SET` a call).

        Each call is atomic on Shopify; a refusal raises :class:`ShopifyUserError` (earlier calls of a long
        list stay applied, and setting them again is harmless: the same values change nothing).
        """
        stored: list[Metafield] = []
        for start in range(0, len(metafields), MAX_METAFIELDS_PER_SET):
            chunk = metafields[start:start + MAX_METAFIELDS_PER_SET]
            data = self.execute(METAFIELDS_SET_MUTATION, {"metafields": [
                {"ownerId": m.owner_gid, "namespace": m.namespace, "key": m.key, "type": m.type, "value": m.value}
                for m in chunk
            ]}, expected_cost=metafields_set_cost(m.owner_gid for m in chunk))
            nodes = (data.get("metafieldsSet") or {}).get("metafields") or []
            stored.extend(
                Metafield(gid=str(n["id"]), owner_gid=m.owner_gid, namespace=str(n["namespace"]), key=str(n["key"]),
                          type=str(n["type"]), value=str(n["value"]))
                for m, n in zip(chunk, nodes)
            )
        return stored

    # -- inventory -----------------------------------------------------------------------------

    def locations(self) -> list[Location]:
        """The shop's active locations."""
        found: list[Location] = []
        after: str | None = None
        while True:
            connection = self.execute(LOCATIONS_QUERY, {"after": after}).get("locations") or {}
            found.extend(Location(gid=str(n["id"]), name=str(n["name"])) for n in connection.get("nodes") or [])
            page = connection.get("pageInfo") or {}
            if not page.get("hasNextPage") or not page.get("endCursor"):
                return found
            after = str(page["endCursor"])

    def inventory_levels(self, inventory_item_gids: list[str], location_gid: str) -> dict[str, InventoryLevel | None]:
        """``available``/``on_hand`` of inventory items at one location (``None``: unknown item, or not
        stocked there), in ``nodes(ids:)`` queries of at most 250 ids that fit the query cost limit."""
        ids = list(dict.fromkeys(inventory_item_gids))
        levels: dict[str, InventoryLevel | None] = dict.fromkeys(ids)
        size = max(1, min(MAX_NODE_IDS, int(self.max_query_cost() // INVENTORY_NODE_COST)))
        for start in range(0, len(ids), size):
            chunk = ids[start:start + size]
            data = self.execute(INVENTORY_LEVELS_QUERY, {"ids": chunk, "locationId": location_gid},
                                expected_cost=INVENTORY_NODE_COST * len(chunk))
            for node in data.get("nodes") or []:
                level = (node or {}).get("inventoryLevel")
                if level:
                    quantities = {q["name"]: int(q["quantity"]) for q in level.get("quantities") or []}
                    levels[str(node["id"])] = InventoryLevel(quantities["available"], quantities["on_hand"])
        return levels

    def adjust_inventory(
        self,
        changes: list[InventoryChange],
        *,
        reason: str,
        idempotency_key: str,
        reference_uri: str | None = None,
        name: str = "available",
    ) -> AdjustmentResult:
        """Apply stock changes once (``inventoryAdjustQuantities`` with ``@idempotent(key:)``).

        Every retry of this call (after a network error, 5xx or throttling) sends the same body, hence the
        same ``idempotency_key``: Shopify applies the changes once and answers retries with the first
        result. The caller must keep the key for one logical adjustment (e.g. derived from the receipt) and
        use a new key for a new one; the same key with other changes raises :class:`ShopifyUserError`
        (``IDEMPOTENCY_KEY_PARAMETER_MISMATCH``), as does a stale ``change_from_quantity``
        (``CHANGE_FROM_QUANTITY_STALE``, nothing applied).
        """
        if not idempotency_key or not idempotency_key.strip():
            raise ValueError("adjust_inventory needs a non-empty idempotency_key")
        if not changes:
            raise ValueError("adjust_inventory needs at least one change")
        adjustment: dict[str, Any] = {"reason": reason, "name": name, "changes": [
            {"inventoryItemId": c.inventory_item_gid, "locationId": c.location_gid, "delta": c.delta,
             "changeFromQuantity": c.change_from_quantity,
             **({"ledgerDocumentUri": c.ledger_document_uri} if c.ledger_document_uri else {})}
            for c in changes
        ]}
        if reference_uri is not None:
            adjustment["referenceDocumentUri"] = reference_uri
        data = self.execute(INVENTORY_ADJUST_MUTATION, {"input": adjustment, "key": idempotency_key})
        group = (data.get("inventoryAdjustQuantities") or {}).get("inventoryAdjustmentGroup")
        if not group:
            raise ShopifyGraphQLError("shopify_graphql_error", "inventoryAdjustQuantities returned no adjustment group")
        return AdjustmentResult(
            group_gid=str(group["id"]),
            changes=tuple(
                AppliedChange(
                    inventory_item_gid=str((c.get("item") or {}).get("id", "")),
                    location_gid=str((c.get("location") or {}).get("id", "")),
                    name=str(c["name"]),
                    delta=int(c["delta"]),
                    quantity_after=None if c.get("quantityAfterChange") is None else int(c["quantityAfterChange"]),
                )
                for c in group.get("changes") or []
            ),
        )


def metafields_set_cost(owner_gids: Iterable[str]) -> float:
    """What one ``metafieldsSet`` costs: 10 plus each distinct owner's weight."""
    weights = (next((w for p, w in METAFIELD_OWNER_COSTS.items() if gid.startswith(p)), 0.0) for gid in set(owner_gids))
    return METAFIELDS_SET_BASE_COST + sum(weights)


def catalog_search_query(updated_after: dt.datetime | None) -> str | None:
    """The ``productVariants(query:)`` for variants updated at or after ``updated_after`` (``None``: all).

    The instant is sent in UTC, truncated to the second (inclusive, so nothing updated in that second is
    missed). A naive datetime is refused.
    """
    if updated_after is None:
        return None
    if updated_after.tzinfo is None:
        raise ValueError("updated_after must be timezone-aware")
    stamp = updated_after.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"updated_at:>='{stamp}'"


def _utc_from_wire(value: object) -> dt.datetime:
    """Shopify's ``DateTime`` (``2026-01-01T00:00:00Z``) as an aware UTC datetime."""
    when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


def supplier_skus_from_wire(metafield: dict[str, Any] | None) -> tuple[str, ...]:
    """A ``poflow.supplier_skus`` metafield's entries, sorted and unique; an absent or unreadable value (someone
    edited it by hand) has none."""
    if not metafield or metafield.get("value") is None:
        return ()
    try:
        value = json.loads(str(metafield["value"]))
    except ValueError:
        return ()
    if not isinstance(value, list):
        return ()
    return tuple(sorted({entry for entry in value if isinstance(entry, str) and "|" in entry}))


def _catalog_product(node: dict[str, Any]) -> CatalogProduct:
    return CatalogProduct(
        product_gid=str(node["id"]), title=str(node.get("title") or ""), vendor=str(node.get("vendor") or ""),
        status=str(node.get("status") or ""), handle=node.get("handle"), updated_at=_utc_from_wire(node["updatedAt"]),
    )


def _catalog_variant(node: dict[str, Any]) -> CatalogVariant:
    """A ``ProductVariant`` answer with the catalog fields as a :class:`CatalogVariant`."""
    product = node.get("product") or {}
    item = node.get("inventoryItem") or {}
    cost = item.get("unitCost")
    return CatalogVariant(
        product_gid=str(product.get("id", "")),
        variant_gid=str(node["id"]),
        inventory_item_gid=str(item.get("id", "")),
        sku=node.get("sku"),
        barcode=node.get("barcode"),
        product_title=str(product.get("title", "")),
        variant_title=str(node.get("title", "")),
        vendor=str(product.get("vendor") or ""),
        unit_cost=money_from_wire(cost["amount"]) if cost else None,
        price=money_from_wire(node["price"]),
        product_status=str(product.get("status", "")),
        updated_at=_utc_from_wire(node["updatedAt"]),
        product_handle=product.get("handle"),
        supplier_skus=supplier_skus_from_wire(node.get("supplierSkus")),
    )


def _variant_update_input(update: VariantUpdate) -> dict[str, Any]:
    variant: dict[str, Any] = {"id": update.variant_gid}
    if update.price is not None:
        variant["price"] = money_to_wire(update.price)
    if update.barcode is not None:
        variant["barcode"] = update.barcode
    if update.unit_cost is not None:
        variant["inventoryItem"] = {"cost": money_to_wire(update.unit_cost)}
    return variant


def synced_product(spec: ProductSpec, product: dict[str, Any] | None, known_product_gid: str | None) -> SyncedProduct:
    """productSet's ``product`` answer (``id handle variants { nodes { id sku } }``) for ``spec``."""
    if not product:
        raise ShopifyGraphQLError("shopify_graphql_error", f"productSet returned no product for SKU {spec.sku!r}")
    nodes = (product.get("variants") or {}).get("nodes") or []
    variant = next((v for v in nodes if v.get("sku") == spec.sku), None)
    if variant is None:
        raise ShopifyGraphQLError(
            "shopify_graphql_error", f"productSet returned no variant with SKU {spec.sku!r} ({product['id']})"
        )
    return SyncedProduct(
        sku=spec.sku,
        handle=str(product["handle"]),
        product_gid=str(product["id"]),
        variant_gid=str(variant["id"]),
        created=str(product["id"]) != known_product_gid,
    )


def product_set_input(spec: ProductSpec) -> dict[str, Any]:
    """``productSet``'s ``input`` for a spec: one product with one variant (option "Title")."""
    variant_input: dict[str, Any] = {
        "optionValues": [{"optionName": DEFAULT_OPTION_NAME, "name": DEFAULT_OPTION_VALUE}],
        "price": money_to_wire(spec.price),
        "sku": spec.sku,
    }
    if spec.barcode is not None:
        variant_input["barcode"] = spec.barcode
    if spec.unit_cost is not None:
        variant_input["inventoryItem"] = {"cost": money_to_wire(spec.unit_cost)}
    product_input: dict[str, Any] = {
        "handle": spec.handle,
        "title": spec.title,
        "status": spec.status,
        "productOptions": [{"name": DEFAULT_OPTION_NAME, "position": 1, "values": [{"name": DEFAULT_OPTION_VALUE}]}],
        "variants": [variant_input],
    }
    if spec.description is not None:
        product_input["descriptionHtml"] = spec.description_html
    if spec.vendor is not None:
        product_input["vendor"] = spec.vendor
    return product_input


def _variant_from_node(node: dict[str, Any]) -> VariantInfo:
    """A ``ProductVariant`` answer (``id sku price product { id handle title status }``) as a VariantInfo."""
    product = node.get("product") or {}
    return VariantInfo(
        sku=str(node.get("sku") or ""),
        price=money_from_wire(node["price"]),
        product_gid=str(product.get("id", "")),
        variant_gid=str(node["id"]),
        product_status=str(product.get("status", "")),
        title=str(product.get("title", "")),
        handle=str(product.get("handle", "")),
    )


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return money_to_wire(value)
    raise TypeError(f"cannot send {type(value).__name__} to Shopify")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _raise_user_errors(data: dict[str, Any]) -> None:
    """Raise :class:`ShopifyUserError` if any top-level payload has non-empty ``userErrors``."""
    for name, payload in data.items():
        if not isinstance(payload, dict):
            continue
        user_errors = payload.get("userErrors")
        if isinstance(user_errors, list) and user_errors:
            errors = [e if isinstance(e, dict) else {"message": str(e)} for e in user_errors]
            raise ShopifyUserError("shopify_user_error", _describe_user_errors(name, errors), errors=errors)
