"""Crash recovery: turning the runs of dead processes into `interrupted` runs.

Owns the decision "is this `running` run still alive?" and the rewrite of a dead run and
its unfinished operations. An `in_flight` operation of a dead run may or may not have
reached the target; the next run's fresh read of the target (and adoption of existing
objects) decides, which is why recovery marks rather than retries anything.
"""

from __future__ import annotations

import os

from orgsync.core.ports import OperationStatus
from orgsync.store.db import StateDB, encode_time
from orgsync.store.runs import INTERRUPTED, RUNNING, is_live_here, this_host


def recover_interrupted(db: StateDB, target: str) -> int:
    """Mark the dead `running` runs of `target` and their unfinished operations interrupted.

    Returns the number of operations marked. Runs of live processes (a concurrent dry run,
    a run in another thread of this process) are left alone.
    """
    now = encode_time(db.clock())
    host = this_host()
    marked = 0
    with db.write() as session:
        running = session.query(
            "SELECT run_id, pid, host FROM runs WHERE target = ? AND status = ?",
            (target, RUNNING),
        )
        for run in running:
            run_id = run.text("run_id")
            if _alive(run_id, run.integer("pid"), run.text("host"), host):
                continue
            marked += session.execute(
                """
                UPDATE operations
                SET status = ?, detail = CASE status
                    WHEN ? THEN 'interrupted while in flight: the call may or may not have '
                                || 'reached the target'
                    ELSE 'never started: the run ended first' END
                WHERE run_id = ? AND status IN (?, ?)
                """,
                (
                    OperationStatus.INTERRUPTED.value,
                    OperationStatus.IN_FLIGHT.value,
                    run_id,
                    OperationStatus.IN_FLIGHT.value,
                    OperationStatus.PLANNED.value,
                ),
            )
            # finished_at: the run's last sign of life, not the time we noticed it died.
            session.execute(
                """
                UPDATE runs
                SET status = :status, error = :error, finished_at = (
                    SELECT MAX(t) FROM (
                        SELECT started_at AS t FROM runs WHERE run_id = :run
                        UNION ALL SELECT started_at FROM operations WHERE run_id = :run
                        UNION ALL SELECT finished_at FROM operations WHERE run_id = :run))
                WHERE run_id = :run
                """,
                {
                    "status": INTERRUPTED,
                    "error": (
                        f"interrupted: process {run.text('host')}:{run.integer('pid')} ended "
                        f"without finishing the run (found at {now})"
                    ),
                    "run": run_id,
                },
            )
    return marked


def _alive(run_id: str, pid: int, run_host: str, host: str) -> bool:
    if run_host != host:
        # WAL works through shared memory, so every process using this file runs on this
        # host: another name is an earlier incarnation (a re-created container, a rename).
        return False
    if pid == os.getpid():
        # Our own pid: either a run of this process, or one of an earlier process that had
        # the same pid (containers always start the daemon as pid 1).
        return is_live_here(run_id)
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """`kill(pid, 0)`: whether a process with that id exists (ours or someone else's)."""
    if pid <= 0:
        # 0 and negative ids address process groups, never one process.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
