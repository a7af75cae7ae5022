"""Progress events for frontends (v2): one ordered, resumable stream of events per merchant.

With Redis (``REDIS_URL``) every key lives under the deployment's namespace (``config.progress_namespace()``):

- ``<ns>:events:<merchant_id>`` — a Redis stream (``XADD … MAXLEN ~ 10000``, field ``event`` = the event's JSON);
  its entry ids are the event ids readers resume from (SSE ``Last-Event-ID``);
- ``<ns>:live:<merchant_id>`` — a pub/sub channel; each message is ``{"id": <stream id>, "event": {…}}``;
- ``<ns>:seq:<upload_id>`` — the upload's last ``seq`` (kept 90 days after its last event).

``seq`` is given by one Lua script that increments the upload's counter and appends the event atomically, so
events of an upload are numbered 1, 2, 3… across runs and processes *and* appear in the stream in ``seq`` order.

Without Redis, events go to the ``progress_events`` table (at most the newest 10,000 per merchant, none older than
7 days; pruned as events are written); ``seq`` then comes from ``workflow_executions.event_seq``, incremented in the
transaction that inserts the event (``UPDATE … RETURNING`` holds the row lock). On PostgreSQL a per-merchant
advisory lock makes a merchant's row ids commit in order, so a reader polling ``id > last`` never skips one.

Publishing never fails a stage: a broken bus is logged (and Redis is left alone for a few seconds after a failure).
Events a frontend cannot do without — ``queued``, ``started``, the stage and terminal statuses, and a stage's last
progress tick (``items_done == items_total``) — are not lost to a Redis outage: they wait in a bounded in-process
outbox (``OUTBOX_LIMIT``; when full, the oldest progress ticks go first) and are sent in order, numbered by the
Lua script at send time, by a background retry (a daemon thread, backing off up to ``OUTBOX_RETRY_MAX_SECONDS``)
and before the next event published once Redis answers again; ``close()`` flushes them for a short while.
Ordinary progress ticks published during the outage are dropped (the next tick supersedes them).
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import hashlib
import json
import logging
import threading
import time
import weakref
from collections import deque
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError

from poflow_dagster import config
from poflow_dagster.store.db import Database
from poflow_dagster.store.schema import ProgressEventRow, Upload, WorkflowExecution

log = logging.getLogger(__name__)

#: Events kept per merchant: the Redis stream's approximate MAXLEN, and the table's cap.
STREAM_MAXLEN = 10_000
#: The table also forgets events older than this.
TABLE_MAX_AGE = dt.timedelta(days=7)
#: A Redis seq counter outlives its upload's last event by this long.
SEQ_TTL_SECONDS = 90 * 24 * 3600
#: After Redis failed, publishes skip it for this long (a stage never waits on a dead Redis event after event).
REDIS_BACKOFF_SECONDS = 5.0
#: At most this many unsent events wait for Redis in a process (oldest progress ticks are dropped first).
OUTBOX_LIMIT = 10_000
#: The outbox's background retry waits this long after a failure, doubling up to the maximum.
OUTBOX_RETRY_SECONDS = 0.25
OUTBOX_RETRY_MAX_SECONDS = 5.0
#: ``close()`` tries this long to send what is still in the outbox.
OUTBOX_CLOSE_SECONDS = 2.0
#: How often the table reader polls while it waits for new events.
POLL_SECONDS = 0.1

Status = Literal[
    "queued", "started", "stage_started", "progress", "stage_succeeded", "stage_skipped", "stage_reused",
    "stage_failed", "completed", "failed", "needs_review", "duplicate",
]
TERMINAL_STATUSES = frozenset({"completed", "failed", "needs_review", "duplicate"})


class ProgressEvent(BaseModel):
    """One progress event of one upload (the JSON every frontend receives; field names are stable)."""

    upload_id: str
    merchant_id: str
    run_id: str | None = None
    #: 1, 2, 3… per upload, across its runs; given by the bus when the event is published (0 before).
    seq: int = 0
    status: Status
    stage: str | None = None
    items_done: int | None = None
    items_total: int | None = None
    #: The whole PO's progress, 0–100 (never decreases within a run).
    percent: int = Field(default=0, ge=0, le=100)
    #: For people: "Saved 60/150 lines", "Parsing window 2/3", or why it failed.
    message: str | None = None
    #: The live ETA when the event was sent: seconds left and the moment the PO should finish (``None`` once
    #: it has finished, before its run starts, or when no estimate could be made).
    eta_seconds: float | None = None
    eta_at: dt.datetime | None = None
    #: Items per second in the current stage so far.
    throughput: float | None = None
    at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def must_arrive(self) -> bool:
        """Kept in the outbox through a Redis outage: every status but ``progress``, and a stage's last tick."""
        return self.status != "progress" or (self.items_total is not None and self.items_done == self.items_total)


def decode_event(raw: bytes | str) -> ProgressEvent:
    return ProgressEvent.model_validate(json.loads(raw))


# Increments the upload's seq and appends the event in one step. KEYS: seq, stream, channel.
# ARGV: payload before the seq, payload after it, maxlen, seq ttl.
_PUBLISH_LUA = """
local seq = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local payload = ARGV[1] .. seq .. ARGV[2]
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', payload)
redis.call('PUBLISH', KEYS[3], '{"id":"' .. id .. '","event":' .. payload .. '}')
return {seq, id}
"""
_SEQ_MARK = -7_000_000_001  # a seq no event has: the payload is split around it for the script


class ProgressBus:
    """Publishes and reads progress events: Redis when ``redis_url`` is given, else the database's
    ``progress_events`` table (``db``), else only logs. ``namespace`` defaults to ``config.progress_namespace``
    of ``db``'s URL (or of the configured database)."""

    def __init__(self, redis_url: str | None, db: Database | None = None, namespace: str | None = None) -> None:
        self.redis_url = redis_url or None
        self.db = db
        self.namespace = namespace or config.progress_namespace(db.url if db is not None else None)
        self._client = self._reader = self._async_reader = None
        self._script = None
        self._redis_down_until = 0.0
        self._local_seq: dict[str, int] = {}
        self._lock = threading.Lock()
        #: Events that must arrive and could not be sent yet, oldest first (see the module's docstring).
        self._outbox: deque[ProgressEvent] = deque()
        self.outbox_limit = OUTBOX_LIMIT
        self.outbox_dropped = 0
        #: Held while sending to Redis: the outbox drains before the next event, in order.
        self._send_lock = threading.RLock()
        self._retry_wake = threading.Condition(self._send_lock)
        self._retry_thread: threading.Thread | None = None
        self._closing = False
        if self.redis_url:
            import redis

            self._client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
            # Blocking reads (XREAD BLOCK, at most MAX_BLOCK_MS) wait longer than the publisher's socket timeout,
            # but never forever: a half-open connection (failover, a dropped NAT entry) ends in a timeout and the
            # reader tries again, instead of a stream that silently never speaks again.
            self._reader = redis.Redis.from_url(self.redis_url, **_READER_SOCKET)
            self._script = self._client.register_script(_PUBLISH_LUA)

    # Keys -------------------------------------------------------------------------------------------------
    def stream_key(self, merchant_id: str) -> str:
        return f"{self.namespace}:events:{merchant_id}"

    def live_channel(self, merchant_id: str) -> str:
        return f"{self.namespace}:live:{merchant_id}"

    def seq_key(self, upload_id: str) -> str:
        return f"{self.namespace}:seq:{upload_id}"

    # Publishing -------------------------------------------------------------------------------------------
    def publish(self, event: ProgressEvent) -> ProgressEvent:
        """Number and send one event; returns it with its ``seq`` (0 if it could not be sent). Never raises."""
        try:
            if self._client is not None:
                return self._publish_redis(event)
            if self.db is not None:
                return self._publish_table(event)
            with self._lock:  # nowhere to send it: numbered in this process, logged
                seq = self._local_seq[event.upload_id] = self._local_seq.get(event.upload_id, 0) + 1
            event = event.model_copy(update={"seq": seq})
        except Exception as error:  # best effort: the workflow row is the source of truth
            log.warning("progress event of %s not published: %s: %s", event.upload_id, type(error).__name__, error)
            return event
        log.debug("progress %s", event.model_dump_json())
        return event

    def _publish_redis(self, event: ProgressEvent) -> ProgressEvent:
        with self._send_lock:
            if time.monotonic() < self._redis_down_until or not self._flush_outbox():
                # Redis is (still) down: what must arrive waits in the outbox; a progress tick is dropped.
                if event.must_arrive:
                    self._enqueue(event)
                return event
            try:
                return self._send_redis(event)
            except Exception as error:
                self._redis_down_until = time.monotonic() + REDIS_BACKOFF_SECONDS
                if not event.must_arrive:
                    raise
                self._enqueue(event)
                log.warning("progress event %s of %s kept until Redis answers: %s: %s", event.status,
                            event.upload_id, type(error).__name__, error)
                return event

    def _send_redis(self, event: ProgressEvent) -> ProgressEvent:
        before, after = event.model_copy(update={"seq": _SEQ_MARK}).model_dump_json().split(str(_SEQ_MARK), 1)
        seq, _ = self._script(
            keys=[self.seq_key(event.upload_id), self.stream_key(event.merchant_id),
                  self.live_channel(event.merchant_id)],
            args=[before, after, STREAM_MAXLEN, SEQ_TTL_SECONDS],
        )
        return event.model_copy(update={"seq": int(seq)})

    @property
    def outbox_size(self) -> int:
        """Events waiting for Redis in this process."""
        return len(self._outbox)

    def _enqueue(self, event: ProgressEvent) -> None:
        """Keep ``event`` for the retry (caller holds ``_send_lock``); a full outbox drops its oldest progress
        tick first, else its oldest event."""
        if len(self._outbox) >= self.outbox_limit:
            victim = next((e for e in self._outbox if e.status == "progress"), None)
            if victim is not None:
                self._outbox.remove(victim)
            else:
                victim = self._outbox.popleft()
            self.outbox_dropped += 1
            log.warning("progress outbox full (%d): dropped the %s event of %s", self.outbox_limit,
                        victim.status, victim.upload_id)
        self._outbox.append(event)
        if self._retry_thread is None and not self._closing:
            self._retry_thread = threading.Thread(target=self._retry_loop, name="progress-outbox", daemon=True)
            self._retry_thread.start()

    def _flush_outbox(self) -> bool:
        """Send the outbox in order (caller holds ``_send_lock``); ``True`` once it is empty. On a failure the
        event stays at the front and the Redis backoff starts. (Redis answering too late for an event it did
        append sends that event twice, with two seqs: at least once, never lost.)"""
        while self._outbox:
            if self._client is None:
                return False
            event = self._outbox[0]
            try:
                self._send_redis(event)
            except Exception as error:
                self._redis_down_until = time.monotonic() + REDIS_BACKOFF_SECONDS
                log.debug("progress outbox: Redis still unavailable (%s); %d waiting", error, len(self._outbox))
                return False
            self._outbox.popleft()
        self._redis_down_until = 0.0
        return True

    def _retry_loop(self) -> None:
        """The outbox's background retry: flush, and back off while Redis stays down; ends when it is empty."""
        delay = OUTBOX_RETRY_SECONDS
        with self._send_lock:
            while self._outbox and not self._closing:
                self._retry_wake.wait(delay)
                if self._closing:
                    break
                if self._flush_outbox():
                    log.info("progress outbox delivered after a Redis outage")
                    break
                delay = min(delay * 2, OUTBOX_RETRY_MAX_SECONDS)
            self._retry_thread = None

    def _publish_table(self, event: ProgressEvent) -> ProgressEvent:
        assert self.db is not None
        for attempt in range(3):
            try:
                with self.db.session() as session:
                    postgres = session.get_bind().dialect.name == "postgresql"
                    if postgres:  # a merchant's ids commit in id order: pollers never skip one
                        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(event.merchant_id)})
                    # The UPDATE comes first: it takes the write lock (SQLite) or the row lock (PostgreSQL).
                    seq = session.execute(
                        WorkflowExecution.__table__.update()
                        .where(WorkflowExecution.upload_id == event.upload_id)
                        .values(event_seq=WorkflowExecution.event_seq + 1)
                        .returning(WorkflowExecution.event_seq)
                    ).scalar()
                    kept = session.scalar(
                        select(func.max(ProgressEventRow.seq)).where(ProgressEventRow.upload_id == event.upload_id)
                    ) or 0
                    if seq is None or seq <= kept:  # no workflow row (yet), or events written without one
                        seq = kept + 1
                        session.execute(
                            WorkflowExecution.__table__.update()
                            .where(WorkflowExecution.upload_id == event.upload_id)
                            .values(event_seq=seq)
                        )
                    numbered = event.model_copy(update={"seq": seq})
                    row = ProgressEventRow(merchant_id=event.merchant_id, upload_id=event.upload_id, seq=seq,
                                           payload=numbered.model_dump_json(), created_at=numbered.at)
                    session.add(row)
                    session.flush()
                    if row.id % 100 == 0:
                        _prune(session, event.merchant_id, row.id)
                    return numbered
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # Reading ----------------------------------------------------------------------------------------------
    def last_event_id(self, merchant_id: str) -> str:
        """The id of the merchant's newest kept event ("0" if none): read from it to get only what comes next
        without missing an event published in between (``after=None`` means "from the moment of the call")."""
        if self._reader is not None:
            newest = self._reader.xrevrange(self.stream_key(merchant_id), count=1)
            return newest[0][0].decode() if newest else "0"
        if self.db is not None:
            with self.db.session() as session:
                newest = session.scalar(
                    select(func.max(ProgressEventRow.id)).where(ProgressEventRow.merchant_id == merchant_id)
                )
            return str(newest or 0)
        raise RuntimeError("the progress bus has neither Redis nor a database to read from")

    def read_merchant_events(
        self, merchant_id: str, after: str | None, *, block_ms: int = 15000, count: int = 500
    ) -> list[tuple[str, ProgressEvent]]:
        """The merchant's events after event id ``after``, oldest first, at most ``count``: ``(event id, event)``.

        ``after`` is a Redis stream id (``"1733090000000-0"``) or, without Redis, a ``progress_events`` row id;
        ``None`` = only events from now on, ``"0"`` = from the oldest kept. Waits up to ``block_ms`` (0 = not at
        all) when there is nothing yet, then returns an empty list.
        """
        if self._reader is not None:
            start = after if after is not None else "$"
            kwargs = {"block": min(block_ms, MAX_BLOCK_MS)} if block_ms > 0 else {}
            answer = self._reader.xread({self.stream_key(merchant_id): start}, count=count, **kwargs)
            return [(_text(entry_id), decode_event(fields[b"event"])) for _, entries in answer or []
                    for entry_id, fields in entries]
        if self.db is None:
            raise RuntimeError("the progress bus has neither Redis nor a database to read from")
        last = int(after) if after is not None else int(self.last_event_id(merchant_id))
        deadline = time.monotonic() + block_ms / 1000
        while True:
            rows = self._table_rows(merchant_id, last, count)
            if rows or time.monotonic() >= deadline:
                return rows
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    async def aread_merchant_events(
        self, merchant_id: str, after: str | None, *, block_ms: int = 15000, count: int = 500
    ) -> list[tuple[str, ProgressEvent]]:
        """``read_merchant_events`` for asyncio servers: no thread is held while it waits (Redis: one pooled
        ``redis.asyncio`` connection per waiting reader; table: polls with ``asyncio.sleep``)."""
        payloads = await self.aread_merchant_payloads(merchant_id, after, block_ms=block_ms, count=count)
        return [(event_id, decode_event(payload)) for event_id, payload in payloads]

    async def aread_merchant_payloads(
        self, merchant_id: str, after: str | None, *, block_ms: int = 15000, count: int = 500
    ) -> list[tuple[str, str]]:
        """Like :meth:`aread_merchant_events`, but each event as the JSON text it was published as: a server
        fanning events out to many clients sends it on as is (no parse and re-encode per client)."""
        if self.redis_url:
            if self._async_reader is None:
                import redis.asyncio as aredis

                self._async_reader = aredis.Redis.from_url(self.redis_url, **_READER_SOCKET)
            start = after if after is not None else "$"
            kwargs = {"block": min(block_ms, MAX_BLOCK_MS)} if block_ms > 0 else {}
            answer = await self._async_reader.xread({self.stream_key(merchant_id): start}, count=count, **kwargs)
            return [(_text(entry_id), _text(fields[b"event"])) for _, entries in answer or []
                    for entry_id, fields in entries]
        if self.db is None:
            raise RuntimeError("the progress bus has neither Redis nor a database to read from")
        last = int(after) if after is not None else int(await asyncio.to_thread(self.last_event_id, merchant_id))
        deadline = time.monotonic() + block_ms / 1000
        while True:
            rows = await asyncio.to_thread(self._table_payloads, merchant_id, last, count)
            if rows or time.monotonic() >= deadline:
                return rows
            await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def history_gap(self, merchant_id: str, after: str) -> str | None:
        """Whether reading from event id ``after`` would silently skip events the bus no longer keeps (the Redis
        stream was trimmed by ``MAXLEN``, or the table pruned): then the oldest kept event's id (``"0"`` when
        nothing is kept), and the reader should reload what it shows and continue from there; else ``None``.
        ``after`` of ``"0"`` (everything kept) or ``"$"`` (from now) never has a gap."""
        if after in ("0", "$"):
            return None
        if self._reader is not None:
            first = self._reader.xrange(self.stream_key(merchant_id), count=1)
            if not first:
                return "0"
            oldest = _text(first[0][0])
            return oldest if _stream_id(after) < _stream_id(oldest) else None
        if self.db is None:
            raise RuntimeError("the progress bus has neither Redis nor a database to read from")
        with self.db.session() as session:
            oldest_row = session.scalar(
                select(func.min(ProgressEventRow.id)).where(ProgressEventRow.merchant_id == merchant_id)
            )
        if oldest_row is None:
            return "0"
        return str(oldest_row) if int(after) < oldest_row else None

    def table_payloads(self, merchant_id: str, after_id: int, count: int = 500) -> list[tuple[str, str]]:
        """One read of the ``progress_events`` table: the merchant's events after row ``after_id`` as
        ``(event id, JSON)``, oldest first, at most ``count`` (no waiting)."""
        return self._table_payloads(merchant_id, after_id, count)

    def _table_rows(self, merchant_id: str, after_id: int, count: int) -> list[tuple[str, ProgressEvent]]:
        return [(row_id, decode_event(payload)) for row_id, payload in self._table_payloads(merchant_id, after_id, count)]

    def _table_payloads(self, merchant_id: str, after_id: int, count: int) -> list[tuple[str, str]]:
        assert self.db is not None
        with self.db.session() as session:
            rows = session.execute(
                select(ProgressEventRow.id, ProgressEventRow.payload)
                .where(ProgressEventRow.merchant_id == merchant_id, ProgressEventRow.id > after_id)
                .order_by(ProgressEventRow.id)
                .limit(count)
            ).all()
        return [(str(row_id), payload) for row_id, payload in rows]

    def flush(self, timeout: float = OUTBOX_CLOSE_SECONDS) -> bool:
        """Try for at most ``timeout`` seconds to send what waits in the outbox; ``True`` once it is empty."""
        if self._client is None:
            return not self._outbox
        deadline = time.monotonic() + timeout
        with self._send_lock:
            while not self._flush_outbox():
                if time.monotonic() >= deadline:
                    log.warning("progress outbox: %d events not (yet) sent to Redis", len(self._outbox))
                    return False
                self._retry_wake.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        return True

    def close(self) -> None:
        """Send what waits in the outbox (for at most ``OUTBOX_CLOSE_SECONDS``), then close the connections."""
        if self._client is not None:
            with self._send_lock:
                self._closing = True
                self._retry_wake.notify_all()
            self.flush(OUTBOX_CLOSE_SECONDS)
        for client in (self._client, self._reader):
            if client is not None:
                client.close()
        self._client = self._reader = None
        if self._async_reader is not None:
            reader, self._async_reader = self._async_reader, None
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                loop.create_task(reader.aclose())


#: The longest a read blocks on Redis; readers' sockets time out a little after it.
MAX_BLOCK_MS = 30_000
_READER_SOCKET = {
    "socket_timeout": MAX_BLOCK_MS / 1000 + 10, "socket_connect_timeout": 2, "socket_keepalive": True,
    "health_check_interval": 30,
}


def _stream_id(value: str) -> tuple[int, int]:
    """A Redis stream id as a comparable pair (``"1700000000000-3"`` → ``(1700000000000, 3)``)."""
    millis, _, sequence = value.partition("-")
    return int(millis), int(sequence or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _lock_key(merchant_id: str) -> int:
    """A signed 63-bit advisory lock key for the merchant's event ids."""
    return int.from_bytes(hashlib.sha256(f"poflow-progress:{merchant_id}".encode()).digest()[:8], "big") >> 1


def _prune(session, merchant_id: str, newest_id: int) -> None:
    """Forget the merchant's events beyond the newest ``STREAM_MAXLEN`` and those older than ``TABLE_MAX_AGE``."""
    cutoff_id = session.scalar(
        select(ProgressEventRow.id).where(ProgressEventRow.merchant_id == merchant_id)
        .order_by(ProgressEventRow.id.desc()).offset(STREAM_MAXLEN).limit(1)
    )
    too_old = dt.datetime.now(dt.UTC) - TABLE_MAX_AGE
    condition = ProgressEventRow.created_at < too_old
    if cutoff_id is not None:
        condition = condition | (ProgressEventRow.id <= cutoff_id)
    session.execute(delete(ProgressEventRow).where(ProgressEventRow.merchant_id == merchant_id, condition))


# Process-wide buses for code without a ProgressResource (sensors, store functions) ---------------------------
_shared: weakref.WeakKeyDictionary[Database, dict[tuple[str | None, str], ProgressBus]] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def shared_bus(db: Database) -> ProgressBus:
    """The process's bus for ``db`` and the configured ``REDIS_URL`` / namespace (created once, kept)."""
    redis_url = config.redis_url()
    namespace = config.progress_namespace(db.url)
    with _shared_lock:
        buses = _shared.setdefault(db, {})
        bus = buses.get((redis_url, namespace))
        if bus is None:
            bus = buses[(redis_url, namespace)] = ProgressBus(redis_url, db, namespace)
            if redis_url:  # a process that exits sends what still waits for Redis first (for a short while)
                atexit.register(bus.flush, OUTBOX_CLOSE_SECONDS)
        return bus


def publish_upload_event(
    db: Database, upload_id: str, status: Status, *, run_id: str | None = None, stage: str | None = None,
    message: str | None = None, percent: int | None = None, bus: ProgressBus | None = None,
) -> ProgressEvent | None:
    """Publish a lifecycle event (``queued``, ``failed``…) of ``upload_id``, reading its merchant and (unless
    given) its workflow's percent. Best effort: returns ``None`` and logs when it could not."""
    try:
        with db.session() as session:
            row = session.execute(
                select(Upload.merchant_id, WorkflowExecution.progress_percent)
                .outerjoin(WorkflowExecution, WorkflowExecution.upload_id == Upload.id)
                .where(Upload.id == upload_id)
            ).first()
        if row is None:
            return None
        merchant_id, stored_percent = row
        event = ProgressEvent(
            upload_id=upload_id, merchant_id=merchant_id, run_id=run_id, status=status, stage=stage,
            message=message, percent=percent if percent is not None else int(stored_percent or 0),
        )
        return (bus or shared_bus(db)).publish(event)
    except Exception as error:
        log.warning("%s event of %s not published: %s: %s", status, upload_id, type(error).__name__, error)
        return None
