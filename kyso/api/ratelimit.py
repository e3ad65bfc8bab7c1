"""Per-client rate limits of the endpoints anyone may call without an account: the public
verification (``POST /api/v1/verify`` and the ``/verify`` page, ``KYSO_VERIFY_RATE_LIMIT``)
and the peer inbox of the exchange (``POST /api/v1/exchange/inbox`` and ``/status``,
``KYSO_EXCHANGE_INBOX_RATE_LIMIT``).

One sliding log per limiter and client address.  With a Redis URL (``KYSO_RATE_LIMIT_URL``,
else ``KYSO_BROKER_URL`` when it is ``redis://…``) the logs are sorted sets in Redis, so every
API replica and every ``kyso serve --workers N`` process counts against the same limit; without
one, each process keeps its own log in memory and the real limit is N times the setting.
When Redis does not answer, the call is still limited, by this process alone (a warning is
logged at most once a minute): an outage of Redis never fails a request.

The address is the one the app sees (``request.client``): behind a proxy, run uvicorn with
``--proxy-headers`` and ``--forwarded-allow-ips`` so that it is the caller's, not the proxy's.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse

from kyso.api.problems import problem_response
from kyso.i18n import t

if TYPE_CHECKING:
    from kyso.api.settings import Settings

__all__ = [
    "KEY_PREFIX",
    "WINDOW",
    "RateLimiter",
    "RedisCounts",
    "RedisRateLimiter",
    "app_limiter",
    "client_address",
    "rate_limit_redis_url",
    "retry_seconds",
    "too_many",
]

log = logging.getLogger(__name__)

WINDOW = 60.0
"""Seconds of the sliding window (the limits are "a minute")."""

KEY_PREFIX = "kyso:rl"
"""Redis keys are ``<prefix>:<limiter name>:<client address>``."""

REDIS_TIMEOUT = 0.5
"""Seconds a Redis connect or command may take.  The limit is checked in the request's event
loop, so an unreachable Redis must cost little."""

REDIS_PAUSE = 5.0
"""After a Redis failure, seconds of in-process counting before Redis is tried again, so that
an outage costs one timeout per pause, not one per request."""

WARN_EVERY = 60.0
"""Seconds between two warnings that Redis is unreachable."""


class RateLimiter:
    """At most ``limit`` events per client in any ``window`` seconds (a sliding log per
    address; addresses idle for a window are forgotten).  A limit of 0 or less is no limit.

    ``hit`` answers how long to wait (0: allowed and counted); ``allow`` is the same as a
    yes/no.  Both take the limit of the call (else the limiter's own) and, for tests, the
    time (else ``clock()``)."""

    def __init__(
        self, limit: int = 0, window: float = WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._log: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._next_sweep: float | None = None

    def hit(self, client: str, limit: int | None = None, *, now: float | None = None) -> float:
        """0 when allowed (and counted), else the seconds until the next one is."""
        allowed = self.limit if limit is None else limit
        if allowed <= 0:
            return 0.0
        moment = self.clock() if now is None else now
        with self._lock:
            if self._next_sweep is None or moment >= self._next_sweep:
                # forget the addresses that sent nothing for a window: the log stays small
                # whatever number of addresses has called
                idle = [k for k, v in self._log.items() if not v or v[-1] <= moment - self.window]
                for key in idle:
                    del self._log[key]
                self._next_sweep = moment + self.window
            times = self._log.setdefault(client, deque())
            while times and times[0] <= moment - self.window:
                times.popleft()
            if len(times) >= allowed:
                return max(times[0] + self.window - moment, 0.001)
            times.append(moment)
            return 0.0

    def allow(self, client: str, limit: int | None = None, now: float | None = None) -> bool:
        """True when allowed (and counted)."""
        return self.hit(client, limit, now=now) == 0


# One atomic step of the sliding log of KEYS[1], a sorted set of the allowed events scored by
# their time in milliseconds: drop the events that left the window, refuse when ``limit`` remain
# (answering the milliseconds until the one whose leaving opens a place), else add this event
# and make the key expire a window after it.  The time is Redis's own (TIME), the one clock all
# replicas share, unless the caller gives one (ARGV[1], tests).  Refused calls are not counted,
# as in the in-process log, so a sorted set never holds more than ``limit`` members.
_SLIDING_LOG = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
else
  now = tonumber(ARGV[1])
end
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.3f', now - window))
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local first = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  return string.format('%.3f', tonumber(first[2]) + window - now)
end
redis.call('ZADD', KEYS[1], string.format('%.3f', now), ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window))
return '0'
"""


def _shown(url: str) -> str:
    """``url`` without its credentials, fit for a log line."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "redis"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisCounts:
    """The Redis where the limiters of an app count (one connection pool per app), and what
    its failures were: after one, :meth:`hit` answers ``None`` (count in process) for
    ``REDIS_PAUSE`` seconds, and the warning is logged at most every ``WARN_EVERY``."""

    def __init__(self, url: str, *, timeout: float = REDIS_TIMEOUT) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        # no retries: a second try would double the time the request waits; the in-process
        # log answers at once instead
        self.client: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._script = self.client.register_script(_SLIDING_LOG)
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._last_warning: float | None = None

    def hit(self, key: str, limit: int, window: float, now: float | None = None) -> float | None:
        """The wait of one event at ``key`` (0: allowed and counted), or ``None`` when Redis
        could not be asked (unreachable, timing out, refusing: count in process instead)."""
        import redis

        moment = time.monotonic()
        if moment < self._paused_until:
            return None
        args = [
            "" if now is None else f"{now * 1000:.3f}",
            f"{window * 1000:.3f}",
            str(limit),
            uuid.uuid4().hex,
        ]
        try:
            answer = self._script(keys=[key], args=args)
        except (redis.RedisError, OSError) as error:
            self._failed(error)
            return None
        wait = float(answer) / 1000
        return max(wait, 0.001) if wait > 0 else 0.0

    def _failed(self, error: Exception) -> None:
        moment = time.monotonic()
        with self._lock:
            self._paused_until = moment + REDIS_PAUSE
            if self._last_warning is not None and moment - self._last_warning < WARN_EVERY:
                return
            self._last_warning = moment
        log.warning(
            "rate limits: Redis at %s did not answer (%s); this process counts alone for now",
            _shown(self.url),
            error,
        )

    def close(self) -> None:
        self.client.close()


class RedisRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose log is the sorted set ``<prefix>:<name>:<address>`` in
    Redis, shared by every process that uses the same Redis and name: exact (a sliding log,
    not an estimate), timed by Redis's clock, gone a window after the address's last allowed
    event.  When Redis does not answer, the in-process log of this limiter limits instead."""

    def __init__(
        self,
        counts: RedisCounts,
        name: str,
        limit: int = 0,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
        prefix: str | None = None,
    ) -> None:
        super().__init__(limit, window, clock)
        self.counts = counts
        self.name = name
        self.prefix = KEY_PREFIX if prefix is None else prefix

    def key(self, client: str) -> str:
        return f"{self.prefix}:{self.name}:{client}"

    def hit(self, client: str, limit: int | None = None, *, now: float | None = None) -> float:
        """0 when allowed (and counted), else the seconds until the next one is.  ``now``
        (tests) replaces Redis's clock; without it, the in-process fallback uses ``clock()``."""
        allowed = self.limit if limit is None else limit
        if allowed <= 0:
            return 0.0
        wait = self.counts.hit(self.key(client), allowed, self.window, now)
        if wait is None:
            return super().hit(client, allowed, now=now)
        return wait


def rate_limit_redis_url(settings: Settings | None) -> str | None:
    """The Redis the limits count in: ``KYSO_RATE_LIMIT_URL`` (``memory``: none), else
    ``KYSO_BROKER_URL`` when it is a Redis one; ``None``: each process counts alone."""
    if settings is None:
        return None
    url = getattr(settings, "rate_limit_url", None)
    if url:
        return None if url == "memory" else str(url)
    broker = settings.broker_url
    if broker and broker.startswith(("redis://", "rediss://")):
        return broker
    return None


def app_limiter(request: Request, name: str, limit: int) -> RateLimiter:
    """The app's limiter called ``name`` (kept in its state), made anew when the limit
    configured for it (or the Redis the limits count in) changed."""
    state = request.app.state
    limiters: dict[str, RateLimiter] | None = getattr(state, "kyso_rate_limiters", None)
    if limiters is None:
        limiters = {}
        state.kyso_rate_limiters = limiters
    services = getattr(state, "services", None)
    url = rate_limit_redis_url(getattr(services, "settings", None))
    counts: RedisCounts | None = getattr(state, "kyso_rate_limit_counts", None)
    if counts is not None and counts.url != url:
        counts.close()
        counts = state.kyso_rate_limit_counts = None
    if url is not None and counts is None:
        counts = state.kyso_rate_limit_counts = RedisCounts(url)
    found = limiters.get(name)
    if found is None or found.limit != limit or getattr(found, "counts", None) is not counts:
        found = RateLimiter(limit) if counts is None else RedisRateLimiter(counts, name, limit)
        limiters[name] = found
    return found


def client_address(request: Request) -> str:
    """The address a limit counts by."""
    return request.client.host if request.client else "unknown"


def retry_seconds(wait: float) -> int:
    """The whole seconds of a ``Retry-After`` (at least 1)."""
    return max(math.ceil(wait), 1)


def too_many(wait: float, detail: Callable[[int], str]) -> JSONResponse:
    """The 429 problem+json for a refused call: ``Retry-After`` (whole seconds, at least 1)
    in the header and as ``retry_after`` in the body; ``detail(seconds)`` says it in words."""
    seconds = retry_seconds(wait)
    response = problem_response(
        429, "rate-limited", t("problem.rate-limited"), detail(seconds), retry_after=seconds
    )
    response.headers["Retry-After"] = str(seconds)
    return response
