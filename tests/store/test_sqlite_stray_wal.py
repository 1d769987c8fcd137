"""Red team: a backup copied over `state.db` while the `-wal` of a crashed orgsync is still
beside it, on real SQLite files and a really killed process.

Harms: SQLite replays the old log into the backup without a word (the log names no
database), leaving a database that mixes two (people orgsync manages forgotten or
invented, links pointing at the wrong accounts) and no longer looks restored; or, from a
careless fix, a crash's own log (which holds the last commits) set aside or refused, so
that orgsync forgets whom it just invited.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from orgsync.core.errors import StateError
from orgsync.store import StateStore

_WRITER = """
import os, signal, sqlite3, sys
from orgsync.store import StateStore
path, first, count, checkpoint = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = StateStore.open(path)
for n in range(first, first + count):
    store.own_group("t", group_id=f"g{n:04}", source_group_id=f"s{n}" * 40, name=f"n{n}",
                    how="created")
    if checkpoint == "True" and n == first + count // 2:
        sqlite3.connect(path).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _crash_writing(path: Path, first: int, count: int, *, checkpoint: bool = False) -> None:
    """An orgsync store process owns groups `first`.. and is killed (-9) with the
    database open: its last commits are only in `<path>-wal`."""
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, str(path), str(first), str(count), str(checkpoint)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert Path(f"{path}-wal").stat().st_size > 0


def _count(path: Path) -> int:
    """The commit count in the database file's own header (what is not in its log)."""
    return int.from_bytes(path.read_bytes()[60:64], "big")


def _groups(path: Path) -> set[str]:
    with StateStore.open(path) as store:
        return set(store.owned_groups("t"))


def _own(path: Path, first: int, count: int) -> None:
    with StateStore.open(path) as store:
        for n in range(first, first + count):
            store.own_group("t", group_id=f"g{n:04}", source_group_id="s", name="n", how="created")


def _wanted(first: int, count: int) -> set[str]:
    return {f"g{n:04}" for n in range(first, first + count)}


@pytest.mark.parametrize("checkpoint", [False, True], ids=["log-only", "checkpointed-in-part"])
def test_a_crashs_own_log_is_replayed(tmp_path: Path, checkpoint: bool) -> None:
    """kill -9 leaves the last commits in the log (part of them already copied into the
    file by a checkpoint): the next open replays them, nothing refused or set aside."""
    db = tmp_path / "state.db"
    _own(db, 0, 3)
    before = _count(db)
    _crash_writing(db, 3, 40, checkpoint=checkpoint)
    # Checkpointed in part: the file holds some of the log's commits already.
    assert (_count(db) > before) is checkpoint
    assert _groups(db) == _wanted(0, 43)
    assert not list(tmp_path.glob("*.stray"))


def test_a_backup_copied_over_the_database_beside_a_crash_log_is_refused(
    tmp_path: Path,
) -> None:
    """The operator restores yesterday's copy over `state.db` while the crashed daemon's
    log is still beside it: refused before SQLite reads anything, both files left
    byte for byte, the message naming both and the safe way (the log moved aside,
    never the database); done so, the backup opens as it was."""
    db = tmp_path / "state.db"
    _own(db, 0, 3)
    backup = tmp_path / "backup.db"
    shutil.copyfile(db, backup)
    _own(db, 3, 20)  # the days after the backup
    _crash_writing(db, 23, 40)
    wal = Path(f"{db}-wal")
    log_bytes = wal.read_bytes()
    shutil.copyfile(backup, db)
    with pytest.raises(StateError) as refused:
        StateStore.open(db)
    message = str(refused.value)
    assert str(wal) in message
    assert f"mv {wal} {wal}.stray" in message
    assert "not this database's" in message
    assert wal.read_bytes() == log_bytes
    assert db.read_bytes() == backup.read_bytes()
    os.rename(wal, f"{wal}.stray")
    os.rename(f"{db}-shm", f"{db}-shm.stray")
    assert _groups(db) == _wanted(0, 3)


def test_another_applications_database_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    """A `path` pointed at another application's SQLite file (rollback journal): refused,
    and its journal mode (a header SQLite rewrites) left as it was, no -wal made."""
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    before = other.read_bytes()
    with pytest.raises(StateError, match="not an orgsync state database"):
        StateStore.open(other)
    assert other.read_bytes() == before
    assert not Path(f"{other}-wal").exists()
