"""One Shopify rate budget per shop, shared by every thread, op, run and process that calls it.

Shopify limits the Admin GraphQL API per app + store with a leaky bucket of *cost points*
(``extensions.cost.throttleStatus``: ``maximumAvailable``, ``currentlyAvailable``, ``restoreRate``;
standard plans 2000 points refilled at 100/s, Plus 1000/s). A request is answered ``THROTTLED`` when the
bucket cannot pay its requested cost. This module keeps a *mirror* of that bucket per shop URL so that all
our callers queue behind each other instead of each pacing on its own and overdrawing the bucket together.

Backends
    :class:`RedisBudget` (when ``REDIS_URL`` is set): the mirror lives in Redis and every change is one
    atomic Lua script, so concurrent runs in separate processes share it (times come from Redis ``TIME``).
    :class:`InProcessBudget` otherwise: one mirror per shop in a process-wide registry, so every client in
    the process shares it. If Redis becomes unreachable, :class:`RedisBudget` falls back to the in-process
    mirror for that shop (logged once) rather than failing the sync.

The accounting (identical in both backends)
    * ``level`` is the number of points we may still spend at time ``at``; it refills at ``rate`` (capped,
      see below). It may go *negative*: that is the queue. :meth:`RateBudget.reserve` deducts the
      cost at once and returns how long to wait until the level, refilled, covers it (plus a small margin);
      the next caller sees the lower level and waits behind. A reservation is *in flight* from then until
      its answer is observed (or it is released, or it expires because its process died).
    * An answer says ``currentlyAvailable = S`` as Shopify saw the bucket right after charging that request
      (at some moment between our send and our receipt). The old client set its estimate to ``S``, which
      erased every reservation other threads had made but whose requests Shopify had not charged yet: with
      4 threads the bucket was overdrawn. Here the observation becomes::

          level = min(max, S) - (costs of other reservations still in flight)
                              - (costs charged by answers received since this request was sent)

      The second term covers requests that are reserved (maybe still sleeping) but not yet charged; the
      third covers requests Shopify may have charged *after* it computed ``S`` but whose answers reached
      us first (answers can arrive out of order). Both can double-count a request Shopify had already
      charged, so the estimate is a lower bound of the real bucket: pessimistic by at most the requests
      overlapping one round trip (a few points), and since every observation replaces the level, that
      pessimism never accumulates. Refill is counted from our receipt (later than Shopify's moment), which
      is pessimistic too.
    * The refill is capped at ``max`` minus the points still owed, not at ``max``: the level has those
      requests deducted while Shopify's bucket may not have charged them yet, and a real bucket that is
      full wastes its refill, so a full-looking mirror must not promise points they are about to take.
    * A request that had to wait *confirms* before it is sent (:meth:`RateBudget.confirm`): the bucket now
      (the level plus the points of requests not sent yet) must hold its cost, or it waits longer. Waits are
      planned on a continuous refill, but a process that stalls sends late, the full bucket wastes refill
      meanwhile, and late and on-time requests then arrive together; confirming catches that.
    * A ``THROTTLED`` answer is observed the same way (nothing was charged), so the retry's reservation
      waits exactly for the restore time the answer implies: missing points over the restore rate, behind
      everyone already queued.
    * Before the first answer for a shop the bucket's size is unknown: one *probe* request goes alone and
      the others wait (polling briefly) until its answer tells us the bucket.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "Grant",
    "InProcessBudget",
    "Observation",
    "RateBudget",
    "RedisBudget",
    "budget_key",
    "shared_budget",
]

logger = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "poflow:shopify:budget"
#: Points kept in hand above a request's cost (rounding in ``currentlyAvailable``, clock differences).
DEFAULT_MARGIN = 1.0
#: While the bucket is unknown, callers behind the probe ask again after this many seconds.
PROBE_POLL_SECONDS = 0.05
#: Answers are remembered this long (they only matter while they overlap a request still in flight).
ANSWER_MEMORY_SECONDS = 300.0
#: Redis keys of an idle shop expire after this long (a full bucket needs no memory).
STATE_TTL_SECONDS = 3600
#: After a Redis error, the in-process mirror is used this long before Redis is tried again.
REDIS_RETRY_SECONDS = 30


@dataclass(frozen=True)
class Grant:
    """The answer to :meth:`RateBudget.reserve`.

    ``reservation`` set: the points are reserved; sleep ``wait`` seconds, then send.
    ``reservation`` ``None``: nothing reserved yet (the first request to this shop is still out); sleep
    ``wait`` seconds and ask again.
    """

    reservation: str | None
    wait: float


@dataclass(frozen=True)
class Observation:
    """``extensions.cost`` of one answer: the bucket as Shopify saw it, and what this request was charged.

    ``charged`` is ``actualQueryCost`` (``None`` for a THROTTLED answer, which charges nothing).
    """

    available: float
    maximum: float
    restore_rate: float
    charged: float | None


@dataclass(frozen=True)
class BudgetState:
    """The mirror as it is now (for tests, logs and the benchmark)."""

    known: bool
    maximum: float
    restore_rate: float
    level: float
    in_flight: int


class RateBudget(Protocol):
    """A shop's shared cost budget (see the module docstring for the accounting)."""

    key: str

    def reserve(self, cost: float, *, hold: float) -> Grant:
        """Reserve ``cost`` points; ``hold`` is how long the request may stay unanswered before the
        reservation is treated as charged and forgotten (its process may have died)."""

    def confirm(self, reservation: str, *, hold: float) -> float:
        """Just before sending a request that had to wait: ``0`` = send now (it counts as sent from here),
        else how many more seconds to wait before confirming again (calls sent late, after a stall, would
        otherwise find the points they were promised already spent by those sent on time)."""

    def observe(self, reservation: str, observation: Observation) -> None:
        """Reconcile the mirror with an answer's ``throttleStatus`` and end the reservation."""

    def release(self, reservation: str) -> None:
        """End a reservation whose request got no cost report (transport error, 5xx): assume it was charged."""

    def state(self) -> BudgetState:
        """The mirror now."""


def budget_key(shop_url: str, prefix: str = DEFAULT_KEY_PREFIX) -> str:
    """The budget's key for a shop: scheme-less, lower-case ``host[:port]`` under ``prefix``."""
    text = shop_url.strip()
    parts = urlsplit(text if "://" in text else f"https://{text}")
    host = (parts.hostname or text).lower()
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{prefix}:{netloc}"


# --------------------------------------------------------------------------------------------
# In-process backend
# --------------------------------------------------------------------------------------------


@dataclass
class _InFlight:
    cost: float
    send_at: float  # when it was (or is planned to be) sent
    expires_at: float
    sent: bool  # confirmed: the request may be at Shopify now


class InProcessBudget:
    """The mirror in this process's memory, guarded by a lock (every client of the shop shares one)."""

    def __init__(self, key: str, *, margin: float = DEFAULT_MARGIN, clock: Any = time.monotonic) -> None:
        self.key = key
        self.margin = margin
        self._clock = clock
        self._lock = threading.Lock()
        self._known = False
        self._max = 0.0
        self._rate = 0.0
        self._level = 0.0
        self._at = 0.0
        self._probe: str | None = None
        self._in_flight: dict[str, _InFlight] = {}
        self._answers: list[tuple[float, float]] = []  # (received at, points charged)

    def reserve(self, cost: float, *, hold: float) -> Grant:
        with self._lock:
            now = self._clock()
            self._expire(now)
            reservation = f"local:{uuid.uuid4().hex}"
            if not self._known:
                if self._probe is not None:
                    return Grant(None, PROBE_POLL_SECONDS)
                self._probe = reservation
                self._in_flight[reservation] = _InFlight(cost, now, now + hold, sent=True)
                return Grant(reservation, 0.0)
            if cost > self._max:  # can never fit: let Shopify answer MAX_COST_EXCEEDED, spend nothing
                return Grant(reservation, 0.0)
            sent, pending = self._owed(now)
            level = min(self._max - sent - pending, self._raw_level(now))
            target = min(self._max, cost + self.margin)
            wait = 0.0 if level >= target else (target - level) / self._rate
            self._level, self._at = level - cost, now
            self._in_flight[reservation] = _InFlight(cost, now + wait, now + wait + hold, sent=wait <= 0)
            return Grant(reservation, wait)

    def confirm(self, reservation: str, *, hold: float) -> float:
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._in_flight.get(reservation)
            if entry is None or entry.sent or not self._known:
                return 0.0
            sent, pending = self._owed(now)
            bucket = min(self._max - sent, self._raw_level(now) + pending)
            need = min(self._max, entry.cost + self.margin)
            extra = 0.0 if bucket >= need else (need - bucket) / self._rate
            entry.sent = extra <= 0
            entry.send_at, entry.expires_at = now + extra, now + extra + hold
            return extra

    def observe(self, reservation: str, observation: Observation) -> None:
        with self._lock:
            now = self._clock()
            entry = self._in_flight.pop(reservation, None)
            if self._probe == reservation:
                self._probe = None
            send_at = entry.send_at if entry is not None else now
            self._expire(now)
            others = sum(e.cost for e in self._in_flight.values())
            overlap = sum(charged for received, charged in self._answers if received >= send_at)
            self._answers.append((now, observation.charged or 0.0))
            self._known = observation.maximum > 0 and observation.restore_rate > 0
            self._max, self._rate = observation.maximum, observation.restore_rate
            self._level = min(observation.maximum, observation.available) - others - overlap
            self._at = now

    def release(self, reservation: str) -> None:
        with self._lock:
            now = self._clock()
            entry = self._in_flight.pop(reservation, None)
            if self._probe == reservation:
                self._probe = None
            if entry is not None:
                self._answers.append((now, entry.cost))

    def state(self) -> BudgetState:
        with self._lock:
            now = self._clock()
            self._expire(now)
            sent, pending = self._owed(now)
            level = min(self._max - sent - pending, self._raw_level(now)) if self._known else 0.0
            return BudgetState(self._known, self._max, self._rate, level, len(self._in_flight))

    def _raw_level(self, now: float) -> float:
        return self._level + max(0.0, now - self._at) * self._rate

    def _owed(self, now: float) -> tuple[float, float]:
        """Points of reservations (sent, not yet sent) still unanswered."""
        sent = sum(e.cost for e in self._in_flight.values() if e.sent)
        return sent, sum(e.cost for e in self._in_flight.values()) - sent

    def _expire(self, now: float) -> None:
        """Forget reservations nobody answered in time (assume charged) and answers too old to matter."""
        for reservation, entry in list(self._in_flight.items()):
            if entry.expires_at < now:
                del self._in_flight[reservation]
                self._answers.append((now, entry.cost))
                if self._probe == reservation:
                    self._probe = None
        if self._answers and self._answers[0][0] < now - ANSWER_MEMORY_SECONDS:
            self._answers = [a for a in self._answers if a[0] >= now - ANSWER_MEMORY_SECONDS]


# --------------------------------------------------------------------------------------------
# Redis backend
# --------------------------------------------------------------------------------------------

# KEYS: state hash, in-flight hash (id -> "cost:send_at:expires_at:sent"), answers zset (score = received
# at, member = "id:charged"). Times are Redis TIME seconds, shared by every process.
_LUA_COMMON = """
local function now_seconds()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function split(value)
  local parts = {}
  for piece in string.gmatch(value, '([^:]+)') do parts[#parts + 1] = tonumber(piece) end
  return parts
end
local function expire_stale(now)
  local entries = redis.call('HGETALL', KEYS[2])
  for i = 1, #entries, 2 do
    local f = split(entries[i + 1])
    if f[3] < now then
      redis.call('HDEL', KEYS[2], entries[i])
      redis.call('ZADD', KEYS[3], now, entries[i] .. ':' .. f[1])
      if redis.call('HGET', KEYS[1], 'probe') == entries[i] then redis.call('HDEL', KEYS[1], 'probe') end
    end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[#ARGV]))
end
local function owed()
  local sent, pending = 0, 0
  local rest = redis.call('HVALS', KEYS[2])
  for i = 1, #rest do
    local f = split(rest[i])
    if f[4] == 1 then sent = sent + f[1] else pending = pending + f[1] end
  end
  return sent, pending
end
local function raw_level(s, now)
  return tonumber(s[4]) + math.max(0, now - tonumber(s[5])) * tonumber(s[3])
end
local function entry(cost, send_at, expires_at, sent)
  return cost .. ':' .. send_at .. ':' .. expires_at .. ':' .. sent
end
local function touch(ttl)
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
end
"""

# ARGV: id, cost, hold, margin, ttl, probe_poll, answer_memory
_LUA_RESERVE = _LUA_COMMON + """
local now = now_seconds()
expire_stale(now)
local id, cost, hold, margin = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local s = redis.call('HMGET', KEYS[1], 'known', 'max', 'rate', 'level', 'at')
local result
if s[1] ~= '1' then
  if redis.call('HEXISTS', KEYS[1], 'probe') == 1 then
    result = {'', ARGV[6]}
  else
    redis.call('HSET', KEYS[1], 'probe', id)
    redis.call('HSET', KEYS[2], id, entry(cost, now, now + hold, 1))
    result = {id, '0'}
  end
else
  local max, rate = tonumber(s[2]), tonumber(s[3])
  if cost > max then
    result = {id, '0'}
  else
    local sent, pending = owed()
    local level = math.min(max - sent - pending, raw_level(s, now))
    local target = math.min(max, cost + margin)
    local wait = 0
    if level < target then wait = (target - level) / rate end
    local is_sent = 0
    if wait <= 0 then is_sent = 1 end
    redis.call('HSET', KEYS[1], 'level', tostring(level - cost), 'at', tostring(now))
    redis.call('HSET', KEYS[2], id, entry(cost, now + wait, now + wait + hold, is_sent))
    result = {id, tostring(wait)}
  end
end
touch(tonumber(ARGV[5]))
return result
"""

# ARGV: id, hold, margin, ttl, answer_memory
_LUA_CONFIRM = _LUA_COMMON + """
local now = now_seconds()
expire_stale(now)
local id, hold, margin = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local raw = redis.call('HGET', KEYS[2], id)
local s = redis.call('HMGET', KEYS[1], 'known', 'max', 'rate', 'level', 'at')
if not raw or s[1] ~= '1' then return '0' end
local f = split(raw)
if f[4] == 1 then return '0' end
local max, rate = tonumber(s[2]), tonumber(s[3])
local sent, pending = owed()
local bucket = math.min(max - sent, raw_level(s, now) + pending)
local need = math.min(max, f[1] + margin)
local extra = 0
if bucket < need then extra = (need - bucket) / rate end
local is_sent = 0
if extra <= 0 then is_sent = 1 end
redis.call('HSET', KEYS[2], id, entry(f[1], now + extra, now + extra + hold, is_sent))
touch(tonumber(ARGV[4]))
return tostring(extra)
"""

# ARGV: id, available, maximum, rate, charged, ttl, answer_memory
_LUA_OBSERVE = _LUA_COMMON + """
local now = now_seconds()
local id = ARGV[1]
local raw = redis.call('HGET', KEYS[2], id)
local send_at = now
if raw then send_at = split(raw)[2] end
redis.call('HDEL', KEYS[2], id)
if redis.call('HGET', KEYS[1], 'probe') == id then redis.call('HDEL', KEYS[1], 'probe') end
expire_stale(now)
local sent, pending = owed()
local overlap = 0
local answers = redis.call('ZRANGEBYSCORE', KEYS[3], send_at, '+inf')
for i = 1, #answers do
  local charged = string.match(answers[i], ':([^:]+)$')
  overlap = overlap + tonumber(charged)
end
redis.call('ZADD', KEYS[3], now, id .. ':' .. ARGV[5])
local available, max, rate = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local known = '0'
if max > 0 and rate > 0 then known = '1' end
redis.call('HSET', KEYS[1], 'known', known, 'max', ARGV[3], 'rate', ARGV[4],
           'level', tostring(math.min(max, available) - sent - pending - overlap), 'at', tostring(now))
touch(tonumber(ARGV[6]))
return 1
"""

# ARGV: id, ttl, answer_memory
_LUA_RELEASE = _LUA_COMMON + """
local now = now_seconds()
local id = ARGV[1]
local raw = redis.call('HGET', KEYS[2], id)
if raw then
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZADD', KEYS[3], now, id .. ':' .. split(raw)[1])
end
if redis.call('HGET', KEYS[1], 'probe') == id then redis.call('HDEL', KEYS[1], 'probe') end
touch(tonumber(ARGV[2]))
return 1
"""

# ARGV: answer_memory
_LUA_STATE = _LUA_COMMON + """
local now = now_seconds()
expire_stale(now)
local s = redis.call('HMGET', KEYS[1], 'known', 'max', 'rate', 'level', 'at')
local level = 0
if s[1] == '1' then
  local sent, pending = owed()
  level = math.min(tonumber(s[2]) - sent - pending, raw_level(s, now))
end
return {s[1] or '0', s[2] or '0', s[3] or '0', tostring(level), redis.call('HLEN', KEYS[2])}
"""


class RedisBudget:
    """The mirror in Redis: every change is one Lua script, so all processes see one queue."""

    def __init__(self, client: Any, key: str, *, margin: float = DEFAULT_MARGIN) -> None:
        self.key = key
        self.margin = margin
        self._redis = client
        tag = "{" + key + "}"  # one hash slot for all three keys (Redis Cluster)
        self._keys = [f"{tag}:state", f"{tag}:inflight", f"{tag}:answers"]
        self._reserve = client.register_script(_LUA_RESERVE)
        self._confirm = client.register_script(_LUA_CONFIRM)
        self._observe = client.register_script(_LUA_OBSERVE)
        self._release = client.register_script(_LUA_RELEASE)
        self._state = client.register_script(_LUA_STATE)
        self._fallback = _local_budget(key, margin)
        self._down_until = 0.0

    def reserve(self, cost: float, *, hold: float) -> Grant:
        if time.monotonic() < self._down_until:
            return self._fallback.reserve(cost, hold=hold)
        reservation = uuid.uuid4().hex
        args = [reservation, cost, hold, self.margin, STATE_TTL_SECONDS, PROBE_POLL_SECONDS, ANSWER_MEMORY_SECONDS]
        try:
            granted, wait = self._reserve(keys=self._keys, args=args)
        except Exception as error:  # redis.RedisError and friends: never fail a sync over the mirror
            self._warn(error)
            return self._fallback.reserve(cost, hold=hold)
        granted = granted.decode() if isinstance(granted, bytes) else str(granted)
        return Grant(granted or None, float(wait))

    def confirm(self, reservation: str, *, hold: float) -> float:
        if reservation.startswith("local:"):
            return self._fallback.confirm(reservation, hold=hold)
        try:
            extra = self._confirm(keys=self._keys, args=[reservation, hold, self.margin, STATE_TTL_SECONDS,
                                                         ANSWER_MEMORY_SECONDS])
        except Exception as error:
            self._warn(error)
            return 0.0
        return float(extra.decode() if isinstance(extra, bytes) else extra)

    def observe(self, reservation: str, observation: Observation) -> None:
        if reservation.startswith("local:"):
            self._fallback.observe(reservation, observation)
            return
        charged = observation.charged or 0.0
        args = [reservation, observation.available, observation.maximum, observation.restore_rate, charged,
                STATE_TTL_SECONDS, ANSWER_MEMORY_SECONDS]
        try:
            self._observe(keys=self._keys, args=args)
        except Exception as error:
            self._warn(error)

    def release(self, reservation: str) -> None:
        if reservation.startswith("local:"):
            self._fallback.release(reservation)
            return
        try:
            self._release(keys=self._keys, args=[reservation, STATE_TTL_SECONDS, ANSWER_MEMORY_SECONDS])
        except Exception as error:
            self._warn(error)

    def state(self) -> BudgetState:
        known, maximum, rate, level, in_flight = self._state(keys=self._keys, args=[ANSWER_MEMORY_SECONDS])
        text = [v.decode() if isinstance(v, bytes) else str(v) for v in (known, maximum, rate, level)]
        return BudgetState(text[0] == "1", float(text[1]), float(text[2]), float(text[3]), int(in_flight))

    def clear(self) -> None:
        """Forget this shop's mirror (tests, or after changing plans)."""
        self._redis.delete(*self._keys)

    def _warn(self, error: Exception) -> None:
        """Use the in-process mirror for a while (no Redis timeout on every call), and say so once per outage."""
        if time.monotonic() >= self._down_until:
            logger.warning("Shopify rate budget: Redis unavailable (%s); pacing in this process only for %ds",
                           type(error).__name__, REDIS_RETRY_SECONDS)
        self._down_until = time.monotonic() + REDIS_RETRY_SECONDS


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

_registry: dict[str, RateBudget] = {}
_registry_lock = threading.RLock()


def _local_budget(key: str, margin: float = DEFAULT_MARGIN) -> InProcessBudget:
    with _registry_lock:
        budget = _registry.get(f"local|{key}")
        if budget is None:
            budget = InProcessBudget(key, margin=margin)
            _registry[f"local|{key}"] = budget
        assert isinstance(budget, InProcessBudget)
        return budget


def shared_budget(shop_url: str, *, redis_url: str | None = None, prefix: str | None = None) -> RateBudget:
    """The one budget of ``shop_url`` for this process: Redis-backed when ``redis_url`` (default
    ``REDIS_URL``) is set, else the process-wide in-process mirror. ``prefix`` defaults to
    ``POFLOW_SHOPIFY_BUDGET_PREFIX`` or ``poflow:shopify:budget``."""
    redis_url = redis_url if redis_url is not None else (os.environ.get("REDIS_URL") or None)
    prefix = prefix or os.environ.get("POFLOW_SHOPIFY_BUDGET_PREFIX") or DEFAULT_KEY_PREFIX
    key = budget_key(shop_url, prefix)
    if not redis_url:
        return _local_budget(key)
    with _registry_lock:
        budget = _registry.get(f"{redis_url}|{key}")
        if budget is None:
            import redis

            budget = RedisBudget(redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5), key)
            _registry[f"{redis_url}|{key}"] = budget
        return budget
