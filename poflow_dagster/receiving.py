"""Incoming stock: the quantities received against a PO, applied to Shopify once (issue 10, part 2).

A merchant opts in (``receive_stock`` with a ``stock_location_gid``) and says when (``receive_on``): ``manual``
(the default: ``poflow receive`` as goods arrive, for POs uploaded at order time) or ``sync`` (every ordered unit
when the PO syncs, for merchants who upload delivery documents). A receipt is some units of one PO line;
a line may be received in parts (receipt 1, 2, …). Each receipt is recorded ``pending`` with its keys *before*
Shopify is called; ``inventoryAdjustQuantities`` (reason ``received``) then carries an ``@idempotent`` key
derived from the receipts it holds (upload, line, receipt number), so a retry, a re-run or a re-executed run
re-sends the same request and Shopify applies it once. ``changeFromQuantity`` (required since API 2026-04) is
the level read just before; when Shopify answers ``CHANGE_FROM_QUANTITY_STALE`` nothing was applied, so the
level is read again and the receipts go again under a new key.

Which inventory item a line fills: the catalog variant the line was matched to (``line_matches``), else the
variant poflow created for the line's SKU (``shopify_products``).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from poflow_dagster.catalog.store import line_matches_for_upload
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.client import InventoryChange, ShopifyClient, ShopifyError, ShopifyUserError
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import (
    CatalogVariantRow, LineItem, Merchant, ProductDraft, PurchaseOrder, ShopifyProduct, StockReceipt, Upload,
)
from poflow_dagster.store.types import utcnow

#: Changes per ``inventoryAdjustQuantities`` call.
MAX_CHANGES = 250
#: Times a stale ``changeFromQuantity`` is read again and re-sent before the receipts fail.
STALE_RETRIES = 3
REASON = "received"
#: Who applied the receipts the pipeline makes on sync.
SYNC_ACTOR = "poflow sync"
_COUNTED = ("pending", "applied")  # a failed receipt moved nothing

VARIANT_ITEMS_QUERY = """
query PoflowReceivingItems($ids: [ID!]!) {
  nodes(ids: $ids) { ... on ProductVariant { id inventoryItem { id } } }
}
"""


@dataclass(frozen=True)
class PlannedReceipt:
    """Units of one PO line to receive (not recorded yet); ``inventory_item_gid`` is ``None`` until read."""

    upload_id: str
    line_no: int
    receipt_no: int
    quantity: Decimal
    variant_gid: str
    inventory_item_gid: str | None
    location_gid: str

    @property
    def idempotency_key(self) -> str:
        return receipt_key(self.upload_id, self.line_no, self.receipt_no)


@dataclass(frozen=True)
class ReceiptPlan:
    """What :func:`plan_receipt` decided: the receipts, and the lines left out for having no Shopify variant."""

    receipts: tuple[PlannedReceipt, ...]
    unsynced: tuple[int, ...] = ()


@dataclass(frozen=True)
class ReceiptOutcome:
    """One receipt after Shopify answered: ``applied``, ``failed`` (refused, nothing moved) or ``pending``."""

    line_no: int
    receipt_no: int
    quantity: Decimal
    status: str
    error: str | None = None
    resumed: bool = False

    def to_json(self) -> dict[str, object]:
        return {"line_no": self.line_no, "receipt_no": self.receipt_no, "quantity": str(self.quantity),
                "status": self.status, "error": self.error, "resumed": self.resumed}


@dataclass(frozen=True)
class ReceiveResult:
    """What a receive did: receipts finished from an earlier attempt first, then the new ones."""

    receipts: tuple[ReceiptOutcome, ...]
    unsynced: tuple[int, ...] = ()

    @property
    def failed(self) -> tuple[ReceiptOutcome, ...]:
        return tuple(r for r in self.receipts if r.status == "failed")


def receipt_key(upload_id: str, line_no: int, receipt_no: int) -> str:
    """The stable identity of a receipt: the same upload, line and receipt number give the same key."""
    return "rcv-" + _digest(f"{upload_id}\x1f{line_no}\x1f{receipt_no}")


def adjustment_key(receipt_keys: Iterable[str]) -> str:
    """The ``@idempotent`` key of one ``inventoryAdjustQuantities`` call carrying these receipts."""
    return "adj-" + _digest("\x1f".join(sorted(receipt_keys)))


def _next_key(key: str) -> str:
    """A new key for receipts Shopify refused under ``key`` (nothing applied): derived, so still stable."""
    return "adj-" + _digest(f"{key}\x1fagain")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:56]


# --- planning ----------------------------------------------------------------------------------------------------


def plan_receipt(
    db: Database, upload_id: str, lines: Mapping[int, Decimal] | None = None, *,
    allow_over: bool = False, skip_unsynced: bool = False,
) -> ReceiptPlan:
    """The receipts for ``lines`` (``{line_no: quantity}``), or ``None``: the rest of every line (ordered minus
    received, pending receipts counted as received).

    Refuses, with these codes: ``unknown_upload``, ``receiving_off`` (the merchant does not receive stock),
    ``no_purchase_order``, ``unknown_line``, ``invalid_quantity`` (not a whole number above zero: Shopify
    counts units), ``over_receipt`` (more than ordered, unless ``allow_over``), ``not_synced`` (a line with no
    Shopify variant yet, unless ``skip_unsynced`` leaves it out)."""
    with db.session() as session:
        merchant = _merchant_receiving(session, upload_id)
        po_lines = _po_lines(session, upload_id)
        received, next_no = _received_so_far(session, upload_id)
    wanted = _wanted(po_lines, received, lines, allow_over)
    variants = _variants_for(db, upload_id, merchant.id, {n: po_lines[n] for n in wanted})
    unsynced = tuple(sorted(n for n in wanted if n not in variants))
    if unsynced and not skip_unsynced:
        raise PoflowError("not_synced", f"line{'s' if len(unsynced) > 1 else ''} {_numbers(unsynced)} of upload "
                                        f"{upload_id} ha{'ve' if len(unsynced) > 1 else 's'} no Shopify variant yet "
                                        "(sync the PO first, or match the line to a catalog variant)")
    receipts = tuple(
        PlannedReceipt(upload_id, n, next_no.get(n, 1), quantity, *variants[n], merchant.stock_location_gid or "")
        for n, quantity in sorted(wanted.items()) if n in variants
    )
    return ReceiptPlan(receipts, unsynced)


def receiving_merchant(db: Database, upload_id: str) -> Merchant:
    """The upload's merchant, if it receives stock (``unknown_upload``, ``receiving_off`` otherwise)."""
    with db.session() as session:
        return _merchant_receiving(session, upload_id)


def _merchant_receiving(session, upload_id: str) -> Merchant:
    upload = session.scalar(select(Upload).where(Upload.id == upload_id))
    if upload is None:
        raise PoflowError("unknown_upload", f"no upload {upload_id!r}")
    merchant = session.get(Merchant, upload.merchant_id)
    if not merchant.receive_stock or not merchant.stock_location_gid:
        raise PoflowError("receiving_off", f"merchant {merchant.id} does not receive stock: turn it on with "
                                           f"`poflow merchant set {merchant.id} --receive-stock --location GID`")
    return merchant


def _po_lines(session, upload_id: str) -> dict[int, LineItem]:
    lines = session.scalars(
        select(LineItem).join(PurchaseOrder, LineItem.po_id == PurchaseOrder.id)
        .where(PurchaseOrder.upload_id == upload_id).order_by(LineItem.line_no)
    ).all()
    if not lines:
        raise PoflowError("no_purchase_order", f"upload {upload_id} has no saved PO lines to receive")
    return {line.line_no: line for line in lines}


def _received_so_far(session, upload_id: str) -> tuple[dict[int, Decimal], dict[int, int]]:
    """Units received (pending or applied) per line, and each line's next receipt number."""
    rows = session.execute(
        select(StockReceipt.line_no, StockReceipt.status, StockReceipt.quantity, StockReceipt.receipt_no)
        .where(StockReceipt.upload_id == upload_id)
    ).all()
    received: dict[int, Decimal] = defaultdict(Decimal)
    next_no: dict[int, int] = {}
    for line_no, status, quantity, receipt_no in rows:
        if status in _COUNTED:
            received[line_no] += quantity
        next_no[line_no] = max(next_no.get(line_no, 1), receipt_no + 1)
    return dict(received), next_no


def _wanted(
    po_lines: Mapping[int, LineItem], received: Mapping[int, Decimal], lines: Mapping[int, Decimal] | None,
    allow_over: bool,
) -> dict[int, Decimal]:
    """``{line_no: units}`` to receive now, checked against what was ordered and received."""
    if lines is None:
        rest = {n: (line.quantity or Decimal(0)) - received.get(n, Decimal(0)) for n, line in po_lines.items()}
        wanted = {n: units for n, units in rest.items() if units > 0}
    else:
        unknown = sorted(set(lines) - set(po_lines))
        if unknown:
            raise PoflowError("unknown_line", f"the PO has no line {_numbers(unknown)} (lines: {_numbers(po_lines)})")
        wanted = dict(lines)
    bad = sorted(n for n, units in wanted.items() if units <= 0 or units != units.to_integral_value())
    if bad:
        raise PoflowError("invalid_quantity", f"line {_numbers(bad)}: receive a whole number of units above zero "
                                              f"(got {', '.join(str(wanted[n]) for n in bad)})")
    over = [n for n, units in sorted(wanted.items())
            if received.get(n, Decimal(0)) + units > (po_lines[n].quantity or Decimal(0))]
    if over and not allow_over:
        detail = "; ".join(f"line {n}: ordered {po_lines[n].quantity or 0}, received {received.get(n, 0)}, "
                           f"now {wanted[n]}" for n in over)
        raise PoflowError("over_receipt", f"more than ordered ({detail}); pass --allow-over if that is right")
    return wanted


def _variants_for(
    db: Database, upload_id: str, merchant_id: str, lines: Mapping[int, LineItem],
) -> dict[int, tuple[str, str | None]]:
    """``{line_no: (variant GID, inventory item GID or None)}``: the catalog variant a line was matched to, else
    the variant poflow made for its SKU. Lines with neither are left out."""
    matched = {m.match.line_no: m.match.variant_gid for m in line_matches_for_upload(db, upload_id)
               if m.match.line_no in lines and m.match.variant_gid and m.match.status in ("matched", "approved")}
    skus = {n: line.sku for n, line in lines.items() if n not in matched and line.sku}
    with db.session() as session:
        items = dict(session.execute(
            select(CatalogVariantRow.variant_gid, CatalogVariantRow.inventory_item_gid).where(
                CatalogVariantRow.merchant_id == merchant_id, CatalogVariantRow.variant_gid.in_(matched.values()))
        ).all()) if matched else {}
        made = dict(session.execute(
            select(ProductDraft.sku, ShopifyProduct.variant_gid).join(ShopifyProduct, ShopifyProduct.draft_id == ProductDraft.id)
            .where(ProductDraft.merchant_id == merchant_id, ProductDraft.sku.in_(set(skus.values())))
        ).all()) if skus else {}
    found = {n: (gid, items.get(gid) or None) for n, gid in matched.items()}
    found.update({n: (made[sku], None) for n, sku in skus.items() if sku in made})
    return found


def _numbers(numbers: Iterable[int]) -> str:
    return ", ".join(str(n) for n in numbers)


# --- applying ----------------------------------------------------------------------------------------------------


def apply_receipts(
    db: Database, client: ShopifyClient, receipts: Iterable[PlannedReceipt], *, applied_by: str | None = None,
) -> list[ReceiptOutcome]:
    """Record the receipts ``pending`` (with their keys and expected levels), then apply them in calls of up to
    :data:`MAX_CHANGES`. A receipt whose item is not stocked at the location is recorded ``failed``.

    Raises ``receipt_conflict`` when another receive of the same lines recorded first (nothing is sent), and
    ``receive_incomplete`` when Shopify could not be reached: those receipts stay pending, and the next receive
    of the upload finishes them with the same keys."""
    planned = _with_items(client, list(receipts))
    if not planned:
        return []
    rows = _pending_rows(client, planned)
    try:
        with db.session() as session:
            session.add_all(rows)
    except IntegrityError:
        raise PoflowError("receipt_conflict", f"another receive of upload {planned[0].upload_id} recorded these "
                                              "receipts first; nothing was sent: run it again") from None
    outcomes = [_outcome(row) for row in rows if row.status == "failed"]
    for key in dict.fromkeys(row.adjustment_key for row in rows if row.status == "pending"):
        outcomes.extend(_send(db, client, key, applied_by))
    return sorted(outcomes, key=lambda o: (o.line_no, o.receipt_no))


def _with_items(client: ShopifyClient, receipts: list[PlannedReceipt]) -> list[PlannedReceipt]:
    """The receipts with their inventory items, read from Shopify (by variant) for those not known yet."""
    unknown = list(dict.fromkeys(r.variant_gid for r in receipts if not r.inventory_item_gid))
    items: dict[str, str] = {}
    for start in range(0, len(unknown), MAX_CHANGES):
        chunk = unknown[start:start + MAX_CHANGES]
        data = client.execute(VARIANT_ITEMS_QUERY, {"ids": chunk}, expected_cost=2.0 * len(chunk))
        items.update({str(node["id"]): str(node["inventoryItem"]["id"]) for node in data.get("nodes") or []
                      if node and node.get("inventoryItem")})
    gone = sorted({r.line_no for r in receipts if not r.inventory_item_gid and r.variant_gid not in items})
    if gone:
        raise PoflowError("not_synced", f"line {_numbers(gone)}: its Shopify variant no longer exists")
    return [r if r.inventory_item_gid else replace(r, inventory_item_gid=items[r.variant_gid]) for r in receipts]


def _pending_rows(client: ShopifyClient, receipts: list[PlannedReceipt]) -> list[StockReceipt]:
    """Rows for the receipts: ``pending`` in calls of up to :data:`MAX_CHANGES`, each with its call's key and the
    level expected before it; ``failed`` where the item is not stocked at the location."""
    levels = _levels(client, [(r.inventory_item_gid, r.location_gid) for r in receipts])
    rows = [StockReceipt(
        upload_id=r.upload_id, line_no=r.line_no, receipt_no=r.receipt_no, quantity=r.quantity,
        variant_gid=r.variant_gid, inventory_item_gid=r.inventory_item_gid, location_gid=r.location_gid,
        idempotency_key=r.idempotency_key, status="pending",
    ) for r in receipts]
    for row in rows:
        if levels.get((row.inventory_item_gid, row.location_gid)) is None:
            row.status, row.error = "failed", f"item_not_stocked: {row.inventory_item_gid} is not stocked at " \
                                              f"{row.location_gid} (stock it there in Shopify, then receive again)"
    pending = [row for row in rows if row.status == "pending"]
    for start in range(0, len(pending), MAX_CHANGES):
        batch = pending[start:start + MAX_CHANGES]
        _expect(batch, levels, adjustment_key(row.idempotency_key for row in batch))
    return rows


def _levels(client: ShopifyClient, places: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int | None]:
    """``available`` of each (inventory item, location); ``None`` where the item is not stocked there."""
    by_location: dict[str, list[str]] = defaultdict(list)
    for item, location in dict.fromkeys(places):
        by_location[location].append(item)
    found: dict[tuple[str, str], int | None] = {}
    for location, items in by_location.items():
        for item, level in client.inventory_levels(items, location).items():
            found[(item, location)] = None if level is None else level.available
    return found


def _expect(batch: list[StockReceipt], levels: Mapping[tuple[str, str], int | None], key: str) -> None:
    """Give a call's rows its key and each change the level Shopify will see before it (changes of one item in
    one call apply in order)."""
    running = dict(levels)
    for row in batch:
        place = (row.inventory_item_gid, row.location_gid)
        row.adjustment_key, row.change_from_quantity = key, running[place]
        running[place] = (running[place] or 0) + int(row.quantity)


def _send(db: Database, client: ShopifyClient, key: str, applied_by: str | None, *,
          resumed: bool = False) -> list[ReceiptOutcome]:
    """Send the pending rows recorded under ``key`` as one adjustment and record how it went."""
    for attempt in range(STALE_RETRIES + 1):
        rows = _pending_with_key(db, key)
        if not rows:
            return []
        changes = [InventoryChange(r.inventory_item_gid, r.location_gid, int(r.quantity), r.change_from_quantity)
                   for r in rows]
        try:
            client.adjust_inventory(changes, reason=REASON, idempotency_key=key,
                                    reference_uri=f"poflow://upload/{rows[0].upload_id}")
        except ShopifyUserError as refused:  # Shopify checked the input and applied nothing
            if _is_stale(refused) and attempt < STALE_RETRIES:
                key = _rekey(db, client, rows, key)
                continue
            return _finish(db, key, "failed", f"{refused.code}: {refused.message}", applied_by, resumed)
        except ShopifyError as error:  # outcome unknown: keep them pending, the next try re-sends this key
            _finish(db, key, "pending", f"{error.code}: {error.message}", applied_by, resumed)
            raise PoflowError("receive_incomplete", f"Shopify did not confirm receipts of upload {rows[0].upload_id} "
                                                    f"({error.code}: {error.message}); they stay pending: receive "
                                                    "the upload again to finish them (applied once)") from None
        return _finish(db, key, "applied", None, applied_by, resumed)
    raise AssertionError("unreachable")


def _is_stale(refused: ShopifyUserError) -> bool:
    return any(error.get("code") == "CHANGE_FROM_QUANTITY_STALE" for error in refused.user_errors)


def _pending_with_key(db: Database, key: str) -> list[StockReceipt]:
    with db.session() as session:
        return list(session.scalars(select(StockReceipt).where(
            StockReceipt.adjustment_key == key, StockReceipt.status == "pending").order_by(StockReceipt.id)))


def _rekey(db: Database, client: ShopifyClient, rows: list[StockReceipt], key: str) -> str:
    """After a stale refusal (nothing applied): the levels read again and a new key, recorded before re-sending.
    An item no longer stocked there keeps ``None`` and Shopify refuses the call (the receipts then fail)."""
    levels = _levels(client, [(r.inventory_item_gid, r.location_gid) for r in rows])
    new_key = _next_key(key)
    with db.session() as session:
        fresh = list(session.scalars(select(StockReceipt).where(StockReceipt.id.in_([r.id for r in rows]))
                                     .order_by(StockReceipt.id)))
        _expect(fresh, levels, new_key)
    return new_key


def _finish(db: Database, key: str, status: str, error: str | None, applied_by: str | None,
            resumed: bool) -> list[ReceiptOutcome]:
    """Mark the pending rows under ``key`` ``status`` (``pending`` only notes the error) and return them."""
    with db.session() as session:
        rows = list(session.scalars(select(StockReceipt).where(
            StockReceipt.adjustment_key == key, StockReceipt.status == "pending").order_by(StockReceipt.id)))
        for row in rows:
            row.status, row.error = status, error
            if status == "applied":
                row.applied_at, row.applied_by = utcnow(), applied_by
    return [_outcome(row, resumed) for row in rows]


def _outcome(row: StockReceipt, resumed: bool = False) -> ReceiptOutcome:
    return ReceiptOutcome(row.line_no, row.receipt_no, row.quantity, row.status, row.error, resumed)


def resume_pending(db: Database, client: ShopifyClient, upload_id: str, *,
                   applied_by: str | None = None) -> list[ReceiptOutcome]:
    """Send again, under their recorded keys, the upload's receipts an earlier attempt left pending (Shopify
    applies each once, whether or not the earlier call got through)."""
    with db.session() as session:
        keys = session.scalars(
            select(StockReceipt.adjustment_key).where(StockReceipt.upload_id == upload_id,
                                                      StockReceipt.status == "pending")
            .group_by(StockReceipt.adjustment_key).order_by(func.min(StockReceipt.id))
        ).all()
    outcomes: list[ReceiptOutcome] = []
    for key in keys:
        outcomes.extend(_send(db, client, key, applied_by, resumed=True))
    return outcomes


# --- entry points ------------------------------------------------------------------------------------------------


def receive(
    db: Database, client: ShopifyClient, upload_id: str, lines: Mapping[int, Decimal] | None = None, *,
    allow_over: bool = False, applied_by: str | None = None,
) -> ReceiveResult:
    """``poflow receive``: finish the upload's pending receipts, then receive ``lines``, or (``None``) the rest of
    every line that has a Shopify variant (the others are listed in ``unsynced``)."""
    plan = plan_receipt(db, upload_id, lines, allow_over=allow_over, skip_unsynced=lines is None)
    resumed = resume_pending(db, client, upload_id, applied_by=applied_by)
    applied = apply_receipts(db, client, plan.receipts, applied_by=applied_by)
    return ReceiveResult(tuple(resumed + applied), plan.unsynced)


def receive_on_sync(db: Database, client: ShopifyClient, upload_id: str) -> ReceiveResult | None:
    """After the PO's products are synced: receive every ordered unit once, for merchants who receive stock on
    sync (``None`` for the others: a ``manual`` merchant receives with ``poflow receive`` as goods arrive). Lines
    with no Shopify variant are left out (``unsynced``).

    Once means once: when the upload has receipts already (this ran before, or the merchant received by hand),
    only receipts left pending are finished; a re-run or re-executed run moves no stock again."""
    with db.session() as session:
        merchant = session.scalar(select(Merchant).join(Upload, Upload.merchant_id == Merchant.id)
                                  .where(Upload.id == upload_id))
        if not receives_on_sync(merchant):
            return None
        received_before = session.scalar(select(func.count()).where(StockReceipt.upload_id == upload_id))
    if received_before:
        return ReceiveResult(tuple(resume_pending(db, client, upload_id, applied_by=SYNC_ACTOR)))
    plan = plan_receipt(db, upload_id, None, skip_unsynced=True)
    return ReceiveResult(tuple(apply_receipts(db, client, plan.receipts, applied_by=SYNC_ACTOR)), plan.unsynced)


def receives_on_sync(merchant: Merchant | None) -> bool:
    """Whether the merchant's stock is received when a PO syncs (receiving on, mode ``sync``)."""
    return merchant is not None and bool(merchant.receive_stock) and merchant.receive_on == "sync"


@dataclass(frozen=True)
class LineReceipt:
    """How much of one PO line was ordered and received (applied receipts) so far."""

    line_no: int
    sku: str | None
    ordered: Decimal | None
    received: Decimal


def received_lines(db: Database, upload_id: str) -> list[LineReceipt]:
    """Ordered and received units of every line of the upload's PO."""
    with db.session() as session:
        lines = _po_lines(session, upload_id)
        applied = _applied_totals(session, upload_id)
    return [LineReceipt(n, line.sku, line.quantity, applied.get(n, Decimal(0))) for n, line in lines.items()]


def _applied_totals(session, upload_id: str) -> dict[int, Decimal]:
    totals: dict[int, Decimal] = defaultdict(Decimal)
    for line_no, quantity in session.execute(select(StockReceipt.line_no, StockReceipt.quantity).where(
            StockReceipt.upload_id == upload_id, StockReceipt.status == "applied")):
        totals[line_no] += quantity
    return totals
