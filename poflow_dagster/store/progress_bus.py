"""Progress events for frontends: Redis pub/sub (live) + a Redis stream (replay), or nothing but logs.

Channel ``poflow:progress:<upload_id>`` carries live events for one upload; stream ``poflow:progress``
keeps recent events for late subscribers. Publishing never fails a stage: a broken bus is logged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

STREAM_KEY = "poflow:progress"
STREAM_MAXLEN = 10_000


def channel_for(upload_id: str) -> str:
    return f"poflow:progress:{upload_id}"


class ProgressEvent(BaseModel):
    upload_id: str
    run_id: str
    stage: str
    status: str  # started | succeeded | failed | skipped | completed
    progress_percent: int
    message: str | None = None
    at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    #: Live ETA of the PO when the event was sent: seconds left and the moment it should finish
    #: (``None`` once it has finished, or when no estimate could be made).
    eta_seconds: float | None = None
    eta_at: dt.datetime | None = None


class ProgressBus:
    """Publishes ``ProgressEvent`` to Redis when a URL is given; otherwise only logs them."""

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self._client = None
        if redis_url:
            import redis

            self._client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    def publish(self, event: ProgressEvent) -> bool:
        """Send one event; returns False (and logs) if the bus is unreachable."""
        payload = event.model_dump_json()
        log.info("progress %s", payload)
        if self._client is None:
            return False
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.publish(channel_for(event.upload_id), payload)
            pipe.xadd(STREAM_KEY, {"event": payload}, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.execute()
            return True
        except Exception as error:  # the bus is best-effort; the DB row is the source of truth
            log.warning("progress bus unavailable: %s", error)
            return False

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def decode_event(raw: bytes | str) -> ProgressEvent:
    return ProgressEvent.model_validate(json.loads(raw))
