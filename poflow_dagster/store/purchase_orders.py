"""Saving a parsed PO: one transaction; saving the same upload again replaces it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from poflow_dagster.domain.models import ParsedPO
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


#: Lines are written in about this many chunks (``on_progress`` is called after each), at most 500 lines a chunk.
SAVE_CHUNKS = 50


def save_purchase_order(
    db: Database, upload_id: str, parsed: ParsedPO, *, on_progress: Callable[[int, int], None] | None = None
) -> SavedPO:
    """Write the PO and its lines in one transaction, replacing any earlier save of this upload.
    ``on_progress(lines written, lines)`` is called as chunks of lines are written (inside the transaction).

    An identical earlier save (same parsed content) is left as it is. If another upload of the merchant
    holds the same supplier + PO number — even one saved at this very moment — the database's unique
    constraint decides: nothing is written and the result names that upload (``duplicate_of``).
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
            if attempt == 2:  # e.g. two runs of this same upload saved at once: the retry replaces
                raise
    raise AssertionError("unreachable")


def _violates_unique_po(error: IntegrityError) -> bool:
    diag = getattr(error.orig, "diag", None)
    if getattr(diag, "constraint_name", None) == UNIQUE_PO_CONSTRAINT:
        return True
    text = str(error.orig)
    return UNIQUE_PO_CONSTRAINT in text or _UNIQUE_PO_SQLITE in text


def _save(db: Database, upload_id: str, parsed: ParsedPO, on_progress: Callable[[int, int], None] | None) -> SavedPO:
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
            session.flush()  # delete old lines before re-inserting the same line numbers
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
        chunk = max(1, min(500, -(-total // SAVE_CHUNKS)))
        for first in range(0, total, chunk):
            po.lines.extend(
                LineItem(
                    line_no=line.line_no,
                    sku=line.sku,
                    description=line.description,
                    quantity=line.quantity,
                    unit_cost=line.unit_cost,
                    line_total=line.line_total,
                )
                for line in parsed.lines[first:first + chunk]
            )
            session.flush()
            if on_progress is not None:
                on_progress(min(first + chunk, total), total)
        session.flush()
        return SavedPO(po_id=po.id, upload_id=upload_id, line_count=len(parsed.lines), replaced=replaced)


@dataclass(frozen=True)
class POIntegrity:
    """What the database holds for one upload's PO, for the ``po_saved_correctly`` check."""

    po_count: int
    line_count: int
    lines_sum: Decimal
    subtotal: Decimal | None
    orphan_lines: int


def po_integrity(db: Database, upload_id: str) -> POIntegrity:
    with db.session() as session:
        pos = list(session.scalars(select(PurchaseOrder).where(PurchaseOrder.upload_id == upload_id)))
        lines = [line for po in pos for line in po.lines]
        lines_sum = sum(
            (
                line.line_total
                if line.line_total is not None
                else (line.quantity or Decimal(0)) * (line.unit_cost or Decimal(0))
                for line in lines
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
            line_count=len(lines),
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
