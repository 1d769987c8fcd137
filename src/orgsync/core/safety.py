"""The safety gate: what a run may not do without a human saying so.

Two kinds of guard (SPEC "Safety guards"):
- before planning, a source that answers with fewer than `min_source_users` people aborts
  the run (`check_source_size`): an IdP hiccup must never read as "everybody left";
- after planning, removals (and owner/admin downgrades) beyond `max_removals` or
  `max_removal_ratio` are all held (`hold_mass_removals`) while everything else applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from orgsync.core.errors import SourceError
from orgsync.core.model import TargetSnapshot
from orgsync.core.plan import HeldOperation, Plan


@dataclass(frozen=True, slots=True)
class SafetyLimits:
    max_removals: int = 10
    max_removal_ratio: float = 0.05
    min_source_users: int = 1


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
    held = [HeldOperation(operation=op, guard=guard) for op in removals]
    return Plan.build(
        target=plan.target,
        generated_at=plan.generated_at,
        operations=[op for op in plan.operations if not op.is_removal],
        held=[*plan.held, *held],
        waiting=list(plan.waiting),
        warnings=list(plan.warnings),
    )
