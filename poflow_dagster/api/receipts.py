"""``POST /api/uploads/{id}/receipts`` without FastAPI: stock received against a PO (``receiving.receive``, the
Shopify client built as ``poflow receive`` builds it), made idempotent per ``Idempotency-Key``
(``store/api_requests.py``: the first answer is stored and replayed; a receipt Shopify did not confirm is only
finished by the retry, never received twice)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from poflow_dagster import receiving
from poflow_dagster.api.review import own_upload
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.store import api_requests
from poflow_dagster.store.db import Database

#: HTTP status of an answer in which Shopify refused a receipt (nothing moved for it).
REFUSED_STATUS = 422


@dataclass(frozen=True)
class ReceiveRequest:
    """What to receive: ``lines`` ``{line_no: units}``, or ``None`` for the rest of every line."""

    lines: Mapping[int, Decimal] | None
    allow_over: bool = False
    received_by: str = "api"


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict
    replayed: bool = False


def receive_stock(db: Database, shops, merchant_id: str, upload_id: str, request: ReceiveRequest, *,
                  idempotency_key: str | None = None, fingerprint: str = "") -> Answer:
    """Receive ``request`` against the merchant's upload; with ``idempotency_key``, at most once per key."""
    own_upload(db, merchant_id, upload_id)
    if idempotency_key is None:
        return _receive(db, shops, upload_id, request, resume=False)
    key = api_requests.check_key(idempotency_key)
    claim = api_requests.claim_key(db, merchant_id, key, fingerprint)
    if claim.answer is not None:
        return Answer(claim.answer.status, claim.answer.body, replayed=True)
    try:
        answer = _receive(db, shops, upload_id, request, resume=claim.resume)
    except PoflowError as error:
        if error.code == "receive_incomplete":  # receipts recorded and sent, unconfirmed: the retry finishes them
            api_requests.mark_incomplete(db, merchant_id, key)
        else:  # refused before anything was recorded: the retry may try again
            api_requests.release_key(db, merchant_id, key)
        raise
    except BaseException:
        api_requests.release_key(db, merchant_id, key)
        raise
    api_requests.store_answer(db, merchant_id, key, answer.status, answer.body)
    return answer


def _receive(db: Database, shops, upload_id: str, request: ReceiveRequest, *, resume: bool) -> Answer:
    """``receiving.receive`` (or, for a retry of an unconfirmed request, only its pending receipts), then the
    answer: the receipts, lines left out for having no Shopify variant, and every line's totals."""
    merchant = receiving.receiving_merchant(db, upload_id)  # receiving_off
    with shops.client_for(shops.target_for(merchant)) as client:
        if resume:
            result = receiving.ReceiveResult(tuple(receiving.resume_pending(
                db, client, upload_id, applied_by=request.received_by)))
        else:
            result = receiving.receive(db, client, upload_id, dict(request.lines) if request.lines is not None
                                       else None, allow_over=request.allow_over, applied_by=request.received_by)
    body = {
        "upload_id": upload_id,
        "receipts": [r.to_json() for r in result.receipts],
        "unsynced": list(result.unsynced),
        "lines": [{"line_no": t.line_no, "sku": t.sku, "ordered": None if t.ordered is None else format(t.ordered, "f"),
                   "received": format(t.received, "f")} for t in receiving.received_lines(db, upload_id)],
    }
    if result.failed:
        body["error"] = {"code": "receipt_refused", "message": " ".join(
            f"Shopify refused {len(result.failed)} receipt(s) of {upload_id}: {result.failed[0].error}".split())}
        return Answer(REFUSED_STATUS, body)
    return Answer(200, body)

