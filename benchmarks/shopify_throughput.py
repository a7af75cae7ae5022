"""Shopify sync throughput at real limits: one 1,000-SKU PO, then three concurrent 300-SKU POs for one shop.

    .venv/bin/python benchmarks/shopify_throughput.py [--skus 1000] [--pos 3] [--each 300]
                                                      [--bucket 2000] [--rate 100] [--workers 4]

Against the bundled emulator over real HTTP with Shopify's standard plan limits (bucket 2000 points, restore
100 points/s) and productSet's dynamic cost since API 2025-10 (10 + 0.2 per variant = 10.2 points). The
concurrent POs run in separate processes (``multiprocessing`` spawn), each with its own client and 4 sync
threads, sharing the shop's rate budget through Redis (``REDIS_URL``, default ``redis://127.0.0.1:6379/0``;
a unique key prefix per run).

Printed per scenario: products/s achieved and the throttle-limited maximum — N products need
``(N x cost - bucket) / restore`` seconds at best when the bucket starts full — and their ratio (goal >= 0.90);
failed calls (THROTTLED answers + HTTP failures + errors raised; goal 0); and the read-back
(``nodes(ids:)`` by recorded variant GIDs) in requests per 100 products (goal <= 1).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poflow_dagster.shopify.client import ProductSpec, ShopifyClient, handle_for_sku  # noqa: E402
from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator  # noqa: E402
from poflow_dagster.shopify.rate_budget import shared_budget  # noqa: E402
from poflow_dagster.shopify.sync import sync_products, verify_products  # noqa: E402

TOKEN = "bench-token"
PRODUCT_SET_COST = 10.2


@dataclass(frozen=True)
class SyncRun:
    """One PO's sync, as a child process reports it."""

    products: int
    seconds_from_start: float
    errors: int
    variant_gids: dict[str, str]


def specs(po: str, n: int) -> list[ProductSpec]:
    return [
        ProductSpec(sku=f"{po}-{i:05d}", title=f"{po} item {i}", price=Decimal("4.99") + i,
                    handle=handle_for_sku("bench", f"{po}-{i:05d}"))
        for i in range(n)
    ]


def sync_one_po(args: tuple[str, str, str | None, str, int, int, float]) -> SyncRun:
    """Sync one PO in this process, starting at wall-clock ``start_at`` (so all POs start together)."""
    url, prefix, redis_url, po, n, workers, start_at = args
    budget = shared_budget(url, redis_url=redis_url, prefix=prefix)
    time.sleep(max(0.0, start_at - time.time()))
    errors = 0
    with ShopifyClient(url, TOKEN, budget=budget) as client:
        try:
            results = sync_products(client, specs(po, n), max_workers=workers)
        except Exception as error:  # noqa: BLE001 - a benchmark counts failures instead of stopping
            print(f"  {po}: sync failed: {error}", flush=True)
            errors, results = 1, []
    return SyncRun(len(results), time.time() - start_at, errors, {r.handle: r.variant_gid for r in results})


def run_scenario(emu: EmulatorHandle, label: str, pos: list[tuple[str, int]], args: argparse.Namespace) -> None:
    emu.reset()
    emu.set_bucket(size=args.bucket, restore_rate=args.rate)
    prefix = f"poflow-bench:{secrets.token_hex(6)}"
    start_at = time.time() + (6.0 if len(pos) > 1 else 0.5)  # room for the child processes to import
    jobs = [(emu.url, prefix, args.redis_url, po, n, args.workers, start_at) for po, n in pos]
    if len(pos) == 1:
        runs = [sync_one_po(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(len(pos)) as pool:
            runs = pool.map(sync_one_po, jobs)
    seconds = max(run.seconds_from_start for run in runs)
    total = sum(n for _, n in pos)
    done = sum(run.products for run in runs)
    best_seconds = max(1e-9, (total * PRODUCT_SET_COST - args.bucket) / args.rate)
    achieved, best = done / seconds, total / best_seconds
    sync_failures = emu.stats.throttled + emu.stats.injected_failures + sum(run.errors for run in runs)

    gids = {handle: gid for run in runs for handle, gid in run.variant_gids.items()}
    all_specs = [spec for po, n in pos for spec in specs(po, n)]
    before = emu.stats.operations.get("nodes", 0)
    started = time.perf_counter()
    with ShopifyClient(emu.url, TOKEN, budget=shared_budget(emu.url, redis_url=args.redis_url, prefix=prefix)) as c:
        problems = verify_products(c, all_specs, gids)
    verify_seconds = time.perf_counter() - started
    nodes = emu.stats.operations.get("nodes", 0) - before
    lookups = emu.stats.operations.get("productByIdentifier", 0)
    failed = emu.stats.throttled + emu.stats.injected_failures + sum(run.errors for run in runs)

    print(f"\n{label}: {total} SKUs, bucket {args.bucket:g}, restore {args.rate:g}/s, {args.workers} threads per PO")
    print(f"  synced         {done}/{total} products in {seconds:.1f} s (PO runs: "
          + ", ".join(f"{run.seconds_from_start:.1f} s" for run in runs) + ")")
    print(f"  products/s     {achieved:.2f} achieved vs {best:.2f} throttle-limited maximum: ratio {achieved / best:.3f}")
    print(f"  failed calls   {failed} (sync {sync_failures}: THROTTLED {emu.stats.throttled}, "
          f"HTTP failures {emu.stats.injected_failures}, errors {sum(run.errors for run in runs)})")
    print(f"  verification   {nodes} nodes(ids:) requests = {100 * nodes / total:.2f} per 100 products, "
          f"{lookups} handle lookups, {len(problems)} mismatches, {verify_seconds:.1f} s")
    print(f"  requests       {emu.stats.requests} in all: {dict(sorted(emu.stats.operations.items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skus", type=int, default=1000, help="SKUs of the single PO")
    parser.add_argument("--pos", type=int, default=3, help="concurrent POs (separate processes)")
    parser.add_argument("--each", type=int, default=300, help="SKUs per concurrent PO")
    parser.add_argument("--bucket", type=float, default=2000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--workers", type=int, default=4, help="sync threads per PO")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    with start_emulator(access_token=TOKEN) as emu:
        run_scenario(emu, f"One {args.skus}-SKU PO", [("BIG", args.skus)], args)
        run_scenario(emu, f"{args.pos} concurrent {args.each}-SKU POs, one shop, separate processes",
                     [(f"PO{i}", args.each) for i in range(args.pos)], args)


if __name__ == "__main__":
    main()
