"""Environment configuration. Every variable has an embedded default, read when used (not at import)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

#: A stable Admin API version (productSet costs 10 + 0.2 per variant since 2025-10; before it, a flat 50).
DEFAULT_SHOPIFY_API_VERSION = "2026-10"


def poflow_home() -> Path:
    """``POFLOW_HOME`` (default ``./.poflow``): uploads store, inbox, SQLite database, emulator state."""
    return Path(os.environ.get("POFLOW_HOME") or ".poflow").resolve()


def database_url() -> str:
    """``POFLOW_DATABASE_URL``; default a SQLite file under ``POFLOW_HOME``."""
    url = os.environ.get("POFLOW_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{poflow_home() / 'poflow.sqlite3'}"


def redis_url() -> str | None:
    """``REDIS_URL``; unset means progress goes to the database and logs only."""
    return os.environ.get("REDIS_URL") or None


def shopify_shop_url() -> str | None:
    """``SHOPIFY_SHOP_URL``; unset means the bundled local emulator."""
    return (os.environ.get("SHOPIFY_SHOP_URL") or "").rstrip("/") or None


def shopify_api_version() -> str:
    return os.environ.get("SHOPIFY_API_VERSION") or DEFAULT_SHOPIFY_API_VERSION


def default_markup_percent() -> str:
    """Markup for merchants created implicitly by their first upload."""
    return os.environ.get("POFLOW_DEFAULT_MARKUP_PERCENT") or "40"


#: Default wall-clock budget of one PO run (``dagster/max_runtime`` of ``po_job``).
DEFAULT_PO_RUN_MAX_RUNTIME_SECONDS = 30 * 60


def po_run_max_runtime_seconds() -> int:
    """``POFLOW_PO_RUN_MAX_RUNTIME`` in whole seconds (default 30 min). Read when the definitions load, so a
    bad value must not stop them loading: it falls back to the default with a warning."""
    raw = (os.environ.get("POFLOW_PO_RUN_MAX_RUNTIME") or "").strip()
    if not raw:
        return DEFAULT_PO_RUN_MAX_RUNTIME_SECONDS
    try:
        seconds = int(float(raw))
    except ValueError:
        seconds = 0
    if seconds <= 0:
        logging.getLogger(__name__).warning(
            "POFLOW_PO_RUN_MAX_RUNTIME=%r is not a positive number of seconds; using %d",
            raw, DEFAULT_PO_RUN_MAX_RUNTIME_SECONDS,
        )
        return DEFAULT_PO_RUN_MAX_RUNTIME_SECONDS
    return seconds
