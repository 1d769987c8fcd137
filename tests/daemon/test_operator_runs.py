"""An operator's runs say nothing about the daemon's target (issue 9, item 2).

A daemon and an operator share a state database. The operator's `orgsync sync`, refused
because the daemon is writing, is `busy`: it names the daemon as the holder and is not
recorded as a run. The operator's failing runs (the API key not set in their shell, dry
run or sync) are recorded as theirs (`origin = cli`). None of them quarantines the
daemon's target or turns its `/readyz`, before or after a daemon restart: the daemon's
readiness and quarantine read its own write runs only (its own failures still quarantine:
`test_daemon_process.py::test_a_target_failing_every_run_is_quarantined_until_a_clean_run`).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, directory, wanted_roles
from tests.daemon.harness import Daemon, DaemonRig, wait_for
from tests.daemon.test_daemon_process import metric_families, sample

QUARANTINE = 'quarantine_after = 2\nquarantine_max_interval = "2h"'


def applying(rig: DaemonRig) -> bool:
    runs = rig.runs()
    if not runs or runs[-1]["status"] != "running":
        return False
    return any(op["status"] == "done" for op in rig.operations(runs[-1]["run_id"]))


def without_the_key(rig: DaemonRig, *args: str) -> subprocess.CompletedProcess[str]:
    """`orgsync` run by an operator whose shell has no API key."""
    env = rig.environ()
    del env[KEY_ENV]
    return cli.run(rig.config_path, *args, env=env)


def ready(daemon: Daemon) -> int:
    time.sleep(2.1)  # past the readiness cache
    return daemon.get("/readyz").status_code


def test_an_operator_s_refused_and_failing_runs_never_quarantine_the_daemon(
    tmp_path: Path, started: list[Daemon]
) -> None:
    document = directory(30, owners=1)
    with OpenAIEmulator(api_key=API_KEY, faults=Faults(latency=0.3)) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator, quarantine=QUARANTINE)
        rig.write(document)
        # One call at a time: the daemon's startup run applies for a while.
        rig.config_path.write_text(
            rig.config_path.read_text().replace(
                "max_attempts = 2\n", "max_attempts = 2\nmax_concurrency = 1\n"
            )
        )
        daemon = rig.start("first")
        started.append(daemon)
        daemon.wait_started()
        wait_for(lambda: applying(rig), timeout=60, what="the daemon's first write")

        # Three operators run `orgsync sync` while the daemon writes (slowed further until
        # they are done, however long they take to start): each is refused.
        emulator.faults = Faults(latency=3.0)
        with ThreadPoolExecutor(3) as pool:
            refused = list(pool.map(lambda _: rig.orgsync("sync"), range(3)))
        emulator.faults = Faults()
        for answer in refused:
            assert answer.returncode == 1, answer.stdout + answer.stderr

        wait_for(
            lambda: any(r["triggered_by"] == "startup" and r["status"] == "ok" for r in rig.runs()),
            timeout=120,
            what="the daemon's run",
        )
        assert rig.holdings() == wanted_roles(document)
        assert max(rig.pending_invites().values()) == 1

        # An operator whose shell lacks the API key: a failing dry run and two syncs.
        for args in (("sync", "--dry-run"), ("sync",), ("sync",)):
            answer = without_the_key(rig, *args)
            assert answer.returncode == 1, answer.stdout + answer.stderr
            assert KEY_ENV in answer.stdout + answer.stderr

        assert ready(daemon) == 200
        status = json.loads(rig.orgsync("status", "--json").stdout)[0]
        assert status["quarantine"]["quarantined"] is False
        assert status["quarantine"]["consecutive_failures"] == 0
        assert status["last_run"]["origin"] == "cli"  # status still shows what happened
        # The refusals named the daemon; they are not runs.
        holder = f"daemon on {socket.gethostname()} (pid {daemon.process.pid}, instance "
        for answer in refused:
            assert f"another orgsync is syncing openai-test: {holder}" in answer.stdout
        recorded = [(r["origin"], r["mode"], r["status"]) for r in rig.runs()]
        assert recorded == [
            ("daemon", "sync", "ok"),
            ("cli", "dry-run", "failed"),
            ("cli", "sync", "failed"),
            ("cli", "sync", "failed"),
        ]
        assert daemon.terminate() == 0

        # A restart reads the same history: not quarantined, it reconciles at once.
        emulator.faults = Faults()
        again = rig.start("second")
        started.append(again)
        again.wait_started()
        wait_for(
            lambda: [r["origin"] for r in rig.finished_runs()].count("daemon") == 2,
            timeout=30,
            what="the restarted daemon's startup run",
        )
        assert rig.finished_runs()[-1]["status"] == "ok"
        assert sample(metric_families(again), "orgsync_quarantined", target="openai-test") == 0
        assert ready(again) == 200
        assert again.terminate() == 0


def test_another_daemon_s_failures_do_not_turn_this_daemon_s_readiness(
    tmp_path: Path, started: list[Daemon]
) -> None:
    """A second daemon on the same database whose environment lacks the API key (a bad
    rollout) is not ready; the first, whose own runs are clean, stays ready."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        # A short lease: the second daemon's start-up pass first waits one lease_ttl for
        # the replica its target falls to (30 s by default), which this test is not about.
        rig = DaemonRig(
            folder=tmp_path, emulator=emulator, state='path = "state.db"\nlease_ttl = "2s"'
        )
        rig.write(directory(3, owners=1))
        good = rig.start("good")
        started.append(good)
        good.wait_started()
        wait_for(rig.finished_runs, timeout=60, what="the good daemon's run")
        bad = rig.start("bad", **{KEY_ENV: ""})
        started.append(bad)
        bad.wait_started()
        wait_for(lambda: len(rig.finished_runs()) == 2, timeout=60, what="the bad daemon's run")
        assert [(r["origin"], r["status"]) for r in rig.finished_runs()] == [
            ("daemon", "ok"),
            ("daemon", "failed"),
        ]
        assert ready(bad) == 503
        assert ready(good) == 200
        assert good.terminate() == 0
        assert bad.terminate() == 0
