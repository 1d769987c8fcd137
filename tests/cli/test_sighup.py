"""Red team: SIGHUP to `orgsync sync`, which the kernel sends when the terminal it runs in
goes away (an SSH session dropped during a long apply).

Python's default for SIGHUP ended the process on the spot: no call in flight finished
and was recorded, and the run stayed `running` until the next sync's recovery. It now
stops the sync as SIGTERM does: the run is recorded `interrupted`, nothing more is sent.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory
from tests.daemon.harness import wait_for

SLOW = 6.0


def test_sighup_during_a_sync_stops_it_cleanly(tmp_path: Path) -> None:
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = Rig(folder=tmp_path, emulator=emulator)
        rig.write(directory(5))
        rig.config_path.write_text(
            rig.config_path.read_text().replace('timeout = "2s"', 'timeout = "30s"')
        )
        emulator.faults = Faults(latency=SLOW)
        sync = cli.start(
            rig.config_path,
            "sync",
            env={**os.environ, KEY_ENV: API_KEY},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(
                lambda: (tmp_path / "state.db").exists() and running(tmp_path),
                timeout=60,
                what="the sync's run",
            )
            time.sleep(0.5)  # reading the organization, slowly
            signalled = time.monotonic()
            sync.send_signal(signal.SIGHUP)
            out, err = sync.communicate(timeout=60)
            took = time.monotonic() - signalled
        finally:
            if sync.poll() is None:
                sync.kill()
                sync.communicate()
    assert sync.returncode == 1, (sync.returncode, err[-2000:])
    assert took < 3.0
    assert "sync.stopping" in err and "SIGHUP" in err
    with sqlite3.connect(tmp_path / "state.db") as db:
        statuses = [row[0] for row in db.execute("SELECT status FROM runs")]
    assert statuses == ["interrupted"], out


def running(folder: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{folder / 'state.db'}?mode=ro", uri=True) as db:
            return bool(db.execute("SELECT 1 FROM runs WHERE status = 'running'").fetchall())
    except sqlite3.Error:
        return False


def test_under_nohup_a_hangup_leaves_the_sync_running(tmp_path: Path) -> None:
    """`nohup orgsync sync &` ignores SIGHUP so that the sync outlives its terminal; the
    stop on SIGHUP must not undo that."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = Rig(folder=tmp_path, emulator=emulator)
        rig.write(directory(5))
        rig.config_path.write_text(
            rig.config_path.read_text().replace('timeout = "2s"', 'timeout = "30s"')
        )
        emulator.faults = Faults(latency=2.0)
        sync = cli.start(
            rig.config_path,
            "sync",
            env={**os.environ, KEY_ENV: API_KEY},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # as nohup
        )
        try:
            wait_for(lambda: running(tmp_path), timeout=60, what="the sync's run")
            sync.send_signal(signal.SIGHUP)
            _, err = sync.communicate(timeout=120)
        finally:
            if sync.poll() is None:
                sync.kill()
                sync.communicate()
    assert sync.returncode == 0, err[-2000:]
    assert "sync.stopping" not in err
