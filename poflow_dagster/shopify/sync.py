"""Push product specs to Shopify and read them back: the two Shopify steps the pipeline calls."""

from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, SyncedProduct, money_to_wire

__all__ = ["sync_products", "verify_products"]


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


def sync_products(client: ShopifyClient, specs: list[ProductSpec], *, max_workers: int = 4) -> list[SyncedProduct]:
    """Upsert every spec (``productSet`` by handle) on ``max_workers`` threads.

    Returns one :class:`SyncedProduct` per input spec, in input order (a repeated identical spec
    gets the same result). Idempotent: running it again changes nothing but ``created``. On the
    first failure the not-yet-started upserts are cancelled and that error is raised.
    """
    if not specs:
        return []
    unique = _unique_by_handle(specs)
    workers = max(1, min(max_workers, len(unique)))
    results: dict[str, SyncedProduct] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shopify-sync") as pool:
        futures: dict[Future[SyncedProduct], str] = {
            pool.submit(client.product_set, spec): handle for handle, spec in unique.items()
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


def _check_one(client: ShopifyClient, spec: ProductSpec) -> list[str]:
    """Mismatch lines for one spec (empty when Shopify holds exactly what it says)."""
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


def verify_products(client: ShopifyClient, specs: list[ProductSpec], *, max_workers: int = 4) -> list[str]:
    """Read every spec back from Shopify; return human-readable mismatch lines in spec order.

    Checks: the SKU exists (under the spec's handle), price (as decimals, so ``12.5`` equals
    ``12.50``), product status and title. Empty means Shopify holds exactly what the specs say.
    Products are read by handle (``productByIdentifier``, not the search index, which can lag),
    falling back to a SKU search to say where a misplaced SKU lives.
    """
    if not specs:
        return []
    unique = list(dict.fromkeys(specs))
    workers = max(1, min(max_workers, len(unique)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shopify-verify") as pool:
        checked = list(pool.map(lambda spec: _check_one(client, spec), unique))
    return [line for lines in checked for line in lines]
