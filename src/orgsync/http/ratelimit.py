"""A client-side rate limit shared by every thread using one client.

Some vendors enforce limits they do not document; `[targets] requests_per_second` keeps
orgsync under them. This module imports only the standard library.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """A thread-safe token bucket: `rate` requests per second, bursts up to `burst`, whose
    rate adapts to the server's (AIMD).

    A caller takes a token even when the bucket is empty, driving it negative, and then
    sleeps off its own debt outside the lock; so waiting threads are served in arrival
    order and nobody sleeps while holding the lock.

    The configured rate is a ceiling, not a promise the server keeps: `limited` (a 429, or
    a 503 with Retry-After) halves the rate and holds every caller off for the server's
    Retry-After (at most `max_pause` seconds); `succeeded` brings it back, quickly up to
    just below the rate that was refused (or the rate the server was seen to let through,
    if lower), then creeping, so that a client configured above the server's limit
    settles just under it instead of paying a refusal, and a wait, every few requests.
    """

    RECOVER = 1.05
    """Multiplicative step per success while well below the rate last refused."""
    BELOW = 0.95
    """Where the quick recovery stops, as a share of the rate last refused."""
    CREEP = 0.0002
    """Additive step per success, as a share of the ceiling, from there on: at 50 requests
    a second toward a ceiling of 60, the rate grows by 0.6 a second, so a server bucket
    holding a second's worth lasts about 13 s of overshoot before the next refusal."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_pause: float = math.inf,
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a positive number of requests per second")
        if not max_pause >= 0:
            raise ValueError("max_pause must not be negative")
        self._max_pause = max_pause
        self._ceiling = rate
        self._rate = rate
        self._floor = rate / 64
        self._capacity = burst if burst is not None else max(1.0, rate)
        if self._capacity < 1:
            raise ValueError("burst must allow at least one request")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self._capacity
        self._updated = clock()
        self._refused_at = math.inf  # the rate the server last refused
        self._calm_after = -math.inf  # refusals before this are of requests sent too fast
        self._passed = 0  # requests through since `_counting_from`
        self._counting_from = self._updated

    @property
    def rate(self) -> float:
        """The rate in force now (requests per second)."""
        return self._rate

    def acquire(self) -> float:
        """Take one token, sleeping until it is due; return the seconds slept."""
        with self._lock:
            self._refill()
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait

    def limited(self, retry_after: float | None) -> None:
        """The server refused a request for its rate: halve ours, and let nobody send
        before `retry_after` seconds (when given) have passed."""
        with self._lock:
            now = self._refill()
            # Requests already in flight when the first refusal came back were sent at
            # the old rate: their refusals must not halve it again and again.
            if now < self._calm_after:
                return
            # What the server let through since the last refusal bounds its limit better
            # than the rate we asked for (slightly above it: its burst counts too).
            spent = now - self._counting_from
            passed = self._passed / spent if spent > 0 and self._passed else math.inf
            self._refused_at = min(self._rate, passed)
            self._rate = max(self._floor, min(self._rate / 2, self._refused_at * self.BELOW))
            # Capped as the retry policy caps one wait: a Retry-After of hours (a broken
            # or hostile server) would otherwise hold every later call of every thread,
            # an apply's included (a stop request does not end an apply's waits), for
            # those hours, and the daemon would silently stop reconciling.
            pause = min(max(0.0, retry_after or 0.0), self._max_pause)
            self._tokens = min(self._tokens, 0.0) - pause * self._rate
            self._calm_after = now + max(pause, 1.0)
            self._passed, self._counting_from = 0, now + pause

    def succeeded(self) -> None:
        """A request went through: raise the rate a step, up to the configured one."""
        with self._lock:
            self._passed += 1
            if self._rate >= self._ceiling:
                return
            self._refill()
            if self._rate * self.RECOVER < self._refused_at * self.BELOW:
                self._rate *= self.RECOVER
            else:
                self._rate += self._ceiling * self.CREEP
            self._rate = min(self._rate, self._ceiling)

    def _refill(self) -> float:
        """Credit the tokens earned since the last update, at the rate in force."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        return now
