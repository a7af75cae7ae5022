"""Bulk persistence benchmark (issue 9, part 4): saving a 5,000-line PO and its drafts, old ways against new.

    .venv/bin/python benchmarks/db_save.py [--lines 5000] [--repeat 3] [--backend sqlite|postgresql|both]

Same process, same data, one after the other, on SQLite (a temp file) and PostgreSQL (a fresh schema in the
local ``test`` database, dropped after; ``POFLOW_TEST_PG_URL`` overrides the server and driver, e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/test`` for psycopg 3):

- PO save: (a) per-row ``INSERT`` + ``COMMIT`` of each line (the baseline the goal is stated against), (b) the
  old ORM path (its code is copied below: ``LineItem`` objects flushed in chunks), (c) ``save_purchase_order``
  (set-based, one transaction: a ``COPY`` per 2 % chunk on PostgreSQL, chunked executemany on SQLite); then an
  unchanged re-save, old (loads every line to count them) against new (hash + ``COUNT(*)``).
- Drafts: the old ``upsert_drafts`` (ORM, one flush per draft; copied below) against the new one (one
  ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` per 2 % chunk, values converted once and sent to the driver:
  multi-row ``VALUES`` on SQLite, one JSON parameter on PostgreSQL), for 5,000 new SKUs, then 5,000 changed
  prices, then an unchanged re-run.

Each case runs ``--repeat`` times on fresh uploads / merchants; the median is reported. Goals: save ≥ 20× faster
than per-row inserts, drafts ≥ 10× faster than the old path.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy import select  # noqa: E402

from poflow_dagster.domain.drafts import DraftPlan, plan_drafts  # noqa: E402
from poflow_dagster.domain.models import ParsedPO, POLine  # noqa: E402
from poflow_dagster.store.db import Database  # noqa: E402
from poflow_dagster.store.drafts import DraftRecord, upsert_drafts  # noqa: E402
from poflow_dagster.store.merchants import configure_merchant  # noqa: E402
from poflow_dagster.store.parse_cache import parsed_hash  # noqa: E402
from poflow_dagster.store.purchase_orders import SavedPO, ensure_supplier, save_purchase_order  # noqa: E402
from poflow_dagster.store.schema import LineItem, ProductDraft, PurchaseOrder  # noqa: E402
from poflow_dagster.store.uploads import StoredFile, get_upload, register_upload  # noqa: E402

PG_ADMIN_URL = os.environ.get("POFLOW_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the old implementations (replaced in poflow_dagster/store), kept here as the baselines ------------------

OLD_SAVE_CHUNKS = 50


def old_save(db: Database, upload_id: str, parsed: ParsedPO) -> SavedPO:
    """``save_purchase_order``'s ``_save`` before issue 9: ORM objects, flushed in ~50 chunks."""
    content_hash = parsed_hash(parsed)
    with db.session() as session:
        existing = session.scalar(select(PurchaseOrder).where(PurchaseOrder.upload_id == upload_id))
        if existing is not None and existing.content_hash == content_hash:
            return SavedPO(po_id=existing.id, upload_id=upload_id, line_count=len(existing.lines), replaced=False,
                           unchanged=True)
        upload = get_upload(session, upload_id)
        supplier = ensure_supplier(session, upload.merchant_id, parsed.supplier_name)
        po = session.scalar(select(PurchaseOrder).where(PurchaseOrder.upload_id == upload_id))
        replaced = po is not None
        if po is None:
            po = PurchaseOrder(upload_id=upload_id, merchant_id=upload.merchant_id)
        else:
            po.lines.clear()
            session.flush()
        po.supplier_id = supplier.id if supplier else None
        po.po_number = parsed.po_number
        po.order_date = parsed.order_date
        po.currency = parsed.currency
        po.subtotal = parsed.subtotal
        po.tax = parsed.tax
        po.shipping = parsed.shipping
        po.total = parsed.total
        po.source_format = parsed.source_format
        po.extractor = parsed.extractor
        po.issues = [issue.model_dump() for issue in parsed.issues]
        po.content_hash = content_hash
        session.add(po)
        total = len(parsed.lines)
        chunk = max(1, min(500, -(-total // OLD_SAVE_CHUNKS)))
        for first in range(0, total, chunk):
            po.lines.extend(
                LineItem(line_no=line.line_no, sku=line.sku, description=line.description, quantity=line.quantity,
                         unit_cost=line.unit_cost, line_total=line.line_total)
                for line in parsed.lines[first:first + chunk]
            )
            session.flush()
        session.flush()
        return SavedPO(po_id=po.id, upload_id=upload_id, line_count=len(parsed.lines), replaced=replaced)


def old_upsert_drafts(db: Database, merchant_id: str, upload_id: str, plans: list[DraftPlan]) -> list[DraftRecord]:
    """``upsert_drafts`` before issue 9: ORM objects, one flush per draft."""

    def record(draft: ProductDraft, created: bool, changed: bool = True) -> DraftRecord:
        return DraftRecord(id=draft.id, sku=draft.sku, title=draft.title, description=draft.description,
                           price=draft.price, unit_cost=draft.unit_cost, created=created, changed=changed)

    records: list[DraftRecord] = []
    with db.session() as session:
        existing = {
            draft.sku: draft
            for draft in session.scalars(
                select(ProductDraft).where(ProductDraft.merchant_id == merchant_id,
                                           ProductDraft.sku.in_([plan.sku for plan in plans]))
            )
        }
        for plan in plans:
            draft = existing.get(plan.sku)
            created = draft is None
            if draft is not None and (draft.title, draft.description, draft.unit_cost, draft.price,
                                      draft.currency) == (plan.title, plan.description, plan.unit_cost,
                                                          plan.price, plan.currency):
                records.append(record(draft, created=False, changed=False))
                continue
            if draft is None:
                draft = ProductDraft(merchant_id=merchant_id, sku=plan.sku)
                session.add(draft)
            draft.title = plan.title
            draft.description = plan.description
            draft.unit_cost = plan.unit_cost
            draft.price = plan.price
            draft.currency = plan.currency
            draft.source_upload_id = upload_id
            session.flush()
            records.append(record(draft, created))
    return records


def per_row_save(db: Database, upload_id: str, parsed: ParsedPO) -> None:
    """The floor the goal is stated against: the PO row, then one ``INSERT`` + ``COMMIT`` per line."""
    po_table, lines_table = PurchaseOrder.__table__, LineItem.__table__
    with db.session() as session:
        upload = get_upload(session, upload_id)
        supplier = ensure_supplier(session, upload.merchant_id, parsed.supplier_name)
        po_id = session.execute(
            po_table.insert().values(upload_id=upload_id, merchant_id=upload.merchant_id,
                                     supplier_id=supplier.id if supplier else None, po_number=parsed.po_number,
                                     currency=parsed.currency, source_format=parsed.source_format,
                                     extractor=parsed.extractor, issues=[], content_hash=parsed_hash(parsed))
            .returning(po_table.c.id)
        ).scalar_one()
    for line in parsed.lines:
        with db.engine.begin() as conn:
            conn.execute(lines_table.insert(), {"po_id": po_id, "line_no": line.line_no, "sku": line.sku,
                                                "description": line.description, "quantity": line.quantity,
                                                "unit_cost": line.unit_cost, "line_total": line.line_total})


# --- data and timing ---------------------------------------------------------------------------------------


def make_po(lines: int, po_number: str, cost_shift: str = "0") -> ParsedPO:
    shift = Decimal(cost_shift)
    return ParsedPO(
        po_number=po_number, supplier_name="Bench Supply Co", currency="USD", source_format="csv",
        extractor="bench",
        lines=[
            POLine(line_no=i, sku=f"SKU-{i:06d}", description=f"Bench item {i} in a realistic length description",
                   quantity=Decimal(i % 7 + 1), unit_cost=Decimal(i % 500 + 1) / 100 + shift,
                   line_total=Decimal(i % 7 + 1) * (Decimal(i % 500 + 1) / 100 + shift))
            for i in range(1, lines + 1)
        ],
    )


def _stored(tag: str) -> StoredFile:
    return StoredFile(sha256=secrets.token_hex(32), size_bytes=1, mime_type="text/csv",
                      stored_path=f"/tmp/bench-{tag}.csv", original_filename=f"{tag}.csv")


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def line_count(db: Database, upload_id: str) -> int:
    with db.session() as session:
        return session.scalar(
            select(sa.func.count(LineItem.id)).join(PurchaseOrder, LineItem.po_id == PurchaseOrder.id)
            .where(PurchaseOrder.upload_id == upload_id)
        )


def bench_database(db: Database, lines: int, repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    merchant = f"bench-{secrets.token_hex(4)}"
    with db.session() as session:
        configure_merchant(session, merchant, markup_percent=Decimal("40"))
    for r in range(repeat):
        for name, save in (("save per-row INSERT+COMMIT", per_row_save), ("save old ORM", old_save),
                           ("save new", save_purchase_order)):
            upload = register_upload(db, merchant, _stored(f"{name}-{r}"))
            po = make_po(lines, f"PO-{secrets.token_hex(4)}")
            add(name, timed(lambda: save(db, upload.id, po)))
            assert line_count(db, upload.id) == lines, name
            if save is not per_row_save:
                unchanged = f"re-save unchanged, {name.removeprefix('save ')}"
                add(unchanged, timed(lambda: save(db, upload.id, po)))
                assert line_count(db, upload.id) == lines
        # Drafts: each path on its own merchant so both create the same 5,000 new SKUs, then update, then no-op.
        for name, upsert in (("old ORM", old_upsert_drafts), ("new", upsert_drafts)):
            owner = f"bench-{secrets.token_hex(4)}"
            with db.session() as session:
                configure_merchant(session, owner, markup_percent=Decimal("40"))
            upload = register_upload(db, owner, _stored(f"drafts-{name}-{r}"))
            plans, _ = plan_drafts(make_po(lines, "PO-D"), Decimal("40"))
            changed, _ = plan_drafts(make_po(lines, "PO-D", cost_shift="0.50"), Decimal("40"))
            add(f"drafts create, {name}", timed(lambda: upsert(db, owner, upload.id, plans)))
            add(f"drafts update, {name}", timed(lambda: upsert(db, owner, upload.id, changed)))
            add(f"drafts unchanged, {name}", timed(lambda: upsert(db, owner, upload.id, changed)))
            with db.session() as session:
                assert session.scalar(select(sa.func.count(ProductDraft.id))
                                      .where(ProductDraft.merchant_id == owner)) == lines
    return times


def report(backend: str, times: dict[str, list[float]]) -> None:
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{backend}: median seconds (fastest)")
    for name, seconds in medians.items():
        print(f"  {name:<45} {seconds:8.3f} s ({min(times[name]):.3f} s)")
    new = medians["save new"]
    print(f"  save: per-row / new = {medians['save per-row INSERT+COMMIT'] / new:6.1f}x (goal >= 20x), "
          f"old ORM / new = {medians['save old ORM'] / new:5.1f}x")
    print(f"  unchanged re-save: old / new = "
          f"{medians['re-save unchanged, old ORM'] / medians['re-save unchanged, new']:5.1f}x")
    for case in ("create", "update", "unchanged"):
        old_runs, new_runs = times[f"drafts {case}, old ORM"], times[f"drafts {case}, new"]
        goal = " (goal >= 10x)" if case != "unchanged" else ""
        # Fastest / fastest: the runs least slowed by other load, closest to a quiet machine.
        print(f"  drafts {case}: old / new = {statistics.median(old_runs) / statistics.median(new_runs):5.1f}x{goal}, "
              f"fastest / fastest = {min(old_runs) / min(new_runs):5.1f}x")


def run_backend(backend: str, lines: int, repeat: int) -> None:
    log(f"{backend}: load average {os.getloadavg()[0]:.1f}")
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{tmp}/bench.sqlite3")
            db.migrate()
            try:
                report(backend, bench_database(db, lines, repeat))
            finally:
                db.dispose()
        return
    schema = f"poflow_bench_{secrets.token_hex(6)}"
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    db = Database(f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}")
    try:
        db.migrate()
        report(f"{backend} ({db.engine.dialect.driver})", bench_database(db, lines, repeat))
    finally:
        db.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    log(f"{args.lines} lines, {args.repeat} repeats, SQLAlchemy {sa.__version__}, load average {load}")
    for backend in (["sqlite", "postgresql"] if args.backend == "both" else [args.backend]):
        run_backend(backend, args.lines, args.repeat)


if __name__ == "__main__":
    main()
