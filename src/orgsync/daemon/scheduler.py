"""The APScheduler 3 wiring: one interval job per target that only enqueues a pass.

The jobs do no work themselves (Flexget's pattern): a job puts a whole-organization
request into the target's mailbox and returns (the worker runs it as an incremental pass;
the engine makes it full at start, every `full_interval`, or when nothing recorded can be
trusted), so a slow run never blocks the scheduler, and `coalesce` plus
`max_instances = 1` make a backlog of missed ticks (a suspended laptop, a stalled
process) one request, not a storm. Job ids are stable (`reconcile:<target>`).
Jitter spreads the runs of several daemons (or several targets) over time.

After a suspend of the host (or a paused VM, or a clock stepped forward) the overdue pass
runs as soon as the watcher below sees the wall clock jump ahead of the monotonic one,
not when the scheduler's wait on the monotonic clock ends (up to an interval later).

APScheduler 3 keeps next run times on the wall clock, so a wall clock stepped backwards
(an NTP correction of a clock that ran ahead, a restored VM) would postpone every pass by
the size of the step: a clock corrected from a year ahead would stop reconciling for a
year. A watcher compares the wall clock with the monotonic one and, on a backward step,
moves each next run back by the step, keeping its phase.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = structlog.get_logger(__name__)

# A step smaller than this is drift or a slew, not worth rescheduling over.
CLOCK_STEP_TOLERANCE = 2.0
# How often the watcher compares the clocks (or once per interval, if that is shorter).
CLOCK_CHECK_EVERY = 5.0


class ReconcileSchedule:
    """Calls `enqueue(target)` for every target every `interval` (± `jitter`)."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        interval: timedelta,
        jitter: timedelta,
        enqueue: Callable[[str], None],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        seconds = interval.total_seconds()
        self._interval = interval
        self._wall_clock = wall_clock
        self._check_every = min(CLOCK_CHECK_EVERY, max(0.1, seconds / 2))
        self._stopped = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch_clock, name="orgsync-clock-watch", daemon=True
        )
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            # One thread is plenty: a job only puts a request into a mailbox.
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                # A tick late by up to one interval still runs (once, coalesced).
                "misfire_grace_time": max(1, int(seconds)),
            },
            daemon=True,
        )
        self._enqueue = enqueue
        self._jitter = int(jitter.total_seconds()) or None
        for target in targets:
            self._scheduler.add_job(
                enqueue,
                trigger=self._trigger(),
                args=[target],
                id=f"reconcile:{target}",
                name=f"full reconcile of {target}",
                replace_existing=True,
            )

    def _trigger(self, start: datetime | None = None) -> IntervalTrigger:
        return IntervalTrigger(
            seconds=self._interval.total_seconds(),
            jitter=self._jitter,
            start_date=start,
            timezone=UTC,
        )

    def start(self) -> None:
        self._scheduler.start()
        self._watcher.start()

    def shutdown(self) -> None:
        self._stopped.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _watch_clock(self) -> None:
        # Event.wait runs on the monotonic clock, which no clock step moves.
        offset = self._wall_clock() - time.monotonic()
        while not self._stopped.wait(self._check_every):
            current = self._wall_clock() - time.monotonic()
            step, offset = current - offset, current
            if step < -CLOCK_STEP_TOLERANCE:
                self._clock_went_back(-step)
            elif step > CLOCK_STEP_TOLERANCE:
                self._clock_went_forward(step)

    def _clock_went_forward(self, seconds: float) -> None:
        """The host resumed from a suspend (a VM from a pause; the monotonic clock stood
        still) or the clock was stepped forward: the scheduler sleeps on until the time it
        had planned on the monotonic clock, up to one interval (a day with interval =
        24h) before the overdue pass. Each overdue pass runs now, once, and its ticks go
        on one interval from now (so no tick of the old rhythm follows it closely)."""
        now = datetime.fromtimestamp(self._wall_clock(), UTC)
        log.info("schedule.clock_stepped_forward", seconds=round(seconds, 1))
        for job in self._scheduler.get_jobs():
            when = getattr(job, "next_run_time", None)
            if not isinstance(when, datetime) or when > now:
                continue  # paused, or already run by the scheduler itself
            with contextlib.suppress(JobLookupError):
                self._scheduler.reschedule_job(
                    job.id, trigger=self._trigger(start=now + self._interval)
                )
                self._enqueue(*job.args)

    def _clock_went_back(self, seconds: float) -> None:
        step = timedelta(seconds=seconds)
        now = datetime.fromtimestamp(self._wall_clock(), UTC)
        log.warning("schedule.clock_stepped_back", seconds=round(seconds, 1))
        for job in self._scheduler.get_jobs():
            when = getattr(job, "next_run_time", None)
            if not isinstance(when, datetime):
                continue  # paused, or being removed
            # Never later than one interval from now, whatever the step.
            moved = min(max(when - step, now), now + self._interval)
            if moved < when:
                self._scheduler.modify_job(job.id, next_run_time=moved)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def next_run(self, target: str) -> datetime | None:
        """When `target`'s next full reconcile is due (None: not scheduled, or stopped)."""
        job = self._scheduler.get_job(f"reconcile:{target}")
        when = getattr(job, "next_run_time", None) if job is not None else None
        return when if isinstance(when, datetime) else None

    def job_ids(self) -> list[str]:
        return sorted(job.id for job in self._scheduler.get_jobs())
