"""Red team: the state database's path is not a plain file in an existing folder.

What could hurt an administrator here:
- duplicate invitations: the database reached through a symbolic link by one process
  (a config pointing into a data volume through a link) and by its real name by another.
  SQLite follows the link (its -wal and -shm sit beside the real file), but the writer
  locks and the write mark were put beside the *link*: each process held "the" writer
  lock of a target, both applied at once, and each kept a mark of its own, so a restore
  seen through one was missed through the other. Was broken; fixed (the path is resolved
  when the database is opened).
- lost access / re-invitations: a path that cannot be a database (a directory, a loop of
  links, a folder that does not exist) read as "no database yet" and a fresh one made
  somewhere else, forgetting whom orgsync manages. Held: each is an error naming the path,
  exit 1, nothing sent to the target.
"""

from __future__ import annotations

import os

import pytest

from orgsync.store.writer_lock import FileLock, lock_path
from tests.cli.harness import Rig, directory

TARGET = "openai-test"


def test_a_database_reached_through_a_link_shares_the_writer_lock_of_its_real_name(
    rig: Rig,
) -> None:
    """A writer holding the lock by the real name keeps out a sync through the link."""
    data = rig.folder / "volume"
    data.mkdir()
    real = data / "state.db"
    rig.state = f'path = "{real}"'
    rig.write(directory(3))
    first = rig.orgsync("sync")
    assert first.returncode == 0, first.stdout + first.stderr
    invited = len(rig.emulator.state.invites())

    (rig.folder / "linked.db").symlink_to(real)
    rig.state = 'path = "linked.db"'
    rig.write(directory(6))
    holder = FileLock(lock_path(real, TARGET))
    assert holder.try_acquire()
    try:
        refused = rig.orgsync("sync")
    finally:
        holder.release()
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "another orgsync is syncing" in refused.stdout + refused.stderr, refused.stderr
    assert len(rig.emulator.state.invites()) == invited, "a second writer applied"

    # Through the link, everything orgsync keeps beside the database is beside the real file.
    synced = rig.orgsync("sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    beside_link = sorted(p.name for p in rig.folder.iterdir() if p.name.startswith("linked"))
    assert beside_link == ["linked.db"], beside_link
    assert (data / "state.db.mark").exists()
    assert set(rig.pending_invites_per_email().values()) == {1}


def test_a_link_to_a_database_not_made_yet_creates_it_at_the_real_name(rig: Rig) -> None:
    data = rig.folder / "volume"
    data.mkdir()
    (rig.folder / "linked.db").symlink_to(data / "state.db")
    rig.state = 'path = "linked.db"'
    rig.write(directory(2))
    synced = rig.orgsync("sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert (rig.folder / "linked.db").is_symlink()
    assert (data / "state.db").is_file() and (data / "state.db.mark").is_file()


@pytest.mark.parametrize("shape", ["directory", "link loop", "missing folder"])
def test_a_path_that_cannot_be_a_database_is_named_and_nothing_is_sent(
    rig: Rig, shape: str
) -> None:
    if shape == "directory":
        (rig.folder / "state.db").mkdir()
        path, named = "state.db", "is a directory"
    elif shape == "link loop":
        os.symlink("loop-b.db", rig.folder / "loop-a.db")
        os.symlink("loop-a.db", rig.folder / "loop-b.db")
        path, named = "loop-a.db", "cannot be followed"
    else:
        path, named = "gone/state.db", "does not exist"
    rig.state = f'path = "{path}"'
    rig.write(directory(3))
    before = len(rig.emulator.state.invites())
    for command in ("sync",):
        failed = rig.orgsync(command)
        output = failed.stdout + failed.stderr
        assert failed.returncode == 1, (command, output)
        assert named in output and "Traceback" not in output, (command, output)
    assert len(rig.emulator.state.invites()) == before
    assert not (rig.folder / "gone").exists()
