"""Red team: the disk of the state database fills up under a running `orgsync daemon`.

The harm: a daemon that silently stops reconciling (joiners get no access, leavers keep
theirs) while it looks alive; or, once space is back, duplicate invitations for the
people invited while their journal could not be written; or a daemon that exits and
needs a person to restart it. Tried with a real ENOSPC: the database on a small tmpfs
(the state volume of a container) filled by another file, the daemon running passes
every second against the OpenAI emulator; then the file removed.

Expected: `/healthz` stays 200 (a restart would not help), `/readyz` is 503 and the
status page names the failure with the disk's own words, and the daemon converges by
itself once there is room, with one invitation per person.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.core.errors import StateError
from orgsync.store import StateStore
from orgsync.store.db import SqliteDB
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.daemon.harness import DaemonRig, wait_for


def _can_mount_tmpfs() -> bool:
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as probe:
        made = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe],
            capture_output=True,
            check=False,
        )
        if made.returncode != 0:
            return False
        subprocess.run(["umount", probe], check=True)
    return True


pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and not _can_mount_tmpfs(),
    reason="needs root to mount a small tmpfs (never skipped in CI, which runs as root)",
)


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs: the database's own small volume."""
    mount = tmp_path / "volume"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mount], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", mount], check=False)


def fill(folder: Path) -> Path:
    """Write a file into `folder` until the filesystem is full; returns it."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
                out.flush()
    # Whatever a partial block left: fill it byte by byte, so the next write fails.
    with filler.open("ab", buffering=0) as out, pytest.raises(OSError, match="space") as full:  # noqa: PT012
        while True:
            out.write(b"\0" * 512)
    assert full.value.errno == errno.ENOSPC, full.value
    return filler


def test_a_full_state_disk_is_visible_and_the_daemon_recovers_by_itself(
    tmp_path: Path, volume: Path
) -> None:
    document = directory(3, owners=1)
    many = directory(120, owners=1)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator, interval="1s")
        (tmp_path / "state.db").symlink_to(volume / "state.db")
        rig.write(document)
        daemon = rig.start()
        try:
            daemon.wait_started()
            wait_for(lambda: rig.holdings() == wanted_roles(document), timeout=60, what="run 1")
            filler = fill(volume)
            rig.write(many)

            def not_ready() -> str | None:
                response = daemon.get("/readyz")
                return response.text if response.status_code == 503 else None

            reason = wait_for(not_ready, timeout=60, what="/readyz 503 on a full disk")
            assert "full" in reason.lower() or "space" in reason.lower(), reason
            assert daemon.get("/healthz").status_code == 200
            page = daemon.get("/").text
            assert "full" in page.lower() or "space" in page.lower()

            filler.unlink()
            wait_for(lambda: rig.holdings() == wanted_roles(many), timeout=120, what="recovery")
            wait_for(lambda: daemon.get("/readyz").status_code == 200, timeout=30, what="ready")
            assert set(rig.pending_invites().values()) == {1}, "a duplicate invitation"
            assert daemon.terminate() == 0
        finally:
            daemon.kill()


def test_a_log_that_took_the_last_room_is_copied_in_and_cut_by_the_failed_write(
    volume: Path,
) -> None:
    """The state volume with little room left, and a daemon renewing its lease: each
    renewal adds the same pages to the write-ahead log, which SQLite copies into the
    database only past `WAL_PAGES`. A log that reaches the end of the disk first wedged
    every later write (the log held the room, and nothing copied it in), although the
    database itself needed no more space. The write refused for a full disk now copies
    the log in and cuts it, so the next write has its room back."""
    path = volume / "state.db"
    StateStore.open(path).close()  # migrated, and the log copied in on close
    db = SqliteDB.open(path)
    with db.write() as session:
        session.execute("CREATE TABLE beat (k INTEGER PRIMARY KEY, v BLOB)")
        session.execute("INSERT INTO beat VALUES (1, ?)", (b"0" * 3000,))
    db.close()
    db = SqliteDB.open(path)
    filler = fill(volume)
    with filler.open("r+b") as out:
        out.truncate(filler.stat().st_size - 64 * 1024)  # a renewal's worth, a few times

    def renew(value: int) -> None:
        with db.write() as session:
            session.execute("UPDATE beat SET v = ? WHERE k = 1", (bytes([value]) * 3000,))

    refusals: list[str] = []
    for value in range(200):
        try:
            renew(value % 256)
        except StateError as error:
            refusals.append(str(error))
            renew(value % 256)  # the very next write has room again
    assert len(refusals) >= 2, "the log never reached the end of the disk"
    assert all("full" in refusal for refusal in refusals), refusals
    db.close()
