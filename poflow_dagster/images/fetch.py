"""Fetch many images at once, safely: address policy, limits, retries, ETags, validation.

:func:`fetch_images` runs in the caller's thread (a Dagster op is synchronous) and fans out over a pool of worker
threads: at most ``concurrency`` requests in flight overall and ``per_host`` per host name (a worker only takes a
request whose host has a free slot, so a slow host never starves the others). Each result is handed to
``on_result`` as soon as it is known (calls are serialized, from worker threads), so images can be attached
progressively; the returned list is in request order.

Per request: every hop is checked by :mod:`~poflow_dagster.images.net_policy` and the connection goes to the very
address that was checked (``Host`` header and TLS SNI carry the name; no second DNS lookup). Each host name gets its
own ``httpx.Client`` so a TLS connection verified for one name is never reused for another name on the same
address. Redirects are followed by hand (at most 5). ``If-None-Match`` is sent when the :class:`EtagCache` knows
the URL (304 -> ``not_modified`` with the cached sha256). Bodies are streamed under a byte limit (an announced
``Content-Length`` over it is refused before reading), with connect/read timeouts and a total deadline per image.
Timeouts, connection errors, 429 (``Retry-After`` honoured up to a cap) and 5xx are retried with exponential
backoff and jitter; other 4xx are not. The bytes are then checked by :func:`validate_image`.

Every outcome is a :class:`FetchResult`; failures carry a stable ``reason`` (``http_404``, ``timeout``,
``connection_error``, ``tls_error``, ``too_large``, ``blocked_address``, ``redirect_blocked``, ``too_many_redirects``,
``not_an_image``, ``decode_error``, ``too_many_pixels``, ``too_small``, ...). Nothing here raises for a bad image.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from poflow_dagster.images.net_policy import AllowList, BlockedUrl, PinnedTarget, Resolver, check_url
from poflow_dagster.images.validate import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    MAX_BYTES_ENV,
    MAX_PIXELS_ENV,
    ImageRejected,
    ValidImage,
    env_int,
    validate_image,
)

__all__ = [
    "CONCURRENCY_ENV",
    "PER_HOST_ENV",
    "EtagCache",
    "FetchResult",
    "FetchSettings",
    "ImageRequest",
    "MemoryEtagCache",
    "fetch_images",
]

log = logging.getLogger(__name__)

CONCURRENCY_ENV = "POFLOW_IMAGE_CONCURRENCY"
PER_HOST_ENV = "POFLOW_IMAGE_PER_HOST"
MAX_REDIRECTS = 5
USER_AGENT = "poflow-image-fetcher/0.1 (+product images for Shopify purchase orders)"
ACCEPT = "image/webp,image/png,image/jpeg,image/gif;q=0.9,*/*;q=0.1"
_REDIRECTS = {301, 302, 303, 307, 308}

FETCHED = "fetched"
NOT_MODIFIED = "not_modified"
FAILED = "failed"


@dataclass(frozen=True)
class ImageRequest:
    """One image to fetch; ``key`` is the caller's id (draft, SKU, ...) echoed back in the result."""

    url: str
    key: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """The outcome of one request: ``fetched`` (with bytes and image), ``not_modified`` or ``failed`` (reason)."""

    request: ImageRequest
    status: str
    reason: str | None = None
    detail: str = ""
    final_url: str | None = None
    http_status: int | None = None
    attempts: int = 0
    redirects: int = 0
    etag: str | None = None
    sha256: str | None = None
    image: ValidImage | None = None
    data: bytes | None = field(default=None, repr=False)
    elapsed_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status in (FETCHED, NOT_MODIFIED)


class EtagCache(Protocol):
    """Remembers, per URL, the ETag and sha256 of the last image fetched from it."""

    def get(self, url: str) -> tuple[str, str] | None: ...

    def put(self, url: str, etag: str, sha256: str) -> None: ...


class MemoryEtagCache:
    """An in-process :class:`EtagCache` (thread-safe)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> tuple[str, str] | None:
        with self._lock:
            return self._entries.get(url)

    def put(self, url: str, etag: str, sha256: str) -> None:
        with self._lock:
            self._entries[url] = (etag, sha256)


@dataclass(frozen=True)
class FetchSettings:
    """Limits for one :func:`fetch_images` call (``from_env`` fills what the caller left out)."""

    concurrency: int = 10
    per_host: int = 4
    timeout: float = 10.0  # connect / read / write, per operation
    deadline: float = 60.0  # total per image, retries and redirects included
    retries: int = 3
    backoff: float = 0.5  # first retry waits about this long (x2 each time, with jitter)
    retry_after_cap: float = 30.0
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE
    user_agent: str = USER_AGENT
    allow: AllowList = field(default_factory=AllowList)
    resolver: Resolver | None = None
    verify: ssl.SSLContext | bool = True  # TLS verification (tests pass a context trusting their own CA)

    @classmethod
    def from_env(cls, **overrides: object) -> FetchSettings:
        """Settings from ``POFLOW_IMAGE_*`` env vars; keyword overrides that are not None win."""
        values: dict[str, object] = {
            "concurrency": env_int(CONCURRENCY_ENV, 10),
            "per_host": env_int(PER_HOST_ENV, 4),
            "max_bytes": env_int(MAX_BYTES_ENV, DEFAULT_MAX_BYTES),
            "max_pixels": env_int(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS),
            "allow": AllowList.from_env(),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


# -- outcomes inside one request ---------------------------------------------------------------------------------


class _Failed(Exception):
    def __init__(self, reason: str, detail: str, http_status: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.http_status = reason, detail, http_status
        self.attempts = 1


class _Retryable(_Failed):
    def __init__(self, reason: str, detail: str, http_status: int | None = None, wait: float | None = None) -> None:
        super().__init__(reason, detail, http_status)
        self.wait = wait


@dataclass
class _Body:
    status: int
    final_url: str
    redirects: int
    etag: str | None = None
    data: bytes | None = None


# -- HTTP ----------------------------------------------------------------------------------------------------------


class _Clients:
    """One ``httpx.Client`` per (scheme, host name): pooled connections never cross names."""

    def __init__(self, settings: FetchSettings) -> None:
        self._settings = settings
        self._clients: dict[tuple[str, str, int], httpx.Client] = {}
        self._lock = threading.Lock()

    def for_target(self, target: PinnedTarget) -> httpx.Client:
        key = (target.scheme, target.host, target.port)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = httpx.Client(
                    follow_redirects=False,
                    trust_env=False,  # a proxy from the environment would do its own DNS lookup
                    verify=self._settings.verify,
                    headers={"User-Agent": self._settings.user_agent, "Accept": ACCEPT},
                    limits=httpx.Limits(max_connections=self._settings.per_host, max_keepalive_connections=2),
                )
            return self._clients[key]

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def _retry_after(value: str | None, cap: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), cap)


def _timeout(settings: FetchSettings, deadline: float) -> httpx.Timeout:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Failed("timeout", f"total deadline of {settings.deadline:g}s passed")
    return httpx.Timeout(min(settings.timeout, remaining))


def _read_body(response: httpx.Response, settings: FetchSettings, deadline: float) -> bytes:
    """The (decoded) body, refusing more than ``max_bytes`` and stopping at the deadline."""
    announced = response.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > settings.max_bytes:
        raise _Failed("too_large", f"Content-Length {announced} is over the limit of {settings.max_bytes} bytes")
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > settings.max_bytes:
            raise _Failed("too_large", f"body passed the limit of {settings.max_bytes} bytes")
        if time.monotonic() > deadline:
            raise _Failed("timeout", f"total deadline of {settings.deadline:g}s passed while reading")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_hop(url: str, hop: int, settings: FetchSettings) -> PinnedTarget:
    try:
        return check_url(url, allow=settings.allow, resolver=settings.resolver)
    except BlockedUrl as exc:
        if hop == 0:
            raise _Failed(exc.reason, exc.detail) from None
        raise _Failed("redirect_blocked", f"redirect to {url}: {exc.reason}: {exc.detail}") from None


def _one_hop(
    clients: _Clients, target: PinnedTarget, headers: dict[str, str], attempt: int, settings: FetchSettings,
    deadline: float,
) -> _Body:
    """One GET to the pinned address: a redirect (``final_url`` = Location), a 304, or a body."""
    address = target.addresses[(attempt - 1) % len(target.addresses)]  # a retry tries the next checked address
    sni = target.sni_hostname()
    request_headers = {**headers, "Host": target.host_header}
    extensions = {"sni_hostname": sni} if sni else {}
    client = clients.for_target(target)
    with client.stream(
        "GET", target.connect_url(address), headers=request_headers, extensions=extensions,
        timeout=_timeout(settings, deadline),
    ) as response:
        code = response.status_code
        if code in _REDIRECTS:
            location = response.headers.get("location")
            if not location:
                raise _Failed(f"http_{code}", "redirect without a Location", code)
            return _Body(code, urljoin(target.url, location), 0)
        if code == 304:
            return _Body(code, target.url, 0, etag=response.headers.get("etag"))
        if code == 429 or code >= 500:
            wait = _retry_after(response.headers.get("retry-after"), settings.retry_after_cap)
            raise _Retryable(f"http_{code}", f"server answered {code}", code, wait)
        if code != 200:
            raise _Failed(f"http_{code}", f"server answered {code}", code)
        data = _read_body(response, settings, deadline)
        return _Body(code, target.url, 0, etag=response.headers.get("etag"), data=data)


def _tls_failure(exc: BaseException) -> str | None:
    """The SSL error behind a transport error (a bad certificate is not worth retrying), if any."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _get_chain(
    clients: _Clients, url: str, headers: dict[str, str], attempt: int, settings: FetchSettings, deadline: float,
) -> _Body:
    """Follow redirects by hand (each hop re-checked), at most :data:`MAX_REDIRECTS`."""
    for hop in range(MAX_REDIRECTS + 1):
        target = _check_hop(url, hop, settings)
        try:
            body = _one_hop(clients, target, headers, attempt, settings, deadline)
        except httpx.TimeoutException as exc:
            raise _Retryable("timeout", f"{type(exc).__name__} from {target.host}") from None
        except httpx.TransportError as exc:
            if _tls_failure(exc):
                raise _Failed("tls_error", f"TLS with {target.host} failed: {_tls_failure(exc)}") from None
            raise _Retryable("connection_error", f"{type(exc).__name__}: {exc}") from None
        if body.status not in _REDIRECTS:
            body.redirects = hop
            return body
        url = body.final_url
    raise _Failed("too_many_redirects", f"more than {MAX_REDIRECTS} redirects")


# -- one request, with retries -------------------------------------------------------------------------------------


def _backoff(settings: FetchSettings, attempt: int) -> float:
    return min(settings.backoff * 2 ** (attempt - 1) * (0.5 + random.random()), 30.0)


def _download(
    clients: _Clients, request: ImageRequest, headers: dict[str, str], settings: FetchSettings, deadline: float,
) -> tuple[_Body, int]:
    """The final response (body or 304) and the attempt count; retryable failures are retried."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return _get_chain(clients, request.url, headers, attempt, settings, deadline), attempt
        except _Retryable as exc:
            wait = exc.wait if exc.wait is not None else _backoff(settings, attempt)
            if attempt > settings.retries or time.monotonic() + wait >= deadline:
                exc.detail = f"{exc.detail} (after {attempt} attempts)"
                exc.attempts = attempt
                raise
            time.sleep(wait)
        except _Failed as exc:
            exc.attempts = attempt
            raise


def _fetch_one(
    clients: _Clients, request: ImageRequest, settings: FetchSettings, cache: EtagCache | None,
) -> FetchResult:
    started = time.monotonic()
    deadline = started + settings.deadline
    cached = cache.get(request.url) if cache is not None else None
    headers = {"If-None-Match": cached[0]} if cached else {}
    try:
        body, attempts = _download(clients, request, headers, settings, deadline)
    except _Failed as exc:
        return FetchResult(request=request, status=FAILED, reason=exc.reason, detail=exc.detail,
                           http_status=exc.http_status, attempts=exc.attempts, elapsed_ms=_ms(started))
    common = dict(request=request, final_url=body.final_url, http_status=body.status, attempts=attempts,
                  redirects=body.redirects)
    if body.status == 304:
        if not cached:
            return FetchResult(**common, status=FAILED, reason="unexpected_304", detail="304 without If-None-Match",
                               elapsed_ms=_ms(started))
        return FetchResult(**common, status=NOT_MODIFIED, etag=cached[0], sha256=cached[1], elapsed_ms=_ms(started))
    try:
        image = validate_image(body.data or b"", max_pixels=settings.max_pixels, max_bytes=settings.max_bytes,
                               min_side=settings.min_side)
    except ImageRejected as exc:
        return FetchResult(**common, status=FAILED, reason=exc.reason, detail=exc.detail, elapsed_ms=_ms(started))
    if cache is not None and body.etag:
        cache.put(request.url, body.etag, image.sha256)
    return FetchResult(**common, status=FETCHED, etag=body.etag, sha256=image.sha256, image=image, data=body.data,
                       elapsed_ms=_ms(started))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# -- many requests ---------------------------------------------------------------------------------------------------


def _host_key(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


class _Scheduler:
    """Hands out requests so that no host has more than ``per_host`` in flight."""

    def __init__(self, requests: Sequence[ImageRequest], per_host: int) -> None:
        self._pending = deque((i, r, _host_key(r.url)) for i, r in enumerate(requests))
        self._active: Counter[str] = Counter()
        self._per_host = per_host
        self._cond = threading.Condition()

    def take(self) -> tuple[int, ImageRequest, str] | None:
        with self._cond:
            while self._pending:
                for position, item in enumerate(self._pending):
                    if self._active[item[2]] < self._per_host:
                        del self._pending[position]
                        self._active[item[2]] += 1
                        return item
                self._cond.wait()
            return None

    def release(self, host: str) -> None:
        with self._cond:
            self._active[host] -= 1
            self._cond.notify_all()

    def __iter__(self) -> Iterator[tuple[int, ImageRequest, str]]:
        while (item := self.take()) is not None:
            yield item


def fetch_images(
    requests: Sequence[ImageRequest],
    *,
    concurrency: int | None = None,
    per_host: int | None = None,
    timeout: float = 10.0,
    deadline: float = 60.0,
    retries: int = 3,
    cache: EtagCache | None = None,
    on_result: Callable[[FetchResult], None] | None = None,
    settings: FetchSettings | None = None,
    keep_data: bool = True,
) -> list[FetchResult]:
    """Fetch and validate every request; results in request order, each also passed to ``on_result`` as it lands.

    ``keep_data=False`` (for a caller that takes the bytes in ``on_result``, as ``collect_images`` does): the
    returned results carry no ``data``, so memory holds only the bodies in flight, not every body of the run.

    ``concurrency`` / ``per_host`` default to ``POFLOW_IMAGE_CONCURRENCY`` (10) / ``POFLOW_IMAGE_PER_HOST`` (4).
    ``settings`` (see :class:`FetchSettings`) sets everything at once; explicit ``concurrency`` / ``per_host``
    still win over it. An exception raised by ``on_result`` is logged and does not stop the other fetches.
    """
    settings = settings or FetchSettings.from_env(timeout=timeout, deadline=deadline, retries=retries)
    overrides = {k: v for k, v in {"concurrency": concurrency, "per_host": per_host}.items() if v is not None}
    settings = replace(settings, **overrides)
    if not requests:
        return []
    results: list[FetchResult | None] = [None] * len(requests)
    scheduler = _Scheduler(requests, settings.per_host)
    clients = _Clients(settings)
    deliver = threading.Lock()

    def work() -> None:
        for index, request, host in scheduler:
            try:
                result = _safe_fetch(clients, request, settings, cache)
            finally:
                scheduler.release(host)
            results[index] = result if keep_data else replace(result, data=None)
            if on_result is not None:
                with deliver:
                    _call(on_result, result)

    try:
        with ThreadPoolExecutor(max_workers=min(settings.concurrency, len(requests)),
                                thread_name_prefix="poflow-image") as pool:
            for future in [pool.submit(work) for _ in range(min(settings.concurrency, len(requests)))]:
                future.result()
    finally:
        clients.close()
    return [r for r in results if r is not None]


def _safe_fetch(
    clients: _Clients, request: ImageRequest, settings: FetchSettings, cache: EtagCache | None,
) -> FetchResult:
    """:func:`_fetch_one`, but a bug becomes a failed result (``internal_error``), never a failed PO."""
    try:
        return _fetch_one(clients, request, settings, cache)
    except Exception as exc:  # noqa: BLE001 - an image must never fail the caller
        log.exception("image fetch of %s failed unexpectedly", request.url)
        detail = f"{type(exc).__name__}: {exc}"
        return FetchResult(request=request, status=FAILED, reason="internal_error", detail=detail)


def _call(on_result: Callable[[FetchResult], None], result: FetchResult) -> None:
    try:
        on_result(result)
    except Exception:  # noqa: BLE001 - one failing callback must not stop the other images
        log.exception("on_result callback failed for %s", result.request.url)
