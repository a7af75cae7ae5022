"""``GET /api/events``: the merchant's progress events as server-sent events.

Each event is ``id: <event id>``, ``event: progress``, ``data: <ProgressEvent JSON>``; the stream opens
with ``retry: 2000`` and a comment, and sends a heartbeat comment after 15 s without events. Written with
FastAPI's own ``StreamingResponse``: events one read of the bus returns go out as one chunk, each event's JSON
exactly as published (measured: ``benchmarks/sse_load.py``). A client resumes where it
left off with the ``Last-Event-ID`` header (browsers send it on their own when they reconnect) or
``?last_event_id=``; without either it gets the events from now on. Events come from
``ProgressBus.aread_merchant_payloads`` (the merchant's Redis stream: one blocking ``XREAD`` per client, a
waiting stream holds no thread, only a pooled Redis connection), or — when no Redis is configured — from
``TableEventHub``: one poller per merchant reads the ``progress_events`` table and fans each batch out to the
merchant's streams (a query per merchant every ``POLL_SECONDS``, however many clients listen).

A resume id older than the oldest event the bus still keeps (the stream was trimmed, the table pruned) would
silently skip events: the stream then first sends ``event: reset`` with ``data: {"reason": "history_trimmed",
"oldest_id": …}`` (the client should reload the uploads list) and continues from the oldest kept event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse

from poflow_dagster.api.auth import request_token
from poflow_dagster.api.errors import ApiError
from poflow_dagster.store.progress_bus import POLL_SECONDS
from poflow_dagster.store.tokens import verify_token

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15
RETRY_MS = 2000
#: A live stream re-checks its token this often (a revoked token ends it; the reconnect gets a 401).
TOKEN_RECHECK_SECONDS = 30.0
#: Event ids of the Redis bus (stream ids, or ``0`` for "everything kept") and of the database bus (row ids).
_REDIS_EVENT_ID = re.compile(r"^(0|\d{1,20}-\d{1,20})$")
_DB_EVENT_ID = re.compile(r"^\d{1,20}$")
#: Batches a table stream may have waiting before it falls back to reading the table itself (a slow client).
SUBSCRIBER_BACKLOG = 256
#: Rows one table read returns at most.
TABLE_BATCH = 500


def resume_position(request: Request) -> str | None:
    """Where the client wants to resume: ``Last-Event-ID`` header, else ``?last_event_id=``; ``None`` = from now.

    The id must be one the active bus sends (``1700000000000-0`` or ``0`` with Redis, ``123`` without), else a
    400 ``invalid_last_event_id`` (an id of the other kind would make every read of the bus fail)."""
    value = (request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "").strip()
    if not value:
        return None
    pattern = _REDIS_EVENT_ID if request.app.state.settings.redis_url else _DB_EVENT_ID
    if not pattern.match(value):
        raise ApiError(400, "invalid_last_event_id", f"{value[:60]!r} is not an event id this server sent")
    return value


def event_stream(request: Request, merchant_id: str) -> StreamingResponse:
    """The SSE response for ``merchant_id`` (already authenticated)."""
    after = resume_position(request)
    start = after
    if start is None:
        # Fixed before the response (and its headers, on which EventSource fires ``open``) goes out: every event
        # published after the page saw the stream open arrives, none falls between ``open`` and the first read.
        # (Called in FastAPI's thread pool: the endpoint is a plain ``def``.)
        try:
            start = request.app.state.bus().last_event_id(merchant_id)
        except Exception as error:
            log.warning("progress bus position unavailable: %s", error)
    return StreamingResponse(
        _frames(request, merchant_id, after, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
    )


def _frame(event_id: str, payload: str) -> str:
    # A payload is one line of JSON (the bus writes compact JSON); SSE needs no escaping for it.
    return f"id: {event_id}\nevent: progress\ndata: {payload}\n\n"


def reset_frame(oldest_id: str) -> bytes:
    """``event: reset``: events after the client's resume id are gone; reload the list, then follow the stream.
    No ``id:`` line, so the client's ``Last-Event-ID`` stays until the next event arrives."""
    data = json.dumps({"reason": "history_trimmed", "oldest_id": oldest_id}, separators=(",", ":"))
    return f"event: reset\ndata: {data}\n\n".encode()


async def _frames(request: Request, merchant_id: str, after: str | None, start: str | None) -> AsyncIterator[bytes]:
    """SSE frames: everything one read of the bus returned goes out as one chunk (a busy merchant's events are
    batched, not written one by one), each event's JSON sent on exactly as published — no parse and re-encode
    per client. A read that waited ``HEARTBEAT_SECONDS`` for nothing sends a heartbeat comment."""
    state = request.app.state
    bus, limiter = state.bus(), state.stream_limiter
    token = request_token(request, allow_query=True)
    position = start  # the client's resume id, else the newest event id when the request arrived
    yield f"retry: {RETRY_MS}\n: poflow progress events for {merchant_id}\n\n".encode()
    if after is not None:
        try:
            oldest = await anyio.to_thread.run_sync(bus.history_gap, merchant_id, after, limiter=limiter)
        except Exception as error:
            log.warning("progress bus history unavailable: %s", error)
            oldest = None
        if oldest is not None:
            yield reset_frame(oldest)
            position = "0"  # from the oldest kept event
    if not state.settings.redis_url:
        async for chunk in _table_frames(request, merchant_id, position, token):
            yield chunk
        return
    guard = _StreamGuard(request, token, merchant_id)
    while True:
        try:
            if position is None:  # "from now": the newest event's id, so no event falls between two reads
                position = await anyio.to_thread.run_sync(bus.last_event_id, merchant_id, limiter=limiter)
            batch = await bus.aread_merchant_payloads(merchant_id, position, block_ms=HEARTBEAT_SECONDS * 1000)
        except Exception as error:  # the bus is down: say so, wait, try again (the client keeps its place)
            log.warning("progress bus read failed: %s", error)
            yield b": progress bus unavailable; retrying\n\n"
            await anyio.sleep(1.0)
            continue
        if batch:
            position = batch[-1][0]
            yield "".join(_frame(event_id, payload) for event_id, payload in batch).encode()
        else:
            yield b": ping\n\n"
        ending = await guard.ending()
        if ending is not None:
            if ending:
                yield ending
            return


class _StreamGuard:
    """When a stream must end: its client left (nothing more to send), or — checked every
    ``TOKEN_RECHECK_SECONDS`` — its token was revoked (a last ``revoked`` event)."""

    def __init__(self, request: Request, token: str | None, merchant_id: str) -> None:
        self.request, self.token, self.merchant_id = request, token, merchant_id
        self.checked = time.monotonic()

    async def ending(self) -> bytes | None:
        """``None`` while the stream goes on; else the last bytes to send (empty when the client left)."""
        if await self.request.is_disconnected():
            return b""
        if time.monotonic() - self.checked > TOKEN_RECHECK_SECONDS:
            self.checked = time.monotonic()
            if await _revoked(self.request, self.token, self.merchant_id):
                return b"event: revoked\ndata: {}\n: token revoked\n\n"
        return None


async def _revoked(request: Request, token: str | None, merchant_id: str) -> bool:
    state = request.app.state
    return await anyio.to_thread.run_sync(verify_token, state.db, token, limiter=state.stream_limiter) != merchant_id


async def _table_frames(request: Request, merchant_id: str, position: str | None, token: str | None
                        ) -> AsyncIterator[bytes]:
    """The database bus's frames: rows after ``position`` read by this stream until it has caught up, then the
    batches of the merchant's shared poller (``TableEventHub``), each row exactly once, in id order."""
    state = request.app.state
    bus, limiter, hub = state.bus(), state.stream_limiter, state.table_events
    subscription = hub.subscribe(merchant_id)
    guard = _StreamGuard(request, token, merchant_id)
    try:
        caught_up = False
        while True:
            try:
                if not caught_up or subscription.overflowed:
                    # The poller's position is fixed first: every row it has not read yet reaches the queue, and
                    # this stream reads all rows before that itself (a slow client that overflowed does it again).
                    await subscription.poller.ready.wait()
                    subscription.restart()
                    if position is None:
                        position = await anyio.to_thread.run_sync(bus.last_event_id, merchant_id, limiter=limiter)
                    while True:
                        rows = await anyio.to_thread.run_sync(bus.table_payloads, merchant_id, int(position),
                                                              TABLE_BATCH, limiter=limiter)
                        if rows:
                            position = rows[-1][0]
                            yield "".join(_frame(event_id, payload) for event_id, payload in rows).encode()
                        if len(rows) < TABLE_BATCH:
                            break
                    caught_up = True
            except Exception as error:  # the database is down: say so, wait, try again (the client keeps its place)
                log.warning("progress table read failed: %s", error)
                yield b": progress bus unavailable; retrying\n\n"
                await anyio.sleep(1.0)
                continue
            try:
                batch = await asyncio.wait_for(subscription.queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                yield b": ping\n\n"
            else:
                last = int(position) if position is not None else -1
                fresh = [(event_id, payload) for event_id, payload in batch if int(event_id) > last]
                if fresh:
                    position = fresh[-1][0]
                    yield "".join(_frame(event_id, payload) for event_id, payload in fresh).encode()
            ending = await guard.ending()
            if ending is not None:
                if ending:
                    yield ending
                return
    finally:
        hub.unsubscribe(subscription)


class _Subscription:
    """One event stream's place at its merchant's poller: the batches it has not sent yet."""

    def __init__(self, poller: _MerchantPoller) -> None:
        self.poller = poller
        self.queue: asyncio.Queue[list[tuple[str, str]]] = asyncio.Queue(maxsize=SUBSCRIBER_BACKLOG)
        #: Set when a batch did not fit: the stream reads the table itself to catch up, then follows again.
        self.overflowed = False

    def offer(self, batch: list[tuple[str, str]]) -> None:
        try:
            self.queue.put_nowait(batch)
        except asyncio.QueueFull:
            self.overflowed = True

    def restart(self) -> None:
        """Forget the waiting batches (the stream is about to read the table itself)."""
        self.overflowed = False
        while not self.queue.empty():
            self.queue.get_nowait()


class _MerchantPoller:
    """Reads one merchant's new ``progress_events`` rows every ``POLL_SECONDS`` while anyone listens."""

    def __init__(self, hub: TableEventHub, merchant_id: str) -> None:
        self.hub, self.merchant_id = hub, merchant_id
        self.subscribers: set[_Subscription] = set()
        #: Set once the poller knows where it starts (the newest row when it started).
        self.ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        bus, limiter = self.hub.bus(), self.hub.limiter
        position: int | None = None
        while self.subscribers:
            try:
                if position is None:
                    position = int(await anyio.to_thread.run_sync(bus.last_event_id, self.merchant_id,
                                                                  limiter=limiter))
                    self.ready.set()
                    continue
                rows = await anyio.to_thread.run_sync(bus.table_payloads, self.merchant_id, position, TABLE_BATCH,
                                                      limiter=limiter)
            except Exception as error:
                log.warning("progress table poll for %s failed: %s", self.merchant_id, error)
                await asyncio.sleep(1.0)
                continue
            self.hub.polls += 1
            if rows:
                position = int(rows[-1][0])
                for subscription in list(self.subscribers):
                    subscription.offer(rows)
            if len(rows) < TABLE_BATCH:
                await asyncio.sleep(POLL_SECONDS)
        self.hub.forget(self)


class TableEventHub:
    """Without Redis: one poller per merchant with listeners, shared by all of the merchant's event streams
    (started by the first, stopped after the last leaves). ``polls`` counts the table reads it made."""

    def __init__(self, bus: Callable, limiter: anyio.CapacityLimiter) -> None:
        self.bus, self.limiter = bus, limiter
        self._pollers: dict[str, _MerchantPoller] = {}
        self.polls = 0

    @property
    def pollers(self) -> int:
        """Merchants polled right now."""
        return len(self._pollers)

    def subscribe(self, merchant_id: str) -> _Subscription:
        poller = self._pollers.get(merchant_id)
        if poller is None:
            poller = self._pollers[merchant_id] = _MerchantPoller(self, merchant_id)
        subscription = _Subscription(poller)
        poller.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: _Subscription) -> None:
        subscription.poller.subscribers.discard(subscription)

    def forget(self, poller: _MerchantPoller) -> None:
        if self._pollers.get(poller.merchant_id) is poller and not poller.subscribers:
            del self._pollers[poller.merchant_id]

    async def aclose(self) -> None:
        for poller in list(self._pollers.values()):
            poller.task.cancel()
            with contextlib.suppress(BaseException):
                await poller.task
        self._pollers.clear()
