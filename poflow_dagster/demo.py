"""``poflow demo``: the bundled sample POs, end to end, on the embedded defaults."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time

import click

from poflow_dagster import config


def run_demo(merchant_id: str | None = None) -> int:
    """Start the Shopify emulator, generate the samples, run each through ``po_job`` on a temporary
    Dagster instance, print a table. Returns 0 only if every PO completed and every check passed."""
    import dagster as dg

    from poflow_dagster.intake import upload_file
    from poflow_dagster.samples import generate_samples
    from poflow_dagster.shopify.emulator import start_emulator
    from poflow_dagster.store.db import get_database

    home = config.poflow_home()
    merchant_id = merchant_id or f"demo-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}"
    db = get_database(config.database_url())
    samples = generate_samples(home / "samples")
    started = time.perf_counter()
    with start_emulator(access_token="demo-token") as shop:
        os.environ["SHOPIFY_SHOP_URL"] = shop.url
        os.environ["SHOPIFY_ACCESS_TOKEN"] = "demo-token"
        from poflow_dagster.definitions import defs
        from poflow_dagster.pipeline.local import run_upload
        from poflow_dagster.pipeline.run_history import record_runs

        click.echo(f"poflow demo: merchant {merchant_id}, home {home}, database {_safe(db.url)}, shop {shop.url}")
        uploads = [upload_file(db, home, merchant_id, path) for path in samples]
        duplicate = upload_file(db, home, merchant_id, samples[0])
        with tempfile.TemporaryDirectory(prefix="poflow-dagster-") as tmp, dg.DagsterInstance.local_temp(
            tmp, overrides={"telemetry": {"enabled": False}}
        ) as instance:
            results = [run_upload(defs, instance, db, upload.id, log_level="ERROR") for upload in uploads]
            # The instance is gone after this block: its runs go into the run history now (`poflow report`).
            record_runs(instance, db, [run_id for result in results for run_id in result.run_ids])
        products_in_shop = shop.count_products()
    _print_table(uploads, results)
    click.echo(
        f"\nre-upload of {samples[0].name}: {duplicate.id} recorded as duplicate of {duplicate.duplicate_of} (no second PO)"
    )
    click.echo(f"Shopify emulator holds {products_in_shop} products; total {time.perf_counter() - started:.1f}s")
    ok = all(r.success and r.checks and all(r.checks.values()) for r in results)
    for r in results:
        if not r.success:
            click.echo(f"FAILED {r.upload_id}: {r.failed_step}: {r.error}", err=True)
    click.echo("demo: all POs completed, all checks passed" if ok else "demo: FAILED", err=not ok)
    click.echo(f"inspect one: poflow status {uploads[0].id}; where the time went: poflow report")
    return 0 if ok else 1


def _print_table(uploads, results) -> None:
    header = f"{'upload':<32}{'file':<32}{'PO number':<14}{'lines':>6}{'drafts':>7}{'shopify':>8}{'checks':>8}{'seconds':>9}"
    click.echo(header)
    click.echo("-" * len(header))
    for upload, r in zip(uploads, results, strict=True):
        s = r.summary or {}
        click.echo(
            f"{upload.id:<32}{upload.original_filename[:31]:<32}{str(s.get('po_number') or '-'):<14}"
            f"{s.get('line_count', '-'):>6}{s.get('drafts', '-'):>7}{s.get('shopify_products', '-'):>8}"
            f"{f'{r.checks_passed}/{len(r.checks)}':>8}{r.seconds:>9.2f}"
        )


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
