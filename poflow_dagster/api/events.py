"""``GET /api/events``: the merchant's progress events as server-sent events.

Each event is ``id: <event id>``, ``event: progress``, ``data: <ProgressEvent JSON>``; the stream opens
with ``retry: 2000`` and a comment, and sends a heartbeat comment every 15 s. A client resumes where it
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
from sse_starlette import EventSourceResponse, ServerSentEvent

from poflow_dagster.api.auth import request_token
from poflow_dagster.api.errors import ApiError
from poflow_dagster.store.tokens import verify_token

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15
RETRY_MS = 2000
#: How long one read waits for new events; short enough that a stream notices a revoked token soon.
READ_BLOCK_MS = 5000
#: A live stream re-checks its token this often (a revoked token ends it; the reconnect gets a 401).
TOKEN_RECHECK_SECONDS = 30.0
_EVENT_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")


def resume_position(request: Request) -> str | None:
    """Where the client wants to resume: ``Last-Event-ID`` header, else ``?last_event_id=``; ``None`` = from now."""
    value = (request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "").strip()
    if not value:
        return None
    if not _EVENT_ID.match(value):
        raise ApiError(400, "invalid_last_event_id", f"{value[:60]!r} is not an event id this server sent")
    return value


def event_stream(request: Request, merchant_id: str) -> EventSourceResponse:
    """The SSE response for ``merchant_id`` (already authenticated)."""
    after = resume_position(request)
    return EventSourceResponse(
        _events(request, merchant_id, after),
        ping=HEARTBEAT_SECONDS,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        send_timeout=30,
    )


async def _events(request: Request, merchant_id: str, after: str | None) -> AsyncIterator[ServerSentEvent]:
    state = request.app.state
    bus, limiter = state.bus(), state.stream_limiter
    token = request_token(request)
    position = after
    if position is None:  # fixed before the stream opens: every event published after the opening comment arrives
        try:
            position = await anyio.to_thread.run_sync(bus.last_event_id, merchant_id, limiter=limiter)
        except Exception as error:
            log.warning("progress bus position unavailable: %s", error)
    yield ServerSentEvent(comment=f"poflow progress events for {merchant_id}", retry=RETRY_MS)
    checked = time.monotonic()
    while True:
        try:
            if position is None:  # "from now": the newest event's id, so no event falls between two reads
                position = await anyio.to_thread.run_sync(bus.last_event_id, merchant_id, limiter=limiter)
            batch = await bus.aread_merchant_events(merchant_id, position, block_ms=READ_BLOCK_MS)
        except Exception as error:  # the bus is down: say so, wait, try again (the client keeps its place)
            log.warning("progress bus read failed: %s", error)
            yield ServerSentEvent(comment="progress bus unavailable; retrying")
            await anyio.sleep(1.0)
            continue
        for event_id, event in batch:
            position = event_id
            if event.merchant_id == merchant_id:  # the stream is per merchant; this is belt and braces
                yield ServerSentEvent(data=event.model_dump_json(), event="progress", id=event_id)
        if time.monotonic() - checked > TOKEN_RECHECK_SECONDS:
            checked = time.monotonic()
            if await anyio.to_thread.run_sync(verify_token, state.db, token, limiter=limiter) != merchant_id:
                yield ServerSentEvent(comment="token revoked", event="revoked", data="{}")
                return
