"""What the review and receiving routes do, without FastAPI: a PO's line matches, its approval (with picks), stock
received against it, and its dry-run diff. Always within one merchant: another merchant's upload is
``unknown_upload``, exactly like one that does not exist."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from poflow_dagster.catalog.store import StoredLineMatch, approve_match, line_matches_for_upload
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.domain.stages import UploadStatus
from poflow_dagster.store.db import Database
from poflow_dagster.store.review import Approval, approve_upload
from poflow_dagster.store.schema import CatalogVariantRow, LineItem, PurchaseOrder, Upload
from poflow_dagster.store.uploads import get_upload

#: A pick names a Shopify variant by its GID.
VARIANT_GID = re.compile(r"^gid://shopify/ProductVariant/\d+$")


def own_upload(db: Database, merchant_id: str, upload_id: str) -> Upload:
    """The merchant's upload (detached); another merchant's is ``unknown_upload`` like a missing one."""
    with db.session() as session:
        try:
            upload = get_upload(session, upload_id)
        except PoflowError:
            upload = None
        if upload is None or upload.merchant_id != merchant_id:
            raise PoflowError("unknown_upload", f"no upload with id {upload_id!r}")
        return upload


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


# --- matches -----------------------------------------------------------------------------------------------------


def upload_matches(db: Database, merchant_id: str, upload_id: str) -> dict:
    """``GET /api/uploads/{id}/matches``: every saved PO line with its catalog match (``null`` before matching ran),
    the matched variant, the candidates a reviewer may pick from, and whether the PO waits for review."""
    upload = own_upload(db, merchant_id, upload_id)
    stored = {m.match.line_no: m for m in line_matches_for_upload(db, upload_id)}
    with db.session() as session:
        lines = session.scalars(select(LineItem).join(PurchaseOrder, LineItem.po_id == PurchaseOrder.id)
                                .where(PurchaseOrder.upload_id == upload_id).order_by(LineItem.line_no)).all()
        gids = {m.match.variant_gid for m in stored.values() if m.match.variant_gid}
        variants = {row.variant_gid: row for row in session.scalars(select(CatalogVariantRow).where(
            CatalogVariantRow.merchant_id == merchant_id, CatalogVariantRow.variant_gid.in_(gids)))} if gids else {}
    awaiting = upload.status == UploadStatus.NEEDS_REVIEW
    return {
        "upload_id": upload_id, "status": upload.status, "awaiting_review": awaiting,
        "review_message": upload.error_message if awaiting else None,  # the reasons, as `poflow status` shows them
        "approved_at": _iso(upload.approved_at), "approved_by": upload.approved_by,
        "lines": [_line_json(line, stored.get(line.line_no), variants) for line in lines],
    }


def _line_json(line: LineItem, stored: StoredLineMatch | None, variants: Mapping[str, CatalogVariantRow]) -> dict:
    match = stored.match if stored is not None else None
    variant = variants.get(match.variant_gid) if match is not None and match.variant_gid else None
    return {
        "line_no": line.line_no, "sku": line.sku, "description": line.description,
        "quantity": _text(line.quantity), "unit_cost": _text(line.unit_cost),
        "status": match.status if match else None, "method": match.method if match else None,
        "score": match.score if match else None,
        "variant": None if match is None or not match.variant_gid else _variant_json(match.variant_gid, variant),
        "candidates": [c.to_json() for c in match.candidates] if match else [],
        "decided_by": stored.decided_by if stored else None, "decided_at": _iso(stored.decided_at if stored else None),
    }


def _variant_json(variant_gid: str, row: CatalogVariantRow | None) -> dict:
    if row is None:  # matched, but no longer in the synced catalog copy
        return {"variant_gid": variant_gid, "product_gid": None, "sku": None, "title": None, "vendor": None,
                "unit_cost": None, "price": None}
    title = row.product_title if not row.variant_title or row.variant_title == "Default Title" \
        else f"{row.product_title} {row.variant_title}"
    return {"variant_gid": variant_gid, "product_gid": row.product_gid, "sku": row.sku, "title": title,
            "vendor": row.vendor, "unit_cost": _text(row.unit_cost), "price": _text(row.price)}


# --- approval ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    """A reviewer's choice: PO line ``line_no`` is the existing variant ``variant_gid``."""

    line_no: int
    variant_gid: str


def approve(db: Database, merchant_id: str, upload_id: str, picks: Sequence[Pick], approved_by: str) -> dict:
    """``POST /api/uploads/{id}/approve``: the rules of ``poflow approve [--match LINE=VARIANT]``. Every pick is
    checked before anything is recorded (``invalid_match``, ``unknown_match``); a PO not waiting for review is
    ``not_awaiting_review`` — unless it is this approval again (approved, and every pick already recorded), which
    answers as before (``already_approved``). The continuation run is requested by the approval itself:
    ``upload_sensor`` starts it at its next tick (run key per approval), as for the CLI."""
    upload = own_upload(db, merchant_id, upload_id)
    _check_format(picks)
    if upload.status != UploadStatus.NEEDS_REVIEW:
        if upload.approved_at is not None and _recorded(db, upload_id, picks):
            return _approval_json(db, upload_id, already=True)
        approve_upload(db, upload_id, approved_by)  # raises the clear not_awaiting_review error
    _check_known(db, merchant_id, upload_id, picks)
    for pick in picks:
        try:
            approve_match(db, upload_id, pick.line_no, pick.variant_gid, approved_by)
        except LookupError as error:  # removed between the check and now
            raise PoflowError("unknown_match", str(error)) from None
    try:
        approve_upload(db, upload_id, approved_by)
    except PoflowError as error:  # a concurrent request approved it first: the same outcome
        if error.code != "not_awaiting_review" or own_upload(db, merchant_id, upload_id).approved_at is None:
            raise
        return _approval_json(db, upload_id, already=True)
    return _approval_json(db, upload_id, already=False)


def _check_format(picks: Sequence[Pick]) -> None:
    bad = [p for p in picks if not VARIANT_GID.match(p.variant_gid)]
    if bad:
        raise PoflowError("invalid_match", f"line {bad[0].line_no}: variant_gid must be "
                                           f"gid://shopify/ProductVariant/N, not {bad[0].variant_gid!r}")
    line_nos = [p.line_no for p in picks]
    if len(set(line_nos)) != len(line_nos):
        raise PoflowError("invalid_match", "pick each line once")


def _check_known(db: Database, merchant_id: str, upload_id: str, picks: Sequence[Pick]) -> None:
    """Every picked line is on the saved PO and every variant in the merchant's synced catalog."""
    if not picks:
        return
    with db.session() as session:
        lines = set(session.scalars(select(LineItem.line_no).join(PurchaseOrder, LineItem.po_id == PurchaseOrder.id)
                                    .where(PurchaseOrder.upload_id == upload_id)))
        known = set(session.scalars(select(CatalogVariantRow.variant_gid).where(
            CatalogVariantRow.merchant_id == merchant_id,
            CatalogVariantRow.variant_gid.in_({p.variant_gid for p in picks}))))
    for pick in picks:
        if pick.line_no not in lines:
            raise PoflowError("unknown_match", f"upload {upload_id} has no saved PO line {pick.line_no}")
        if pick.variant_gid not in known:
            raise PoflowError("unknown_match", f"variant {pick.variant_gid} is not in merchant {merchant_id}'s "
                                               "synced catalog")


def _recorded(db: Database, upload_id: str, picks: Sequence[Pick]) -> bool:
    """Every pick is already an approved match of the upload (a repeat of the same approval)."""
    approved = {m.match.line_no: m.match.variant_gid for m in line_matches_for_upload(db, upload_id)
                if m.match.status == "approved"}
    return all(approved.get(p.line_no) == p.variant_gid for p in picks)


def _approval_json(db: Database, upload_id: str, *, already: bool) -> dict:
    with db.session() as session:
        upload = get_upload(session, upload_id)
        status, approved_at, approved_by = upload.status, upload.approved_at, upload.approved_by
    approval = Approval(upload_id, approved_at)
    waiting = status == UploadStatus.APPROVED
    return {
        "upload_id": upload_id, "status": status, "approved_at": _iso(approved_at), "approved_by": approved_by,
        "already_approved": already,
        "matches": [{"line_no": m.match.line_no, "variant_gid": m.match.variant_gid, "method": m.match.method,
                     "decided_by": m.decided_by} for m in line_matches_for_upload(db, upload_id)
                    if m.match.status == "approved"],
        "run": {"outcome": "left_to_sensor" if waiting else "started", "run_key": approval.run_key,
                "detail": "upload_sensor starts the continuation run at its next tick" if waiting
                else "the continuation run has started"},
    }
