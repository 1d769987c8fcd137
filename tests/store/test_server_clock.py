"""The store's clock on PostgreSQL is the server's (`orgsync.store.db.ServerClock`), on
a real server: whatever this host's clock says, and without a round trip per time read.

How it could hurt an administrator if it were wrong: every shared time (missing-since,
runs, baselines, the journal, the queue) is read through it, so a host clock stepped by
NTP, or simply wrong, must not move it; and a query per journal row would slow every
apply down (see tests/daemon/test_replicas_clock.py for the harms themselves).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orgsync.store import StateStore
from orgsync.store.db import ServerClock, server_now

CLOSE = timedelta(seconds=5)


class Host:
    """This host's clock, which the test steps (NTP correcting it, a wrong setting)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def asked(store: StateStore) -> datetime:
    with store.db.read() as session:
        return server_now(store.db, session)


def test_the_store_reads_the_servers_clock_whatever_the_hosts_says(postgres_url: str) -> None:
    host = Host(timedelta(hours=-3))
    with capture_logs() as logs, StateStore.open(postgres_url, clock=host) as store:
        assert isinstance(store.db.clock, ServerClock)
        assert abs(store.clock() - asked(store)) < CLOSE
        # NTP steps the host's clock (a day ahead): the store's clock does not follow.
        host.offset = timedelta(days=1)
        assert abs(store.clock() - asked(store)) < CLOSE
        run_id = store.start_run("t", "sync")
        run = store.run(run_id)
        assert run is not None and abs(run.started_at - asked(store)) < CLOSE
    # The operator is told once that this host's clock is off.
    skews = [entry for entry in logs if entry["event"] == "state.clock_skew"]
    assert len(skews) == 1 and -10_900 < skews[0]["seconds"] < -10_700, skews


def test_times_between_two_answers_cost_no_round_trip(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with StateStore.open(postgres_url) as store:
        clock = store.db.clock
        assert isinstance(clock, ServerClock)
        asked_again: list[float] = []
        refresh = clock.refresh
        assert refresh is not None

        def counted() -> None:
            asked_again.append(time.monotonic())
            refresh()

        clock.refresh = counted
        first = store.clock()
        times = [store.clock() for _ in range(10_000)]
        assert asked_again == [], "a time read asked the server"
        assert times == sorted(times) and first <= times[0]
        # With no lease query for REFRESH seconds, the next read asks the server once.
        monkeypatch.setattr(ServerClock, "REFRESH", 0.0)
        store.clock()
        assert len(asked_again) == 1
        assert abs(store.clock() - asked(store)) < CLOSE


def test_each_server_answer_sets_the_clock_again(postgres_url: str) -> None:
    with StateStore.open(postgres_url) as store:
        clock = store.db.clock
        assert isinstance(clock, ServerClock)
        # A server answer an hour ahead (its clock stepped): what is read from then on.
        clock.observe(time.time() + 3600, *([clock_now()] * 2))
        assert store.clock() - datetime.now(UTC) > timedelta(minutes=59)
        asked(store)  # a lease's query: the server's real time again
        assert abs(store.clock() - datetime.now(UTC)) < CLOSE


def clock_now() -> float:
    """The boot clock `ServerClock` measures elapsed time on."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def test_sqlite_keeps_the_hosts_clock(tmp_path: Path) -> None:
    """One host: its clock is the store's (nothing to agree with)."""
    host = Host(timedelta(hours=2))
    with StateStore.open(tmp_path / "state.db", clock=host) as store:
        assert not isinstance(store.db.clock, ServerClock)
        assert abs(store.clock() - host()) < CLOSE


def test_a_chosen_clock_is_kept_on_postgresql_when_asked(postgres_url: str) -> None:
    """For tests of the SQL only (`server_clock=False`); never for replicas."""
    fixed = datetime(2030, 1, 1, tzinfo=UTC)
    with StateStore.open(postgres_url, clock=lambda: fixed, server_clock=False) as store:
        assert store.clock() == fixed
