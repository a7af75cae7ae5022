"""The bundled local Shopify emulator: a real HTTP server speaking the Admin GraphQL wire format.

* ``POST /admin/api/{version}/graphql.json``, ``X-Shopify-Access-Token`` required (401 otherwise;
  when started with ``access_token=...`` only that token is accepted).
* Queries are parsed, validated and executed by ``graphql-core`` against a small SDL schema, so malformed
  queries fail like they do on Shopify:

  - catalog: ``Product`` (``vendor``, ``status``, ``updatedAt``...), ``ProductVariant`` (``barcode``,
    ``updatedAt``, ``inventoryItem { id tracked unitCost { amount currencyCode } }``), ``product``,
    ``productByIdentifier``, ``products``, ``productVariants(first, after, query, reverse, sortKey: ID|SKU)``
    (search terms ``sku:``, ``barcode:``, ``product_id:``, ``product_status:``, ``title:``, ``vendor:``,
    ``id:`` and dates ``updated_at:>'2026-01-01T00:00:00Z'`` / ``created_at:`` with ``> >= < <=``; ``products``
    takes the same dates). A product-only edit (``productSet`` without variants: title, vendor, status) moves
    the product's ``updatedAt`` and not its variants', as Shopify keeps them apart,
    ``node``/``nodes`` (products, variants, inventory items, locations, metafields), ``shop``;
  - ``productSet`` (upsert by handle or id; ``vendor``, and per variant ``barcode`` and
    ``inventoryItem { cost tracked sku }``), ``productVariantsBulkUpdate`` (price, compareAtPrice, barcode,
    inventoryItem cost; all or nothing, ``PRODUCT_VARIANT_DOES_NOT_EXIST`` for unknown ids), ``metafieldsSet``
    (at most 25, atomic; read back with ``metafield(namespace:, key:)`` on products and variants). Writes that
    change nothing leave ``updatedAt`` alone;
  - inventory: ``locations`` (configurable, default one "Shop location"; new variants are stocked at 0 at
    the first), ``InventoryItem.inventoryLevel(locationId:).quantities(names: ["available", "on_hand"])``
    and ``inventoryAdjustQuantities`` with API 2026-04+ semantics: ``@idempotent(key:)`` is required
    (a top-level error without it; optional before 2026-04), a repeated key with the same input replays the
    first answer without applying it again, the same key with another input is refused
    (``IDEMPOTENCY_KEY_PARAMETER_MISMATCH``), and every change must give ``changeFromQuantity`` (``null`` skips
    the compare-and-set; a mismatch is ``CHANGE_FROM_QUANTITY_STALE`` and nothing is applied). Only
    ``available`` is modelled, so ``on_hand`` always equals it.
* Leaky-bucket cost limiting (default 2000 points, 100 points/s): every answer carries
  ``extensions.cost`` (``requestedQueryCost``, ``actualQueryCost``, ``throttleStatus``); when the
  bucket cannot pay, the answer is HTTP 200 with ``{"errors": [{"message": "Throttled",
  "extensions": {"code": "THROTTLED"}}]}`` like Shopify.
* State lives in SQLite (WAL) at ``state_path`` (in memory when ``None``), so several processes
  pointing at one file see one store. GIDs look like ``gid://shopify/Product/1001``; an inventory item has
  its variant's number (``gid://shopify/InventoryItem/2001`` belongs to ``.../ProductVariant/2001``).
* Staged uploads, bulk operations and their result files live in the serving process's memory (not in
  the state file); uploads go to ``/staged-uploads/`` (multipart POST), results are served at
  ``/bulk-results/<id>.jsonl``; up to five bulk mutations run at once (one before API 2026-01).
* Product media (``stagedUploadsCreate`` for ``IMAGE``, ``productUpdate(media:)``, ``Product.media``,
  ``productDelete``): see :mod:`poflow_dagster.shopify.emulator_media`.
* Test hooks on :class:`EmulatorHandle`: injected HTTP failures, dropped answers (the request is applied,
  the connection closes unanswered), a frozen clock for ``updatedAt``, extra locations.

Cost model (a static estimate, charged in full), after Shopify's documented rules: scalars and enums 0;
an object field 1 plus its children; an interface the most expensive of its possible selections; a
connection ``2 + first x (cost of one node)`` (``pageInfo`` included in the 2); ``nodes(ids:)`` one node's
cost per id (at most 250 ids); ``productSet`` ``10 + 0.2 x variants`` (its dynamic cost since API 2025-10;
it takes no files or metafields here); ``metafieldsSet`` ``10 +`` 4 per distinct product and 2 per distinct
variant owner (its dynamic cost since 2026-09); any other mutation 10. A query whose cost exceeds 1000 points (or the
bucket) is refused with ``MAX_COST_EXCEEDED``.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.parser
import email.policy
import hmac
import json
import logging
import math
import random
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    FloatValueNode,
    VariableNode,
    build_schema,
    execute_sync,
    get_named_type,
    parse,
    validate,
)
from graphql.utilities import get_operation_ast

from poflow_dagster.shopify.emulator_media import (
    MEDIA_IMAGE_GID,
    MEDIA_SDL,
    MediaRootMixin,
    image_upload_problem,
)

__all__ = ["EmulatorHandle", "EmulatorStats", "serve_forever", "start_emulator", "SCHEMA_SDL"]

logger = logging.getLogger(__name__)

SCHEMA_SDL = """
\"\"\"A decimal amount, sent and returned as a string (e.g. "19.99").\"\"\"
scalar Money
scalar Decimal
scalar HTML
scalar DateTime
scalar URL
scalar UnsignedInt64

\"\"\"Runs a mutation at most once per key (required on inventoryAdjustQuantities since API 2026-04).\"\"\"
directive @idempotent(key: String!) on FIELD

enum ProductStatus { ACTIVE ARCHIVED DRAFT }
enum ProductOperationStatus { ACTIVE COMPLETE CREATED }
enum CurrencyCode { USD EUR GBP CAD AUD }
enum StagedUploadTargetGenerateUploadResource { BULK_MUTATION_VARIABLES }
enum StagedUploadHttpMethodType { POST PUT }
enum BulkOperationStatus { CANCELED CANCELING COMPLETED CREATED EXPIRED FAILED RUNNING }
enum BulkOperationType { MUTATION QUERY }
enum BulkOperationErrorCode { ACCESS_DENIED INTERNAL_SERVER_ERROR TIMEOUT }
enum BulkMutationErrorCode {
  INTERNAL_FILE_SERVER_ERROR
  INVALID_MUTATION
  INVALID_STAGED_UPLOAD_FILE
  LIMIT_REACHED
  NO_SUCH_FILE
  OPERATION_IN_PROGRESS
}
enum ProductVariantSortKeys { ID SKU }
enum ProductVariantsBulkUpdateUserErrorCode {
  PRODUCT_DOES_NOT_EXIST
  PRODUCT_VARIANT_DOES_NOT_EXIST
  PRODUCT_VARIANT_ID_MISSING
  INVALID_INPUT
  NEGATIVE_PRICE_VALUE
}
enum MetafieldsSetUserErrorCode { BLANK INVALID INVALID_TYPE INVALID_VALUE LESS_THAN_OR_EQUAL_TO PRESENT TAKEN }
enum InventoryAdjustQuantitiesUserErrorCode {
  CHANGE_FROM_QUANTITY_STALE
  IDEMPOTENCY_KEY_PARAMETER_MISMATCH
  INVALID_AVAILABLE_DOCUMENT
  INVALID_INVENTORY_ITEM
  INVALID_LOCATION
  INVALID_QUANTITY_DOCUMENT
  INVALID_QUANTITY_NAME
  INVALID_QUANTITY_TOO_HIGH
  INVALID_QUANTITY_TOO_LOW
  INVALID_REASON
  ITEM_NOT_STOCKED_AT_LOCATION
}
enum ProductSetUserErrorCode {
  GENERIC_ERROR
  INVALID_INPUT
  INVALID_PRODUCT
  INVALID_VARIANT
  PRODUCT_DOES_NOT_EXIST
  PRODUCT_VARIANT_DOES_NOT_EXIST
  HANDLE_NOT_UNIQUE
  OPTION_DOES_NOT_EXIST
  OPTION_VALUE_DOES_NOT_EXIST
  DUPLICATED_OPTION_NAME
  DUPLICATED_OPTION_VALUE
  DUPLICATE_VARIANT
  PRODUCT_OPTIONS_INPUT_MISSING
  VARIANTS_INPUT_MISSING
  BLANK
}

type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String endCursor: String }
type Shop { name: String! myshopifyDomain: String! currencyCode: String! }
type ProductOptionValue { id: ID! name: String! }
type ProductOption { id: ID! name: String! position: Int! values: [String!]! optionValues: [ProductOptionValue!]! }
type SelectedOption { name: String! value: String! }
type MoneyV2 { amount: Decimal! currencyCode: CurrencyCode! }
type Metafield implements Node {
  id: ID!
  namespace: String!
  key: String!
  type: String!
  value: String!
  ownerType: String!
  createdAt: DateTime!
  updatedAt: DateTime!
}
type Location implements Node { id: ID! name: String! isActive: Boolean! }
type LocationEdge { cursor: String! node: Location! }
type LocationConnection { edges: [LocationEdge!]! nodes: [Location!]! pageInfo: PageInfo! }
type InventoryQuantity { id: ID! name: String! quantity: Int! updatedAt: DateTime }
type InventoryLevel implements Node {
  id: ID!
  item: InventoryItem!
  location: Location!
  quantities(names: [String!]!): [InventoryQuantity!]!
  updatedAt: DateTime!
}
type InventoryItem implements Node {
  id: ID!
  sku: String
  tracked: Boolean!
  unitCost: MoneyV2
  variant: ProductVariant!
  inventoryLevel(locationId: ID!): InventoryLevel
  createdAt: DateTime!
  updatedAt: DateTime!
}
type InventoryChange {
  name: String!
  delta: Int!
  quantityAfterChange: Int
  item: InventoryItem
  location: Location
  ledgerDocumentUri: String
}
type UserError { field: [String!] message: String! }
type StagedUploadParameter { name: String! value: String! }
type StagedMediaUploadTarget { url: URL resourceUrl: URL parameters: [StagedUploadParameter!]! }
type StagedUploadsCreatePayload { stagedTargets: [StagedMediaUploadTarget!] userErrors: [UserError!]! }
type BulkOperation implements Node {
  id: ID!
  status: BulkOperationStatus!
  type: BulkOperationType!
  errorCode: BulkOperationErrorCode
  createdAt: DateTime!
  completedAt: DateTime
  objectCount: UnsignedInt64!
  rootObjectCount: UnsignedInt64!
  fileSize: UnsignedInt64
  url: URL
  partialDataUrl: URL
  query: String!
}
type BulkMutationUserError { code: BulkMutationErrorCode field: [String!] message: String! }
type BulkOperationRunMutationPayload { bulkOperation: BulkOperation userErrors: [BulkMutationUserError!]! }
type InventoryAdjustmentGroup {
  id: ID!
  createdAt: DateTime!
  reason: String!
  referenceDocumentUri: String
  changes: [InventoryChange!]!
}

interface Node { id: ID! }

type Product implements Node {
  id: ID!
  handle: String!
  title: String!
  status: ProductStatus!
  descriptionHtml: HTML!
  vendor: String!
  productType: String!
  tags: [String!]!
  createdAt: DateTime!
  updatedAt: DateTime!
  metafield(namespace: String, key: String!): Metafield
  options(first: Int): [ProductOption!]!
  variants(first: Int, after: String, reverse: Boolean = false): ProductVariantConnection!
}

type ProductVariant implements Node {
  id: ID!
  sku: String
  price: Money!
  compareAtPrice: Money
  barcode: String
  title: String!
  displayName: String!
  position: Int!
  selectedOptions: [SelectedOption!]!
  product: Product!
  inventoryItem: InventoryItem!
  metafield(namespace: String, key: String!): Metafield
  createdAt: DateTime!
  updatedAt: DateTime!
}

type ProductEdge { cursor: String! node: Product! }
type ProductConnection { edges: [ProductEdge!]! nodes: [Product!]! pageInfo: PageInfo! }
type ProductVariantEdge { cursor: String! node: ProductVariant! }
type ProductVariantConnection { edges: [ProductVariantEdge!]! nodes: [ProductVariant!]! pageInfo: PageInfo! }

type ProductSetUserError { code: ProductSetUserErrorCode field: [String!] message: String! }
type ProductSetOperation { id: ID! status: ProductOperationStatus! product: Product userErrors: [ProductSetUserError!]! }
type ProductSetPayload { product: Product productSetOperation: ProductSetOperation userErrors: [ProductSetUserError!]! }
type ProductVariantsBulkUpdateUserError { code: ProductVariantsBulkUpdateUserErrorCode field: [String!] message: String! }
type ProductVariantsBulkUpdatePayload {
  product: Product
  productVariants: [ProductVariant!]
  userErrors: [ProductVariantsBulkUpdateUserError!]!
}
type MetafieldsSetUserError { code: MetafieldsSetUserErrorCode elementIndex: Int field: [String!] message: String! }
type MetafieldsSetPayload { metafields: [Metafield!] userErrors: [MetafieldsSetUserError!]! }
type InventoryAdjustQuantitiesUserError { code: InventoryAdjustQuantitiesUserErrorCode field: [String!] message: String! }
type InventoryAdjustQuantitiesPayload {
  inventoryAdjustmentGroup: InventoryAdjustmentGroup
  userErrors: [InventoryAdjustQuantitiesUserError!]!
}

input UniqueMetafieldValueInput { namespace: String key: String! value: String! }
input ProductSetIdentifiers { id: ID handle: String customId: UniqueMetafieldValueInput }
input ProductIdentifierInput { id: ID handle: String customId: UniqueMetafieldValueInput }
input OptionValueSetInput { id: ID name: String }
input OptionSetInput { id: ID name: String position: Int values: [OptionValueSetInput!] }
input VariantOptionValueInput { id: ID name: String optionId: ID optionName: String }
input InventoryItemInput { sku: String tracked: Boolean requiresShipping: Boolean cost: Decimal }
input ProductVariantsBulkInput {
  id: ID
  price: Money
  compareAtPrice: Money
  barcode: String
  taxable: Boolean
  inventoryItem: InventoryItemInput
}
input MetafieldsSetInput { ownerId: ID! namespace: String key: String! type: String value: String! }
input InventoryChangeInput {
  inventoryItemId: ID!
  locationId: ID!
  delta: Int!
  changeFromQuantity: Int
  ledgerDocumentUri: String
}
input StagedUploadInput {
  resource: StagedUploadTargetGenerateUploadResource!
  filename: String!
  mimeType: String!
  httpMethod: StagedUploadHttpMethodType = PUT
  fileSize: UnsignedInt64
}
input InventoryAdjustQuantitiesInput {
  reason: String!
  name: String!
  referenceDocumentUri: String
  changes: [InventoryChangeInput!]!
}
input ProductVariantSetInput {
  id: ID
  optionValues: [VariantOptionValueInput!]!
  price: Money
  compareAtPrice: Money
  sku: String
  barcode: String
  position: Int
  taxable: Boolean
  inventoryItem: InventoryItemInput
}
input ProductSetInput {
  id: ID
  handle: String
  title: String
  descriptionHtml: String
  vendor: String
  productType: String
  status: ProductStatus
  tags: [String!]
  productOptions: [OptionSetInput!]
  variants: [ProductVariantSetInput!]
}

type Query {
  shop: Shop!
  product(id: ID!): Product
  productByIdentifier(identifier: ProductIdentifierInput!): Product
  products(first: Int, after: String, query: String, reverse: Boolean = false): ProductConnection!
  productVariants(
    first: Int, after: String, query: String, reverse: Boolean = false, sortKey: ProductVariantSortKeys = ID
  ): ProductVariantConnection!
  locations(first: Int, after: String, reverse: Boolean = false): LocationConnection!
  currentBulkOperation(type: BulkOperationType = QUERY): BulkOperation
  node(id: ID!): Node
  nodes(ids: [ID!]!): [Node]!
}

type Mutation {
  productSet(input: ProductSetInput!, synchronous: Boolean = true, identifier: ProductSetIdentifiers): ProductSetPayload
  productVariantsBulkUpdate(
    productId: ID!, variants: [ProductVariantsBulkInput!]!, allowPartialUpdates: Boolean = false
  ): ProductVariantsBulkUpdatePayload
  metafieldsSet(metafields: [MetafieldsSetInput!]!): MetafieldsSetPayload
  inventoryAdjustQuantities(input: InventoryAdjustQuantitiesInput!): InventoryAdjustQuantitiesPayload
  stagedUploadsCreate(input: [StagedUploadInput!]!): StagedUploadsCreatePayload
  bulkOperationRunMutation(
    mutation: String!, stagedUploadPath: String!, clientIdentifier: String, groupObjects: Boolean = true
  ): BulkOperationRunMutationPayload
}
"""

PRODUCT_GID = "gid://shopify/Product/"
VARIANT_GID = "gid://shopify/ProductVariant/"
#: An inventory item has its variant's number (one item per variant, as on Shopify).
INVENTORY_ITEM_GID = "gid://shopify/InventoryItem/"
LOCATION_GID = "gid://shopify/Location/"
METAFIELD_GID = "gid://shopify/Metafield/"
ADJUSTMENT_GROUP_GID = "gid://shopify/InventoryAdjustmentGroup/"
SHOP_CURRENCY = "USD"
MAX_PAGE_SIZE = 250
MUTATION_COST = 10
#: ``metafieldsSet`` costs 10 plus, per distinct owner, its type's weight (Shopify's dynamic cost; other
#: owner types we hold weigh 0).
METAFIELD_OWNER_WEIGHTS = {"gid://shopify/Product/": 4, "gid://shopify/ProductVariant/": 2}
PRODUCT_SET_BASE_COST = 10.0
PRODUCT_SET_VARIANT_COST = 0.2
SINGLE_QUERY_MAX_COST = 1000
_PATH_RE = re.compile(r"^/admin/api/(?P<version>\d{4}-\d{2}|unstable)/graphql\.json$")
_AUTH_FAILED = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
_THROTTLE_DOCS = "https://shopify.dev/api/usage/rate-limits"


# --------------------------------------------------------------------------------------------
# Scalars and schema
# --------------------------------------------------------------------------------------------


def _parse_money(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise GraphQLError(f"Invalid Money value: {value!r}")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation as exc:
        raise GraphQLError(f"Invalid Money value: {value!r}") from exc
    if not amount.is_finite():
        raise GraphQLError(f"Invalid Money value: {value!r}")
    return _money_str(amount)


def _money_str(amount: Decimal) -> str:
    cents = amount.quantize(Decimal("0.01"))
    return format(cents if cents == amount else amount.normalize(), "f")


def _parse_money_literal(node: Any, _variables: Any = None) -> str:
    if isinstance(node, (StringValueNode, IntValueNode, FloatValueNode)):
        return _parse_money(node.value)
    raise GraphQLError("Money must be a string or a number")


def _build_schema() -> GraphQLSchema:
    schema = build_schema(SCHEMA_SDL + MEDIA_SDL)
    for name in ("Money", "Decimal"):
        scalar = schema.type_map[name]
        scalar.serialize = lambda value: _money_str(Decimal(str(value)))  # type: ignore[attr-defined]
        scalar.parse_value = _parse_money  # type: ignore[attr-defined]
        scalar.parse_literal = _parse_money_literal  # type: ignore[attr-defined]
    schema.type_map["UnsignedInt64"].serialize = str  # type: ignore[attr-defined]
    schema.type_map["Node"].resolve_type = lambda value, _info, _type: value["__typename"]  # type: ignore[attr-defined]
    return schema


SCHEMA = _build_schema()


# --------------------------------------------------------------------------------------------
# SQLite store
# --------------------------------------------------------------------------------------------

_DDL = """
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    handle TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    description_html TEXT NOT NULL DEFAULT '',
    vendor TEXT NOT NULL DEFAULT '',
    product_type TEXT NOT NULL DEFAULT '',
    tags_json TEXT NOT NULL DEFAULT '[]',
    options_json TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS variants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    sku TEXT,
    price TEXT NOT NULL,
    compare_at_price TEXT,
    barcode TEXT,
    option_values_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    unit_cost TEXT,
    tracked INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS ix_variants_product ON variants(product_id);
CREATE INDEX IF NOT EXISTS ix_variants_sku ON variants(sku);
CREATE TABLE IF NOT EXISTS locations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS inventory_levels (
    item_id INTEGER NOT NULL REFERENCES variants(id) ON DELETE CASCADE,
    location_id INTEGER NOT NULL REFERENCES locations(id),
    available INTEGER NOT NULL DEFAULT 0,
    on_hand INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (item_id, location_id)
);
CREATE TABLE IF NOT EXISTS metafields (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_gid TEXT NOT NULL,
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (owner_gid, namespace, key)
);
CREATE TABLE IF NOT EXISTS adjustment_groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reason TEXT NOT NULL,
    reference_uri TEXT,
    changes_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    operation TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (operation, key)
);
"""
#: Columns added to ``variants`` after the first release (older state files get them on open).
_VARIANT_COLUMNS_ADDED = {"unit_cost": "TEXT", "tracked": "INTEGER NOT NULL DEFAULT 1"}
#: Where new ids start, per table (Shopify ids are large; distinct ranges make mix-ups visible).
_ID_STARTS = {"products": 1000, "variants": 2000, "locations": 60000, "metafields": 70000, "adjustment_groups": 80000}
DEFAULT_LOCATIONS = ("Shop location",)


def _timestamp(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Store:
    """Products, variants, inventory and metafields in SQLite; one connection guarded by a lock, writes in
    IMMEDIATE transactions. ``clock`` gives "now" (tests freeze it to control ``updatedAt``)."""

    def __init__(self, path: Path | None, locations: tuple[str, ...] = DEFAULT_LOCATIONS) -> None:
        self.path = path
        self.clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)
        target = str(path) if path is not None else ":memory:"
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(target, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.execute("PRAGMA foreign_keys = ON")
        if path is not None:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _DDL.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                have = {r["name"] for r in self._conn.execute("PRAGMA table_info(variants)")}
                for column, declaration in _VARIANT_COLUMNS_ADDED.items():
                    if column not in have:
                        self._conn.execute(f"ALTER TABLE variants ADD COLUMN {column} {declaration}")
                for table, start in _ID_STARTS.items():
                    self._conn.execute(
                        "INSERT INTO sqlite_sequence(name, seq) SELECT ?, ? "
                        "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?)",
                        (table, start, table),
                    )
                self._seed_locations(locations)
                if not _VARIANT_COLUMNS_ADDED.keys() <= have:  # an older state file: stock its variants too
                    for row in self._conn.execute("SELECT id, updated_at FROM variants").fetchall():
                        _stock_at_default_location(self._conn, int(row["id"]), row["updated_at"])
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _seed_locations(self, names: tuple[str, ...]) -> None:
        if self._conn.execute("SELECT COUNT(*) FROM locations").fetchone()[0] == 0:
            self._conn.executemany("INSERT INTO locations (name) VALUES (?)", [(n,) for n in names])

    def now(self) -> str:
        """The current time as Shopify writes it (``2026-01-01T00:00:00Z``)."""
        return _timestamp(self.clock())

    def add_location(self, name: str) -> int:
        with self.transaction() as conn:
            return int(conn.execute("INSERT INTO locations (name) VALUES (?)", (name,)).lastrowid)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An exclusive-for-writers transaction (``BEGIN IMMEDIATE``), also across processes."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def product(self, product_id: int) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM products WHERE id = ?", (product_id,))
        return rows[0] if rows else None

    def product_by_handle(self, handle: str) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM products WHERE handle = ?", (handle,))
        return rows[0] if rows else None

    def variants_of(self, product_id: int) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM variants WHERE product_id = ? ORDER BY position, id", (product_id,))

    def count_products(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM products")[0][0])

    def reset(self, locations: tuple[str, ...] = DEFAULT_LOCATIONS) -> None:
        with self.transaction() as conn:
            for table in ("inventory_levels", "metafields", "adjustment_groups", "idempotency_keys", "variants",
                          "products", "locations"):
                conn.execute(f"DELETE FROM {table}")
            self._seed_locations(locations)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# --------------------------------------------------------------------------------------------
# Search syntax (the subset we need): terms, field:value, quotes, backslash escapes, OR
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Term:
    field: str | None
    value: str
    negated: bool = False
    comparator: str | None = None  # ``>``, ``>=``, ``<``, ``<=`` in ``updated_at:>'2026-01-01T00:00:00Z'``


def _tokenize_search(query: str) -> list[list[_Term]]:
    """Parse Shopify search syntax into OR-groups of AND-ed terms."""
    groups: list[list[_Term]] = [[]]
    i, n = 0, len(query)
    while i < n:
        if query[i].isspace():
            i += 1
            continue
        negated = False
        if query[i] == "-" and i + 1 < n and not query[i + 1].isspace():
            negated = True
            i += 1
        field_name: str | None = None
        comparator: str | None = None
        buf: list[str] = []
        quoted_value: str | None = None
        while i < n and not query[i].isspace():
            ch = query[i]
            if ch == "\\" and i + 1 < n:
                buf.append(query[i + 1])
                i += 2
            elif ch in "\"'":
                quote, i = ch, i + 1
                chars: list[str] = []
                while i < n and query[i] != quote:
                    if query[i] == "\\" and i + 1 < n:
                        chars.append(query[i + 1])
                        i += 2
                    else:
                        chars.append(query[i])
                        i += 1
                i += 1  # closing quote
                quoted_value = (quoted_value or "") + "".join(chars)
            elif ch == ":" and field_name is None and quoted_value is None:
                field_name = "".join(buf)
                buf = []
                i += 1
                comparator = next((op for op in (">=", "<=", ">", "<") if query.startswith(op, i)), None)
                i += len(comparator or "")
            else:
                buf.append(ch)
                i += 1
        value = (quoted_value or "") + "".join(buf)
        if field_name is None and not negated and value in ("OR", "AND"):
            if value == "OR":
                groups.append([])
            continue
        groups[-1].append(_Term(field_name.lower() if field_name else None, value, negated, comparator))
    return [g for g in groups if g] or [[]]


def _parse_when(text: str) -> dt.datetime | None:
    """A search value as a UTC datetime (``2026-01-01``, ``2026-01-01T00:00:00Z``, offsets), or ``None``."""
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


def _compare_time(stored: str, term: _Term) -> bool:
    """A date filter (``updated_at:>'...'``); unreadable dates are ignored like unknown filters."""
    wanted = _parse_when(term.value)
    have = _parse_when(stored)
    if wanted is None or have is None:
        return True
    return {
        ">": have > wanted, ">=": have >= wanted, "<": have < wanted, "<=": have <= wanted, None: have == wanted,
    }[term.comparator]


def _match_text(needle: str, haystack: str | None) -> bool:
    """Fuzzy like Shopify: case-insensitive substring."""
    return haystack is not None and needle.casefold() in haystack.casefold()


def _gid_number(value: str | None, prefix: str) -> int | None:
    if not value:
        return None
    text = value[len(prefix):] if value.startswith(prefix) else value
    return int(text) if text.isdigit() else None


# --------------------------------------------------------------------------------------------
# Resolvers (graphql-core's default resolver calls callables in dicts/objects with (info, **args))
# --------------------------------------------------------------------------------------------


def _cursor(row_id: int) -> str:
    return base64.b64encode(f"cursor:{row_id}".encode()).decode()


def _uncursor(cursor: str) -> int:
    try:
        text = base64.b64decode(cursor.encode(), validate=True).decode()
        if not text.startswith("cursor:"):
            raise ValueError(cursor)
        return int(text[len("cursor:"):])
    except ValueError as exc:
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor}", extensions={"code": "BAD_REQUEST"}) from exc


def _connection(
    rows: list[sqlite3.Row],
    to_node: Callable[[sqlite3.Row], dict[str, Any]],
    first: int | None,
    after: str | None,
    reverse: bool | None,
) -> dict[str, Any]:
    if first is None:
        raise GraphQLError("you must provide one of first or last", extensions={"code": "BAD_REQUEST"})
    if first < 0 or first > MAX_PAGE_SIZE:
        raise GraphQLError(f"first must be between 0 and {MAX_PAGE_SIZE}", extensions={"code": "BAD_REQUEST"})
    ordered = list(reversed(rows)) if reverse else list(rows)
    start = 0
    if after:
        after_id = _uncursor(after)
        start = next((i + 1 for i, row in enumerate(ordered) if row["id"] == after_id), len(ordered))
    page = ordered[start:start + first]
    nodes = [to_node(row) for row in page]
    return {
        "edges": [{"cursor": _cursor(row["id"]), "node": node} for row, node in zip(page, nodes)],
        "nodes": nodes,
        "pageInfo": {
            "hasNextPage": start + first < len(ordered),
            "hasPreviousPage": start > 0,
            "startCursor": _cursor(page[0]["id"]) if page else None,
            "endCursor": _cursor(page[-1]["id"]) if page else None,
        },
    }


class _Root(MediaRootMixin):
    """Root value for queries and mutations over one store."""

    def __init__(
        self, store: _Store, api_version: str = "unstable", bulk: _Bulk | None = None, base_url: str = ""
    ) -> None:
        self.store = store
        self.api_version = api_version
        self.bulk = bulk
        self.base_url = base_url

    # -- object builders -----------------------------------------------------------------------

    def product_obj(self, row: sqlite3.Row) -> dict[str, Any]:
        options = json.loads(row["options_json"])
        pid = row["id"]
        return {
            "__typename": "Product",
            "id": f"{PRODUCT_GID}{pid}",
            "handle": row["handle"],
            "title": row["title"],
            "status": row["status"],
            "descriptionHtml": row["description_html"],
            "vendor": row["vendor"],
            "productType": row["product_type"],
            "tags": json.loads(row["tags_json"]),
            "createdAt": row["created_at"],
            "updatedAt": row["updated_at"],
            "metafield": partial(self.metafield_of, f"{PRODUCT_GID}{pid}"),
            "options": lambda _info, first=None: [
                {
                    "id": f"gid://shopify/ProductOption/{pid * 10 + i}",
                    "name": opt["name"],
                    "position": i + 1,
                    "values": list(opt["values"]),
                    "optionValues": [
                        {"id": f"gid://shopify/ProductOptionValue/{pid * 1000 + i * 100 + j}", "name": v}
                        for j, v in enumerate(opt["values"])
                    ],
                }
                for i, opt in enumerate(options[: first if first is not None else None])
            ],
            "variants": lambda _info, first=None, after=None, reverse=False: _connection(
                self.store.variants_of(pid), partial(self.variant_obj, product_row=row), first, after, reverse
            ),
            "media": partial(self.media_of, pid),
        }

    def variant_obj(self, row: sqlite3.Row, product_row: sqlite3.Row | None = None) -> dict[str, Any]:
        option_values = json.loads(row["option_values_json"])
        title = " / ".join(v["name"] for v in option_values) or "Default Title"

        def product(_info: Any) -> dict[str, Any] | None:
            prow = product_row if product_row is not None else self.store.product(row["product_id"])
            return self.product_obj(prow) if prow is not None else None

        product_title = product_row["title"] if product_row is not None else None
        return {
            "__typename": "ProductVariant",
            "id": f"{VARIANT_GID}{row['id']}",
            "sku": row["sku"],
            "price": row["price"],
            "compareAtPrice": row["compare_at_price"],
            "barcode": row["barcode"],
            "title": title,
            "displayName": f"{product_title} - {title}" if product_title else title,
            "position": row["position"],
            "selectedOptions": [{"name": v["optionName"], "value": v["name"]} for v in option_values],
            "product": product,
            "inventoryItem": self.inventory_item_obj(row),
            "metafield": partial(self.metafield_of, f"{VARIANT_GID}{row['id']}"),
            "createdAt": row["created_at"],
            "updatedAt": row["updated_at"],
        }

    def inventory_item_obj(self, row: sqlite3.Row) -> dict[str, Any]:
        """The inventory item of a variant row (unit cost, tracking, levels per location)."""
        item_id = row["id"]

        def level(_info: Any, locationId: str) -> dict[str, Any] | None:  # noqa: N803 - GraphQL arg name
            number = _gid_number(locationId, LOCATION_GID)
            found = self.store.query(
                "SELECT v.*, l.item_id, l.location_id, l.available, l.on_hand, l.updated_at AS level_updated_at "
                "FROM inventory_levels l JOIN variants v ON v.id = l.item_id "
                "WHERE l.item_id = ? AND l.location_id = ?", (item_id, number),
            ) if number is not None else []
            return self.level_obj(found[0]) if found else None

        cost = row["unit_cost"]
        return {
            "__typename": "InventoryItem",
            "id": f"{INVENTORY_ITEM_GID}{item_id}",
            "sku": row["sku"],
            "tracked": bool(row["tracked"]),
            "unitCost": {"amount": cost, "currencyCode": SHOP_CURRENCY} if cost is not None else None,
            "variant": lambda _info: self.node(_info, f"{VARIANT_GID}{item_id}"),
            "inventoryLevel": level,
            "createdAt": row["created_at"],
            "updatedAt": row["updated_at"],
        }

    def level_obj(self, row: sqlite3.Row) -> dict[str, Any]:
        """An inventory level (a ``variants`` row joined with its ``inventory_levels`` columns)."""
        item_id, location_id = row["item_id"], row["location_id"]
        stored = {"available": row["available"], "on_hand": row["on_hand"]}
        level_gid = f"gid://shopify/InventoryLevel/{item_id}?inventory_item_id={item_id}&location_id={location_id}"

        def quantities(_info: Any, names: list[str]) -> list[dict[str, Any]]:
            unknown = [n for n in names if n not in stored]
            if unknown:
                raise GraphQLError(f"Invalid quantity names: {', '.join(unknown)}", extensions={"code": "BAD_REQUEST"})
            return [
                {"id": f"{level_gid}&name={n}", "name": n, "quantity": stored[n], "updatedAt": row["level_updated_at"]}
                for n in names
            ]

        return {
            "__typename": "InventoryLevel",
            "id": level_gid,
            "item": self.inventory_item_obj(row),
            "location": lambda _info: self.node(_info, f"{LOCATION_GID}{location_id}"),
            "quantities": quantities,
            "updatedAt": row["level_updated_at"],
        }

    def metafield_of(self, owner_gid: str, _info: Any, key: str, namespace: str | None = None) -> dict[str, Any] | None:
        rows = self.store.query(
            "SELECT * FROM metafields WHERE owner_gid = ? AND namespace = ? AND key = ?",
            (owner_gid, namespace or APP_NAMESPACE, key),
        )
        return _metafield_obj(rows[0]) if rows else None

    # -- Query ---------------------------------------------------------------------------------

    def shop(self, _info: Any) -> dict[str, Any]:
        return {"name": "poflow emulator", "myshopifyDomain": "poflow-emulator.myshopify.com", "currencyCode": "USD"}

    def product(self, _info: Any, id: str) -> dict[str, Any] | None:  # noqa: A002 - GraphQL arg name
        number = _gid_number(id, PRODUCT_GID)
        row = self.store.product(number) if number is not None else None
        return self.product_obj(row) if row is not None else None

    def node(self, _info: Any, id: str) -> dict[str, Any] | None:  # noqa: A002 - GraphQL arg name
        if id.startswith(INVENTORY_ITEM_GID):
            number = _gid_number(id, INVENTORY_ITEM_GID)
            rows = self.store.query("SELECT * FROM variants WHERE id = ?", (number,)) if number is not None else []
            return self.inventory_item_obj(rows[0]) if rows else None
        if id.startswith(LOCATION_GID):
            number = _gid_number(id, LOCATION_GID)
            rows = self.store.query("SELECT * FROM locations WHERE id = ?", (number,)) if number is not None else []
            return _location_obj(rows[0]) if rows else None
        if id.startswith(METAFIELD_GID):
            number = _gid_number(id, METAFIELD_GID)
            rows = self.store.query("SELECT * FROM metafields WHERE id = ?", (number,)) if number is not None else []
            return _metafield_obj(rows[0]) if rows else None
        if id.startswith(BULK_OPERATION_GID) and self.bulk is not None:
            operation = self.bulk.operations.get(_gid_number(id, BULK_OPERATION_GID) or -1)
            return operation.as_node(self.base_url) if operation is not None else None
        if id.startswith(VARIANT_GID):
            number = _gid_number(id, VARIANT_GID)
            rows = self.store.query("SELECT * FROM variants WHERE id = ?", (number,)) if number is not None else []
            return self.variant_obj(rows[0]) if rows else None
        if id.startswith(PRODUCT_GID):
            return self.product(_info, id)
        if id.startswith(MEDIA_IMAGE_GID):
            return self.media_node(id)
        return None

    def nodes(self, _info: Any, ids: list[str]) -> list[dict[str, Any] | None]:
        if len(ids) > MAX_PAGE_SIZE:
            raise GraphQLError(
                f"The maximum number of ids for nodes is {MAX_PAGE_SIZE}", extensions={"code": "BAD_REQUEST"}
            )
        return [self.node(_info, gid) for gid in ids]

    def productByIdentifier(self, _info: Any, identifier: dict[str, Any]) -> dict[str, Any] | None:  # noqa: N802
        row = self._find_product(identifier, path="identifier")
        return self.product_obj(row) if row is not None else None

    def _find_product(self, identifier: dict[str, Any], *, path: str) -> sqlite3.Row | None:
        given = [k for k in ("id", "handle", "customId") if identifier.get(k) is not None]
        if len(given) != 1:
            raise GraphQLError(f"{path}: exactly one of id, handle or customId is required", extensions={"code": "BAD_REQUEST"})
        if given[0] == "customId":
            raise GraphQLError("customId identifiers are not supported by the emulator", extensions={"code": "BAD_REQUEST"})
        if given[0] == "id":
            number = _gid_number(identifier["id"], PRODUCT_GID)
            return self.store.product(number) if number is not None else None
        return self.store.product_by_handle(identifier["handle"])

    def products(
        self, _info: Any, first: int | None = None, after: str | None = None, query: str | None = None, reverse: bool = False
    ) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM products ORDER BY id")
        if query:
            groups = _tokenize_search(query)
            variant_rows = self.store.query("SELECT product_id, sku FROM variants")
            skus: dict[int, list[str]] = {}
            for v in variant_rows:
                skus.setdefault(v["product_id"], []).append(v["sku"] or "")
            rows = [r for r in rows if any(all(self._product_term(r, skus.get(r["id"], []), t) for t in g) for g in groups)]
        return _connection(rows, self.product_obj, first, after, reverse)

    @staticmethod
    def _product_term(row: sqlite3.Row, skus: list[str], term: _Term) -> bool:
        value, name = term.value, term.field
        if name is None:
            hit = _match_text(value, row["title"]) or any(_match_text(value, s) for s in skus)
        elif name == "handle":
            hit = row["handle"] == value
        elif name == "title":
            hit = _match_text(value, row["title"])
        elif name == "status":
            hit = row["status"].casefold() in {v.strip().casefold() for v in value.split(",")}
        elif name == "vendor":
            hit = _match_text(value, row["vendor"])
        elif name == "sku":
            hit = any(_match_text(value, s) for s in skus)
        elif name == "id":
            hit = str(row["id"]) == value
        elif name in ("updated_at", "created_at"):
            hit = _compare_time(row[name], term)
        else:
            hit = True  # unknown filters are ignored, as on Shopify
        return hit != term.negated

    def locations(
        self, _info: Any, first: int | None = None, after: str | None = None, reverse: bool = False
    ) -> dict[str, Any]:
        rows = self.store.query("SELECT * FROM locations WHERE active = 1 ORDER BY id")
        return _connection(rows, _location_obj, first, after, reverse)

    def productVariants(  # noqa: N802
        self,
        _info: Any,
        first: int | None = None,
        after: str | None = None,
        query: str | None = None,
        reverse: bool = False,
        sortKey: str = "ID",  # noqa: N803 - GraphQL arg name
    ) -> dict[str, Any]:
        order = {"ID": "v.id", "SKU": "v.sku, v.id"}[sortKey]
        rows = self.store.query(
            "SELECT v.*, p.title AS product_title, p.status AS product_status, p.vendor AS product_vendor "
            f"FROM variants v JOIN products p ON p.id = v.product_id ORDER BY {order}"
        )
        if query:
            groups = _tokenize_search(query)
            rows = [r for r in rows if any(all(self._variant_term(r, t) for t in g) for g in groups)]
        return _connection(rows, self.variant_obj, first, after, reverse)

    @staticmethod
    def _variant_term(row: sqlite3.Row, term: _Term) -> bool:
        value, name = term.value, term.field
        if name is None:
            hit = _match_text(value, row["sku"]) or _match_text(value, row["product_title"])
        elif name == "sku":
            hit = _match_text(value, row["sku"])
        elif name == "barcode":
            hit = row["barcode"] == value
        elif name == "product_id":
            hit = str(row["product_id"]) == str(_gid_number(value, PRODUCT_GID))
        elif name == "product_status":
            hit = row["product_status"].casefold() in {v.strip().casefold() for v in value.split(",")}
        elif name == "title":
            hit = _match_text(value, row["product_title"])
        elif name == "id":
            hit = str(row["id"]) == str(_gid_number(value, VARIANT_GID))
        elif name in ("updated_at", "created_at"):
            hit = _compare_time(row[name], term)
        elif name == "vendor":
            hit = _match_text(value, row["product_vendor"])
        else:
            hit = True
        return hit != term.negated

    # -- Mutation ------------------------------------------------------------------------------

    def productSet(  # noqa: N802
        self,
        _info: Any,
        input: dict[str, Any],  # noqa: A002 - GraphQL arg name
        synchronous: bool = True,
        identifier: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        product_id, user_errors = _product_set(self.store, input, identifier)
        row = self.store.product(product_id) if product_id is not None else None
        product = self.product_obj(row) if row is not None else None
        if synchronous:
            return {"product": product, "productSetOperation": None, "userErrors": user_errors}
        operation = {
            "id": f"gid://shopify/ProductSetOperation/{int(time.time() * 1000)}",
            "status": "COMPLETE",
            "product": product,
            "userErrors": user_errors,
        }
        return {"product": None, "productSetOperation": operation, "userErrors": []}


    def productVariantsBulkUpdate(  # noqa: N802
        self, _info: Any, productId: str, variants: list[dict[str, Any]], allowPartialUpdates: bool = False  # noqa: N803
    ) -> dict[str, Any]:
        number = _gid_number(productId, PRODUCT_GID)
        row = self.store.product(number) if number is not None else None
        if row is None:
            error = _user_error(["productId"], "Product does not exist", "PRODUCT_DOES_NOT_EXIST")
            return {"product": None, "productVariants": None, "userErrors": [error]}
        updated, errors = _bulk_update_variants(self.store, int(row["id"]), variants)
        product_row = self.store.product(int(row["id"]))
        if errors:
            return {"product": self.product_obj(product_row), "productVariants": None, "userErrors": errors}
        return {
            "product": self.product_obj(product_row),
            "productVariants": [self.variant_obj(v, product_row=product_row) for v in updated],
            "userErrors": [],
        }

    def metafieldsSet(self, _info: Any, metafields: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N802
        rows, errors = _set_metafields(self.store, metafields)
        return {"metafields": None if errors else [_metafield_obj(r) for r in rows], "userErrors": errors}

    def inventoryAdjustQuantities(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802, A002
        key = _idempotency_key(info)
        if key is None and (self.api_version == "unstable" or self.api_version >= IDEMPOTENCY_REQUIRED_FROM):
            raise GraphQLError(IDEMPOTENCY_MISSING_MESSAGE, extensions={"code": "BAD_REQUEST"})
        outcome = _adjust_quantities(self.store, input, key)
        group = outcome["groupId"]
        rows = self.store.query("SELECT * FROM adjustment_groups WHERE id = ?", (group,)) if group else []
        return {
            "inventoryAdjustmentGroup": self.group_obj(rows[0]) if rows else None,
            "userErrors": outcome["userErrors"],
        }

    # -- bulk ----------------------------------------------------------------------------------

    def currentBulkOperation(self, _info: Any, type: str = "QUERY") -> dict[str, Any] | None:  # noqa: N802, A002
        latest = self.bulk.latest(type) if self.bulk is not None else None
        return latest.as_node(self.base_url) if latest is not None else None

    def stagedUploadsCreate(self, _info: Any, input: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N802, A002
        assert self.bulk is not None
        errors = [
            {"field": ["input", str(i), "httpMethod"], "message": "The emulator takes staged uploads by POST only"}
            for i, target in enumerate(input) if target.get("httpMethod") != "POST"
        ]
        if errors:
            return {"stagedTargets": None, "userErrors": errors}
        targets = []
        for target in input:
            if target["resource"] == "IMAGE":  # product images: see emulator_media
                targets.append(self.image_target(target))
                continue
            key = self.bulk.stage(target["filename"])
            parameters = {"key": key, "Content-Type": target["mimeType"], "success_action_status": "201",
                          "acl": "private", "policy": base64.b64encode(key.encode()).decode()}
            targets.append({
                "url": f"{self.base_url}{STAGED_UPLOAD_PATH}",
                "resourceUrl": None,
                "parameters": [{"name": k, "value": v} for k, v in parameters.items()],
            })
        return {"stagedTargets": targets, "userErrors": []}

    def bulkOperationRunMutation(  # noqa: N802
        self, _info: Any, mutation: str, stagedUploadPath: str, clientIdentifier: str | None = None,  # noqa: N803
        groupObjects: bool = True,  # noqa: N803
    ) -> dict[str, Any]:
        assert self.bulk is not None
        operation, error = self.bulk.start(self.store, self.api_version, mutation, stagedUploadPath)
        if operation is None:
            return {"bulkOperation": None, "userErrors": [error]}
        return {"bulkOperation": operation.as_node(self.base_url), "userErrors": []}

    def group_obj(self, row: sqlite3.Row) -> dict[str, Any]:
        def change(entry: dict[str, Any]) -> dict[str, Any]:
            return {
                "name": entry["name"],
                "delta": entry["delta"],
                "quantityAfterChange": entry["after"],
                "item": lambda info: self.node(info, f"{INVENTORY_ITEM_GID}{entry['item']}"),
                "location": lambda info: self.node(info, f"{LOCATION_GID}{entry['location']}"),
                "ledgerDocumentUri": entry.get("ledger"),
            }

        return {
            "id": f"{ADJUSTMENT_GROUP_GID}{row['id']}",
            "createdAt": row["created_at"],
            "reason": row["reason"],
            "referenceDocumentUri": row["reference_uri"],
            "changes": [change(e) for e in json.loads(row["changes_json"])],
        }


# --------------------------------------------------------------------------------------------
# Staged uploads and bulk mutations
# --------------------------------------------------------------------------------------------

BULK_OPERATION_GID = "gid://shopify/BulkOperation/"
#: Where the emulator takes staged uploads (multipart POST) and serves bulk results (GET).
STAGED_UPLOAD_PATH = "/staged-uploads/"
BULK_RESULTS_PATH = "/bulk-results/"
#: Bulk mutations that may run at once per shop: five since API 2026-01, one before.
CONCURRENT_BULK_MUTATIONS_FROM = "2026-01"


@dataclass
class _BulkOperation:
    """One bulk mutation: its lines run in a background thread, results kept as a JSONL file."""

    id: int
    mutation: str
    created_at: str
    status: str = "CREATED"
    completed_at: str | None = None
    object_count: int = 0
    error_code: str | None = None
    result: bytes | None = None

    def as_node(self, base_url: str) -> dict[str, Any]:
        done = self.status == "COMPLETED" and self.object_count > 0
        return {
            "__typename": "BulkOperation",
            "id": f"{BULK_OPERATION_GID}{self.id}",
            "status": self.status,
            "type": "MUTATION",
            "errorCode": self.error_code,
            "createdAt": self.created_at,
            "completedAt": self.completed_at,
            "objectCount": self.object_count,
            "rootObjectCount": self.object_count,
            "fileSize": len(self.result) if done and self.result is not None else None,
            "url": f"{base_url}{BULK_RESULTS_PATH}{self.id}.jsonl" if done else None,
            "partialDataUrl": None,
            "query": self.mutation,
        }


def _bulk_mutation_error(message: str, code: str, field_name: str | None = None) -> dict[str, Any]:
    return {"field": [field_name] if field_name else None, "message": message, "code": code}


class _Bulk:
    """Staged uploads and bulk mutations, in memory. A bulk line runs like one ``/graphql.json`` request
    would, but charges nothing to the cost bucket (as on Shopify); result lines come in no particular
    order, each with the ``__lineNumber`` (from 0) of its input line."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uploads: dict[str, bytes | None] = {}  # staged key -> uploaded JSONL (None until uploaded)
        self.operations: dict[int, _BulkOperation] = {}
        self._next_id = 90000

    def stage(self, filename: str) -> str:
        key = f"tmp/emulator/bulk/{uuid.uuid4()}/{filename}"
        with self.lock:
            self.uploads[key] = None
        return key

    def receive(self, key: str, data: bytes) -> bool:
        """Store an uploaded file under a key ``stagedUploadsCreate`` issued; ``False`` for unknown keys."""
        with self.lock:
            if key not in self.uploads:
                return False
            self.uploads[key] = data
            return True

    def latest(self, kind: str) -> _BulkOperation | None:
        with self.lock:
            return max(self.operations.values(), key=lambda o: o.id, default=None) if kind == "MUTATION" else None

    def result(self, operation_id: int) -> bytes | None:
        with self.lock:
            operation = self.operations.get(operation_id)
            return operation.result if operation is not None and operation.status == "COMPLETED" else None

    def start(
        self, store: _Store, api_version: str, mutation: str, path: str
    ) -> tuple[_BulkOperation | None, dict[str, Any]]:
        """Check the mutation and the file, then run the lines in a thread: ``(operation, {})`` or an error."""
        document, problem = _bulk_document(mutation)
        if document is None:
            return None, _bulk_mutation_error(problem, "INVALID_MUTATION", "mutation")
        with self.lock:
            data = self.uploads.get(path)
        if data is None:
            return None, _bulk_mutation_error("The JSONL file could not be found.", "NO_SUCH_FILE", "stagedUploadPath")
        lines = _jsonl_lines(data)
        if lines is None:
            return None, _bulk_mutation_error("Unexpected file structure - expected JSONL", "INVALID_STAGED_UPLOAD_FILE")
        limit = 5 if api_version == "unstable" or api_version >= CONCURRENT_BULK_MUTATIONS_FROM else 1
        with self.lock:
            if sum(o.status in ("CREATED", "RUNNING") for o in self.operations.values()) >= limit:
                message = "A bulk mutation operation for this app and shop is already in progress."
                return None, _bulk_mutation_error(message, "OPERATION_IN_PROGRESS")
            self._next_id += 1
            operation = _BulkOperation(self._next_id, mutation, store.now())
            self.operations[operation.id] = operation
        thread = threading.Thread(target=self._run, args=(operation, store, api_version, document, lines),
                                  name=f"bulk-{operation.id}", daemon=True)
        thread.start()
        return operation, {}

    def _run(
        self, operation: _BulkOperation, store: _Store, api_version: str, document: Any, lines: list[dict[str, Any]]
    ) -> None:
        operation.status = "RUNNING"
        results: list[dict[str, Any]] = []
        try:
            for number, variables in enumerate(lines):
                outcome = execute_sync(SCHEMA, document, root_value=_Root(store, api_version), variable_values=variables)
                line: dict[str, Any] = {"data": outcome.data} if outcome.data is not None else {}
                if outcome.errors:
                    line["errors"] = [_format_error(e, "BAD_REQUEST") for e in outcome.errors]
                line["__lineNumber"] = number
                results.append(line)
                with self.lock:
                    operation.object_count += 1
        except Exception:  # noqa: BLE001 - a crash fails the operation, as INTERNAL_SERVER_ERROR
            logger.exception("bulk operation %s failed", operation.id)
            with self.lock:
                operation.status, operation.error_code = "FAILED", "INTERNAL_SERVER_ERROR"
                operation.completed_at = store.now()
            return
        random.Random(operation.id).shuffle(results)  # Shopify does not keep the input order
        with self.lock:
            operation.result = b"".join(json.dumps(r).encode() + b"\n" for r in results)
            operation.status, operation.completed_at = "COMPLETED", store.now()


def _bulk_document(mutation: str) -> tuple[Any, str]:
    """The parsed bulk mutation (one mutation field), or ``(None, why not)``."""
    try:
        document = parse(mutation)
    except GraphQLError as error:
        return None, f"Invalid mutation: {error.message}"
    errors = validate(SCHEMA, document)
    if errors:
        return None, f"Invalid mutation: {errors[0].message}"
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != 1 or operations[0].operation != OperationType.MUTATION:
        return None, "Bulk mutations take exactly one mutation operation"
    fields = [s for s in operations[0].selection_set.selections if isinstance(s, FieldNode)]
    if len(fields) != 1 or fields[0].name.value in ("bulkOperationRunMutation", "stagedUploadsCreate"):
        return None, "Bulk mutations run exactly one mutation field (not a bulk one)"
    return document, ""


def _jsonl_lines(data: bytes) -> list[dict[str, Any]] | None:
    """Each non-empty line of a JSONL file as the variables of one run, or ``None`` if any is not an object."""
    lines = []
    for raw in data.decode("utf-8", errors="replace").splitlines():
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        lines.append(value)
    return lines


def _multipart_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a ``multipart/form-data`` body by field name."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, bytes] = {}
    for part in message.iter_parts() if message.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            fields[name] = part.get_payload(decode=True) or b""
    return fields


# --------------------------------------------------------------------------------------------
# Locations, metafields, variant updates, inventory adjustments
# --------------------------------------------------------------------------------------------

#: The namespace Shopify uses when ``metafieldsSet`` gets none (the app-reserved one).
APP_NAMESPACE = "$app"
MAX_METAFIELDS_PER_SET = 25
#: ``inventoryAdjustQuantities`` refuses to run without ``@idempotent(key:)`` from this API version on.
IDEMPOTENCY_REQUIRED_FROM = "2026-04"
IDEMPOTENCY_MISSING_MESSAGE = (
    "The @idempotent directive is required for this mutation: add @idempotent(key: \"<unique key>\")"
)
#: ``reason`` values Shopify accepts for inventory adjustments.
INVENTORY_REASONS = frozenset({
    "correction", "cycle_count_available", "damaged", "movement_canceled", "movement_created",
    "movement_received", "movement_updated", "other", "promotion", "quality_control", "received",
    "reservation_created", "reservation_deleted", "reservation_updated", "restock", "safety_stock", "shrinkage",
})
MAX_INVENTORY_QUANTITY = 1_000_000_000


def _location_obj(row: sqlite3.Row) -> dict[str, Any]:
    return {"__typename": "Location", "id": f"{LOCATION_GID}{row['id']}", "name": row["name"],
            "isActive": bool(row["active"])}


def _metafield_obj(row: sqlite3.Row) -> dict[str, Any]:
    owner = str(row["owner_gid"])
    return {
        "__typename": "Metafield",
        "id": f"{METAFIELD_GID}{row['id']}",
        "namespace": row["namespace"],
        "key": row["key"],
        "type": row["type"],
        "value": row["value"],
        "ownerType": "PRODUCTVARIANT" if owner.startswith(VARIANT_GID) else "PRODUCT",
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }


def _stock_at_default_location(conn: sqlite3.Connection, item_id: int, now: str) -> None:
    """A new variant's inventory item is stocked (at 0) at the shop's first active location."""
    conn.execute(
        "INSERT OR IGNORE INTO inventory_levels (item_id, location_id, available, on_hand, updated_at) "
        "SELECT ?, id, 0, 0, ? FROM locations WHERE active = 1 ORDER BY id LIMIT 1",
        (item_id, now),
    )


def _variant_updates(var: dict[str, Any]) -> dict[str, Any]:
    """Column values a variant input sets (``None``: left as is)."""
    item = var.get("inventoryItem") or {}
    tracked = item.get("tracked")
    return {
        "price": var.get("price"),
        "compare_at_price": var.get("compareAtPrice"),
        "barcode": var.get("barcode"),
        "unit_cost": item.get("cost"),
        "tracked": None if tracked is None else int(tracked),
        "sku": item.get("sku"),
    }


def _bulk_update_variants(
    store: _Store, product_id: int, variants: list[dict[str, Any]]
) -> tuple[list[sqlite3.Row], list[dict[str, Any]]]:
    """Apply ``productVariantsBulkUpdate`` all or nothing; ``updatedAt`` moves only on a real change."""
    with store.transaction() as conn:
        existing = {r["id"]: r for r in conn.execute("SELECT * FROM variants WHERE product_id = ?", (product_id,))}
        errors: list[dict[str, Any]] = []
        plan: list[tuple[int, dict[str, Any]]] = []
        for i, var in enumerate(variants):
            if not var.get("id"):
                errors.append(_user_error(["variants", i, "id"], "Product variant id is missing", "PRODUCT_VARIANT_ID_MISSING"))
                continue
            number = _gid_number(var["id"], VARIANT_GID)
            if number is None or number not in existing:
                errors.append(_user_error(["variants", i, "id"], "Product variant does not exist", "PRODUCT_VARIANT_DOES_NOT_EXIST"))
                continue
            if var.get("price") is not None and Decimal(var["price"]) < 0:
                errors.append(_user_error(["variants", i, "price"], "Price must be greater than or equal to 0", "NEGATIVE_PRICE_VALUE"))
                continue
            plan.append((number, var))
        if errors:
            return [], errors
        now, changed = store.now(), False
        for number, var in plan:
            sets = {c: v for c, v in _variant_updates(var).items() if v is not None and v != existing[number][c]}
            if sets:
                changed = True
                sets["updated_at"] = now
                assignments = ", ".join(f"{column} = ?" for column in sets)
                conn.execute(f"UPDATE variants SET {assignments} WHERE id = ?", (*sets.values(), number))
        if changed:
            conn.execute("UPDATE products SET updated_at = ? WHERE id = ?", (now, product_id))
        marks = ",".join("?" for _ in plan)
        ids = [number for number, _ in plan]
        rows = {r["id"]: r for r in conn.execute(f"SELECT * FROM variants WHERE id IN ({marks})", ids)} if ids else {}
        return [rows[i] for i in ids], []


_METAFIELD_CHECKS: dict[str, Callable[[str], bool]] = {
    "single_line_text_field": lambda v: "\n" not in v,
    "multi_line_text_field": lambda v: True,
    "number_integer": lambda v: re.fullmatch(r"-?\d+", v.strip()) is not None,
    "number_decimal": lambda v: re.fullmatch(r"-?\d+(\.\d+)?", v.strip()) is not None,
    "boolean": lambda v: v in ("true", "false"),
    "json": lambda v: _is_json(v),
    "date_time": lambda v: _parse_when(v) is not None,
    "url": lambda v: re.match(r"^https?://", v) is not None,
}


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _set_metafields(store: _Store, inputs: list[dict[str, Any]]) -> tuple[list[sqlite3.Row], list[dict[str, Any]]]:
    """Apply ``metafieldsSet`` atomically: all metafields are written, or none (with ``userErrors``)."""
    if len(inputs) > MAX_METAFIELDS_PER_SET:
        message = f"Exceeds the maximum input size of {MAX_METAFIELDS_PER_SET} metafields"
        return [], [_user_error(["metafields"], message, "LESS_THAN_OR_EQUAL_TO")]
    with store.transaction() as conn:
        errors: list[dict[str, Any]] = []
        plan: list[tuple[str, str, str, str, str, sqlite3.Row | None]] = []
        for i, item in enumerate(inputs):
            found = _metafield_problem(conn, item)
            if isinstance(found, dict):
                errors.append({**found, "field": ["metafields", str(i), *found["field"]], "elementIndex": i})
            else:
                plan.append(found)
        if errors:
            return [], errors
        now, ids = store.now(), []
        for owner, namespace, key, kind, value, current in plan:
            if current is None:
                cur = conn.execute(
                    "INSERT INTO metafields (owner_gid, namespace, key, type, value, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (owner, namespace, key, kind, value, now, now),
                )
                ids.append(int(cur.lastrowid))
                continue
            if (current["type"], current["value"]) != (kind, value):
                conn.execute("UPDATE metafields SET type = ?, value = ?, updated_at = ? WHERE id = ?",
                             (kind, value, now, current["id"]))
            ids.append(int(current["id"]))
        return [conn.execute("SELECT * FROM metafields WHERE id = ?", (i,)).fetchone() for i in ids], []


def _metafield_problem(
    conn: sqlite3.Connection, item: dict[str, Any]
) -> dict[str, Any] | tuple[str, str, str, str, str, sqlite3.Row | None]:
    """One ``MetafieldsSetInput`` checked: a user error (field relative to the input), or the write plan."""
    owner, key, value = item["ownerId"], item["key"].strip(), item["value"]
    namespace = (item.get("namespace") or APP_NAMESPACE).strip()
    table = "variants" if owner.startswith(VARIANT_GID) else "products" if owner.startswith(PRODUCT_GID) else None
    number = _gid_number(owner, VARIANT_GID if table == "variants" else PRODUCT_GID)
    if table is None or number is None or conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (number,)).fetchone() is None:
        return _user_error(["ownerId"], "Owner does not exist", "INVALID_VALUE")
    if not key:
        return _user_error(["key"], "Key can't be blank", "BLANK")
    current = conn.execute(
        "SELECT * FROM metafields WHERE owner_gid = ? AND namespace = ? AND key = ?", (owner, namespace, key)
    ).fetchone()
    kind = item.get("type") or (current["type"] if current is not None else None)
    if not kind:
        return _user_error(["type"], "Type can't be blank", "BLANK")
    check = _METAFIELD_CHECKS.get(kind)
    if check is None:
        return _user_error(["type"], f"Type '{kind}' is not supported", "INVALID_TYPE")
    if not check(value):
        return _user_error(["value"], f"Value is invalid for type '{kind}'", "INVALID_VALUE")
    return owner, namespace, key, kind, value, current


def _idempotency_key(info: Any) -> str | None:
    """The ``@idempotent(key:)`` on the field being resolved (literal or variable), if any."""
    for directive in info.field_nodes[0].directives or ():
        if directive.name.value != "idempotent":
            continue
        value = _argument(directive, "key")
        if isinstance(value, VariableNode):
            return info.variable_values.get(value.name.value)
        return value.value if isinstance(value, StringValueNode) else None
    return None


def _adjust_quantities(store: _Store, data: dict[str, Any], key: str | None) -> dict[str, Any]:
    """Run one ``inventoryAdjustQuantities`` at most once per idempotency key, atomically.

    Returns ``{"groupId": ..., "userErrors": [...]}``: the first answer for a key is stored and replayed for
    the same input; the same key with another input is refused (``IDEMPOTENCY_KEY_PARAMETER_MISMATCH``).
    """
    fingerprint = json.dumps(data, sort_keys=True)
    with store.transaction() as conn:
        if key is not None:
            seen = conn.execute(
                "SELECT fingerprint, result_json FROM idempotency_keys WHERE operation = ? AND key = ?",
                ("inventoryAdjustQuantities", key),
            ).fetchone()
            if seen is not None:
                if seen["fingerprint"] == fingerprint:
                    return dict(json.loads(seen["result_json"]))
                message = "The same idempotency key cannot be used with different operation parameters."
                return {"groupId": None, "userErrors": [_user_error([], message, "IDEMPOTENCY_KEY_PARAMETER_MISMATCH")]}
        outcome = _apply_adjustment(conn, data, store.now())
        if key is not None:
            conn.execute(
                "INSERT INTO idempotency_keys (operation, key, fingerprint, result_json, created_at) VALUES (?, ?, ?, ?, ?)",
                ("inventoryAdjustQuantities", key, fingerprint, json.dumps(outcome), store.now()),
            )
        return outcome


def _apply_adjustment(conn: sqlite3.Connection, data: dict[str, Any], now: str) -> dict[str, Any]:
    """Check every change, then apply all of them (or none). Quantities other than ``available`` are not
    modelled, so ``on_hand`` always equals ``available`` and adjusting either moves both."""
    name, reason = data["name"], data["reason"]
    errors: list[dict[str, Any]] = []
    if reason not in INVENTORY_REASONS:
        errors.append(_user_error(["input", "reason"], "The specified reason is invalid", "INVALID_REASON"))
    if name not in ("available", "on_hand"):
        errors.append(_user_error(["input", "name"], "The quantity name must be 'available' or 'on_hand'", "INVALID_QUANTITY_NAME"))
    running: dict[tuple[int, int], int] = {}
    entries: list[dict[str, Any]] = []
    for i, change in enumerate(data["changes"]):
        where: list[str | int] = ["input", "changes", i]
        checked = _checked_change(conn, change, name, running)
        if isinstance(checked, dict):
            errors.append({**checked, "field": [str(p) for p in where] + checked["field"]})
            continue
        item, location, before = checked
        after = before + change["delta"]
        running[(item, location)] = after
        entries.append({"item": item, "location": location, "name": name, "delta": change["delta"], "after": after,
                        "ledger": change.get("ledgerDocumentUri")})
    if errors:
        return {"groupId": None, "userErrors": errors}
    for entry in entries:
        conn.execute(
            "UPDATE inventory_levels SET available = ?, on_hand = ?, updated_at = ? WHERE item_id = ? AND location_id = ?",
            (entry["after"], entry["after"], now, entry["item"], entry["location"]),
        )
    shown = entries + [{**e, "name": "on_hand", "ledger": None} for e in entries if name == "available"]
    cur = conn.execute(
        "INSERT INTO adjustment_groups (reason, reference_uri, changes_json, created_at) VALUES (?, ?, ?, ?)",
        (reason, data.get("referenceDocumentUri"), json.dumps(shown), now),
    )
    return {"groupId": int(cur.lastrowid), "userErrors": []}


def _checked_change(
    conn: sqlite3.Connection, change: dict[str, Any], name: str, running: dict[tuple[int, int], int]
) -> dict[str, Any] | tuple[int, int, int]:
    """One ``InventoryChangeInput`` checked: a user error, or ``(item id, location id, quantity before)``."""
    item = _gid_number(change["inventoryItemId"], INVENTORY_ITEM_GID)
    location = _gid_number(change["locationId"], LOCATION_GID)
    if item is None or conn.execute("SELECT 1 FROM variants WHERE id = ?", (item,)).fetchone() is None:
        return _user_error(["inventoryItemId"], "The specified inventory item could not be found.", "INVALID_INVENTORY_ITEM")
    active = conn.execute("SELECT 1 FROM locations WHERE id = ? AND active = 1", (location,)).fetchone()
    if location is None or active is None:
        return _user_error(["locationId"], "The specified location could not be found.", "INVALID_LOCATION")
    row = conn.execute(
        "SELECT available FROM inventory_levels WHERE item_id = ? AND location_id = ?", (item, location)
    ).fetchone()
    if row is None:
        message = "The specified inventory item is not stocked at the location."
        return _user_error(["locationId"], message, "ITEM_NOT_STOCKED_AT_LOCATION")
    current = running.get((item, location), int(row["available"]))
    problem = _quantity_problem(change, name, current)
    return problem if problem is not None else (item, location, current)


def _quantity_problem(change: dict[str, Any], name: str, current: int) -> dict[str, Any] | None:
    """Ledger document, compare-and-set and bounds checks of one change (``None``: fine)."""
    if name == "on_hand" and not change.get("ledgerDocumentUri"):
        message = "A ledger document URI is required except when adjusting available."
        return _user_error(["ledgerDocumentUri"], message, "INVALID_QUANTITY_DOCUMENT")
    if name == "available" and change.get("ledgerDocumentUri"):
        message = "A ledger document URI is not allowed when adjusting available."
        return _user_error(["ledgerDocumentUri"], message, "INVALID_AVAILABLE_DOCUMENT")
    if "changeFromQuantity" not in change:  # mandatory since 2026-04: a value, or an explicit null
        message = "changeFromQuantity is required: pass the expected quantity, or null to skip the check"
        return {"field": ["changeFromQuantity"], "message": message, "code": None}
    expected = change["changeFromQuantity"]
    if expected is not None and expected != current:
        message = "The changeFromQuantity argument no longer matches the persisted quantity."
        return _user_error(["changeFromQuantity"], message, "CHANGE_FROM_QUANTITY_STALE")
    after = current + change["delta"]
    if after > MAX_INVENTORY_QUANTITY:
        return _user_error(["delta"], "The quantity can't be higher than 1,000,000,000.", "INVALID_QUANTITY_TOO_HIGH")
    if after < -MAX_INVENTORY_QUANTITY:
        return _user_error(["delta"], "The quantity can't be lower than -1,000,000,000.", "INVALID_QUANTITY_TOO_LOW")
    return None


def _user_error(field_path: list[str | int], message: str, code: str) -> dict[str, Any]:
    return {"field": [str(p) for p in field_path], "message": message, "code": code}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _product_set(
    store: _Store, data: dict[str, Any], identifier: dict[str, Any] | None
) -> tuple[int | None, list[dict[str, Any]]]:
    """Apply one ``productSet`` atomically. Returns ``(product id, userErrors)``; no writes on errors."""
    try:
        return _product_set_tx(store, data, identifier), []
    except _Rejected as rejected:
        return None, rejected.errors


class _Rejected(Exception):
    """productSet input refused: carries the ``userErrors``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} user error(s)")
        self.errors = errors


def _product_set_tx(store: _Store, data: dict[str, Any], identifier: dict[str, Any] | None) -> int:
    errors: list[dict[str, Any]] = []
    with store.transaction() as conn:

        def one(sql: str, params: tuple[Any, ...]) -> sqlite3.Row | None:
            return conn.execute(sql, params).fetchone()

        # 1. Which product?
        row: sqlite3.Row | None = None
        wanted_handle: str | None = None
        ident = identifier or {}
        if ident.get("customId") is not None:
            errors.append(_user_error(["identifier", "customId"], "customId is not supported by the emulator", "INVALID_INPUT"))
        product_gid = ident.get("id") or data.get("id")
        if product_gid:
            number = _gid_number(product_gid, PRODUCT_GID)
            row = one("SELECT * FROM products WHERE id = ?", (number,)) if number is not None else None
            if row is None:
                where = ["identifier", "id"] if ident.get("id") else ["input", "id"]
                errors.append(_user_error(where, "Product does not exist", "PRODUCT_DOES_NOT_EXIST"))
        elif ident.get("handle"):
            wanted_handle = ident["handle"]
            row = one("SELECT * FROM products WHERE handle = ?", (wanted_handle,))
        creating = row is None

        # 2. Product fields.
        title = data.get("title")
        if (creating and not (title or "").strip()) or (title is not None and not title.strip()):
            errors.append(_user_error(["input", "title"], "Title can't be blank", "BLANK"))
        handle: str | None = None
        if data.get("handle") is not None:
            handle = _slug(data["handle"])
            if not handle:
                errors.append(_user_error(["input", "handle"], "Handle is invalid", "INVALID_INPUT"))
        elif creating:
            handle = _slug(wanted_handle) if wanted_handle else None
        if handle:
            clash = one("SELECT id FROM products WHERE handle = ?", (handle,))
            if clash is not None and (row is None or clash["id"] != row["id"]):
                errors.append(_user_error(["input", "handle"], f"Handle '{handle}' has already been taken", "HANDLE_NOT_UNIQUE"))
        elif creating and title and title.strip():
            base = _slug(title) or "product"
            handle, n = base, 0
            while one("SELECT id FROM products WHERE handle = ?", (handle,)) is not None:
                n += 1
                handle = f"{base}-{n}"

        # 3. Options and variants (codependent).
        options_in = data.get("productOptions")
        variants_in = data.get("variants")
        if options_in is None and variants_in is not None:
            errors.append(_user_error(["input", "productOptions"], "productOptions are required with variants", "PRODUCT_OPTIONS_INPUT_MISSING"))
        if variants_in is None and options_in is not None:
            errors.append(_user_error(["input", "variants"], "variants are required with productOptions", "VARIANTS_INPUT_MISSING"))
        options: list[dict[str, Any]] | None = None
        plan: list[tuple[int | None, dict[str, Any], list[dict[str, str]]]] = []
        if options_in is not None and variants_in is not None:
            options = []
            for i, opt in enumerate(options_in):
                name = (opt.get("name") or "").strip()
                values = [(v.get("name") or "").strip() for v in (opt.get("values") or [])]
                if not name:
                    errors.append(_user_error(["input", "productOptions", i, "name"], "Option name can't be blank", "BLANK"))
                elif any(o["name"] == name for o in options):
                    errors.append(_user_error(["input", "productOptions", i, "name"], f"Duplicated option name '{name}'", "DUPLICATED_OPTION_NAME"))
                if not values or any(not v for v in values):
                    errors.append(_user_error(["input", "productOptions", i, "values"], "Option values can't be blank", "BLANK"))
                elif len(set(values)) != len(values):
                    errors.append(_user_error(["input", "productOptions", i, "values"], "Duplicated option value", "DUPLICATED_OPTION_VALUE"))
                options.append({"name": name, "values": values})
            existing = [] if row is None else conn.execute(
                "SELECT * FROM variants WHERE product_id = ?", (row["id"],)
            ).fetchall()
            by_id = {r["id"]: r for r in existing}
            by_combo = {_combo(json.loads(r["option_values_json"])): r for r in existing}
            seen: set[tuple[tuple[str, str], ...]] = set()
            claimed: set[int] = set()
            for i, var in enumerate(variants_in):
                where = ["input", "variants", i]
                chosen: list[dict[str, str]] = []
                for j, ov in enumerate(var.get("optionValues") or []):
                    oname, vname = ov.get("optionName"), ov.get("name")
                    option = next((o for o in options if o["name"] == oname), None)
                    if option is None:
                        errors.append(_user_error([*where, "optionValues", j, "optionName"], f"Option '{oname}' does not exist", "OPTION_DOES_NOT_EXIST"))
                    elif vname not in option["values"]:
                        errors.append(_user_error([*where, "optionValues", j, "name"], f"Option value '{vname}' does not exist", "OPTION_VALUE_DOES_NOT_EXIST"))
                    else:
                        chosen.append({"optionName": oname, "name": vname})
                if {c["optionName"] for c in chosen} != {o["name"] for o in options} or len(chosen) != len(options):
                    errors.append(_user_error([*where, "optionValues"], "A value is required for every option, once", "INVALID_VARIANT"))
                combo = _combo(chosen)
                if combo in seen:
                    errors.append(_user_error([*where, "optionValues"], "Duplicate variant option values", "DUPLICATE_VARIANT"))
                seen.add(combo)
                if var.get("price") is not None and Decimal(var["price"]) < 0:
                    errors.append(_user_error([*where, "price"], "Price must be greater than or equal to 0", "INVALID_VARIANT"))
                target: int | None = None
                if var.get("id"):
                    number = _gid_number(var["id"], VARIANT_GID)
                    if number is None or number not in by_id:
                        errors.append(_user_error([*where, "id"], "Product variant does not exist", "PRODUCT_VARIANT_DOES_NOT_EXIST"))
                    else:
                        target = number
                elif combo in by_combo and by_combo[combo]["id"] not in claimed:
                    target = by_combo[combo]["id"]
                if target is not None:
                    claimed.add(target)
                plan.append((target, var, chosen))
        elif creating:
            options = [{"name": "Title", "values": ["Default Title"]}]
            plan = [(None, {"price": "0.00"}, [{"optionName": "Title", "name": "Default Title"}])]

        if errors:
            raise _Rejected(errors)  # rolls the transaction back

        # 4. Write.
        now = store.now()
        if row is None:
            cur = conn.execute(
                "INSERT INTO products (handle, title, status, description_html, vendor, product_type, tags_json, "
                "options_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    handle,
                    title.strip(),
                    data.get("status") or "ACTIVE",
                    data.get("descriptionHtml") or "",
                    data.get("vendor") or "",
                    data.get("productType") or "",
                    json.dumps(data.get("tags") or []),
                    json.dumps(options or []),
                    now,
                    now,
                ),
            )
            product_id = int(cur.lastrowid)
        else:
            product_id = int(row["id"])
            updates: dict[str, Any] = {"updated_at": now}
            for key, column in (
                ("title", "title"),
                ("status", "status"),
                ("descriptionHtml", "description_html"),
                ("vendor", "vendor"),
                ("productType", "product_type"),
            ):
                if data.get(key) is not None:
                    updates[column] = data[key].strip() if key == "title" else data[key]
            if data.get("tags") is not None:
                updates["tags_json"] = json.dumps(data["tags"])
            if handle:
                updates["handle"] = handle
            if options is not None:
                updates["options_json"] = json.dumps(options)
            assignments = ", ".join(f"{column} = ?" for column in updates)
            conn.execute(f"UPDATE products SET {assignments} WHERE id = ?", (*updates.values(), product_id))
        if options is not None:
            keep: list[int] = []
            for position, (target, var, chosen) in enumerate(plan, start=1):
                sku = var.get("sku")
                if sku is None and isinstance(var.get("inventoryItem"), dict):
                    sku = var["inventoryItem"].get("sku")
                values = json.dumps(chosen)
                pos = var.get("position") or position
                item = var.get("inventoryItem") or {}
                if target is None:
                    tracked = item.get("tracked")
                    cur = conn.execute(
                        "INSERT INTO variants (product_id, position, sku, price, compare_at_price, barcode, "
                        "option_values_json, created_at, updated_at, unit_cost, tracked) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (product_id, pos, sku, var.get("price") or "0.00", var.get("compareAtPrice"),
                         var.get("barcode"), values, now, now, item.get("cost"), 1 if tracked is None else int(tracked)),
                    )
                    keep.append(int(cur.lastrowid))
                    _stock_at_default_location(conn, int(cur.lastrowid), now)
                else:
                    sets = {"position": pos, "option_values_json": values, "updated_at": now, "sku": sku}
                    sets.update(_variant_updates(var))
                    sets = {column: value for column, value in sets.items() if value is not None}
                    assignments = ", ".join(f"{column} = ?" for column in sets)
                    conn.execute(f"UPDATE variants SET {assignments} WHERE id = ?", (*sets.values(), target))
                    keep.append(target)
            marks = ",".join("?" for _ in keep)
            conn.execute(
                f"DELETE FROM variants WHERE product_id = ? AND id NOT IN ({marks})" if keep
                else "DELETE FROM variants WHERE product_id = ?",
                (product_id, *keep),
            )
        return product_id


def _combo(values: list[dict[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((v["optionName"], v["name"]) for v in values))


# --------------------------------------------------------------------------------------------
# Cost estimate and leaky bucket
# --------------------------------------------------------------------------------------------


def _argument(node: FieldNode, name: str) -> Any:
    """The value node of argument ``name`` of a field, or ``None``."""
    return next((a.value for a in node.arguments or () if a.name.value == name), None)


def _int_argument(node: FieldNode, name: str, variables: dict[str, Any]) -> int | None:
    value = _argument(node, name)
    if isinstance(value, IntValueNode):
        return int(value.value)
    if isinstance(value, VariableNode):
        raw = variables.get(value.name.value)
        return int(raw) if isinstance(raw, int) and not isinstance(raw, bool) else None
    return None


def _list_length(node: FieldNode, name: str, variables: dict[str, Any]) -> int | None:
    """How many items the list argument ``name`` holds (literal or variable), ``None`` if absent."""
    value = _argument(node, name)
    if value is None:
        return None
    if isinstance(value, ListValueNode):
        return len(value.values)
    if isinstance(value, VariableNode):
        raw = variables.get(value.name.value)
        return len(raw) if isinstance(raw, list) else 1 if raw is not None else 0
    return 1


def _selection_cost(
    selection_set: SelectionSetNode | None,
    parent: GraphQLObjectType | GraphQLInterfaceType,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
) -> float:
    if selection_set is None:
        return 0
    total = 0.0
    branches: list[float] = []  # type-conditioned selections on an interface: the dearest one counts
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            field_def = parent.fields.get(selection.name.value)
            if field_def is None:
                continue  # __typename and friends
            named = get_named_type(field_def.type)
            if not isinstance(named, (GraphQLObjectType, GraphQLInterfaceType)):
                continue  # scalars and enums are free
            children = _selection_cost(selection.selection_set, named, fragments, variables)
            unwrapped = field_def.type.of_type if isinstance(field_def.type, GraphQLNonNull) else field_def.type
            ids = _list_length(selection, "ids", variables)
            if named.name.endswith("Connection"):
                first = _int_argument(selection, "first", variables) or 0
                per_node = _selection_cost(_without_page_info(selection.selection_set), named, fragments, variables)
                total += 2 + first * max(1, per_node)  # pageInfo is part of the connection's 2
            elif isinstance(unwrapped, GraphQLList) and parent.name.endswith("Connection"):
                total += children  # a connection's `nodes`: already counted by `first`
            elif isinstance(unwrapped, GraphQLList) and ids is not None:
                total += ids * (1 + children)  # nodes(ids:): one object per id
            else:
                total += 1 + children
            continue
        if isinstance(selection, InlineFragmentNode):
            condition = selection.type_condition.name.value if selection.type_condition is not None else None
            body = selection.selection_set
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is None:
                continue
            condition, body = fragment.type_condition.name.value, fragment.selection_set
        else:
            continue
        candidate = SCHEMA.get_type(condition) if condition else None
        target = candidate if isinstance(candidate, GraphQLObjectType) else parent
        cost = _selection_cost(body, target, fragments, variables)
        if isinstance(parent, GraphQLInterfaceType) and target is not parent:
            branches.append(cost)
        else:
            total += cost
    return total + max(branches, default=0.0)


def _metafield_owners_cost(node: FieldNode, variables: dict[str, Any]) -> float:
    """``metafieldsSet``'s dynamic part: each distinct owner once, weighted by its type."""
    value = _argument(node, "metafields")
    owners: set[str] = set()
    if isinstance(value, VariableNode):
        raw = variables.get(value.name.value)
        owners = {str(m.get("ownerId")) for m in raw if isinstance(m, dict)} if isinstance(raw, list) else set()
    elif isinstance(value, ListValueNode):
        for item in value.values:
            given = next((f.value for f in getattr(item, "fields", ()) if f.name.value == "ownerId"), None)
            if isinstance(given, VariableNode):
                owners.add(str(variables.get(given.name.value)))
            elif isinstance(given, StringValueNode):
                owners.add(given.value)
    return sum(next((w for prefix, w in METAFIELD_OWNER_WEIGHTS.items() if o.startswith(prefix)), 0) for o in owners)


def _without_page_info(selection_set: SelectionSetNode | None) -> SelectionSetNode | None:
    if selection_set is None:
        return None
    kept = tuple(s for s in selection_set.selections if not (isinstance(s, FieldNode) and s.name.value == "pageInfo"))
    return SelectionSetNode(selections=kept)


def _product_set_variants(node: FieldNode, variables: dict[str, Any]) -> int:
    """How many variants a ``productSet`` sends (``input.variants``, literal or variable)."""
    value = _argument(node, "input")
    if isinstance(value, VariableNode):
        raw = variables.get(value.name.value)
        variants = raw.get("variants") if isinstance(raw, dict) else None
        return len(variants) if isinstance(variants, list) else 0
    if isinstance(value, ObjectValueNode):
        given = next((f.value for f in value.fields if f.name.value == "variants"), None)
        if isinstance(given, ListValueNode):
            return len(given.values)
        if isinstance(given, VariableNode):
            raw = variables.get(given.name.value)
            return len(raw) if isinstance(raw, list) else 0
    return 0


def estimate_cost(document: Any, operation: OperationDefinitionNode, variables: dict[str, Any]) -> float:
    """Static cost of one operation (see the module docstring)."""
    if operation.operation == OperationType.MUTATION:
        total = 0.0
        for selection in operation.selection_set.selections:
            if isinstance(selection, FieldNode) and selection.name.value == "productSet":
                total += PRODUCT_SET_BASE_COST + PRODUCT_SET_VARIANT_COST * _product_set_variants(selection, variables)
            elif isinstance(selection, FieldNode) and selection.name.value == "metafieldsSet":
                total += MUTATION_COST + _metafield_owners_cost(selection, variables)
            else:
                total += MUTATION_COST
        return round(max(total, MUTATION_COST), 2)
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    assert SCHEMA.query_type is not None
    return round(max(1.0, _selection_cost(operation.selection_set, SCHEMA.query_type, fragments, variables)), 2)


class _LeakyBucket:
    """Shopify's calculated-cost bucket: ``size`` points, refilled at ``rate`` points per second."""

    def __init__(self, size: float, rate: float) -> None:
        self.size = float(size)
        self.rate = float(rate)
        self._available = float(size)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._available = min(self.size, self._available + (now - self._at) * self.rate)
        self._at = now

    def try_take(self, cost: float) -> tuple[bool, dict[str, float]]:
        """Take ``cost`` points if available; return whether it did and the status after."""
        with self._lock:
            self._refill()
            ok = self._available >= cost
            if ok:
                self._available -= cost
            return ok, self._status()

    def status(self) -> dict[str, float]:
        with self._lock:
            self._refill()
            return self._status()

    def _status(self) -> dict[str, float]:
        return {
            "maximumAvailable": self.size,
            "currentlyAvailable": math.floor(self._available * 100) / 100,
            "restoreRate": self.rate,
        }

    def reset(self) -> None:
        with self._lock:
            self._available, self._at = self.size, time.monotonic()


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


@dataclass
class EmulatorStats:
    """What the emulator has answered (for tests and the CLI)."""

    requests: int = 0
    graphql_responses: int = 0
    throttled: int = 0
    auth_failures: int = 0
    injected_failures: int = 0
    #: Requests per root field that reached GraphQL execution or throttling (e.g. ``productSet``, ``nodes``).
    operations: dict[str, int] = field(default_factory=dict)


@dataclass
class _Fault:
    status: int
    remaining: int
    retry_after: float | None
    only: str | None = None  # answer only requests whose first root field is this (e.g. "nodes")
    after_apply: bool = False  # run the request, then drop the connection without answering


def _root_field(raw: bytes) -> str | None:
    """The first root field of a request body's operation (``productSet``, ``nodes``...), if readable."""
    try:
        document = parse(json.loads(raw.decode("utf-8"))["query"])
    except Exception:  # noqa: BLE001 - unreadable bodies get their real answer later
        return None
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            first = next((s for s in definition.selection_set.selections if isinstance(s, FieldNode)), None)
            return first.name.value if first is not None else None
    return None


@dataclass
class _App:
    store: _Store
    bucket: _LeakyBucket
    access_token: str | None
    locations: tuple[str, ...] = DEFAULT_LOCATIONS
    bulk: _Bulk = field(default_factory=_Bulk)
    stats: EmulatorStats = field(default_factory=EmulatorStats)
    faults: list[_Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, attribute: str) -> None:
        with self.lock:
            setattr(self.stats, attribute, getattr(self.stats, attribute) + 1)

    def count_operation(self, operation: OperationDefinitionNode) -> None:
        first = next((s for s in operation.selection_set.selections if isinstance(s, FieldNode)), None)
        name = first.name.value if first is not None else "?"
        with self.lock:
            self.stats.operations[name] = self.stats.operations.get(name, 0) + 1

    def take_fault(self, raw: bytes) -> _Fault | None:
        """The injected failure this request gets, if any (faults are used up in the order injected)."""
        with self.lock:
            self.faults = [f for f in self.faults if f.remaining > 0]
            if not self.faults:
                return None
        operation = _root_field(raw) if any(f.only for f in self.faults) else None
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0 and (fault.only is None or fault.only == operation):
                    fault.remaining -= 1
                    self.stats.injected_failures += 1
                    return fault
            return None

    def authorised(self, token: str | None) -> bool:
        if not token or not token.strip():
            return False
        if self.access_token is None:
            return True
        return hmac.compare_digest(token.encode(), self.access_token.encode())

    def graphql(
        self, raw: bytes, content_type: str, api_version: str = "unstable", base_url: str = ""
    ) -> tuple[int, dict[str, Any]]:
        """Answer one GraphQL request body: ``(HTTP status, JSON body)``."""
        try:
            if content_type.startswith("application/graphql"):
                payload: Any = {"query": raw.decode("utf-8")}
            else:
                payload = json.loads(raw.decode("utf-8") or "null")
            query = payload["query"]
            variables = payload.get("variables") or {}
            operation_name = payload.get("operationName")
            if not isinstance(query, str) or not isinstance(variables, dict):
                raise TypeError("bad shapes")
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            return 400, {"errors": {"query": "Required parameter missing or invalid"}}

        try:
            document = parse(query)
        except GraphQLError as error:
            return 200, self._answer_errors([error], "PARSE_ERROR", 0)
        validation_errors = validate(SCHEMA, document)
        if validation_errors:
            return 200, self._answer_errors(validation_errors, "GRAPHQL_VALIDATION_FAILED", 0)
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            error = GraphQLError("An operation name is required" if operation_name is None else f"No operation named '{operation_name}'")
            return 200, self._answer_errors([error], "BAD_REQUEST", 0)

        self.count_operation(operation)
        cost = estimate_cost(document, operation, variables)
        max_cost = min(SINGLE_QUERY_MAX_COST, self.bucket.size)
        if cost > max_cost:
            message = f"Query cost is {cost:g}, which exceeds the single query max cost limit ({max_cost:g})."
            return 200, {
                "errors": [{"message": message, "extensions": {"code": "MAX_COST_EXCEEDED", "cost": cost,
                                                               "maxCost": max_cost}}],
                "extensions": self._cost(cost, None, self.bucket.status()),
            }
        ok, status = self.bucket.try_take(cost)
        if not ok:
            self.count("throttled")
            return 200, {
                "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": _THROTTLE_DOCS}}],
                "extensions": self._cost(cost, None, status),
            }
        result = execute_sync(
            SCHEMA, document, root_value=_Root(self.store, api_version, self.bulk, base_url), variable_values=variables, operation_name=operation_name
        )
        body: dict[str, Any] = {}
        if result.errors:
            body["errors"] = [_format_error(e, "BAD_REQUEST") for e in result.errors]
        if result.data is not None or not result.errors:
            body["data"] = result.data
        body["extensions"] = self._cost(cost, cost, self.bucket.status())
        return 200, body

    def _answer_errors(self, errors: list[GraphQLError], code: str, cost: float) -> dict[str, Any]:
        return {
            "errors": [_format_error(e, code) for e in errors],
            "extensions": self._cost(cost, cost, self.bucket.status()),
        }

    @staticmethod
    def _cost(requested: float, actual: float | None, status: dict[str, float]) -> dict[str, Any]:
        return {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": status}}


def _format_error(error: GraphQLError, default_code: str) -> dict[str, Any]:
    formatted = dict(error.formatted)
    extensions = dict(formatted.get("extensions") or {})
    extensions.setdefault("code", default_code)
    formatted["extensions"] = extensions
    return formatted


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive + small writes would otherwise stall ~40 ms per answer
    server_version = "poflow-shopify-emulator/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("emulator: " + format, *args)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _base_url(self) -> str:
        """This server as the client reached it (for the upload and result URLs we hand out)."""
        host, port = self.server.server_address[:2]
        return f"http://{self.headers.get('Host') or f'{host}:{port}'}"

    def _staged_upload(self, raw: bytes) -> None:
        """A staged upload (multipart form: ``key`` and the other parameters, then ``file``)."""
        fields = _multipart_fields(self.headers.get("Content-Type") or "", raw)
        key = fields.get("key", b"").decode("utf-8", errors="replace")
        too_large = image_upload_problem(key, fields.get("file", b""))
        if too_large is not None:
            self._send(400, {"errors": too_large})
            return
        if "file" not in fields or not self.server.app.bulk.receive(key, fields["file"]):
            self._send(403, {"errors": "unknown or missing staged upload key, or no file"})
            return
        body = f"<PostResponse><Key>{key}</Key></PostResponse>".encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        """Bulk operation results (``/bulk-results/<id>.jsonl``); everything else is not allowed."""
        path = urlsplit(self.path).path
        found = re.fullmatch(re.escape(BULK_RESULTS_PATH) + r"(\d+)\.jsonl", path)
        if found is None:
            self._not_allowed()
            return
        self.server.app.count("requests")
        data = self.server.app.bulk.result(int(found.group(1)))
        if data is None:
            self._send(404, {"errors": "Not Found"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/jsonl")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        app = self.server.app
        raw = self._read_body()
        app.count("requests")
        if urlsplit(self.path).path == STAGED_UPLOAD_PATH:
            self._staged_upload(raw)
            return
        match = _PATH_RE.match(urlsplit(self.path).path)
        if match is None:
            self._send(404, {"errors": "Not Found"})
            return
        if not app.authorised(self.headers.get("X-Shopify-Access-Token")):
            app.count("auth_failures")
            self._send(401, _AUTH_FAILED)
            return
        fault = app.take_fault(raw)
        content_type = self.headers.get("Content-Type") or "application/json"
        if fault is not None and fault.after_apply:
            app.graphql(raw, content_type, match.group("version"), self._base_url())
            self.close_connection = True  # the answer is lost on the way back
            return
        if fault is not None:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            self._send(fault.status, {"errors": f"injected HTTP {fault.status}"}, headers)
            return
        status, body = app.graphql(raw, content_type, match.group("version"), self._base_url())
        if "extensions" in body:
            app.count("graphql_responses")
        self._send(status, body, {"X-Shopify-API-Version": match.group("version")})

    def _not_allowed(self) -> None:
        self._read_body()
        self.server.app.count("requests")
        found = _PATH_RE.match(urlsplit(self.path).path) is not None
        self._send(405 if found else 404, {"errors": "Method Not Allowed" if found else "Not Found"})

    do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: _App) -> None:
        self.app = app
        super().__init__(address, _Handler)


class EmulatorHandle:
    """A running emulator: ``url`` is the shop URL (``http://127.0.0.1:PORT``)."""

    def __init__(self, server: _Server, thread: threading.Thread, state_path: Path | None) -> None:
        self._server = server
        self._thread = thread
        self.state_path = state_path
        host, port = server.server_address[:2]
        self.host = "127.0.0.1" if host in ("0.0.0.0", "") else str(host)
        self.port = int(port)
        self._stopped = False

    @property
    def url(self) -> str:
        """The shop URL to hand to :class:`~poflow_dagster.shopify.client.ShopifyClient`."""
        return f"http://{self.host}:{self.port}"

    @property
    def stats(self) -> EmulatorStats:
        """Live counters (requests, GraphQL responses, throttled answers, ...)."""
        return self._server.app.stats

    def count_products(self) -> int:
        """How many products the store holds."""
        return self._server.app.store.count_products()

    def reset(self) -> None:
        """Delete every product, variant, stock level, metafield, idempotency key and bulk operation (locations
        back to the configured ones), refill the cost bucket and zero the counters."""
        app = self._server.app
        app.store.reset(app.locations)
        app.bucket.reset()
        app.bulk = _Bulk()
        with app.lock:
            app.stats = EmulatorStats()
            app.faults.clear()

    def inject_failures(
        self, status: int, count: int = 1, *, retry_after: float | None = None, only: str | None = None
    ) -> None:
        """Answer the next ``count`` authorised requests with HTTP ``status`` (e.g. 503, 429); with ``only``,
        just the requests whose first root field is ``only`` (e.g. ``"nodes"`` to fail only read-backs)."""
        with self._server.app.lock:
            self._server.app.faults.append(_Fault(status, count, retry_after, only))

    def drop_answers(self, count: int = 1, *, only: str | None = None) -> None:
        """Run the next ``count`` requests (just those whose first root field is ``only``, if given), then
        close the connection without answering: the change is made, the client sees a network error."""
        with self._server.app.lock:
            self._server.app.faults.append(_Fault(0, count, None, only, after_apply=True))

    def set_clock(self, when: dt.datetime | None) -> None:
        """Freeze the store's clock at ``when`` (``createdAt``/``updatedAt`` of writes); ``None`` unfreezes."""
        store = self._server.app.store
        store.clock = (lambda: when) if when is not None else (lambda: dt.datetime.now(dt.timezone.utc))

    def add_location(self, name: str) -> str:
        """Add an active location; returns its GID (new variants are stocked at the first one only)."""
        return f"{LOCATION_GID}{self._server.app.store.add_location(name)}"

    @property
    def default_location(self) -> str:
        """The GID of the first active location (where new variants are stocked)."""
        rows = self._server.app.store.query("SELECT id FROM locations WHERE active = 1 ORDER BY id LIMIT 1")
        return f"{LOCATION_GID}{rows[0]['id']}"

    def set_bucket(self, *, size: float | None = None, restore_rate: float | None = None) -> None:
        """Change the cost bucket (refilled to its new size)."""
        bucket = self._server.app.bucket
        with bucket._lock:
            if size is not None:
                bucket.size = float(size)
            if restore_rate is not None:
                bucket.rate = float(restore_rate)
        bucket.reset()

    def stop(self) -> None:
        """Stop serving and close the store (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server.app.store.close()

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmulatorHandle(url={self.url!r}, state_path={self.state_path!r})"


def _make_server(
    host: str,
    port: int,
    state_path: Path | None,
    access_token: str | None,
    bucket_size: float,
    restore_rate: float,
    locations: tuple[str, ...] = DEFAULT_LOCATIONS,
) -> _Server:
    if bucket_size <= 0 or restore_rate <= 0:
        raise ValueError("bucket_size and restore_rate must be positive")
    path = Path(state_path).resolve() if state_path is not None else None
    if not locations:
        raise ValueError("the shop needs at least one location")
    app = _App(store=_Store(path, tuple(locations)), bucket=_LeakyBucket(bucket_size, restore_rate),
               access_token=access_token, locations=tuple(locations))
    return _Server((host, port), app)


def start_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    state_path: Path | None = None,
    access_token: str | None = None,
    bucket_size: float = 2000,
    restore_rate: float = 100,
    locations: tuple[str, ...] = DEFAULT_LOCATIONS,
) -> EmulatorHandle:
    """Start the emulator in a daemon thread (``port=0`` picks a free port) and return its handle.

    ``locations`` names the shop's locations when the store is new (the first is the default one).
    """
    server = _make_server(host, port, state_path, access_token, bucket_size, restore_rate, tuple(locations))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"shopify-emulator-{server.server_address[1]}", daemon=True)
    thread.start()
    return EmulatorHandle(server, thread, server.app.store.path)


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 0,
    state_path: Path | None = None,
    *,
    access_token: str | None = None,
    bucket_size: float = 2000,
    restore_rate: float = 100,
    locations: tuple[str, ...] = DEFAULT_LOCATIONS,
) -> None:
    """Run the emulator in the foreground until interrupted (for ``poflow shopify-emulator``).

    Prints exactly one line with the shop URL once it is listening.
    """
    server = _make_server(host, port, state_path, access_token, bucket_size, restore_rate, tuple(locations))
    bound_host, bound_port = server.server_address[:2]
    shown_host = "127.0.0.1" if bound_host in ("0.0.0.0", "") else bound_host
    where = server.app.store.path or "in memory"
    print(f"Shopify emulator listening on http://{shown_host}:{bound_port} (state: {where})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.app.store.close()
