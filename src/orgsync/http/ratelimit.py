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
    """A thread-safe token bucket: `rate` requests per second, bursts up to `burst`.

    A caller takes a token even when the bucket is empty, driving it negative, and then
    sleeps off its own debt outside the lock; so waiting threads are served in arrival
    order and nobody sleeps while holding the lock.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a positive number of requests per second")
        self._rate = rate
        self._capacity = burst if burst is not None else max(1.0, rate)
        if self._capacity < 1:
            raise ValueError("burst must allow at least one request")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self._capacity
        self._updated = clock()

    def acquire(self) -> float:
        """Take one token, sleeping until it is due; return the seconds slept."""
        with self._lock:
            now = self._clock()
            refill = (now - self._updated) * self._rate
            self._tokens = min(self._capacity, self._tokens + refill)
            self._updated = now
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait
