"""Helpers of the kill -9 tests: was the sync killed while it was applying?

Read from the state database the sync writes (the journal of its last run), for every
target's kill -9 tests (OpenAI in tests/cli/test_crash_and_faults.py, Keycard, SCIM).
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path


def killed_during_apply(state_db: Path, *, any_started: bool = False) -> bool:
    """Whether the last run had started applying and not finished."""
    with sqlite3.connect(state_db, timeout=5) as db:
        run = db.execute(
            "SELECT run_id, status FROM runs ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
        if run is None or run[1] != "running":
            return False
        statuses = [
            row[0]
            for row in db.execute("SELECT status FROM operations WHERE run_id = ?", (run[0],))
        ]
    started = any(s != "planned" for s in statuses)
    return started and (any_started or any(s in {"planned", "in_flight"} for s in statuses))


def wait_for_apply(state_db: Path, process: subprocess.Popen[str], timeout: float = 30) -> None:
    """Return once the running sync has journaled its first operation (or has ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if state_db.exists() and killed_during_apply(state_db, any_started=True):
                return
        except sqlite3.OperationalError:
            pass  # the sync is still creating its tables
        time.sleep(0.01)
