"""`orgsync explain`: one person's part in a target's plan, and why.

Pure. `explain` takes what a dry run plans from (`PlanInput`, the safety gate's population,
limits and allowances) plus the source snapshot and the rules, runs the very planner and
gate a sync runs, and keeps what concerns the person. It never re-decides anything: the
operations, held operations and waiting items it lists are the full plan's, so an
explanation cannot disagree with `orgsync sync --dry-run`. What it adds is the *why*:
the source record, every rule and IdP group (with the nesting path) that matched, what
the target holds, and each guard or protection that applies.

A person is found by source id or by normalized email, in the source (rejected records
included), among the target's members and invitations, and in orgsync's memory (the
links and emails of earlier runs): a leaver present only on the target is found too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from orgsync.core.globs import name_matcher
from orgsync.core.model import (
    EmailKey,
    InviteStatus,
    RejectedRecord,
    SourceId,
    SourcePerson,
    SourceSnapshot,
    TargetInvite,
    TargetMember,
    normalize_email,
    screen,
)
from orgsync.core.plan import (
    AddGroupMember,
    HeldOperation,
    MemberOperation,
    Operation,
    Plan,
    RemoveGroupMember,
    UpdateUser,
    Waiting,
    operation_json,
    waiting_json,
)
from orgsync.core.planner import PlanInput, _Planner
from orgsync.core.rules import MembershipRules, paths_to
from orgsync.core.safety import Allowances, Population, SafetyLimits, gate

EXIT_NOTHING, EXIT_PENDING, EXIT_HELD = 0, 2, 3

GuardKind = Literal[
    "key_owner",
    "service_account",
    "scim_managed",
    "protected",
    "last_owner",
    "rejected_record",
    "ambiguous_email",
    "unmanaged",
    "removal_grace",
    "safety_gate",
    "waiting_for_acceptance",
    "email_change",
    "foreign_group",
    "group_rule",
]


@dataclass(frozen=True, slots=True)
class ExplainInput:
    """What a dry run of one target plans from, and what explains the rules' choices."""

    given: PlanInput
    snapshot: SourceSnapshot
    rules: MembershipRules
    population: Population
    limits: SafetyLimits
    allowances: Allowances = field(default_factory=Allowances)


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """One rule of the target's configuration that matched one of the person's groups."""

    rule: str
    """The configuration key: `targets.scope_groups`, `targets.roles[i]`, `targets.groups[i]`
    (the i-th `[[targets.roles]]` / `[[targets.groups]]` of the target) or
    `targets.default_role`."""
    pattern: str
    """The glob that matched (the role for `default_role`)."""
    gives: str
    """What the rule gives: `in scope`, `role owner`, `target group 'team-ml'`."""
    path: tuple[str, ...] = ()
    """IdP group names from the matched group down to the one listing the person; empty
    for `default_role`."""
    decides: bool = False
    """The match the desired state was built on (first scope group, winning role)."""

    def describe(self) -> str:
        if not self.path:
            return f"{self.gives} ({self.rule}, no role rule matches)"
        via = "".join(f" via nested group {name!r}" for name in self.path[1:])
        field = {"targets.roles": "group = ", "targets.groups": "source = "}.get(
            self.rule.partition("[")[0], ""
        )
        return (
            f"{self.gives}: member of IdP group {self.path[0]!r}{via} "
            f"({self.rule}: {field}{self.pattern!r})"
        )


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A source record orgsync reads for the person: only the fields it uses."""

    source_id: str
    email: str | None
    name: str = ""
    active: bool = True
    rejected: str | None = None
    """Why orgsync cannot act on the record, when it cannot."""
    matches: tuple[RuleMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class Desired:
    """What the rules want for the person in this target."""

    wanted: bool
    reason: str
    role: str | None = None
    groups: tuple[str, ...] = ()
    """Target groups the person must be in."""


@dataclass(frozen=True, slots=True)
class GroupView:
    name: str
    id: str
    owner: Literal["orgsync", "another provisioner", "nobody"]
    """Who manages the group: orgsync's ledger, another provisioner (`is_scim_managed`),
    or nobody (a group orgsync leaves alone unless a rule names it)."""


@dataclass(frozen=True, slots=True)
class MemberView:
    id: str
    email: str | None
    role: str | None
    active: bool
    groups: tuple[GroupView, ...] = ()


@dataclass(frozen=True, slots=True)
class InviteView:
    id: str
    email: str
    role: str | None
    status: str
    """`pending`, `expired` (also a pending one past its expiry) or `accepted`."""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Current:
    """What the target holds for the person now, and what orgsync remembers of them."""

    state: Literal["member", "suspended", "invited", "invitation expired", "absent"]
    members: tuple[MemberView, ...] = ()
    invites: tuple[InviteView, ...] = ()
    managed: bool = False
    """orgsync linked or invited them in an earlier run."""
    missing_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Guard:
    """A guard, grace period or protection that applies to the person, and why."""

    kind: GuardKind
    reason: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """One person in one target: source, rules, desired and actual state, plan, guards."""

    target: str
    lookup: str
    found: bool
    sources: tuple[SourceRecord, ...]
    desired: Desired
    current: Current
    operations: tuple[Operation, ...]
    held: tuple[HeldOperation, ...]
    waiting: tuple[Waiting, ...]
    guards: tuple[Guard, ...]
    warnings: tuple[str, ...]
    """The plan's warnings about this person, verbatim."""

    @property
    def exit_code(self) -> int:
        """As a dry run's, for this person: 3 held, 2 changes pending, 0 nothing to do."""
        if self.held:
            return EXIT_HELD
        return EXIT_PENDING if self.operations else EXIT_NOTHING

    def to_json(self) -> dict[str, object]:
        """The `--json` form of one target's explanation (README "orgsync explain")."""
        return {
            "target": self.target,
            "lookup": self.lookup,
            "found": self.found,
            "exit_code": self.exit_code,
            "source": [
                {
                    "id": r.source_id,
                    "email": r.email,
                    "name": r.name,
                    "active": r.active,
                    "rejected": r.rejected,
                    "matches": [
                        {
                            "rule": m.rule,
                            "pattern": m.pattern,
                            "gives": m.gives,
                            "path": list(m.path),
                            "decides": m.decides,
                        }
                        for m in r.matches
                    ],
                }
                for r in self.sources
            ],
            "desired": {
                "wanted": self.desired.wanted,
                "reason": self.desired.reason,
                "role": self.desired.role,
                "groups": list(self.desired.groups),
            },
            "current": {
                "state": self.current.state,
                "managed": self.current.managed,
                "missing_since": _iso(self.current.missing_since),
                "members": [
                    {
                        "id": m.id,
                        "email": m.email,
                        "role": m.role,
                        "active": m.active,
                        "groups": [
                            {"name": g.name, "id": g.id, "owner": g.owner} for g in m.groups
                        ],
                    }
                    for m in self.current.members
                ],
                "invites": [
                    {
                        "id": i.id,
                        "email": i.email,
                        "role": i.role,
                        "status": i.status,
                        "expires_at": _iso(i.expires_at),
                    }
                    for i in self.current.invites
                ],
            },
            "operations": [operation_json(op) for op in self.operations],
            "held": [{**operation_json(h.operation), "guard": h.guard} for h in self.held],
            "waiting": [waiting_json(w) for w in self.waiting],
            "guards": [{"kind": g.kind, "reason": g.reason} for g in self.guards],
            "warnings": list(self.warnings),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


# --------------------------------------------------------------------------- who


@dataclass(frozen=True, slots=True)
class _Person:
    people: tuple[SourcePerson, ...]
    rejected: tuple[RejectedRecord, ...]
    source_ids: frozenset[SourceId]
    keys: frozenset[EmailKey]
    members: tuple[TargetMember, ...]
    invites: tuple[TargetInvite, ...]


def _find(lookup: str, given: PlanInput, snapshot: SourceSnapshot) -> _Person:
    """Everything that stands for the person `lookup` names, on each side.

    A source id names its record (or what earlier runs linked to it); anything else is
    taken as an email. From there, until nothing new turns up: the records with those ids
    or emails, the emails and member ids earlier runs linked to the ids, the members those
    emails and links lead to, and those members' own emails (an old address a rename left).
    """
    text = lookup.strip()
    source_id = SourceId(text)
    memory, observed = given.memory, given.observed
    people, rejected = screen(snapshot)
    ids: set[SourceId] = set()
    keys: set[EmailKey] = set()
    if (
        any(p.id == source_id for p in people)
        or any(r.source_id == source_id for r in rejected)
        or source_id in memory.links
        or source_id in memory.linked_sources.values()
    ):
        ids.add(source_id)
    else:
        keys.add(normalize_email(text))
    found_people: dict[SourceId, SourcePerson] = {}
    found_rejected: dict[SourceId, RejectedRecord] = {}
    members: dict[str, TargetMember] = {}
    size = -1
    while size != len(ids) + len(keys):
        size = len(ids) + len(keys)
        for p in people:
            if p.id in ids or p.email_key in keys:
                found_people[p.id] = p
        for r in rejected:
            if r.source_id in ids or (r.email and normalize_email(r.email) in keys):
                found_rejected[r.source_id] = r
        ids.update(found_people, found_rejected)
        keys.update(p.email_key for p in found_people.values())
        keys.update(normalize_email(r.email) for r in found_rejected.values() if r.email)
        ids.update(memory.linked_sources[k] for k in keys if k in memory.linked_sources)
        keys.update(k for k, s in memory.linked_sources.items() if s in ids)
        linked = {memory.links[s] for s in ids if s in memory.links}
        for m in observed.members:
            if m.id in linked or m.email_key in keys:
                members[m.id] = m
        keys.update(m.email_key for m in members.values() if m.email_key is not None)
    keys.discard(EmailKey(""))
    invites = [i for i in observed.invites if i.email_key in keys]
    return _Person(
        people=tuple(sorted(found_people.values(), key=lambda p: p.id)),
        rejected=tuple(sorted(found_rejected.values(), key=lambda r: r.source_id)),
        source_ids=frozenset(ids),
        keys=frozenset(keys),
        members=tuple(sorted(members.values(), key=lambda m: m.id)),
        invites=tuple(sorted(invites, key=lambda i: i.id)),
    )


def concerns(operation: Operation, keys: Iterable[EmailKey], member_ids: Iterable[str]) -> bool:
    """Whether `operation` is about the person with these email keys and member ids: a
    member operation naming one of them, or their membership of a group."""
    keys, member_ids = frozenset(keys), frozenset(member_ids)
    if isinstance(operation, AddGroupMember | RemoveGroupMember):
        return normalize_email(operation.email) in keys or operation.user_id in member_ids
    if isinstance(operation, MemberOperation):
        if normalize_email(operation.email) in keys:
            return True
        previous = operation.previous_email if isinstance(operation, UpdateUser) else None
        if previous is not None and normalize_email(previous) in keys:
            return True
        return getattr(operation, "user_id", None) in member_ids
    return False


# --------------------------------------------------------------------------- why


def explain(lookup: str, inputs: ExplainInput) -> Explanation:
    """Explain `lookup` (an email or a source id) in one target, from a dry run's inputs."""
    given = inputs.given
    # The planner's own object (what `planner.plan` runs): the plan, and its answers to
    # "untouchable?" and "why remove?", are the ones a dry run gets.
    planner = _Planner(given)
    full = gate(
        planner.run(),
        population=inputs.population,
        limits=inputs.limits,
        allowances=inputs.allowances,
        privileged=given.observed.roles.privileged,
    )
    person = _find(lookup, given, inputs.snapshot)
    member_ids = frozenset(m.id for m in person.members)
    labels = _labels(person)
    operations = tuple(op for op in full.operations if concerns(op, person.keys, member_ids))
    held = tuple(h for h in full.held if concerns(h.operation, person.keys, member_ids))
    waiting = tuple(
        w for w in full.waiting if normalize_email(w.email) in person.keys or w.email in member_ids
    )
    desired = _desired(person, inputs)
    warnings = _warnings(full, person, labels, desired.groups)
    memory = given.memory
    found = bool(
        person.people
        or person.rejected
        or person.members
        or person.invites
        or person.source_ids
        or person.keys & (memory.managed | set(memory.missing_since))
    )
    return Explanation(
        target=given.target,
        lookup=lookup.strip(),
        found=found,
        sources=_sources(person, inputs, desired),
        desired=desired,
        current=_current(person, given),
        operations=operations,
        held=held,
        waiting=waiting,
        guards=_guards(
            person,
            planner=planner,
            full=full,
            held=held,
            waiting=waiting,
            warnings=warnings,
            desired=desired,
        ),
        warnings=warnings,
    )


def _labels(person: _Person) -> frozenset[str]:
    """How the plan's messages name the person: emails as written, member ids."""
    labels = {p.email.strip() for p in person.people}
    labels.update(m.email or m.id for m in person.members)
    labels.update(i.email for i in person.invites)
    return frozenset(labels)


def _sources(person: _Person, inputs: ExplainInput, desired: Desired) -> tuple[SourceRecord, ...]:
    records = [
        SourceRecord(
            source_id=p.id,
            email=p.email,
            name=p.name,
            active=p.active,
            matches=_matches(p, inputs, desired),
        )
        for p in person.people
    ]
    for bad in person.rejected:
        listed = next((p for p in inputs.snapshot.people if p.id == bad.source_id), None)
        records.append(
            SourceRecord(
                source_id=bad.source_id,
                email=bad.email,
                name=listed.name if listed else "",
                active=listed.active if listed else True,
                rejected=bad.reason,
                # What the rules would read, were the record usable: a fixed email is
                # all it takes for these to apply.
                matches=_matches(listed, inputs, desired) if listed else (),
            )
        )
    return tuple(records)


def _matches(p: SourcePerson, inputs: ExplainInput, desired: Desired) -> tuple[RuleMatch, ...]:
    """Every rule that matched one of `p`'s IdP groups, in the order the rules read them
    (groups by name); the ones the desired state was decided by are marked."""
    rules = inputs.rules
    wanted = inputs.given.desired.wanted.get(p.email_key)
    decided = wanted.reason if wanted is not None and wanted.source_id == p.id else ""
    paths = paths_to(inputs.snapshot, p.id)
    scope = [(pattern, name_matcher([pattern])) for pattern in rules.scope_groups]
    roles = [(i, rule, name_matcher([rule.group])) for i, rule in enumerate(rules.roles)]
    mirrors = [(i, rule, name_matcher([rule.source])) for i, rule in enumerate(rules.groups)]
    matches: list[RuleMatch] = []
    scope_decided = False
    for group in sorted(inputs.snapshot.groups, key=lambda g: (g.name, g.id)):
        path = paths.get(group.id)
        if path is None:
            continue
        by_name = decided == f"member of {group.name}" or decided.startswith(
            f"member of {group.name} ("
        )
        for pattern, matches_name in scope:
            if matches_name(group.name):
                # The rules keep each person's first scope group by name: this one.
                first = bool(decided) and not scope_decided
                scope_decided = True
                matches.append(RuleMatch("targets.scope_groups", pattern, "in scope", path, first))
                break
        if not rules.roleless:
            for i, rule, matches_name in roles:
                if matches_name(group.name):
                    wins = by_name and wanted is not None and wanted.role == rule.role
                    role = f"role {rule.role}"
                    matches.append(RuleMatch(f"targets.roles[{i}]", rule.group, role, path, wins))
        for i, mirror, matches_name in mirrors:
            if matches_name(group.name):
                gives = f"target group {mirror.target_name(group.name)!r}"
                chosen = mirror.target_name(group.name) in desired.groups
                key = f"targets.groups[{i}]"
                matches.append(RuleMatch(key, mirror.source, gives, path, chosen))
                break
    if wanted is not None and wanted.source_id == p.id and "(default role)" in decided:
        role = f"role {wanted.role}"
        matches.append(RuleMatch("targets.default_role", wanted.role, role, (), True))
    return tuple(matches)


def _desired(person: _Person, inputs: ExplainInput) -> Desired:
    desired = inputs.given.desired
    for key in sorted(person.keys):
        wanted = desired.wanted.get(key)
        if wanted is not None:
            groups = tuple(sorted(d.name for d in desired.groups if key in d.members))
            return Desired(True, wanted.reason, wanted.role, groups)
    for source_id in sorted(person.source_ids):
        if source_id in desired.rejected:
            return Desired(False, f"source record rejected: {desired.rejected[source_id]}")
    for key in sorted(person.keys):
        if key in desired.ambiguous:
            return Desired(False, "several source people share this email: none is acted on")
        if key in desired.out_of_scope:
            return Desired(False, desired.out_of_scope[key])
    if person.rejected:
        return Desired(False, f"source record rejected: {person.rejected[0].reason}")
    return Desired(False, "not in the source")


def _current(person: _Person, given: PlanInput) -> Current:
    memory, observed = given.memory, given.observed
    groups_of: dict[str, list[GroupView]] = {}
    for group in sorted(observed.groups, key=lambda g: (g.name, g.id)):
        owner: Literal["orgsync", "another provisioner", "nobody"] = (
            "another provisioner"
            if group.is_scim_managed
            else "orgsync"
            if group.id in memory.owned_groups
            else "nobody"
        )
        for member_id in group.member_ids:
            groups_of.setdefault(member_id, []).append(GroupView(group.name, group.id, owner))
    members = tuple(
        MemberView(m.id, m.email, m.role, m.active, tuple(groups_of.get(m.id, ())))
        for m in person.members
    )
    invites = tuple(
        InviteView(
            i.id,
            i.email,
            i.role,
            _invite_status(i, given.now),
            i.expires_at,
        )
        for i in person.invites
    )
    state: Literal["member", "suspended", "invited", "invitation expired", "absent"]
    if any(m.active for m in members):
        state = "member"
    elif members:
        state = "suspended"
    elif any(i.status == "pending" for i in invites):
        state = "invited"
    elif any(i.status == "expired" for i in invites):
        state = "invitation expired"
    else:
        state = "absent"
    linked = frozenset(memory.links.values())
    managed = bool(person.keys & memory.managed) or any(m.id in linked for m in person.members)
    since = [memory.missing_since[k] for k in person.keys if k in memory.missing_since]
    return Current(state, members, invites, managed, min(since) if since else None)


def _invite_status(invite: TargetInvite, now: datetime) -> str:
    if invite.is_live(now):
        return "pending"
    return "accepted" if invite.status is InviteStatus.ACCEPTED else "expired"


def _warnings(
    full: Plan, person: _Person, labels: frozenset[str], groups: tuple[str, ...]
) -> tuple[str, ...]:
    """The plan's warnings that name the person, their source records, or a target group
    the rules want them in."""
    marks = [f"{label}: " for label in labels]
    marks += [f"source record {s!r} rejected" for s in person.source_ids]
    marks += [f"share the email {k!r}" for k in person.keys]
    marks += [f"group {name!r}" for name in groups]
    return tuple(w for w in full.warnings if any(mark in w for mark in marks))


def _guards(
    person: _Person,
    *,
    planner: _Planner,
    full: Plan,
    held: tuple[HeldOperation, ...],
    waiting: tuple[Waiting, ...],
    warnings: tuple[str, ...],
    desired: Desired,
) -> tuple[Guard, ...]:
    given = planner.given
    guards: list[Guard] = []
    for member in person.members:
        label = member.email or member.id
        if member.is_service_account:
            guards.append(Guard("service_account", f"{label} is a service account: never changed"))
        if member.is_scim_managed:
            guards.append(
                Guard(
                    "scim_managed",
                    f"{label} is managed by another provisioner (is_scim_managed): never "
                    "changed by orgsync",
                )
            )
        if member.id == given.observed.key_owner_id:
            guards.append(
                Guard(
                    "key_owner",
                    f"{label} is the owner of orgsync's API key: never removed, demoted or "
                    "ungrouped, so orgsync cannot lock itself out",
                )
            )
    rejected = {s: r for s, r in given.desired.rejected.items() if s in person.source_ids}
    held_back = any(m.id in planner.held_back_ids for m in person.members) or bool(
        person.keys & planner.held_back_keys
    )
    for source_id, reason in sorted(rejected.items()):
        guards.append(
            Guard(
                "rejected_record",
                f"source record {source_id!r} is rejected ({reason}): this person is neither "
                "invited nor taken for absent; a member, invitation, role or group they hold "
                "is kept as it is",
            )
        )
    if held_back and not rejected:
        guards.append(
            Guard(
                "rejected_record",
                "a rejected source record (or a source person whose email another "
                "shares) carries this email or was linked to this member: left exactly as "
                "they are",
            )
        )
    for key in sorted(person.keys & given.desired.ambiguous):
        guards.append(
            Guard(
                "ambiguous_email",
                f"several source people share the email {key!r}: none of them is acted on",
            )
        )
    for key in sorted(person.keys & given.policy.protected):
        guards.append(
            Guard(
                "protected",
                f"{key} is in safety.protected: never removed, demoted or uninvited",
            )
        )
    for warning in warnings:
        if "the last owner" in warning:
            guards.append(Guard("last_owner", warning))
    guards.extend(_unmanaged(person, planner))
    for item in waiting:
        if item.group is not None:
            guards.append(Guard("waiting_for_acceptance", f"group {item.group!r}: {item.reason}"))
        elif item.op == "update_user":
            guards.append(Guard("email_change", item.reason))
        else:
            until = f" until {_iso(item.until)}" if item.until is not None else ""
            guards.append(
                Guard(
                    "removal_grace",
                    f"{item.op} waits{until} (safety.removal_grace): {item.reason}",
                )
            )
    by_guard: dict[str, list[Operation]] = {}
    for kept in held:
        by_guard.setdefault(kept.guard, []).append(kept.operation)
    for guard, operations in by_guard.items():
        what = ", ".join(_what(op) for op in operations)
        guards.append(Guard("safety_gate", f"held: {what}; {guard}{_allowance(full, operations)}"))
    for member in person.members:
        for group in given.observed.groups:
            if member.id in group.member_ids and group.is_scim_managed:
                guards.append(
                    Guard(
                        "foreign_group",
                        f"group {group.name!r} is managed by another provisioner "
                        "(is_scim_managed): orgsync never changes its members",
                    )
                )
    for warning in warnings:
        if any(f"group {name!r}" in warning for name in desired.groups):
            guards.append(Guard("group_rule", warning))
    return tuple(guards)


def _what(operation: Operation) -> str:
    if isinstance(operation, AddGroupMember | RemoveGroupMember):
        return f"{operation.op} {operation.email} (group {operation.group!r})"
    return f"{operation.op} {operation.subject}"


def _allowance(full: Plan, operations: list[Operation]) -> str:
    """The one-run override a person would pass after checking, with the whole plan's
    count (the gate lifts a guard only for a run doing at most that many)."""
    everything = [*full.operations, *(h.operation for h in full.held)]
    flags = [
        f"--allow-{kind} {sum(map(counts, everything))}"
        for kind, counts in (
            ("removals", lambda op: op.is_removal),
            ("additions", lambda op: op.is_addition),
        )
        if any(map(counts, operations))
    ]
    return f" (after checking, for one run: orgsync sync {' '.join(flags)})" if flags else ""


def _unmanaged(person: _Person, planner: _Planner) -> list[Guard]:
    """Members and invitations orgsync leaves alone because the source does not know them
    and orgsync never managed them."""
    desired = planner.given.desired
    if any(k in desired.known or k in desired.ambiguous for k in person.keys):
        return []
    if not person.members and not person.invites:
        return []
    if any(planner.removal_reason(m.email_key, m.id) is not None for m in person.members):
        return []
    if any(planner.removal_reason(i.email_key, None) is not None for i in person.invites):
        return []
    return [
        Guard(
            "unmanaged",
            "not in the source, and orgsync never linked or invited them "
            "(safety.remove_unmanaged = false): left alone",
        )
    ]


__all__ = [
    "Current",
    "Desired",
    "ExplainInput",
    "Explanation",
    "GroupView",
    "Guard",
    "InviteView",
    "MemberView",
    "RuleMatch",
    "SourceRecord",
    "concerns",
    "explain",
]
