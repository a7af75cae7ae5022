"""Push product specs to Shopify and read them back: the two Shopify steps the pipeline calls.

Small pushes go through the direct path (one ``productSet`` per product on a few threads, paced by the shop's
rate budget); pushes of more than a threshold of products go through one bulk mutation
(:mod:`~poflow_dagster.shopify.bulk`), which costs the bucket a few points however many products it holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.bulk import BulkLineErrors, ShopifyBulkError, bulk_product_set
from poflow_dagster.shopify.client import (
    MAX_NODE_IDS,
    VARIANT_NODE_COST,
    ProductSpec,
    ShopifyClient,
    ShopifyError,
    ShopifyGraphQLError,
    SyncedProduct,
    VariantInfo,
    money_to_wire,
)

__all__ = [
    "DEFAULT_BULK_THRESHOLD", "ProductsNotSynced", "sync_products", "sync_products_in_bulk", "upsert_products",
    "verify_batch_size", "verify_products",
]

logger = logging.getLogger(__name__)

#: Pushes of more products than this go through a bulk mutation.
DEFAULT_BULK_THRESHOLD = 250

Progress = Callable[[int, int], None]


class ProductsNotSynced(PoflowError):
    """``shopify_products_failed``: some products were refused in bulk and again directly; the others synced.

    ``synced`` follows the input specs (``None`` where the product failed); ``failed`` maps each failed SKU
    to why Shopify refused it the second time.
    """

    def __init__(self, synced: list[SyncedProduct | None], failed: dict[str, str]) -> None:
        skus = ", ".join(failed)
        first_sku, first_reason = next(iter(failed.items()))
        super().__init__(
            "shopify_products_failed",
            f"{len(failed)} of {len(synced)} products could not be synced to Shopify (refused in bulk, then "
            f"directly): SKUs {skus} (first: {first_sku}: {first_reason})",
        )
        self.synced = synced
        self.failed = failed

    def __reduce__(self):  # pickled as a plain PoflowError: the partial results stay in this process
        return (PoflowError, (self.code, self.message))


def _unique_by_handle(specs: list[ProductSpec]) -> dict[str, ProductSpec]:
    """One spec per handle (first-seen order); identical repeats collapse, conflicting ones fail.

    Two different specs for one handle (or one SKU under two handles) would make the result
    depend on thread timing, so they raise ``PoflowError("shopify_conflicting_specs", ...)``.
    """
    by_handle: dict[str, ProductSpec] = {}
    handle_by_sku: dict[str, str] = {}
    for spec in specs:
        seen = by_handle.get(spec.handle)
        if seen is not None and seen != spec:
            raise PoflowError(
                "shopify_conflicting_specs",
                f"two different products for handle {spec.handle!r} (SKUs {seen.sku!r} and {spec.sku!r})",
            )
        other_handle = handle_by_sku.get(spec.sku)
        if other_handle is not None and other_handle != spec.handle:
            raise PoflowError(
                "shopify_conflicting_specs",
                f"SKU {spec.sku!r} is given two handles ({other_handle!r} and {spec.handle!r})",
            )
        by_handle.setdefault(spec.handle, spec)
        handle_by_sku[spec.sku] = spec.handle
    return by_handle


def upsert_products(
    client: ShopifyClient,
    specs: list[ProductSpec],
    *,
    known_products: Mapping[str, str] | None = None,
    on_progress: Progress | None = None,
    bulk_threshold: int = DEFAULT_BULK_THRESHOLD,
    poll_interval_s: float = 1.0,
) -> list[SyncedProduct]:
    """Upsert every spec by handle: :func:`sync_products_in_bulk` when there are more than ``bulk_threshold``
    distinct products, else :func:`sync_products`. Same results (input order, ``created`` decided by
    ``known_products``) and the same products in Shopify either way."""
    if len(_unique_by_handle(specs)) > bulk_threshold:
        return sync_products_in_bulk(client, specs, known_products=known_products, on_progress=on_progress,
                                     poll_interval_s=poll_interval_s)
    return sync_products(client, specs, known_products=known_products, on_progress=on_progress)


def sync_products(
    client: ShopifyClient,
    specs: list[ProductSpec],
    *,
    max_workers: int = 4,
    known_products: Mapping[str, str] | None = None,
    on_progress: Progress | None = None,
) -> list[SyncedProduct]:
    """Upsert every spec (one ``productSet`` by handle each, nothing read first) on ``max_workers`` threads.

    Returns one :class:`SyncedProduct` per input spec, in input order (a repeated identical spec
    gets the same result). ``known_products`` maps handles to the product GIDs the caller recorded
    earlier; it decides ``created`` (see :meth:`ShopifyClient.product_set`). Idempotent: running it again
    changes nothing in Shopify. Threads share the shop's rate budget with every other sync of the shop.
    ``on_progress(products done, products)`` is called from those threads as each upsert finishes.
    On the first failure (after the client's own retries) the not-yet-started upserts are cancelled and
    that error is raised.
    """
    if not specs:
        return []
    unique = _unique_by_handle(specs)
    known = known_products or {}
    workers = max(1, min(max_workers, len(unique)))
    results: dict[str, SyncedProduct] = {}
    counted = _Counter(len(unique), on_progress)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shopify-sync") as pool:
        futures: dict[Future[SyncedProduct], str] = {
            pool.submit(counted.after, client.product_set, spec, known_product_gid=known.get(handle)): handle
            for handle, spec in unique.items()
        }
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in done if f.exception() is not None), None)
        if failed is not None:
            for future in pending:
                future.cancel()
            wait(pending)
            # Raise the earliest failing spec's error (deterministic across runs).
            first_failed = next(f for f in futures if f.done() and not f.cancelled() and f.exception() is not None)
            raise first_failed.exception()  # type: ignore[misc]
        for future, handle in futures.items():
            results[handle] = future.result()
    return [results[spec.handle] for spec in specs]


class _Counter:
    """Counts finished upserts for ``on_progress`` (thread-safe)."""

    def __init__(self, total: int, on_progress: Progress | None) -> None:
        self.total, self.on_progress = total, on_progress
        self.done = 0
        self.lock = threading.Lock()

    def after(self, upsert: Callable[..., SyncedProduct], *args, **kwargs) -> SyncedProduct:
        product = upsert(*args, **kwargs)
        with self.lock:
            self.done += 1
            done = self.done
        if self.on_progress is not None:
            self.on_progress(done, self.total)
        return product


def sync_products_in_bulk(
    client: ShopifyClient,
    specs: list[ProductSpec],
    *,
    known_products: Mapping[str, str] | None = None,
    on_progress: Progress | None = None,
    poll_interval_s: float = 1.0,
    busy_wait_s: float = 60.0,
) -> list[SyncedProduct]:
    """Upsert every spec by handle through one bulk ``productSet`` mutation; results as :func:`sync_products`.

    ``on_progress`` follows the operation's processed lines at each poll. Lines Shopify refused are tried
    once more directly; those refused again raise :class:`ProductsNotSynced` (carrying the products that did
    sync). When the bulk operation itself fails, or the shop still has no free bulk slot after
    ``busy_wait_s`` (other operations in progress), everything goes through the direct path instead —
    upserts by handle, so whatever the bulk operation had already applied is updated, never duplicated.
    """
    if not specs:
        return []
    unique = list(_unique_by_handle(specs).values())
    known = dict(known_products or {})
    try:
        results = bulk_product_set(client, unique, poll_interval_s=poll_interval_s, busy_wait_s=busy_wait_s,
                                   known_product_gids=known, on_progress=on_progress)
    except BulkLineErrors as partial:
        results = _retry_directly(client, unique, partial, known, specs)
    except ShopifyBulkError as error:
        logger.warning("bulk productSet of %d products did not run (%s); using the direct path", len(unique), error)
        return sync_products(client, specs, known_products=known, on_progress=on_progress)
    by_handle = {spec.handle: product for spec, product in zip(unique, results, strict=True)}
    return [by_handle[spec.handle] for spec in specs]


def _retry_directly(
    client: ShopifyClient, unique: list[ProductSpec], partial: BulkLineErrors, known: Mapping[str, str],
    specs: list[ProductSpec],
) -> list[SyncedProduct]:
    """One direct ``productSet`` for each line the bulk operation refused; raises if any is refused again."""
    results = list(partial.results)
    failed: dict[str, str] = {}
    for index in sorted(partial.line_errors):
        spec = unique[index]
        try:
            results[index] = client.product_set(spec, known_product_gid=known.get(spec.handle))
        except ShopifyError as error:
            failed[spec.sku] = error.message
    if failed:
        by_handle = {s.handle: r for s, r in zip(unique, results, strict=True)}
        raise ProductsNotSynced([by_handle[spec.handle] for spec in specs], failed)
    return [r for r in results if r is not None]


def _differences(spec: ProductSpec, variant: VariantInfo) -> list[str]:
    """Mismatch lines between a spec and the variant Shopify holds for its SKU."""
    lines: list[str] = []
    if variant.price != spec.price:
        lines.append(
            f"SKU {spec.sku}: price differs (expected {money_to_wire(spec.price)}, "
            f"Shopify has {money_to_wire(variant.price)})"
        )
    if variant.product_status.upper() != spec.status:
        lines.append(f"SKU {spec.sku}: status differs (expected {spec.status}, Shopify has {variant.product_status})")
    if variant.title != spec.title:
        lines.append(f"SKU {spec.sku}: title differs (expected {spec.title!r}, Shopify has {variant.title!r})")
    return lines


def _check_by_handle(client: ShopifyClient, spec: ProductSpec) -> list[str]:
    """Mismatch lines for one spec found by handle (the fallback: no recorded GID, or it moved)."""
    product = client.get_product(spec.handle)
    variant = product.variant_for_sku(spec.sku) if product is not None else None
    lines: list[str] = []
    if variant is None:
        elsewhere = client.find_variant_by_sku(spec.sku)
        if elsewhere is None:
            if product is None:
                return [f"SKU {spec.sku}: missing in Shopify (no product with handle {spec.handle})"]
            return [f"SKU {spec.sku}: missing in Shopify (product {spec.handle} has no variant with this SKU)"]
        lines.append(f"SKU {spec.sku}: found under handle {elsewhere.handle}, expected {spec.handle}")
        variant = elsewhere
    return lines + _differences(spec, variant)


def verify_batch_size(client: ShopifyClient) -> int:
    """GIDs per ``nodes(ids:)`` read-back: up to 250, fewer if the bucket cannot pay for that many."""
    return max(1, min(MAX_NODE_IDS, int(client.max_query_cost() // VARIANT_NODE_COST)))


def _variants_by_ids(client: ShopifyClient, gids: list[str]) -> dict[str, VariantInfo | None]:
    """``client.variants_by_ids``, halving the batch when Shopify says one query may not cost that much
    (``MAX_COST_EXCEEDED``: a bucket smaller than we knew)."""
    try:
        return client.variants_by_ids(gids)
    except ShopifyGraphQLError as error:
        too_costly = any((e.get("extensions") or {}).get("code") == "MAX_COST_EXCEEDED" for e in error.errors)
        if not too_costly or len(gids) == 1:
            raise
    half = len(gids) // 2
    return {**_variants_by_ids(client, gids[:half]), **_variants_by_ids(client, gids[half:])}


def verify_products(
    client: ShopifyClient,
    specs: list[ProductSpec],
    variant_gids: Mapping[str, str] | None = None,
    *,
    max_workers: int = 4,
) -> list[str]:
    """Read every spec back from Shopify; return human-readable mismatch lines in spec order.

    Checks: the SKU exists (under the spec's handle), price (as decimals, so ``12.5`` equals
    ``12.50``), product status and title. Empty means Shopify holds exactly what the specs say.

    ``variant_gids`` maps handles to the variant GIDs recorded when the products were synced: those
    are read by id, up to 250 per ``nodes(ids:)`` request (about 2 points each), never through the
    search index (which can lag). A spec without a recorded GID, or whose GID no longer holds its SKU
    under its handle, is looked up by handle (``productByIdentifier``), then by SKU search to say where a
    misplaced SKU lives.
    """
    if not specs:
        return []
    unique = list(dict.fromkeys(specs))
    gids = variant_gids or {}
    by_id = [spec for spec in unique if gids.get(spec.handle)]
    fallback = [spec for spec in unique if not gids.get(spec.handle)]
    found: dict[ProductSpec, list[str]] = {}
    size = verify_batch_size(client)
    for start in range(0, len(by_id), size):
        batch = by_id[start:start + size]
        variants = _variants_by_ids(client, [gids[spec.handle] for spec in batch])
        for spec in batch:
            variant = variants.get(gids[spec.handle])
            if variant is None or variant.sku != spec.sku or variant.handle != spec.handle:
                fallback.append(spec)
            else:
                found[spec] = _differences(spec, variant)
    if fallback:
        workers = max(1, min(max_workers, len(fallback)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shopify-verify") as pool:
            for spec, lines in zip(fallback, pool.map(lambda s: _check_by_handle(client, s), fallback)):
                found[spec] = lines
    return [line for spec in unique for line in found[spec]]
