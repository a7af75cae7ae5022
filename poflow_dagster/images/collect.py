"""The image stage's core: find, fetch, validate, store, de-duplicate and attach one upload's product images.

:func:`collect_images` works through the upload's drafts one source at a time (:mod:`.sources`: document, then
feed, then search; a draft moves on only when a source gave it no usable image). For each source:

1. candidates are recorded in ``draft_images`` (state ``found``; a re-run finds the same rows), all drafts' in one
   transaction;
2. a URL the merchant already fetched (``image_urls``) whose image is stored is reused WITHOUT a request while it
   is younger than ``POFLOW_IMAGE_REVALIDATE_HOURS`` (168); so is a URL that was refused for good (404, not an
   image...). Older ones are re-validated with ``If-None-Match``. Embedded bytes are validated directly;
3. the rest are fetched concurrently (:func:`~poflow_dagster.images.fetch.fetch_images`, each URL once per run
   however many drafts name it) in a background thread, while this thread stores the results in batches: what
   lands within :attr:`ImageSettings.batch_window` seconds (at most :attr:`ImageSettings.batch_size` images) is
   written as files, then committed in ONE transaction (:mod:`.writes`: ``images``, ``image_urls`` and
   ``draft_images`` rows). The fetcher keeps no bodies for its return value (``keep_data=False``) and its queue
   is bounded, so memory holds the images in flight and one batch, not the whole run's;
4. as soon as all of one draft's candidates are in, its images are de-duplicated (:mod:`.dedup`); once that batch
   is committed each kept image is handed to ``attach`` (progressive: early drafts attach while others still
   download), and the outcomes of a batch's attaches are committed together. An image already ``attached`` is
   never attached again.

A re-run rewrites nothing that did not change (a duplicate found before stays as it is and is counted in
``already_duplicate``, not ``deduplicated``): the counts say what this run did. Nothing here raises for an
image-level problem: refusals are ``rejected`` with their reason, attach failures ``failed``; a draft deleted
meanwhile is ``skipped`` with a note. All database writes happen in the caller's thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.images.dedup import Facts, choose
from poflow_dagster.images.feed import load_feed
from poflow_dagster.images.fetch import (
    FAILED, FETCHED, NOT_MODIFIED, FetchResult, FetchSettings, ImageRequest, fetch_images,
)
from poflow_dagster.images.search import ImageSearchProvider, search_from_env
from poflow_dagster.images.sources import Candidate, DocumentSource, DraftInfo, FeedSource, ImageSource, SearchSource
from poflow_dagster.images.store import (
    DbEtagCache, KnownUrl, StoredImage, UrlOutcome, image_root, stored_images, write_image_file,
)
from poflow_dagster.images.validate import ImageRejected, ValidImage, env_int, validate_image
from poflow_dagster.images.writes import Writes
from poflow_dagster.store.db import Database
from poflow_dagster.store.drafts import DraftRecord, drafts_for_upload
from poflow_dagster.store.parse_cache import cached_parse
from poflow_dagster.store.schema import DraftImage, Merchant, ProductDraft, Upload
from poflow_dagster.store.types import utcnow

__all__ = ["REVALIDATE_HOURS_ENV", "AttachFn", "ImageRun", "ImageSettings", "collect_images"]

log = logging.getLogger(__name__)

REVALIDATE_HOURS_ENV = "POFLOW_IMAGE_REVALIDATE_HOURS"
#: Fetch failures worth trying again on the next run; any other refusal of a URL is remembered like an image.
RETRYABLE_REASONS = frozenset({"timeout", "connection_error", "internal_error", "http_429", "storage_error",
                               "stored_image_missing"})

#: Drafts whose candidate rows one transaction records.
_DRAFTS_PER_TRANSACTION = 500

FOUND, FETCHED_STATE, DUPLICATE, REJECTED, ATTACHED, SKIPPED, ATTACH_FAILED = (
    "found", "fetched", "duplicate", "rejected", "attached", "skipped", "failed")


class AttachFn(Protocol):
    """Attaches one stored image to a draft's product; returns an object with ``outcome`` (attached | already |
    product_gone | skipped | failed), ``media_gid`` and ``reason`` (``status``/``note`` are read as well)."""

    def __call__(self, draft: DraftRecord, image: StoredImage) -> Any: ...


EventFn = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class ImageSettings:
    """How one image stage run fetches, how long a fetched URL is trusted, the search provider, the image root."""

    fetch: FetchSettings = field(default_factory=FetchSettings)
    revalidate_after: dt.timedelta = dt.timedelta(hours=168)
    search: ImageSearchProvider | None = None
    root: Path | None = None
    #: Results landing within this many seconds of a batch's first (at most ``batch_size``) share one transaction.
    batch_window: float = 0.15
    batch_size: int = 50

    @classmethod
    def from_env(cls, **fetch_overrides: object) -> ImageSettings:
        fetch = FetchSettings.from_env(**fetch_overrides)
        return cls(fetch=fetch, revalidate_after=dt.timedelta(hours=env_int(REVALIDATE_HOURS_ENV, 168)),
                   search=search_from_env(fetch))


@dataclass
class ImageRun:
    """What one run did: counts, refusals by reason, notes and phase timings (seconds)."""

    drafts: int = 0
    found: int = 0
    fetched: int = 0
    reused: int = 0
    not_modified: int = 0
    deduplicated: int = 0
    already_duplicate: int = 0
    attached: int = 0
    already_attached: int = 0
    attach_failed: int = 0
    skipped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    sources_s: float = 0.0
    fetch_s: float = 0.0
    attach_s: float = 0.0
    transactions: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("rejected", "notes")}
        data.update(rejected=dict(self.rejected), rejected_total=sum(self.rejected.values()), notes=list(self.notes))
        for name in ("sources_s", "fetch_s", "attach_s"):
            data[name] = round(data[name], 3)
        return data


@dataclass
class _Ready:
    key: str
    image: Facts
    state: str


@dataclass
class _DraftWork:
    record: DraftRecord
    rows: dict[str, DraftImage]  # candidate key -> row as read (state, sha256, media_gid)
    waiting: set[str] = field(default_factory=set)  # candidate keys still being fetched
    ready: list[_Ready] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    kept: list[_Ready] = field(default_factory=list)  # de-duplicated, to attach once committed
    gone: bool = False
    done: bool = False
    skipped: bool = False


class _Cache:
    """The run's ETag cache: answers from what ``image_urls`` held when the run started (no query per request);
    outcomes are recorded by the run's own thread."""

    def __init__(self, known: dict[str, KnownUrl]) -> None:
        self._known = known

    def get(self, url: str) -> tuple[str, str] | None:
        known = self._known.get(url)
        return (known.etag, known.sha256) if known and known.etag and known.sha256 else None

    def put(self, url: str, etag: str, sha256: str) -> None:
        pass


def collect_images(
    db: Database, upload_id: str, *, settings: ImageSettings | None = None, attach: AttachFn | None = None,
    on_event: EventFn | None = None,
) -> ImageRun:
    """Find, fetch, store, de-duplicate and (given ``attach``) attach the images of this upload's drafts."""
    return _Collector(db, upload_id, settings or ImageSettings.from_env(), attach, on_event).run()


class _Collector:
    def __init__(self, db: Database, upload_id: str, settings: ImageSettings, attach: AttachFn | None,
                 on_event: EventFn | None) -> None:
        self.db, self.upload_id, self.settings = db, upload_id, settings
        self.attach, self.on_event = attach, on_event
        self.root = settings.root or image_root()
        self.result = ImageRun()
        self.merchant_id, self.feed_location = self._upload_context()
        self.vendor: str | None = None
        self.cache = DbEtagCache(db, self.merchant_id) if self.merchant_id else None
        self.writes = Writes(db, self.merchant_id or "", self.root)
        self.stored: dict[str, StoredImage] = {}  # the merchant's images this run knows, by sha256
        self.works: dict[int, _DraftWork] = {}  # the current source's drafts
        self.finished: list[_DraftWork] = []  # de-duplicated, to attach once their batch is committed

    # -- context -----------------------------------------------------------------------------------------------

    def _upload_context(self) -> tuple[str | None, str | None]:
        """The upload's merchant and that merchant's image feed (``None, None``: no such upload)."""
        with self.db.session() as session:
            upload = session.scalar(select(Upload).where(Upload.id == self.upload_id))
            if upload is None:
                return None, None
            merchant = session.get(Merchant, upload.merchant_id)
            return upload.merchant_id, merchant.image_feed_url if merchant else None

    def _load_feed(self) -> ImageSource:
        """The merchant's feed, read once per run (only when some draft gets that far)."""
        if not self.feed_location:
            return FeedSource(None)
        try:
            return FeedSource(load_feed(self.feed_location, self.settings.fetch, self.root / "feeds"))
        except PoflowError as exc:
            return FeedSource(None, [f"image feed not used: {exc}"])
        except Exception as exc:  # noqa: BLE001 - a broken feed never stops the other sources
            log.exception("image feed %s could not be read", self.feed_location)
            return FeedSource(None, [f"image feed not used: {type(exc).__name__}: {exc}"])

    # -- the run -------------------------------------------------------------------------------------------------

    def run(self) -> ImageRun:
        if self.merchant_id is None:
            self.result.notes.append(f"upload {self.upload_id} not found")
            return self.result
        drafts = drafts_for_upload(self.db, self.upload_id)
        self.result.drafts = len(drafts)
        parsed = cached_parse(self.db, self.upload_id)
        self.vendor = parsed.supplier_name if parsed else None
        sources: list[Callable[[], ImageSource]] = [
            lambda: DocumentSource(parsed), self._load_feed, lambda: SearchSource(self.settings.search)]
        pending = drafts
        for make_source in sources:
            if not pending:
                break
            started = time.monotonic()
            source = make_source()
            works = self._gather(source, pending)
            self.result.sources_s += time.monotonic() - started
            self.result.notes.extend(source.notes)
            self._process(works)
            pending = [d for d in pending if (w := works.get(d.id)) is None or (not w.gone and not w.done)]
        self.result.transactions = self.writes.transactions
        return self.result

    # -- candidates ----------------------------------------------------------------------------------------------

    def _gather(self, source: ImageSource, drafts: list[DraftRecord]) -> dict[int, _DraftWork]:
        wanted: list[tuple[DraftRecord, list[Candidate]]] = []
        for draft in drafts:
            info = DraftInfo(draft.id, draft.sku, draft.title, self.vendor)
            candidates = list({c.key: c for c in source.candidates(info)}.values())
            if candidates:
                wanted.append((draft, candidates))
        works: dict[int, _DraftWork] = {}
        for start in range(0, len(wanted), _DRAFTS_PER_TRANSACTION):
            chunk = wanted[start:start + _DRAFTS_PER_TRANSACTION]
            rows = self._ensure_rows(source.name, chunk)
            for draft, candidates in chunk:
                work = _DraftWork(draft, rows.get(draft.id) or {}, candidates=candidates, gone=draft.id not in rows)
                if work.gone:
                    self._skip_gone(work)
                works[draft.id] = work
        return works

    def _ensure_rows(
        self, source: str, wanted: list[tuple[DraftRecord, list[Candidate]]],
    ) -> dict[int, dict[str, DraftImage]]:
        """These drafts' rows for their candidates, inserting the new ones (``found``), in one transaction; by draft
        id, leaving out the drafts that are gone."""
        new: list[tuple[DraftRecord, Candidate]] = []

        def work(session: Session) -> dict[int, dict[str, DraftImage]]:
            new.clear()
            ids = [draft.id for draft, _ in wanted]
            present = set(session.scalars(select(ProductDraft.id).where(ProductDraft.id.in_(ids))))
            existing: dict[int, dict[str, DraftImage]] = {draft_id: {} for draft_id in present}
            for row in session.scalars(select(DraftImage).where(DraftImage.draft_id.in_(sorted(present)))):
                existing[row.draft_id][row.candidate_key] = row
            for draft, candidates in wanted:
                if draft.id in present:
                    self._add_rows(session, draft, source, candidates, existing[draft.id], new)
            session.flush()
            return {draft.id: {c.key: existing[draft.id][c.key] for c in candidates}
                    for draft, candidates in wanted if draft.id in present}

        rows = self.db.retry_on_conflict(work)
        self.result.found += len(new)
        for draft, candidate in new:
            self._event("found", draft, candidate.key, url=candidate.url, source=source)
        return rows

    def _add_rows(self, session: Session, draft: DraftRecord, source: str, candidates: list[Candidate],
                  existing: dict[str, DraftImage], new: list[tuple[DraftRecord, Candidate]]) -> None:
        position = len(existing)
        for candidate in candidates:
            if candidate.key not in existing:
                row = DraftImage(draft_id=draft.id, merchant_id=self.merchant_id, upload_id=self.upload_id,
                                 candidate_key=candidate.key, source=source, url=candidate.url,
                                 position=position, state=FOUND)
                session.add(row)
                existing[candidate.key] = row
                new.append((draft, candidate))
                position += 1

    def _draft_exists(self, draft_id: int) -> bool:
        with self.db.session() as session:
            return session.get(ProductDraft, draft_id) is not None

    # -- fetching ------------------------------------------------------------------------------------------------

    def _process(self, works: dict[int, _DraftWork]) -> None:
        started = time.monotonic()
        attach_before = self.result.attach_s
        self.works = works
        by_url: dict[str, list[tuple[_DraftWork, str]]] = {}
        self._know_attached(works)
        for work in works.values():
            if not work.gone:
                self._prepare(work, by_url)
        known = self.cache.known(list(by_url)) if self.cache and by_url else {}
        on_disk = stored_images(self.db, self.merchant_id, {k.sha256 for k in known.values() if k.sha256},
                                self.root)
        self.stored.update(on_disk)
        requests = []
        for url, waiters in by_url.items():
            if self._reuse(url, known.get(url), waiters, on_disk):
                continue
            if url in known and known[url].sha256 and known[url].sha256 not in on_disk:
                del known[url]  # its file is gone: fetch it in full, no If-None-Match
            requests.append(ImageRequest(url, key=url))
        fetching = _Fetching(requests, known, self.settings) if requests else None
        for work in works.values():
            self._maybe_finish(work)
        self._commit()  # what needed no request is attached while the fetches run
        if fetching is not None:
            self._drain(fetching, by_url)
        self.result.fetch_s += time.monotonic() - started - (self.result.attach_s - attach_before)

    def _know_attached(self, works: dict[int, _DraftWork]) -> None:
        """The stored images of every row already ``attached`` (one query for all drafts)."""
        attached = {row.sha256 for work in works.values() if not work.gone for row in work.rows.values()
                    if row.state == ATTACHED and row.sha256 and row.sha256 not in self.stored}
        if attached:
            self.stored.update(stored_images(self.db, self.merchant_id, attached, self.root, require_file=False))

    def _prepare(self, work: _DraftWork, by_url: dict[str, list[tuple[_DraftWork, str]]]) -> None:
        """Queue the draft's URLs; take its embedded images and images already attached directly."""
        for candidate in work.candidates:
            row = work.rows[candidate.key]
            if row.state == ATTACHED and row.sha256 in self.stored:
                work.ready.append(_Ready(candidate.key, Facts.of(self.stored[row.sha256]), ATTACHED))
            elif candidate.data is not None:
                self._take_embedded(work, candidate)
            elif candidate.url:
                work.waiting.add(candidate.key)
                by_url.setdefault(candidate.url, []).append((work, candidate.key))

    def _take_embedded(self, work: _DraftWork, candidate: Candidate) -> None:
        try:
            image = validate_image(candidate.data or b"", max_pixels=self.settings.fetch.max_pixels,
                                   max_bytes=self.settings.fetch.max_bytes, min_side=self.settings.fetch.min_side)
        except ImageRejected as exc:
            self._reject(work, candidate.key, exc.reason, exc.detail)
            return
        failure = self._keep(image, candidate.data or b"", f"embedded image of draft {work.record.id}")
        if failure is not None:
            self._reject(work, candidate.key, "storage_error", failure)
            return
        self._accept(work, candidate.key, Facts.of(image))

    def _keep(self, image: ValidImage, data: bytes, what: str) -> str | None:
        """Write the image's file and queue its row; why not (``None``: kept)."""
        try:
            write_image_file(image, data, self.root)
        except Exception as exc:  # noqa: BLE001 - a storage problem fails this image, not the run
            log.exception("storing the image from %s failed", what)
            return f"{type(exc).__name__}: {exc}"
        self.writes.add_image(image)
        return None

    def _reuse(self, url: str, known: KnownUrl | None, waiters: list[tuple[_DraftWork, str]],
               on_disk: dict[str, StoredImage]) -> bool:
        """Answer a URL from what the merchant fetched before, without a request, when that is recent enough."""
        if known is None or utcnow() - known.fetched_at >= self.settings.revalidate_after:
            return False
        if known.sha256 is None:
            if known.status != FAILED or known.reason in RETRYABLE_REASONS or (known.reason or "").startswith("http_5"):
                return False
            for work, key in waiters:
                self._reject(work, key, known.reason or "failed", "refused when fetched before")
            return True
        image = on_disk.get(known.sha256)
        if image is None:
            return False
        self.result.reused += 1
        for work, key in waiters:
            self._accept(work, key, Facts.of(image))
        return True

    def _drain(self, fetching: _Fetching, by_url: dict[str, list[tuple[_DraftWork, str]]]) -> None:
        """Land the fetcher's results batch by batch as they come; answer what it never answered."""
        seen: set[str] = set()
        try:
            while batch := fetching.next_batch(self.settings.batch_size, self.settings.batch_window):
                seen.update(result.request.url for result in batch)
                self._land(batch, by_url)
        finally:
            fetching.close()  # an error here: the fetcher's later results are dropped, never waited for
        missing = [request for request in fetching.requests if request.url not in seen]
        if missing:  # fetch_images itself failed: these never got an answer
            detail = f"{type(fetching.errors[0]).__name__}: {fetching.errors[0]}" if fetching.errors else "no answer"
            self._land([FetchResult(request=request, status=FAILED, reason="internal_error", detail=detail)
                        for request in missing], by_url)

    def _land(self, batch: list[FetchResult], by_url: dict[str, list[tuple[_DraftWork, str]]]) -> None:
        """One batch of results: files written, rows queued, drafts finished; then committed and attached."""
        unchanged = {r.sha256 for r in batch if r.status == NOT_MODIFIED and r.sha256}
        on_disk = stored_images(self.db, self.merchant_id, unchanged, self.root) if unchanged else {}
        self.stored.update(on_disk)
        for result in batch:
            outcome = self._store_result(result, on_disk)
            waiters = by_url.get(result.request.url, [])
            for work, key in waiters:
                if isinstance(outcome, Facts):
                    self._accept(work, key, outcome)
                else:
                    self._reject(work, key, outcome.reason or "failed", outcome.detail)
            for work, _ in waiters:
                self._maybe_finish(work)
        self._commit()

    def _store_result(self, result: FetchResult, on_disk: dict[str, StoredImage]) -> Facts | FetchResult:
        """The image of a fetched (or not modified) URL, or the failed result to reject it with; the URL's outcome
        is queued either way."""
        url = result.request.url
        if result.status == FETCHED and result.image is not None and result.data is not None:
            self.result.fetched += 1
            failure = self._keep(result.image, result.data, url)
            if failure is None:
                self.writes.add_url(UrlOutcome(url, FETCHED, etag=result.etag, sha256=result.image.sha256))
                return Facts.of(result.image)
            result = FetchResult(request=result.request, status=FAILED, reason="storage_error", detail=failure)
        elif result.status == NOT_MODIFIED and result.sha256:
            self.result.not_modified += 1
            image = on_disk.get(result.sha256)
            if image is not None:
                self.writes.add_url(UrlOutcome(url, NOT_MODIFIED, etag=result.etag, sha256=result.sha256))
                return Facts.of(image)
            result = FetchResult(request=result.request, status=FAILED, reason="stored_image_missing",
                                 detail="304 for an image whose file is gone (fetched in full next run)")
        self.writes.add_url(UrlOutcome(url, FAILED, reason=result.reason))
        return result

    # -- committing ----------------------------------------------------------------------------------------------

    def _commit(self) -> None:
        """Commit what is queued; then attach the drafts that were finished, and commit their outcomes."""
        self._flush()
        finished, self.finished = self.finished, []
        for work in finished:
            for ready in work.kept:
                if work.gone:
                    break
                self._attach(work, ready)
        self._flush()

    def _flush(self) -> None:
        flushed = self.writes.flush()
        self.stored.update(flushed.images)
        for draft_id in sorted(flushed.gone):
            if draft_id in self.works:
                self._skip_gone(self.works[draft_id])
        for callback in flushed.then:
            callback()

    # -- states --------------------------------------------------------------------------------------------------

    def _set(self, work: _DraftWork, key: str, then: Callable[[], None] | None = None, **values: Any) -> bool:
        """Change one candidate row (written with its batch; ``then`` runs once that is committed). False when
        nothing changed or the draft is known to be gone."""
        row = work.rows[key]
        if work.gone or all(getattr(row, name) == value for name, value in values.items()):
            return False
        for name, value in values.items():
            setattr(row, name, value)
        self.writes.touch(work.record.id, row, then)
        return True

    def _skip_gone(self, work: _DraftWork) -> None:
        if not work.skipped:
            work.gone = work.done = work.skipped = True
            self.result.skipped += 1
            note = f"draft {work.record.id} ({work.record.sku}) was deleted while its images ran: skipped"
            self.result.notes.append(note)
            self._event("skipped", work.record, None, reason="draft_deleted", note=note)

    def _accept(self, work: _DraftWork, key: str, image: Facts) -> None:
        work.waiting.discard(key)
        row = work.rows[key]
        if row.state in (ATTACHED, DUPLICATE) and row.sha256 == image.sha256:
            work.ready.append(_Ready(key, image, row.state))  # as an earlier run left it
            return
        known = self.stored.get(image.sha256)
        image_id = known.id if known else (row.image_id if row.sha256 == image.sha256 else None)

        def fetched() -> None:
            self._event("fetched", work.record, key, url=row.url, sha256=image.sha256,
                        width=image.width, height=image.height)

        self._set(work, key, fetched, state=FETCHED_STATE, sha256=image.sha256, image_id=image_id, reason=None,
                  duplicate_of=None)
        if not work.gone:
            work.ready.append(_Ready(key, image, FETCHED_STATE))

    def _reject(self, work: _DraftWork, key: str, reason: str, detail: str) -> None:
        work.waiting.discard(key)
        self.result.rejected[reason] += 1
        row = work.rows[key]
        if row.state == REJECTED and (row.reason or "").split(":")[0] == reason:
            return  # refused for the same reason before: its first detail stays
        url = row.url
        self._set(work, key, lambda: self._event("rejected", work.record, key, url=url, reason=reason),
                  state=REJECTED, reason=f"{reason}: {detail}"[:1000] if detail else reason)

    def _maybe_finish(self, work: _DraftWork) -> None:
        """Once all of a draft's candidates are in: de-duplicate; what is kept is attached once committed."""
        if work.done or work.gone or work.waiting:
            return
        work.done = bool(work.ready)  # no usable image: the next source gets its turn
        if not work.ready:
            return
        verdict = choose([r.image for r in work.ready])
        for index, sha in verdict.duplicate_of.items():
            self._mark_duplicate(work, work.ready[index], sha)
        kept = {work.ready[i].image.sha256: work.ready[i] for i in verdict.kept}  # one attach per image
        for ready in kept.values():
            if ready.state == DUPLICATE:  # an earlier run's duplicate is the one to keep now
                self._set(work, ready.key, state=FETCHED_STATE, duplicate_of=None, reason=None)
                ready.state = FETCHED_STATE
        work.kept = list(kept.values())
        self.finished.append(work)

    def _mark_duplicate(self, work: _DraftWork, ready: _Ready, sha: str) -> None:
        if ready.state == ATTACHED:
            return
        if ready.state == DUPLICATE and work.rows[ready.key].duplicate_of == sha:
            self.result.already_duplicate += 1  # an earlier run found it: nothing to write
            return

        def counted() -> None:
            self.result.deduplicated += 1
            self._event("duplicate", work.record, ready.key, sha256=ready.image.sha256, duplicate_of=sha)

        self._set(work, ready.key, counted, state=DUPLICATE, duplicate_of=sha,
                  reason=f"same picture as {sha[:12]} (kept: larger)")
        ready.state = DUPLICATE

    def _attach(self, work: _DraftWork, ready: _Ready) -> None:
        if ready.state == ATTACHED:
            self.result.already_attached += 1
            return
        if self.attach is None:
            return
        image = self.stored.get(ready.image.sha256)
        if image is None:  # not expected: every kept image was stored with its batch
            self._record_attach(work, ready, "failed", None, "stored_image_missing")
            return
        if not self._draft_exists(work.record.id):
            self._skip_gone(work)
            return
        started = time.monotonic()
        try:
            answer = self.attach(work.record, image)
            outcome = str(_field(answer, "outcome", "status", "state") or "failed").lower()
            media_gid, reason = _field(answer, "media_gid"), _field(answer, "reason", "note", "error")
        except Exception as exc:  # noqa: BLE001 - one image's attach never stops the run
            log.exception("attaching image %s to draft %s failed", image.sha256, work.record.id)
            outcome, media_gid, reason = "failed", None, f"attach_error: {type(exc).__name__}: {exc}"
        finally:
            self.result.attach_s += time.monotonic() - started
        self._record_attach(work, ready, outcome, media_gid, reason)

    def _record_attach(self, work: _DraftWork, ready: _Ready, outcome: str, media_gid: str | None,
                       reason: str | None) -> None:
        record, sha = work.record, ready.image.sha256
        if outcome in ("attached", "already"):
            def attached() -> None:
                self.result.attached += 1
                self._event("attached", record, ready.key, sha256=sha, media_gid=media_gid)

            if self._set(work, ready.key, attached, state=ATTACHED, media_gid=media_gid, attached_at=utcnow(),
                         reason=None):
                ready.state = ATTACHED
        elif outcome in ("product_gone", "skipped"):
            note = f"draft {record.id} ({record.sku}): image not attached ({reason or outcome})"

            def skipped() -> None:
                self.result.skipped += 1
                self.result.notes.append(note)
                self._event("skipped", record, ready.key, reason=reason or outcome, note=note)

            self._set(work, ready.key, skipped, state=SKIPPED, reason=reason or outcome)
        else:
            self._set(work, ready.key, lambda: self._count_failed(record, ready.key, reason or outcome),
                      state=ATTACH_FAILED, reason=reason or outcome)

    def _count_failed(self, record: DraftRecord, key: str, reason: str) -> None:
        self.result.attach_failed += 1
        self._event("failed", record, key, reason=reason)

    def _event(self, kind: str, draft: DraftRecord, key: str | None, **payload: Any) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, {"upload_id": self.upload_id, "draft_id": draft.id, "sku": draft.sku,
                                 "candidate": key, **payload})
        except Exception:  # noqa: BLE001 - a progress listener never breaks the run
            log.exception("image event listener failed")


class _Fetching:
    """``fetch_images`` in a background thread, its results handed over through a bounded queue (a collector that
    falls behind holds the fetchers back rather than letting bodies pile up)."""

    def __init__(self, requests: list[ImageRequest], known: dict[str, KnownUrl], settings: ImageSettings) -> None:
        self.requests = requests
        self.errors: list[BaseException] = []
        self._results: queue.Queue[FetchResult | None] = queue.Queue(maxsize=max(2 * settings.batch_size, 20))
        self._done = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(_Cache(known), settings.fetch),
                                        name="poflow-image-fetch", daemon=True)
        self._thread.start()

    def _run(self, cache: _Cache, settings: FetchSettings) -> None:
        try:
            fetch_images(self.requests, cache=cache, on_result=self._deliver, settings=settings, keep_data=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the collector, in its own thread
            self.errors.append(exc)
        finally:
            self._deliver(None)

    def _deliver(self, result: FetchResult | None) -> None:
        """Hand a result over, waiting while the queue is full, unless the collector has stopped taking them."""
        while not self._closed.is_set():
            try:
                self._results.put(result, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """The collector takes no more results (idempotent)."""
        self._closed.set()

    def next_batch(self, size: int, window: float) -> list[FetchResult]:
        """The next results: waits for one, then takes what lands within ``window`` seconds (at most ``size``);
        empty once the fetcher is done."""
        if self._done:
            return []
        first = self._results.get()
        if first is None:
            return self._finish([])
        batch, until = [first], time.monotonic() + window
        while len(batch) < size:
            try:
                item = self._results.get(timeout=max(until - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if item is None:
                return self._finish(batch)
            batch.append(item)
        return batch

    def _finish(self, batch: list[FetchResult]) -> list[FetchResult]:
        self._done = True
        self._thread.join()
        return batch


def _field(answer: Any, *names: str) -> Any:
    for name in names:
        value = answer.get(name) if isinstance(answer, dict) else getattr(answer, name, None)
        if value is not None:
            return getattr(value, "value", value)
    return None

