"""Targeted reconcile: the part of one organization that concerns a few named people.

A webhook that names people asks for *those* people to be reconciled now; the scheduled
full pass stays the safety net for everything else. Planning on the whole desired state
against a partial view of the organization would be wrong both ways (wanted people
outside the view would be invited again; members outside it would be judged on partial
facts), so both sides are cut to the same people before the planner sees them:

- `wanted`, the members and the invitations are restricted to the named people, found
  by normalized email, by source id, and through orgsync's links: the member and the
  addresses a source id was linked to earlier, the person a named address was linked to
  (so a person whose email changed is still found under either address);
- what the source knows about everybody else (`known`, `out_of_scope`, `ambiguous`) is
  kept whole: it only ever stops the planner from acting;
- group planning is switched off (no desired groups, no observed groups, no owned
  groups): group membership is decided over whole groups, which a slice cannot see;
- when a named person is an owner today, the slice is refused (`None`): the last-owner
  rule needs every owner in view, so the caller runs a full pass instead;
- `whole_plan_needed`: the guards count over a whole plan, and a slice shows them only its
  few people. When the slice would grant a privileged role, or take access from someone
  while the source no longer wants more managed people than the removal limits allow,
  the caller plans the whole organization, so a webhook per person cannot get, a few at
  a time, what a full pass holds (a mass deactivation, a rule making many owners).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from types import MappingProxyType

from orgsync.core.model import EmailKey, Memory, SourceId, TargetSnapshot, normalize_email
from orgsync.core.rules import DesiredState
from orgsync.core.safety import SafetyLimits, exceeds_addition_limits, exceeds_removal_limits


@dataclass(frozen=True, slots=True)
class Subjects:
    """The people a targeted reconcile is about, as an event named them."""

    emails: frozenset[EmailKey] = frozenset()
    source_ids: frozenset[SourceId] = frozenset()

    @classmethod
    def of(cls, emails: Iterable[str] = (), source_ids: Iterable[str] = ()) -> Subjects:
        return cls(
            emails=frozenset(normalize_email(e) for e in emails if e.strip()),
            source_ids=frozenset(SourceId(s) for s in source_ids if s),
        )

    def __bool__(self) -> bool:
        return bool(self.emails or self.source_ids)


@dataclass(frozen=True, slots=True)
class Scoped:
    """The three planner inputs cut down to the subjects, and whom they cover."""

    desired: DesiredState
    observed: TargetSnapshot
    memory: Memory
    keys: frozenset[EmailKey]
    """Every email key the slice covers (named, resolved from ids, or of a linked member)."""


def needs_invitations(scoped: Scoped) -> bool:
    """Whether the slice's plan can depend on invitations: only a person who is not a
    wanted member can be invited, have an invitation replaced or revoked. The planner
    ignores the invitations of a wanted member (they are neither renewed nor revoked),
    so a targeted run about wanted members alone need not list them."""
    members = {m.email_key for m in scoped.observed.members}
    return any(k not in scoped.desired.wanted or k not in members for k in scoped.keys)


def unknown_subjects(
    subjects: Subjects, desired: DesiredState, observed: TargetSnapshot, memory: Memory
) -> list[str]:
    """The names in `subjects` nobody answers to: not in the source (rejected records
    included), not a member or invitation in `observed`, not in orgsync's memory. For a
    person typing `sync --only`, such a name is a typo, not a person to reconcile."""
    on_target = {m.email_key for m in observed.members} | {i.email_key for i in observed.invites}
    linked_ids = set(memory.links) | set(memory.linked_sources.values())
    unknown: list[str] = [
        email
        for email in sorted(subjects.emails)
        if email not in desired.known
        and email not in desired.ambiguous
        and email not in desired.rejected_emails
        and email not in on_target
        and email not in memory.managed
    ]
    unknown += [
        source_id
        for source_id in sorted(subjects.source_ids)
        if source_id not in desired.by_source_id
        and source_id not in desired.rejected
        and source_id not in linked_ids
    ]
    return unknown


def restrict(
    desired: DesiredState, observed: TargetSnapshot, memory: Memory, subjects: Subjects
) -> Scoped | None:
    """Cut desired state, organization and memory down to `subjects`.

    Returns None when the people cannot be reconciled on their own (one of them is an
    owner of the organization now); the caller then plans the whole organization.
    """
    # Memory links both ways: a named address orgsync knew leads to the person it was
    # linked to (who may have moved to another address since), and a named id to every
    # address it was linked under (a leaver holding only an invitation is found by it).
    source_ids = set(subjects.source_ids)
    source_ids.update(
        memory.linked_sources[k] for k in subjects.emails if k in memory.linked_sources
    )
    keys = set(subjects.emails)
    keys.update(desired.by_source_id[s] for s in source_ids if s in desired.by_source_id)
    if source_ids:
        keys.update(k for k, s in memory.linked_sources.items() if s in source_ids)
    source_ids.update(desired.known[k] for k in keys if k in desired.known)
    linked = {memory.links[s] for s in source_ids if s in memory.links}

    members = tuple(m for m in observed.members if m.email_key in keys or m.id in linked)
    if any(m.role in observed.roles.owner_roles for m in members):
        return None
    # A linked member found by id may still carry an old email: its key belongs to the
    # slice too, so that its invitations and removal decision are judged consistently.
    keys.update(m.email_key for m in members if m.email_key is not None)
    invites = tuple(i for i in observed.invites if i.email_key in keys)
    wanted = {k: w for k, w in desired.wanted.items() if k in keys}

    return Scoped(
        desired=replace(desired, wanted=MappingProxyType(wanted), groups=()),
        observed=replace(observed, members=members, invites=invites, groups=()),
        memory=replace(memory, owned_groups=MappingProxyType({})),
        keys=frozenset(keys),
    )


def whole_plan_needed(
    scoped: Scoped,
    memory: Memory,
    whole: DesiredState,
    limits: SafetyLimits,
    *,
    judge_removals: bool = True,
    judge_additions: bool = True,
) -> str | None:
    """Why the slice's plan must be a whole organization's plan for the guards to judge
    it, or None.

    `memory` and `whole` are the unsliced memory and desired state. Each guard counts
    over a whole plan, so the slice defers to one when it would:
    - grant a privileged role while the source wants more people in privileged roles
      than `max_privilege_grants`;
    - lower a named person's role (every lowering counts as a removal, and nothing read
      for a slice says how many others a rule change lowers);
    - take access from a named person while more managed people than the removal limits
      allow are no longer wanted (deactivated, out of every scope group, or gone);
    - let a named person in while the source wants more people orgsync never let in than
      `max_additions` / `max_addition_ratio` allow (a scope group suddenly listing all).
    Counted from memory, without reading the organization: a managed person already
    suspended counts among the unwanted, so the estimate errs towards a whole plan (a
    managed person removed by hand is not counted among the newcomers, though a whole
    plan invites them again). `judge_*` off: the operator lifted those guards for this
    run (`--allow-removals`, `--allow-additions`).
    """
    observed = scoped.observed
    most = limits.max_privilege_grants
    if (
        judge_additions
        and most is not None
        and observed.roles.privileged
        # A plan grants a privileged role only to someone the source wants in it: while
        # those are within the limit, no plan can exceed it.
        and sum(1 for w in whole.wanted.values() if w.role in observed.roles.privileged) > most
    ):
        held_roles = {(m.email_key, m.role) for m in observed.members}
        for key in scoped.keys:
            wanted = scoped.desired.wanted.get(key)
            if (
                wanted is not None
                and wanted.role in observed.roles.privileged
                and (key, wanted.role) not in held_roles
            ):
                return "a named person is granted a privileged role"
    members = {m.email_key for m in observed.members}
    if judge_additions and any(
        key in scoped.desired.wanted and key not in members for key in scoped.keys
    ):
        joining = sum(1 for key in whole.wanted if key not in memory.managed)
        over = exceeds_addition_limits(joining, len(memory.managed), limits)
        if over is not None:
            return f"a named person is let in while the source wants many newcomers: {over}"
    if judge_removals:
        # A lowering is rare: a whole read for it costs little.
        roles = observed.roles
        for found in observed.members:
            wanted = scoped.desired.wanted.get(found.email_key) if found.email_key else None
            if wanted is not None and roles.rank(found.role) > roles.rank(wanted.role) >= 0:
                return "a named person's role is lowered"
    if judge_removals and any(
        key in memory.managed and key not in whole.wanted for key in scoped.keys
    ):
        leaving = sum(1 for key in memory.managed if key not in whole.wanted)
        over = exceeds_removal_limits(leaving, len(memory.managed), limits)
        if over is not None:
            return f"a named person loses access while the source no longer wants many: {over}"
    return None
