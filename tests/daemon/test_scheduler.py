"""The APScheduler wiring only enqueues, once per interval and target, with stable ids."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from orgsync.daemon.scheduler import ReconcileSchedule


def test_each_target_is_enqueued_every_interval_under_a_stable_id() -> None:
    ticks: list[tuple[str, float]] = []
    lock = threading.Lock()

    def enqueue(target: str) -> None:
        with lock:
            ticks.append((target, time.monotonic()))

    schedule = ReconcileSchedule(
        ["a", "b"], interval=timedelta(seconds=1), jitter=timedelta(0), enqueue=enqueue
    )
    assert schedule.job_ids() == ["reconcile:a", "reconcile:b"]
    started = time.monotonic()
    schedule.start()
    try:
        assert schedule.running
        deadline = started + 10
        while time.monotonic() < deadline:
            with lock:
                if all(sum(1 for n, _ in ticks if n == t) >= 2 for t in ("a", "b")):
                    break
            time.sleep(0.05)
    finally:
        schedule.shutdown()
    assert not schedule.running
    for target in ("a", "b"):
        times = [t - started for name, t in ticks if name == target]
        assert len(times) >= 2, ticks
        assert times[0] > 0.9, ticks  # the first tick is one interval after the start
        assert times[1] - times[0] > 0.9, ticks  # and the next one an interval later
