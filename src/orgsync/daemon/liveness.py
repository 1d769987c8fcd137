"""Whether each target's run in progress is getting anywhere: a stalled run is reported.

Every call orgsync makes has a timeout, but a timeout bounds one wait, not a call: a
server that sends a byte within each read timeout (a broken proxy, a hostile endpoint)
holds a call for ever, and so does anything that waits without a timeout (a PostgreSQL
backend frozen with SIGSTOP: its own statement timeout runs in the frozen process, and
its kernel still answers the keepalives). The target's worker thread was then alive, so
`/healthz` said ok and the systemd watchdog was fed; `/readyz` looked at finished runs
only: the daemon looked healthy and reconciled nothing, for as long as it lived.

So the engine's reports (each HTTP response from the source or a target, each phase of a
run begun or ended, each operation applied) reset a clock per target while its run is in
progress, and a run with no progress for `[schedule] stall_after` is *stalled*: `/healthz`
answers 503 (`progress:<target>` false) and the systemd watchdog is no longer fed, so the
service manager or the orchestrator restarts the daemon (the journal is crash-safe; the
start reconciles); `/readyz` names the target; the status page shows it. A report from a
thread that names no target and is not a worker's (a source reading pages in a pool)
counts for every run in progress: it can hide a stall for a while, never invent one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from orgsync.core.plan import Plan
from orgsync.core.ports import RunObserver

WORKER_THREAD_PREFIX = "worker:"
"""Worker threads are named `worker:<target>` (`daemon.worker`)."""


class Activity:
    """The engine's observer and progress (forwarding to `observer`), clocking each
    target's run in progress."""

    def __init__(
        self,
        targets: Iterable[str],
        observer: RunObserver,
        *,
        stall_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._targets = frozenset(targets)
        self._observer = observer
        self.stall_after = stall_after
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        """Target -> when its run in progress last showed progress."""

    # ------------------------------------------------------------------ the worker's

    def begun(self, target: str) -> None:
        with self._lock:
            self._last[target] = self._clock()

    def ended(self, target: str) -> None:
        with self._lock:
            self._last.pop(target, None)

    def stalled(self, target: str) -> float | None:
        """Seconds the target's run in progress has shown no progress, when that is at
        least `stall_after`; else None (no run, or a run getting on)."""
        with self._lock:
            last = self._last.get(target)
        if last is None:
            return None
        idle = self._clock() - last
        return idle if idle >= self.stall_after else None

    def _touch(self, target: str | None) -> None:
        now = self._clock()
        if target not in self._targets:
            name = threading.current_thread().name
            if name.startswith(WORKER_THREAD_PREFIX):
                target = name[len(WORKER_THREAD_PREFIX) :]
        with self._lock:
            if target in self._last:
                self._last[target] = now
            else:
                for running in self._last:
                    self._last[running] = now

    # ------------------------------------------------------------------ RunObserver

    def source_read(self, people: int) -> None:
        self._touch(None)
        self._observer.source_read(people)

    def http_response(self, system: str, status: int) -> None:
        self._touch(None)
        self._observer.http_response(system, status)

    def operation_finished(self, target: str, op: str, result: str) -> None:
        self._touch(target)
        self._observer.operation_finished(target, op, result)

    def run_finished(self, target: str, status: str, *, held: int, seconds: float) -> None:
        self._touch(target)
        self._observer.run_finished(target, status, held=held, seconds=seconds)

    # ------------------------------------------------------------------ RunProgress

    def begin(self, phase: str, target: str | None, total: int | None) -> None:
        self._touch(target)

    def advance(self, phase: str, target: str | None) -> None:
        self._touch(target)

    def end(self, phase: str, target: str | None, count: int, unit: str) -> None:
        self._touch(target)

    def planned(self, plan: Plan) -> None:
        self._touch(plan.target)
