"""The APScheduler 3 wiring: one interval job per target that only enqueues a pass.

The jobs do no work themselves (Flexget's pattern): a job puts a whole-organization
request into the target's mailbox and returns (the worker runs it as an incremental pass;
the engine makes it full at start, every `full_interval`, or when nothing recorded can be
trusted), so a slow run never blocks the scheduler, and `coalesce` plus
`max_instances = 1` make a backlog of missed ticks (a suspended laptop, a stalled
process) one request, not a storm. Job ids are stable (`reconcile:<target>`).
Jitter spreads the runs of several daemons (or several targets) over time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger


class ReconcileSchedule:
    """Calls `enqueue(target)` for every target every `interval` (± `jitter`)."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        interval: timedelta,
        jitter: timedelta,
        enqueue: Callable[[str], None],
    ) -> None:
        seconds = interval.total_seconds()
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
        for target in targets:
            self._scheduler.add_job(
                enqueue,
                trigger=IntervalTrigger(
                    seconds=seconds, jitter=int(jitter.total_seconds()) or None, timezone=UTC
                ),
                args=[target],
                id=f"reconcile:{target}",
                name=f"full reconcile of {target}",
                replace_existing=True,
            )

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

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
