"""Fixtures every test folder may use: a real PostgreSQL server, started once per session
(tests/postgres.py) and only when a test asks for it, and a fresh database of it per test
(`postgres_url`; see tests/README.md)."""

from __future__ import annotations

import compileall
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cli
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


@pytest.fixture
def postgres_url(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty database of the session's PostgreSQL, for this test alone: its URL
    (no password in it), with the password in PGPASSWORD, as libpq reads it and the
    `orgsync` processes the test starts inherit. Dropped afterwards, whoever is still
    connected (a replica the test left running)."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    name = postgres.new_database()
    yield postgres.url(name)
    # Each new database costs the server several megabytes of disk.
    postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's state database is, on each backend: a SQLite file, or a fresh
    database on the suite's PostgreSQL (`postgres_url`)."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    return str(request.getfixturevalue("postgres_url"))


IN_PROCESS = "orgsync_in_process"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{IN_PROCESS}(on=True): cli.run runs `orgsync` in the test process "
        "(tests/cli/__init__.py); on=False on a test of such a module: as a process",
    )


@pytest.fixture(autouse=True)
def _default_logging() -> None:
    """Every test starts from structlog's defaults (nothing filtered): a test asserting on
    debug lines (`http.request`) must not depend on what an earlier test on the same
    worker left configured. (`test_lean`'s debug capture came back empty once in CI
    after a file had run `orgsync` in-process; each run puts the configuration back,
    and this makes sure of it whatever the cause.)"""
    import structlog

    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _orgsync_in_process(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker(IN_PROCESS)
    with cli.in_process(marker is not None and marker.args[:1] != (False,)):
        yield
