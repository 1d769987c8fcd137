"""Fixtures every test folder may use: a real PostgreSQL server, started once per session
(tests/postgres.py) and only when a test asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PASSWORD, PostgresServer, running_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def location(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Where a test's state database is, on each backend: a SQLite file, or a fresh
    database on the suite's PostgreSQL (its password in PGPASSWORD, as libpq reads it,
    which the tests' child processes inherit)."""
    if request.param == "sqlite":
        yield str(tmp_path / "state.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    name = server.new_database()
    yield server.url(name)
    # Each new database costs the server several megabytes of disk.
    server.drop_database(name)
