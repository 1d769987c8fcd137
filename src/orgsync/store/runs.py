"""Run history: one row per dry run or sync of one target, from start to finish.

Owns the `runs` table, the run id format, the pruning of old history, and the in-process
register of runs this process has started and not finished yet (recovery leaves those
alone). A sync run is written `running` once its process holds the target's writer lock,
and finished before the lock is released; everything else (dry runs, runs that failed or
were stopped before taking the lock) is written once, finished, so a `running` row always
means "the writer of that target, alive or dead". `host` and `pid` are shown to people,
never used to decide anything: a process id means nothing in another PID namespace.

`origin` says which kind of process ran it (`cli` or `daemon`) and `instance` which one
(a random id per engine, also in its lease holder name): the daemon's quarantine and
readiness count the daemon's own runs only.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orgsync.core.errors import StateError
from orgsync.store.db import Row, Session, SqlValue, StateDB, encode_json, encode_time, iso_z

RUN_MODES = frozenset({"dry-run", "sync"})
RUNNING = "running"
INTERRUPTED = "interrupted"
RUN_STATUSES = frozenset({RUNNING, "ok", "changes-pending", "held", "failed", INTERRUPTED})
FINAL_STATUSES = RUN_STATUSES - {RUNNING}
ORIGINS = frozenset({"cli", "daemon"})


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
    origin: str = "cli"
    instance: str | None = None
    pass_kind: str | None = None
    """'full', 'incremental' or 'targeted' (None: recorded before orgsync knew passes)."""
    pass_reason: str | None = None
    """Why a pass asked to be incremental was full (no baseline, configuration changed...)."""

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
            "origin": self.origin,
            "instance": self.instance,
            "pass": self.pass_kind,
            "pass_reason": self.pass_reason,
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
        return _run_id(now), now

    def start(
        self,
        target: str,
        mode: str,
        trigger: str,
        origin: Origin,
        also: Callable[[Session], object] | None = None,
    ) -> str:
        """Write a `running` run; only the holder of the target's writer lock may. `also`
        runs in the same transaction (the write generation, `marks.py`)."""
        run_id, started = self._new_run_id()
        row = _row(target, mode, trigger, origin, run_id=run_id, started=started)
        with self._db.write() as session:
            session.insert_all("runs", [{**row, "status": RUNNING}])
            if also is not None:
                also(session)
        with _live_lock:
            _live_runs.add(run_id)
        return run_id

    def record(
        self,
        target: str,
        mode: str,
        trigger: str,
        origin: Origin,
        *,
        started: datetime,
        outcome: Outcome,
    ) -> str:
        """Write a run that is already over, in one statement (nothing to recover later)."""
        run_id = _run_id(started.astimezone(UTC))
        row = _row(target, mode, trigger, origin, run_id=run_id, started=started)
        with self._db.write() as session:
            session.insert_all(
                "runs",
                [
                    {
                        **row,
                        **outcome.columns(),
                        "finished_at": encode_time(self._db.clock()),
                    }
                ],
            )
        return run_id

    def prune(self, before: datetime) -> int:
        """Delete runs started before `before`, with their journal; returns how many.

        Kept whatever their age: runs still `running` (recovery needs them), the newest run
        of each target (`status` shows it) and the newest finished sync run of each target
        (what it left pending).
        """
        with self._db.write() as session:
            return session.execute(
                """
                DELETE FROM runs
                WHERE started_at < :before AND status != 'running' AND run_id NOT IN (
                    SELECT run_id FROM (
                        SELECT run_id, ROW_NUMBER() OVER (
                            PARTITION BY target ORDER BY started_at DESC, run_id DESC) AS n
                        FROM runs) AS newest
                    WHERE n = 1
                    UNION ALL
                    SELECT run_id FROM (
                        SELECT run_id, ROW_NUMBER() OVER (
                            PARTITION BY target ORDER BY started_at DESC, run_id DESC) AS n
                        FROM runs WHERE mode = 'sync' AND status != 'running') AS newest_sync
                    WHERE n = 1)
                """,
                {"before": encode_time(before)},
            )

    def finish(
        self, run_id: str, outcome: Outcome, also: Callable[[Session], object] | None = None
    ) -> None:
        columns = {**outcome.columns(), "finished_at": encode_time(self._db.clock())}
        with self._db.write() as session:
            if also is not None:
                also(session)
            changed = session.execute(
                """
                UPDATE runs SET status = :status, exit_code = :exit_code,
                    finished_at = :finished_at, summary = :summary, checksum = :checksum,
                    error = :error, held = :held, failed = :failed, waiting = :waiting,
                    pass_kind = :pass_kind, pass_reason = :pass_reason
                WHERE run_id = :run_id
                """,
                {**columns, "run_id": run_id},
            )
        if changed != 1:
            raise StateError(f"no run {run_id!r} in the state database")
        with _live_lock:
            _live_runs.discard(run_id)

    def get(self, run_id: str) -> RunRecord | None:
        with self._db.read() as session:
            row = session.one("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return None if row is None else _record(row)

    def history(
        self,
        limit: int,
        target: str | None,
        *,
        origin: str | None = None,
        mode: str | None = None,
        instance: str | None = None,
    ) -> list[RunRecord]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        with self._db.read() as session:
            rows = session.query(
                # CAST: PostgreSQL cannot infer the type of a parameter only tested for NULL.
                "SELECT * FROM runs WHERE (CAST(:target AS TEXT) IS NULL OR target = :target) "
                "AND (CAST(:origin AS TEXT) IS NULL OR origin = :origin) "
                "AND (CAST(:mode AS TEXT) IS NULL OR mode = :mode) "
                "AND (CAST(:instance AS TEXT) IS NULL OR instance = :instance) "
                "ORDER BY started_at DESC, run_id DESC LIMIT :limit",
                {
                    "target": target,
                    "origin": origin,
                    "mode": mode,
                    "instance": instance,
                    "limit": limit,
                },
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
        origin=row.text("origin"),
        instance=row.opt_text("instance"),
        pass_kind=row.opt_text("pass_kind"),
        pass_reason=row.opt_text("pass_reason"),
    )


@dataclass(frozen=True, slots=True)
class Origin:
    """Which process runs: `kind` cli or daemon, `instance` the engine's random id."""

    kind: str
    instance: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ORIGINS:
            raise ValueError(f"run origin {self.kind!r} is not one of {sorted(ORIGINS)}")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: the columns `finish` and `record` write."""

    status: str
    exit_code: int
    summary: Mapping[str, int]
    checksum: str | None
    error: str | None = None
    held: int = 0
    failed: int = 0
    waiting: int = 0
    pass_kind: str | None = None
    pass_reason: str | None = None

    def __post_init__(self) -> None:
        if self.status not in FINAL_STATUSES:
            raise ValueError(f"run status {self.status!r} is not one of {sorted(FINAL_STATUSES)}")

    def columns(self) -> dict[str, SqlValue]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "summary": encode_json(dict(self.summary)),
            "checksum": self.checksum,
            "error": self.error,
            "held": self.held,
            "failed": self.failed,
            "waiting": self.waiting,
            "pass_kind": self.pass_kind,
            "pass_reason": self.pass_reason,
        }


def _run_id(started: datetime) -> str:
    return f"{started:%Y%m%dT%H%M%S.%f}Z-{secrets.token_hex(4)}"


def _row(
    target: str, mode: str, trigger: str, origin: Origin, *, run_id: str, started: datetime
) -> dict[str, SqlValue]:
    if mode not in RUN_MODES:
        raise ValueError(f"run mode {mode!r} is not one of {sorted(RUN_MODES)}")
    return {
        "run_id": run_id,
        "target": target,
        "mode": mode,
        "triggered_by": trigger,
        "started_at": encode_time(started),
        "summary": "{}",
        "pid": os.getpid(),
        "host": this_host(),
        "origin": origin.kind,
        "instance": origin.instance,
    }
