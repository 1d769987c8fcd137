"""A state database that went back in time (restored from an older backup, rolled back
with a VM snapshot, copied back), against real SQLite files and the real command.

Harms looked for: a leaver orgsync invited after the backup keeps access, silently (the
restored database treats them as unmanaged); a false refusal that stops every sync
(a missing or unreadable mark, a database created again on purpose, a crash between the
database's commit and the mark's write, two configurations sharing one database, a mark
that cannot be written); a restore laundered by `state migrate`, or memory changed on a
behind database by `state forget`/`rename`. The end-to-end story (refusal, dry run,
status, runs, acceptance, review list) is
`tests/cli/test_careless_operator.py::test_a_leaver_invited_after_the_backup_was_taken_stops_the_sync_and_is_named`.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from orgsync.store import StateStore
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory
from tests.daemon.browser import Dom
from tests.daemon.harness import DaemonRig, wait_for

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

BEHIND = "is behind its high-water mark"


def _mark(folder: Path, name: str = "state.db") -> dict[str, object]:
    loaded: dict[str, object] = json.loads((folder / f"{name}.mark").read_text())
    return loaded


def _generation(database: Path) -> tuple[str, int]:
    with sqlite3.connect(database) as db:
        database_id, generation = db.execute(
            "SELECT database_id, generation FROM write_marks"
        ).fetchone()
    return str(database_id), int(generation)


def _backup(rig: Rig) -> None:
    shutil.copy(rig.folder / "state.db", rig.folder / "backup.db")


def _restore(rig: Rig) -> None:
    """The backup put back as the state database; the mark beside it stays."""
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (rig.folder / name).unlink(missing_ok=True)
    shutil.copy(rig.folder / "backup.db", rig.folder / "state.db")


def _behind(rig: Rig) -> None:
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    _backup(rig)
    rig.write(directory(4))
    assert rig.orgsync("sync").returncode == 0
    _restore(rig)


def test_every_sync_raises_the_generation_in_the_database_and_its_mark(rig: Rig) -> None:
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    database_id, first = _generation(rig.folder / "state.db")
    mark = _mark(rig.folder)
    assert (mark["database"], mark["generation"]) == (database_id, first)
    assert first == 2, "raised at the run's start and at its end"
    assert "secret" not in json.dumps(mark).lower() and API_KEY not in json.dumps(mark)
    assert oct((rig.folder / "state.db.mark").stat().st_mode & 0o777) == "0o600"
    assert rig.orgsync("sync", "--dry-run").returncode == 0
    assert _generation(rig.folder / "state.db") == (database_id, first), "a dry run writes none"
    assert rig.orgsync("sync").returncode == 0
    assert _mark(rig.folder)["generation"] == _generation(rig.folder / "state.db")[1] == 4


def test_a_missing_mark_refuses_nothing_and_is_recreated(rig: Rig) -> None:
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    (rig.folder / "state.db.mark").unlink()
    again = rig.orgsync("sync")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "state.mark_created" in again.stderr
    assert _mark(rig.folder)["generation"] == _generation(rig.folder / "state.db")[1]


def test_an_unreadable_mark_refuses_nothing_and_is_replaced(rig: Rig) -> None:
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    (rig.folder / "state.db.mark").write_text('{"generation": "lots"')
    status = rig.orgsync("status")
    assert status.returncode == 0 and BEHIND not in status.stdout + status.stderr
    again = rig.orgsync("sync")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "state.mark_unreadable" in again.stderr
    assert _mark(rig.folder)["generation"] == _generation(rig.folder / "state.db")[1]


def test_a_database_started_over_on_purpose_is_not_taken_for_a_restore(rig: Rig) -> None:
    """`start_over`'s own advice: move the database aside and run again."""
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    old_id, _ = _generation(rig.folder / "state.db")
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        if (rig.folder / name).exists():
            (rig.folder / name).rename(rig.folder / f"{name}.broken")
    fresh = rig.orgsync("sync")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    new_id, generation = _generation(rig.folder / "state.db")
    assert new_id != old_id
    assert _mark(rig.folder) | {"written_at": None, "what": None} == {
        "database": new_id,
        "generation": generation,
        "written_at": None,
        "what": None,
    }


def test_a_database_ahead_of_its_mark_is_not_refused(rig: Rig) -> None:
    """A crash after the database's commit and before the mark's write."""
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    with sqlite3.connect(rig.folder / "state.db") as db:
        db.execute("UPDATE write_marks SET generation = generation + 5")
    again = rig.orgsync("sync")
    assert again.returncode == 0, again.stdout + again.stderr
    assert _mark(rig.folder)["generation"] == _generation(rig.folder / "state.db")[1]


# As processes: `orgsync state accept-restore` through its real entry point.
@pytest.mark.orgsync_in_process(False)
def test_a_restored_database_refuses_a_sync_and_changes_nothing_until_accepted(
    rig: Rig,
) -> None:
    _behind(rig)
    before = rig.holdings()
    rig.write(directory(2))  # two leave; the backup knew person2, not person3
    database_before = (rig.folder / "state.db").read_bytes()
    refused = rig.orgsync("sync")
    told = refused.stdout + refused.stderr
    assert refused.returncode == 1, told
    assert BEHIND in told and "generation 2 written" in told and "generation 4 written" in told
    assert rig.holdings() == before
    assert (rig.folder / "state.db").read_bytes() == database_before, "nothing written"
    assert rig.orgsync("sync", "--incremental").returncode == 1
    status = rig.orgsync("status", "--json")
    assert status.returncode == 0
    assert BEHIND in json.loads(status.stdout)[0]["state_behind"]
    explained = rig.orgsync("explain", "person3@example.com")
    assert "state.behind" in explained.stderr, explained.stderr
    accepted = rig.orgsync("state", "accept-restore")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    with sqlite3.connect(rig.folder / "state.db") as db:
        restores = db.execute(
            "SELECT database_generation, mark_generation FROM restores"
        ).fetchall()
    assert restores == [(2, 4)]
    assert _generation(rig.folder / "state.db")[1] == 5 == _mark(rig.folder)["generation"]
    synced = rig.orgsync("sync", "--incremental", "--json")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    target = json.loads(synced.stdout)["targets"][0]
    assert target["run"]["pass"] == "full", "the next pass after an acceptance is full"
    assert any("person3@example.com" in w for w in target["warnings"]), target["warnings"]
    assert "person2@example.com" not in rig.holdings(), "the backup knew person2: removed"
    assert "person3@example.com" in rig.holdings(), "unmanaged to it: left for review"


def test_accepting_a_database_that_is_not_behind_changes_nothing(rig: Rig) -> None:
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    before = _generation(rig.folder / "state.db")
    accepted = rig.orgsync("state", "accept-restore")
    assert accepted.returncode == 0
    assert "not behind its high-water mark; nothing to accept" in accepted.stdout
    assert _generation(rig.folder / "state.db") == before


def test_state_forget_and_rename_are_refused_on_a_restored_database(rig: Rig) -> None:
    _behind(rig)
    for command in (["forget", "openai-test"], ["rename", "openai-test", "renamed"]):
        refused = rig.orgsync("state", *command)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert BEHIND in refused.stderr
    with StateStore.open(rig.folder / "state.db") as store:
        assert store.memory("openai-test").managed, "nothing forgotten"
    assert rig.orgsync("state", "accept-restore").returncode == 0
    generation = _generation(rig.folder / "state.db")[1]
    assert rig.orgsync("state", "forget", "openai-test").returncode == 0
    assert _generation(rig.folder / "state.db")[1] == generation + 1
    assert _mark(rig.folder)["generation"] == generation + 1


def test_state_migrate_refuses_a_restored_database_and_carries_the_generation(
    rig: Rig,
) -> None:
    _behind(rig)
    destination = rig.folder / "moved.db"
    args = ("state", "migrate", "--from", f"sqlite:{rig.folder / 'state.db'}")
    refused = rig.orgsync(*args, "--to", f"sqlite:{destination}")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert BEHIND in refused.stderr
    assert rig.orgsync("state", "accept-restore").returncode == 0
    moved = rig.orgsync(*args, "--to", f"sqlite:{destination}")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert _generation(destination) == _generation(rig.folder / "state.db")
    assert _mark(rig.folder, "moved.db")["generation"] == _generation(destination)[1]
    with sqlite3.connect(destination) as db:
        assert db.execute("SELECT COUNT(*) FROM restores").fetchone() == (1,)


def test_two_configurations_sharing_one_database_share_its_mark(rig: Rig, tmp_path: Path) -> None:
    shared = rig.folder / "state.db"
    rig.state = f'path = "{shared}"'
    other = Rig(folder=tmp_path / "other", emulator=rig.emulator, state=f'path = "{shared}"')
    other.folder.mkdir()
    rig.write(directory(3))
    other.write(directory(3))
    for _ in range(2):
        for each in (rig, other):
            result = each.orgsync("sync")
            assert result.returncode == 0, result.stdout + result.stderr
    assert _mark(rig.folder)["generation"] == _generation(shared)[1] == 8
    assert not (other.folder / "state.db.mark").exists()
    _backup(rig)
    assert rig.orgsync("sync").returncode == 0
    _restore(rig)
    for each in (rig, other):
        refused = each.orgsync("sync")
        assert refused.returncode == 1 and BEHIND in refused.stderr, refused.stderr


def _can_mount() -> bool:
    from tests.store.test_state_read_only_fs import _can_mount as probe

    return probe()


READ_ONLY_MARK = (
    'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && cd "$(dirname "$0")" '
    '&& exec "$@"'
)


@pytest.mark.skipif(
    not os.environ.get("CI") and not _can_mount(),
    reason="needs unshare(1) and the right to make a mount namespace (never skipped in CI)",
)
def test_a_mark_that_cannot_be_written_is_logged_and_the_sync_goes_on(rig: Rig) -> None:
    """The mark on a read-only mount (the database's own folder writable)."""
    from tests.store.test_state_read_only_fs import UNSHARE

    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    mark = rig.folder / "state.db.mark"
    before = mark.read_text()
    rig.write(directory(4))
    process = cli.start(
        rig.config_path,
        "sync",
        env={**os.environ, KEY_ENV: API_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        wrapper=[*UNSHARE, "sh", "-c", READ_ONLY_MARK, str(mark)],
    )
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err
    assert "state.mark_not_written" in err, err
    assert mark.read_text() == before
    assert "person3@example.com" in rig.holdings()
    assert rig.orgsync("sync").returncode == 0, "the next write raises the mark again"
    assert _mark(rig.folder)["generation"] == _generation(rig.folder / "state.db")[1]


def test_the_daemon_on_a_restored_database_changes_nothing_and_is_not_ready(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    """The service restarted on a restored database: its start-up pass is refused (no
    call, no run row), `/readyz` answers 503 naming the database, and `/` still renders."""
    rig = DaemonRig(folder=tmp_path, emulator=emulator)
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    shutil.copy(rig.state_db, tmp_path / "backup.db")
    rig.write(directory(4))
    assert rig.orgsync("sync").returncode == 0
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", rig.state_db)
    rig.write(directory(2))
    before = rig.holdings()
    runs_before = len(rig.runs())
    daemon = rig.start()
    try:
        daemon.wait_started()
        wait_for(
            lambda: any(e.get("event") == "state.behind" for e in daemon.events()),
            timeout=60,
            what="the start-up pass to be refused",
        )
        ready = daemon.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert BEHIND in ready.json()["state_database"]
        page = daemon.get("/")
        assert page.status_code == 200
        banner = Dom(page.text).text
        assert "Syncs are refused: the state database" in banner, banner
        assert "orgsync state accept-restore" in banner
    finally:
        assert daemon.terminate() == 0
    assert rig.holdings() == before
    assert len(rig.runs()) == runs_before
