"""Which Shopify store a merchant's products go to, and with which token.

Order of precedence: the merchant's own shop (token read from the env var the merchant names),
then ``SHOPIFY_SHOP_URL`` / ``SHOPIFY_ACCESS_TOKEN``, then the bundled local emulator
(one per process, sharing its state file under ``POFLOW_HOME`` so every run sees the same store).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from poflow_dagster.domain.errors import PoflowError

EMULATOR_TOKEN = "poflow-emulator-token"

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
    if merchant_shop_url:
        if not merchant_token_env:
            raise PoflowError("shopify_token_missing", f"merchant shop {merchant_shop_url} has no token env var configured")
        token = os.environ.get(merchant_token_env)
        if not token:
            raise PoflowError("shopify_token_missing", f"environment variable {merchant_token_env} is not set")
        return ShopTarget(merchant_shop_url.rstrip("/"), token, is_emulator=False)
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
