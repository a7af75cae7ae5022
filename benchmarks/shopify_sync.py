"""Shopify sync of a 1,000-line PO at standard limits: the direct path vs the bulk path, and the matched half.

    .venv/bin/python benchmarks/shopify_sync.py [--lines 1000] [--bucket 2000] [--rate 100] [--poll 1.0]
                                               [--threshold 250]

The bundled emulator over real HTTP with Shopify's standard plan limits (bucket 2000 points, restore 100 points/s)
and ``productSet``'s dynamic cost (10 + 0.2 per variant = 10.2 points). Half of the PO's SKUs already exist in the
store as products (created first through the client, under the handles the PO's drafts map to, with last PO's unit
cost); the other half are new. Each scenario starts from that store with a full bucket and a new SQLite app
database (so no product is recorded as known):

* direct: ``publish_drafts`` of all lines below the bulk threshold — one ``productSet`` per product on 4 threads.
  Products/s against the throttle-limited maximum, ``N / ((N x 10.2 - bucket) / restore)``; requests and points
  per product; failed calls (THROTTLED answers + HTTP failures + client retries; goal 0).
* bulk: the same through the bulk path (threshold 250): wall time, points, requests, progress reports.
* matched half: the existing products' unit cost brought to the PO's through ``client.update_variants`` (one
  ``productVariantsBulkUpdate`` per product, as ``catalog.po_matching.update_matched_costs`` groups them) vs
  re-``productSet``-ing the same products with the new cost.

Each scenario ends with a read-back (``verify_published`` / the variants' unit cost): 0 mismatches expected.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poflow_dagster.domain.models import ParsedPO, POLine  # noqa: E402
from poflow_dagster.shopify.bulk import bulk_product_set  # noqa: E402
from poflow_dagster.shopify.client import (  # noqa: E402
    ProductSpec,
    ShopifyClient,
    SyncedProduct,
    VariantUpdate,
    handle_for_sku,
)
from poflow_dagster.shopify.emulator import EmulatorHandle, start_emulator  # noqa: E402
from poflow_dagster.shopify.publish import publish_drafts, verify_published  # noqa: E402
from poflow_dagster.shopify.rate_budget import InProcessBudget  # noqa: E402
from poflow_dagster.shopify.sync import sync_products  # noqa: E402
from poflow_dagster.store.db import Database, close_database, get_database  # noqa: E402
from poflow_dagster.store.drafts import DraftRecord, create_drafts_for_po  # noqa: E402
from poflow_dagster.store.purchase_orders import save_purchase_order  # noqa: E402
from poflow_dagster.store.uploads import StoredFile, register_upload  # noqa: E402

TOKEN = "bench-token"
MERCHANT = "bench"
PRODUCT_SET_COST = 10.2
OLD_COST, NEW_COST = Decimal("3.00"), Decimal("3.25")


@dataclass
class Measure:
    """One scenario's numbers."""

    label: str
    items: int
    seconds: float
    requests: int
    points: float
    failed: int
    mismatches: int
    extra: str = ""


def the_po(lines: int) -> ParsedPO:
    return ParsedPO(
        po_number="BENCH-1000", supplier_name="Bench Supply", currency="USD", source_format="csv", extractor="bench",
        lines=[POLine(line_no=n, sku=f"BENCH-{n:05d}", description=f"Bench item {n}", quantity=Decimal(3),
                      unit_cost=NEW_COST, line_total=3 * NEW_COST) for n in range(1, lines + 1)],
    )


def fresh_drafts(workdir: Path, po: ParsedPO, name: str) -> tuple[Database, str, list[DraftRecord]]:
    url = f"sqlite:///{workdir / f'{name}.sqlite3'}"
    db = get_database(url)
    stored = StoredFile(sha256=name.encode().hex().ljust(64, "0")[:64], size_bytes=1, mime_type="text/csv",
                        stored_path="/dev/null", original_filename=f"{name}.csv")
    upload_id = register_upload(db, MERCHANT, stored).id
    save_purchase_order(db, upload_id, po)
    return db, url, create_drafts_for_po(db, upload_id, po).drafts


def existing_specs(po: ParsedPO) -> list[ProductSpec]:
    """The half of the PO the store already sells (every other line), at last PO's cost."""
    return [ProductSpec(sku=line.sku, title=f"Bench item {line.line_no}", price=Decimal("9.99"),
                        handle=handle_for_sku(MERCHANT, line.sku), unit_cost=OLD_COST)
            for line in po.lines if line.line_no % 2 == 0]


def client_for(emu: EmulatorHandle) -> ShopifyClient:
    return ShopifyClient(emu.url, TOKEN, budget=InProcessBudget(f"bench:{emu.url}:{time.monotonic_ns()}"))


def seed_store(emu: EmulatorHandle, po: ParsedPO, args: argparse.Namespace) -> list[SyncedProduct]:
    """Empty the store, create the existing half through the client, then refill the bucket."""
    emu.reset()
    with client_for(emu) as client:
        existing = bulk_product_set(client, existing_specs(po), poll_interval_s=0.05)
    emu.set_bucket(size=args.bucket, restore_rate=args.rate)  # full again for the measured part
    return existing


class Since:
    """The emulator's counters from now on (failed calls, operations by name)."""

    def __init__(self, emu: EmulatorHandle) -> None:
        self.emu = emu
        self.failures = emu.stats.throttled + emu.stats.injected_failures
        self.operations = dict(emu.stats.operations)

    def failed_calls(self, client: ShopifyClient) -> int:
        return self.emu.stats.throttled + self.emu.stats.injected_failures - self.failures + client.stats.retries

    def operations_run(self) -> dict[str, int]:
        now = self.emu.stats.operations
        return {name: now[name] - self.operations.get(name, 0) for name in sorted(now)
                if now[name] != self.operations.get(name, 0)}


def publish_scenario(emu: EmulatorHandle, po: ParsedPO, workdir: Path, args: argparse.Namespace,
                     label: str, threshold: int) -> Measure:
    seed_store(emu, po, args)
    db, url, drafts = fresh_drafts(workdir, po, label)
    progress: list[tuple[int, int]] = []
    with client_for(emu) as client:
        since = Since(emu)
        started = time.perf_counter()
        synced = publish_drafts(db, client, emu.url, MERCHANT, drafts, threshold=threshold,
                                poll_interval_s=args.poll, on_progress=lambda *p: progress.append(p))
        seconds = time.perf_counter() - started
        requests, points, failed = client.stats.requests, client.stats.points, since.failed_calls(client)
        operations = since.operations_run()
        problems = verify_published(db, client, emu.url, MERCHANT, drafts, settle_seconds=()).problems
    close_database(url)
    assert emu.count_products() == len(drafts) == len(synced), "one product per draft"
    return Measure(label, len(synced), seconds, requests, points, failed, len(problems),
                   f"created {sum(p.created for p in synced)}; progress reports {len(progress)}, last {progress[-1]}; "
                   f"operations {operations}")


def matched_scenarios(emu: EmulatorHandle, po: ParsedPO, args: argparse.Namespace) -> list[Measure]:
    results = []
    for label in ("update_variants", "re-productSet"):
        existing = seed_store(emu, po, args)
        with client_for(emu) as client:
            since = Since(emu)
            started = time.perf_counter()
            if label == "update_variants":
                for product in existing:  # one product = one variant here: one call each
                    client.update_variants(product.product_gid,
                                           [VariantUpdate(variant_gid=product.variant_gid, unit_cost=NEW_COST)])
            else:
                sync_products(client, [replace(s, unit_cost=NEW_COST) for s in existing_specs(po)])
            seconds = time.perf_counter() - started
            requests, points, failed = client.stats.requests, client.stats.points, since.failed_calls(client)
            wrong = count_wrong_costs(client, {p.variant_gid for p in existing})
        results.append(Measure(f"matched half: {label}", len(existing), seconds, requests, points, failed, wrong))
    return results


def count_wrong_costs(client: ShopifyClient, variant_gids: set[str]) -> int:
    """Variants of the matched half whose unit cost is not the PO's (read page by page)."""
    wrong, after = 0, None
    while True:
        page = client.catalog_page(after=after)
        wrong += sum(v.variant_gid in variant_gids and v.unit_cost != NEW_COST for v in page.variants)
        if page.next_cursor is None:
            return wrong
        after = page.next_cursor


def report(measure: Measure, args: argparse.Namespace, *, throttle_bound: bool) -> None:
    rate = measure.items / measure.seconds
    print(f"\n{measure.label}: {measure.items} products in {measure.seconds:.1f} s = {rate:.2f}/s")
    if throttle_bound:
        best = measure.items / max(1e-9, (measure.items * PRODUCT_SET_COST - args.bucket) / args.rate)
        print(f"  throttle-limited maximum {best:.2f}/s: ratio {rate / best:.3f}")
    print(f"  requests {measure.requests} ({measure.requests / measure.items:.3f}/product), points {measure.points:.0f} "
          f"({measure.points / measure.items:.2f}/product), failed calls {measure.failed}, "
          f"read-back mismatches {measure.mismatches}")
    if measure.extra:
        print(f"  {measure.extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--bucket", type=float, default=2000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--poll", type=float, default=1.0, help="bulk operation poll interval (s)")
    parser.add_argument("--threshold", type=int, default=250, help="bulk threshold of the bulk scenario")
    args = parser.parse_args()
    po = the_po(args.lines)
    print(f"{args.lines}-line PO ({len(existing_specs(po))} SKUs already in the store), bucket {args.bucket:g}, "
          f"restore {args.rate:g}/s")
    with tempfile.TemporaryDirectory() as tmp, start_emulator(access_token=TOKEN) as emu:
        workdir = Path(tmp)
        report(publish_scenario(emu, po, workdir, args, "direct", threshold=10 * args.lines), args, throttle_bound=True)
        report(publish_scenario(emu, po, workdir, args, "bulk", threshold=args.threshold), args, throttle_bound=False)
        for measure in matched_scenarios(emu, po, args):
            report(measure, args, throttle_bound=False)


if __name__ == "__main__":
    main()
