"""How plans and runs look to people (a table read in seconds) and to scripts (JSON).

The human form of a plan, per target: one headline with the counts, the counts per kind,
a legend for the marks, then one table (operation, person or group, role change, reason)
whose columns line up across its sections: people, then each group's changes under the
group, then what is held (under each guard's reason) and what waits, then warnings and a
line saying what the checksum covers. Colour only on a terminal, never with `NO_COLOR`:
piped or redirected output is plain text that diffs and greps.

The JSON form has one shape whatever the number of targets (docs/plan-output.schema.json):
`{"dry_run", "exit_code", "targets": [plan document + "run", ...]}` (docs/reference.md "Plan JSON").
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from orgsync.core.plan import (
    PHASE_MARKS,
    AddGroupMember,
    AssignGroupRole,
    CreateUser,
    GroupOperationFields,
    Invite,
    Operation,
    Plan,
    RemoveGroupMember,
    RenameGroup,
    SetRole,
    UnassignGroupRole,
    UpdateUser,
)
from orgsync.core.safety import PRIVILEGE_GUARD
from orgsync.core.text import visible
from orgsync.results import TargetResult, worst_exit_code
from orgsync.store import RunRecord

SCHEMA_FILE = "docs/plan-output.schema.json"
"""Where the JSON output is documented (the README links it; tests validate against it)."""

# ---------------------------------------------------------------- terminal styling

_RESET = "\x1b[0m"
_SGR = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}


class _Stream(Protocol):
    def isatty(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Style:
    """Whether to colour; `paint` is the identity without colour, so widths never change."""

    colour: bool = False

    @classmethod
    def for_stream(cls, stream: object, environ: Mapping[str, str] | None = None) -> Style:
        """Colour only for a terminal: not when piped or redirected, not with a non-empty
        `NO_COLOR` (no-color.org), not on `TERM=dumb`."""
        env = os.environ if environ is None else environ
        if env.get("NO_COLOR") or env.get("TERM") == "dumb":
            return cls(colour=False)
        isatty = getattr(stream, "isatty", None)
        try:
            return cls(colour=bool(isatty is not None and isatty()))
        except ValueError:  # a closed stream
            return cls(colour=False)

    def paint(self, text: str, *styles: str) -> str:
        if not self.colour or not styles or not text:
            return text
        codes = ";".join(_SGR[s] for s in styles)
        return f"\x1b[{codes}m{text}{_RESET}"


PLAIN = Style(colour=False)

# ---------------------------------------------------------------- aligned tables

Cell = str | tuple[str, tuple[str, ...]]
"""A cell's text, or its text and the styles it is painted with."""


def _text(cell: Cell) -> str:
    # Escaped before it is measured: a cell may hold a server's or a directory's text.
    return visible(cell if isinstance(cell, str) else cell[0])


def column_widths(rows: Iterable[Sequence[Cell]], caps: Sequence[int]) -> list[int]:
    """Each column's width: its widest cell, at most its cap (the last column is free)."""
    widths = [0] * len(caps)
    for row in rows:
        for index, cell in enumerate(row[: len(caps)]):
            widths[index] = max(widths[index], min(caps[index], len(_text(cell))))
    return widths


def table_line(row: Sequence[Cell], widths: Sequence[int], style: Style, indent: str) -> str:
    """One row, each cell padded to its column then painted (so escapes never shift it).

    A cell wider than its column's cap is shown whole, never cut: an e-mail address is what
    a reviewer checks. Its row's next columns move right; the others stay aligned.
    """
    parts: list[str] = []
    overflow = 0
    for index, cell in enumerate(row):
        text, styles = _text(cell), (() if isinstance(cell, str) else cell[1])
        last = index == len(row) - 1
        if last:
            parts.append(style.paint(text, *styles))
            break
        width = max(0, widths[index] - overflow)
        overflow = max(0, len(text) - width)
        parts.append(style.paint(text, *styles) + " " * (width - len(text) + 2))
    return (indent + "".join(parts)).rstrip()


# ---------------------------------------------------------------- plans

HELD_MARK = "!"
WAITING_MARK = "."
LEGEND = {
    "+": "create or invite",
    "^": "add or raise",
    "v": "lower a role",
    "-": "remove",
    "x": "delete a group",
    "~": "rename a group",
    HELD_MARK: "held by the safety gate",
    WAITING_MARK: "waiting",
}
"""Every mark a plan table uses, in the legend's order."""

_MARK_STYLES: dict[str, tuple[str, ...]] = {
    "+": ("green",),
    "^": ("green",),
    "v": ("yellow",),
    "-": ("red",),
    "x": ("red",),
    "~": ("blue",),
    HELD_MARK: ("magenta", "bold"),
    WAITING_MARK: ("dim",),
}
HEADINGS = ("OPERATION", "PERSON OR GROUP", "ROLE", "REASON")
_CAPS = (21, 40, 24, 0)
"""Column caps: the longest kind with its mark fits; longer names overflow, whole."""
_INDENT = "    "
_CHECKSUM_NOTE = (
    "(covers the operations and the held ones, not the time: `--plan-out FILE` saves the "
    "plan with it; `--plan FILE` applies only while a fresh plan has the same checksum)"
)


def mark_of(operation: Operation) -> str:
    return PHASE_MARKS[operation.phase]


def subject_of(operation: Operation, *, in_group: bool = False) -> str:
    """Who or what the operation is about: a person's e-mail, or a group's name.

    Under its group's heading a membership names only the person; elsewhere (held,
    waiting) it names the group too.
    """
    if isinstance(operation, UpdateUser) and operation.previous_email:
        return f"{operation.previous_email} -> {operation.email}"
    if isinstance(operation, RenameGroup):
        return f"{operation.previous_name} -> {operation.group}"
    if isinstance(operation, AddGroupMember | RemoveGroupMember):
        return operation.email if in_group else f"{operation.email} in {operation.group}"
    if isinstance(operation, GroupOperationFields):
        return operation.group if in_group else f"group {operation.group}"
    return operation.email


def role_change(operation: Operation) -> str:
    """The role before and after, where the operation changes one."""
    if isinstance(operation, SetRole):
        return f"{operation.previous_role or 'none'} -> {operation.role}"
    if isinstance(operation, Invite | AssignGroupRole):
        return f"none -> {operation.role}"
    if isinstance(operation, CreateUser) and operation.role:
        return f"none -> {operation.role}"
    if isinstance(operation, UnassignGroupRole):
        return f"{operation.role} -> none"
    return ""


def _row(mark: str, op: str, subject: str, role: str, reason: str) -> list[Cell]:
    return [(f"{mark} {op}", _MARK_STYLES[mark]), subject, role, reason]


def _operation_row(
    operation: Operation, *, mark: str | None = None, in_group: bool = False
) -> list[Cell]:
    return _row(
        mark or mark_of(operation),
        operation.op,
        subject_of(operation, in_group=in_group),
        role_change(operation),
        operation.reason,
    )


def counts(operations: Iterable[Operation]) -> str:
    """`4 invite, 1 set_role`: per kind, in the order they apply."""
    return ", ".join(f"{n} {op}" for op, n in Counter(o.op for o in operations).items())


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass(frozen=True, slots=True)
class _Note:
    """A line inside the table that is not a row (what to type to release the held)."""

    text: str


_Item = str | _Note | list[Cell]
"""A section heading, a note, or a table row."""


def render_plan(plan: Plan, style: Style = PLAIN) -> str:
    """The plan as a person reads it; see the module's docstring."""
    items: list[_Item] = []
    people = [op for op in plan.operations if not isinstance(op, GroupOperationFields)]
    if people:
        items.append("People")
        items.extend(_operation_row(op) for op in people)
    by_group: dict[str, list[Operation]] = {}
    for op in plan.operations:
        if isinstance(op, GroupOperationFields):
            by_group.setdefault(op.group, []).append(op)
    for name in sorted(by_group):
        first = by_group[name][0]
        known = isinstance(first, GroupOperationFields) and first.group_id
        items.append(f"Group {name} ({f'id {known}' if known else 'new'})")
        items.extend(_operation_row(op, in_group=True) for op in by_group[name])
    by_guard: dict[str, list[Operation]] = {}
    for held in plan.held:
        by_guard.setdefault(held.guard, []).append(held.operation)
    for guard, operations in by_guard.items():
        items.append(f"Held by the safety gate: {guard}")
        items.extend(_operation_row(op, mark=HELD_MARK) for op in operations)
    flags = _allow_flags(plan)
    if flags:
        items.append(_Note(f"to apply what is held after checking it: orgsync sync {flags}"))
    if plan.waiting:
        items.append("Waiting: cannot happen yet")
        for waiting in plan.waiting:
            until = f" (until {waiting.until:%Y-%m-%d %H:%M}Z)" if waiting.until else ""
            subject = f"{waiting.email} in {waiting.group}" if waiting.group else waiting.email
            items.append(_row(WAITING_MARK, waiting.op, subject, "", waiting.reason + until))

    rows = [item for item in items if isinstance(item, list)]
    lines = [style.paint(_headline(plan), "bold")]
    if plan.operations:
        lines.append(f"  to apply: {counts(plan.operations)}")
    if plan.held:
        lines.append(f"  held: {counts(h.operation for h in plan.held)}")
    if rows:
        used = {_text(row[0]).split(" ", 1)[0] for row in rows}
        legend = "   ".join(
            f"{style.paint(mark, *_MARK_STYLES[mark])} {meaning}"
            for mark, meaning in LEGEND.items()
            if mark in used
        )
        lines.append(f"  legend: {legend}")
        heading: list[Cell] = [(h, ("bold",)) for h in HEADINGS]
        widths = column_widths([*rows, heading], _CAPS)
        lines.append(table_line(heading, widths, style, _INDENT))
        for item in items:
            if isinstance(item, str):
                lines.append("  " + style.paint(visible(item), "bold"))
            elif isinstance(item, _Note):
                lines.append(_INDENT + visible(item.text))
            else:
                lines.append(table_line(item, widths, style, _INDENT))
    if plan.warnings:
        lines.append("  " + style.paint("Warnings", "bold", "yellow"))
        lines.extend(f"{_INDENT}{visible(warning)}" for warning in plan.warnings)
    lines.append(f"  checksum {plan.checksum}")
    lines.append(f"{_INDENT}{_CHECKSUM_NOTE}")
    return "\n".join(lines)


def _headline(plan: Plan) -> str:
    planned = (
        _plural(len(plan.operations), "operation") + " to apply"
        if plan.operations
        else "no changes"
    )
    return (
        f"Target {plan.target}: {planned}, {len(plan.held)} held, "
        f"{len(plan.waiting)} waiting, {_plural(len(plan.warnings), 'warning')}"
    )


def _allow_flags(plan: Plan) -> str:
    """The one-run flags that let what is held through, sized for this plan."""
    everything = [*plan.operations, *(h.operation for h in plan.held)]
    # Grants of a privileged role held back (`core.safety`) are lifted by --allow-additions
    # too: a role raise is no addition, so they are counted by their guard.
    grants = sum(PRIVILEGE_GUARD in h.guard for h in plan.held)
    flags = [
        f"--allow-{kind} {count}"
        for kind, count, held in (
            (
                "removals",
                sum(op.is_removal for op in everything),
                any(h.operation.is_removal for h in plan.held),
            ),
            (
                "additions",
                max(sum(op.is_addition for op in everything), grants),
                grants > 0 or any(h.operation.is_addition for h in plan.held),
            ),
        )
        if held
    ]
    return " ".join(flags)


_VERDICT_STYLES = {0: ("green",), 1: ("red", "bold"), 2: ("yellow",), 3: ("magenta", "bold")}


def render_result(
    result: TargetResult, *, dry_run: bool, style: Style = PLAIN, with_plan: bool = True
) -> str:
    """The plan (if any, unless shown already) and one closing line with the outcome and
    the exit code."""
    parts = []
    if result.plan is not None and with_plan:
        parts.append(render_plan(result.plan, style))
    if result.report is not None:
        report = result.report
        done = sum(1 for o in report.outcomes if o.status.value == "done")
        parts.append(
            f"Applied {done} of {len(result.plan.operations) if result.plan else 0}; "
            f"failed {len(report.failed)}; held {len(result.plan.held) if result.plan else 0}."
        )
        parts.extend(
            f"  {style.paint('failed', 'red')}: "
            + visible(f"{o.operation.op} {o.operation.subject}: {o.detail}")
            for o in report.failed
        )
    if result.error:
        parts.append(style.paint(f"Error: {visible(result.error)}", "red"))
    if result.pass_reason is not None:  # asked for an incremental pass: say which it was
        parts.append(f"{result.pass_kind} pass: {result.pass_reason}")
    verdict = {
        0: "in sync" if not dry_run else "nothing to do",
        1: "error",
        2: "changes pending",
        3: "some changes held by the safety gate",
    }[result.exit_code]
    parts.append(
        style.paint(
            f"=> {result.target}: {verdict} (exit {result.exit_code})",
            *_VERDICT_STYLES[result.exit_code],
        )
    )
    return "\n".join(parts)


def render_results(
    results: Sequence[TargetResult],
    *,
    dry_run: bool,
    style: Style = PLAIN,
    shown: Collection[str] = (),
) -> str:
    """Every target's result, in configuration order, a blank line between them; the plans
    of the targets in `shown` (printed before their apply began) are not repeated."""
    return "\n\n".join(
        render_result(r, dry_run=dry_run, style=style, with_plan=r.target not in shown)
        for r in results
    )


# ---------------------------------------------------------------- JSON


def result_json(result: TargetResult) -> dict[str, Any]:
    """The plan document (reference "Plan JSON") plus a `run` object with the outcome.

    A target that failed before it had a plan (source or target unreachable, bad
    configuration) is only `{"target", "run"}`, its `run` naming the error: never an
    empty plan, which would read as "nothing to do".
    """
    document: dict[str, Any] = result.plan.to_json() if result.plan else {"target": result.target}
    run: dict[str, Any] = {
        "id": result.run_id,
        "status": result.status,
        "exit_code": result.exit_code,
    }
    if result.error:
        run["error"] = result.error
    if result.pass_reason is not None and result.pass_kind is not None:
        run["pass"] = result.pass_kind
        run["pass_reason"] = result.pass_reason
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


def sync_json(results: Sequence[TargetResult], *, dry_run: bool) -> dict[str, Any]:
    """`sync --json`: one object whatever the number of targets (configuration order)."""
    return {
        "dry_run": dry_run,
        "exit_code": worst_exit_code([r.exit_code for r in results]),
        "targets": [result_json(r) for r in results],
    }


# ---------------------------------------------------------------- run history

RUN_HEADINGS = ("RUN", "STARTED (UTC)", "TARGET", "MODE", "ORIGIN", "STATUS", "EXIT", "CHANGES")
_RUN_CAPS = (36, 19, 24, 8, 7, 16, 4, 0)
_RUN_STATUS_STYLES: dict[str, tuple[str, ...]] = {
    "ok": ("green",),
    "changes-pending": ("yellow",),
    "held": ("magenta",),
    "failed": ("red",),
    "interrupted": ("red",),
    "running": ("cyan",),
}


def render_runs(records: Sequence[RunRecord], style: Style = PLAIN) -> str:
    """`orgsync runs`: a header row and one aligned row per run, newest first."""
    if not records:
        return "no runs recorded yet"
    rows: list[list[Cell]] = [
        [
            record.run_id,
            f"{record.started_at:%Y-%m-%d %H:%M:%S}",
            record.target,
            record.mode,
            record.origin,
            (record.status, _RUN_STATUS_STYLES.get(record.status, ())),
            "-" if record.exit_code is None else str(record.exit_code),
            ", ".join(f"{n} {op}" for op, n in record.summary.items()) or "-",
        ]
        for record in records
    ]
    heading: list[Cell] = [(h, ("bold",)) for h in RUN_HEADINGS]
    widths = column_widths([*rows, heading], _RUN_CAPS)
    return "\n".join(table_line(row, widths, style, "") for row in [heading, *rows])
