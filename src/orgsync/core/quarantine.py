"""Quarantine: a target that fails every run is tried less and less often.

After `after` consecutive failed runs the target is quarantined: its next run waits
`interval * 2 ** (failures - after + 1)`, growing towards `ceiling` (one day by default)
and never beyond, counted from the end of the last failure. One clean run (ok or held)
ends it. The state is *derived from the run history* in the state database, so it
survives restarts, is shared by every daemon using that database, and `orgsync status`
reads the same answer the daemon acts on. Only the daemon's own write runs count
(`origin = daemon`, mode sync): an operator's `orgsync sync` or dry run, failing on a
credential unset in their shell or refused because the daemon was writing, says nothing
about the daemon's target and never quarantines it (nor ends a quarantine). Interrupted
runs (shutdown, a killed process) neither count as failures nor end a quarantine.

Pure: the caller passes the history and the clock's reading.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

HISTORY = 200
"""Runs to read: enough to see the back-off reach its ceiling from any sane interval."""

_NEUTRAL = frozenset({"running", "interrupted"})

DAEMON_WRITES = {"origin": "daemon", "mode": "sync"}
"""The run history filter (`StateStore.runs`) of the runs this policy reads."""


class RunLike(Protocol):
    """The fields of a run record (`orgsync.store.RunRecord`) this policy reads."""

    @property
    def mode(self) -> str: ...
    @property
    def origin(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def error(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Quarantine:
    """A target's standing: failures since its last clean run, and when it may run next."""

    failures: int = 0
    quarantined: bool = False
    next_run_at: datetime | None = None
    """Not before this (None: whenever asked)."""
    last_error: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "quarantined": self.quarantined,
            "consecutive_failures": self.failures,
            "next_run_at": self.next_run_at.isoformat().replace("+00:00", "Z")
            if self.next_run_at
            else None,
            "last_error": self.last_error,
        }


def daemon_writes(newest_first: Iterable[RunLike]) -> Iterator[RunLike]:
    """The runs that speak for the daemon's target: its own syncs (see the module doc)."""
    return (run for run in newest_first if run.mode == "sync" and run.origin == "daemon")


def backoff(failures: int, *, after: int, interval: timedelta, ceiling: timedelta) -> timedelta:
    """The wait after `failures` consecutive failures (zero below the threshold)."""
    if failures < after:
        return timedelta(0)
    # In float seconds, with the exponent capped: a long quarantine's 2**n intervals
    # would overflow timedelta long before the ceiling is applied.
    steps = min(failures - after + 1, 64)
    seconds = min(interval.total_seconds() * 2.0**steps, ceiling.total_seconds())
    return timedelta(seconds=seconds)


def assess(
    newest_first: Iterable[RunLike], *, after: int, interval: timedelta, ceiling: timedelta
) -> Quarantine:
    """The quarantine standing implied by a target's run history (newest run first)."""
    failures = 0
    last_failure: RunLike | None = None
    for run in daemon_writes(newest_first):
        if run.status in _NEUTRAL:
            continue
        if run.status != "failed":
            break
        failures += 1
        last_failure = last_failure or run
    if last_failure is None or failures < after or last_failure.finished_at is None:
        return Quarantine(
            failures=failures, last_error=last_failure.error if last_failure else None
        )
    wait = backoff(failures, after=after, interval=interval, ceiling=ceiling)
    return Quarantine(
        failures=failures,
        quarantined=True,
        next_run_at=last_failure.finished_at + wait,
        last_error=last_failure.error,
    )
