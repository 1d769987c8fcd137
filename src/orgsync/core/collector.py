"""The cyclic garbage collector paused while the pure core builds a plan.

Building a desired state and a plan for 100k people allocates a few hundred thousand
container objects (sets, records, operations) that all live until the plan is returned.
Every 700 allocations CPython runs a collection, and the survivors soon trigger full
collections that walk everything alive, the whole source and target snapshots included
(millions of objects): at 100k people / 1M memberships that was about a quarter of the
planning CPU, for nothing, since the build makes no garbage cycles worth collecting (its
objects are either returned or dropped by reference counting). The core does no I/O and
runs for a bounded time, so the collector is paused for that time only; whatever the
pause defers is collected as usual afterwards.

Threads (the daemon plans one target per worker) share the collector: it resumes when
the last paused build ends, and only if it was running when the first one began.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _Pauses:
    """How many builds run with the collector paused, and whether to resume it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._resume = False

    def begin(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._depth += 1

    def end(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._resume:
                gc.enable()


_PAUSES = _Pauses()


def paused(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `function` (a pure build) with the cyclic collector paused."""

    @wraps(function)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        _PAUSES.begin()
        try:
            return function(*args, **kwargs)
        finally:
            _PAUSES.end()

    return run
