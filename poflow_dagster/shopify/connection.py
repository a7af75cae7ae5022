"""Which Shopify store a merchant's products go to, and with which token.

Order of precedence: the merchant's own shop (token read from the env var the merchant names),
then ``SHOPIFY_SHOP_URL`` / ``SHOPIFY_ACCESS_TOKEN``, then the bundled local emulator
(one per process, sharing its state file under ``POFLOW_HOME`` so every run sees the same store).

Merchant settings cannot exfiltrate secrets: a merchant's token variable must be
``POFLOW_SHOPIFY_TOKEN_<NAME>`` (or the default ``SHOPIFY_ACCESS_TOKEN``), and its shop URL must be
``https://<name>.myshopify.com`` unless ``POFLOW_SHOPIFY_ALLOWED_HOSTS`` (comma-separated ``host`` or
``host:port``) names its host. Both are checked when the settings are written and again when they are used.
The operator's own ``SHOPIFY_SHOP_URL`` / ``SHOPIFY_ACCESS_TOKEN`` pair and the bundled emulator are not
merchant settings and are not restricted.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from poflow_dagster.domain.errors import PoflowError

EMULATOR_TOKEN = "poflow-emulator-token"
TOKEN_ENV_PREFIX = "POFLOW_SHOPIFY_TOKEN_"
DEFAULT_TOKEN_ENV = "SHOPIFY_ACCESS_TOKEN"
ALLOWED_HOSTS_ENV = "POFLOW_SHOPIFY_ALLOWED_HOSTS"

_TOKEN_ENV_RE = re.compile(rf"^{TOKEN_ENV_PREFIX}[A-Z0-9_]+$")
_MYSHOPIFY_HOST = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\.myshopify\.com$")


def validate_token_env(name: str) -> str:
    """``name`` if a merchant may name it as its token variable, else ``PoflowError("invalid_token_env")``."""
    if name == DEFAULT_TOKEN_ENV or _TOKEN_ENV_RE.match(name or ""):
        return name
    raise PoflowError(
        "invalid_token_env",
        f"token variable {name!r} is not allowed: use {TOKEN_ENV_PREFIX}<NAME> (A-Z, 0-9, _) or {DEFAULT_TOKEN_ENV}",
    )


def allowed_hosts() -> frozenset[str]:
    """Hosts (``host`` or ``host:port``, lower case) that ``POFLOW_SHOPIFY_ALLOWED_HOSTS`` allows."""
    raw = os.environ.get(ALLOWED_HOSTS_ENV, "")
    return frozenset(part.strip().lower() for part in raw.split(",") if part.strip())


def validate_shop_url(url: str) -> str:
    """The merchant shop URL, normalised (no trailing ``/``), or ``PoflowError("shop_url_not_allowed")``.

    Allowed: ``https://<name>.myshopify.com`` (no port, path, query or credentials), or any ``http(s)``
    URL whose ``host`` or ``host:port`` is listed in ``POFLOW_SHOPIFY_ALLOWED_HOSTS``.
    """
    text = (url or "").strip().rstrip("/")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise PoflowError("shop_url_not_allowed", f"shop URL {text!r} is not a valid URL") from None
    host = (parts.hostname or "").lower()
    clean = bool(host) and not (parts.username or parts.password or parts.path or parts.query or parts.fragment)
    if clean and parts.scheme == "https" and port is None and _MYSHOPIFY_HOST.match(host):
        return f"https://{host}"
    listed = allowed_hosts()
    if clean and parts.scheme in ("http", "https") and (host in listed or f"{host}:{port}" in listed):
        return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    raise PoflowError(
        "shop_url_not_allowed",
        f"shop URL {text!r} is not allowed: use https://<name>.myshopify.com, or list its host in {ALLOWED_HOSTS_ENV}",
    )

_emulators: dict[str, object] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class ShopTarget:
    url: str
    token: str = field(repr=False)
    is_emulator: bool


def resolve_shop(
    *,
    merchant_shop_url: str | None,
    merchant_token_env: str | None,
    default_shop_url: str | None,
    default_token: str | None,
    home: Path,
) -> ShopTarget:
    """Where to sync and with which token; merchant settings are validated again here (see the module doc)."""
    if merchant_shop_url:
        url = validate_shop_url(merchant_shop_url)
        if not merchant_token_env:
            raise PoflowError("shopify_token_missing", f"merchant shop {url} has no token env var configured")
        token = os.environ.get(validate_token_env(merchant_token_env))
        if not token:
            raise PoflowError("shopify_token_missing", f"environment variable {merchant_token_env} is not set")
        return ShopTarget(url, token, is_emulator=False)
    if default_shop_url:
        if not default_token:
            raise PoflowError("shopify_token_missing", "SHOPIFY_SHOP_URL is set but SHOPIFY_ACCESS_TOKEN is not")
        return ShopTarget(default_shop_url.rstrip("/"), default_token, is_emulator=False)
    return ShopTarget(local_emulator_url(home), EMULATOR_TOKEN, is_emulator=True)


def local_emulator_url(home: Path) -> str:
    """Start (once per process) the bundled emulator on a free port, backed by ``home``'s state file."""
    from poflow_dagster.shopify.emulator import start_emulator

    state_path = (home / "shopify-emulator.sqlite3").resolve()
    key = str(state_path)
    with _lock:
        handle = _emulators.get(key)
        if handle is None:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            handle = start_emulator(state_path=state_path, access_token=EMULATOR_TOKEN)
            _emulators[key] = handle
        return handle.url  # type: ignore[attr-defined]
