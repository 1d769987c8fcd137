"""The state database is trusted only when it is what it was (issue 9, item 7).

Against real SQLite files: a database emptied, replaced by garbage or corrupted inside is
refused with its name and how to start over, and left exactly as it was; a missing one is
created (fully, before it appears under its name) only when asked to; run history is
pruned with its journal; `validate`'s check reads and never writes.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orgsync.core.errors import StateError
from orgsync.core.plan import Invite, Plan
from orgsync.store import (
    LATEST_VERSION,
    NoStateDatabase,
    Origin,
    Outcome,
    StateStore,
    check_state_path,
)
from orgsync.store.migrations import MIGRATIONS

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def a_used_database(path: Path) -> None:
    with StateStore.open(path) as store:
        run_id = store.start_run("t", "sync")
        store.link("t", email_key="ada@example.com", source_id="s1", member_id="u1")
        store.finish_run(run_id, status="ok", exit_code=0, summary={}, checksum=None)


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("how", ["truncated", "header only"])
def test_an_emptied_database_is_refused_and_left_as_it_is(tmp_path: Path, how: str) -> None:
    path = tmp_path / "state.db"
    a_used_database(path)
    if how == "truncated":
        path.write_bytes(b"")
    else:  # a valid SQLite file with no tables at all, e.g. re-created by another tool
        path.unlink()
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
    before = files_in(tmp_path)
    with pytest.raises(StateError) as refused:
        StateStore.open(path)
    message = str(refused.value)
    assert f"state database {path} exists but is empty" in message
    assert f"mv {path} {path}.broken" in message
    assert "backup" in message
    assert files_in(tmp_path) == before  # nothing written, nothing created beside it


def test_garbage_and_corruption_are_refused_with_the_way_to_start_over(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 300)
    with pytest.raises(StateError, match=r"garbage.db is unreadable .*not a database") as refused:
        StateStore.open(garbage)
    assert f"mv {garbage} {garbage}.broken" in str(refused.value)
    assert garbage.read_bytes() == b"not sqlite at all" * 300

    corrupt = tmp_path / "corrupt.db"
    with StateStore.open(corrupt) as store:
        for i in range(300):
            store.link("t", email_key=f"person{i}@example.com", source_id=f"s{i}")
    with sqlite3.connect(corrupt) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert pages > 4
    with corrupt.open("r+b") as raw:  # scribble over one page near the end
        raw.seek(page_size * (pages - 2))
        raw.write(b"\xff" * page_size)
    # A run may not touch that page for a while; validate reads every page.
    with pytest.raises(StateError, match="integrity check") as refused:
        check_state_path(corrupt)
    assert f"mv {corrupt} {corrupt}.broken" in str(refused.value)
    with corrupt.open("r+b") as raw:  # now every page but the schema's
        raw.seek(page_size)
        raw.write(b"\xff" * page_size * (pages - 1))
    with pytest.raises(StateError, match=r"unreadable .*malformed") as refused:
        StateStore.open(corrupt)
    assert "to start over on purpose" in str(refused.value)


def test_reading_commands_never_create_a_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with pytest.raises(NoStateDatabase, match=f"no state database at {path} yet"):
        StateStore.open(path, create=False)
    assert list(tmp_path.iterdir()) == []
    assert check_state_path(path) == f"{path}: none yet (the first sync creates it)"
    assert list(tmp_path.iterdir()) == []


def test_a_new_database_is_announced_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(path) as store:
        assert store.path == path
    first = capsys.readouterr()
    assert (first.out + first.err).count("state.created") == 1
    with StateStore.open(path):
        pass
    second = capsys.readouterr()
    assert "state.created" not in second.out + second.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]  # no scratch left


OPENER = """
    import sys
    from orgsync.store import StateStore

    sys.stdin.readline()
    with StateStore.open(sys.argv[1]) as store:
        print("created" if store._db.created else "opened", len(store.runs()), flush=True)
"""


def test_processes_opening_a_missing_database_at_once_share_one(tmp_path: Path) -> None:
    """One creates it; the others never see a half-made (empty) file and refuse it."""
    path = tmp_path / "state.db"
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(OPENER), str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    for proc in openers:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    answers = [proc.communicate(timeout=60) for proc in openers]
    assert [proc.returncode for proc in openers] == [0] * 6, [err for _, err in answers]
    # The log line (structlog's default goes to stdout here) comes before the answer.
    assert sorted(out.splitlines()[-1] for out, _ in answers) == ["created 0"] + ["opened 0"] * 5
    assert sum(out.count("state.created") for out, _ in answers) == 1


def test_version_2_history_learns_who_ran_each_run(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT "
            "NULL, applied_at TEXT NOT NULL)"
        )
        for migration in MIGRATIONS[:2]:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version VALUES (?, ?, '2026-01-01')",
                (migration.version, migration.description),
            )
        for run_id, trigger in (("r1", "cli"), ("r2", "schedule"), ("r3", "webhook:okta")):
            conn.execute(
                "INSERT INTO runs (run_id, target, mode, triggered_by, status, started_at, "
                "host, pid) VALUES (?, 't', 'sync', ?, 'failed', ?, 'h', 1)",
                (run_id, trigger, f"2026-01-01T00:00:0{run_id[1]}.000000+00:00"),
            )
    assert check_state_path(path).endswith(
        f"(schema version 2, upgraded to {LATEST_VERSION} by the next run, 3 runs)"
    )
    with StateStore.open(path) as store:
        origins = {r.run_id: (r.origin, r.instance) for r in store.runs()}
        daemon_runs = [r.run_id for r in store.runs(origin="daemon", mode="sync")]
    assert origins == {"r1": ("cli", None), "r2": ("daemon", None), "r3": ("daemon", None)}
    assert daemon_runs == ["r3", "r2"]
    assert check_state_path(path) == (f"{path}: ok (schema version {LATEST_VERSION}, 3 runs)")


def test_validate_check_names_what_would_stop_a_run(tmp_path: Path) -> None:
    with pytest.raises(StateError, match=r"directory .*nope does not exist"):
        check_state_path(tmp_path / "nope" / "state.db")
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(StateError, match="is a directory"):
        check_state_path(tmp_path / "folder.db")
    assert check_state_path(":memory:").startswith("in memory")


def test_old_runs_are_pruned_with_their_journal(location: str) -> None:
    now = T0 + timedelta(days=200)
    with StateStore.open(location, clock=lambda: now, server_clock=False) as store:
        old = T0

        def recorded(target: str, mode: str, days: int, status: str = "ok") -> str:
            return store.record_run(
                target,
                mode,
                origin=Origin("daemon"),
                started_at=old + timedelta(days=days),
                outcome=Outcome(status=status, exit_code=0, summary={}, checksum=None),
            )

        old_sync = store.start_run("a", "sync")  # a sync with a journal, made old below
        plan = Plan.build(
            target="a",
            generated_at=T0,
            operations=[Invite(email="x@example.com", role="r", source_id="s", reason="r")],
        )
        store.record_plan(old_sync, plan)
        store.finish_run(old_sync, status="ok", exit_code=0, summary={}, checksum=None)
        with store._db.write() as session:
            session.execute(
                "UPDATE runs SET started_at = '2025-01-01T00:00:00.000000+00:00' WHERE run_id = ?",
                (old_sync,),
            )
        old_dry = recorded("a", "dry-run", 1)
        kept_sync = recorded("a", "sync", 2, "failed")  # newest finished sync of a: stays
        old_only_run = recorded("c", "dry-run", 3)  # c's newest (and only) run: stays
        only_b = recorded("b", "sync", 4)  # b's newest run and newest sync: stays
        recent = recorded("a", "dry-run", 150)  # a's newest run; within the 90 days anyway
        assert store.operations(old_sync) != []

        assert store.prune_runs(now - timedelta(days=90)) == 2
        left = {r.run_id for r in store.runs(limit=100)}
        assert left == {kept_sync, old_only_run, only_b, recent}
        assert old_dry not in left
        assert store.operations(old_sync) == []  # the journal went with its run
        with store._db.read() as session:
            assert session.scalar("SELECT COUNT(*) FROM operations") == 0
        assert store.prune_runs(now - timedelta(days=90)) == 0
