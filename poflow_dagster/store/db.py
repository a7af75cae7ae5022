"""Engines, sessions and migrations for the app database (SQLite or PostgreSQL)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
T = TypeVar("T")


class Database:
    """One app database: an engine, a session factory and its migrations.

    ``session()`` is a unit of work: it commits on success and rolls back on error,
    so every core function that takes a session is one transaction.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _create_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def retry_on_conflict(self, work: Callable[[Session], T], attempts: int = 3) -> T:
        """Run ``work(session)`` in one transaction, again (up to ``attempts`` times) when a concurrent writer
        won a unique race (``IntegrityError``): the next try sees the winner's row."""
        for attempt in range(attempts):
            try:
                with self.session() as session:
                    return work(session)
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent, safe to call from many processes).

        A database already at the newest revision is recognised with one query, without importing Alembic
        (~0.25 s): a CLI command such as ``poflow upload`` stays fast."""
        if self._at_head():
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Concurrent runs may start at once: one migrates, the others wait.
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7290451)")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def _at_head(self) -> bool:
        try:
            with self.engine.connect() as connection:
                versions = {row[0] for row in connection.exec_driver_sql("SELECT version_num FROM alembic_version")}
        except Exception:  # no version table yet (a new database), or it cannot be read: let Alembic decide
            return False
        return versions == {head_revision()}

    def dispose(self) -> None:
        self.engine.dispose()


_REVISION = re.compile(r"^(down_)?revision(?:\s*:\s*[^=]+)?\s*=\s*['\"]?([\w-]+|None)['\"]?", re.MULTILINE)
_head: str | None = None


def head_revision() -> str:
    """The newest migration's revision id, read from the version files (the one no other file revises)."""
    global _head
    if _head is None:
        revisions, parents = set(), set()
        for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
            for is_down, value in _REVISION.findall(path.read_text(encoding="utf-8")):
                (parents if is_down else revisions).add(value)
        heads = revisions - parents
        _head = heads.pop() if len(heads) == 1 else "?"
    return _head


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


_databases: dict[str, Database] = {}
_lock = threading.Lock()


def get_database(url: str, *, migrate: bool = True) -> Database:
    """The process-wide ``Database`` for ``url``, migrated once per process."""
    with _lock:
        database = _databases.get(url)
        if database is None:
            database = Database(url)
            if migrate:
                database.migrate()
            _databases[url] = database
        return database


def close_database(url: str) -> None:
    """Dispose ``url``'s engine and forget it (tests, and processes switching databases)."""
    with _lock:
        database = _databases.pop(url, None)
    if database is not None:
        database.dispose()
