"""Routes for review and receiving: a PO's line matches, its approval (with picks), stock received against it, and
the dry run of its Shopify sync. Each route authenticates like the others (the merchant's bearer token) and sees
only the merchant's own uploads (another merchant's is a 404, ``unknown_upload``)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from poflow_dagster.api import review
from poflow_dagster.api.auth import current_merchant
from poflow_dagster.api.diff import upload_diff
from poflow_dagster.api.receipts import ReceiveRequest, receive_stock
from poflow_dagster.api.settings import ApiSettings
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.store.api_requests import request_fingerprint
from poflow_dagster.store.db import Database

Merchant = Annotated[str, Depends(current_merchant)]


class MatchPick(BaseModel):
    """PO line ``line_no`` is the existing Shopify variant ``variant_gid`` (an ``AMBIGUOUS_MATCH`` pick)."""

    line_no: int = Field(ge=1, description="the PO line's number")
    variant_gid: str = Field(description="gid://shopify/ProductVariant/N, one of the merchant's synced variants")


class ApproveBody(BaseModel):
    matches: list[MatchPick] = Field(default_factory=list, description="picks for ambiguous lines (optional); "
                                     "lines approved without a pick become new products")
    approved_by: str | None = Field(default=None, max_length=200, description="who approves (default: api)")


class ReceiptLine(BaseModel):
    line_no: int = Field(description="the PO line's number")
    quantity: str | int = Field(description='units received now: a whole number as a decimal string ("5")')


class ReceiptsBody(BaseModel):
    lines: list[ReceiptLine] | None = Field(default=None, description="some units of some lines")
    all: bool = Field(default=False, description="the rest of every line (ordered - received); instead of lines")
    allow_over: bool = Field(default=False, description="allow receiving more than was ordered")
    received_by: str | None = Field(default=None, max_length=200, description="who received it (default: api)")


_IDEMPOTENCY_KEY = Header(
    alias="Idempotency-Key",
    description="a client-chosen key (1-255 visible ASCII characters): a repeat of this request with the same key "
                "returns the first answer (header Idempotent-Replayed: true) and receives nothing again",
)

_ERRORS = {404: {"description": "unknown_upload (also for another merchant's upload)"}}


def install_review_routes(app: FastAPI, settings: ApiSettings, db: Database) -> None:
    """Add the review (``matches``, ``approve``), receiving (``receipts``) and dry-run (``diff``) routes."""

    def shops():
        return shopify_access(settings)

    @app.get("/api/uploads/{upload_id}/matches", tags=["review"], responses=_ERRORS)
    def matches(upload_id: str, merchant_id: Merchant) -> dict:
        """Every PO line's catalog match: ``status`` (matched, ambiguous, unmatched, approved; ``null`` before
        matching ran), ``method``, ``score``, the matched ``variant`` and the ``candidates`` (title, SKU, score) a
        reviewer may pick from; ``awaiting_review`` says whether the PO is held (``needs_review``) and ``review_message`` why."""
        return review.upload_matches(db, merchant_id, upload_id)

    @app.post("/api/uploads/{upload_id}/approve", tags=["review"], responses={
        **_ERRORS, 409: {"description": "not_awaiting_review"}, 422: {"description": "invalid_match, unknown_match"}})
    def approve(upload_id: str, merchant_id: Merchant, body: ApproveBody | None = None) -> dict:
        """Approve a PO held for review, like ``poflow approve ID [--match LINE=VARIANT_GID]``: each pick makes the
        line that existing variant (the supplier's SKU is learned). Every pick is checked before anything is
        recorded. The continuation run is requested: ``upload_sensor`` starts it at its next tick (``run``).
        Approving again (same picks) is harmless: ``already_approved: true`` and the same approval."""
        body = body or ApproveBody()
        picks = [review.Pick(p.line_no, p.variant_gid.strip()) for p in body.matches]
        return review.approve(db, merchant_id, upload_id, picks, (body.approved_by or "api").strip() or "api")

    @app.post("/api/uploads/{upload_id}/receipts", tags=["receiving"], responses={
        **_ERRORS, 409: {"description": "receiving_off, over_receipt, not_synced, receipt_conflict, "
                                        "idempotency_in_progress"},
        422: {"description": "receipt_refused (with the receipts), invalid_quantity, unknown_line, option_conflict, "
                             "idempotency_key_reused"},
        503: {"description": "receive_incomplete: Shopify did not confirm; retry (the same Idempotency-Key "
                             "finishes it, never twice)"}})
    def receipts(upload_id: str, request: Request, merchant_id: Merchant, body: ReceiptsBody,
                 idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY] = None) -> JSONResponse:
        """Receive stock against the PO into the merchant's Shopify location, like ``poflow receive``: some units of
        some lines (``lines``), or the rest of every line (``all: true``). Answers the receipts (``applied``,
        ``failed``, ``pending``), lines left out for having no Shopify variant (``unsynced``) and each line's
        ordered and received totals. Send an ``Idempotency-Key`` so that a retried request never receives twice."""
        wanted = ReceiveRequest(_lines(body), allow_over=body.allow_over,
                                received_by=(body.received_by or "api").strip() or "api")
        answer = receive_stock(db, shops(), merchant_id, upload_id, wanted, idempotency_key=idempotency_key,
                               fingerprint=request_fingerprint("POST", request.url.path, body.model_dump(mode="json")))
        headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
        return JSONResponse(answer.body, answer.status, headers=headers)

    @app.get("/api/uploads/{upload_id}/diff", tags=["shopify"], responses={
        **_ERRORS, 409: {"description": "sync_off, not_drafted"}})
    def diff(upload_id: str, merchant_id: Merchant) -> dict:
        """The dry run of the PO's Shopify sync, exactly ``poflow shopify diff ID --format json``: products to
        create or update (field by field), existing variants whose cost would change, lines awaiting a pick, units
        to receive. Reads only: nothing is written to Shopify."""
        return upload_diff(db, shops(), merchant_id, upload_id)


def shopify_access(settings: ApiSettings):
    """Shopify access as the pipeline's resource has it: the shop and token from the environment (or the merchant's
    own), the bundled emulator under the API's home otherwise, and ``POFLOW_SHOPIFY_MAX_ATTEMPTS`` /
    ``POFLOW_SHOPIFY_THROTTLE_TIMEOUT`` when set."""
    from poflow_dagster.resources import ShopifyResource

    return ShopifyResource.from_env(home=str(settings.home))


def _lines(body: ReceiptsBody) -> dict[int, Decimal] | None:
    """``{line_no: units}`` from the body, or ``None`` for ``all`` (exactly one of the two: ``option_conflict``)."""
    if body.all == bool(body.lines):
        raise PoflowError("option_conflict", "give either lines [{line_no, quantity}] or all: true")
    if body.all:
        return None
    numbers = [line.line_no for line in body.lines or []]
    if len(set(numbers)) != len(numbers):
        raise PoflowError("option_conflict", "give each line once")
    try:
        return {line.line_no: Decimal(str(line.quantity).strip()) for line in body.lines or []}
    except InvalidOperation:
        raise PoflowError("invalid_quantity", "quantity must be a whole number of units, e.g. \"5\"") from None
