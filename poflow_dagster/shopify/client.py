"""Our Shopify Admin GraphQL client (``httpx``), with cost-aware pacing and retries.

Shopify is reached only through ``{shop_url}/admin/api/{version}/graphql.json`` with the
``X-Shopify-Access-Token`` header. Every response's ``extensions.cost.throttleStatus`` is read and
kept in :attr:`ShopifyClient.throttle`; before each call the client sleeps just long enough for the
leaky bucket to hold the expected cost of that call (proactive pacing), and ``THROTTLED`` answers,
HTTP 429/502/503/504 and connection errors are retried with backoff up to ``max_attempts``.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any

import httpx

from poflow_dagster.domain.errors import PoflowError

__all__ = [
    "DEFAULT_API_VERSION",
    "ClientStats",
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

DEFAULT_API_VERSION = "2025-07"
PRODUCT_STATUSES = frozenset({"ACTIVE", "ARCHIVED", "DRAFT"})
MAX_HANDLE_LENGTH = 255

#: The single option every poflow product has (Shopify's own default for one-variant products).
DEFAULT_OPTION_NAME = "Title"
DEFAULT_OPTION_VALUE = "Default Title"

_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
_DEFAULT_QUERY_COST = 10.0
_PACING_MARGIN_POINTS = 0.5


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

    def __post_init__(self) -> None:
        if not isinstance(self.sku, str) or not self.sku.strip():
            raise ValueError("ProductSpec.sku must be a non-empty string")
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
class ThrottleStatus:
    """The cost bucket as the last response reported it (``extensions.cost``)."""

    maximum_available: float
    currently_available: float
    restore_rate: float
    last_query_cost: float | None
    requested_query_cost: float | None = None
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

SHOP_QUERY = "query PoflowShop { shop { name } }"


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class ShopifyClient:
    """A thread-safe Shopify Admin GraphQL client for one shop.

    ``backoff_base``/``max_backoff`` bound the exponential backoff for transport errors and
    5xx answers (``Retry-After`` wins when present); ``pacing=False`` disables proactive waiting.
    """

    def __init__(
        self,
        shop_url: str,
        access_token: str,
        api_version: str = DEFAULT_API_VERSION,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        max_backoff: float = 30.0,
        pacing: bool = True,
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
        self.pacing = pacing
        self.throttle: ThrottleStatus | None = None
        self.stats = ClientStats()
        self._sleep: Callable[[float], None] = time.sleep
        self._lock = threading.Lock()
        # Our local running estimate of the bucket: (points, monotonic time). Reset by every response.
        self._estimate: tuple[float, float] | None = None
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

    # -- raw GraphQL ---------------------------------------------------------------------------

    def execute(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        expected_cost: float | None = None,
    ) -> dict[str, Any]:
        """Run one GraphQL document and return its ``data``.

        Raises :class:`ShopifyUserError` when any top-level mutation payload carries
        ``userErrors``, :class:`ShopifyGraphQLError` for other GraphQL errors,
        :class:`ShopifyAuthError` for 401/403, and :class:`ShopifyThrottledError` /
        :class:`ShopifyUnreachableError` once ``max_attempts`` are used up.
        """
        body_bytes = json.dumps(
            {"query": query, "variables": variables or {}}, default=_json_default
        ).encode("utf-8")
        cost = expected_cost if expected_cost is not None else self._expected_cost(query)
        attempt = 0
        while True:
            attempt += 1
            self._pace(cost)
            retry_kind, problem, wait = self._attempt(query, body_bytes, cost, attempt)
            if retry_kind is None:
                # _attempt returned normally only with data (it raises on final errors).
                assert isinstance(problem, dict)
                return problem
            assert isinstance(problem, str)
            if attempt >= self.max_attempts:
                message = f"{problem} (gave up after {attempt} attempt{'s' if attempt > 1 else ''})"
                if retry_kind == "throttled":
                    raise ShopifyThrottledError("shopify_throttled", message)
                raise ShopifyUnreachableError("shopify_unreachable", message)
            with self._lock:
                self.stats.retries += 1
            logger.info("Shopify %s; retrying in %.2fs (attempt %d/%d)", problem, wait, attempt + 1, self.max_attempts)
            self._sleep(wait)

    def _attempt(
        self, query: str, body: bytes, cost: float, attempt: int
    ) -> tuple[str | None, dict[str, Any] | str, float]:
        """One HTTP round trip: ``(None, data, 0)`` on success, ``(kind, problem, wait)`` to retry."""
        with self._lock:
            self.stats.requests += 1
        try:
            response = self._http.post(self.endpoint, content=body)
        except httpx.TransportError as exc:
            return "unreachable", f"cannot reach {self.endpoint} ({type(exc).__name__})", self._backoff(attempt)
        with self._lock:
            self.stats.responses += 1
        status = response.status_code
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        payload = _json_or_none(response)
        if isinstance(payload, dict):
            self._observe(query, payload)
        if status in (401, 403):
            raise ShopifyAuthError(
                "shopify_auth_failed",
                f"Shopify rejected the access token for {self.shop_url} (HTTP {status})",
            )
        if status in _RETRYABLE_HTTP:
            kind = "throttled" if status == 429 else "unreachable"
            if kind == "throttled":
                with self._lock:
                    self.stats.throttled += 1
            wait = retry_after if retry_after is not None else self._backoff(attempt)
            return kind, f"HTTP {status} from {self.endpoint}", min(wait, self.max_backoff)
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
                return "throttled", "THROTTLED by Shopify", self._throttle_wait(payload, cost, attempt)
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

    def _expected_cost(self, query: str) -> float:
        with self._lock:
            known = self._cost_by_query.get(query)
        if known is not None:
            return known
        return _DEFAULT_QUERY_COST

    def _observe(self, query: str, payload: dict[str, Any]) -> None:
        """Read ``extensions.cost`` of one response into :attr:`throttle` and the pacing estimate."""
        extensions = payload.get("extensions")
        cost = extensions.get("cost") if isinstance(extensions, dict) else None
        if not isinstance(cost, dict):
            return
        status = cost.get("throttleStatus")
        if not isinstance(status, dict):
            return
        try:
            requested = cost.get("requestedQueryCost")
            actual = cost.get("actualQueryCost")
            snapshot = ThrottleStatus(
                maximum_available=float(status["maximumAvailable"]),
                currently_available=float(status["currentlyAvailable"]),
                restore_rate=float(status["restoreRate"]),
                last_query_cost=float(actual) if actual is not None else (
                    float(requested) if requested is not None else None
                ),
                requested_query_cost=float(requested) if requested is not None else None,
            )
        except (KeyError, TypeError, ValueError):
            logger.debug("unreadable extensions.cost in Shopify response: %r", cost)
            return
        with self._lock:
            self.throttle = snapshot
            self.stats.cost_reports += 1
            self._estimate = (snapshot.currently_available, snapshot.observed_at)
            if snapshot.requested_query_cost is not None and snapshot.requested_query_cost > 0:
                self._cost_by_query[query] = snapshot.requested_query_cost

    def _pace(self, cost: float) -> None:
        """Sleep until the bucket should hold ``cost`` points, then reserve them locally."""
        if not self.pacing:
            return
        with self._lock:
            status = self.throttle
            if status is None or self._estimate is None or status.restore_rate <= 0:
                return
            if cost > status.maximum_available:
                return  # can never fit; let Shopify answer (MAX_COST_EXCEEDED)
            points, at = self._estimate
            now = time.monotonic()
            available = min(status.maximum_available, points + max(0.0, now - at) * status.restore_rate)
            # Aim a hair above the cost (clock skew, rounding), never above the bucket size.
            target = min(status.maximum_available, cost + _PACING_MARGIN_POINTS)
            wait = 0.0 if available >= target else (target - available) / status.restore_rate
            # Reserve the points so concurrent callers queue behind us instead of all firing.
            self._estimate = (available + wait * status.restore_rate - cost, now + wait)
            if wait > 0:
                self.stats.paced_sleeps += 1
                self.stats.paced_seconds += wait
        if wait > 0:
            logger.debug("pacing Shopify calls: sleeping %.3fs for %.0f points", wait, cost)
            self._sleep(wait)

    def _throttle_wait(self, payload: dict[str, Any], cost: float, attempt: int) -> float:
        """How long a THROTTLED answer says to wait: the missing points over the restore rate."""
        requested = cost
        extensions = payload.get("extensions")
        cost_ext = extensions.get("cost") if isinstance(extensions, dict) else None
        if isinstance(cost_ext, dict) and cost_ext.get("requestedQueryCost") is not None:
            try:
                requested = float(cost_ext["requestedQueryCost"])
            except (TypeError, ValueError):
                pass
        status = self.throttle
        if status is None or status.restore_rate <= 0:
            return self._backoff(attempt)
        missing = max(0.0, requested - status.currently_available)
        wait = missing / status.restore_rate
        # A little jitter so parallel workers don't all wake in the same millisecond.
        return min(self.max_backoff, wait + random.uniform(0.0, 0.05 * max(wait, 0.01)) + 0.001)

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

    def product_set(self, spec: ProductSpec) -> SyncedProduct:
        """Create or update the product ``spec.handle`` (``productSet``, synchronous, by handle).

        Idempotent: the same spec twice leaves one product with one variant. The existing
        product is looked up first so ``created`` is truthful and the variant is updated in
        place (its id is passed back to ``productSet``).
        """
        existing = self.get_product(spec.handle)
        variant_input: dict[str, Any] = {
            "optionValues": [{"optionName": DEFAULT_OPTION_NAME, "name": DEFAULT_OPTION_VALUE}],
            "price": money_to_wire(spec.price),
            "sku": spec.sku,
        }
        if existing is not None:
            match = existing.variant_for_sku(spec.sku) or (
                existing.variants[0] if len(existing.variants) == 1 else None
            )
            if match is not None:
                variant_input["id"] = match.variant_gid
        product_input: dict[str, Any] = {
            "handle": spec.handle,
            "title": spec.title,
            "status": spec.status,
            "productOptions": [
                {"name": DEFAULT_OPTION_NAME, "position": 1, "values": [{"name": DEFAULT_OPTION_VALUE}]}
            ],
            "variants": [variant_input],
        }
        if spec.description is not None:
            product_input["descriptionHtml"] = spec.description_html
        if spec.vendor is not None:
            product_input["vendor"] = spec.vendor
        data = self.execute(PRODUCT_SET_MUTATION, {"identifier": {"handle": spec.handle}, "input": product_input})
        product = (data.get("productSet") or {}).get("product")
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
            created=existing is None,
        )

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
                if node.get("sku") != sku:
                    continue
                product = node.get("product") or {}
                return VariantInfo(
                    sku=sku,
                    price=money_from_wire(node["price"]),
                    product_gid=str(product.get("id", "")),
                    variant_gid=str(node["id"]),
                    product_status=str(product.get("status", "")),
                    title=str(product.get("title", "")),
                    handle=str(product.get("handle", "")),
                )
            page = connection.get("pageInfo") or {}
            if not page.get("hasNextPage") or not page.get("endCursor"):
                return None
            after = str(page["endCursor"])
        return None


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
