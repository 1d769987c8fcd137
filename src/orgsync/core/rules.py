"""From a source snapshot to the desired membership of one target organization.

Owns the SPEC rules that decide *who* should be a member and with *which role*: scope
globs over IdP group names, role rules where the highest role wins by the target's role
order, nested groups flattened with cycles broken, inactive people out of scope, and
people sharing one normalized email excluded with a warning. Pure; linear in the size
of the directory plus the memberships reachable from the groups the rules name.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from types import MappingProxyType

from orgsync.core.model import (
    EmailKey,
    RejectedRecord,
    RoleCatalog,
    SourceGroup,
    SourceId,
    SourceSnapshot,
    normalize_email,
    screen,
)


@dataclass(frozen=True, slots=True)
class RoleRule:
    """Members of IdP groups matching `group` (a glob) get `role`."""

    group: str
    role: str


@dataclass(frozen=True, slots=True)
class GroupRule:
    """IdP groups whose name matches `source` (a glob) are mirrored as target groups named
    by `name` (`{source}` stands for the IdP group's name), holding `roles`."""

    source: str
    name: str = "{source}"
    roles: tuple[str, ...] = ()

    def target_name(self, source_name: str) -> str:
        return self.name.replace("{source}", source_name)


@dataclass(frozen=True, slots=True)
class DesiredGroup:
    """A target group orgsync must keep: its members are wanted organization members."""

    source_id: SourceId
    source_name: str
    name: str
    members: frozenset[EmailKey]
    roles: tuple[str, ...]
    rule: int
    """Index of the `[[targets.groups]]` rule that selected it (for messages)."""


@dataclass(frozen=True, slots=True)
class MembershipRules:
    """The part of a target's configuration that decides who is wanted, with which role."""

    scope_groups: tuple[str, ...] = ()
    """Globs over IdP group names; empty means every active person is in scope."""
    roles: tuple[RoleRule, ...] = ()
    default_role: str | None = None
    groups: tuple[GroupRule, ...] = ()
    roleless: bool = False
    """The target has no organization roles: everyone in scope is wanted, with role ""."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """A person who must be a member, with the role they must have and why."""

    source_id: SourceId
    email: str
    email_key: EmailKey
    role: str
    """Empty on targets without organization roles (scope alone decides)."""
    reason: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Who the source wants in one organization, and what it knows about everybody else."""

    wanted: Mapping[EmailKey, Wanted]
    known: Mapping[EmailKey, SourceId]
    """Every person the source reports with a unique email, in scope or not."""
    out_of_scope: Mapping[EmailKey, str]
    """Known but not wanted, with the reason (inactive, in no scope group, …)."""
    ambiguous: frozenset[EmailKey] = frozenset()
    """Emails shared by several source people: nothing is done about them."""
    warnings: tuple[str, ...] = ()
    by_source_id: Mapping[SourceId, EmailKey] = field(default_factory=lambda: MappingProxyType({}))
    groups: tuple[DesiredGroup, ...] = ()
    """Target groups to keep, in IdP group name order (empty without group rules)."""
    rejected: Mapping[SourceId, str] = field(default_factory=lambda: MappingProxyType({}))
    """Source records orgsync cannot act on, by id, with the reason. Whoever they stand
    for in a target is left exactly as they are (see the planner's `held_back`)."""
    rejected_emails: frozenset[EmailKey] = frozenset()
    """The normalized emails those records carry, as written: a member with one of them
    is theirs."""


def _glob(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex for a list of globs, or None when the list is empty."""
    parts = [translate(p.casefold()) for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None


class _Nesting:
    """Transitive group membership with cycles broken; memoized per group."""

    def __init__(self, groups: Sequence[SourceGroup], person_ids: frozenset[SourceId]) -> None:
        self._groups = {g.id: g for g in groups}
        self._people = person_ids
        self._cache: dict[SourceId, frozenset[SourceId]] = {}

    def people_in(self, group_id: SourceId) -> frozenset[SourceId]:
        """Everyone reachable from `group_id` through nested groups.

        Iterative, so deep nesting cannot exhaust the stack; a group met twice on one walk
        (a cycle or a diamond) is expanded once.
        """
        cached = self._cache.get(group_id)
        if cached is not None:
            return cached
        found: set[SourceId] = set()
        seen: set[SourceId] = {group_id}
        stack = [group_id]
        while stack:
            group = self._groups.get(stack.pop())
            if group is None:
                continue
            nested = list(group.subgroups)
            for member in group.members:
                if member in self._people:
                    found.add(member)
                else:
                    nested.append(member)
            for subgroup in nested:
                if subgroup not in seen:
                    seen.add(subgroup)
                    done = self._cache.get(subgroup)
                    if done is not None:
                        found.update(done)
                    else:
                        stack.append(subgroup)
        result = frozenset(found)
        self._cache[group_id] = result
        return result


def desired_state(
    snapshot: SourceSnapshot, rules: MembershipRules, catalog: RoleCatalog
) -> DesiredState:
    """Apply the SPEC membership rules to a complete source snapshot."""
    people, rejected = screen(snapshot)
    keys = {person.id: person.email_key for person in people}
    by_email: dict[EmailKey, list[SourceId]] = defaultdict(list)
    for person in people:
        by_email[keys[person.id]].append(person.id)
    ambiguous = {key for key, ids in by_email.items() if len(ids) > 1}
    warnings = _record_warnings(by_email, ambiguous, rejected)

    nesting = _Nesting(snapshot.groups, frozenset([*keys, *(r.source_id for r in rejected)]))
    scope_match = _glob(rules.scope_groups)
    role_matches = [(_glob([rule.group]), rule) for rule in rules.roles]
    in_scope_groups: dict[SourceId, list[str]] = defaultdict(list)
    role_grants: dict[SourceId, list[tuple[str, str]]] = defaultdict(list)
    for group in sorted(snapshot.groups, key=lambda g: g.name):
        name = group.name.casefold()
        if scope_match is not None and scope_match.fullmatch(name):
            for person_id in nesting.people_in(group.id):
                in_scope_groups[person_id].append(group.name)
        for pattern, rule in role_matches:
            if pattern is not None and pattern.fullmatch(name):
                for person_id in nesting.people_in(group.id):
                    role_grants[person_id].append((rule.role, group.name))

    wanted: dict[EmailKey, Wanted] = {}
    known: dict[EmailKey, SourceId] = {}
    out_of_scope: dict[EmailKey, str] = {}
    by_source_id: dict[SourceId, EmailKey] = {}
    for person in people:
        key = keys[person.id]
        if key in ambiguous:
            continue
        known[key] = person.id
        by_source_id[person.id] = key
        if not person.active:
            out_of_scope[key] = "inactive in the source"
            continue
        if scope_match is not None and not in_scope_groups.get(person.id):
            out_of_scope[key] = "in no scope group"
            continue
        grant = _highest_grant(role_grants.get(person.id, []), catalog)
        if rules.roleless:
            role = ""
            scope_names = in_scope_groups.get(person.id)
            reason = f"member of {scope_names[0]}" if scope_names else "active in the source"
        elif grant is not None:
            role, group_name = grant
            reason = f"member of {group_name}"
        elif rules.default_role is not None:
            role = rules.default_role
            scope_names = in_scope_groups.get(person.id)
            reason = (
                f"member of {scope_names[0]} (default role)"
                if scope_names
                else "active in the source (default role)"
            )
        else:
            out_of_scope[key] = "no role rule matches and no default_role is set"
            continue
        wanted[key] = Wanted(person.id, person.email.strip(), key, role, reason, person.name)

    groups, group_warnings = _desired_groups(snapshot, rules.groups, nesting, keys, wanted)
    warnings.extend(group_warnings)
    return DesiredState(
        wanted=MappingProxyType(wanted),
        known=MappingProxyType(known),
        out_of_scope=MappingProxyType(out_of_scope),
        ambiguous=frozenset(ambiguous),
        warnings=tuple(warnings),
        by_source_id=MappingProxyType(by_source_id),
        groups=groups,
        rejected=MappingProxyType({r.source_id: r.reason for r in rejected}),
        rejected_emails=frozenset(
            normalize_email(r.email) for r in rejected if r.email and r.email.strip()
        ),
    )


def _record_warnings(
    by_email: Mapping[EmailKey, list[SourceId]],
    ambiguous: set[EmailKey],
    rejected: Sequence[RejectedRecord],
) -> list[str]:
    """One warning per shared email and per rejected record, each naming the ids."""
    warnings = [
        f"{len(by_email[key])} source people share the email {key!r} "
        f"({', '.join(sorted(by_email[key]))}): none of them is acted on"
        for key in sorted(ambiguous)
    ]
    warnings += [
        f"source record {record.source_id!r} rejected: {record.reason}; nothing is done "
        "about this person (not invited, and a member linked to them is left as is)"
        for record in sorted(rejected, key=lambda r: r.source_id)
    ]
    return warnings


def _desired_groups(
    snapshot: SourceSnapshot,
    rules: tuple[GroupRule, ...],
    nesting: _Nesting,
    keys: Mapping[SourceId, EmailKey],
    wanted: Mapping[EmailKey, Wanted],
) -> tuple[tuple[DesiredGroup, ...], list[str]]:
    """Mirror IdP groups selected by the group rules; the first matching rule wins."""
    if not rules:
        return (), []
    patterns = [(_glob([rule.source]), rule) for rule in rules]
    chosen: list[DesiredGroup] = []
    for group in sorted(snapshot.groups, key=lambda g: (g.name, g.id)):
        folded = group.name.casefold()
        for index, (pattern, rule) in enumerate(patterns):
            if pattern is not None and pattern.fullmatch(folded):
                members = frozenset(
                    keys[p] for p in nesting.people_in(group.id) if p in keys and keys[p] in wanted
                )
                name = rule.target_name(group.name)
                chosen.append(DesiredGroup(group.id, group.name, name, members, rule.roles, index))
                break
    by_name: dict[str, list[DesiredGroup]] = defaultdict(list)
    for desired in chosen:
        by_name[desired.name.casefold()].append(desired)
    warnings = [
        f"IdP groups {', '.join(repr(d.source_name) for d in clash)} would all become target "
        f"group {clash[0].name!r}: none of them is mirrored"
        for clash in by_name.values()
        if len(clash) > 1
    ]
    unique = tuple(d for d in chosen if len(by_name[d.name.casefold()]) == 1)
    return unique, warnings


def _highest_grant(grants: list[tuple[str, str]], catalog: RoleCatalog) -> tuple[str, str] | None:
    """The (role, group) with the highest role; ties go to the first group by name."""
    best: tuple[str, str] | None = None
    for role, group_name in grants:
        if best is None or catalog.rank(role) > catalog.rank(best[0]):
            best = (role, group_name)
    return best
