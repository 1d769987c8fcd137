"""The ownership ledger of target groups, against real SQLite files: owning, renaming,
disowning, the planner's `Memory`, and migrating a version-1 database that has data."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orgsync.core.errors import StateError
from orgsync.store import LATEST_VERSION, OwnedGroup, StateStore
from orgsync.store import migrations as migrations_module

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(location: str, clock: Clock) -> Iterator[StateStore]:
    with StateStore.open(location, clock=clock, server_clock=False) as opened:
        yield opened


def raw(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(db_path, isolation_level=None)


def own(store: StateStore, group_id: str, source: str, name: str, how: Any = "created") -> None:
    store.own_group("openai", group_id=group_id, source_group_id=source, name=name, how=how)


def test_owned_groups_survive_reopening_and_fill_memory(location: str, clock: Clock) -> None:
    with StateStore.open(location, clock=clock, server_clock=False) as store:
        own(store, "group_a", "src-a", "team-a")
        own(store, "group_b", "src-b", "team-b", "adopted")
        store.link("openai", email_key="ada@example.com", source_id="00u1", member_id="user_1")
    with StateStore.open(location, clock=clock, server_clock=False) as store:
        assert store.owned_groups("openai") == {"group_a": "src-a", "group_b": "src-b"}
        memory = store.memory("openai")
        assert dict(memory.owned_groups) == {"group_a": "src-a", "group_b": "src-b"}
        # The rest of the memory is still there alongside.
        assert dict(memory.links) == {"00u1": "user_1"}
        assert memory.managed == frozenset({"ada@example.com"})
        records = store.owned_group_records("openai")
    assert records == [
        OwnedGroup("openai", "group_a", "src-a", "team-a", "created", T0, T0),
        OwnedGroup("openai", "group_b", "src-b", "team-b", "adopted", T0, T0),
    ]


def test_ledger_is_per_target(store: StateStore) -> None:
    own(store, "group_a", "src-a", "team-a")
    store.own_group("other", group_id="group_a", source_group_id="x", name="n", how="adopted")
    assert store.owned_groups("openai") == {"group_a": "src-a"}
    assert store.owned_groups("other") == {"group_a": "x"}
    assert store.owned_groups("nobody") == {}
    assert dict(store.memory("nobody").owned_groups) == {}
    assert store.disown_group("other", "group_a") is True
    assert store.owned_groups("openai") == {"group_a": "src-a"}


def test_owning_again_keeps_how_and_first_time(store: StateStore, clock: Clock) -> None:
    own(store, "group_a", "src-a", "team-a", "created")
    clock.now = T0 + timedelta(hours=1)
    # A later run adopts the group it had created (its create result was lost in a crash).
    own(store, "group_a", "src-a2", "team-a2", "adopted")
    (record,) = store.owned_group_records("openai")
    assert (record.how, record.first_owned_at) == ("created", T0)
    assert (record.source_group_id, record.name) == ("src-a2", "team-a2")
    assert record.updated_at == T0 + timedelta(hours=1)


def test_rename_and_disown(store: StateStore, clock: Clock) -> None:
    own(store, "group_a", "src-a", "team-a")
    clock.now = T0 + timedelta(minutes=5)
    assert store.rename_owned_group("openai", "group_a", "team-renamed") is True
    (record,) = store.owned_group_records("openai")
    assert (record.name, record.updated_at, record.first_owned_at) == (
        "team-renamed",
        T0 + timedelta(minutes=5),
        T0,
    )
    assert store.owned_groups("openai") == {"group_a": "src-a"}  # identity is the id

    assert store.rename_owned_group("openai", "group_unknown", "x") is False
    assert store.rename_owned_group("other-target", "group_a", "x") is False
    assert store.owned_group_records("openai")[0].name == "team-renamed"

    assert store.disown_group("openai", "group_a") is True
    assert store.disown_group("openai", "group_a") is False
    assert store.owned_groups("openai") == {}
    assert dict(store.memory("openai").owned_groups) == {}


def test_unknown_how_is_refused_before_writing(store: StateStore) -> None:
    with pytest.raises(ValueError, match="how must be one of"):
        own(store, "group_a", "src-a", "team-a", "stolen")
    assert store.owned_groups("openai") == {}


def test_schema_refuses_bad_rows_and_corrupt_rows_are_named(db_path: Path) -> None:
    store = StateStore.open(db_path)
    with raw(db_path) as conn, pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute(
            "INSERT INTO owned_groups VALUES ('openai', 'g', 's', 'n', 'stolen', 't', 't')"
        )
    with raw(db_path) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(
            "INSERT INTO owned_groups VALUES ('openai', 'g', 's', 'n', 'stolen', "
            "'2026-01-01T12:00:00.000000+00:00', '2026-01-01T12:00:00.000000+00:00')"
        )
    with pytest.raises(StateError, match=r"owned_groups\.how"):
        store.owned_group_records("openai")
    store.close()


def test_many_groups(store: StateStore) -> None:
    for i in range(500):
        own(store, f"group_{i:04}", f"src-{i % 50}", f"team-{i}")
    owned = store.owned_groups("openai")
    assert len(owned) == 500
    assert owned["group_0123"] == "src-23"


def test_version_1_database_with_data_is_migrated(
    location: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Create the database exactly as the release with schema version 1 did: migration
    # texts are frozen, so running only the first one reproduces that file.
    with monkeypatch.context() as patch:
        patch.setattr(migrations_module, "MIGRATIONS", migrations_module.MIGRATIONS[:1])
        patch.setattr(migrations_module, "LATEST_VERSION", 1)
        with StateStore.open(location, clock=clock, server_clock=False) as old:
            run_id = "20260101T000000.000000Z-00000001"
            with old._db.write() as session:  # as that release wrote it: no origin column
                session.execute(
                    "INSERT INTO runs (run_id, target, mode, triggered_by, status, started_at, "
                    "host, pid) VALUES (?, 'openai', 'sync', 'cli', 'running', "
                    "'2026-01-01T00:00:00.000000+00:00', 'h', 1)",
                    (run_id,),
                )
            old.link("openai", email_key="ada@example.com", source_id="00u1", member_id="u1")
            with pytest.raises(StateError, match="owned_groups"):
                old.owned_groups("openai")
            assert versions(old) == [1]

    assert LATEST_VERSION >= 2
    with StateStore.open(location, clock=clock, server_clock=False) as store:
        assert store.run(run_id) is not None
        assert dict(store.memory("openai").links) == {"00u1": "u1"}
        assert store.owned_groups("openai") == {}
        own(store, "group_a", "src-a", "team-a")
        assert dict(store.memory("openai").owned_groups) == {"group_a": "src-a"}
        assert versions(store) == list(range(1, LATEST_VERSION + 1))
        run = store.run(run_id)
        assert run is not None
        assert run.origin == "cli"  # migration 4's default reached the old row
        with store.db.read() as session:
            if session.dialect.name == "sqlite":
                index_sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
            else:
                index_sql = "SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public'"
            indexes = {row.text("name") for row in session.query(index_sql)}
    assert {"owned_groups_by_source", "runs_by_start", "runs_running"} <= indexes


def versions(store: StateStore) -> list[int]:
    with store.db.read() as session:
        rows = session.query("SELECT version FROM schema_version ORDER BY version")
    return [row.integer("version") for row in rows]
