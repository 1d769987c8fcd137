"""A throwaway PostgreSQL server: Debian's postgresql, initdb + pg_ctl in a temporary
folder, listening on a loopback port (password auth, scram) and a unix socket in that
folder (trust, for administration). The test suite's fixtures (tests/postgres.py) and
bench/replicas.py both start theirs here, so a benchmark runs from a clean clone without
the test tree.

initdb and the server refuse to run as root: as root, the cluster belongs to `nobody`
and its commands run through `runuser`. A missing PostgreSQL is installed with apt-get
when running as root; otherwise `PostgresMissing` says what to install.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

USER = "orgsync"
PASSWORD = "pg-Secret-" + "7f3a9c41e2b8d605"
"""The role's password: what no output, log or row may ever show."""


class PostgresMissing(RuntimeError):
    """initdb and pg_ctl are not installed (scripts/setup-system installs them)."""


class PostgresFailed(RuntimeError):
    """initdb or the server's start failed; the message holds their output."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin_dir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version)
    return found[-1].parent if found else None


def _version(path: Path) -> float:
    try:
        return float(path.parent.parent.name)
    except ValueError:
        return 0.0


def postgres_bin_dir() -> Path:
    """Where initdb and pg_ctl are, installing Debian's postgresql if it is missing and
    this is root (the README's test command does it through scripts/setup-system)."""
    found = _bin_dir()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],  # noqa: S607
            env=env,
            capture_output=True,
            check=False,
            timeout=600,
        )
        found = _bin_dir()
    if found is None:
        raise PostgresMissing(
            "PostgreSQL (initdb, pg_ctl) is not installed (scripts/setup-system installs it)"
        )
    return found


@dataclass
class PostgresServer:
    folder: Path
    bin_dir: Path
    port: int
    as_user: list[str]

    @property
    def socket_dir(self) -> Path:
        return self.folder / "run"

    def url(self, database: str, *, user: str = USER) -> str:
        """A URL without the password (it comes from the environment or a file)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def admin(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            dbname=database,
            user="postgres",
            autocommit=True,
        )

    def new_database(self, prefix: str = "state", *, template: str | None = None) -> str:
        """A fresh database owned by the test role; returns its name.

        Empty, or a copy of `template` (a database of this server nobody is connected to,
        e.g. one a module migrated or seeded once): a file-level copy, much cheaper than
        building the same rows again in every test."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        source = f' TEMPLATE "{template}"' if template is not None else ""
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {USER}{source}')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url_for_new_database(self, prefix: str = "state") -> str:
        return self.url(self.new_database(prefix))

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - the server's own pg_ctl, our arguments
            [*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="orgsync-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses root: the cluster is nobody's, in a folder nobody may enter.
        as_user = ["runuser", "-u", "nobody", "--"]
        folder.chmod(0o755)
    (folder / "run").mkdir()
    pwfile = folder / "pwfile"
    pwfile.write_text("postgres-admin-unused\n")
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody")
        shutil.chown(folder / "run", "nobody")
        shutil.chown(pwfile, "nobody")
    port = free_port()
    server = PostgresServer(folder=folder, bin_dir=bin_dir, port=port, as_user=as_user)
    try:
        init = subprocess.run(  # noqa: S603 - the installed initdb, our arguments
            [
                *as_user,
                str(bin_dir / "initdb"),
                "-D",
                str(folder / "data"),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if init.returncode != 0:
            raise PostgresFailed(f"initdb failed: {init.stdout}{init.stderr}")
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} "
            f"-c unix_socket_directories={folder / 'run'} -c fsync=off "
            "-c max_connections=200 -c shared_buffers=16MB"
        )
        started = server.pg_ctl(
            "-w", "-t", "60", "-l", str(folder / "server.log"), "-o", options, "start"
        )
        if started.returncode != 0:
            log = (folder / "server.log").read_text(errors="replace")
            raise PostgresFailed(f"pg_ctl start failed: {started.stdout}{started.stderr}\n{log}")
        with server.admin() as conn:
            conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        yield server
    finally:
        server.pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)
