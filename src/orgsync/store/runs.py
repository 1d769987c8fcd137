"""Run history: one row per dry run or sync of one target, from start to finish.

Owns the `runs` table, the run id format, and the in-process register of runs this process
has started and not finished yet (the only reliable way to tell a live run of our own pid
from a dead one of an earlier process that happened to get the same pid, as in containers
where the daemon is always pid 1).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orgsync.core.errors import StateError
from orgsync.store.db import Row, StateDB, encode_json, encode_time, iso_z

RUN_MODES = frozenset({"dry-run", "sync"})
RUNNING = "running"
INTERRUPTED = "interrupted"
RUN_STATUSES = frozenset({RUNNING, "ok", "changes-pending", "held", "failed", INTERRUPTED})
FINAL_STATUSES = RUN_STATUSES - {RUNNING}


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as the history shows it. Times are UTC; `finished_at` is None while running."""

    run_id: str
    target: str
    mode: str
    trigger: str
    status: str
    exit_code: int | None
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, int]
    checksum: str | None
    error: str | None
    held: int
    failed: int
    waiting: int
    pid: int
    host: str

    def as_json(self) -> dict[str, object]:
        """The record for `--json` output; times in ISO 8601 UTC with a `Z`."""
        return {
            "run_id": self.run_id,
            "target": self.target,
            "mode": self.mode,
            "trigger": self.trigger,
            "status": self.status,
            "exit_code": self.exit_code,
            "started_at": iso_z(self.started_at),
            "finished_at": iso_z(self.finished_at) if self.finished_at else None,
            "summary": dict(self.summary),
            "checksum": self.checksum,
            "error": self.error,
            "held": self.held,
            "failed": self.failed,
            "waiting": self.waiting,
            "pid": self.pid,
            "host": self.host,
        }


# --------------------------------------------------------------------------- this process

_live_lock = threading.Lock()
_live_runs: set[str] = set()


def is_live_here(run_id: str) -> bool:
    """Whether this process started `run_id` and has not finished it."""
    with _live_lock:
        return run_id in _live_runs


def this_host() -> str:
    return socket.gethostname()


# --------------------------------------------------------------------------- the table


class Runs:
    def __init__(self, db: StateDB) -> None:
        self._db = db
        self._stamp_lock = threading.Lock()
        self._last_stamp: datetime | None = None

    def _new_run_id(self) -> tuple[str, datetime]:
        """A run id that sorts by start time: `YYYYmmddTHHMMSS.ffffffZ-<8 hex>`.

        The start time is made strictly increasing per store, so two runs started in the
        same microsecond (or across a backwards clock step) still sort in start order.
        """
        now = self._db.clock()
        if now.tzinfo is None:
            raise ValueError(f"naive datetime {now!r} from the clock: runs are stamped in UTC")
        now = now.astimezone(UTC)
        with self._stamp_lock:
            if self._last_stamp is not None and now <= self._last_stamp:
                now = self._last_stamp + timedelta(microseconds=1)
            self._last_stamp = now
        return f"{now:%Y%m%dT%H%M%S.%f}Z-{secrets.token_hex(4)}", now

    def start(self, target: str, mode: str, trigger: str) -> str:
        if mode not in RUN_MODES:
            raise ValueError(f"run mode {mode!r} is not one of {sorted(RUN_MODES)}")
        run_id, started = self._new_run_id()
        with self._db.write() as session:
            session.insert_all(
                "runs",
                [
                    {
                        "run_id": run_id,
                        "target": target,
                        "mode": mode,
                        "triggered_by": trigger,
                        "status": RUNNING,
                        "started_at": encode_time(started),
                        "summary": "{}",
                        "pid": os.getpid(),
                        "host": this_host(),
                    }
                ],
            )
        with _live_lock:
            _live_runs.add(run_id)
        return run_id

    def finish(
        self,
        run_id: str,
        *,
        status: str,
        exit_code: int,
        summary: dict[str, int],
        checksum: str | None,
        error: str | None,
        held: int,
        failed: int,
        waiting: int,
    ) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {sorted(FINAL_STATUSES)}")
        with self._db.write() as session:
            changed = session.execute(
                """
                UPDATE runs SET status = ?, exit_code = ?, finished_at = ?, summary = ?,
                    checksum = ?, error = ?, held = ?, failed = ?, waiting = ?
                WHERE run_id = ?
                """,
                (
                    status,
                    exit_code,
                    encode_time(self._db.clock()),
                    encode_json(dict(summary)),
                    checksum,
                    error,
                    held,
                    failed,
                    waiting,
                    run_id,
                ),
            )
        if changed != 1:
            raise StateError(f"no run {run_id!r} in the state database")
        with _live_lock:
            _live_runs.discard(run_id)

    def get(self, run_id: str) -> RunRecord | None:
        with self._db.read() as session:
            row = session.one("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return None if row is None else _record(row)

    def history(self, limit: int, target: str | None) -> list[RunRecord]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        with self._db.read() as session:
            rows = session.query(
                "SELECT * FROM runs WHERE (:target IS NULL OR target = :target) "
                "ORDER BY started_at DESC, run_id DESC LIMIT :limit",
                {"target": target, "limit": limit},
            )
        return [_record(row) for row in rows]


def _record(row: Row) -> RunRecord:
    summary = row.json_object("summary")
    counts: dict[str, int] = {}
    for key, value in summary.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise StateError(f"run {row.text('run_id')}: summary {key!r} is not a count")
        counts[key] = value
    return RunRecord(
        run_id=row.text("run_id"),
        target=row.text("target"),
        mode=row.text("mode"),
        trigger=row.text("triggered_by"),
        status=row.text("status"),
        exit_code=row.opt_integer("exit_code"),
        started_at=row.time("started_at"),
        finished_at=row.opt_time("finished_at"),
        summary=counts,
        checksum=row.opt_text("checksum"),
        error=row.opt_text("error"),
        held=row.integer("held"),
        failed=row.integer("failed"),
        waiting=row.integer("waiting"),
        pid=row.integer("pid"),
        host=row.text("host"),
    )
