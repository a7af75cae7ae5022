"""Push product specs to Shopify and read them back: the two Shopify steps the pipeline calls."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.client import (
    MAX_NODE_IDS,
    VARIANT_NODE_COST,
    ProductSpec,
    ShopifyClient,
    ShopifyGraphQLError,
    SyncedProduct,
    VariantInfo,
    money_to_wire,
)

__all__ = ["sync_products", "verify_batch_size", "verify_products"]


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


def sync_products(
    client: ShopifyClient,
    specs: list[ProductSpec],
    *,
    max_workers: int = 4,
    known_products: Mapping[str, str] | None = None,
) -> list[SyncedProduct]:
    """Upsert every spec (one ``productSet`` by handle each, nothing read first) on ``max_workers`` threads.

    Returns one :class:`SyncedProduct` per input spec, in input order (a repeated identical spec
    gets the same result). ``known_products`` maps handles to the product GIDs the caller recorded
    earlier; it decides ``created`` (see :meth:`ShopifyClient.product_set`). Idempotent: running it again
    changes nothing in Shopify. Threads share the shop's rate budget with every other sync of the shop.
    On the first failure (after the client's own retries) the not-yet-started upserts are cancelled and
    that error is raised.
    """
    if not specs:
        return []
    unique = _unique_by_handle(specs)
    known = known_products or {}
    workers = max(1, min(max_workers, len(unique)))
    results: dict[str, SyncedProduct] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shopify-sync") as pool:
        futures: dict[Future[SyncedProduct], str] = {
            pool.submit(client.product_set, spec, known_product_gid=known.get(handle)): handle
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
