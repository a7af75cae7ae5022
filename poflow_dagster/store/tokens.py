"""Per-merchant API tokens for ``poflow serve``.

A token is ``pf_`` + 43 URL-safe characters (32 random bytes). Only its sha256 is stored, so a leaked
database leaks no usable token; the plain token is shown once, when issued. A request is authenticated
by hashing what it carries and looking that hash up (a lookup by a hash of a secret reveals nothing
about the secret through timing); a revoked token is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.store.db import Database
from poflow_dagster.store.merchants import ensure_merchant, validate_merchant_id
from poflow_dagster.store.schema import MerchantToken
from poflow_dagster.store.types import utcnow

TOKEN_PREFIX = "pf_"
_MAX_TOKEN_LENGTH = 200


def hash_token(token: str) -> str:
    """The stored form of a token: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token: ``token`` is the only time the plain value exists."""

    id: int
    merchant_id: str
    token: str
    label: str | None


@dataclass(frozen=True)
class TokenInfo:
    """A stored token as listed (never its value)."""

    id: int
    merchant_id: str
    label: str | None
    created_at: str
    revoked_at: str | None


def issue_token(db: Database, merchant_id: str, *, label: str | None = None) -> IssuedToken:
    """A new token for ``merchant_id`` (the merchant is created with defaults if new, as an upload would)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.session() as session:
        ensure_merchant(session, merchant_id)
        row = MerchantToken(merchant_id=merchant_id, token_sha256=hash_token(token), label=(label or None))
        session.add(row)
        session.flush()
        return IssuedToken(id=row.id, merchant_id=merchant_id, token=token, label=row.label)


def verify_token(db: Database, token: str | None) -> str | None:
    """The merchant id a live token belongs to, or ``None`` (missing, malformed, unknown or revoked)."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
        return None
    digest = hash_token(token)
    with db.session() as session:
        row = session.scalar(select(MerchantToken).where(MerchantToken.token_sha256 == digest))
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_sha256, digest):
            return None
        return row.merchant_id


def list_tokens(db: Database, merchant_id: str) -> list[TokenInfo]:
    """The merchant's tokens, oldest first (id, label, when issued and revoked; never the value)."""
    with db.session() as session:
        rows = session.scalars(
            select(MerchantToken).where(MerchantToken.merchant_id == merchant_id).order_by(MerchantToken.id)
        )
        return [
            TokenInfo(r.id, r.merchant_id, r.label, r.created_at.isoformat(),
                      r.revoked_at.isoformat() if r.revoked_at else None)
            for r in rows
        ]


def revoke_tokens(
    db: Database,
    merchant_id: str,
    *,
    token: str | None = None,
    token_id: int | None = None,
    label: str | None = None,
    all_tokens: bool = False,
) -> int:
    """Revoke the merchant's live tokens that match: the token itself, its id (``poflow merchant tokens``),
    its label, or all of them. Returns how many were revoked; ``no_matching_token`` if none was live."""
    validate_merchant_id(merchant_id)
    if not (token or token_id is not None or label or all_tokens):
        raise PoflowError("no_token_selected", "name a token, --id, --label or --all")
    query = select(MerchantToken).where(MerchantToken.merchant_id == merchant_id, MerchantToken.revoked_at.is_(None))
    if token:
        query = query.where(MerchantToken.token_sha256 == hash_token(token))
    if token_id is not None:
        query = query.where(MerchantToken.id == token_id)
    if label:
        query = query.where(MerchantToken.label == label)
    with db.session() as session:
        rows = list(session.scalars(query))
        now = utcnow()
        for row in rows:
            row.revoked_at = now
    if not rows:
        raise PoflowError("no_matching_token", f"merchant {merchant_id!r} has no live token that matches")
    return len(rows)
