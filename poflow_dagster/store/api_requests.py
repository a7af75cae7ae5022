"""Idempotent API requests: an ``Idempotency-Key`` and the first answer given for it.

A client that retries a POST (a timeout, a dropped connection) sends the same ``Idempotency-Key`` header; the
first request claims the key (``in_progress``), does its work and stores its answer (``done``); a repeat gets
that stored answer instead of doing the work again. Keys are per merchant. The same key with another request
(another path or body) is refused (``idempotency_key_reused``); a repeat while the first is still working is
refused (``idempotency_in_progress``: retry shortly). A request refused before it did anything releases its key, so
the retry does the work. A request that started work it could not confirm (Shopify unreachable mid-receipt) leaves
its key ``incomplete``: the retry only finishes that work (``Claim.resume``), it never starts it a second time.
A claim left ``in_progress`` by a process that died is taken over after :data:`STALE_AFTER` (as a resume).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Integer, String, UniqueConstraint, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import Base
from poflow_dagster.store.types import UTCDateTime, utcnow

#: A claim older than this whose request never finished (its process died) may be taken over.
STALE_AFTER = dt.timedelta(minutes=15)
#: Longest ``Idempotency-Key`` accepted (Stripe's limit).
MAX_KEY_CHARS = 255


class ApiIdempotencyKey(Base):
    """One ``Idempotency-Key`` of one merchant: the request it belongs to (``request_sha256`` of method, path and
    body) and, once ``done``, the answer to replay (``response_status``, ``response_body``)."""

    __tablename__ = "api_idempotency_keys"
    __table_args__ = (UniqueConstraint("merchant_id", "idempotency_key", name="uq_api_idempotency_keys_merchant_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(MAX_KEY_CHARS))
    request_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))  # in_progress | incomplete | done
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class StoredAnswer:
    """The answer first given for a key: HTTP status and JSON body."""

    status: int
    body: Any


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """sha256 of the request as the key promises it: method, path and the JSON body (keys sorted)."""
    text = json.dumps([method.upper(), path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_key(key: str) -> str:
    """The key as sent, if usable: 1-255 visible ASCII characters (``invalid_idempotency_key`` otherwise)."""
    if not key or len(key) > MAX_KEY_CHARS or not all(33 <= ord(c) <= 126 for c in key):
        raise PoflowError("invalid_idempotency_key", f"Idempotency-Key must be 1-{MAX_KEY_CHARS} visible ASCII "
                                                     "characters")
    return key


@dataclass(frozen=True)
class Claim:
    """What a request may do with its key: replay ``answer``; or do the work (``resume``: only finish what an
    earlier request with this key started). A claimant must end with :func:`store_answer`, :func:`release_key`
    or :func:`mark_incomplete`."""

    answer: StoredAnswer | None = None
    resume: bool = False


def claim_key(db: Database, merchant_id: str, key: str, fingerprint: str) -> Claim:
    """Claim ``key`` for this request (see :class:`Claim`); refuses a reused or busy key."""
    now = utcnow()
    try:
        with db.session() as session:
            session.add(ApiIdempotencyKey(merchant_id=merchant_id, idempotency_key=key, request_sha256=fingerprint,
                                          status="in_progress", created_at=now))
        return Claim()
    except IntegrityError:
        pass
    with db.session() as session:
        row = session.scalar(select(ApiIdempotencyKey).where(ApiIdempotencyKey.merchant_id == merchant_id,
                                                             ApiIdempotencyKey.idempotency_key == key))
        if row is None:  # released between our insert and this read: the retry of the caller claims it
            raise PoflowError("idempotency_in_progress", "a request with this Idempotency-Key just ended; retry")
        if row.request_sha256 != fingerprint:
            raise PoflowError("idempotency_key_reused", "this Idempotency-Key was used for another request; use a "
                                                        "new key for a new request")
        if row.status == "done":
            return Claim(answer=StoredAnswer(int(row.response_status or 200), row.response_body))
        if row.status == "in_progress" and now - row.created_at < STALE_AFTER:
            raise PoflowError("idempotency_in_progress", "a request with this Idempotency-Key is still being "
                                                         "processed; retry in a moment")
        taken = session.execute(update(ApiIdempotencyKey).where(
            ApiIdempotencyKey.id == row.id, ApiIdempotencyKey.status == row.status,
            ApiIdempotencyKey.created_at == row.created_at).values(status="in_progress", created_at=now))
        if taken.rowcount != 1:
            raise PoflowError("idempotency_in_progress", "another retry took over this Idempotency-Key; retry")
    return Claim(resume=True)


def store_answer(db: Database, merchant_id: str, key: str, status: int, body: Any) -> None:
    """The claimed request's answer: replayed to every later request with this key."""
    with db.session() as session:
        session.execute(update(ApiIdempotencyKey).where(
            ApiIdempotencyKey.merchant_id == merchant_id, ApiIdempotencyKey.idempotency_key == key,
        ).values(status="done", response_status=status, response_body=body, completed_at=utcnow()))


def mark_incomplete(db: Database, merchant_id: str, key: str) -> None:
    """The claimed request started work it could not confirm: the next request with the key finishes it."""
    with db.session() as session:
        session.execute(update(ApiIdempotencyKey).where(
            ApiIdempotencyKey.merchant_id == merchant_id, ApiIdempotencyKey.idempotency_key == key,
        ).values(status="incomplete"))


def release_key(db: Database, merchant_id: str, key: str) -> None:
    """Forget a claim whose request gave no answer to replay: the next request with the key does the work."""
    with db.session() as session:
        session.execute(delete(ApiIdempotencyKey).where(
            ApiIdempotencyKey.merchant_id == merchant_id, ApiIdempotencyKey.idempotency_key == key,
            ApiIdempotencyKey.status == "in_progress"))
