"""A real PostgreSQL server for the tests: Debian's postgresql, initdb + pg_ctl in a
temporary folder, listening on a loopback port (password auth, scram) and a unix socket
in that folder (trust, for the suite's own administration).

One server serves the whole session (initdb and start-up cost seconds); tests never share
a database. In a test, use the fixtures of tests/conftest.py:

* `postgres_url`: the URL of a fresh database of its own (dropped afterwards), with the
  test role's password in PGPASSWORD, which libpq and the `orgsync` processes the test
  starts read; give the URL to `[state] url`, or to several replicas at once;
* `postgres`: the `PostgresServer` itself, for more than one database
  (`url_for_new_database()`), a copy of a prepared one (`new_database(template=...)`),
  or administration as the superuser (`admin()`, over the unix socket);
* `location`: runs a test twice, on a SQLite file and on a fresh PostgreSQL database.

initdb and the server refuse to run as root: as root, the cluster belongs to `nobody`
and its commands run through `runuser`. A missing PostgreSQL is installed with apt-get
when the suite runs as root; otherwise (or when that fails) the tests are skipped on a
workstation and fail under CI=true or scripts/test (ORGSYNC_REQUIRE_SERVERS=1).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from orgsync.testing import postgres as _server
from orgsync.testing.postgres import PASSWORD, USER, PostgresServer

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "PASSWORD",
    "PASSWORD_ENV",
    "USER",
    "PostgresServer",
    "postgres_bin_dir",
    "running_postgres",
    "state_keys",
]
PASSWORD_ENV = "ORGSYNC_TEST_PG_PASSWORD"
"""Where the `orgsync` processes of a test read PASSWORD (`[state] password_env`)."""


def state_keys(url: str) -> str:
    """The `[state]` lines of an `orgsync` on the database at `url`, its password read
    from PASSWORD_ENV."""
    return f'url = "{url}"\npassword_env = "{PASSWORD_ENV}"'


def _require(message: str) -> None:
    if os.environ.get("CI") == "true" or os.environ.get("ORGSYNC_REQUIRE_SERVERS"):
        pytest.fail(message)
    pytest.skip(message)


def postgres_bin_dir() -> Path:
    """Where initdb and pg_ctl are (installed if missing and root); skipped on a
    workstation without them, a failure under CI or scripts/test."""
    try:
        return _server.postgres_bin_dir()
    except _server.PostgresMissing as missing:
        _require(str(missing))
        raise


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """`orgsync.testing.postgres.running_postgres`, a missing or broken server being a
    skip or a failure of the test asking for it."""
    postgres_bin_dir()
    try:
        server = _server.running_postgres()
        started = server.__enter__()
    except _server.PostgresFailed as failed:
        pytest.fail(str(failed))
    try:
        yield started
    finally:
        server.__exit__(None, None, None)
