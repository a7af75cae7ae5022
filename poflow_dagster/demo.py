"""``poflow demo``: the bundled sample POs, end to end, on the embedded defaults."""

from __future__ import annotations

import datetime as dt
import os
import time

import click

from poflow_dagster import config


def run_demo(merchant_id: str | None = None) -> int:
    """Start the Shopify emulator, generate the samples, run each through ``po_job`` on the persistent local
    Dagster instance (``config.dagster_home()``), print a table and how to see the runs in the Dagster UI.
    Returns 0 only if every PO completed and every check passed."""
    from poflow_dagster.intake import upload_file
    from poflow_dagster.samples import generate_samples
    from poflow_dagster.shopify.emulator import start_emulator
    from poflow_dagster.store.db import get_database

    home = config.poflow_home()
    dagster_home = config.dagster_home()
    merchant_id = merchant_id or f"demo-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}"
    db = get_database(config.database_url())
    samples = generate_samples(home / "samples")
    started = time.perf_counter()
    with start_emulator(access_token="demo-token") as shop:
        os.environ["SHOPIFY_SHOP_URL"] = shop.url
        os.environ["SHOPIFY_ACCESS_TOKEN"] = "demo-token"
        from poflow_dagster.definitions import defs
        from poflow_dagster.pipeline.local import local_instance, run_upload
        from poflow_dagster.pipeline.run_history import refresh_stage_runs

        click.echo(f"poflow demo: merchant {merchant_id}, home {home}, database {_safe(db.url)}, shop {shop.url}")
        uploads = [upload_file(db, home, merchant_id, path) for path in samples]
        duplicate = upload_file(db, home, merchant_id, samples[0])
        with local_instance(dagster_home) as instance:
            results = [run_upload(defs, instance, db, upload.id, log_level="ERROR") for upload in uploads]
            # The runs stay on this instance; stage_runs (`poflow report`) is brought up to date from it now.
            refresh_stage_runs(instance, db)
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
    click.echo(f"see the runs (tagged poflow/merchant={merchant_id}) in the Dagster UI:\n"
               f"  DAGSTER_HOME={dagster_home} dagster dev -m poflow_dagster.definitions\n"
               f"  then open http://127.0.0.1:3000/runs")
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
