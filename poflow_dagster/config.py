"""Environment configuration. Every variable has an embedded default, read when used (not at import)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

#: A stable Admin API version (productSet costs 10 + 0.2 per variant since 2025-10; before it, a flat 50).
DEFAULT_SHOPIFY_API_VERSION = "2026-10"


def poflow_home() -> Path:
    """``POFLOW_HOME`` (default ``./.poflow``): uploads store, inbox, SQLite database, emulator state."""
    return Path(os.environ.get("POFLOW_HOME") or ".poflow").resolve()


def dagster_home() -> Path:
    """The one Dagster home for everything local (``poflow demo``, ``poflow run``, ``dagster dev``): ``DAGSTER_HOME``
    if set, else ``POFLOW_HOME/dagster``. Created if missing, with the bundled instance settings
    (``poflow_dagster/dagster_home.yaml``: SQLite storage, run queue, monitoring) when it has no
    ``dagster.yaml`` yet; an existing ``dagster.yaml`` is never touched."""
    configured = os.environ.get("DAGSTER_HOME")
    home = Path(configured).expanduser().resolve() if configured else poflow_home() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not configured and not settings.exists():
        bundled = Path(__file__).with_name("dagster_home.yaml").read_text(encoding="utf-8")
        partial = home / f".dagster.yaml.{os.getpid()}.tmp"  # written whole, then moved: concurrent starts are safe
        partial.write_text(bundled, encoding="utf-8")
        os.replace(partial, settings)
    return home


def database_url() -> str:
    """``POFLOW_DATABASE_URL``; default a SQLite file under ``POFLOW_HOME``."""
    url = os.environ.get("POFLOW_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{poflow_home() / 'poflow.sqlite3'}"


def redis_url() -> str | None:
    """``REDIS_URL``; unset means progress goes to the database and logs only."""
    return os.environ.get("REDIS_URL") or None


def progress_namespace(db_url: str | None = None) -> str:
    """Prefix of every Redis key of the progress bus: ``POFLOW_REDIS_NAMESPACE``, default ``poflow:`` and the
    first 12 hex digits of the sha256 of the app database URL (``db_url``, else ``database_url()``), so
    two deployments sharing one Redis (or one Redis database) never see each other's events."""
    configured = (os.environ.get("POFLOW_REDIS_NAMESPACE") or "").strip()
    if configured:
        return configured
    digest = hashlib.sha256(_database_identity(db_url or database_url()).encode()).hexdigest()[:12]
    return f"poflow:{digest}"


def _database_identity(db_url: str) -> str:
    """Which database a URL names, however it is spelled: backend, user, host, port and database (an absolute
    path for SQLite) — never the driver or the password, so ``postgresql://`` and ``postgresql+psycopg2://`` of one
    database, or a rotated password, give the same namespace (the API, the runs and ``poflow watch`` must agree)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(db_url)
    except ArgumentError:
        return db_url
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        return f"sqlite:{os.path.abspath(database) if database and database != ':memory:' else database}"
    return f"{backend}://{url.username or ''}@{url.host or ''}:{url.port or ''}/{url.database or ''}"


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
