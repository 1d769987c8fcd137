"""The state database against real SQLite files: modes, migrations, journal durability,
crash recovery, links and memory, the lease row and the kernel writer lock, opening only
what it was (never silently recreating an emptied file), pruning, and validate's check."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from orgsync.core.errors import StateError
from orgsync.core.model import Memory
from orgsync.core.plan import (
    HeldOperation,
    Invite,
    Plan,
    RemoveMember,
    RevokeInvite,
    SetRole,
    operation_json,
)
from orgsync.core.ports import OperationJournal, OperationStatus
from orgsync.store import LATEST_VERSION, LinkRow, StateStore
from orgsync.store.db import Row
from tests.postgres import PASSWORD, PostgresServer

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=60)


class Clock:
    """A settable clock, so lease expiry and missing times need no sleeping."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def make_plan(target: str = "openai-prod") -> Plan:
    return Plan.build(
        target=target,
        generated_at=T0,
        operations=[
            Invite(email="Åsa.Öberg@Example.com", role="reader", source_id="00u1", reason="r"),
            SetRole(
                email="bob@example.com",
                user_id="user-b",
                role="owner",
                previous_role="reader",
                raise_=True,
                reason="member of openai-owners",
            ),
            RevokeInvite(email="carol@example.com", invite_id="inv-c", reason="out of scope"),
        ],
        held=[
            HeldOperation(
                operation=RemoveMember(email="dave@example.com", user_id="user-d", reason="gone"),
                guard="max_removals exceeded (11 > 10)",
            )
        ],
    )


def all_operations(plan: Plan) -> list[object]:
    return [*plan.operations, *(h.operation for h in plan.held)]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(location: str) -> Iterator[StateStore]:
    with StateStore.open(location) as opened:
        yield opened


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[StateStore]:
    with StateStore.open(db_path) as opened:
        yield opened


def sql(store: StateStore, statement: str, params: tuple[object, ...] = ()) -> list[Row]:
    """Run one statement through the store's own connection, on either backend."""
    with store.db.write() as session:
        if statement.lstrip().upper().startswith("SELECT"):
            return session.query(statement, params)  # type: ignore[arg-type]
        session.execute(statement, params)  # type: ignore[arg-type]
        return []


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def raw(db_path: Path) -> sqlite3.Connection:
    """A second, plain connection to inspect or tamper with the file as another tool would."""
    return sqlite3.connect(db_path, isolation_level=None)


# --------------------------------------------------------------------------- opening


def test_new_file_and_its_wal_and_shm_are_private(db_path: Path) -> None:
    previous = os.umask(0o022)  # a permissive umask must not leak into the files
    try:
        with StateStore.open(db_path) as store:
            store.start_run("t", "sync")
            for suffix in ("", "-wal", "-shm"):
                file = Path(f"{db_path}{suffix}")
                assert file.exists(), suffix
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, suffix
        # The last close removes the -wal; the next open recreates it, outside our umask.
        with StateStore.open(db_path) as store:
            store.start_run("t", "sync")
            assert stat.S_IMODE(Path(f"{db_path}-wal").stat().st_mode) == 0o600
        assert os.umask(0o022) == 0o022  # open restored the process umask
    finally:
        os.umask(previous)


def test_wal_busy_timeout_and_foreign_keys(sqlite_store: StateStore, db_path: Path) -> None:
    store = sqlite_store
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Per-connection pragmas can only be seen through the store's own connection.
    with store._db.read() as session:
        assert session.scalar("PRAGMA busy_timeout") == 5000
        assert session.scalar("PRAGMA foreign_keys") == 1
        assert session.scalar("PRAGMA synchronous") == 2  # FULL
    with pytest.raises(StateError, match="FOREIGN KEY"), store._db.write() as session:
        session.execute(
            "INSERT INTO operations (run_id, seq, kind, subject, status, payload, planned_at) "
            "VALUES ('no-such-run', 0, 'invite', 'x', 'planned', '{}', 'now')"
        )


def test_memory_database_works_without_a_file() -> None:
    with StateStore.open(":memory:") as store:
        assert store.path is None
        run_id = store.start_run("t", "dry-run")
        assert store.last_run("t") is not None
        assert store.runs()[0].run_id == run_id


def test_open_twice_migrates_once_and_keeps_data(location: str) -> None:
    with StateStore.open(location) as store:
        run_id = store.start_run("t", "sync")
    with StateStore.open(location) as store, StateStore.open(location) as other:
        assert store.last_run("t") is not None
        assert other.runs()[0].run_id == run_id
        rows = sql(store, "SELECT version FROM schema_version ORDER BY version")
    assert [row.integer("version") for row in rows] == list(range(1, LATEST_VERSION + 1))


def test_newer_schema_is_refused(location: str) -> None:
    with StateStore.open(location) as store:
        sql(
            store,
            "INSERT INTO schema_version VALUES (?, 'from the future', '2030-01-01')",
            (LATEST_VERSION + 1,),
        )
    with pytest.raises(StateError, match=rf"schema version {LATEST_VERSION + 1}, newer"):
        StateStore.open(location)


def test_foreign_database_and_garbage_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "other.db"
    with raw(foreign) as conn:
        conn.execute("CREATE TABLE runs (x)")
    with pytest.raises(StateError, match="not an orgsync state database"):
        StateStore.open(foreign)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all, not even close" * 100)
    with pytest.raises(StateError, match="not a database"):
        StateStore.open(garbage)


@pytest.mark.parametrize(
    "script",
    [
        # Another application's hand-made migrations, shaped like ours, at a lower version.
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT, "
        "applied_at TEXT); INSERT INTO schema_version VALUES (1, 'add invoices', '2020');",
        # Its own columns, an integer version.
        "CREATE TABLE schema_version (version INTEGER, script TEXT); "
        "INSERT INTO schema_version VALUES (3, 'V3__invoices.sql');",
    ],
)
def test_another_applications_schema_version_table_is_never_migrated(
    tmp_path: Path, script: str
) -> None:
    """A `[state] path` pointed at another application's SQLite file with a
    `schema_version` table (a common name) was taken for an old orgsync database and
    migrated: our tables were written into that application's file."""
    foreign = tmp_path / "app.db"
    with raw(foreign) as conn:
        conn.executescript(script + "CREATE TABLE invoices (id INTEGER PRIMARY KEY);")

    def schema() -> list[tuple[str, str]]:
        conn = raw(foreign)
        try:
            return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        finally:
            conn.close()

    before = schema()
    with pytest.raises(StateError, match="not an orgsync state database"):
        StateStore.open(foreign)
    assert schema() == before


def test_missing_directory_is_a_state_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="does not exist"):
        StateStore.open(tmp_path / "nope" / "state.db")


def test_closed_store_refuses_work(location: str) -> None:
    store = StateStore.open(location)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StateError, match="closed"):
        store.runs()


def test_no_column_is_named_like_a_secret(sqlite_store: StateStore, db_path: Path) -> None:
    secretish = re.compile(r"secret|token|passw|credential|api_?key|bearer|private|auth")
    with raw(db_path) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        columns = [
            (table, row[1])
            for table in tables
            for row in conn.execute(f"PRAGMA table_info({table})")
        ]
    assert {"runs", "operations", "links", "missing", "leases", "schema_version"} <= set(tables)
    assert columns
    assert [c for c in columns if secretish.search(c[1].lower())] == []


# --------------------------------------------------------------------------- runs


def test_run_lifecycle(location: str) -> None:
    clock = Clock()
    with StateStore.open(location, clock=clock, server_clock=False) as store:
        run_id = store.start_run("openai-prod", "sync", trigger="webhook")
        running = store.last_run("openai-prod")
        assert running is not None
        assert (running.run_id, running.status, running.mode, running.trigger) == (
            run_id,
            "running",
            "sync",
            "webhook",
        )
        assert running.started_at == T0
        assert running.finished_at is None
        assert running.exit_code is None
        assert running.pid == os.getpid()

        clock.advance(timedelta(seconds=5))
        store.finish_run(
            run_id,
            status="held",
            exit_code=3,
            summary={"invite": 2, "remove_member": 11},
            checksum="sha256:abc",
            error=None,
            held=11,
            failed=0,
            waiting=1,
        )
        done = store.last_run("openai-prod")
        assert done is not None
        assert done.status == "held"
        assert done.exit_code == 3
        assert done.finished_at == T0 + timedelta(seconds=5)
        assert done.summary == {"invite": 2, "remove_member": 11}
        assert (done.checksum, done.held, done.failed, done.waiting) == ("sha256:abc", 11, 0, 1)
        assert done.as_json()["finished_at"] == "2026-01-01T12:00:05Z"


def test_runs_are_newest_first_and_filterable(store: StateStore) -> None:
    ids = [store.start_run("a" if i % 2 else "b", "dry-run") for i in range(6)]
    assert ids == sorted(ids)  # ids sort in start order, even within one microsecond
    assert [r.run_id for r in store.runs()] == ids[::-1]
    assert [r.run_id for r in store.runs(limit=2)] == ids[:-3:-1]
    assert [r.run_id for r in store.runs(target="a")] == ids[1::2][::-1]
    assert store.last_run("b") == store.runs(target="b")[0]
    assert store.last_run("nobody") is None


def test_run_arguments_are_checked(store: StateStore) -> None:
    with pytest.raises(ValueError, match="mode"):
        store.start_run("t", "apply")
    run_id = store.start_run("t", "sync")
    with pytest.raises(ValueError, match="status"):
        store.finish_run(run_id, status="running", exit_code=0, summary={}, checksum=None)
    with pytest.raises(StateError, match="no run"):
        store.finish_run("nope", status="ok", exit_code=0, summary={}, checksum=None)


# --------------------------------------------------------------------------- journal


def test_plan_is_journaled_in_order_and_round_trips(store: StateStore) -> None:
    plan = make_plan()
    run_id = store.start_run(plan.target, "sync")
    store.record_plan(run_id, plan)
    records = store.operations(run_id)
    expected = all_operations(plan)
    assert [r.seq for r in records] == list(range(len(expected)))
    assert [r.status for r in records] == [OperationStatus.PLANNED] * 3 + [OperationStatus.HELD]
    assert [r.guard for r in records] == [None, None, None, "max_removals exceeded (11 > 10)"]
    assert [r.kind for r in records] == [op.op for op in plan.operations] + ["remove_member"]
    assert [r.operation() for r in records] == expected
    assert [r.payload for r in records] == [operation_json(op) for op in expected]  # type: ignore[arg-type]
    assert records[0].subject == "Åsa.Öberg@Example.com"  # as written, not normalized


@settings(max_examples=40, deadline=None)
@given(emails=st.lists(st.emails(), min_size=1, max_size=5, unique=True))
def test_any_email_round_trips(emails: list[str]) -> None:
    plan = Plan.build(
        target="t",
        generated_at=T0,
        operations=[
            Invite(email=e, role="reader", source_id=f"s{i}", reason="r")
            for i, e in enumerate(emails)
        ],
    )
    with StateStore.open(":memory:") as store:
        run_id = store.start_run("t", "sync")
        store.record_plan(run_id, plan)
        assert [r.operation() for r in store.operations(run_id)] == list(plan.operations)


def test_record_plan_refuses_mismatches(store: StateStore) -> None:
    plan = make_plan("openai-prod")
    with pytest.raises(StateError, match="no run"):
        store.record_plan("nope", plan)
    other = store.start_run("keycard", "sync")
    with pytest.raises(StateError, match="for target 'keycard'"):
        store.record_plan(other, plan)
    run_id = store.start_run("openai-prod", "sync")
    store.record_plan(run_id, plan)
    with pytest.raises(StateError, match="already has a journaled plan"):
        store.record_plan(run_id, plan)
    empty = store.start_run("openai-prod", "sync")
    store.record_plan(empty, Plan.build(target="openai-prod", generated_at=T0, operations=[]))
    assert store.operations(empty) == []


def test_journal_started_and_finished(location: str) -> None:
    clock = Clock()
    with StateStore.open(location, clock=clock, server_clock=False) as store:
        plan = make_plan()
        run_id = store.start_run(plan.target, "sync")
        store.record_plan(run_id, plan)
        journal: OperationJournal = store.journal(run_id)
        invite = plan.operations[0]

        clock.advance(timedelta(seconds=1))
        journal.started(0, invite)
        journal.started(0, invite)  # a second attempt
        record = store.operations(run_id)[0]
        assert (record.status, record.attempts) == (OperationStatus.IN_FLIGHT, 2)
        assert record.started_at == T0 + timedelta(seconds=1)

        clock.advance(timedelta(seconds=1))
        journal.finished(0, invite, OperationStatus.DONE, object_id="invite-1")
        journal.finished(0, invite, OperationStatus.DONE, detail="adopted")  # keeps the id
        record = store.operations(run_id)[0]
        assert (record.status, record.object_id, record.detail) == (
            OperationStatus.DONE,
            "invite-1",
            "adopted",
        )
        assert record.finished_at == T0 + timedelta(seconds=2)
        assert record.as_json()["status"] == "done"

        with pytest.raises(StateError, match="is invite"):
            journal.started(0, plan.operations[1])  # seq drifted from the plan
        with pytest.raises(StateError, match="no journaled operation 99"):
            journal.finished(99, invite, OperationStatus.FAILED)
        with pytest.raises(ValueError, match="not an outcome"):
            journal.finished(0, invite, OperationStatus.IN_FLIGHT)


def test_journal_is_safe_from_many_threads(store: StateStore) -> None:
    operations = [
        Invite(email=f"p{i}@example.com", role="reader", source_id=f"s{i}", reason="r")
        for i in range(40)
    ]
    plan = Plan.build(target="t", generated_at=T0, operations=list(operations))
    run_id = store.start_run("t", "sync")
    store.record_plan(run_id, plan)
    journal = store.journal(run_id)

    def work(worker: int) -> None:
        for seq in range(worker, len(plan.operations), 8):
            journal.started(seq, plan.operations[seq])
            journal.finished(seq, plan.operations[seq], OperationStatus.DONE, object_id=str(seq))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = store.operations(run_id)
    assert {r.status for r in records} == {OperationStatus.DONE}
    assert [r.object_id for r in records] == [str(i) for i in range(40)]
    assert {r.attempts for r in records} == {1}


CRASHING_CHILD = """
    import os, signal, sys
    from datetime import UTC, datetime
    from orgsync.core.plan import Invite, Plan
    from orgsync.store import StateStore

    store = StateStore.open(sys.argv[1])
    plan = Plan.build(
        target="t",
        generated_at=datetime(2026, 1, 1, tzinfo=UTC),
        operations=[
            Invite(email="a@example.com", role="reader", source_id="s1", reason="r"),
            Invite(email="b@example.com", role="reader", source_id="s2", reason="r"),
        ],
    )
    run_id = store.start_run("t", "sync")
    store.record_plan(run_id, plan)
    store.journal(run_id).started(0, plan.operations[0])
    print(run_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit, no flush of anything
"""


def test_journal_survives_kill_9_and_recovery_marks_the_run(location: str) -> None:
    StateStore.open(location).close()
    child = run_python(CRASHING_CHILD, location)
    assert child.returncode == -9, child.stderr
    run_id = child.stdout.strip()

    with StateStore.open(location) as store:
        before = store.operations(run_id)
        assert [r.status for r in before] == [OperationStatus.IN_FLIGHT, OperationStatus.PLANNED]
        assert before[0].attempts == 1
        dead = store.last_run("t")
        assert dead is not None
        assert dead.status == "running"
        assert store.pending("t") == []  # the only sync run is not finished

        assert store.recover_interrupted("t") == 2
        after = store.operations(run_id)
        assert {r.status for r in after} == {OperationStatus.INTERRUPTED}
        assert after[0].detail is not None
        assert "may or may not" in after[0].detail
        run = store.last_run("t")
        assert run is not None
        assert run.status == "interrupted"
        assert run.error is not None
        assert f"pid {dead.pid}) ended" in run.error
        assert run.finished_at == after[0].started_at  # its last sign of life
        assert [r.seq for r in store.pending("t")] == [0, 1]
        assert store.recover_interrupted("t") == 0  # nothing left to recover


def test_recovery_spares_only_this_process_s_live_runs(store: StateStore) -> None:
    """Called by the holder of the target's writer lock, recovery needs no process id: a
    `running` row of any other process is dead, even if its pid now names a live process
    (the pid was reused, or it is a pid of another PID namespace)."""
    mine = store.start_run("t", "sync")  # running in this process
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = sql(store, "SELECT host FROM runs")[0].text("host")
        rows = [
            ("pid-alive", sleeper.pid, host),  # a live process holds that pid now
            ("same-pid", os.getpid(), host),  # an earlier process with our pid
            ("pid-1", 1, host),  # pid 1 of a container: always "alive"
            ("other-host", sleeper.pid, host + "-old"),  # an earlier incarnation elsewhere
        ]
        for run_id, pid, run_host in rows:
            sql(
                store,
                "INSERT INTO runs (run_id, target, mode, triggered_by, status, started_at, "
                "host, pid) VALUES (?, 't', 'sync', 'cli', 'running', ?, ?, ?)",
                (run_id, "2026-01-01T00:00:00.000000+00:00", run_host, pid),
            )
        assert store.recover_interrupted("t") == 0  # no operations, but runs are marked
        status = {r.run_id: r.status for r in store.runs(target="t")}
        assert status == {
            mine: "running",
            "pid-alive": "interrupted",
            "same-pid": "interrupted",
            "pid-1": "interrupted",
            "other-host": "interrupted",
        }
    finally:
        sleeper.kill()
        sleeper.wait()
    store.finish_run(mine, status="ok", exit_code=0, summary={}, checksum=None)
    assert store.recover_interrupted("t") == 0
    assert store.recover_interrupted("other-target") == 0


def test_pending_is_what_the_latest_finished_sync_left(store: StateStore) -> None:
    plan = make_plan()
    first = store.start_run(plan.target, "sync")
    store.record_plan(first, plan)
    journal = store.journal(first)
    journal.started(0, plan.operations[0])
    journal.finished(0, plan.operations[0], OperationStatus.DONE)
    journal.started(1, plan.operations[1])
    journal.finished(1, plan.operations[1], OperationStatus.FAILED, detail="HTTP 400: no")
    journal.finished(2, plan.operations[2], OperationStatus.SKIPPED)
    store.finish_run(first, status="held", exit_code=3, summary={}, checksum=None)
    pending = store.pending(plan.target)
    assert [(p.seq, p.status) for p in pending] == [
        (1, OperationStatus.FAILED),
        (3, OperationStatus.HELD),
    ]
    # Neither a later dry run nor a sync still running hides the last finished sync.
    dry = store.start_run(plan.target, "dry-run")
    store.finish_run(dry, status="changes-pending", exit_code=2, summary={}, checksum=None)
    store.start_run(plan.target, "sync")
    assert store.pending(plan.target) == pending
    clean = store.start_run(plan.target, "sync")
    store.finish_run(clean, status="ok", exit_code=0, summary={}, checksum=None)
    assert store.pending(plan.target) == []


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("UPDATE links SET member_id = X'01' WHERE email_key = 'b@x'", "'member_id' holds bytes"),
        ("UPDATE links SET email_key = X'00' WHERE email_key = 'b@x'", "'email_key' holds bytes"),
        ("UPDATE links SET updated_at = 'soon' WHERE email_key = 'a@x'", "ISO 8601 timestamp"),
    ],
)
def test_a_corrupt_link_is_named_not_used(db_path: Path, tamper: str, message: str) -> None:
    """Links are read as plain tuples (a row per person at 100k people), yet a value of the
    wrong kind is still a corrupt database naming its column, on every read of them."""
    with StateStore.open(db_path) as store:
        store.record_links("t", [LinkRow("a@x", "s1", "m1"), LinkRow("b@x", "s2", "m2")])
        assert store.memory("t").links == {"s1": "m1", "s2": "m2"}
    raw(db_path).execute(tamper)
    with StateStore.open(db_path) as store:
        if "updated_at" not in tamper:
            with pytest.raises(StateError, match=message):
                store.memory("t")
        with pytest.raises(StateError, match=message):
            store.record_links("t", [LinkRow("c@x", "s3", "m3")])


def test_link_upsert_keeps_known_values(location: str) -> None:
    clock = Clock()
    with StateStore.open(location, clock=clock, server_clock=False) as store:
        store.link("t", email_key="ada@example.com", source_id="00u1", invite_id="inv-1")
        clock.advance(timedelta(hours=1))
        store.link("t", email_key="ada@example.com", source_id=None, member_id="user-1")
        store.link("t", email_key="eve@example.com", source_id="00u2")  # invited, no member yet
        store.link("other", email_key="ada@example.com", source_id="00u1", member_id="x")
        assert store.memory("t") == Memory(
            managed=frozenset({"ada@example.com", "eve@example.com"}),  # type: ignore[arg-type]
            links={"00u1": "user-1"},  # type: ignore[dict-item]
            linked_sources={"ada@example.com": "00u1", "eve@example.com": "00u2"},  # type: ignore[dict-item]
        )
        (row,) = sql(
            store,
            "SELECT source_id, invite_id, first_linked_at, updated_at FROM links "
            "WHERE target = 't' AND email_key = 'ada@example.com'",
        )
        assert (row.text("source_id"), row.text("invite_id")) == ("00u1", "inv-1")
        # first link time kept, update time moved
        assert row.time("first_linked_at") < row.time("updated_at")

        # After an email change the newer link of the same source id wins.
        clock.advance(timedelta(hours=1))
        store.link("t", email_key="ada@new.example", source_id="00u1", member_id="user-9")
        assert store.memory("t").links == {"00u1": "user-9"}
        store.unlink("t", "ada@example.com")
        store.unlink("t", "never-linked@example.com")
        assert store.memory("t").managed == frozenset({"ada@new.example", "eve@example.com"})


KEYS = st.sampled_from(["a@x", "b@x", "c@x"])
MAYBE = st.none() | st.sampled_from(["1", "2", "3"])
LINK_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("link"), KEYS, MAYBE, MAYBE, MAYBE),
        st.tuples(st.just("unlink"), KEYS, st.none(), st.none(), st.none()),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps=LINK_STEPS)
def test_link_sequences_match_a_model(
    steps: list[tuple[str, str, str | None, str | None, str | None]],
) -> None:
    model: dict[str, tuple[str | None, str | None, str | None]] = {}
    order: list[str] = []  # email keys by last update, oldest first
    clock = Clock()
    with StateStore.open(":memory:", clock=clock) as store:
        for action, key, source_id, member_id, invite_id in steps:
            clock.advance(timedelta(seconds=1))
            if action == "unlink":
                store.unlink("t", key)
                model.pop(key, None)
                continue
            store.link(
                "t", email_key=key, source_id=source_id, member_id=member_id, invite_id=invite_id
            )
            old = model.get(key, (None, None, None))
            # A member id stays with the person it was linked for: another source id
            # taking the address does not inherit it.
            moved = source_id is not None and old[0] is not None and source_id != old[0]
            kept_member = None if moved else old[1]
            model[key] = (source_id or old[0], member_id or kept_member, invite_id or old[2])
            order = [k for k in order if k != key] + [key]
        expected_links = {}
        for key in order:
            if key in model and model[key][0] and model[key][1]:
                expected_links[model[key][0]] = model[key][1]
        memory = store.memory("t")
        assert memory.managed == frozenset(model)
        assert dict(memory.links) == expected_links


# One row per person, as the engine records them (its batch comes from a dict).
BATCH = st.lists(st.tuples(KEYS, MAYBE, MAYBE), max_size=6, unique_by=lambda row: row[0])


@settings(max_examples=150, deadline=None)
@given(steps=LINK_STEPS, batches=st.lists(BATCH, min_size=1, max_size=3))
# Two people claiming one source id, recorded twice while the clock stands still: the rows
# written the second time must still sort after those of the first.
@example(
    steps=[],
    batches=[[("b@x", "1", None)], [("b@x", None, "1"), ("c@x", "1", "1"), ("a@x", "1", "2")]],
)
def test_recording_links_in_batches_means_linking_each(
    steps: list[tuple[str, str, str | None, str | None, str | None]],
    batches: list[list[tuple[str, str | None, str | None]]],
) -> None:
    """`record_links` skips rows that would not change, yet leaves the same memory as one
    `link` call per row (the newest link of a source id still wins)."""
    clock = Clock()
    with (
        StateStore.open(":memory:", clock=clock) as one,
        StateStore.open(":memory:", clock=clock) as batched,
    ):
        for action, key, source_id, member_id, invite_id in steps:
            clock.advance(timedelta(seconds=1))
            for store in (one, batched):
                if action == "unlink":
                    store.unlink("t", key)
                else:
                    store.link(
                        "t",
                        email_key=key,
                        source_id=source_id,
                        member_id=member_id,
                        invite_id=invite_id,
                    )
        for batch in batches:
            for key, source_id, member_id in batch:
                clock.advance(timedelta(seconds=1))
                one.link("t", email_key=key, source_id=source_id, member_id=member_id)
            clock.advance(timedelta(seconds=1))
            batched.record_links("t", [LinkRow(k, s, m) for k, s, m in batch])
            assert batched.memory("t") == one.memory("t")
            # The same batch again changes nothing, so it writes nothing; unless two of its
            # people claim one source id, when each write makes the other's link the older.
            sources = [batched.memory("t").linked_sources.get(k) for k, _, _ in batch]  # type: ignore[call-overload]
            claimed = [s for s in sources if s is not None]
            again = batched.record_links("t", [LinkRow(k, s, m) for k, s, m in batch])
            if len(claimed) == len(set(claimed)):
                assert again == 0
            assert batched.memory("t") == one.memory("t")


def test_a_batch_that_changes_nothing_leaves_the_file_untouched(db_path: Path) -> None:
    """No row written means no WAL frame, hence no fsync: what makes a quiet pass cheap."""
    clock = Clock()
    rows = [LinkRow(f"p{i}@x", f"s{i}", f"u{i}") for i in range(50)]
    with StateStore.open(db_path, clock=clock) as store:
        store.link("t", email_key="p0@x", source_id="s0", invite_id="inv-0")
        assert store.record_links("t", rows) == 50
        store.mark_missing("t", ["gone@x"], T0)
        wal = Path(f"{db_path}-wal")
        size, mtime = wal.stat().st_size, wal.stat().st_mtime_ns
        with raw(db_path) as conn:
            before = conn.execute("SELECT * FROM links ORDER BY email_key").fetchall()
        clock.advance(timedelta(hours=1))
        assert store.record_links("t", rows) == 0
        store.mark_missing("t", ["gone@x"], clock())  # a later sighting keeps the first
        store.clear_missing("t", keep_only=["gone@x"])
        assert (wal.stat().st_size, wal.stat().st_mtime_ns) == (size, mtime)
        with raw(db_path) as conn:
            assert conn.execute("SELECT * FROM links ORDER BY email_key").fetchall() == before
        assert store.memory("t").missing_since == {"gone@x": T0}
        # A changed member id is written, and only it.
        rows[3] = LinkRow("p3@x", "s3", "u3-new")
        assert store.record_links("t", rows) == 1
        assert store.memory("t").links["s3"] == "u3-new"  # type: ignore[index]
        with raw(db_path) as conn:
            assert conn.execute(
                "SELECT invite_id FROM links WHERE email_key = 'p0@x'"
            ).fetchone() == ("inv-0",)


def test_missing_keeps_the_first_time_and_clears_the_returned(store: StateStore) -> None:
    store.mark_missing("t", ["a@x", "b@x"], T0)
    store.mark_missing("t", ["a@x", "c@x"], T0 + timedelta(hours=1))
    store.mark_missing("t", ["b@x"], T0 - timedelta(hours=1))  # an earlier sighting wins
    store.mark_missing("other", ["a@x"], T0 + timedelta(days=1))
    assert dict(store.memory("t").missing_since) == {
        "a@x": T0,
        "b@x": T0 - timedelta(hours=1),
        "c@x": T0 + timedelta(hours=1),
    }
    store.clear_missing("t", keep_only={"a@x", "z@x"})
    assert dict(store.memory("t").missing_since) == {"a@x": T0}
    assert dict(store.memory("other").missing_since) == {"a@x": T0 + timedelta(days=1)}
    store.link("t", email_key="a@x", source_id="s")
    store.unlink("t", "a@x")  # forgetting someone forgets when they went missing
    assert dict(store.memory("t").missing_since) == {}
    store.clear_missing("other", keep_only=[])
    assert dict(store.memory("other").missing_since) == {}


def test_naive_times_are_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.mark_missing("t", ["a@x"], datetime(2026, 1, 1))


# --------------------------------------------------------------------------- lease


def test_taking_the_lease_records_the_holder_and_takes_over_a_dead_one(db_path: Path) -> None:
    # SQLite: the kernel lock decides who writes, the row only reports it (a row found by
    # the next lock holder is a dead process's); PostgreSQL: tests/store/test_leases.py.
    with StateStore.open(db_path) as one, StateStore.open(db_path) as two:
        taken = one.leases.take("t", "cli a", TTL, now=T0)
        assert taken is not None and taken.previous is None and taken.record.token == 1
        other = two.leases.take("other", "cli b", TTL, now=T0)  # leases are per target
        assert other is not None and other.record.token == 1
        # Taking it again extends it and keeps when it was first taken, and its token.
        again = one.leases.take("t", "cli a", TTL, now=T0 + timedelta(seconds=30))
        assert again is not None and again.previous is None and again.record.token == 1
        holder = two.lease_holder("t", now=T0 + timedelta(seconds=31))
        assert holder is not None
        assert (holder.holder, holder.acquired_at, holder.expires_at, holder.token) == (
            "cli a",
            T0,
            T0 + timedelta(seconds=90),
            1,
        )
        two.leases.release("t", "cli b", 1)  # not the holder: no effect
        assert one.lease_holder("t", now=T0 + timedelta(seconds=31)) == holder
        # Only the holder of the writer lock takes the lease; a row it finds belongs to a
        # process that died holding the lock: it is replaced at once, TTL or not, and the
        # fencing token grows.
        later = T0 + timedelta(seconds=40)
        took_over = two.leases.take("t", "cli b", TTL, now=later)
        assert took_over is not None and took_over.previous == holder
        assert took_over.record.token == 2
        assert not one.leases.renew("t", "cli a", 1, TTL, now=later)  # taken over: lost
        now_held = one.lease_holder("t", now=later)
        assert now_held is not None
        assert (now_held.holder, now_held.acquired_at, now_held.token) == ("cli b", later, 2)


def test_an_expired_lease_is_not_reported_but_its_holder_may_renew_it(db_path: Path) -> None:
    with StateStore.open(db_path) as store:
        assert store.leases.take("t", "daemon a", TTL, now=T0) is not None
        assert store.leases.renew("t", "daemon a", 1, TTL, now=T0 + timedelta(seconds=50))
        assert store.lease_holder("t", now=T0 + timedelta(seconds=111)) is None
        assert store.leases.renew("t", "daemon a", 1, TTL, now=T0 + timedelta(seconds=111))
        assert store.lease_holder("t", now=T0 + timedelta(seconds=112)) is not None
        assert not store.leases.renew("t", "daemon a", 2, TTL)  # not its token
        with pytest.raises(ValueError, match="positive"):
            store.leases.take("t", "daemon a", timedelta(0))


CONTENDER = """
    import sys
    from orgsync.store import StateStore

    store = StateStore.open(sys.argv[1])
    lock = store.writer_lock("t")
    print("ready", flush=True)
    sys.stdin.readline()
    won = lock.try_acquire()
    print("won" if won else "lost", flush=True)
    sys.stdin.readline()  # hold it until told to end
"""


def test_the_writer_lock_has_one_winner_among_processes(location: str) -> None:
    StateStore.open(location).close()
    contenders = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CONTENDER), location],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    try:
        for proc in contenders:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in contenders:  # release them as close together as we can
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in contenders:
            assert proc.stdout is not None
            results.append(proc.stdout.readline().strip())
        assert sorted(results) == ["lost"] * 5 + ["won"]
        with StateStore.open(location) as store:
            lock = store.writer_lock("t")
            assert lock.held_elsewhere()
            assert not lock.try_acquire()
            other = store.writer_lock("other")
            assert other.try_acquire()  # locks are per target
            other.release()
    finally:
        for proc in contenders:
            proc.kill()
            proc.communicate()


HOLDER = """
    import os, sys
    from orgsync.store import StateStore

    store = StateStore.open(sys.argv[1])
    lock = store.writer_lock("t")  # kept: a lock object dropped may close its session
    assert lock.try_acquire()
    print("holding", flush=True)
    sys.stdin.readline()
"""


def test_the_kernel_releases_the_lock_of_a_killed_process(location: str) -> None:
    """No process id, no TTL: `kill -9` of the holder frees the target at once (the
    kernel drops its flock; the server ends its session, and the session's lock)."""
    StateStore.open(location).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), location],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        with StateStore.open(location) as store:
            lock = store.writer_lock("t")
            assert lock.held_elsewhere()
            assert not lock.try_acquire(patience=0.2)
            holder.kill()
            holder.communicate()
            # The server notices the closed connection within moments, not at once.
            assert lock.try_acquire(patience=10)
            assert lock.intact()
            lock.release()
            assert not lock.held_elsewhere()
            assert lock.try_acquire()
            lock.release()
    finally:
        holder.kill()
        holder.communicate()


def test_writer_locks_in_one_process_exclude_each_other_and_survive_a_replaced_file(
    db_path: Path,
) -> None:
    with StateStore.open(db_path) as store:
        first, second = store.writer_lock("t"), store.writer_lock("t")
        assert first.try_acquire()
        assert first.try_acquire()  # already held: still ours
        assert second.held_elsewhere()
        assert not first.held_elsewhere()
        assert not second.try_acquire()
        first.release()
        assert second.try_acquire()
        second.release()
        lock_file = db_path.with_name("state.db.t.lock")
        assert stat.S_IMODE(lock_file.stat().st_mode) == 0o600
        # Someone deletes the lock file under its holder: another process could now lock a
        # new file of that name, so the holder learns it no longer guards the target.
        assert first.try_acquire()
        assert first.intact()
        lock_file.unlink()
        assert not first.intact()
        assert second.try_acquire()  # what the holder's renewal guards against
        assert second.intact()
        second.release()
        first.release()
        # A symbolic link in its place is refused, not followed.
        lock_file.unlink()
        lock_file.symlink_to(db_path.parent / "elsewhere")
        with pytest.raises(StateError, match="cannot open the lock file"):
            first.try_acquire()
        assert not (db_path.parent / "elsewhere").exists()
        lock_file.unlink()
        odd = store.writer_lock("../../etc/passwd")  # never a path outside the folder
        assert odd.try_acquire()
        odd.release()
        assert all(p.parent == db_path.parent for p in db_path.parent.glob("*.lock"))
    with StateStore.open(":memory:") as memory:
        first, second = memory.writer_lock("t"), memory.writer_lock("t")
        assert first.try_acquire()
        assert not second.try_acquire()
        assert second.held_elsewhere()
        first.release()
        assert second.try_acquire()


def test_advisory_locks_exclude_each_other_and_a_lost_session_is_noticed(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the writer lock is a session's advisory lock: a holder whose session
    ends (the server restarted, the connection was cut, an administrator terminated it)
    no longer holds it, and `intact` says so before its next write."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with StateStore.open(postgres.url_for_new_database()) as store:
        first, second = store.writer_lock("t"), store.writer_lock("t")
        assert first.try_acquire()
        assert first.try_acquire()  # already held: still ours
        assert first.intact()
        assert second.held_elsewhere()
        assert not first.held_elsewhere()
        assert not second.try_acquire(patience=0.2)
        other = store.writer_lock("other")
        assert other.try_acquire()  # locks are per target
        other.release()
        first.release()
        assert not second.held_elsewhere()
        assert second.try_acquire()
        second.release()

        assert first.try_acquire()
        with postgres.admin() as admin:
            terminated = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND pid != pg_backend_pid()"
            ).fetchall()
        assert terminated
        assert not first.intact()
        assert second.try_acquire(patience=5)  # what the holder's renewal guards against
        assert second.intact()
        second.release()
        first.release()
        odd = store.writer_lock("../../etc/passwd'; DROP TABLE runs; --")
        assert odd.try_acquire()
        odd.release()
        assert store.runs() == []


def test_a_store_reconnects_when_the_server_ended_its_session(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server restart or failover ends the store's connection: the next transaction
    starts on a new one (nothing was done in it yet), so a daemon keeps reconciling."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    url = postgres.url_for_new_database()
    with StateStore.open(url) as store:
        run_id = store.start_run("t", "sync")
        with postgres.admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid != pg_backend_pid()",
                (url.rsplit("/", 1)[1].split("?")[0],),
            )
        time.sleep(0.2)
        assert [r.run_id for r in store.runs()] == [run_id]
        store.finish_run(run_id, status="ok", exit_code=0, summary={}, checksum=None)
        last = store.last_run("t")
        assert last is not None
        assert last.status == "ok"


def test_processes_opening_a_new_database_at_once_migrate_it_once(location: str) -> None:
    """The first runs of several processes (a daemon and an operator, replicas) meet an
    empty database together: one creates the schema, the others wait and find it."""
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []

    def open_it() -> None:
        barrier.wait()
        try:
            with StateStore.open(location) as store:
                store.start_run("t", "dry-run")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_it) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with StateStore.open(location) as store:
        rows = sql(store, "SELECT version FROM schema_version ORDER BY version")
        assert len(store.runs()) == 5
    assert [row.integer("version") for row in rows] == list(range(1, LATEST_VERSION + 1))


def test_a_missing_time_recorded_by_a_clock_that_ran_ahead_is_replaced_by_the_next_pass(
    store: StateStore,
) -> None:
    """A clock a year ahead when someone left, corrected since: the grace counts from the
    next pass's (correct) time, not from a year ahead, which would keep the leaver's access
    for a year."""
    store.mark_missing("t", ["gone@x"], T0 + timedelta(days=365))
    store.mark_missing("t", ["gone@x"], T0)
    assert dict(store.memory("t").missing_since) == {"gone@x": T0}
