"""The operation journal: every planned and held operation of a run, and what became of it.

Owns the `operations` table. `record_plan` writes the whole plan before anything is
applied; `RunJournal` is the applier's `OperationJournal`, writing durably before and
after each call, so that a run killed at any instant leaves rows saying exactly which
calls may have been sent (`in_flight`) and which were never started (`planned`).
Payloads are `operation_json` wire forms: emails, roles, ids and the reason, no secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orgsync.core.errors import StateError
from orgsync.core.plan import OPERATION_ADAPTER, Operation, Plan, operation_json
from orgsync.core.ports import OperationStatus
from orgsync.store.db import (
    Row,
    Session,
    SqlValue,
    StateDB,
    encode_json,
    encode_time,
    iso_z,
)

# What `finished` may record: an outcome, never a state an operation passes through.
_OUTCOMES = frozenset(OperationStatus) - {OperationStatus.PLANNED, OperationStatus.IN_FLIGHT}

# An operation of a finished run in any other state still needs doing (or a decision).
_SETTLED = (OperationStatus.DONE.value, OperationStatus.SKIPPED.value)


@dataclass(frozen=True, slots=True)
class OperationRecord:
    """One journaled operation. `payload` is the operation's wire form (reference "Plan JSON")."""

    run_id: str
    seq: int
    kind: str
    subject: str
    status: OperationStatus
    guard: str | None
    payload: dict[str, object]
    detail: str | None
    object_id: str | None
    attempts: int
    planned_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def as_json(self) -> dict[str, object]:
        """The record for `--json` output; times in ISO 8601 UTC with a `Z`."""
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "op": self.kind,
            "subject": self.subject,
            "status": self.status.value,
            "guard": self.guard,
            "operation": dict(self.payload),
            "detail": self.detail,
            "object_id": self.object_id,
            "attempts": self.attempts,
            "planned_at": iso_z(self.planned_at),
            "started_at": iso_z(self.started_at) if self.started_at else None,
            "finished_at": iso_z(self.finished_at) if self.finished_at else None,
        }

    def operation(self) -> Operation:
        """The typed operation back from its payload (to resume or to show it)."""
        return OPERATION_ADAPTER.validate_python(self.payload)


class Journal:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def record_plan(self, run_id: str, plan: Plan) -> None:
        now = encode_time(self._db.clock())
        rows: list[dict[str, SqlValue]] = []
        for seq, op in enumerate(plan.operations):
            rows.append(
                _planned_row(run_id, seq, op, status=OperationStatus.PLANNED, guard=None, now=now)
            )
        offset = len(plan.operations)
        for index, held in enumerate(plan.held):
            rows.append(
                _planned_row(
                    run_id,
                    offset + index,
                    held.operation,
                    status=OperationStatus.HELD,
                    guard=held.guard,
                    now=now,
                )
            )
        with self._db.write() as session:
            run = session.one("SELECT target FROM runs WHERE run_id = ?", (run_id,))
            if run is None:
                raise StateError(f"no run {run_id!r} in the state database")
            if run.text("target") != plan.target:
                raise StateError(
                    f"run {run_id} is for target {run.text('target')!r}, "
                    f"the plan for {plan.target!r}"
                )
            if session.scalar("SELECT 1 FROM operations WHERE run_id = ? LIMIT 1", (run_id,)):
                raise StateError(f"run {run_id} already has a journaled plan")
            if rows:
                session.insert_all("operations", rows)

    def for_run(self, run_id: str) -> RunJournal:
        return RunJournal(self._db, run_id)

    def operations(self, run_id: str) -> list[OperationRecord]:
        with self._db.read() as session:
            rows = session.query(
                "SELECT * FROM operations WHERE run_id = ? ORDER BY seq", (run_id,)
            )
        return [_record(row) for row in rows]

    def pending(self, target: str) -> list[OperationRecord]:
        """What the target's latest finished sync run left undone: held, failed,
        interrupted, and never attempted (a run stopped early, e.g. on an auth error)."""
        with self._db.read() as session:
            run = session.one(
                """
                SELECT run_id FROM runs
                WHERE target = ? AND mode = 'sync' AND status != 'running'
                ORDER BY started_at DESC, run_id DESC LIMIT 1
                """,
                (target,),
            )
            if run is None:
                return []
            rows = session.query(
                "SELECT * FROM operations WHERE run_id = ? AND status NOT IN (?, ?) ORDER BY seq",
                (run.text("run_id"), *_SETTLED),
            )
        return [_record(row) for row in rows]

    def unsettled(self, run_id: str, per_status: int) -> Unsettled:
        """What run `run_id` left undone, bounded for a page that is rendered often: the
        first `per_status` operations of each status (by seq) and how many of each."""
        if per_status < 0:
            raise ValueError(f"per_status must not be negative, got {per_status}")
        with self._db.read() as session:
            counts = {
                row.text("status"): row.integer("n")
                for row in session.query(
                    "SELECT status, COUNT(*) AS n FROM operations "
                    "WHERE run_id = ? AND status NOT IN (?, ?) GROUP BY status",
                    (run_id, *_SETTLED),
                )
            }
            # One query per status present, each stopping at its limit (a window function
            # over every row would read and sort the payloads of a whole mass hold).
            rows = [
                row
                for status in sorted(counts)
                for row in session.query(
                    "SELECT * FROM operations WHERE run_id = ? AND status = ? ORDER BY seq LIMIT ?",
                    (run_id, status, per_status),
                )
            ]
        records = sorted((_record(row) for row in rows), key=lambda r: r.seq)
        return Unsettled(records=records, counts=counts)


@dataclass(frozen=True, slots=True)
class Unsettled:
    """Part of what a run left undone, and all the counts."""

    records: list[OperationRecord]
    """At most the asked number per status, in seq order."""
    counts: dict[str, int]
    """Status -> how many operations of the run are in it (settled ones not counted)."""


class RunJournal:
    """The `OperationJournal` of one run; every call has committed when it returns."""

    def __init__(self, db: StateDB, run_id: str) -> None:
        self._db = db
        self.run_id = run_id

    def started(self, seq: int, operation: Operation) -> None:
        with self._db.write() as session:
            changed = session.execute(
                """
                UPDATE operations
                SET status = ?, attempts = attempts + 1, started_at = ?, finished_at = NULL
                WHERE run_id = ? AND seq = ? AND kind = ? AND subject = ?
                """,
                (
                    OperationStatus.IN_FLIGHT.value,
                    encode_time(self._db.clock()),
                    self.run_id,
                    seq,
                    operation.op,
                    operation.subject,
                ),
            )
            if changed != 1:
                raise self._mismatch(session, seq, operation)

    def finished(
        self,
        seq: int,
        operation: Operation,
        status: OperationStatus,
        *,
        detail: str | None = None,
        object_id: str | None = None,
    ) -> None:
        if status not in _OUTCOMES:
            raise ValueError(f"{status.value!r} is not an outcome of an operation")
        with self._db.write() as session:
            changed = session.execute(
                """
                UPDATE operations
                SET status = ?, detail = ?, object_id = COALESCE(?, object_id), finished_at = ?
                WHERE run_id = ? AND seq = ? AND kind = ? AND subject = ?
                """,
                (
                    status.value,
                    detail,
                    object_id,
                    encode_time(self._db.clock()),
                    self.run_id,
                    seq,
                    operation.op,
                    operation.subject,
                ),
            )
            if changed != 1:
                raise self._mismatch(session, seq, operation)

    def _mismatch(self, session: Session, seq: int, operation: Operation) -> StateError:
        # Checking kind and subject catches an applier whose seq drifted from the plan
        # before it writes one operation's outcome onto another's row.
        row = session.one(
            "SELECT kind, subject FROM operations WHERE run_id = ? AND seq = ?",
            (self.run_id, seq),
        )
        if row is None:
            return StateError(f"run {self.run_id} has no journaled operation {seq}")
        return StateError(
            f"operation {seq} of run {self.run_id} is {row.text('kind')} "
            f"{row.text('subject')}, not {operation.op} {operation.subject}"
        )


def _planned_row(
    run_id: str,
    seq: int,
    operation: Operation,
    *,
    status: OperationStatus,
    guard: str | None,
    now: str,
) -> dict[str, SqlValue]:
    return {
        "run_id": run_id,
        "seq": seq,
        "kind": operation.op,
        "subject": operation.subject,
        "status": status.value,
        "guard": guard,
        "payload": encode_json(operation_json(operation)),
        "attempts": 0,
        "planned_at": now,
    }


def _record(row: Row) -> OperationRecord:
    status = row.text("status")
    try:
        parsed = OperationStatus(status)
    except ValueError:
        raise StateError(f"operation status {status!r} is unknown") from None
    return OperationRecord(
        run_id=row.text("run_id"),
        seq=row.integer("seq"),
        kind=row.text("kind"),
        subject=row.text("subject"),
        status=parsed,
        guard=row.opt_text("guard"),
        payload=row.json_object("payload"),
        detail=row.opt_text("detail"),
        object_id=row.opt_text("object_id"),
        attempts=row.integer("attempts"),
        planned_at=row.time("planned_at"),
        started_at=row.opt_time("started_at"),
        finished_at=row.opt_time("finished_at"),
    )
