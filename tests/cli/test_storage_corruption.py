"""Red team: the state database file is damaged between two runs, as disks and people do.

What could hurt an administrator: a damaged database read as a smaller or empty one.
Every member orgsync manages would then look unmanaged (leavers no longer removed: extra
access) and everyone re-linked or re-invited (duplicate e-mails), or removals computed
from the wrong links (lost access). And a damaged file "repaired" by being overwritten,
losing what a restore from backup could still have saved.

A foreign write-ahead log (`state.db-wal` of another database, or of this one left
beside a backup copied back over `state.db`) is still replayed by SQLite over the file
without any error: SQLite keeps nothing in a WAL that ties it to its database. Not
tested here: see the report (left open).

Each damage below is done to a database a real `orgsync sync` made (40 people on the
OpenAI emulator), then a second sync is run with a changed directory (a joiner and a
leaver). Expected: exit 1 with a message naming the file, nothing sent to the target,
the damaged file left byte for byte as it was.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.cli.harness import Rig, directory

PEOPLE = 40


def _pages(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA page_size").fetchone()[0], conn.execute(
            "PRAGMA page_count"
        ).fetchone()[0]


def _links_root(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(
            conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'links'").fetchone()[0]
        )


def damage(rig: Rig, how: str) -> None:
    db = rig.folder / "state.db"
    size, count = _pages(db)
    if how == "bit flips in the links":
        # A flipped bit on each page of the links table's b-tree leaves (a failing disk).
        with sqlite3.connect(db) as conn:
            leaves = [
                row[0]
                for row in conn.execute(
                    "SELECT pageno FROM dbstat WHERE name = 'links' AND pagetype = 'leaf'"
                )
            ]
        assert leaves
        with db.open("r+b") as raw:
            for page in leaves:
                raw.seek((page - 1) * size + 1)
                byte = raw.read(1)
                raw.seek((page - 1) * size + 1)
                raw.write(bytes([byte[0] ^ 0x10]))
    elif how == "cut in half":
        with db.open("r+b") as raw:
            raw.truncate(size * (count // 2))
    else:
        raise AssertionError(how)


def _database_files(folder: Path) -> dict[str, bytes]:
    """The database and its write-ahead log (the -shm is SQLite's scratch: any reader
    makes one), as they are."""
    wal = folder / "state.db-wal"
    files = {"state.db": (folder / "state.db").read_bytes()}
    if wal.exists() and wal.stat().st_size:
        files["state.db-wal"] = wal.read_bytes()
    return files


@pytest.mark.parametrize("how", ["bit flips in the links", "cut in half"])
def test_a_damaged_database_is_an_error_naming_it_and_nothing_is_sent(rig: Rig, how: str) -> None:
    rig.safety = "max_removals = 100\nmax_removal_ratio = 1.0"
    document = directory(PEOPLE)
    rig.write(document)
    first = rig.orgsync("sync")
    assert first.returncode == 0, first.stdout + first.stderr
    before = rig.holdings()

    damage(rig, how)
    kept = _database_files(rig.folder)
    inode = (rig.folder / "state.db").stat().st_ino
    changed = directory(PEOPLE + 1)
    # person5 leaves, person40 joins
    changed["people"] = [p for p in changed["people"] if p["id"] != "p5"]
    for group in changed["groups"]:
        group["members"] = [m for m in group["members"] if m != "p5"]
    rig.write(changed)
    second = rig.orgsync("sync")
    output = second.stdout + second.stderr
    assert second.returncode == 1, output
    assert str(rig.folder / "state.db") in output and "Traceback" not in output, output
    assert rig.holdings() == before, "the target was changed from a damaged database"
    assert set(rig.pending_invites_per_email().values()) <= {1}
    assert (rig.folder / "state.db").stat().st_ino == inode, "the damaged file was replaced"
    if how == "cut in half":  # refused on opening: not a byte written
        assert _database_files(rig.folder) == kept, "the damaged database was written to"
    # Bit flips in the links' pages are met only when the links are read, after the run
    # was recorded as started: the failed run's rows are written (to other pages).
