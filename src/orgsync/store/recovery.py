"""Crash recovery: turning the runs of dead processes into `interrupted` runs.

Owns the rewrite of a dead run and its unfinished operations. Which runs are dead needs no
guess from a process id: a `running` row exists only while its process holds the target's
writer lock (sync runs are started under it and finished before it is released; dry runs
and runs that never took it are written once, finished). So the caller, holding that lock,
knows every `running` row of the target that is not a live run of its own process belongs
to a process that ended without finishing it.

An `in_flight` operation of a dead run may or may not have reached the target; the next
run's fresh read of the target (and adoption of existing objects) decides, which is why
recovery marks rather than retries anything.
"""

from __future__ import annotations

from orgsync.core.ports import OperationStatus
from orgsync.store.db import StateDB, encode_time
from orgsync.store.runs import INTERRUPTED, RUNNING, is_live_here


def recover_interrupted(db: StateDB, target: str) -> int:
    """Mark `target`'s `running` runs of ended processes, and their unfinished operations,
    interrupted; call only while holding the target's writer lock.

    Returns the number of operations marked. Runs this process is running are left alone.
    """
    now = encode_time(db.clock())
    marked = 0
    with db.write() as session:
        running = session.query(
            "SELECT run_id, pid, host FROM runs WHERE target = ? AND status = ?",
            (target, RUNNING),
        )
        for run in running:
            run_id = run.text("run_id")
            if is_live_here(run_id):
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
                        UNION ALL SELECT finished_at FROM operations WHERE run_id = :run
                    ) AS signs)
                WHERE run_id = :run
                """,
                {
                    "status": INTERRUPTED,
                    "error": (
                        f"interrupted: its process ({run.text('host')}, pid {run.integer('pid')}) "
                        f"ended without finishing the run (found at {now})"
                    ),
                    "run": run_id,
                },
            )
    return marked
