"""Small named analytics state in the app database: event-log cursors and fitted models (JSON text).

Names in use: ``cursor:<instance>:<dagster event type>`` (``pipeline/run_history.py``) and ``model:eta`` (the ETA model the
``eta_model`` asset fits and the live ETA reads).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import AnalyticsState
from poflow_dagster.store.types import utcnow

__all__ = ["load_json", "load_state", "save_json", "save_state"]


def load_state(db: Database, name: str) -> str | None:
    """The value stored under ``name``, or ``None``."""
    with db.session() as session:
        return session.scalar(select(AnalyticsState.value).where(AnalyticsState.name == name))


def save_state(db: Database, name: str, value: str) -> None:
    """Store ``value`` under ``name``, replacing what was there (safe against a concurrent first write)."""
    def write(session) -> None:
        row = session.get(AnalyticsState, name)
        if row is None:
            session.add(AnalyticsState(name=name, value=value, updated_at=utcnow()))
        else:
            row.value = value
            row.updated_at = utcnow()

    db.retry_on_conflict(write)

def load_json(db: Database, name: str) -> Any | None:
    text = load_state(db, name)
    return None if text is None else json.loads(text)


def save_json(db: Database, name: str, value: Any) -> None:
    save_state(db, name, json.dumps(value, sort_keys=True, default=str))
