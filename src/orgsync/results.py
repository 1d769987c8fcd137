"""What a run is asked to do and what it gives back: `RunOptions`, `TargetResult`, exit codes.

The engine returns one `TargetResult` per target; the CLI, the daemon, the report and the
notifications read them without importing the engine. The exit codes themselves live beside
the errors (`orgsync.core.errors`); the worst one across targets decides the process's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orgsync.applier import ApplyReport
from orgsync.core.errors import EXIT_ERROR, EXIT_HELD, EXIT_OK, EXIT_PENDING
from orgsync.core.plan import Plan
from orgsync.core.ports import OperationStatus
from orgsync.core.scope import Subjects
from orgsync.store import Outcome

_SEVERITY = {EXIT_OK: 0, EXIT_PENDING: 1, EXIT_HELD: 2, EXIT_ERROR: 3}


def worst_exit_code(codes: Sequence[int]) -> int:
    """With several targets the worst result decides the process's exit code."""
    return max(codes, key=_SEVERITY.__getitem__, default=EXIT_OK)


@dataclass(frozen=True, slots=True)
class RunOptions:
    dry_run: bool = True
    target: str | None = None
    allow_removals: int | None = None
    allow_additions: int | None = None
    reviewed_plans: Mapping[str, Plan] | None = None
    """`sync --plan FILE`: per target, the plan a person reviewed. Only these targets run,
    each only while its fresh plan is the reviewed one."""
    trigger: str = "cli"
    only_emails: frozenset[str] = frozenset()
    only_source_ids: frozenset[str] = frozenset()
    """A targeted reconcile (a webhook naming people, `sync --only`): read and plan for
    these people only. Empty both: the whole organization. See `orgsync.core.scope`."""
    incremental: bool = False
    """`sync --incremental`, the daemon's scheduled passes: plan only what changed at the
    source since the last clean pass (full when there is no usable baseline)."""
    only_must_exist: bool = False
    """`sync --only`: a named person nobody answers to (source, target, memory) fails the
    target's run, since a person typing a name means someone; a webhook may name anyone."""

    @property
    def subjects(self) -> Subjects:
        return Subjects.of(self.only_emails, self.only_source_ids)


@dataclass(slots=True)
class TargetResult:
    target: str
    exit_code: int
    status: str
    run_id: str | None = None
    plan: Plan | None = None
    report: ApplyReport | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    pass_kind: str | None = None
    """'full', 'incremental' or 'targeted'."""
    pass_reason: str | None = None


def dry_result(target: str, fresh: Plan, run_id: str | None) -> TargetResult:
    if fresh.held:
        code, status = EXIT_HELD, "held"
    elif fresh.operations:
        code, status = EXIT_PENDING, "changes-pending"
    else:
        code, status = EXIT_OK, "ok"
    return TargetResult(target, code, status, run_id=run_id, plan=fresh)


def sync_result(target: str, fresh: Plan, report: ApplyReport, run_id: str) -> TargetResult:
    if report.failed or report.aborted:
        failures = "; ".join(
            f"{o.operation.op} {o.operation.subject}: {o.detail}" for o in report.failed[:5]
        )
        error = report.aborted or f"{len(report.failed)} operation(s) failed: {failures}"
        return TargetResult(target, EXIT_ERROR, "failed", run_id, fresh, report, error)
    skipped = report.count(OperationStatus.SKIPPED)
    if skipped:
        # Shutdown (SIGTERM) or a lost lease: calls in flight finished, no more started.
        error = f"stopped before {skipped} operation(s) started; the next run does them"
        return TargetResult(target, EXIT_ERROR, "interrupted", run_id, fresh, report, error)
    if fresh.held:
        return TargetResult(target, EXIT_HELD, "held", run_id, fresh, report)
    return TargetResult(target, EXIT_OK, "ok", run_id, fresh, report)


def outcome_of(result: TargetResult) -> Outcome:
    plan_, report = result.plan, result.report
    return Outcome(
        status=result.status,
        exit_code=result.exit_code,
        summary=plan_.summary if plan_ else {},
        checksum=plan_.checksum if plan_ else None,
        error=result.error,
        held=len(plan_.held) if plan_ else 0,
        failed=len(report.failed) if report else 0,
        waiting=len(plan_.waiting) if plan_ else 0,
        pass_kind=result.pass_kind,
        pass_reason=result.pass_reason,
    )
