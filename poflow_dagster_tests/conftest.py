"""Shared fixtures: real SQLite and PostgreSQL databases, a real Shopify emulator, temp Dagster instances."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from poflow_dagster.store.db import Database, close_database, get_database

PG_ADMIN_URL = os.environ.get("POFLOW_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
#: The Redis the tests use (the one place its URL is written): ``POFLOW_TEST_REDIS_URL``, default DB 0 locally.
REDIS_TEST_URL = os.environ.get("POFLOW_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"

#: Tests start from nothing configured, whatever the shell exports, and each sets what it needs. This matters
#: beyond hygiene: ``definitions.py`` wraps every resource variable that is set when it loads in ``dg.EnvVar``,
#: and a test that then unsets it (``home`` does for REDIS_URL…) would fail to resolve it. DAGSTER_HOME too, so
#: ``poflow run`` in a test never writes into the developer's own Dagster home.
CONFIG_ENV = (
    "POFLOW_HOME", "POFLOW_DATABASE_URL", "REDIS_URL", "POFLOW_REDIS_NAMESPACE", "SHOPIFY_SHOP_URL",
    "SHOPIFY_ACCESS_TOKEN", "SHOPIFY_API_VERSION", "POFLOW_SHOPIFY_MAX_ATTEMPTS", "POFLOW_SHOPIFY_THROTTLE_TIMEOUT",
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "POFLOW_LLM_MODEL", "DAGSTER_HOME", "POFLOW_SHOPIFY_BULK_THRESHOLD",
    "POFLOW_MATCH_FUZZY_THRESHOLD", "POFLOW_MATCH_AMBIGUITY_MARGIN", "POFLOW_API_URL", "POFLOW_API_TOKEN",
)
for _name in CONFIG_ENV:
    os.environ.pop(_name, None)
#: No direct run submits to whatever webserver may listen on this machine's port 3000: tests that submit
#: start their own webserver and point POFLOW_DAGSTER_URL at it.
os.environ["POFLOW_DAGSTER_URL"] = "off"
#: Every PO run syncs the catalog: tests change the emulator's catalog between runs seconds apart. The skip window
#: itself is tested in test_catalog_freshness.py.
os.environ["POFLOW_CATALOG_MAX_AGE_SECONDS"] = "0"


def _pg_schema_url(schema: str) -> str:
    return f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path):
    """An empty app database URL: a SQLite file, or a fresh schema in PostgreSQL ``test`` (dropped after)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
        yield url
        close_database(url)
        return
    schema = f"poflow_t_{secrets.token_hex(6)}"
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = _pg_schema_url(schema)
    try:
        yield url
    finally:
        close_database(url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def db(db_url: str) -> Database:
    return get_database(db_url)


@pytest.fixture
def home(tmp_path: Path, db_url: str, monkeypatch) -> Path:
    """POFLOW_HOME and POFLOW_DATABASE_URL for this test; no Shopify or Redis configured."""
    root = tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("POFLOW_HOME", str(root))
    monkeypatch.setenv("POFLOW_DATABASE_URL", db_url)
    for name in ("SHOPIFY_SHOP_URL", "SHOPIFY_ACCESS_TOKEN", "REDIS_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return root


@pytest.fixture
def shop(monkeypatch):
    """A real emulator over HTTP, configured as the default shop."""
    from poflow_dagster.shopify.emulator import start_emulator

    with start_emulator(access_token="test-token") as handle:
        monkeypatch.setenv("SHOPIFY_SHOP_URL", handle.url)
        monkeypatch.setenv("SHOPIFY_ACCESS_TOKEN", "test-token")
        yield handle


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def samples(tmp_path: Path) -> dict[str, Path]:
    from poflow_dagster.samples import generate_samples

    return {path.name: path for path in generate_samples(tmp_path / "samples")}
