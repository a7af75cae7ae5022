"""Saving a parsed PO: one transaction; saving the same upload again replaces it."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from poflow_dagster.domain.models import ParsedPO, POLine
from poflow_dagster.store.db import Database
from poflow_dagster.store.parse_cache import parsed_hash
from poflow_dagster.store.schema import LineItem, PurchaseOrder, Supplier
from poflow_dagster.store.types import utcnow
from poflow_dagster.store.uploads import get_upload


@dataclass(frozen=True)
class SavedPO:
    po_id: int
    upload_id: str
    line_count: int
    replaced: bool  # an earlier save of this upload was replaced
    unchanged: bool = False  # an identical save existed: nothing was written
    #: Another upload of this merchant saved the same supplier + PO number first: nothing was written,
    #: ``po_id`` is that upload's PO and this upload is its duplicate.
    duplicate_of: str | None = None


#: The unique constraint that makes one PO per merchant + supplier + PO number (schema 0003).
UNIQUE_PO_CONSTRAINT = "uq_purchase_orders_merchant_supplier_po"
_UNIQUE_PO_SQLITE = "purchase_orders.merchant_id, purchase_orders.supplier_id, purchase_orders.po_number"


def normalize_supplier_name(name: str) -> str:
    return " ".join(name.casefold().split())


def ensure_supplier(session: Session, merchant_id: str, name: str | None) -> Supplier | None:
    """The merchant's supplier of this name (case and spacing ignored), created if new.

    Race-safe: two transactions creating the same supplier at once both end up with the one row
    (``INSERT … ON CONFLICT DO NOTHING``, then read), and neither transaction is aborted.
    """
    if not name or not name.strip():
        return None
    normalized = normalize_supplier_name(name)
    query = select(Supplier).where(Supplier.merchant_id == merchant_id, Supplier.normalized_name == normalized)
    supplier = session.scalar(query)
    if supplier is None:
        dialect = session.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        session.execute(
            insert(Supplier)
            .values(merchant_id=merchant_id, name=name.strip(), normalized_name=normalized, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["merchant_id", "normalized_name"])
        )
        supplier = session.scalar(query)
        assert supplier is not None  # inserted now, or by the transaction that won the race
    return supplier


#: Lines are written in about this many chunks (``on_progress`` is called after each): 2 % of the lines a chunk,
#: so a 5,000-line PO reports 50 steps.
SAVE_CHUNKS = 50
#: At most this many lines in one executemany chunk: 2,000 lines × 8 columns stays far below SQLite's 32,766
#: and PostgreSQL's 65,535 bound parameters, and a 100,000-line PO never holds more than one chunk's rows.
MAX_CHUNK_LINES = 2000

#: How each parsed line maps onto ``line_items`` (besides ``po_id``).
_LINE_COLUMNS = ("line_no", "sku", "barcode", "description", "quantity", "unit_cost", "line_total")


def save_purchase_order(
    db: Database, upload_id: str, parsed: ParsedPO, *, on_progress: Callable[..., None] | None = None
) -> SavedPO:
    """Write the PO and its lines in one transaction, replacing any earlier save of this upload.
    ``on_progress(lines written, lines, message)`` is called after each chunk of lines (inside the transaction),
    about 50 times for a large PO, e.g. ``(2000, 5000, "Saved 2,000/5,000 lines")``.

    Lines are written with set-based statements (chunked executemany), never row by row through the ORM. An
    identical earlier save (same parsed content, all its lines present) is left as it is, found without
    loading a line. If another upload of the merchant holds the same supplier + PO number — even one saved at
    this very moment — the database's unique constraint decides: nothing is written and the result names that
    upload (``duplicate_of``).
    """
    for attempt in range(3):
        try:
            return _save(db, upload_id, parsed, on_progress)
        except IntegrityError as error:
            if _violates_unique_po(error):
                winner = find_duplicate_po(db, upload_id, parsed)
                if winner is not None:
                    with db.session() as session:
                        po_id = session.scalar(select(PurchaseOrder.id).where(PurchaseOrder.upload_id == winner))
                    return SavedPO(po_id=po_id or 0, upload_id=upload_id, line_count=0, replaced=False,
                                   duplicate_of=winner)
            if attempt == 2:  # e.g. two runs of this same upload saved at once: the retry sees the winner's save
                raise
    raise AssertionError("unreachable")


def _violates_unique_po(error: IntegrityError) -> bool:
    diag = getattr(error.orig, "diag", None)
    if getattr(diag, "constraint_name", None) == UNIQUE_PO_CONSTRAINT:
        return True
    text = str(error.orig)
    return UNIQUE_PO_CONSTRAINT in text or _UNIQUE_PO_SQLITE in text


def save_chunk_size(total: int) -> int:
    """Lines per executemany chunk for a PO of ``total`` lines (about 2 %, at least 1, at most 2,000)."""
    return max(1, min(MAX_CHUNK_LINES, -(-total // SAVE_CHUNKS)))


def _save(db: Database, upload_id: str, parsed: ParsedPO, on_progress: Callable[..., None] | None) -> SavedPO:
    content_hash = parsed_hash(parsed)
    total = len(parsed.lines)
    po_table = PurchaseOrder.__table__
    lines_table = LineItem.__table__
    with db.session() as session:
        existing = session.execute(
            select(PurchaseOrder.id, PurchaseOrder.content_hash).where(PurchaseOrder.upload_id == upload_id)
        ).first()
        if existing is not None and existing.content_hash == content_hash:
            # Counted in SQL (an index-only count), never loaded: a save that somehow lost lines is written again.
            saved_lines = session.scalar(select(func.count()).select_from(lines_table)
                                         .where(lines_table.c.po_id == existing.id))
            if saved_lines == total:
                return SavedPO(po_id=existing.id, upload_id=upload_id, line_count=total, replaced=False,
                               unchanged=True)
        upload = get_upload(session, upload_id)
        supplier = ensure_supplier(session, upload.merchant_id, parsed.supplier_name)
        header = {
            "supplier_id": supplier.id if supplier else None,
            "po_number": parsed.po_number,
            "order_date": parsed.order_date,
            "currency": parsed.currency,
            "subtotal": parsed.subtotal,
            "tax": parsed.tax,
            "shipping": parsed.shipping,
            "total": parsed.total,
            "source_format": parsed.source_format,
            "extractor": parsed.extractor,
            "issues": [issue.model_dump() for issue in parsed.issues],
            "content_hash": content_hash,
        }
        if existing is None:
            # A concurrent save of this upload (or of the same PO number) makes this INSERT fail with
            # IntegrityError: the transaction rolls back whole and ``save_purchase_order`` decides.
            po_id = session.execute(
                po_table.insert()
                .values(upload_id=upload_id, merchant_id=upload.merchant_id, **header)
                .returning(po_table.c.id)
            ).scalar_one()
        else:
            po_id = existing.id
            session.execute(po_table.update().where(po_table.c.id == po_id).values(**header))
            session.execute(lines_table.delete().where(lines_table.c.po_id == po_id))
        connection = session.connection()
        chunk = save_chunk_size(total)
        for first in range(0, total, chunk):
            _insert_lines(connection, po_id, parsed.lines[first:first + chunk])
            if on_progress is not None:
                done = min(first + chunk, total)
                on_progress(done, total, f"Saved {done:,}/{total:,} lines")
        return SavedPO(po_id=po_id, upload_id=upload_id, line_count=total, replaced=existing is not None)


def _insert_lines(connection: Connection, po_id: int, lines: list[POLine]) -> None:
    """Write one chunk of lines in one statement: ``COPY … FROM STDIN`` on PostgreSQL (psycopg 3 or psycopg2),
    else a Core executemany (SQLite's driver loops over the rows in C)."""
    driver = connection.dialect.driver if connection.dialect.name == "postgresql" else None
    if driver in ("psycopg", "psycopg2"):
        copy_sql = f"COPY line_items (po_id, {', '.join(_LINE_COLUMNS)}) FROM STDIN"
        cursor = connection.connection.dbapi_connection.cursor()  # the transaction's own connection
        try:
            if driver == "psycopg":
                with cursor.copy(copy_sql) as copy:
                    for line in lines:
                        copy.write_row((po_id, *(getattr(line, column) for column in _LINE_COLUMNS)))
            else:
                text = "".join(
                    "\t".join([str(po_id), *(_copy_text(getattr(line, column)) for column in _LINE_COLUMNS)]) + "\n"
                    for line in lines
                )
                cursor.copy_expert(copy_sql, io.StringIO(text))
        finally:
            cursor.close()
        return
    connection.execute(
        LineItem.__table__.insert(),
        [{"po_id": po_id, **{column: getattr(line, column) for column in _LINE_COLUMNS}} for line in lines],
    )


def _copy_text(value: object) -> str:
    """One field of PostgreSQL's COPY text format (``\\N`` for NULL; backslash, tab, newline, CR escaped).
    Decimals are written exactly, in fixed-point form, as the NUMERIC column would receive them bound."""
    if value is None:
        return "\\N"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@dataclass(frozen=True)
class POIntegrity:
    """What the database holds for one upload's PO, for the ``po_saved_correctly`` check."""

    po_count: int
    line_count: int
    lines_sum: Decimal
    subtotal: Decimal | None
    orphan_lines: int


def po_integrity(db: Database, upload_id: str) -> POIntegrity:
    """Count and sum what the database holds (the line amounts are read as plain rows and summed as Decimals:
    exact on both databases, no ORM objects)."""
    with db.session() as session:
        pos = session.execute(
            select(PurchaseOrder.id, PurchaseOrder.subtotal).where(PurchaseOrder.upload_id == upload_id)
        ).all()
        amounts = session.execute(
            select(LineItem.line_total, LineItem.quantity, LineItem.unit_cost)
            .where(LineItem.po_id.in_([po.id for po in pos]))
        ).all()
        lines_sum = sum(
            (
                line_total if line_total is not None else (quantity or Decimal(0)) * (unit_cost or Decimal(0))
                for line_total, quantity, unit_cost in amounts
            ),
            Decimal(0),
        )
        orphans = session.scalar(
            select(func.count(LineItem.id))
            .outerjoin(PurchaseOrder, LineItem.po_id == PurchaseOrder.id)
            .where(PurchaseOrder.id.is_(None))
        )
        return POIntegrity(
            po_count=len(pos),
            line_count=len(amounts),
            lines_sum=lines_sum,
            subtotal=pos[0].subtotal if pos else None,
            orphan_lines=int(orphans or 0),
        )


TOLERANCE = Decimal("0.01")


def saved_po_problems(integrity: POIntegrity, expected_lines: int, expected_subtotal: Decimal | None) -> list[str]:
    """Why the saved PO differs from what was parsed (empty = saved correctly)."""
    problems: list[str] = []
    if integrity.po_count != 1:
        problems.append(f"{integrity.po_count} purchase orders saved for this upload, expected 1")
    if integrity.line_count != expected_lines:
        problems.append(f"{integrity.line_count} lines in the database, {expected_lines} parsed")
    if expected_subtotal is not None and abs(integrity.lines_sum - expected_subtotal) > TOLERANCE:
        problems.append(f"lines sum to {integrity.lines_sum}, the PO subtotal is {expected_subtotal}")
    if integrity.orphan_lines:
        problems.append(f"{integrity.orphan_lines} line items belong to no purchase order")
    return problems


def find_duplicate_po(db: Database, upload_id: str, parsed: ParsedPO) -> str | None:
    """The earlier upload whose saved PO has the same supplier and PO number for this merchant, if any."""
    if not parsed.po_number or not parsed.supplier_name:
        return None
    with db.session() as session:
        upload = get_upload(session, upload_id)
        supplier = session.scalar(
            select(Supplier).where(
                Supplier.merchant_id == upload.merchant_id,
                Supplier.normalized_name == normalize_supplier_name(parsed.supplier_name),
            )
        )
        if supplier is None:
            return None
        return session.scalar(
            select(PurchaseOrder.upload_id)
            .where(
                PurchaseOrder.merchant_id == upload.merchant_id,
                PurchaseOrder.supplier_id == supplier.id,
                PurchaseOrder.po_number == parsed.po_number,
                PurchaseOrder.upload_id != upload_id,
            )
            .order_by(PurchaseOrder.id)
            .limit(1)
        )


def saved_lines(db: Database, upload_id: str) -> list[LineItem]:
    """The upload's saved PO lines in line order (detached, read-only use; ``barcode`` as printed); none when
    nothing was saved."""
    with db.session() as session:
        return list(session.scalars(
            select(LineItem).join(PurchaseOrder, LineItem.po_id == PurchaseOrder.id)
            .where(PurchaseOrder.upload_id == upload_id).order_by(LineItem.line_no)
        ))
