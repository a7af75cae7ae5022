from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from poflow_dagster import config
from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.shopify.client import ShopifyClient
from poflow_dagster.shopify.connection import ShopTarget, resolve_shop
from poflow_dagster.store.schema import Merchant

#: The resource's integer settings and the environment variables they come from.
INT_SETTINGS = {"max_attempts": "POFLOW_SHOPIFY_MAX_ATTEMPTS", "throttle_timeout": "POFLOW_SHOPIFY_THROTTLE_TIMEOUT"}


class ShopifyResource(dg.ConfigurableResource):
    """Shopify Admin GraphQL access. Unconfigured, it talks to the bundled local emulator.

    ``definitions.py`` sets each field from its environment variable with ``dg.EnvVar`` when that variable is set
    (``SHOPIFY_SHOP_URL``, ``SHOPIFY_ACCESS_TOKEN``, ``SHOPIFY_API_VERSION``, ``POFLOW_HOME``,
    ``POFLOW_SHOPIFY_MAX_ATTEMPTS``, ``POFLOW_SHOPIFY_THROTTLE_TIMEOUT``)."""

    shop_url: str = Field(default="", description="Shop URL; empty = SHOPIFY_SHOP_URL or the local emulator.")
    access_token: str = Field(default="", description="Admin API token (set it with dg.EnvVar; never logged).")
    api_version: str = Field(default="", description="Admin API version; empty = SHOPIFY_API_VERSION or the default.")
    home: str = Field(default="", description="Where the emulator keeps state; empty = POFLOW_HOME.")
    max_attempts: int = Field(
        default=10,
        description="HTTP attempts per GraphQL call for connection errors and 502/503/504 (backoff 0.5 s doubling "
        "to 30 s: about 2 minutes of trying).",
    )
    throttle_timeout: int = Field(
        default=900,
        description="Whole seconds one call keeps waiting out THROTTLED/429 answers before it gives up (an int: "
        "dg.EnvVar has no float form).",
    )

    @classmethod
    def from_env(cls, **fields: object) -> ShopifyResource:
        """The resource as the environment configures it now, for code outside Dagster (the CLI, the HTTP API):
        ``POFLOW_SHOPIFY_MAX_ATTEMPTS`` and ``POFLOW_SHOPIFY_THROTTLE_TIMEOUT`` when set (the shop, token, API
        version and home are read from theirs when used), then ``fields`` (e.g. ``home``) on top.

        A setting that is not a whole number above zero is ``bad_config`` (one line), never a traceback."""
        settings: dict[str, object] = {}
        for field, name in INT_SETTINGS.items():
            raw = (os.environ.get(name) or "").strip()
            if raw:
                settings[field] = _positive_int(name, raw)
        return cls(**{**settings, **fields})

    def target_for(self, merchant: Merchant) -> ShopTarget:
        from pathlib import Path

        return resolve_shop(
            merchant_shop_url=merchant.shop_url,
            merchant_token_env=merchant.shopify_token_env,
            default_shop_url=self.shop_url or config.shopify_shop_url(),
            default_token=self.access_token or os.environ.get("SHOPIFY_ACCESS_TOKEN") or None,
            home=Path(self.home).resolve() if self.home else config.poflow_home(),
        )

    def client_for(self, target: ShopTarget) -> ShopifyClient:
        """A client for ``target``; it paces itself in the shop's shared rate budget (Redis when ``REDIS_URL``)."""
        return ShopifyClient(
            target.url,
            target.token,
            self.api_version or config.shopify_api_version(),
            max_attempts=self.max_attempts,
            throttle_timeout=self.throttle_timeout,
        )


def _positive_int(name: str, raw: str) -> int:
    if not raw.isdigit() or int(raw) <= 0:
        raise PoflowError("bad_config", f"{name} must be a whole number above zero, not {raw!r}")
    return int(raw)
