"""Red team: the state database's disk fills up in the middle of an apply.

A file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so a write fails with EFBIG as on a
full disk, instead of killing the process) stops the write-ahead log from growing while
a sync invites 380 people. What could hurt: invitations sent that orgsync does not
remember (then never removed when those people leave), a call made after its journal
write failed, a crash instead of a clear error, duplicate invitations once the disk has
room again. Measured first by hand on a 3 MB tmpfs: the run stops at the first failed
write, names the database, and the next sync converges with no duplicate.
"""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory

LIMIT = 600_000
"""Bytes any file of the sync may grow to: room for the database and the start of the
apply's journal in the write-ahead log, not for 380 invitations."""


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        yield Rig(
            folder=tmp_path,
            emulator=emulator,
            safety="max_removals = 1000\nmax_removal_ratio = 1.0\n"
            "max_additions = 100000\nmax_addition_ratio = 1000.0",
        )


def full_disk() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # kept across exec: EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_a_full_disk_mid_apply_stops_the_run_and_the_next_one_converges(rig: Rig) -> None:
    rig.write(directory(20))
    assert rig.orgsync("sync").returncode == 0
    rig.write(directory(400))
    sync = cli.start(
        rig.config_path,
        "sync",
        env={**os.environ, KEY_ENV: API_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=full_disk,
    )
    out, err = sync.communicate(timeout=300)
    assert sync.returncode == 1, (sync.returncode, out[-2000:], err[-2000:])
    assert "state database" in out + err
    assert "Traceback" not in out + err
    invited = {str(i["email"]) for i in rig.emulator.state.invites()}
    assert 20 < len(invited) < 400, "the limit did not land mid-apply"
    # Everyone invited is remembered as managed: linked before their invitation was sent.
    with sqlite3.connect(rig.folder / "state.db") as db:
        linked = {row[0] for row in db.execute("SELECT email_key FROM links")}
    assert invited <= linked, sorted(invited - linked)[:5]

    again = rig.orgsync("sync")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert set(rig.pending_invites_per_email().values()) == {1}, "a duplicate invitation"
    assert len(rig.holdings()) == 400
