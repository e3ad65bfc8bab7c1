"""Per-client rate limits of the endpoints anyone may call without an account: the public
verification (``POST /api/v1/verify`` and the ``/verify`` page, ``KYSO_VERIFY_RATE_LIMIT``)
and the peer inbox of the exchange (``POST /api/v1/exchange/inbox`` and ``/status``,
``KYSO_EXCHANGE_INBOX_RATE_LIMIT``).

One sliding log per client address, kept in the app's state: per process, so with several API
replicas each one counts on its own (put a limit in the reverse proxy too where that matters).
The address is the one the app sees (``request.client``): behind a proxy, run uvicorn with
``--proxy-headers`` and ``--forwarded-allow-ips`` so that it is the caller's, not the proxy's.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from fastapi import Request
from fastapi.responses import JSONResponse

from kyso.api.problems import problem_response
from kyso.i18n import t

__all__ = ["WINDOW", "RateLimiter", "app_limiter", "client_address", "retry_seconds", "too_many"]

WINDOW = 60.0
"""Seconds of the sliding window (the limits are "a minute")."""


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


def app_limiter(request: Request, name: str, limit: int) -> RateLimiter:
    """The app's limiter called ``name`` (kept in its state), made anew when the limit
    configured for it changed."""
    state = request.app.state
    limiters: dict[str, RateLimiter] | None = getattr(state, "kyso_rate_limiters", None)
    if limiters is None:
        limiters = {}
        state.kyso_rate_limiters = limiters
    found = limiters.get(name)
    if found is None or found.limit != limit:
        found = limiters[name] = RateLimiter(limit)
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
