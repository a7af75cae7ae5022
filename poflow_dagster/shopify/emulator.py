"""The bundled local Shopify emulator: a real HTTP server speaking the Admin GraphQL wire format.

* ``POST /admin/api/{version}/graphql.json`` only, ``X-Shopify-Access-Token`` required (401 otherwise;
  when started with ``access_token=...`` only that token is accepted).
* Queries are parsed, validated and executed by ``graphql-core`` against a small SDL schema
  (``Product``, ``ProductVariant``, ``productSet``, ``product``, ``productByIdentifier``, ``products``,
  ``productVariants``, ``node``, ``nodes``, ``shop``), so malformed queries fail like they do on Shopify.
* Leaky-bucket cost limiting (default 2000 points, 100 points/s): every answer carries
  ``extensions.cost`` (``requestedQueryCost``, ``actualQueryCost``, ``throttleStatus``); when the
  bucket cannot pay, the answer is HTTP 200 with ``{"errors": [{"message": "Throttled",
  "extensions": {"code": "THROTTLED"}}]}`` like Shopify.
* Products live in SQLite (WAL) at ``state_path`` (in memory when ``None``), so several processes
  pointing at one file see one store. GIDs look like ``gid://shopify/Product/1001``.

Cost model (a static estimate, charged in full), after Shopify's documented rules: scalars and enums 0;
an object field 1 plus its children; an interface the most expensive of its possible selections; a
connection ``2 + first x (cost of one node)``; ``nodes(ids:)`` one node's cost per id (at most 250 ids);
``productSet`` ``10 + 0.2 x variants`` (its dynamic cost since API 2025-10; we send no files or
metafields), any other mutation 10. A query whose cost exceeds 1000 points (or the bucket) is refused with
``MAX_COST_EXCEEDED``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import logging
import math
import re
import sqlite3
import threading
import time
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

__all__ = ["EmulatorHandle", "EmulatorStats", "serve_forever", "start_emulator", "SCHEMA_SDL"]

logger = logging.getLogger(__name__)

SCHEMA_SDL = """
\"\"\"A decimal amount, sent and returned as a string (e.g. "19.99").\"\"\"
scalar Money
scalar Decimal
scalar HTML
scalar DateTime

enum ProductStatus { ACTIVE ARCHIVED DRAFT }
enum ProductOperationStatus { ACTIVE COMPLETE CREATED }
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

input UniqueMetafieldValueInput { namespace: String key: String! value: String! }
input ProductSetIdentifiers { id: ID handle: String customId: UniqueMetafieldValueInput }
input ProductIdentifierInput { id: ID handle: String customId: UniqueMetafieldValueInput }
input OptionValueSetInput { id: ID name: String }
input OptionSetInput { id: ID name: String position: Int values: [OptionValueSetInput!] }
input VariantOptionValueInput { id: ID name: String optionId: ID optionName: String }
input InventoryItemInput { sku: String tracked: Boolean requiresShipping: Boolean cost: Decimal }
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
  productVariants(first: Int, after: String, query: String, reverse: Boolean = false): ProductVariantConnection!
  node(id: ID!): Node
  nodes(ids: [ID!]!): [Node]!
}

type Mutation {
  productSet(input: ProductSetInput!, synchronous: Boolean = true, identifier: ProductSetIdentifiers): ProductSetPayload
}
"""

PRODUCT_GID = "gid://shopify/Product/"
VARIANT_GID = "gid://shopify/ProductVariant/"
MAX_PAGE_SIZE = 250
MUTATION_COST = 10
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
    schema = build_schema(SCHEMA_SDL)
    for name in ("Money", "Decimal"):
        scalar = schema.type_map[name]
        scalar.serialize = lambda value: _money_str(Decimal(str(value)))  # type: ignore[attr-defined]
        scalar.parse_value = _parse_money  # type: ignore[attr-defined]
        scalar.parse_literal = _parse_money_literal  # type: ignore[attr-defined]
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
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_variants_product ON variants(product_id);
CREATE INDEX IF NOT EXISTS ix_variants_sku ON variants(sku);
"""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Store:
    """Products and variants in SQLite; one connection guarded by a lock, writes in IMMEDIATE txns."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
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
                for table, start in (("products", 1000), ("variants", 2000)):
                    self._conn.execute(
                        "INSERT INTO sqlite_sequence(name, seq) SELECT ?, ? "
                        "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?)",
                        (table, start, table),
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

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

    def reset(self) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM variants")
            conn.execute("DELETE FROM products")

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
            else:
                buf.append(ch)
                i += 1
        value = (quoted_value or "") + "".join(buf)
        if field_name is None and not negated and value in ("OR", "AND"):
            if value == "OR":
                groups.append([])
            continue
        groups[-1].append(_Term(field_name.lower() if field_name else None, value, negated))
    return [g for g in groups if g] or [[]]


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


class _Root:
    """Root value for queries and mutations over one store."""

    def __init__(self, store: _Store) -> None:
        self.store = store

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
            "createdAt": row["created_at"],
            "updatedAt": row["updated_at"],
        }

    # -- Query ---------------------------------------------------------------------------------

    def shop(self, _info: Any) -> dict[str, Any]:
        return {"name": "poflow emulator", "myshopifyDomain": "poflow-emulator.myshopify.com", "currencyCode": "USD"}

    def product(self, _info: Any, id: str) -> dict[str, Any] | None:  # noqa: A002 - GraphQL arg name
        number = _gid_number(id, PRODUCT_GID)
        row = self.store.product(number) if number is not None else None
        return self.product_obj(row) if row is not None else None

    def node(self, _info: Any, id: str) -> dict[str, Any] | None:  # noqa: A002 - GraphQL arg name
        if id.startswith(VARIANT_GID):
            number = _gid_number(id, VARIANT_GID)
            rows = self.store.query("SELECT * FROM variants WHERE id = ?", (number,)) if number is not None else []
            return self.variant_obj(rows[0]) if rows else None
        if id.startswith(PRODUCT_GID):
            return self.product(_info, id)
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
        else:
            hit = True  # unknown filters are ignored, as on Shopify
        return hit != term.negated

    def productVariants(  # noqa: N802
        self, _info: Any, first: int | None = None, after: str | None = None, query: str | None = None, reverse: bool = False
    ) -> dict[str, Any]:
        rows = self.store.query(
            "SELECT v.*, p.title AS product_title, p.status AS product_status "
            "FROM variants v JOIN products p ON p.id = v.product_id ORDER BY v.id"
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
        now = _now()
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
                if target is None:
                    cur = conn.execute(
                        "INSERT INTO variants (product_id, position, sku, price, compare_at_price, barcode, "
                        "option_values_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (product_id, pos, sku, var.get("price") or "0.00", var.get("compareAtPrice"),
                         var.get("barcode"), values, now, now),
                    )
                    keep.append(int(cur.lastrowid))
                else:
                    sets: dict[str, Any] = {"position": pos, "option_values_json": values, "updated_at": now}
                    for key, column in (("sku", "sku"), ("price", "price"), ("compareAtPrice", "compare_at_price"), ("barcode", "barcode")):
                        if key == "sku" and sku is not None:
                            sets["sku"] = sku
                        elif key != "sku" and var.get(key) is not None:
                            sets[column] = var[key]
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
                total += 2 + first * max(1, children)
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

    def graphql(self, raw: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
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
            SCHEMA, document, root_value=_Root(self.store), variable_values=variables, operation_name=operation_name
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

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        app = self.server.app
        raw = self._read_body()
        app.count("requests")
        match = _PATH_RE.match(urlsplit(self.path).path)
        if match is None:
            self._send(404, {"errors": "Not Found"})
            return
        if not app.authorised(self.headers.get("X-Shopify-Access-Token")):
            app.count("auth_failures")
            self._send(401, _AUTH_FAILED)
            return
        fault = app.take_fault(raw)
        if fault is not None:
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            self._send(fault.status, {"errors": f"injected HTTP {fault.status}"}, headers)
            return
        status, body = app.graphql(raw, self.headers.get("Content-Type") or "application/json")
        if "extensions" in body:
            app.count("graphql_responses")
        self._send(status, body, {"X-Shopify-API-Version": match.group("version")})

    def _not_allowed(self) -> None:
        self._read_body()
        self.server.app.count("requests")
        found = _PATH_RE.match(urlsplit(self.path).path) is not None
        self._send(405 if found else 404, {"errors": "Method Not Allowed" if found else "Not Found"})

    do_GET = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815


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
        """Delete every product and variant, refill the cost bucket and zero the counters."""
        app = self._server.app
        app.store.reset()
        app.bucket.reset()
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
) -> _Server:
    if bucket_size <= 0 or restore_rate <= 0:
        raise ValueError("bucket_size and restore_rate must be positive")
    path = Path(state_path).resolve() if state_path is not None else None
    app = _App(store=_Store(path), bucket=_LeakyBucket(bucket_size, restore_rate), access_token=access_token)
    return _Server((host, port), app)


def start_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    state_path: Path | None = None,
    access_token: str | None = None,
    bucket_size: float = 2000,
    restore_rate: float = 100,
) -> EmulatorHandle:
    """Start the emulator in a daemon thread (``port=0`` picks a free port) and return its handle."""
    server = _make_server(host, port, state_path, access_token, bucket_size, restore_rate)
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
) -> None:
    """Run the emulator in the foreground until interrupted (for ``poflow shopify-emulator``).

    Prints exactly one line with the shop URL once it is listening.
    """
    server = _make_server(host, port, state_path, access_token, bucket_size, restore_rate)
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
