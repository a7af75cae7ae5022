from __future__ import annotations

import dagster as dg
from pydantic import Field

from poflow_dagster import config
from poflow_dagster.store.db import Database, get_database


class DatabaseResource(dg.ConfigurableResource):
    """The poflow app database (SQLite by default, PostgreSQL in production), migrated on first use."""

    url: str = Field(default="", description="SQLAlchemy URL; empty = POFLOW_DATABASE_URL or the SQLite default.")

    @property
    def database(self) -> Database:
        return get_database(self.url or config.database_url())
