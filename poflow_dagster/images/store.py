"""Content-addressed image storage: one file and one ``images`` row per (merchant, sha256); the database's ETag cache.

Files live under ``POFLOW_HOME/images/<sha256[:2]>/<sha256>.<ext>``: written to a temporary file in the same
directory and renamed into place (atomic), never rewritten once there (same name = same bytes), always before the
row that names them. Rows are inserted race-safely and in bulk (:func:`ensure_images`: ``INSERT ... ON CONFLICT DO
NOTHING``, so a concurrent writer's row wins and is returned). :func:`record_urls` keeps many URLs' last outcomes in
the caller's transaction; :class:`DbEtagCache` implements :class:`~poflow_dagster.images.fetch.EtagCache` over
``image_urls`` (one short transaction per call).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from poflow_dagster import config
from poflow_dagster.images.validate import ValidImage
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import ImageRow, ImageUrlRow
from poflow_dagster.store.types import utcnow

__all__ = ["DbEtagCache", "KnownUrl", "StoredImage", "UrlOutcome", "ensure_images", "image_root", "record_urls",
           "store_image", "stored_images", "url_sha256", "write_image_file"]

_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


@dataclass(frozen=True)
class StoredImage:
    """An image kept on disk and in ``images``: what attaching and de-duplication need."""

    id: int
    merchant_id: str
    sha256: str
    phash: str
    mime_type: str
    width: int
    height: int
    byte_size: int
    path: Path

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


def image_root() -> Path:
    """``POFLOW_HOME/images``."""
    return config.poflow_home() / "images"


def url_sha256(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _relative_path(sha256: str, mime_type: str) -> str:
    return f"{sha256[:2]}/{sha256}.{_EXT.get(mime_type, 'bin')}"


def _write_once(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` atomically unless the file is there already (same name = same content)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _stored(row: ImageRow, root: Path) -> StoredImage:
    return StoredImage(id=row.id, merchant_id=row.merchant_id, sha256=row.sha256, phash=row.phash,
                       mime_type=row.mime_type, width=row.width, height=row.height, byte_size=row.byte_size,
                       path=root / row.storage_path)


def write_image_file(image: ValidImage, data: bytes, root: Path | None = None) -> str:
    """Write a validated image's file (atomically, once); its path relative to ``root``."""
    relative = _relative_path(image.sha256, image.mime_type)
    _write_once((root or image_root()) / relative, data)
    return relative


def _insert_ignoring_conflicts(session: Session, model: Any, keys: list[str]) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` for the session's database (SQLite or PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing(index_elements=keys)
    if dialect == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing(index_elements=keys)
    return insert(model)


def ensure_images(
    session: Session, merchant_id: str, images: Sequence[ValidImage], root: Path | None = None,
) -> dict[str, StoredImage]:
    """The ``images`` rows of these images (their files written already), inserting the missing ones in one
    statement (rows another writer inserted first are kept); by sha256. Runs in the caller's transaction."""
    unique = {image.sha256: image for image in images}
    if not unique:
        return {}
    root = root or image_root()
    now = utcnow()
    session.execute(_insert_ignoring_conflicts(session, ImageRow, ["merchant_id", "sha256"]), [
        {"merchant_id": merchant_id, "sha256": image.sha256, "phash": image.phash, "mime_type": image.mime_type,
         "width": image.width, "height": image.height, "byte_size": image.byte_length,
         "storage_path": _relative_path(image.sha256, image.mime_type), "created_at": now}
        for image in unique.values()])
    rows = session.scalars(select(ImageRow).where(ImageRow.merchant_id == merchant_id,
                                                  ImageRow.sha256.in_(sorted(unique))))
    return {row.sha256: _stored(row, root) for row in rows}


def store_image(
    db: Database, merchant_id: str, image: ValidImage, data: bytes, root: Path | None = None,
) -> StoredImage:
    """Keep a validated image: its file (once) and its ``images`` row (once per merchant); the row either way."""
    root = root or image_root()
    write_image_file(image, data, root)
    with db.session() as session:
        return ensure_images(session, merchant_id, [image], root)[image.sha256]


def stored_images(
    db: Database, merchant_id: str, sha256s: set[str], root: Path | None = None, *, require_file: bool = True,
) -> dict[str, StoredImage]:
    """The merchant's stored images among ``sha256s`` (only those whose file is still on disk unless
    ``require_file`` is False), by sha256."""
    if not sha256s:
        return {}
    root = root or image_root()
    with db.session() as session:
        rows = session.scalars(select(ImageRow).where(ImageRow.merchant_id == merchant_id,
                                                      ImageRow.sha256.in_(sorted(sha256s))))
        found = {row.sha256: _stored(row, root) for row in rows}
    return {sha: image for sha, image in found.items() if not require_file or image.path.exists()}


@dataclass(frozen=True)
class KnownUrl:
    """What ``image_urls`` remembers of one URL."""

    url: str
    etag: str | None
    sha256: str | None
    status: str
    reason: str | None
    fetched_at: dt.datetime

    def fresh(self, max_age: dt.timedelta, now: dt.datetime | None = None) -> bool:
        """True when the URL gave an image less than ``max_age`` ago: reused without a request."""
        return self.sha256 is not None and (now or utcnow()) - self.fetched_at < max_age


class DbEtagCache:
    """:class:`~poflow_dagster.images.fetch.EtagCache` over ``image_urls`` for one merchant (thread-safe: one
    short transaction per call). :meth:`record` keeps every URL's last outcome, failures included."""

    def __init__(self, db: Database, merchant_id: str) -> None:
        self._db = db
        self._merchant_id = merchant_id

    def known(self, urls: list[str]) -> dict[str, KnownUrl]:
        """What is remembered of these URLs, by URL."""
        keys = {url_sha256(u): u for u in urls}
        if not keys:
            return {}
        with self._db.session() as session:
            rows = session.scalars(select(ImageUrlRow).where(ImageUrlRow.merchant_id == self._merchant_id,
                                                             ImageUrlRow.url_sha256.in_(sorted(keys))))
            return {row.url: KnownUrl(row.url, row.etag, row.sha256, row.status, row.reason, row.fetched_at)
                    for row in rows if row.url in keys.values()}

    def get(self, url: str) -> tuple[str, str] | None:
        known = self.known([url]).get(url)
        if known is None or not known.etag or not known.sha256:
            return None
        return known.etag, known.sha256

    def put(self, url: str, etag: str, sha256: str) -> None:
        self.record(url, status="fetched", etag=etag, sha256=sha256)

    def record(self, url: str, *, status: str, etag: str | None = None, sha256: str | None = None,
               reason: str | None = None) -> None:
        """Remember the last outcome of ``url`` (see :func:`record_urls`)."""
        outcome = UrlOutcome(url, status, etag=etag, sha256=sha256, reason=reason)
        self._db.retry_on_conflict(lambda session: record_urls(session, self._merchant_id, [outcome]))


@dataclass(frozen=True)
class UrlOutcome:
    """How one fetch of ``url`` went: ``fetched`` / ``not_modified`` (with the image) or ``failed`` (reason)."""

    url: str
    status: str
    etag: str | None = None
    sha256: str | None = None
    reason: str | None = None


def record_urls(session: Session, merchant_id: str, outcomes: Sequence[UrlOutcome]) -> None:
    """Remember the last outcome of each URL (the last one given per URL wins), in the caller's transaction: one
    query for the rows there are, one bulk insert for the new ones. A failure keeps the image an earlier fetch gave
    (and its ETag): a URL that once worked is not forgotten because a server had a bad minute. A concurrent writer
    inserting the same URL first raises ``IntegrityError``: run this under ``Database.retry_on_conflict``."""
    by_key = {url_sha256(outcome.url): outcome for outcome in outcomes}
    if not by_key:
        return
    rows = {row.url_sha256: row for row in session.scalars(select(ImageUrlRow).where(
        ImageUrlRow.merchant_id == merchant_id, ImageUrlRow.url_sha256.in_(sorted(by_key))))}
    now = utcnow()
    for key, outcome in by_key.items():
        row = rows.get(key)
        if row is None:
            row = ImageUrlRow(merchant_id=merchant_id, url_sha256=key, url=outcome.url)
            session.add(row)
        _apply(row, outcome, now)
    session.flush()


def _apply(row: ImageUrlRow, outcome: UrlOutcome, now: dt.datetime) -> None:
    row.status, row.reason = outcome.status, outcome.reason
    if outcome.status != "failed":
        row.sha256 = outcome.sha256 or row.sha256
        row.etag = outcome.etag if outcome.etag is not None else (
            row.etag if outcome.status == "not_modified" else None)
        row.fetched_at = now
    elif row.fetched_at is None:
        row.fetched_at = now
