"""`orgsync validate`'s look at the state path: usable as it is, reading only.

Never creates, migrates or repairs anything: it says what a run would find (no database
yet, one to be upgraded, one ready) or why a run would refuse it.
"""

from __future__ import annotations

import os
from pathlib import Path

from orgsync.core.errors import StateError
from orgsync.core.state_url import redact_state_url

# The database modules (SQLite, the writer locks, the migrations) are imported once there
# is a database to look at: `validate --offline` before the first sync needs none of them
# (bench/startup.py).
_MEMORY = ":memory:"  # orgsync.store.db.MEMORY


def check_state_path(path: str | Path) -> str:
    """What is at `path`, in a few words; `StateError` if a run could not use it."""
    if str(path) == _MEMORY:
        return "in memory (nothing is kept between runs)"
    file = Path(path)
    folder = file.parent
    if not folder.is_dir():
        raise StateError(f"{file}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        # SQLite creates its -wal and -shm files there, and orgsync its lock files.
        raise StateError(f"{file}: the directory {folder} is not writable by this user")
    if file.is_dir():
        raise StateError(f"{file} is a directory, not a database file")
    if not file.exists():
        return f"{file}: none yet (the first sync creates it)"
    if not os.access(file, os.R_OK | os.W_OK):
        raise StateError(f"{file} is not readable and writable by this user")
    from orgsync.store.db import SqliteDB, start_over
    from orgsync.store.migrations import LATEST_VERSION, schema_version

    db = SqliteDB.open(file, create=False)
    try:
        version = schema_version(db)
        with db.read() as session:
            problems = [row.text("quick_check") for row in session.query("PRAGMA quick_check")]
            runs = session.scalar("SELECT COUNT(*) FROM runs")
    finally:
        db.close()
    if problems != ["ok"]:
        raise StateError(
            f"state database {file} fails its integrity check ({'; '.join(problems[:3])}). "
            f"{start_over(file)}"
        )
    upgrade = f", upgraded to {LATEST_VERSION} by the next run" if version < LATEST_VERSION else ""
    return f"{file}: ok (schema version {version}{upgrade}, {runs} runs)"


def check_state_url(url: str, *, password: str | None) -> str:
    """What is in the PostgreSQL database at `url`, in a few words; `StateError` if a run
    could not use it (unreachable, refused credentials, not orgsync's, too new)."""
    from orgsync.store.db import NoStateDatabase
    from orgsync.store.migrations import LATEST_VERSION, schema_version
    from orgsync.store.postgres import PostgresDB

    try:
        db = PostgresDB.open(url, password=password, create=False)
    except NoStateDatabase:
        return f"{redact_state_url(url)}: reachable, empty (the first sync creates the schema)"
    try:
        version = schema_version(db)
        with db.read() as session:
            runs = session.scalar("SELECT COUNT(*) FROM runs")
        location = db.location
        tls = db.tls()
    finally:
        db.close()
    upgrade = f", upgraded to {LATEST_VERSION} by the next run" if version < LATEST_VERSION else ""
    return f"{location}: ok (schema version {version}{upgrade}, {runs} runs; {tls})"
