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

from orgsync.core.model import EmailKey, RoleCatalog, SourceGroup, SourceId, SourceSnapshot


@dataclass(frozen=True, slots=True)
class RoleRule:
    """Members of IdP groups matching `group` (a glob) get `role`."""

    group: str
    role: str


@dataclass(frozen=True, slots=True)
class MembershipRules:
    """The part of a target's configuration that decides who is wanted, with which role."""

    scope_groups: tuple[str, ...] = ()
    """Globs over IdP group names; empty means every active person is in scope."""
    roles: tuple[RoleRule, ...] = ()
    default_role: str | None = None


@dataclass(frozen=True, slots=True)
class Wanted:
    """A person who must be a member, with the role they must have and why."""

    source_id: SourceId
    email: str
    email_key: EmailKey
    role: str
    reason: str


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
            for member in group.members:
                if member in self._people:
                    found.add(member)
                elif member not in seen:
                    seen.add(member)
                    done = self._cache.get(member)
                    if done is not None:
                        found.update(done)
                    else:
                        stack.append(member)
        result = frozenset(found)
        self._cache[group_id] = result
        return result


def desired_state(
    snapshot: SourceSnapshot, rules: MembershipRules, catalog: RoleCatalog
) -> DesiredState:
    """Apply the SPEC membership rules to a complete source snapshot."""
    keys = {person.id: person.email_key for person in snapshot.people}
    by_email: dict[EmailKey, list[SourceId]] = defaultdict(list)
    for person in snapshot.people:
        by_email[keys[person.id]].append(person.id)
    ambiguous = {key for key, ids in by_email.items() if len(ids) > 1}
    warnings = [
        f"{len(by_email[key])} source people share the email {key!r} "
        f"({', '.join(sorted(by_email[key]))}): none of them is acted on"
        for key in sorted(ambiguous)
    ]

    nesting = _Nesting(snapshot.groups, frozenset(p.id for p in snapshot.people))
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
    for person in snapshot.people:
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
        if grant is not None:
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
        wanted[key] = Wanted(person.id, person.email.strip(), key, role, reason)

    return DesiredState(
        wanted=MappingProxyType(wanted),
        known=MappingProxyType(known),
        out_of_scope=MappingProxyType(out_of_scope),
        ambiguous=frozenset(ambiguous),
        warnings=tuple(warnings),
        by_source_id=MappingProxyType(by_source_id),
    )


def _highest_grant(grants: list[tuple[str, str]], catalog: RoleCatalog) -> tuple[str, str] | None:
    """The (role, group) with the highest role; ties go to the first group by name."""
    best: tuple[str, str] | None = None
    for role, group_name in grants:
        if best is None or catalog.rank(role) > catalog.rank(best[0]):
            best = (role, group_name)
    return best
