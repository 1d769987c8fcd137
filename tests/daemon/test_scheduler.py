"""The APScheduler wiring only enqueues, once per interval and target, with stable ids."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime, timedelta, tzinfo

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest

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


class _SteppableClock:
    """A wall clock that can be stepped, seen alike by APScheduler and the schedule.

    APScheduler 3 reads `datetime.now` in its scheduler and executor modules; both are
    given this clock, while waits stay on the real monotonic clock, as after a real step.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def datetime_class(self) -> type[datetime]:
        clock = self

        class Stepped(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> Stepped:
                return cls.fromtimestamp(clock.time(), tz)

        return Stepped


def _ticks_around_a_step(
    monkeypatch: pytest.MonkeyPatch,
    step: float,
    *,
    wait_for: int,
    within: float,
    interval: float = 1.0,
) -> tuple[list[float], float]:
    clock = _SteppableClock()
    stepped = clock.datetime_class()
    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", stepped)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", stepped)
    ticks: list[float] = []
    lock = threading.Lock()

    def enqueue(target: str) -> None:
        with lock:
            ticks.append(time.monotonic())

    schedule = ReconcileSchedule(
        ["a"],
        interval=timedelta(seconds=interval),
        jitter=timedelta(0),
        enqueue=enqueue,
        wall_clock=clock.time,
    )
    schedule.start()
    stepped_at = 0.0
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with lock:
                count = len(ticks)
            if count >= 1 and not stepped_at:
                clock.offset += step
                stepped_at = time.monotonic()
            if count >= wait_for:
                break
            time.sleep(0.02)
    finally:
        schedule.shutdown()
    return ticks, stepped_at


def test_a_wall_clock_stepped_back_an_hour_does_not_postpone_the_next_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the watcher, APScheduler waits for the old wall-clock time: an hour.
    ticks, stepped_at = _ticks_around_a_step(monkeypatch, -3600, wait_for=3, within=15)
    assert stepped_at, "the first tick never came"
    assert len(ticks) >= 3, f"{len(ticks)} ticks in 15 s after the clock went back an hour"
    assert ticks[1] - stepped_at < 3.5, ticks


def test_a_wall_clock_stepped_forward_runs_one_pass_not_a_storm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A day of missed one-second ticks is coalesced into one pass, then the rhythm resumes.
    ticks, stepped_at = _ticks_around_a_step(monkeypatch, 86400, wait_for=4, within=10)
    assert stepped_at
    after = [t for t in ticks if t > stepped_at]
    assert len(after) >= 3, ticks
    spacing = [b - a for a, b in itertools.pairwise(after)]
    assert min(spacing) > 0.5, ticks


def test_after_a_suspend_the_overdue_pass_runs_at_once_not_an_interval_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host suspended for a day (the wall clock jumps, the monotonic clock stood
    still): the scheduler slept on until the wait it had started on the monotonic clock
    ended, so the overdue pass came up to one interval after the resume (a day with
    interval = 24h). Now the clock watcher runs it within one of its checks."""
    ticks, stepped_at = _ticks_around_a_step(
        monkeypatch, 86400, wait_for=2, within=20, interval=8.0
    )
    assert stepped_at, "the first tick never came"
    assert len(ticks) >= 2, ticks
    assert ticks[1] - stepped_at < 5.0, (ticks, stepped_at)


def test_a_tick_whose_enqueue_raises_keeps_the_job_and_the_next_tick_runs() -> None:
    """A scheduled job that raises (a bug, a mailbox in a bad state) must not end the
    schedule of its target: APScheduler logs the error and keeps the job."""
    calls: list[float] = []

    def enqueue(target: str) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("the first tick fails")

    schedule = ReconcileSchedule(
        ["a"], interval=timedelta(seconds=1), jitter=timedelta(0), enqueue=enqueue
    )
    schedule.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(calls) >= 3, calls
        assert schedule.job_ids() == ["reconcile:a"]
        assert schedule.next_run("a") is not None
    finally:
        schedule.shutdown()
