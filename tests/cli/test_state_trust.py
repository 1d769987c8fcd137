"""`orgsync` trusts its state database only when it is what it was (issue 9, item 7).

As an administrator meets it: a state database emptied under orgsync (truncated to 0
bytes) used to be recreated silently, after which every person it managed was unmanaged
and leavers were never removed. Now every command refuses it, naming the file and how to
start over, and nothing is read or written; a new database is announced once; `status`
and `runs` never create one; `validate` checks the state path; old run history is pruned
with its journal (`[state] keep_runs`, default 90 days).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.cli.harness import Rig, directory, wanted_roles

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


def state_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("state.db", ".state")))


def test_reading_commands_and_validate_never_create_a_database(rig: Rig) -> None:
    rig.write(directory(3))
    answers = {args: rig.orgsync(*args) for args in (("status",), ("runs", "--json"))}
    for answer in answers.values():
        assert answer.returncode == 0, answer.stderr
        assert f"no state database at {rig.folder / 'state.db'} yet" in answer.stderr
    assert "never run" in answers["status",].stdout
    assert answers["runs", "--json"].stdout.strip() == "[]"
    validate = rig.orgsync("validate", "--offline")
    assert f"state {rig.folder / 'state.db'}: none yet" in validate.stdout
    assert state_files(rig.folder) == []


def test_a_new_database_is_announced_once(rig: Rig) -> None:
    rig.write(directory(3))
    first = rig.orgsync("sync", "--dry-run")
    assert first.returncode == 2, first.stderr
    assert first.stderr.count("state.created") == 1
    second = rig.orgsync("sync")
    assert second.returncode == 0, second.stderr
    assert "state.created" not in second.stderr
    validate = rig.orgsync("validate", "--offline")
    assert f"state {rig.folder / 'state.db'}: ok (schema version" in validate.stdout
    assert ", 2 runs)" in validate.stdout


def test_an_emptied_state_database_stops_every_command_and_changes_nothing(rig: Rig) -> None:
    document = directory(6)
    rig.write(document)
    assert rig.orgsync("sync").returncode == 0
    assert rig.holdings() == wanted_roles(document)
    state_db = rig.folder / "state.db"
    state_db.write_bytes(b"")  # a restore gone wrong, a full disk, a careless `>`
    # Someone leaves: with the memory gone, orgsync would no longer know it manages them.
    leaver = "person5@example.com"
    rig.write(directory(5))
    requests_before = len(rig.emulator.requests)

    for args in (("sync",), ("sync", "--dry-run"), ("status",), ("runs",)):
        answer = rig.orgsync(*args)
        assert answer.returncode == 1, (args, answer.stdout, answer.stderr)
        assert f"state database {state_db} exists but is empty" in answer.stderr
        assert f"mv {state_db} {state_db}.broken" in answer.stderr
    validate = rig.orgsync("validate", "--offline")
    assert validate.returncode == 1
    assert f"state: FAILED: state database {state_db} exists but is empty" in validate.stdout

    assert state_db.read_bytes() == b""  # left as found, for whoever investigates
    assert len(rig.emulator.requests) == requests_before  # nothing read, nothing written
    assert leaver in rig.holdings()

    # Starting over is deliberate: move it aside, run again, and it is announced.
    state_db.rename(state_db.with_name("state.db.broken"))
    again = rig.orgsync("sync", "--dry-run")
    assert again.returncode in (0, 2), again.stderr
    assert "state.created" in again.stderr


def test_run_history_older_than_keep_runs_is_pruned_with_its_journal(rig: Rig) -> None:
    rig.write(directory(4))
    assert rig.orgsync("sync").returncode == 0  # four invitations, journaled
    state_db = rig.folder / "state.db"
    with sqlite3.connect(state_db) as db:
        (first,) = [run_id for (run_id,) in db.execute("SELECT run_id FROM runs")]
        assert db.execute("SELECT COUNT(*) FROM operations").fetchone()[0] == 4
        # 100 days old, past the default keep_runs of 90 days.
        db.execute(
            "UPDATE runs SET started_at = '2020-01-01T00:00:00.000000+00:00' WHERE run_id = ?",
            (first,),
        )
    assert rig.orgsync("sync").returncode == 0  # nothing to do; prunes at the end
    with sqlite3.connect(state_db) as db:
        left = [run_id for (run_id,) in db.execute("SELECT run_id FROM runs")]
        journal = db.execute("SELECT COUNT(*) FROM operations").fetchone()[0]
    assert first not in left
    assert len(left) == 1
    assert journal == 0
