"""The image stage's database writes for a batch of results, committed in one transaction.

:func:`~poflow_dagster.images.collect.collect_images` lands fetch results in short windows (tens of images, a
fraction of a second). What one window means for the database is queued here and :meth:`Writes.flush` commits it
at once: the new ``images`` rows (one insert, a concurrent writer's row wins), the URLs' outcomes in
``image_urls`` (:func:`~poflow_dagster.images.store.record_urls`) and the candidates' new states in
``draft_images`` (one ``UPDATE ... WHERE id = ?`` executemany). A candidate whose draft was deleted meanwhile is
not written; its draft is reported as gone. Image files are written before their rows are queued (the caller's
part, :func:`~poflow_dagster.images.store.write_image_file`), so a committed row always names a file.

A queued candidate is the row object the caller read (and changed): its current values are written, however
often it changed in the window. Each change may carry a callback (a count, an event) run only once the change is
committed, and only if its draft still exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from poflow_dagster.images.store import (
    StoredImage,
    UrlOutcome,
    ensure_images,
    record_urls,
)
from poflow_dagster.images.validate import ValidImage
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import DraftImage, ProductDraft
from poflow_dagster.store.types import utcnow

__all__ = ["Flushed", "Writes"]

#: The ``draft_images`` columns a run changes (besides ``updated_at``).
ROW_COLUMNS = ("state", "reason", "sha256", "image_id", "duplicate_of", "media_gid", "attached_at")
_CHUNK = 500  # ids per IN (...) list


@dataclass
class Flushed:
    """What one :meth:`Writes.flush` committed: the batch's images by sha256, the drafts found deleted, and the
    callbacks of the changes written (in the order they were queued)."""

    images: dict[str, StoredImage] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)
    then: list[Callable[[], None]] = field(default_factory=list)


class Writes:
    """Queued writes of one merchant's image run (see the module); not thread-safe: one collector thread."""

    def __init__(self, db: Database, merchant_id: str, root: Path) -> None:
        self.db, self.merchant_id, self.root = db, merchant_id, root
        self.transactions = 0
        self._images: dict[str, ValidImage] = {}
        self._urls: dict[str, UrlOutcome] = {}
        self._rows: dict[int, tuple[int, DraftImage]] = {}  # row id -> (draft id, row)
        self._then: list[tuple[int, Callable[[], None]]] = []

    def __bool__(self) -> bool:
        return bool(self._images or self._urls or self._rows)

    def add_image(self, image: ValidImage) -> None:
        """An image whose file is written: its ``images`` row goes in with the batch."""
        self._images[image.sha256] = image

    def add_url(self, outcome: UrlOutcome) -> None:
        self._urls[outcome.url] = outcome

    def touch(self, draft_id: int, row: DraftImage, then: Callable[[], None] | None = None) -> None:
        """``row`` (of ``draft_id``) changed: write its values; run ``then`` once they are committed."""
        self._rows[row.id] = (draft_id, row)
        if then is not None:
            self._then.append((draft_id, then))

    def flush(self) -> Flushed:
        """Commit everything queued in one transaction (again on a unique-key race); nothing queued: no-op."""
        if not self:
            return Flushed()
        images, urls, rows, then = list(self._images.values()), list(self._urls.values()), self._rows, self._then
        self._images, self._urls, self._rows, self._then = {}, {}, {}, []

        def work(session: Session) -> tuple[dict[str, StoredImage], set[int]]:
            stored = ensure_images(session, self.merchant_id, images, self.root)
            record_urls(session, self.merchant_id, urls)
            present = _present_drafts(session, {draft_id for draft_id, _ in rows.values()})
            _write_rows(session, [row for draft_id, row in rows.values() if draft_id in present], stored)
            return stored, present

        stored, present = self.db.retry_on_conflict(work)
        self.transactions += 1
        gone = {draft_id for draft_id, _ in rows.values()} - present
        return Flushed(stored, gone, [callback for draft_id, callback in then if draft_id not in gone])


def _present_drafts(session: Session, draft_ids: set[int]) -> set[int]:
    ids, present = sorted(draft_ids), set()
    for start in range(0, len(ids), _CHUNK):
        present.update(session.scalars(select(ProductDraft.id).where(ProductDraft.id.in_(ids[start:start + _CHUNK]))))
    return present


def _write_rows(session: Session, rows: list[DraftImage], stored: dict[str, StoredImage]) -> None:
    """Each row's current values, by primary key, in one executemany (``image_id`` follows ``sha256`` when the
    batch stored that image)."""
    if not rows:
        return
    now = utcnow()
    params = []
    for row in rows:
        if row.sha256 in stored:
            row.image_id = stored[row.sha256].id
        params.append({"row_id": row.id, "v_updated_at": now, **{f"v_{c}": getattr(row, c) for c in ROW_COLUMNS}})
    table = DraftImage.__table__
    statement = update(table).where(table.c.id == bindparam("row_id")).values(
        {column: bindparam(f"v_{column}") for column in (*ROW_COLUMNS, "updated_at")})
    session.execute(statement, params)
