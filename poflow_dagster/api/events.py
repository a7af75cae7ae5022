"""``GET /api/events``: the merchant's progress events as server-sent events.

Each event is ``id: <event id>``, ``event: progress``, ``data: <ProgressEvent JSON>``; the stream opens
with ``retry: 2000`` and a comment, and sends a heartbeat comment after 15 s without events. Written with
FastAPI's own ``StreamingResponse``: events one read of the bus returns go out as one chunk, each event's JSON
exactly as published (measured: ``benchmarks/sse_load.py``). A client resumes where it
left off with the ``Last-Event-ID`` header (browsers send it on their own when they reconnect) or
``?last_event_id=``; without either it gets the events from now on. Events come from
``ProgressBus.aread_merchant_events`` (the merchant's Redis stream, or the ``progress_events`` table when
no Redis is configured): a waiting stream holds no thread, only a pooled Redis connection.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse

from poflow_dagster.api.auth import request_token
from poflow_dagster.api.errors import ApiError
from poflow_dagster.store.tokens import verify_token

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15
RETRY_MS = 2000
#: A live stream re-checks its token this often (a revoked token ends it; the reconnect gets a 401).
TOKEN_RECHECK_SECONDS = 30.0
#: Event ids of the Redis bus (stream ids, or ``0`` for "everything kept") and of the database bus (row ids).
_REDIS_EVENT_ID = re.compile(r"^(0|\d{1,20}-\d{1,20})$")
_DB_EVENT_ID = re.compile(r"^\d{1,20}$")


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
    return StreamingResponse(
        _frames(request, merchant_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
    )


def _frame(event_id: str, payload: str) -> str:
    # A payload is one line of JSON (the bus writes compact JSON); SSE needs no escaping for it.
    return f"id: {event_id}\nevent: progress\ndata: {payload}\n\n"


async def _frames(request: Request, merchant_id: str, after: str | None) -> AsyncIterator[bytes]:
    """SSE frames: everything one read of the bus returned goes out as one chunk (a busy merchant's events are
    batched, not written one by one), each event's JSON sent on exactly as published — no parse and re-encode
    per client. A read that waited ``HEARTBEAT_SECONDS`` for nothing sends a heartbeat comment."""
    state = request.app.state
    bus, limiter = state.bus(), state.stream_limiter
    token = request_token(request, allow_query=True)
    position = after
    if position is None:  # fixed before the stream opens: every event published after the opening comment arrives
        try:
            position = await anyio.to_thread.run_sync(bus.last_event_id, merchant_id, limiter=limiter)
        except Exception as error:
            log.warning("progress bus position unavailable: %s", error)
    yield f"retry: {RETRY_MS}\n: poflow progress events for {merchant_id}\n\n".encode()
    checked = time.monotonic()
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
        if await request.is_disconnected():
            return
        if time.monotonic() - checked > TOKEN_RECHECK_SECONDS:
            checked = time.monotonic()
            if await anyio.to_thread.run_sync(verify_token, state.db, token, limiter=limiter) != merchant_id:
                yield b"event: revoked\ndata: {}\n: token revoked\n\n"
                return
