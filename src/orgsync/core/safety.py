"""The safety gate: what a run may not do without a human saying so.

Two kinds of guard (SPEC "Safety guards"):
- before planning, a source that answers with fewer than `min_source_users` people aborts
  the run (`check_source_size`): an IdP hiccup must never read as "everybody left";
- after planning, removals (and owner/admin downgrades) beyond `max_removals` or
  `max_removal_ratio` are all held (`hold_mass_removals`) while everything else applies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from orgsync.core.errors import SourceError
from orgsync.core.model import TargetSnapshot
from orgsync.core.plan import (
    DeleteGroup,
    GroupOperationFields,
    HeldOperation,
    Operation,
    Plan,
    RemoveGroupMember,
)


@dataclass(frozen=True, slots=True)
class SafetyLimits:
    max_removals: int = 10
    max_removal_ratio: float = 0.05
    min_source_users: int = 1
    max_group_member_removals: int = 50


def check_source_size(people: int, limits: SafetyLimits) -> None:
    """Abort before planning when the source looks truncated."""
    if people < limits.min_source_users:
        raise SourceError(
            f"the source returned {people} people, fewer than safety.min_source_users = "
            f"{limits.min_source_users}; nothing was planned or changed"
        )


def managed_population(observed: TargetSnapshot) -> int:
    """Members and pending invitations the ratio guard is measured against.

    Service accounts and members managed by another provisioner are never orgsync's to
    remove, so they would only dilute the ratio.
    """
    members = sum(1 for m in observed.members if not (m.is_service_account or m.is_scim_managed))
    return members + len(observed.invites)


def hold_mass_removals(
    plan: Plan, *, population: int, limits: SafetyLimits, allow_removals: int | None = None
) -> Plan:
    """Move every removal into `held` when there are too many of them.

    `allow_removals` (CLI `--allow-removals N`) lifts the guard for one run when the plan
    removes at most N.
    """
    removals = [op for op in plan.operations if op.is_removal]
    if not removals:
        return plan
    count = len(removals)
    if allow_removals is not None and count <= allow_removals:
        return plan
    guard: str | None = None
    if count > limits.max_removals:
        guard = f"{count} removals exceed safety.max_removals = {limits.max_removals}"
    elif population > 0 and count / population > limits.max_removal_ratio:
        guard = (
            f"{count} removals of {population} managed members ({count / population:.0%}) "
            f"exceed safety.max_removal_ratio = {limits.max_removal_ratio}"
        )
    if guard is None:
        return plan
    if allow_removals is not None:
        guard += f" and --allow-removals {allow_removals}"
    # A held group deletion holds the emptying of that group too: half a deletion would
    # strip the group's members and roles while the group itself stays.
    deleted_groups = {op.group_id for op in removals if isinstance(op, DeleteGroup)}
    return _hold(
        plan,
        lambda op: (
            op.is_removal
            or (isinstance(op, GroupOperationFields) and op.group_id in deleted_groups)
        ),
        guard,
    )


def hold_group_member_removals(plan: Plan, *, limit: int) -> Plan:
    """Hold all member removals of any group that would lose more than `limit` members.

    Groups being deleted are exempt: their deletion is one removal for the run's gate.
    """
    deleted = {op.group_id for op in plan.operations if isinstance(op, DeleteGroup)}
    per_group = Counter(
        op.group_id or op.group
        for op in plan.operations
        if isinstance(op, RemoveGroupMember) and op.group_id not in deleted
    )
    over = {group for group, count in per_group.items() if count > limit}
    if not over:
        return plan
    held: list[HeldOperation] = []
    kept: list[Operation] = []
    for op in plan.operations:
        key = op.group_id or op.group if isinstance(op, RemoveGroupMember) else None
        if key in over and isinstance(op, RemoveGroupMember):
            guard = (
                f"{per_group[key]} removals from group {op.group!r} exceed "
                f"safety.max_group_member_removals = {limit}"
            )
            held.append(HeldOperation(operation=op, guard=guard))
        else:
            kept.append(op)
    return _rebuild(plan, kept, held)


def _hold(plan: Plan, holds: Callable[[Operation], bool], guard: str) -> Plan:
    held = [HeldOperation(operation=op, guard=guard) for op in plan.operations if holds(op)]
    return _rebuild(plan, [op for op in plan.operations if not holds(op)], held)


def _rebuild(plan: Plan, operations: list[Operation], held: list[HeldOperation]) -> Plan:
    return Plan.build(
        target=plan.target,
        generated_at=plan.generated_at,
        operations=operations,
        held=[*plan.held, *held],
        waiting=list(plan.waiting),
        warnings=list(plan.warnings),
    )
