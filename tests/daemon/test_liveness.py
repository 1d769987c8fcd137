"""`daemon.liveness.Activity`: whose run a report of progress counts for.

A report that names its target counts for it; one from a worker thread counts for that
worker's target; one that can be attributed to nobody counts for every run in progress,
so that it may hide a stall for a while but never invent one. Reports reach the metrics
unchanged.
"""

from __future__ import annotations

import threading

from orgsync.core.ports import RunObserver
from orgsync.daemon.liveness import Activity
from orgsync.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _activity(clock: Clock, observer: RunObserver | None = None) -> Activity:
    return Activity(["a", "b"], observer or Metrics(), stall_after=60, clock=clock)


def test_no_run_is_never_stalled_and_a_silent_run_is_after_stall_after() -> None:
    clock = Clock()
    activity = _activity(clock)
    clock.now += 10_000
    assert activity.stalled("a") is None  # nothing running
    activity.begun("a")
    clock.now += 59
    assert activity.stalled("a") is None
    clock.now += 2
    assert activity.stalled("a") == 61
    activity.ended("a")
    assert activity.stalled("a") is None


def test_a_report_naming_a_target_counts_for_that_target_only() -> None:
    clock = Clock()
    activity = _activity(clock)
    activity.begun("a")
    activity.begun("b")
    clock.now += 100
    activity.operation_finished("a", "invite", "done")
    assert activity.stalled("a") is None
    assert activity.stalled("b") == 100


def test_a_worker_thread_s_report_counts_for_its_target_and_others_for_all() -> None:
    clock = Clock()
    activity = _activity(clock)
    activity.begun("a")
    activity.begun("b")
    clock.now += 100

    def respond() -> None:
        activity.http_response("source:ldap", 200)

    worker = threading.Thread(target=respond, name="worker:b")
    worker.start()
    worker.join()
    assert activity.stalled("a") == 100
    assert activity.stalled("b") is None

    clock.now += 100
    pool = threading.Thread(target=respond, name="ThreadPoolExecutor-0_0")
    pool.start()
    pool.join()
    assert activity.stalled("a") is None and activity.stalled("b") is None


def test_reports_reach_the_metrics() -> None:
    metrics = Metrics()
    activity = _activity(Clock(), metrics)
    activity.run_finished("a", "ok", held=2, seconds=1.5)
    activity.http_response("a", 200)
    activity.source_read(7)
    text = metrics.exposition().decode()
    assert 'orgsync_runs_total{result="ok",target="a"} 1.0' in text
    assert 'orgsync_held_operations{target="a"} 2.0' in text
    assert 'orgsync_http_requests_total{status="200",system="a"} 1.0' in text
    assert "orgsync_source_people 7.0" in text
