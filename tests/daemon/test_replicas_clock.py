"""Red team of replicas whose host clocks disagree, on one PostgreSQL state database.

Leases are decided on the server's clock; everything else a replica writes that another
reads as a time must be on one clock too. How a wrong host clock (NTP broken on one host,
a VM restored with its old clock) could hurt an administrator when each replica wrote
its own clock's times:

1. Lost access: a replica whose clock runs behind records a leaver's missing-since in
   the past, and the next replica (right clock) finds `removal_grace` already over and
   removes them at once; a replica whose clock runs ahead does the same from its side
   (it reads a grace as over early). Extra access: a missing-since recorded ahead
   lengthens the grace.
2. A daemon that stops catching drift: a replica whose clock runs ahead (by less than
   `passes.CLOCK_STEP_ALLOWANCE`, which would otherwise make the next pass full)
   records its full pass in the future, and the others' next full pass waits for it;
   one behind makes them run full passes too often.
3. A replica whose clock runs ahead stamps its runs in the future: its old failed run
   sorts as the newest (`status`, quarantine and `/readyz` read the newest runs, and
   pruning keeps "the newest"), and its reconcile stays "just done" for the others'
   workers, which drop their scheduled reconciles as done elsewhere while it is dead.

Each test runs two replicas (engines or stores in one process, each with its own
connections and instance) against the real PostgreSQL of tests/postgres.py, one of them
with a skewed host clock (`Skewed`: the system clock plus an offset, given to its engine
and to its store as a host's clock is); the real file source and the OpenAI emulator
over loopback. The store's clock on PostgreSQL is the server's (`store.db.ServerClock`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orgsync.config import Config, parse_config
from orgsync.core.quarantine import Quarantine
from orgsync.daemon.queue import Mailbox, SyncRequest
from orgsync.daemon.status_page import StatusPage
from orgsync.daemon.worker import TargetWorker
from orgsync.engine import Engine
from orgsync.results import RunOptions, TargetResult
from orgsync.store import StateStore
from orgsync.store.db import encode_time, server_now
from orgsync.store.runs import Origin
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, KEY_ENV, directory, holdings
from tests.engine.differential import one, openai_target

AHEAD = timedelta(hours=2)
CLOSE = timedelta(seconds=30)
"""How far a shared time may be from the server's (a test's own run time, and more)."""


class Skewed:
    """A host's clock: the system's plus `offset` (NTP broken on that host)."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def config(folder: Path, emulator: OpenAIEmulator, url: str, **schedule: str) -> Config:
    document: dict[str, Any] = {
        "source": {"type": "file", "path": "directory.json"},
        "targets": [{**openai_target(emulator), "max_retry_delay": "100ms"}],
        "safety": {"max_removals": 10, "max_removal_ratio": 1.0, "removal_grace": "1h"},
        "state": {"url": url, "lease_ttl": "3s"},
        "schedule": {"interval": "1s", "jitter": "0s", **schedule},
    }
    return parse_config(document, origin="test", base_dir=folder)


def write(folder: Path, document: dict[str, Any]) -> None:
    (folder / "directory.json").write_text(json.dumps(document), encoding="utf-8")


def replica(cfg: Config, url: str, offset: timedelta = timedelta(0)) -> Engine:
    """One replica: a daemon's engine on a host whose clock is `offset` off."""
    clock = Skewed(offset)
    return Engine(
        cfg,
        environ={KEY_ENV: API_KEY},
        clock=clock,
        store=StateStore.open(url, clock=clock),
        origin="daemon",
    )


def server_time(url: str) -> datetime:
    with StateStore.open(url) as store, store.db.read() as session:
        return server_now(store.db, session)


def waiting(result: TargetResult) -> set[str]:
    """Who the run's plan keeps waiting out their removal grace."""
    assert result.status == "ok" and result.plan is not None, result
    return {w.email for w in result.plan.waiting}


def missing_since(url: str, email: str) -> datetime:
    with StateStore.open(url) as store:
        return store.memory("t").missing_since[email]  # type: ignore[index]


def test_a_replica_whose_clock_runs_behind_does_not_cut_a_leavers_grace_short(
    tmp_path: Path, postgres_url: str
) -> None:
    """Harm 1 (lost access): person3 leaves the directory; the replica two hours behind
    runs the pass that first sees them missing, then the target moves to a replica with
    the right clock. `removal_grace` is one hour: person3 must keep access now."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        cfg = config(tmp_path, emulator, postgres_url)
        write(tmp_path, directory(4))
        behind, right = replica(cfg, postgres_url, -AHEAD), replica(cfg, postgres_url)
        try:
            assert one(right.run(RunOptions(dry_run=False))).status == "ok"
            assert "person3@example.com" in holdings(emulator)
            write(tmp_path, directory(3))
            first = one(behind.run(RunOptions(dry_run=False)))
            assert waiting(first) == {"person3@example.com"}, first
            noted = server_time(postgres_url)
            second = one(right.run(RunOptions(dry_run=False)))
            assert "person3@example.com" in holdings(emulator), "removed before its grace"
            assert waiting(second) == {"person3@example.com"}, second
            since = missing_since(postgres_url, "person3@example.com")
            assert abs(since - noted) < CLOSE, since
            # And the replica behind, deciding again, still counts from the same time.
            incremental = one(behind.run(RunOptions(dry_run=False, incremental=True)))
            assert incremental.status == "ok", incremental
            assert "person3@example.com" in holdings(emulator), "removed before its grace"
        finally:
            behind.close()
            right.close()


def test_a_replica_whose_clock_runs_ahead_reads_no_grace_as_over_early(
    tmp_path: Path, postgres_url: str
) -> None:
    """Harm 1 from the other side: the right replica first sees person3 missing; the one
    whose clock runs two hours ahead takes the target over and must not remove them
    (its own clock says the hour of grace is long over). The missing-since it keeps
    recording is the server's time, not two hours ahead (which would lengthen it)."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        cfg = config(tmp_path, emulator, postgres_url)
        write(tmp_path, directory(4))
        ahead, right = replica(cfg, postgres_url, AHEAD), replica(cfg, postgres_url)
        try:
            assert one(ahead.run(RunOptions(dry_run=False))).status == "ok"
            write(tmp_path, directory(3))
            assert waiting(one(right.run(RunOptions(dry_run=False)))) == {"person3@example.com"}
            seen = missing_since(postgres_url, "person3@example.com")
            result = one(ahead.run(RunOptions(dry_run=False)))
            assert waiting(result) == {"person3@example.com"}, result
            assert "person3@example.com" in holdings(emulator), "removed before its grace"
            assert missing_since(postgres_url, "person3@example.com") == seen
        finally:
            ahead.close()
            right.close()


def test_a_full_pass_recorded_by_a_clock_running_ahead_does_not_put_off_the_next(
    tmp_path: Path, postgres_url: str
) -> None:
    """Harm 2 (a daemon that stops catching drift): a replica four minutes ahead (below
    the five minutes after which a pass recorded in the future is distrusted) runs a
    full pass; `full_interval` (4 s here, a day by default) later, the right replica's
    pass must be full, not incremental for four more minutes (a day of them, scaled)."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        cfg = config(tmp_path, emulator, postgres_url, full_interval="4s")
        write(tmp_path, directory(4))
        ahead = replica(cfg, postgres_url, timedelta(minutes=4))
        right = replica(cfg, postgres_url)
        try:
            full = one(ahead.run(RunOptions(dry_run=False, incremental=True)))
            assert (full.status, full.pass_kind) == ("ok", "full"), full
            noted = server_time(postgres_url)
            quiet = one(right.run(RunOptions(dry_run=False, incremental=True)))
            assert quiet.pass_kind == "incremental", quiet.pass_reason
            time.sleep(4.5)
            due = one(right.run(RunOptions(dry_run=False, incremental=True)))
            assert due.pass_kind == "full", due.pass_reason
            assert "full_interval old" in str(due.pass_reason)
            with StateStore.open(postgres_url) as store:
                baseline = store.baseline("t")
            assert baseline is not None and baseline.full_at > noted, baseline
        finally:
            ahead.close()
            right.close()


def test_a_full_pass_recorded_by_a_clock_running_behind_is_not_taken_for_an_old_one(
    tmp_path: Path, postgres_url: str
) -> None:
    """Harm 2, the other way: a replica two hours behind records its full pass; with a
    `full_interval` of an hour, the right replica's next pass is not full at once (and
    not "recorded in the future" from the replica behind's view either)."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        cfg = config(tmp_path, emulator, postgres_url, full_interval="1h")
        write(tmp_path, directory(4))
        behind, right = replica(cfg, postgres_url, -AHEAD), replica(cfg, postgres_url)
        try:
            full = one(behind.run(RunOptions(dry_run=False, incremental=True)))
            assert (full.status, full.pass_kind) == ("ok", "full"), full
            after = one(right.run(RunOptions(dry_run=False, incremental=True)))
            assert after.pass_kind == "incremental", after.pass_reason
            again = one(behind.run(RunOptions(dry_run=False, incremental=True)))
            assert again.pass_kind == "incremental", again.pass_reason
        finally:
            behind.close()
            right.close()


def test_runs_of_a_replica_whose_clock_runs_ahead_sort_by_when_they_ran(
    postgres_url: str,
) -> None:
    """Harm 3 (wrong data shown, a quarantine that does not end): the replica two hours
    ahead fails a run; the right replica's good run after it must be the target's newest
    (what `status`, `/readyz` and the quarantine read), and its times the server's."""
    with (
        StateStore.open(postgres_url, clock=Skewed(AHEAD)) as ahead,
        StateStore.open(postgres_url) as right,
    ):
        failed = ahead.start_run("t", "sync", "schedule", origin=Origin("daemon", "aaaa"))
        ahead.finish_run(failed, status="failed", exit_code=1, summary={}, checksum=None)
        time.sleep(0.01)
        ok = right.start_run("t", "sync", "schedule", origin=Origin("daemon", "bbbb"))
        right.finish_run(ok, status="ok", exit_code=0, summary={}, checksum=None)
        newest = right.last_run("t")
        assert newest is not None and newest.run_id == ok, newest
        record = right.run(failed)
        assert record is not None
        assert abs(record.started_at - server_time(postgres_url)) < CLOSE, record


def test_a_dead_replica_whose_clock_ran_ahead_does_not_stop_the_others_reconciling(
    tmp_path: Path, postgres_url: str
) -> None:
    """Harm 3 (a daemon that silently stops reconciling): a replica two hours ahead did
    a scheduled reconcile and died. Its run, stamped two hours ahead, would look "just
    done" to the survivor for two hours, and each scheduled reconcile of the survivor
    would be dropped as done elsewhere. Once half an interval has passed on the one
    clock, the survivor's scheduled reconcile runs."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        cfg = config(tmp_path, emulator, postgres_url, interval="1s", full_interval="1s")
        write(tmp_path, directory(3))
        survivor = replica(cfg, postgres_url)
        stop = threading.Event()
        mailbox = Mailbox(debounce=0)
        worker = TargetWorker(
            "t",
            config=cfg,
            engine=survivor,
            store=survivor.store,
            mailbox=mailbox,
            stop=stop,
            on_quarantine=lambda target, standing: None,
        )
        dead = replica(cfg, postgres_url, AHEAD)
        try:
            ran = one(dead.run(RunOptions(dry_run=False, trigger="schedule")))
            assert ran.status == "ok", ran
            dead.close()
            # Its lease released (or expired); the survivor's workers start now, and the
            # dead replica's reconcile is more than half an interval old a second later.
            time.sleep(1.2)
            worker.start()
            mailbox.put(SyncRequest("schedule"))
            deadline = time.monotonic() + 10
            mine: list[str] = []
            while time.monotonic() < deadline and not mine:
                time.sleep(0.2)
                mine = [
                    r.run_id
                    for r in survivor.store.runs(limit=5, target="t")
                    if r.instance == survivor.instance
                ]
            assert mine, "the survivor dropped its scheduled reconcile as done elsewhere"
        finally:
            stop.set()
            mailbox.close()
            worker.join(10)
            dead.close()
            survivor.close()


def test_the_status_page_shows_a_fast_replicas_run_as_just_done(postgres_url: str) -> None:
    """Harm 3 (wrong data shown to the operator): a run of the replica two hours ahead,
    finished a moment ago, is shown on another replica's status page as done a moment
    ago, not as happening "in 120 min"."""
    with StateStore.open(postgres_url, clock=Skewed(AHEAD)) as ahead:
        run_id = ahead.start_run("t", "sync", "schedule", origin=Origin("daemon", "aaaa"))
        ahead.finish_run(run_id, status="ok", exit_code=0, summary={}, checksum=None)
    page = StatusPage(
        [("t", "openai")],
        open_store=lambda: StateStore.open(postgres_url, create=False),
        standing=lambda _target: Quarantine(),
        next_run=lambda _target: datetime.now(UTC) + timedelta(minutes=3),
        queued=lambda _target: None,
        cache_seconds=0,
    )
    try:
        html = page.html()
    finally:
        page.close()
    ages = re.findall(r'<span class="muted">\(([^)]*)\)</span>', html)
    future = [
        a for a in ages if a.startswith("in ") and not re.fullmatch(r"in [23](\.[0-9])? min", a)
    ]
    assert not future, ages
    assert [a for a in ages if re.fullmatch(r"in [23](\.[0-9])? min", a)], ages  # next run


def test_a_full_pass_recorded_in_the_future_before_the_one_clock_makes_the_next_full(
    tmp_path: Path, postgres_url: str
) -> None:
    """`passes.CLOCK_STEP_ALLOWANCE` on the one clock: a full pass recorded a day ahead
    (by an orgsync that still used each host's clock, or the server's clock stepped back
    since) is distrusted at once, not waited for."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        cfg = config(tmp_path, emulator, postgres_url)
        write(tmp_path, directory(3))
        right = replica(cfg, postgres_url)
        try:
            first = one(right.run(RunOptions(dry_run=False, incremental=True)))
            assert first.pass_kind == "full", first.pass_reason
            future = server_time(postgres_url) + timedelta(days=1)
            with StateStore.open(postgres_url) as store, store.db.write() as session:
                session.execute("UPDATE baselines SET full_at = ?", (encode_time(future),))
            again = one(right.run(RunOptions(dry_run=False, incremental=True)))
            assert again.pass_kind == "full", again.pass_reason
            assert "recorded in the future" in str(again.pass_reason)
            trusted = one(right.run(RunOptions(dry_run=False, incremental=True)))
            assert trusted.pass_kind == "incremental", trusted.pass_reason
        finally:
            right.close()
