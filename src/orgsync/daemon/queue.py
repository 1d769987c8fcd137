"""Work for one target: sync requests, merged into at most one pending request.

The scheduler and the webhooks `put` requests; the target's worker `take`s them. Nothing
queues up behind a busy worker: whatever arrives while a run is going on is merged into
the single pending request (a full reconcile absorbs targeted ones; targeted ones add up
their people), which is how a burst of webhooks becomes one run.

Webhook requests are *debounced*: the pending request becomes due only once no event has
arrived for `debounce` seconds (but never later than `max_wait` after the first one), so
the events of one change in the IdP, which arrive as a burst, are planned together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

MAX_TARGETED_PEOPLE = 1000
"""A targeted request naming more people than this becomes a full reconcile: one read of
the whole organization is then cheaper, and a full plan is never less safe."""


SCHEDULED = "schedule"
"""The trigger of the schedule's passes (incremental between `full_interval`s)."""


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """A reason to reconcile one target; naming nobody means the whole organization."""

    trigger: str
    """Recorded in the run history: `startup`, `schedule`, `webhook:generic`, …"""
    emails: frozenset[str] = frozenset()
    source_ids: frozenset[str] = frozenset()
    queued: frozenset[str] = frozenset()
    """Ids of the state database's webhook queue rows this request serves, marked done
    once its run has finished (`orgsync.daemon.relay`)."""
    absorbed: bool = field(default=False, compare=False)
    """A full request into which a targeted one (a webhook's people) was merged: another
    replica's earlier reconcile does not stand for it (`daemon.worker`)."""

    @property
    def full(self) -> bool:
        return not (self.emails or self.source_ids)

    def widened(self, trigger: str | None = None) -> SyncRequest:
        """The same request for the whole organization."""
        return SyncRequest(trigger or self.trigger, queued=self.queued)

    def capped(self) -> SyncRequest:
        """This request, or the full one when it names more than `MAX_TARGETED_PEOPLE`."""
        if len(self.emails) + len(self.source_ids) > MAX_TARGETED_PEOPLE:
            return self.widened()
        return self

    def merge(self, other: SyncRequest) -> SyncRequest:
        """One request doing the work of both (and serving the queue rows of both)."""
        queued = self.queued | other.queued
        if self.full:
            absorbed = self.absorbed or not other.full
            return replace(self, queued=queued, absorbed=absorbed)
        if other.full:
            return replace(other, queued=queued, absorbed=True)
        merged = SyncRequest(
            self.trigger,
            self.emails | other.emails,
            self.source_ids | other.source_ids,
            queued,
        )
        return merged.capped()


class Mailbox:
    """One target's pending work: at most one merged request, and when it becomes due.

    Thread-safe. Times are `clock()` seconds (monotonic by default).
    """

    def __init__(
        self,
        *,
        debounce: float = 1.0,
        max_wait: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._debounce = debounce
        self._max_wait = max_wait if max_wait is not None else max(10 * debounce, 5.0)
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: SyncRequest | None = None
        self._first_at = 0.0
        self._due = 0.0
        self._closed = False
        self.received = 0
        """Requests put since the start (for logs and tests)."""

    def put(self, request: SyncRequest, *, debounce: bool = False, delay: float = 0.0) -> None:
        """Add work. `debounce`: due after a quiet period; `delay`: not sooner than that."""
        with self._cond:
            if self._closed:
                return
            now = self._clock()
            request = request.capped()
            if self._pending is None:
                self._pending, self._first_at, self._due = request, now, now
            else:
                self._pending = self._pending.merge(request)
            self.received += 1
            if debounce:
                quiet = min(now + self._debounce, self._first_at + self._max_wait)
                self._due = max(self._due, quiet)
            if delay > 0:
                self._due = max(self._due, now + delay)
            self._cond.notify_all()

    def take(self, *, not_before: float | None = None) -> SyncRequest | None:
        """Wait for due work and return it (emptying the box); None once closed.

        `not_before`: a time (same clock) before which nothing is handed out whatever is
        pending (a quarantined target's next attempt).
        """
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = self._clock()
                due = max(self._due, not_before or 0.0)
                if self._pending is not None and now >= due:
                    request, self._pending = self._pending, None
                    return request
                timeout = due - now if self._pending is not None else None
                if not_before is not None and self._pending is None:
                    timeout = None  # nothing to wait for but new work or close
                self._cond.wait(timeout)

    def pending(self) -> SyncRequest | None:
        with self._cond:
            return self._pending

    def close(self) -> None:
        """Wake the worker for good; pending work is dropped (the next start does a full
        reconcile anyway)."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()
