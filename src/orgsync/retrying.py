"""The one retry policy of orgsync: which errors are retried, how long to wait, when to stop.

Every retrying caller (the HTTP client of the targets, the source adapters, the applier)
builds its `tenacity.Retrying` here, so "transient" means the same thing everywhere:
`orgsync.core.errors.TransientError` and nothing else. Waits honour the server's
`Retry-After` (carried on the error as `retry_after`) and otherwise back off exponentially
with full jitter, so that many workers hitting one rate limit spread out instead of
retrying in lockstep.

`max_delay` is both the longest single wait and the total budget of one call, counted as
the larger of wall-clock time since the first attempt and the sum of the waits (the latter
keeps the budget exact when `sleep` is a test fake that returns at once). A `Retry-After`
that does not fit in what is left of the budget stops the retries at once: sending earlier
than the server asked would only earn another 429.

This module may import only tenacity, the standard library and `orgsync.core`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import tenacity

from orgsync.core.errors import TransientError

__all__ = ["RetrySettings", "retry_policy"]


def _spent(state: tenacity.RetryCallState) -> float:
    """Seconds of the budget used so far (see the module docstring for why the max)."""
    elapsed = state.seconds_since_start or 0.0
    return max(elapsed, state.idle_for)


def _server_delay(state: tenacity.RetryCallState) -> float | None:
    """The `retry_after` of the failed attempt's error, if it carries one."""
    if state.outcome is None or not state.outcome.failed:
        return None
    error = state.outcome.exception()
    if isinstance(error, TransientError) and error.retry_after is not None:
        return max(0.0, error.retry_after)
    return None


class _Wait(tenacity.wait.wait_base):
    """Wait what the server asked for, else full-jitter exponential backoff."""

    def __init__(self, *, base: float, cap: float, max_delay: float) -> None:
        self._backoff = tenacity.wait_random_exponential(multiplier=base, max=cap)
        self._max_delay = max_delay

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        requested = _server_delay(retry_state)
        if requested is not None:
            # Capped so that a hostile or broken header cannot park a worker for a day;
            # the stop condition then refuses to retry if even that does not fit.
            return min(requested, self._max_delay)
        # Jittered backoff is arbitrary anyway, so shortening it to the remaining budget
        # costs nothing and still gives the call its last chance.
        remaining = max(0.0, self._max_delay - _spent(retry_state))
        return min(float(self._backoff(retry_state)), remaining)


class _StopWhenBudgetSpent(tenacity.stop.stop_base):
    """Stop when the next wait would end beyond the total budget."""

    def __init__(self, max_delay: float) -> None:
        self._max_delay = max_delay

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        spent = _spent(retry_state)
        if spent >= self._max_delay:
            return True
        # The tolerance keeps a backoff trimmed to exactly the remaining budget allowed.
        return spent + retry_state.upcoming_sleep > self._max_delay + 1e-9


def retry_policy(
    *,
    max_attempts: int = 6,
    max_delay: float = 60.0,
    base: float = 0.5,
    cap: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tenacity.Retrying:
    """Build the retry policy: retry `TransientError` only, and re-raise the last error.

    Args:
        max_attempts: attempts in total, the first included (1 disables retries).
        max_delay: the longest single wait and the total time budget, in seconds.
        base: the first backoff window in seconds; the window doubles per attempt.
        cap: the largest backoff window in seconds (a server's `Retry-After` may exceed it).
        sleep: how to wait; tests pass a fake.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if max_delay < 0 or base < 0 or cap < 0:
        raise ValueError("max_delay, base and cap must not be negative")
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        stop=tenacity.stop_after_attempt(max_attempts) | _StopWhenBudgetSpent(max_delay),
        wait=_Wait(base=base, cap=cap, max_delay=max_delay),
        sleep=sleep,
        reraise=True,
    )


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """The configurable knobs of `retry_policy`, as the configuration carries them."""

    max_attempts: int = 6
    max_delay: float = 60.0
    base: float = 0.5
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_delay < 0 or self.base < 0 or self.cap < 0:
            raise ValueError("max_delay, base and cap must not be negative")

    def policy(self, *, sleep: Callable[[float], None] = time.sleep) -> tenacity.Retrying:
        """A fresh `Retrying` for one call (tenacity keeps per-call statistics on it)."""
        return retry_policy(
            max_attempts=self.max_attempts,
            max_delay=self.max_delay,
            base=self.base,
            cap=self.cap,
            sleep=sleep,
        )
