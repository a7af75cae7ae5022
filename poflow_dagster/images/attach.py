"""Attach stored images to a Shopify product, idempotently (issue 11, item 4).

``attach_images(client, product_gid, images)`` lists the product's media once, recognises what is already
there (the media GID we recorded, or a file named ``poflow-<sha256[:24]>.<ext>``: see
:mod:`poflow_dagster.shopify.media`), stages the rest in one ``stagedUploadsCreate``, adds them in one
``productUpdate(media:)`` per batch, and reads their processing status back. Outcomes per image:

* ``attached`` (new media GID), ``already`` (the existing media GID: nothing sent for it);
* ``product_gone``: the product no longer exists (skipped, with a note; never an error);
* ``failed`` with a reason code: ``unreadable`` (bytes not readable or not the recorded sha256/size),
  ``too_large``, ``upload_failed``, ``media_limit`` (250 per product), ``rejected`` (another user error),
  ``media_error:<MediaErrorCode>`` (Shopify could not process the image; the failed media GID is given and it
  is not uploaded again on a re-run).

Crash safety: ``productUpdate`` is never resent blindly. When its answer is lost, the product's media are
listed again and only the images still missing are sent (up to :data:`CREATE_ROUNDS` times), so a retry
never attaches an image twice. Transport failures that persist and auth/throttle errors still raise
(:class:`~poflow_dagster.shopify.client.ShopifyError`); Shopify user errors and media errors never do.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from poflow_dagster.shopify.client import ShopifyClient, ShopifyUnreachableError, ShopifyUserError
from poflow_dagster.shopify.media import (
    MAX_IMAGE_BYTES,
    MAX_MEDIA_PER_PRODUCT,
    MediaInfo,
    StagedImage,
    add_product_media,
    list_product_media,
    media_by_ids,
    stage_images,
)

__all__ = ["AttachResult", "ImageToAttach", "attach_image", "attach_images", "media_filename"]

#: How many images go into one ``productUpdate(media:)``.
BATCH_SIZE = 10
#: ``productUpdate`` tries per batch when answers get lost (each after a fresh listing).
CREATE_ROUNDS = 3
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}
_PENDING = ("UPLOADED", "PROCESSING")


@dataclass(frozen=True)
class ImageToAttach:
    """One stored image for one product: its bytes (a path or a callable), identity and alt text."""

    sha256: str
    mime_type: str
    byte_size: int
    source: Path | str | Callable[[], bytes]
    alt: str
    known_media_gid: str | None = None

    def read(self) -> bytes:
        if isinstance(self.source, (str, Path)):
            return Path(self.source).read_bytes()
        return self.source()


@dataclass(frozen=True)
class AttachResult:
    """What happened to one image: ``attached``, ``already``, ``product_gone`` or ``failed``."""

    sha256: str
    outcome: str
    media_gid: str | None = None
    status: str | None = None  # the media's status when last read (READY, PROCESSING, ...)
    reason: str | None = None  # failed: a stable code
    note: str = ""


@dataclass
class _Batch:
    """The images still to send for one product, with what we know so far."""

    product_gid: str
    existing: list[MediaInfo]
    results: dict[str, AttachResult] = field(default_factory=dict)


def media_filename(image: ImageToAttach) -> str:
    """The deterministic file name an image is uploaded under: ``poflow-<sha256[:24]>.<ext>``."""
    ext = _EXTENSIONS.get(image.mime_type.lower(), "img")
    return f"poflow-{image.sha256.lower()[:24]}.{ext}"


def _key(image: ImageToAttach) -> str:
    return f"poflow-{image.sha256.lower()[:24]}"


def attach_image(client: ShopifyClient, product_gid: str, image: ImageToAttach, **options: float) -> AttachResult:
    """Attach one image (see :func:`attach_images`)."""
    return attach_images(client, product_gid, [image], **options)[0]


def attach_images(
    client: ShopifyClient,
    product_gid: str,
    images: Sequence[ImageToAttach],
    *,
    wait_ready_s: float = 10.0,
    poll_every_s: float = 0.5,
) -> list[AttachResult]:
    """Attach several images of one product; one result per image, in order.

    Requests: one media listing, one ``stagedUploadsCreate``, one ``productUpdate`` per 10 new images, and
    status reads (``nodes``) until every new media left ``UPLOADED``/``PROCESSING`` or ``wait_ready_s``
    passed (those still processing are reported ``attached`` with their status).
    """
    unique = list({image.sha256.lower(): image for image in images}.values())
    existing = list_product_media(client, product_gid)
    if existing is None:
        return [_gone(image) for image in images]
    batch = _Batch(product_gid, existing)
    todo = [image for image in unique if not _recognised(batch, image)]
    ready = _read_all(batch, todo)
    for start in range(0, len(ready), BATCH_SIZE):
        _send(client, batch, ready[start:start + BATCH_SIZE])
    _await_processing(client, batch, wait_ready_s, poll_every_s)
    return [batch.results[image.sha256.lower()] for image in images]


def _gone(image: ImageToAttach) -> AttachResult:
    return AttachResult(image.sha256, "product_gone", note="the product no longer exists on Shopify; skipped")


def _recognised(batch: _Batch, image: ImageToAttach) -> bool:
    """Record ``already`` (or the media's failure) when the product has this image; ``True`` if so."""
    by_gid = {m.gid: m for m in batch.existing}
    found = by_gid.get(image.known_media_gid or "") or next(
        (m for m in batch.existing if m.poflow_key == _key(image)), None
    )
    if found is None:
        return False
    batch.results[image.sha256.lower()] = _result_for(image, found, "already")
    return True


def _result_for(image: ImageToAttach, media: MediaInfo, outcome: str) -> AttachResult:
    if media.status == "FAILED":
        return AttachResult(image.sha256, "failed", media.gid, media.status,
                            f"media_error:{media.error_code or 'UNKNOWN'}", media.error_message or "")
    return AttachResult(image.sha256, outcome, media.gid, media.status)


def _fail(batch: _Batch, image: ImageToAttach, reason: str, note: str) -> None:
    batch.results[image.sha256.lower()] = AttachResult(image.sha256, "failed", reason=reason, note=note)


def _read_all(batch: _Batch, images: list[ImageToAttach]) -> list[tuple[ImageToAttach, bytes]]:
    """The images whose bytes are readable and match their recorded sha256 and size."""
    ready = []
    for image in images:
        if image.byte_size > MAX_IMAGE_BYTES:
            _fail(batch, image, "too_large", f"{image.byte_size} bytes; Shopify takes at most {MAX_IMAGE_BYTES}")
            continue
        try:
            data = image.read()
        except OSError as exc:
            _fail(batch, image, "unreadable", f"cannot read the stored image ({type(exc).__name__})")
            continue
        if hashlib.sha256(data).hexdigest() != image.sha256.lower() or len(data) != image.byte_size:
            _fail(batch, image, "unreadable", "the stored bytes do not match the recorded sha256 or size")
            continue
        ready.append((image, data))
    return ready


def _send(client: ShopifyClient, batch: _Batch, items: list[tuple[ImageToAttach, bytes]]) -> None:
    """Stage and add one batch, re-listing after a lost answer so nothing is added twice."""
    room = MAX_MEDIA_PER_PRODUCT - len(batch.existing)
    for image, _data in items[max(room, 0):]:
        _fail(batch, image, "media_limit", f"the product already has {len(batch.existing)} media (at most 250)")
    items = items[:max(room, 0)]
    sources = _stage(client, batch, items)
    for _round in range(CREATE_ROUNDS):
        if not sources:
            return
        answered = True
        try:
            add_product_media(client, batch.product_gid,
                              [{"originalSource": src, "alt": image.alt} for image, src in sources])
        except ShopifyUserError as exc:
            _user_refused(batch, [image for image, _ in sources], exc)
            return
        except ShopifyUnreachableError:
            answered = False  # the answer was lost or never came: see what the product holds now
        listing = list_product_media(client, batch.product_gid)
        if listing is None:
            for image, _src in sources:
                batch.results[image.sha256.lower()] = _gone(image)
            return
        batch.existing = listing
        sources = [(image, src) for image, src in sources if not _found_new(batch, image)]
        if answered:
            break  # Shopify took them: never send again, even if a listing lags behind
    for image, _src in sources:
        _fail(batch, image, "unconfirmed" if answered else "unreachable",
              "Shopify did not confirm the new media; a re-run checks again before sending")


def _found_new(batch: _Batch, image: ImageToAttach) -> bool:
    found = next((m for m in batch.existing if m.poflow_key == _key(image)), None)
    if found is not None:
        batch.results[image.sha256.lower()] = _result_for(image, found, "attached")
    return found is not None


def _stage(client: ShopifyClient, batch: _Batch, items: list[tuple[ImageToAttach, bytes]]) -> list[tuple[ImageToAttach, str]]:
    try:
        staged: list[str | Exception] = stage_images(
            client, [StagedImage(media_filename(i), i.mime_type, d) for i, d in items]
        )
    except ShopifyUserError as exc:  # e.g. a MIME type Shopify does not stage
        staged = [exc] * len(items)
    sources = []
    for (image, _data), outcome in zip(items, staged):
        if isinstance(outcome, Exception):
            _fail(batch, image, "upload_failed", str(outcome))
        else:
            sources.append((image, outcome))
    return sources


def _user_refused(batch: _Batch, images: list[ImageToAttach], error: ShopifyUserError) -> None:
    messages = " ".join(str(e.get("message", "")) for e in error.user_errors).lower()
    for image in images:
        if "does not exist" in messages:
            batch.results[image.sha256.lower()] = _gone(image)
        elif "limit" in messages:
            _fail(batch, image, "media_limit", error.message)
        else:
            _fail(batch, image, "rejected", error.message)


def _await_processing(client: ShopifyClient, batch: _Batch, wait_s: float, every_s: float) -> None:
    """Read new media's status until none is pending or ``wait_s`` is spent; failures become ``failed``."""
    deadline = time.monotonic() + wait_s
    while True:
        pending = {r.media_gid: sha for sha, r in batch.results.items()
                   if r.outcome == "attached" and r.status in _PENDING and r.media_gid}
        if not pending:
            return
        found = media_by_ids(client, list(pending))
        for gid, sha in pending.items():
            media = found.get(gid)
            previous = batch.results[sha]
            if media is None:
                batch.results[sha] = AttachResult(previous.sha256, "failed", gid, None, "media_gone",
                                                  "the media disappeared while processing")
            else:
                batch.results[sha] = _result_for_sha(previous.sha256, media)
        if time.monotonic() + every_s > deadline:
            return
        if any(r.outcome == "attached" and r.status in _PENDING for r in batch.results.values()):
            time.sleep(every_s)


def _result_for_sha(sha256: str, media: MediaInfo) -> AttachResult:
    if media.status == "FAILED":
        return AttachResult(sha256, "failed", media.gid, media.status,
                            f"media_error:{media.error_code or 'UNKNOWN'}", media.error_message or "")
    return AttachResult(sha256, "attached", media.gid, media.status)
