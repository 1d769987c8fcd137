"""The safety gate: what a run may not do without a human saying so.

Guards (docs/reference.md "Safety guards"):
- before planning, a source that answers with fewer than `min_source_users` people aborts
  the run (`check_source_size`): an IdP hiccup must never read as "everybody left";
- before planning, a whole read of the target that lacks what orgsync put there (the
  members it linked and the groups it owns, still wanted, with no invitation instead)
  beyond the removal limits, or every one of them, aborts the run (`check_target_read`):
  a 200 with an empty or short list must never read as "everybody was removed by hand",
  which would invite or create each of them again and recreate every group;
- after planning, `gate` holds back, in one place:
  - every operation that takes access away (`Operation.is_removal`: removals, suspensions,
    revocations, role lowerings, group member removals, group role unassignments, group
    deletions) when there are more than `max_removals` of them, or more than
    `max_removal_ratio` of the people orgsync manages;
  - a group's removals when that one group would lose more than `max_group_member_removals`
    members (an additional, finer limit);
  - every invitation and user creation (`Operation.is_addition`) when the source looks
    suspect (the managed people it no longer reports at all, those waiting out
    `removal_grace` included, exceed the removal limits: it may be truncated, or another
    tenant), or beyond the optional `max_additions` / `max_addition_ratio`.
  - every grant of a privileged role (an invitation, a user or a role raise to an
    owner/admin-level role of the target's catalog) when there are more than
    `max_privilege_grants` of them: a rule naming the wrong role (`role = "owner"` on the
    everyone group, `default_role = "owner"`) would otherwise make everybody an owner in
    one run, and the gate held only what takes access away.
  Everything else still applies. `--allow-removals N` lifts the removal guards for a run
  removing at most N; `--allow-additions N` the addition guards for a run adding at most N,
  and the privilege guard for a run granting at most N.

The ratios apply only once orgsync manages `min_managed_for_ratio` people: below that one
leaver is already a large share, and the absolute limits guard alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from orgsync.core.collector import paused
from orgsync.core.errors import SourceError
from orgsync.core.model import (
    EmailKey,
    InviteStatus,
    Memory,
    SourceId,
    TargetSnapshot,
    normalize_email,
)
from orgsync.core.plan import (
    AddGroupMember,
    CreateGroup,
    CreateUser,
    GroupOperationFields,
    HeldOperation,
    Invite,
    Operation,
    Plan,
    RemoveGroupMember,
    SetRole,
)
from orgsync.core.rules import DesiredState

PRIVILEGE_GUARD = "safety.max_privilege_grants"
"""Named by the guard of every grant of a privileged role held back."""


@dataclass(frozen=True, slots=True)
class SafetyLimits:
    """The `[safety]` limits of a run; built from the configuration in one place
    (`policy.safety_limits`)."""

    max_removals: int = 10
    max_removal_ratio: float = 0.05
    min_managed_for_ratio: int = 20
    max_group_member_removals: int = 50
    max_additions: int | None = None
    max_addition_ratio: float | None = None
    min_source_users: int = 1
    max_privilege_grants: int | None = 10


@dataclass(frozen=True, slots=True)
class Allowances:
    """What an operator accepted for one run: `--allow-removals N`, `--allow-additions N`."""

    removals: int | None = None
    additions: int | None = None


def check_source_size(people: int, limits: SafetyLimits) -> None:
    """Abort before planning when the source looks truncated."""
    if people < limits.min_source_users:
        raise SourceError(
            f"the source returned {people} people, fewer than safety.min_source_users = "
            f"{limits.min_source_users}; nothing was planned or changed"
        )


def check_target_read(
    observed: TargetSnapshot,
    memory: Memory,
    desired: DesiredState,
    limits: SafetyLimits,
) -> str | None:
    """Why a whole read of the target looks truncated, or None.

    Counted: wanted people whose linked member the read lacks, with no invitation for
    them either (each would be invited or created again), and the groups orgsync owns and
    still mirrors that the read lacks (each would be created again, a duplicate where
    names are not unique, and the owned one disowned). Too many: more than the removal
    limits allow, or all of them when there are at least two. A few gone is believed
    (someone removed them by hand: they are added again). A suspect read holds every
    addition of the run (`gate`'s `target_read`); the rest, a leaver's removal among it,
    still applies, and `--allow-additions N` lets the additions through when they really
    were removed.
    """
    present = {member.id for member in observed.members}
    absent = [
        source_id for source_id, member_id in memory.links.items() if member_id not in present
    ]
    # Gone and still wanted: each would be added again (not a leaver's stale link).
    keys = [key for s in absent if (key := desired.by_source_id.get(s)) in desired.wanted]
    if keys:
        invited = {invite.email_key for invite in observed.invites}
        keys = [key for key in keys if key not in invited]
    people_gone = len(keys)
    # The links of members still there, and of the wanted ones gone.
    linked = len(memory.links) - len(absent) + people_gone
    mirrored = {group.source_id for group in desired.groups}
    owned = {g for g, source_group in memory.owned_groups.items() if source_group in mirrored}
    groups_gone = owned - {group.id for group in observed.groups}
    reasons = []
    over = _over("removals", people_gone, linked, limits, counted="of them missing from the read")
    if over is not None or (people_gone >= 2 and people_gone == linked):
        reasons.append(
            f"{people_gone} of the {linked} members orgsync linked"
            + (f" ({over})" if over is not None else "")
        )
    if len(groups_gone) >= 2 and groups_gone == owned:
        reasons.append(f"all {len(owned)} groups orgsync owns")
    if not reasons:
        return None
    return f"the target's read lacks {' and '.join(reasons)}, with no invitation instead"


@dataclass(frozen=True, slots=True)
class Population:
    """The people orgsync manages in one organization, and how many the source lost."""

    managed: int
    """What the ratios are measured against."""
    missing: int = 0
    """Managed people the source no longer reports at all (not merely out of scope)."""
    named: bool = False
    """The plan is about a few people an event or an operator named (a webhook, `sync
    --only`), not everyone: its removals are few whatever the source lost, so while
    `missing` exceeds the removal limits they are held, as a whole plan removing all those
    people would be (one webhook per "leaver" of a truncated directory must not get each
    of them past the gate)."""


def managed_people(
    observed: TargetSnapshot,
    memory: Memory,
    desired: DesiredState | None = None,
    *,
    remove_unmanaged: bool = False,
) -> Population:
    """Count the people orgsync manages here, and those of them absent from `desired`.

    A member counts when orgsync linked or invited them (the state database's memory), an
    invitation when orgsync sent it and it is not accepted yet; each person once, so an
    accepted invitation never counts its member twice. With `remove_unmanaged` every
    member orgsync may remove counts. Never counted: the API key's owner, service accounts
    and members another provisioner manages, which orgsync never removes.
    """
    # Member id -> the source ids linked to it: nearly always one, so the first is kept
    # apart and only a member several links name gets a list (not 100k sets).
    first_link: dict[str, SourceId] = {}
    more_links: dict[str, list[SourceId]] = {}
    for source_id, member_id in memory.links.items():
        if first_link.setdefault(member_id, source_id) is not source_id:
            more_links.setdefault(member_id, []).append(source_id)
    people: dict[str, bool] = {}  # person → reported by the source
    for member in observed.members:
        if (
            member.is_service_account
            or member.is_scim_managed
            or member.id == observed.key_owner_id
        ):
            continue
        key = member.email_key
        linked = first_link.get(member.id)
        if remove_unmanaged or linked is not None or (key is not None and key in memory.managed):
            reported = _reported(desired, key) or (
                desired is not None
                and linked is not None
                and any(i in desired.by_source_id for i in (linked, *more_links.get(member.id, ())))
            )
            people[key if key is not None else f"member {member.id}"] = reported
    for invite in observed.invites:
        if invite.status is InviteStatus.ACCEPTED or invite.email_key in people:
            continue
        if remove_unmanaged or invite.email_key in memory.managed:
            people[invite.email_key] = _reported(desired, invite.email_key)
    missing = 0 if desired is None else sum(not reported for reported in people.values())
    return Population(managed=len(people), missing=missing)


def managed_in_memory(memory: Memory, desired: DesiredState) -> Population:
    """The population of a targeted plan that did not read the whole organization.

    The ratios stay measured against everyone orgsync manages, counted from the state
    database's memory (every email it linked or invited) instead of a full read; without
    `remove_unmanaged` that is what `managed_people` counts, with it this is smaller, so the
    gate only gets stricter. `missing`: those of them `desired` (a whole source read) no
    longer reports.
    """
    missing = sum(1 for key in memory.managed if not _reported(desired, key))
    return Population(managed=len(memory.managed), missing=missing)


def _reported(desired: DesiredState | None, key: EmailKey | None) -> bool:
    return desired is None or key is None or key in desired.known or key in desired.ambiguous


@paused
def gate(
    plan: Plan,
    *,
    population: Population,
    limits: SafetyLimits,
    allowances: Allowances | None = None,
    privileged: frozenset[str] = frozenset(),
    target_read: str | None = None,
) -> Plan:
    """Move what the guards hold into `plan.held`, each with its guard's reason;
    `privileged` names the target's owner/admin-level roles (`RoleCatalog.privileged`);
    `target_read`: why the target's read looks truncated (`check_target_read`), which
    holds every addition of the plan."""
    allowances = allowances or Allowances()
    operations = plan.operations
    managed = population.managed
    removals = [i for i, op in enumerate(operations) if op.is_removal]
    too_many = _over("removals", len(removals), managed, limits)
    if too_many is None and removals and population.named:
        too_many = _over(
            "removals",
            population.missing,
            managed,
            limits,
            counted="managed people missing from the source (a targeted run's removals "
            "wait for a whole pass to judge them)",
        )
    guards = _removal_guards(operations, removals, too_many, limits, allowances.removals)
    # People the source no longer reports at all, whether removed now or waiting out
    # removal_grace: too many of them, and the new people it reports may be strangers.
    suspicion = _over(
        "removals",
        population.missing,
        managed,
        limits,
        counted="managed people missing from the source",
    )
    guards.update(_addition_guards(operations, suspicion, managed, limits, allowances.additions))
    if target_read is not None:
        for index, guard in _read_guards(operations, target_read, allowances.additions).items():
            guards.setdefault(index, guard)
    for index, guard in _privilege_guards(
        operations, privileged, limits, allowances.additions
    ).items():
        guards.setdefault(index, guard)
    if not guards:
        return plan
    kept = [op for i, op in enumerate(operations) if i not in guards]
    held = [HeldOperation(operation=operations[i], guard=guard) for i, guard in guards.items()]
    return Plan.build(
        target=plan.target,
        generated_at=plan.generated_at,
        operations=kept,
        held=[*plan.held, *held],
        waiting=list(plan.waiting),
        warnings=list(plan.warnings),
        matches=plan.matches,
    )


def _removal_guards(
    operations: tuple[Operation, ...],
    removals: list[int],
    too_many: str | None,
    limits: SafetyLimits,
    allowed: int | None,
) -> dict[int, str]:
    """Operation index → guard, for the removals held back."""
    if allowed is not None and len(removals) <= allowed:
        return {}
    suffix = _refused_allowance("--allow-removals", allowed)
    if too_many is not None:
        return dict.fromkeys(removals, too_many + suffix)
    return {i: guard + suffix for i, guard in _over_per_group(operations, removals, limits).items()}


def _addition_guards(
    operations: tuple[Operation, ...],
    suspicion: str | None,
    population: int,
    limits: SafetyLimits,
    allowed: int | None,
) -> dict[int, str]:
    """Operation index → guard, for the invitations and creations held back."""
    additions = [i for i, op in enumerate(operations) if op.is_addition]
    if not additions or (allowed is not None and len(additions) <= allowed):
        return {}
    guard = _over("additions", len(additions), population, limits)
    if guard is None and suspicion is not None:
        guard = f"the source looks wrong ({suspicion}): nobody new is let in until it is checked"
    if guard is None:
        return {}
    guard += _refused_allowance("--allow-additions", allowed)
    return _with_memberships(operations, dict.fromkeys(additions, guard))


def _read_guards(
    operations: tuple[Operation, ...], target_read: str, allowed: int | None
) -> dict[int, str]:
    """Operation index → guard, for what a truncated read of the target would add again:
    every invitation, creation and group creation (with what depends on the created).

    Held rather than refused: the rest of the plan (a leaver's removal, a role change of a
    member the read did list) is about what the read showed, and still applies."""
    created_groups = {op.source_group_id for op in operations if isinstance(op, CreateGroup)}
    held = [
        i
        for i, op in enumerate(operations)
        if op.is_addition
        or isinstance(op, CreateGroup)
        or (
            isinstance(op, GroupOperationFields)
            and op.group_id is None
            and op.source_group_id in created_groups
        )
    ]
    counted = sum(
        1 for i in held if operations[i].is_addition or isinstance(operations[i], CreateGroup)
    )
    if not held or (allowed is not None and counted <= allowed):
        return {}
    guard = (
        f"{target_read}: a truncated answer would have them all added again, so nothing "
        "is added until a read lists them, or the operator confirms they were removed"
        + _refused_allowance("--allow-additions", allowed)
    )
    return _with_memberships(operations, dict.fromkeys(held, guard))


def _with_memberships(operations: tuple[Operation, ...], held: dict[int, str]) -> dict[int, str]:
    """`held` plus the group memberships of the users it holds back from creation: a
    group membership of a user this plan creates cannot happen without the user."""
    created = {
        normalize_email(op.email): guard
        for i, guard in held.items()
        if isinstance(op := operations[i], CreateUser)
    }
    for i, op in enumerate(operations):
        if isinstance(op, AddGroupMember) and op.user_id is None:
            guard = created.get(normalize_email(op.email))
            if guard is not None:
                held.setdefault(i, guard)
    return held


def _grants(op: Operation, privileged: frozenset[str]) -> str | None:
    """The privileged role `op` gives someone, or None."""
    if isinstance(op, SetRole):
        return op.role if op.raise_ and op.role in privileged else None
    if isinstance(op, Invite | CreateUser):
        return op.role if op.role in privileged else None
    return None


def _privilege_guards(
    operations: tuple[Operation, ...],
    privileged: frozenset[str],
    limits: SafetyLimits,
    allowed: int | None,
) -> dict[int, str]:
    """Operation index → guard, for the grants of a privileged role held back: every one
    of them once there are more than `max_privilege_grants`."""
    most = limits.max_privilege_grants
    if most is None or not privileged:
        return {}
    grants = {i: role for i, op in enumerate(operations) if (role := _grants(op, privileged))}
    if len(grants) <= most or (allowed is not None and len(grants) <= allowed):
        return {}
    roles = ", ".join(sorted(set(grants.values())))
    guard = (
        f"{len(grants)} grants of a privileged role ({roles}) exceed "
        f"{PRIVILEGE_GUARD} = {most}" + _refused_allowance("--allow-additions", allowed)
    )
    return _with_memberships(operations, dict.fromkeys(grants, guard))


def exceeds_removal_limits(count: int, population: int, limits: SafetyLimits) -> str | None:
    """Why `count` managed people leaving, of `population`, exceed the removal limits."""
    return _over("removals", count, population, limits, counted="managed people")


def exceeds_addition_limits(count: int, population: int, limits: SafetyLimits) -> str | None:
    """Why `count` people joining, against `population` managed, exceed the addition
    limits."""
    return _over("additions", count, population, limits, counted="newcomers")


def _over(
    kind: Literal["removals", "additions"],
    count: int,
    population: int,
    limits: SafetyLimits,
    *,
    counted: str | None = None,
) -> str | None:
    """Why `count` removals (or additions) exceed their count or ratio limit, or None;
    `counted` names what was counted when it is not the operations themselves."""
    most: int | None = limits.max_removals if kind == "removals" else limits.max_additions
    ratio: float | None = (
        limits.max_removal_ratio if kind == "removals" else limits.max_addition_ratio
    )
    if count == 0:
        return None
    counted = counted or kind
    if most is not None and count > most:
        return f"{count} {counted} exceed safety.max_{kind} = {most}"
    if (
        ratio is not None
        and population > 0
        and population >= limits.min_managed_for_ratio
        and count / population > ratio
    ):
        return (
            f"{count} {counted} of {population} managed people ({count / population:.0%}) "
            f"exceed safety.max_{kind[:-1]}_ratio = {ratio}"
        )
    return None


def _over_per_group(
    operations: tuple[Operation, ...], removals: list[int], limits: SafetyLimits
) -> dict[int, str]:
    """Every removal of each group that would lose more than `max_group_member_removals`
    members (its deletion and role unassignments too: half a deletion helps nobody)."""
    per_group = Counter(
        _group_key(op) for i in removals if isinstance(op := operations[i], RemoveGroupMember)
    )
    limit = limits.max_group_member_removals
    guards: dict[int, str] = {}
    for i in removals:
        op = operations[i]
        if isinstance(op, GroupOperationFields) and per_group[_group_key(op)] > limit:
            guards[i] = (
                f"{per_group[_group_key(op)]} removals from group {op.group!r} exceed "
                f"safety.max_group_member_removals = {limit}"
            )
    return guards


def _group_key(op: GroupOperationFields) -> str:
    return op.group_id or f"new:{op.source_group_id or op.group}"


def _refused_allowance(flag: str, allowed: int | None) -> str:
    return "" if allowed is None else f" (more than {flag} {allowed})"
