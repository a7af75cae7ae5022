"""The image stage's core: find, fetch, validate, store, de-duplicate and attach one upload's product images.

:func:`collect_images` works through the upload's drafts one source at a time (:mod:`.sources`: document, then
feed, then search; a draft moves on only when a source gave it no usable image). For each source:

1. candidates are recorded in ``draft_images`` (state ``found``; a re-run finds the same rows);
2. a URL the merchant already fetched (``image_urls``) whose image is stored is reused WITHOUT a request while it
   is younger than ``POFLOW_IMAGE_REVALIDATE_HOURS`` (168); so is a URL that was refused for good (404, not an
   image...). Older ones are re-validated with ``If-None-Match``. Embedded bytes are validated directly;
3. the rest are fetched concurrently (:func:`~poflow_dagster.images.fetch.fetch_images`, each URL once per run
   however many drafts name it) in a background thread, while this thread stores each result as it lands;
4. as soon as all of one draft's candidates are in, its images are de-duplicated (:mod:`.dedup`) and each kept
   image is handed to ``attach`` (progressive: early drafts attach while others still download). An image
   already ``attached`` is never attached again.

Nothing here raises for an image-level problem: refusals are ``rejected`` with their reason, attach failures
``failed``; a draft deleted meanwhile is ``skipped`` with a note. All database writes happen in the caller's thread.
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

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.images.dedup import choose
from poflow_dagster.images.feed import load_feed
from poflow_dagster.images.fetch import (
    FAILED, FETCHED, NOT_MODIFIED, FetchResult, FetchSettings, ImageRequest, fetch_images,
)
from poflow_dagster.images.search import ImageSearchProvider, search_from_env
from poflow_dagster.images.sources import Candidate, DocumentSource, DraftInfo, FeedSource, ImageSource, SearchSource
from poflow_dagster.images.store import DbEtagCache, KnownUrl, StoredImage, image_root, store_image, stored_images
from poflow_dagster.images.validate import ImageRejected, env_int, validate_image
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
    attached: int = 0
    already_attached: int = 0
    attach_failed: int = 0
    skipped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    sources_s: float = 0.0
    fetch_s: float = 0.0
    attach_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("rejected", "notes")}
        data.update(rejected=dict(self.rejected), rejected_total=sum(self.rejected.values()), notes=list(self.notes))
        for name in ("sources_s", "fetch_s", "attach_s"):
            data[name] = round(data[name], 3)
        return data


@dataclass
class _Ready:
    key: str
    image: StoredImage
    state: str


@dataclass
class _DraftWork:
    record: DraftRecord
    rows: dict[str, DraftImage]  # candidate key -> row as read (state, sha256, media_gid)
    waiting: set[str] = field(default_factory=set)  # candidate keys still being fetched
    ready: list[_Ready] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
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
        return self.result

    # -- candidates ----------------------------------------------------------------------------------------------

    def _gather(self, source: ImageSource, drafts: list[DraftRecord]) -> dict[int, _DraftWork]:
        works: dict[int, _DraftWork] = {}
        for draft in drafts:
            info = DraftInfo(draft.id, draft.sku, draft.title, self.vendor)
            candidates = list({c.key: c for c in source.candidates(info)}.values())
            if not candidates:
                continue
            rows = self._ensure_rows(draft, source.name, candidates)
            work = _DraftWork(draft, rows or {}, candidates=candidates, gone=rows is None)
            if work.gone:
                self._skip_gone(work)
            works[draft.id] = work
        return works

    def _ensure_rows(
        self, draft: DraftRecord, source: str, candidates: list[Candidate],
    ) -> dict[str, DraftImage] | None:
        """The draft's rows for these candidates, inserting the new ones (``found``); None when the draft is gone."""
        new: list[Candidate] = []

        def work(session) -> dict[str, DraftImage]:
            new.clear()
            existing = {row.candidate_key: row for row in session.scalars(
                select(DraftImage).where(DraftImage.draft_id == draft.id))}
            position = len(existing)
            for candidate in candidates:
                if candidate.key not in existing:
                    row = DraftImage(draft_id=draft.id, merchant_id=self.merchant_id, upload_id=self.upload_id,
                                     candidate_key=candidate.key, source=source, url=candidate.url,
                                     position=position, state=FOUND)
                    session.add(row)
                    existing[candidate.key] = row
                    new.append(candidate)
                    position += 1
            session.flush()
            return {c.key: existing[c.key] for c in candidates}

        try:
            rows = self.db.retry_on_conflict(work)
        except IntegrityError:
            if self._draft_exists(draft.id):
                raise
            return None
        self.result.found += len(new)
        for candidate in new:
            self._event("found", draft, candidate.key, url=candidate.url, source=source)
        return rows

    def _draft_exists(self, draft_id: int) -> bool:
        with self.db.session() as session:
            return session.get(ProductDraft, draft_id) is not None

    # -- fetching ------------------------------------------------------------------------------------------------

    def _process(self, works: dict[int, _DraftWork]) -> None:
        started = time.monotonic()
        attach_before = self.result.attach_s
        by_url: dict[str, list[tuple[_DraftWork, str]]] = {}
        for work in works.values():
            if not work.gone:
                self._prepare(work, by_url)
        known = self.cache.known(list(by_url)) if self.cache and by_url else {}
        requests = []
        for url, waiters in by_url.items():
            if self._reuse(url, known.get(url), waiters):
                continue
            if url in known and known[url].sha256 and not self._stored(known[url].sha256):
                del known[url]  # its file is gone: fetch it in full, no If-None-Match
            requests.append(ImageRequest(url, key=url))
        for work in works.values():
            self._maybe_finish(work)
        if requests:
            self._fetch(requests, known, by_url)
        self.result.fetch_s += time.monotonic() - started - (self.result.attach_s - attach_before)

    def _prepare(self, work: _DraftWork, by_url: dict[str, list[tuple[_DraftWork, str]]]) -> None:
        """Queue the draft's URLs; take its embedded images and images already attached directly."""
        attached = {row.sha256 for row in work.rows.values() if row.state == ATTACHED and row.sha256}
        stored = stored_images(self.db, self.merchant_id, attached, self.root, require_file=False) if attached else {}
        for candidate in work.candidates:
            row = work.rows[candidate.key]
            if row.state == ATTACHED and row.sha256 in stored:
                work.ready.append(_Ready(candidate.key, stored[row.sha256], ATTACHED))
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
        stored = store_image(self.db, self.merchant_id, image, candidate.data or b"", self.root)
        self._accept(work, candidate.key, stored)

    def _reuse(self, url: str, known: KnownUrl | None, waiters: list[tuple[_DraftWork, str]]) -> bool:
        """Answer a URL from what the merchant fetched before, without a request, when that is recent enough."""
        if known is None or utcnow() - known.fetched_at >= self.settings.revalidate_after:
            return False
        if known.sha256 is None:
            if known.status != FAILED or known.reason in RETRYABLE_REASONS or (known.reason or "").startswith("http_5"):
                return False
            for work, key in waiters:
                self._reject(work, key, known.reason or "failed", "refused when fetched before")
            return True
        image = self._stored(known.sha256)
        if image is None:
            return False
        self.result.reused += 1
        for work, key in waiters:
            self._accept(work, key, image)
        return True

    def _stored(self, sha256: str) -> StoredImage | None:
        return stored_images(self.db, self.merchant_id, {sha256}, self.root).get(sha256)

    def _fetch(self, requests: list[ImageRequest], known: dict[str, KnownUrl],
               by_url: dict[str, list[tuple[_DraftWork, str]]]) -> None:
        """Fetch in a background thread; store each result here as it lands and finish drafts as they complete."""
        results: queue.Queue[FetchResult | None] = queue.Queue()
        errors: list[BaseException] = []

        def background() -> None:
            try:
                fetch_images(requests, cache=_Cache(known), on_result=results.put, settings=self.settings.fetch)
            except BaseException as exc:  # noqa: BLE001 - reported below, in the caller's thread
                errors.append(exc)
            finally:
                results.put(None)

        thread = threading.Thread(target=background, name="poflow-image-fetch", daemon=True)
        thread.start()
        seen: set[str] = set()
        while (result := results.get()) is not None:
            seen.add(result.request.url)
            self._land(result, by_url.get(result.request.url, []))
        thread.join()
        for request in requests:
            if request.url not in seen:  # fetch_images itself failed: these never got an answer
                detail = f"{type(errors[0]).__name__}: {errors[0]}" if errors else "no answer"
                self._land(FetchResult(request=request, status=FAILED, reason="internal_error", detail=detail),
                           by_url.get(request.url, []))

    def _land(self, result: FetchResult, waiters: list[tuple[_DraftWork, str]]) -> None:
        try:
            outcome = self._store_result(result)
        except Exception as exc:  # noqa: BLE001 - a storage problem fails this image, not the run
            log.exception("storing the image from %s failed", result.request.url)
            outcome = FetchResult(request=result.request, status=FAILED, reason="storage_error",
                                  detail=f"{type(exc).__name__}: {exc}")
        for work, key in waiters:
            if isinstance(outcome, StoredImage):
                self._accept(work, key, outcome)
            else:
                self._reject(work, key, outcome.reason or "failed", outcome.detail)
            self._maybe_finish(work)

    def _store_result(self, result: FetchResult) -> StoredImage | FetchResult:
        """The stored image of a fetched (or not modified) URL, or the failed result to reject it with."""
        url = result.request.url
        if result.status == FETCHED and result.image is not None and result.data is not None:
            self.result.fetched += 1
            stored = store_image(self.db, self.merchant_id, result.image, result.data, self.root)
            self.cache.record(url, status=FETCHED, etag=result.etag, sha256=stored.sha256)
            return stored
        if result.status == NOT_MODIFIED and result.sha256:
            self.result.not_modified += 1
            image = stored_images(self.db, self.merchant_id, {result.sha256}, self.root).get(result.sha256)
            if image is not None:
                self.cache.record(url, status=NOT_MODIFIED, etag=result.etag, sha256=result.sha256)
                return image
            result = FetchResult(request=result.request, status=FAILED, reason="stored_image_missing",
                                 detail="304 for an image whose file is gone (fetched in full next run)")
        self.cache.record(url, status=FAILED, reason=result.reason)
        return result

    # -- states --------------------------------------------------------------------------------------------------

    def _set(self, work: _DraftWork, key: str, **values: Any) -> bool:
        """Update one candidate row; False (and the draft is skipped) when the draft was deleted meanwhile."""
        if work.gone:
            return False
        with self.db.session() as session:
            changed = session.execute(
                update(DraftImage).where(DraftImage.draft_id == work.record.id, DraftImage.candidate_key == key)
                .values(**values, updated_at=utcnow())).rowcount
        if not changed:
            self._skip_gone(work)
            return False
        return True

    def _skip_gone(self, work: _DraftWork) -> None:
        if not work.skipped:
            work.gone = work.done = work.skipped = True
            self.result.skipped += 1
            note = f"draft {work.record.id} ({work.record.sku}) was deleted while its images ran: skipped"
            self.result.notes.append(note)
            self._event("skipped", work.record, None, reason="draft_deleted", note=note)

    def _accept(self, work: _DraftWork, key: str, image: StoredImage) -> None:
        work.waiting.discard(key)
        row = work.rows[key]
        if row.state == ATTACHED and row.sha256 == image.sha256:
            work.ready.append(_Ready(key, image, ATTACHED))
            return
        if self._set(work, key, state=FETCHED_STATE, sha256=image.sha256, image_id=image.id, reason=None,
                     duplicate_of=None):
            work.ready.append(_Ready(key, image, FETCHED_STATE))
            self._event("fetched", work.record, key, url=row.url, sha256=image.sha256,
                        width=image.width, height=image.height)

    def _reject(self, work: _DraftWork, key: str, reason: str, detail: str) -> None:
        work.waiting.discard(key)
        self.result.rejected[reason] += 1
        if self._set(work, key, state=REJECTED, reason=f"{reason}: {detail}"[:1000] if detail else reason):
            self._event("rejected", work.record, key, url=work.rows[key].url, reason=reason)

    def _maybe_finish(self, work: _DraftWork) -> None:
        """Once all of a draft's candidates are in: de-duplicate, then attach what is kept."""
        if work.done or work.gone or work.waiting:
            return
        work.done = bool(work.ready)  # no usable image: the next source gets its turn
        if not work.ready:
            return
        verdict = choose([r.image for r in work.ready])
        for index, sha in verdict.duplicate_of.items():
            ready = work.ready[index]
            if ready.state != ATTACHED and self._set(work, ready.key, state=DUPLICATE, duplicate_of=sha,
                                                     reason=f"same picture as {sha[:12]} (kept: larger)"):
                self.result.deduplicated += 1
                self._event("duplicate", work.record, ready.key, sha256=ready.image.sha256, duplicate_of=sha)
        kept = {work.ready[i].image.sha256: work.ready[i] for i in verdict.kept}  # one attach per image
        for ready in kept.values():
            if work.gone:
                return
            self._attach(work, ready)

    def _attach(self, work: _DraftWork, ready: _Ready) -> None:
        if ready.state == ATTACHED:
            self.result.already_attached += 1
            return
        if self.attach is None:
            return
        if not self._draft_exists(work.record.id):
            self._skip_gone(work)
            return
        started = time.monotonic()
        try:
            answer = self.attach(work.record, ready.image)
            outcome = str(_field(answer, "outcome", "status", "state") or "failed").lower()
            media_gid, reason = _field(answer, "media_gid"), _field(answer, "reason", "note", "error")
        except Exception as exc:  # noqa: BLE001 - one image's attach never stops the run
            log.exception("attaching image %s to draft %s failed", ready.image.sha256, work.record.id)
            outcome, media_gid, reason = "failed", None, f"attach_error: {type(exc).__name__}: {exc}"
        finally:
            self.result.attach_s += time.monotonic() - started
        self._record_attach(work, ready, outcome, media_gid, reason)

    def _record_attach(self, work: _DraftWork, ready: _Ready, outcome: str, media_gid: str | None,
                       reason: str | None) -> None:
        if outcome in ("attached", "already"):
            if self._set(work, ready.key, state=ATTACHED, media_gid=media_gid, attached_at=utcnow(), reason=None):
                ready.state = ATTACHED
                self.result.attached += 1
                self._event("attached", work.record, ready.key, sha256=ready.image.sha256, media_gid=media_gid)
        elif outcome in ("product_gone", "skipped"):
            note = f"draft {work.record.id} ({work.record.sku}): image not attached ({reason or outcome})"
            if self._set(work, ready.key, state=SKIPPED, reason=reason or outcome):
                self.result.skipped += 1
                self.result.notes.append(note)
                self._event("skipped", work.record, ready.key, reason=reason or outcome, note=note)
        else:
            if self._set(work, ready.key, state=ATTACH_FAILED, reason=reason or outcome):
                self.result.attach_failed += 1
                self._event("failed", work.record, ready.key, reason=reason or outcome)

    def _event(self, kind: str, draft: DraftRecord, key: str | None, **payload: Any) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, {"upload_id": self.upload_id, "draft_id": draft.id, "sku": draft.sku,
                                 "candidate": key, **payload})
        except Exception:  # noqa: BLE001 - a progress listener never breaks the run
            log.exception("image event listener failed")


def _field(answer: Any, *names: str) -> Any:
    for name in names:
        value = answer.get(name) if isinstance(answer, dict) else getattr(answer, name, None)
        if value is not None:
            return getattr(value, "value", value)
    return None

