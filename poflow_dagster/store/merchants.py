"""Merchants and their per-merchant configuration."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from poflow_dagster import config
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.connection import validate_shop_url, validate_token_env
from poflow_dagster.store.schema import Merchant

_MERCHANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LOCATION_GID = re.compile(r"^gid://shopify/Location/[0-9]{1,20}$")
#: When a receiving merchant's stock is received: by hand as goods arrive, or every ordered unit at sync.
RECEIVE_MODES = ("manual", "sync")


def validate_merchant_id(merchant_id: str) -> str:
    if not _MERCHANT_ID.match(merchant_id or ""):
        raise PoflowError("invalid_merchant", f"merchant id {merchant_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return merchant_id


def validate_location_gid(gid: str) -> str:
    """``gid`` if it is a Shopify location GID, else ``PoflowError("invalid_location")``."""
    if not _LOCATION_GID.match(gid.strip()):
        raise PoflowError("invalid_location", f"location {gid!r} is not a Shopify location GID "
                                              "(gid://shopify/Location/<n>)")
    return gid.strip()


def validate_receive_on(mode: str) -> str:
    """``mode`` if it is a receive mode (``manual`` | ``sync``), else ``PoflowError("invalid_receive_on")``."""
    value = (mode or "").strip().lower()
    if value not in RECEIVE_MODES:
        raise PoflowError("invalid_receive_on", f"receive mode {mode!r} must be one of {', '.join(RECEIVE_MODES)}")
    return value


def validate_image_feed(location: str) -> str:
    """An image feed location: an http(s) URL with a host, or a local file (stored as an absolute path)."""
    value = location.strip()
    parts = urlsplit(value)
    if parts.scheme.lower() in ("http", "https"):
        if not parts.hostname:
            raise PoflowError("invalid_image_feed", f"image feed {location!r} has no host")
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise PoflowError("invalid_image_feed", f"image feed {location!r} is neither an http(s) URL nor a file")
    return str(path.resolve())


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
    receive_stock: bool | None = None,
    stock_location_gid: str | None = None,
    receive_on: str | None = None,
    update_price: bool | None = None,
    image_feed_url: str | None = None,
) -> Merchant:
    """Create or update a merchant's settings. The token is never stored: only its env var's name.

    The token variable must be ``POFLOW_SHOPIFY_TOKEN_<NAME>`` or ``SHOPIFY_ACCESS_TOKEN``
    (``invalid_token_env``); the shop URL ``https://<name>.myshopify.com`` unless its host is listed in
    ``POFLOW_SHOPIFY_ALLOWED_HOSTS`` (``shop_url_not_allowed``). An empty string clears either setting.

    Receiving stock needs a location: a ``gid://shopify/Location/<n>`` (``invalid_location``), set now or
    before (``stock_location_missing``); whether the shop has it is the caller's check (it needs Shopify).
    ``receive_on`` is ``manual`` (``poflow receive`` as goods arrive) or ``sync`` (every ordered unit when the PO
    syncs), else ``invalid_receive_on``; turning receiving on without it starts ``manual``. ``update_price``: matched
    existing variants also get the PO's price (unit cost with the markup), not only its cost.
    ``image_feed_url``: the supplier's image feed, an http(s) URL or an existing local file (``invalid_image_feed``).
    """
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
        merchant.shop_url = validate_shop_url(shop_url) if shop_url.strip() else None
    if shopify_token_env is not None:
        merchant.shopify_token_env = validate_token_env(shopify_token_env) if shopify_token_env else None
    if stock_location_gid is not None:
        merchant.stock_location_gid = validate_location_gid(stock_location_gid) if stock_location_gid else None
    mode = validate_receive_on(receive_on) if receive_on is not None else None
    if receive_stock is not None:
        if receive_stock and not merchant.receive_stock:
            merchant.receive_on = "manual"  # newly enabled: received by hand unless told otherwise
        merchant.receive_stock = receive_stock
    if mode is not None:
        merchant.receive_on = mode
    if update_price is not None:
        merchant.update_price = update_price
    if image_feed_url is not None:
        merchant.image_feed_url = validate_image_feed(image_feed_url) if image_feed_url.strip() else None
    if merchant.receive_stock and not merchant.stock_location_gid:
        raise PoflowError("stock_location_missing", f"merchant {merchant_id} receives stock but has no location: "
                                                    "set one with --location gid://shopify/Location/<n>")
    session.flush()
    return merchant
