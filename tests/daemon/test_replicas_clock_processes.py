"""Replicas whose host clocks disagree, as real `orgsync sync` processes on one
PostgreSQL state database (the red team of tests/daemon/test_replicas_clock.py, through
the production wiring: no clock is given to anything, the process's wall clock itself is
off, by `skewed_host/sitecustomize.py`).

Harm (lost access): a host two hours behind runs the sync that first sees a leaver
missing; the next sync, on a host with the right clock, finds `removal_grace` (one hour)
already over and removes them at once. They must keep access for the hour.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from orgsync.store import StateStore
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, Rig, directory, holdings
from tests.daemon.harness import DaemonRig, wait_for

SKEWED_HOST = Path(__file__).parent / "skewed_host"


def test_a_sync_on_a_host_two_hours_behind_does_not_cut_a_leavers_grace_short(
    tmp_path: Path, postgres_url: str
) -> None:
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = Rig(
            folder=tmp_path,
            emulator=emulator,
            safety='max_removals = 10\nmax_removal_ratio = 1.0\nremoval_grace = "1h"',
            state=f'url = "{postgres_url}"',
        )
        rig.write(directory(4))
        right = rig.orgsync("sync")
        assert right.returncode == 0, right.stderr
        assert "person3@example.com" in holdings(emulator)

        rig.write(directory(3))
        rig.env = {"PYTHONPATH": str(SKEWED_HOST), "ORGSYNC_TEST_SKEW_SECONDS": "-7200"}
        behind = rig.orgsync("sync")
        assert behind.returncode == 0, behind.stderr
        assert "person3@example.com" in holdings(emulator)

        rig.env = {}
        again = rig.orgsync("sync")
        assert again.returncode == 0, again.stderr
        assert "person3@example.com" in holdings(emulator), "removed before its grace"
        assert "state.clock_skew" in behind.stderr, "the wrong host clock went unreported"
        assert "state.clock_skew" not in again.stderr


def finished_daemon_runs(url: str) -> list[str]:
    with StateStore.open(url, create=False) as store:
        return [
            r.run_id
            for r in store.runs(limit=20, target="openai-test")
            if r.origin == "daemon" and r.status != "running"
        ]


def test_a_daemon_restarted_on_a_host_behind_does_not_take_an_older_run_for_its_own_time(
    tmp_path: Path, postgres_url: str
) -> None:
    """Harm (a daemon that silently stops reconciling): a replica with the right clock
    reconciles and stops; a daemon on a host two hours behind starts after it. Another
    daemon's run "since this daemon started and within half an interval" stands for its
    own reconcile; judged on its own clock, every run of the last two hours is "since it
    started", and it would drop each reconcile as done elsewhere, for two hours. A
    newcomer added meanwhile must be invited by it within seconds."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator, interval="2s")
        rig.on_postgres(postgres_url, 'lease_ttl = "3s"')
        rig.write(directory(3))
        right = rig.start("right")
        try:
            right.wait_started()
            wait_for(lambda: finished_daemon_runs(postgres_url), timeout=60, what="a start-up run")
        finally:
            assert right.terminate() == 0
        rig.write(directory(4))
        behind = rig.start("behind", PYTHONPATH=str(SKEWED_HOST), ORGSYNC_TEST_SKEW_SECONDS="-7200")
        try:
            port = behind.wait_started()
            wait_for(
                lambda: "person3@example.com" in holdings(emulator),
                timeout=30,
                what="the newcomer invited by the replica behind",
            )
            # Its status page shows the runs' and the schedule's times against one
            # clock: nothing happened, or is due, two hours from now.
            page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
        finally:
            behind.terminate()
        ages = re.findall(r'<span class="muted">\(([^)]*)\)</span>', page)
        assert ages, page
        assert [a for a in ages if a.startswith("in ") and not a.endswith(" s")] == [], ages
