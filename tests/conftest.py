"""Fixtures every test folder may use: a real PostgreSQL server, started once per session
(tests/postgres.py) and only when a test asks for it."""

from __future__ import annotations

import compileall
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PASSWORD, PostgresServer, running_postgres

SOURCE = Path(__file__).resolve().parent.parent / "src" / "orgsync"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the product's modules to bytecode once, before any test starts `orgsync`.

    Hundreds of tests run the real command in a fresh interpreter. Where
    PYTHONDONTWRITEBYTECODE is set (it is in the CI image), no interpreter ever writes
    src/orgsync/__pycache__, so every one of those processes would compile every module
    it imports from source again: about a sixth of each start's CPU. compileall writes
    the bytecode regardless of that setting, and only for modules whose source changed."""
    if SOURCE.is_dir():
        compileall.compile_dir(SOURCE, quiet=1)


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
