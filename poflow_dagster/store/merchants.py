"""Merchants and their per-merchant configuration."""

from __future__ import annotations

import re
from decimal import Decimal

from sqlalchemy.orm import Session

from poflow_dagster import config
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.store.schema import Merchant

_MERCHANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def validate_merchant_id(merchant_id: str) -> str:
    if not _MERCHANT_ID.match(merchant_id or ""):
        raise PoflowError("invalid_merchant", f"merchant id {merchant_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return merchant_id


def ensure_merchant(session: Session, merchant_id: str) -> Merchant:
    """The merchant, created with default settings on first use."""
    merchant = session.get(Merchant, validate_merchant_id(merchant_id))
    if merchant is None:
        merchant = Merchant(
            id=merchant_id,
            name=merchant_id,
            markup_percent=Decimal(config.default_markup_percent()),
            shopify_sync_enabled=True,
        )
        session.add(merchant)
        session.flush()
    return merchant


def configure_merchant(
    session: Session,
    merchant_id: str,
    *,
    name: str | None = None,
    markup_percent: Decimal | None = None,
    shopify_sync_enabled: bool | None = None,
    shop_url: str | None = None,
    shopify_token_env: str | None = None,
) -> Merchant:
    """Create or update a merchant's settings. The token is never stored: only its env var's name."""
    merchant = ensure_merchant(session, merchant_id)
    if name is not None:
        merchant.name = name
    if markup_percent is not None:
        if markup_percent < 0 or markup_percent > 1000:
            raise PoflowError("invalid_markup", f"markup {markup_percent}% must be between 0 and 1000")
        merchant.markup_percent = markup_percent
    if shopify_sync_enabled is not None:
        merchant.shopify_sync_enabled = shopify_sync_enabled
    if shop_url is not None:
        merchant.shop_url = shop_url.rstrip("/") or None
    if shopify_token_env is not None:
        if shopify_token_env and not _ENV_NAME.match(shopify_token_env):
            raise PoflowError("invalid_token_env", f"{shopify_token_env!r} is not an environment variable name")
        merchant.shopify_token_env = shopify_token_env or None
    session.flush()
    return merchant
