"""Bulk persistence (issue 9, part 4): PO lines, drafts and Shopify links written with set-based statements.

On SQLite and PostgreSQL: a 5,000-line PO saves every line and draft exactly once and reports its progress in
≥ 50 steps; an unchanged re-save writes nothing and never reads a line; a changed PO replaces its lines; drafts
written past SQLAlchemy's per-row processing store exactly what the ORM stores; saves of one upload (and drafts
of overlapping SKUs) racing on PostgreSQL end with one copy of everything.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
import sqlalchemy as sa

from poflow_dagster.domain.drafts import DraftPlan
from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.store import drafts as drafts_store
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import (
    DRAFT_CHUNKS,
    count_shopify_links,
    create_drafts_for_po,
    record_shopify_links,
    upsert_drafts,
)
from poflow_dagster.store.merchants import configure_merchant
from poflow_dagster.store.purchase_orders import (
    MAX_CHUNK_LINES,
    po_integrity,
    save_chunk_size,
    save_purchase_order,
    saved_po_problems,
)
from poflow_dagster.store.schema import LineItem, ProductDraft, PurchaseOrder, ShopifyProduct
from poflow_dagster.store.types import normalize_decimal
from poflow_dagster.store.uploads import StoredFile, register_upload


def _stored(sha: str) -> StoredFile:
    return StoredFile(sha256=sha, size_bytes=10, mime_type="text/csv", stored_path="/tmp/po.csv",
                      original_filename="po.csv")


def _po(lines: int, *, po_number: str = "PO-BULK", cost_shift: str = "0", sku_prefix: str = "SKU") -> ParsedPO:
    shift = Decimal(cost_shift)
    parsed = [
        POLine(line_no=i, sku=f"{sku_prefix}-{i:05d}", description=f"item {i}", quantity=Decimal(i % 3 + 1),
               unit_cost=Decimal(i % 97 + 1) / 100 + shift,
               line_total=Decimal(i % 3 + 1) * (Decimal(i % 97 + 1) / 100 + shift))
        for i in range(1, lines + 1)
    ]
    subtotal = sum((line.line_total for line in parsed), Decimal(0))
    return ParsedPO(po_number=po_number, supplier_name="Bulk Supply", currency="USD", lines=parsed,
                    subtotal=subtotal, source_format="csv", extractor="test")


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    """Every SQL statement the engine sends while the block runs (lower-cased)."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        seen.append(statement.lower())

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)


def _line_rows(db: Database, upload_id: str) -> list[tuple]:
    with db.session() as session:
        return list(session.execute(
            sa.select(LineItem.line_no, LineItem.sku, LineItem.quantity, LineItem.unit_cost, LineItem.line_total)
            .join(PurchaseOrder, LineItem.po_id == PurchaseOrder.id)
            .where(PurchaseOrder.upload_id == upload_id)
            .order_by(LineItem.line_no)
        ).all())


def test_a_5000_line_po_saves_every_line_and_draft_once_with_progress(db):
    with db.session() as session:
        configure_merchant(session, "m1", markup_percent=Decimal("40"))
    upload = register_upload(db, "m1", _stored("1" * 64))
    po = _po(5000)
    steps: list[tuple[int, int, str]] = []

    saved = save_purchase_order(db, upload.id, po, on_progress=lambda *step: steps.append(step))

    assert (saved.line_count, saved.replaced, saved.unchanged) == (5000, False, False)
    rows = _line_rows(db, upload.id)
    assert rows == [(l.line_no, l.sku, l.quantity, l.unit_cost, l.line_total) for l in po.lines]
    assert all(isinstance(row[3], Decimal) for row in rows)
    assert saved_po_problems(po_integrity(db, upload.id), 5000, po.subtotal) == []
    # Progress per chunk: ≥ 50 steps, rising to the total, each with a readable message.
    assert len(steps) >= 50
    assert [done for done, _, _ in steps] == sorted({done for done, _, _ in steps})
    assert steps[-1] == (5000, 5000, "Saved 5,000/5,000 lines")
    assert steps[19][2] == f"Saved {steps[19][0]:,}/5,000 lines" and re.fullmatch(r"Saved [\d,]+/5,000 lines",
                                                                                   steps[0][2])

    draft_steps: list[tuple[int, int, str]] = []
    outcome = create_drafts_for_po(db, upload.id, po, on_progress=lambda *step: draft_steps.append(step))
    assert len(outcome.drafts) == 5000 and all(d.created and d.changed for d in outcome.drafts)
    assert [d.sku for d in outcome.drafts] == [line.sku for line in po.lines]  # PO order
    assert outcome.drafts[0].price == Decimal("0.03")  # 0.02 + 40 %, exact
    # One step per chunk of 100 drafts (2 %), each after its chunk is written.
    assert [step[:2] for step in draft_steps] == [(done, 5000) for done in range(100, 5001, 5000 // DRAFT_CHUNKS)]
    assert draft_steps[-1] == (5000, 5000, "Saved 5,000/5,000 product drafts")
    assert draft_steps[0][2] == "Saved 100/5,000 product drafts"
    again_steps: list[tuple[int, int, str]] = []
    with _statements(db) as seen:  # a re-run: the same drafts, nothing written, progress still reported
        again = create_drafts_for_po(db, upload.id, po, on_progress=lambda *step: again_steps.append(step))
    assert [d.id for d in again.drafts] == [d.id for d in outcome.drafts]
    assert not any(d.created or d.changed for d in again.drafts)
    assert [step[:2] for step in again_steps] == [step[:2] for step in draft_steps]
    touching_drafts = [s for s in seen if "product_drafts" in s]
    assert len(touching_drafts) == 1 and re.match(r"\s*select", touching_drafts[0])  # one read of them all
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(ProductDraft.id))) == 5000
        assert session.scalar(sa.select(sa.func.count(sa.distinct(ProductDraft.sku)))) == 5000


def test_an_unchanged_re_save_neither_writes_nor_reads_lines(db):
    upload = register_upload(db, "m1", _stored("1" * 64))
    po = _po(5000)
    first = save_purchase_order(db, upload.id, po)
    with _statements(db) as seen:
        again = save_purchase_order(db, upload.id, po)
    assert again == type(first)(po_id=first.po_id, upload_id=upload.id, line_count=5000, replaced=False,
                                unchanged=True)
    touching_lines = [s for s in seen if "line_items" in s]
    # One index count of the lines (a save that lost lines is written again), never a row read or a write.
    assert len(touching_lines) == 1 and re.match(r"\s*select count\(\*\)", touching_lines[0])
    assert not [s for s in seen if re.match(r"\s*(insert|update|delete)", s)]
    assert len(_line_rows(db, upload.id)) == 5000


def test_a_changed_po_replaces_its_lines_and_a_save_missing_lines_is_repaired(db):
    upload = register_upload(db, "m1", _stored("1" * 64))
    first = save_purchase_order(db, upload.id, _po(5000))
    changed = _po(3000, cost_shift="1.25", sku_prefix="NEW")
    # Text that COPY's format must escape, a line with no numbers at all, an exponent-form decimal.
    changed.lines[0] = changed.lines[0].model_copy(update={"description": "tab\there\\back\nnew\rline ünï"})
    changed.lines[1] = changed.lines[1].model_copy(update={"sku": None, "description": None, "quantity": None,
                                                          "unit_cost": None, "line_total": Decimal("1E+2")})
    second = save_purchase_order(db, upload.id, changed)
    assert (second.po_id, second.replaced, second.unchanged, second.line_count) == (first.po_id, True, False, 3000)
    assert _line_rows(db, upload.id) == [
        (l.line_no, l.sku, l.quantity, l.unit_cost, l.line_total) for l in changed.lines
    ]
    with db.session() as session:
        first_two = session.execute(sa.select(LineItem.description, LineItem.line_total)
                                    .where(LineItem.line_no <= 2).order_by(LineItem.line_no)).all()
    assert [tuple(row) for row in first_two] == [("tab\there\\back\nnew\rline ünï", changed.lines[0].line_total),
                                                 (None, Decimal("100.00"))]
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(LineItem.id))) == 3000
        assert session.scalar(sa.select(sa.func.count(PurchaseOrder.id))) == 1
        session.execute(sa.delete(LineItem).where(LineItem.line_no > 2990))  # lines lost behind our back
    repaired = save_purchase_order(db, upload.id, changed)
    assert (repaired.unchanged, repaired.replaced) == (False, True)
    assert len(_line_rows(db, upload.id)) == 3000


# Text the drivers and PostgreSQL's array syntax must carry as it is: quotes, braces, commas, backslashes, tabs,
# newlines, non-ASCII, the word NULL (an unquoted NULL in an array literal is a null) and the empty string.
_AWKWARD = ['say "hi", {now}', "back\\slash\ttab\nnew\rline ünï €", "NULL", "", "it's"]


def _awkward_plans(shift: Decimal = Decimal(0)) -> list[DraftPlan]:
    costs = [Decimal("0.1"), Decimal("1E+2"), Decimal("0"), Decimal("12345678901234.5678"), Decimal("3.3333")]
    return [
        DraftPlan(sku=f"AWK-{i}", title=text or "t", description=None if i == 2 else text, unit_cost=cost + shift,
                  price=(cost + shift) * 2, currency=None if i == 3 else "EUR")
        for i, (text, cost) in enumerate(zip(_AWKWARD, costs, strict=True))
    ] + [DraftPlan(sku="AWK-9", title="rounded", description="NULL", unit_cost=Decimal("2.00005"),
                   price=Decimal("-4.123456789"), currency="USD")]


_STORED_COLUMNS = ("sku", "title", "description", "unit_cost", "price", "currency", "status", "source_upload_id",
                   "created_at", "updated_at")


def _stored_rows(db: Database, merchant_id: str) -> list[tuple]:
    """The drafts as the database driver returns them (no SQLAlchemy type processing): SQLite's decimal and
    timestamp text, PostgreSQL's NUMERIC and timestamptz."""
    with db.session() as session:
        return [tuple(row) for row in session.connection().exec_driver_sql(
            f"SELECT {', '.join(_STORED_COLUMNS)} FROM product_drafts WHERE merchant_id = '{merchant_id}' "
            "ORDER BY sku"
        )]


def _orm_upsert(db: Database, merchant_id: str, upload_id: str, plans: list[DraftPlan], now: dt.datetime) -> None:
    """What the ORM stores for the same drafts (the reference the set-based writes must match)."""
    with db.session() as session:
        existing = {d.sku: d for d in session.scalars(sa.select(ProductDraft)
                                                      .where(ProductDraft.merchant_id == merchant_id))}
        for plan in plans:
            draft = existing.get(plan.sku) or ProductDraft(merchant_id=merchant_id, sku=plan.sku, status="draft",
                                                           created_at=now)
            draft.title, draft.description, draft.currency = plan.title, plan.description, plan.currency
            draft.unit_cost, draft.price, draft.source_upload_id, draft.updated_at = (
                plan.unit_cost, plan.price, upload_id, now)
            session.add(draft)


def test_drafts_store_exactly_what_the_orm_stores(db, monkeypatch):
    for merchant in ("fast", "orm"):
        with db.session() as session:
            configure_merchant(session, merchant, markup_percent=Decimal("40"))
    upload = register_upload(db, "fast", _stored("1" * 64))
    # A clock in another zone: both paths must store it as the same UTC instant, in the same format.
    created = dt.datetime(2026, 5, 1, 14, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    updated = dt.datetime(2026, 5, 2, 1, 2, 3, 7, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    for now, plans in ((created, _awkward_plans()), (updated, _awkward_plans(Decimal("0.25")))):
        monkeypatch.setattr(drafts_store, "utcnow", lambda now=now: now)
        records = upsert_drafts(db, "fast", upload.id, plans)
        _orm_upsert(db, "orm", upload.id, plans, now)
        assert _stored_rows(db, "fast") == _stored_rows(db, "orm")  # byte for byte what the ORM stores
        assert [r.sku for r in records] == [p.sku for p in plans] and all(r.changed for r in records)
    with db.session() as session:
        drafts = list(session.scalars(sa.select(ProductDraft).where(ProductDraft.merchant_id == "fast")
                                      .order_by(ProductDraft.sku)))
    # Read back through the ORM, the same values on both databases: exact decimals (at least 2 places), aware UTC
    # times (created kept, updated moved), every awkward text as it was.
    assert [(d.title, d.description, d.currency, d.unit_cost, d.price) for d in drafts[:5]] == [
        ('say "hi", {now}', 'say "hi", {now}', "EUR", Decimal("0.35"), Decimal("0.70")),
        ("back\\slash\ttab\nnew\rline ünï €", "back\\slash\ttab\nnew\rline ünï €", "EUR", Decimal("100.25"),
         Decimal("200.50")),
        ("NULL", None, "EUR", Decimal("0.25"), Decimal("0.50")),
        ("t", "", None, Decimal("12345678901234.8178"), Decimal("24691357802469.6356")),
        ("it's", "it's", "EUR", Decimal("3.5833"), Decimal("7.1666")),
    ]
    assert drafts[5].description == "NULL" and drafts[5].price == Decimal("-4.1235")
    # The exact form too: storage padding dropped, at least two places kept.
    assert [(str(d.unit_cost), str(d.price)) for d in drafts] == [
        ("0.35", "0.70"), ("100.25", "200.50"), ("0.25", "0.50"), ("12345678901234.8178", "24691357802469.6356"),
        ("3.5833", "7.1666"), (str(drafts[5].unit_cost), "-4.1235"),
    ] and str(drafts[5].unit_cost) in ("2.00", "2.0001")  # 2.00005: SQLite rounds half-even, PostgreSQL up
    assert {(d.created_at, d.updated_at) for d in drafts} == {(created, updated)}
    assert {(d.created_at.utcoffset(), d.updated_at.utcoffset()) for d in drafts} == {(dt.timedelta(0),) * 2}
    assert all(type(d.price) is Decimal and type(d.unit_cost) is Decimal for d in drafts)


@pytest.mark.parametrize(("stored", "min_places", "read"), [
    ("12.9000", 2, "12.90"), ("1.2340", 2, "1.234"), ("100.0000", 2, "100.00"), ("0.0000", 2, "0.00"),
    ("-0.0001", 2, "-0.0001"), ("1E+2", 2, "100.00"), ("12.0000", 0, "12"), ("2.5000", 0, "2.5"), ("1E+2", 0, "100"),
    ("NaN", 2, "NaN"),
])
def test_stored_decimals_read_back_without_padding_but_with_min_places(stored, min_places, read):
    assert str(normalize_decimal(Decimal(stored), min_places)) == read


def test_drafts_are_written_by_one_statement_a_chunk_and_unchanged_ones_not_at_all(db):
    with db.session() as session:
        configure_merchant(session, "m1", markup_percent=Decimal("40"))
    upload = register_upload(db, "m1", _stored("1" * 64))
    plans = [DraftPlan(sku=f"S-{i:04d}", title=f"item {i}", description=None, unit_cost=Decimal(i) / 100,
                       price=Decimal(i) / 50, currency="USD") for i in range(1000)]
    with _statements(db) as seen:
        first = upsert_drafts(db, "m1", upload.id, plans)
    writes = [s for s in seen if "product_drafts" in s and re.match(r"\s*insert", s)]
    assert len(writes) == DRAFT_CHUNKS and len([s for s in seen if "product_drafts" in s]) == DRAFT_CHUNKS + 1
    changed = plans[:]
    changed[500] = DraftPlan(**{**vars(plans[500]), "price": Decimal("99.99")})  # one changed draft, chunk 26
    with _statements(db) as seen:
        second = upsert_drafts(db, "m1", upload.id, changed)
    assert len([s for s in seen if re.match(r"\s*insert", s)]) == 1
    assert [d.id for d in second] == [d.id for d in first]
    assert [i for i, d in enumerate(second) if d.changed] == [500] and not any(d.created for d in second)
    assert second[500].price == Decimal("99.99") and second[499].price == Decimal("9.98")


def test_chunks_stay_within_parameter_limits_for_huge_pos():
    assert save_chunk_size(5000) == 100  # 2 %: 50 progress steps
    assert save_chunk_size(3) == 1
    assert save_chunk_size(100_000) == MAX_CHUNK_LINES
    assert MAX_CHUNK_LINES * 7 < 32_766  # SQLite's bound-parameter limit (PostgreSQL's is 65,535)


def test_shopify_links_are_upserted_never_doubled(db):
    upload = register_upload(db, "m1", _stored("1" * 64))
    po = _po(30)
    save_purchase_order(db, upload.id, po)
    drafts = create_drafts_for_po(db, upload.id, po).drafts
    links = [(d.id, f"h-{d.sku}", f"gid://p/{d.id}", f"gid://v/{d.id}", d.price) for d in drafts]
    record_shopify_links(db, "https://a.example", links[:20])
    record_shopify_links(db, "https://b.example", [(i, h, p, v, price + 1) for i, h, p, v, price in links])
    assert count_shopify_links(db, [d.id for d in drafts]) == 30
    with db.session() as session:
        rows = {row.draft_id: row for row in session.scalars(sa.select(ShopifyProduct))}
    assert len(rows) == 30 and {row.shop_url for row in rows.values()} == {"https://b.example"}
    assert rows[drafts[0].id].synced_price == drafts[0].price + 1


def _race(work, threads: int = 4) -> list:
    barrier = threading.Barrier(threads)
    results: list = [None] * threads

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            results[index] = error

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not [r for r in results if isinstance(r, BaseException)], results
    return results


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_concurrent_saves_of_one_upload_end_with_one_copy(db):
    with db.session() as session:
        configure_merchant(session, "m1", markup_percent=Decimal("40"))
    upload = register_upload(db, "m1", _stored("1" * 64))
    po = _po(2000)
    saves = _race(lambda _i: save_purchase_order(db, upload.id, po))
    assert {s.po_id for s in saves} == {saves[0].po_id} and not any(s.duplicate_of for s in saves)
    assert sum(not s.unchanged for s in saves) >= 1
    rows = _line_rows(db, upload.id)
    assert [row[0] for row in rows] == list(range(1, 2001))
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(PurchaseOrder.id))) == 1
        assert session.scalar(sa.select(sa.func.count(LineItem.id))) == 2000
    # Two POs of the merchant sharing 1,000 SKUs draft at once (a re-run of each too): no deadlock, no double.
    other = register_upload(db, "m1", _stored("2" * 64))
    po_b = _po(2000, po_number="PO-B", cost_shift="0.10", sku_prefix="B")
    po_b.lines[:1000] = [line.model_copy(update={"sku": f"SKU-{i:05d}"}) for i, line in
                         enumerate(po_b.lines[:1000], start=1001)]
    save_purchase_order(db, other.id, po_b)
    jobs = [(upload.id, po), (other.id, po_b), (upload.id, po), (other.id, po_b)]
    outcomes = _race(lambda i: create_drafts_for_po(db, jobs[i][0], jobs[i][1]))
    skus = {line.sku for line in po.lines} | {line.sku for line in po_b.lines}
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count(ProductDraft.id))) == len(skus) == 3000
    assert all(len(o.drafts) == 2000 for o in outcomes)
