"""Red team: `orgsync sync` when the state database's disk is already full (real ENOSPC,
a small tmpfs filled by another file).

What could hurt: the message called the database unreadable and advised restoring it
from a backup or moving it aside to start over (forgetting whom orgsync manages: leavers
never removed, everyone re-linked); on a first run it named a scratch file and advised
restoring *that*. Or something sent to the target before the failure was known. Was
broken (both messages); fixed: the disk is named as full, the database as not broken.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.harness import Rig, directory
from tests.store.test_storage_daemon_disk_full import _can_mount_tmpfs, fill, volume

pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and not _can_mount_tmpfs(),
    reason="needs root to mount a small tmpfs (never skipped in CI, which runs as root)",
)

__all__ = ["volume"]  # the fixture, shared


def test_a_first_sync_on_a_full_disk_names_the_database_and_the_disk(
    rig: Rig, volume: Path
) -> None:
    rig.state = f'path = "{volume / "state.db"}"'
    rig.write(directory(3))
    fill(volume)
    failed = rig.orgsync("sync")
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output
    assert f"cannot create state database {volume / 'state.db'}: database or disk is full" in (
        output
    )
    assert ".new-" not in output and "Restore" not in output, output
    assert sorted(p.name for p in volume.iterdir()) == ["filler"]
    assert rig.holdings() == {}


def test_a_sync_on_a_full_disk_is_not_told_to_restore_and_recovers(rig: Rig, volume: Path) -> None:
    db = volume / "state.db"
    rig.state = f'path = "{db}"'
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    kept = db.read_bytes()
    filler = fill(volume)
    rig.write(directory(5))
    failed = rig.orgsync("sync")
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output
    assert f"the disk of {volume} is full" in output and "not found broken" in output, output
    assert "Restore" not in output and ".broken" not in output, output
    assert len(rig.holdings()) == 3, "sent to the target before the failure was known"
    assert db.read_bytes() == kept

    filler.unlink()
    again = rig.orgsync("sync")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(rig.holdings()) == 5
    assert set(rig.pending_invites_per_email().values()) == {1}
