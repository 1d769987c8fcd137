"""How plans and runs look to people (a table read in seconds) and to scripts (JSON).

The human form puts the counts first, then the operations grouped by phase, each with its
reason, then what is held, waiting and warned about. The JSON form is SPEC's plan
document, plus a `run` object once a sync has applied it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orgsync.core.plan import (
    AddGroupMember,
    AssignGroupRole,
    GroupOperation,
    GroupOperationFields,
    Operation,
    Phase,
    Plan,
    RemoveGroupMember,
    RenameGroup,
    SetRole,
    UnassignGroupRole,
)
from orgsync.engine import TargetResult

_PHASE_TITLES = {
    Phase.RENAME: "Group renames",
    Phase.CREATE: "Creations",
    Phase.ADD_OR_RAISE: "Additions and role raises",
    Phase.LOWER: "Role lowerings",
    Phase.REMOVE: "Removals",
    Phase.DELETE_GROUPS: "Group deletions",
}
_MARKS = {
    Phase.RENAME: "~",
    Phase.CREATE: "+",
    Phase.ADD_OR_RAISE: "^",
    Phase.LOWER: "v",
    Phase.REMOVE: "-",
    Phase.DELETE_GROUPS: "x",
}


def describe(operation: Operation) -> str:
    """The operation's object in a few words: who, and to what."""
    if isinstance(operation, SetRole):
        return f"{operation.email}  {operation.previous_role or '-'} -> {operation.role}"
    if isinstance(operation, RenameGroup):
        return f"{operation.previous_name!r} -> {operation.group!r}"
    if isinstance(operation, AddGroupMember | RemoveGroupMember):
        return operation.email
    if isinstance(operation, AssignGroupRole | UnassignGroupRole):
        return f"role {operation.role}"
    if isinstance(operation, GroupOperationFields):
        return f"id {operation.group_id}" if operation.group_id else "(new)"
    role = getattr(operation, "role", None)
    return f"{operation.subject}  {role}" if role else operation.subject


def _line(mark: str, operation: Operation, width: int) -> str:
    return f"  {mark} {operation.op:<19} {describe(operation):<{width}}  {operation.reason}"


def render_plan(plan: Plan) -> str:
    """The plan as a person reads it: counts, people by phase, then each group's changes."""
    counts = ", ".join(f"{n} {op}" for op, n in plan.summary.items()) or (
        "nothing applies until what is held is lifted" if plan.held else "no changes"
    )
    lines = [
        f"Target {plan.target}: {counts}",
        f"  held {len(plan.held)}, waiting {len(plan.waiting)}, warnings {len(plan.warnings)}"
        f"  ({plan.checksum[:19]})",
    ]
    everything = [*plan.operations, *(h.operation for h in plan.held)]
    width = min(48, max((len(describe(op)) for op in everything), default=0))
    people = [op for op in plan.operations if not isinstance(op, GroupOperationFields)]
    for phase in Phase:
        in_phase = [op for op in people if op.phase is phase]
        if in_phase:
            lines.append(f"{_PHASE_TITLES[phase]}:")
            lines.extend(_line(_MARKS[phase], op, width) for op in in_phase)
    by_group: dict[str, list[GroupOperation]] = {}
    for op in plan.operations:
        if isinstance(op, GroupOperationFields):
            by_group.setdefault(op.group, []).append(op)
    for name in sorted(by_group):
        first = by_group[name][0]
        known = f" ({first.group_id})" if first.group_id else ""
        lines.append(f"Group {name!r}{known}:")
        lines.extend(_line(_MARKS[op.phase], op, width) for op in by_group[name])
    if plan.held:
        lines.extend(_held_lines(plan, width))
    if plan.waiting:
        lines.append("Waiting:")
        for item in plan.waiting:
            until = f" until {item.until:%Y-%m-%d %H:%M}Z" if item.until else ""
            group = f" group {item.group!r}" if item.group else ""
            lines.append(f"  . {item.op:<19} {item.email}{group}{until}  {item.reason}")
    if plan.warnings:
        lines.append("Warnings:")
        lines.extend(f"  ! {warning}" for warning in plan.warnings)
    return "\n".join(lines)


def _held_lines(plan: Plan, width: int) -> list[str]:
    """What the safety gate holds, under each guard's reason, and how to let it through."""
    by_guard: dict[str, list[Operation]] = {}
    for held in plan.held:
        by_guard.setdefault(held.guard, []).append(held.operation)
    lines: list[str] = []
    for guard, operations in by_guard.items():
        lines.append(f"Held by the safety gate: {guard}")
        lines.extend(_line("!", op, width) for op in operations)
    everything = [*plan.operations, *(h.operation for h in plan.held)]
    flags = [
        f"--allow-{kind} {count}"
        for kind, count, held in (
            ("removals", sum(op.is_removal for op in everything), _any_held(plan, removal=True)),
            ("additions", sum(op.is_addition for op in everything), _any_held(plan, removal=False)),
        )
        if held
    ]
    if flags:
        lines.append(f"  To apply what is held after checking it: orgsync sync {' '.join(flags)}")
    return lines


def _any_held(plan: Plan, *, removal: bool) -> bool:
    return any(h.operation.is_removal if removal else h.operation.is_addition for h in plan.held)


def render_result(result: TargetResult, *, dry_run: bool, with_plan: bool = True) -> str:
    """The plan (if any, unless shown already) and one closing line with the outcome and
    the exit code."""
    parts = []
    if result.plan is not None and with_plan:
        parts.append(render_plan(result.plan))
    if result.report is not None:
        report = result.report
        done = sum(1 for o in report.outcomes if o.status.value == "done")
        parts.append(
            f"Applied {done} of {len(result.plan.operations) if result.plan else 0}; "
            f"failed {len(report.failed)}; held {len(result.plan.held) if result.plan else 0}."
        )
        parts.extend(
            f"  x {o.operation.op} {o.operation.subject}: {o.detail}" for o in report.failed
        )
    if result.error:
        parts.append(f"Error: {result.error}")
    verdict = {
        0: "in sync" if not dry_run else "nothing to do",
        1: "error",
        2: "changes pending",
        3: "some changes held by the safety gate",
    }[result.exit_code]
    parts.append(f"=> {result.target}: {verdict} (exit {result.exit_code})")
    return "\n".join(parts)


def result_json(result: TargetResult) -> dict[str, Any]:
    """SPEC plan document plus a `run` object with the outcome."""
    document: dict[str, Any] = result.plan.to_json() if result.plan else {"target": result.target}
    run: dict[str, Any] = {
        "id": result.run_id,
        "status": result.status,
        "exit_code": result.exit_code,
    }
    if result.error:
        run["error"] = result.error
    if result.report is not None:
        run["outcomes"] = [
            {
                "op": o.operation.op,
                "subject": o.operation.subject,
                "status": o.status.value,
                **({"detail": o.detail} if o.detail else {}),
                **({"object_id": o.object_id} if o.object_id else {}),
            }
            for o in result.report.outcomes
        ]
    document["run"] = run
    return document


def results_json(results: Sequence[TargetResult]) -> Any:
    """One target: its document; several: a list of documents (in configuration order)."""
    documents = [result_json(r) for r in results]
    return documents[0] if len(documents) == 1 else documents
