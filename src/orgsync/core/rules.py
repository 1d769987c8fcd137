"""From a source snapshot to the desired membership of one target organization.

Owns the rules (docs/reference.md "Matching", "Roles") that decide *who* should be a member
and with *which role*: scope globs over IdP group names, role rules where the highest role
wins by the target's role order, nested groups flattened with cycles broken, inactive people
out of scope, and people sharing one normalized email excluded with a warning. Pure; linear
in the size of the directory plus the memberships reachable from the groups the rules name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple, cast

from orgsync.core.collector import paused
from orgsync.core.globs import glob_pattern as _glob
from orgsync.core.model import (
    EmailKey,
    RejectedRecord,
    RoleCatalog,
    SourceGroup,
    SourceId,
    SourcePerson,
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


@dataclass(frozen=True, slots=True, eq=False)
class DesiredGroup:
    """A target group orgsync must keep: its members are wanted organization members."""

    source_id: SourceId
    source_name: str
    name: str
    roles: tuple[str, ...]
    rule: int
    """Index of the `[[targets.groups]]` rule that selected it (for messages)."""
    membership: GroupMembership = field(repr=False)
    """Resolves who the group holds, in whichever space a caller asks (see `members`)."""

    @property
    def members(self) -> frozenset[EmailKey]:
        """The email keys of the wanted people the IdP group reaches (nesting included).

        Resolved on first use and kept: planning never asks (it resolves groups straight
        to user ids, `GroupMembership.resolve`), so a desired state costs no set of email
        keys per group unless something (explain, a test) reads them."""
        return self.membership.keys_in(self.source_id)

    def _compared(self) -> tuple[object, ...]:
        return (self.source_id, self.source_name, self.name, self.roles, self.rule, self.members)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DesiredGroup):
            return NotImplemented
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash((self.source_id, self.name, self.rule))


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


class Wanted(NamedTuple):
    """A person who must be a member, with the role they must have and why.

    A named tuple rather than a frozen dataclass: a desired state makes one per wanted
    person, and a tuple is built in a tenth of the time (100k people: 0.02 s, not 0.18 s).
    """

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
    ambiguous_ids: frozenset[SourceId] = frozenset()
    """The source ids of those people: like a rejected record, each is still in the
    source, so the member or invitation linked to them is left as it is (a typo giving
    one person another's address is not their departure)."""
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


_GROUP = object()
"""What a member id that names a group (and no person) stands for in a `_Space`."""
_SKIPPED = object()
"""What the id of a person who is not wanted stands for when only wanted people count."""


class _Space:
    """One kind of group closure: what each member id stands for, and the memos."""

    def __init__(self, lookup: dict[SourceId, object]) -> None:
        self.lookup = lookup
        """Member id -> the value a closure holds for it, or `_GROUP`, or `_SKIPPED`; an id
        it lacks (a person who does not count, an unknown id) stands for nothing."""
        self.direct: dict[SourceId, frozenset[object]] = {}
        self.closure: dict[SourceId, AbstractSet[object]] = {}


class _Nesting:
    """Transitive group membership with cycles broken, memoized per group.

    A person id that is also a group id counts as a person; ids that are neither are
    ignored. Closures are computed in spaces, each with its own memo: `people_in` gives
    source ids (for scope and role rules), `wanted_in` the email keys of wanted people,
    and `space` any other values (the planner's: target user ids), so a mirrored group
    never builds a set of one kind only to translate it into another. A group's members
    are read once per space, in one dictionary look-up each (the dominant cost at a
    million memberships: every member id is a string of its own, far from the others in
    memory, so each look-up is a cache miss). A closure made of one part (a group without
    nested groups, or one that only nests another) is that part, shared. Callers that ask
    once per group (the group planner, the scope and role grants) ask with `keep` false:
    what a group met below another holds is still memoized, but the group asked about
    leaves no frozenset behind (16k of them at 160k people were 50 MiB of fresh memory
    that every later look-up's cache lines competed with).
    """

    def __init__(self, groups: Sequence[SourceGroup], person_ids: Iterable[SourceId]) -> None:
        self._groups = {g.id: g for g in groups}
        self._person_ids = person_ids
        self._nested: dict[SourceId, tuple[SourceId, ...]] = {}
        self._people: _Space | None = None
        self._wanted: _Space | None = None
        self._group_people: frozenset[SourceId] | None = None

    def people_in(self, group_id: SourceId, *, keep: bool = True) -> AbstractSet[SourceId]:
        """Everyone reachable from `group_id` through nested groups (`keep`: see
        `closure`)."""
        if self._people is None:
            lookup: dict[SourceId, object] = dict.fromkeys(self._groups, _GROUP)
            # The person's own id object, so that later look-ups find it by identity.
            lookup.update(zip(self._person_ids, self._person_ids, strict=True))
            self._people = _Space(lookup)
        return cast(AbstractSet[SourceId], self.closure(group_id, self._people, keep=keep))

    def wanted_in(
        self, group_id: SourceId, wanted_keys: Mapping[SourceId, EmailKey]
    ) -> frozenset[EmailKey]:
        """The email keys of the wanted people reachable from `group_id`.

        `wanted_keys` maps the source id of each wanted person to their key; it must be the
        same mapping on every call (the memo is keyed by group only).
        """
        if self._wanted is None:
            self._wanted = self.space(wanted_keys)
        return cast(frozenset[EmailKey], self.closure(group_id, self._wanted))

    def space(self, values: Mapping[SourceId, object]) -> _Space:
        """A space where the person of each id in `values` stands for its value, and
        everybody else for nothing."""
        if self._group_people is None:
            # One C loop over the people (a dictionary view's intersection), not a
            # generator: 160k people cost 10 ms here rather than 25.
            self._group_people = frozenset(self._groups.keys() & self._person_ids)
        # A copy of `values` (one block copy, not 100k insertions), completed with the
        # groups: only a person whose id is also a group's must be told apart from the
        # group; anyone else missing from `values` is simply absent from the lookup.
        lookup: dict[SourceId, object] = dict(values)
        people = self._group_people
        for group_id in self._groups:
            if group_id not in lookup:
                lookup[group_id] = _SKIPPED if group_id in people else _GROUP
        return _Space(lookup)

    def closure(
        self, group_id: SourceId, space: _Space, *, keep: bool = True
    ) -> AbstractSet[object]:
        """Iterative, so deep nesting cannot exhaust the stack; a group met twice on one
        walk (a cycle or a diamond) is expanded once.

        With `keep` false the answer about `group_id` itself is not memoized (groups met
        below it still are), and may be a set of its own rather than a frozenset: for a
        caller that asks once per group (the group planner), so that a million
        memberships do not leave a frozenset per group behind, each in fresh memory. A
        group asked that way and later met below another is read a second time, once."""
        cached = space.closure.get(group_id)
        if cached is not None:
            return cached
        parts: list[AbstractSet[object]] = []
        seen: set[SourceId] = {group_id}
        stack = [group_id]
        while stack:
            current = stack.pop()
            group = self._groups.get(current)
            if group is None:
                continue
            own = self._direct(current, group, space, keep=keep or current != group_id)
            if own:
                parts.append(own)
            for nested in self._nested[current]:
                if nested not in seen:
                    seen.add(nested)
                    done = space.closure.get(nested)
                    if done is None:
                        stack.append(nested)
                    elif done:
                        parts.append(done)
        if not keep:
            return _union(parts)
        result = frozenset(_union(parts))
        space.closure[group_id] = result
        return result

    def _direct(
        self, group_id: SourceId, group: SourceGroup, space: _Space, *, keep: bool
    ) -> AbstractSet[object]:
        """What the group's own members stand for in `space`; records its nested groups.
        Memoized (as a frozenset) when `keep`."""
        found = space.direct.get(group_id)
        if found is not None:
            return found
        values = set(map(space.lookup.get, group.members))
        if group_id not in self._nested:
            # Only a group that nests another pays a second pass over its members.
            listed = (
                tuple(m for m in group.members if space.lookup.get(m) is _GROUP)
                if _GROUP in values
                else ()
            )
            # `subgroups` are groups whatever their id: a source that knows the kind (SCIM
            # `type`/`$ref`) says so, and ids shared with a person mean the group there.
            self._nested[group_id] = listed + group.subgroups
        values.difference_update((_GROUP, _SKIPPED, None))
        if not keep:
            return values
        # Copied from a set, a frozenset's table is sized for its contents.
        kept = frozenset(values)
        space.direct[group_id] = kept
        return kept


def _union(parts: list[AbstractSet[object]]) -> AbstractSet[object]:
    if not parts:
        return frozenset()
    if len(parts) == 1:
        return parts[0]
    return frozenset(set().union(*parts))


class GroupMembership:
    """Who the mirrored IdP groups of one desired state hold: the wanted people each
    reaches through nested groups, resolved per group when asked.

    Resolution is left to whoever needs it, in the space they need: the group planner
    maps each wanted person's source id straight to their target user id (`resolve`), so
    each of the million memberships of a large directory is looked up once, never first
    as an email key and then again as a user id.
    """

    def __init__(
        self,
        nesting: _Nesting,
        keys: Mapping[SourceId, EmailKey],
        wanted: Mapping[EmailKey, Wanted],
    ) -> None:
        self._nesting = nesting
        self._keys = keys
        self._wanted = wanted
        self._wanted_keys: Mapping[SourceId, EmailKey] | None = None

    @property
    def wanted_keys(self) -> Mapping[SourceId, EmailKey]:
        """The source id of each wanted person -> their email key.

        Built on first use: the planner resolves groups from its own matches, so only
        explain, tests and a planner without them pay for it."""
        if self._wanted_keys is None:
            wanted = self._wanted
            self._wanted_keys = MappingProxyType(
                {person_id: key for person_id, key in self._keys.items() if key in wanted}
            )
        return self._wanted_keys

    def keys_in(self, group_id: SourceId) -> frozenset[EmailKey]:
        """The email keys of the wanted people `group_id` reaches."""
        return self._nesting.wanted_in(group_id, self.wanted_keys)

    def space(self, values: Mapping[SourceId, object]) -> MembershipSpace:
        """A space for `resolve`: each wanted person's source id -> what they stand for
        there (ids it lacks count for nothing)."""
        return MembershipSpace(self, self._nesting.space(values))

    def resolve(self, group_id: SourceId, space: MembershipSpace) -> AbstractSet[object]:
        """What the wanted people `group_id` reaches stand for in `space`.

        For a caller that asks once per group: the answer about `group_id` itself is not
        kept (the groups it nests are), and is the caller's to read, never to change."""
        if space.membership is not self:
            raise ValueError("a space resolves the groups of the membership that made it")
        return self._nesting.closure(group_id, space.inner, keep=False)


@dataclass(frozen=True, slots=True)
class MembershipSpace:
    """The values (and memo) `GroupMembership.resolve` answers in."""

    membership: GroupMembership
    inner: _Space


@paused
def desired_state(
    snapshot: SourceSnapshot, rules: MembershipRules, catalog: RoleCatalog
) -> DesiredState:
    """Apply the membership rules to a complete source snapshot."""
    people, rejected = screen(snapshot)
    person_keys = [person.email_key for person in people]
    keys = dict(zip([person.id for person in people], person_keys, strict=True))
    if len(keys) != len(people):
        # Two records share an id: each is read under the key the id's last record has.
        person_keys = [keys[person.id] for person in people]
    ambiguous, warnings = _shared_emails(people, keys)
    warnings += _rejected_warnings(rejected)

    # Rejected records' ids are people too: a group listing one must not read it as
    # a nested group.
    nesting = _Nesting(snapshot.groups, [*keys, *(r.source_id for r in rejected)])
    scope_match = _glob(rules.scope_groups)
    first_scope, best_grant = _scope_and_grants(snapshot, rules, catalog, nesting)

    wanted: dict[EmailKey, Wanted] = {}
    known: dict[EmailKey, SourceId] = {}
    out_of_scope: dict[EmailKey, str] = {}
    by_source_id: dict[SourceId, EmailKey] = {}
    # (scope group, grant) -> (role, reason), or None: decided once per distinct pair, so
    # the people sharing one share its reason string (and nobody formats it again).
    decided: dict[tuple[str | None, tuple[str, str] | None], tuple[str, str] | None] = {}
    new_wanted = tuple.__new__  # Wanted's own __new__ is Python; the tuple's is not
    for person, key in zip(people, person_keys, strict=True):
        if key in ambiguous:
            continue
        person_id = person.id
        known[key] = person_id
        by_source_id[person_id] = key
        if not person.active:
            out_of_scope[key] = "inactive in the source"
            continue
        scope_name = first_scope.get(person_id)
        if scope_match is not None and scope_name is None:
            out_of_scope[key] = "in no scope group"
            continue
        pair = (scope_name, best_grant.get(person_id))
        try:
            choice = decided[pair]
        except KeyError:
            choice = decided[pair] = _role_and_reason(rules, *pair)
        if choice is None:
            out_of_scope[key] = "no role rule matches and no default_role is set"
            continue
        role, reason = choice
        wanted[key] = new_wanted(
            Wanted, (person_id, person.email.strip(), key, role, reason, person.name)
        )

    groups, group_warnings = _desired_groups(snapshot, rules.groups, nesting, keys, wanted)
    warnings.extend(group_warnings)
    return DesiredState(
        wanted=MappingProxyType(wanted),
        known=MappingProxyType(known),
        out_of_scope=MappingProxyType(out_of_scope),
        ambiguous=frozenset(ambiguous),
        ambiguous_ids=frozenset(
            person.id for person, key in zip(people, person_keys, strict=True) if key in ambiguous
        )
        if ambiguous
        else frozenset(),
        warnings=tuple(warnings),
        by_source_id=MappingProxyType(by_source_id),
        groups=groups,
        rejected=MappingProxyType({r.source_id: r.reason for r in rejected}),
        rejected_emails=frozenset(
            normalize_email(r.email) for r in rejected if r.email and r.email.strip()
        ),
    )


def _role_and_reason(
    rules: MembershipRules, scope_name: str | None, grant: tuple[str, str] | None
) -> tuple[str, str] | None:
    """The role and reason of a person in scope through `scope_name` (None: no scope
    rules) whose best role grant is `grant`; None when no rule gives them a role."""
    if rules.roleless:
        return "", f"member of {scope_name}" if scope_name else "active in the source"
    if grant is not None:
        role, group_name = grant
        return role, f"member of {group_name}"
    if rules.default_role is not None:
        return rules.default_role, (
            f"member of {scope_name} (default role)"
            if scope_name
            else "active in the source (default role)"
        )
    return None


def _scope_and_grants(
    snapshot: SourceSnapshot, rules: MembershipRules, catalog: RoleCatalog, nesting: _Nesting
) -> tuple[dict[SourceId, str], dict[SourceId, tuple[str, str]]]:
    """Each person's first scope group by name, and their winning (role, group name): the
    highest role by the catalog's order and, among equals, the first group by name (then
    the first rule). Whole groups are written at a time (dict.fromkeys), later groups
    overriding earlier ones, so the cost is one dictionary write per membership."""
    scope_match = _glob(rules.scope_groups)
    role_matches = [(_glob([rule.group]), rule) for rule in rules.roles]
    scope_groups: list[SourceGroup] = []
    # (rank, -position, grant, group id): once sorted, the grant that wins comes last.
    grants: list[tuple[int, int, tuple[str, str], SourceId]] = []
    for group in sorted(snapshot.groups, key=lambda g: g.name):
        name = group.name.casefold()
        if scope_match is not None and scope_match.fullmatch(name):
            scope_groups.append(group)
        for pattern, rule in role_matches:
            if pattern is not None and pattern.fullmatch(name):
                rank = catalog.rank(rule.role)
                grants.append((rank, -len(grants), (rule.role, group.name), group.id))
    # Each group is resolved once here (a group both rules name is asked twice), and
    # nowhere else in this space: nothing is memoized for it beyond this function, and
    # the first group's people become the dictionary rather than being copied into it.
    resolved: dict[SourceId, AbstractSet[SourceId]] = {}

    def people_in(group_id: SourceId) -> AbstractSet[SourceId]:
        found = resolved.get(group_id)
        if found is None:
            found = resolved[group_id] = nesting.people_in(group_id, keep=False)
        return found

    first_scope: dict[SourceId, str] = {}
    for group in reversed(scope_groups):
        reached = dict.fromkeys(people_in(group.id), group.name)
        if first_scope:
            first_scope.update(reached)
        else:
            first_scope = reached
    best_grant: dict[SourceId, tuple[str, str]] = {}
    for _, _, grant, group_id in sorted(grants):
        granted = dict.fromkeys(people_in(group_id), grant)
        if best_grant:
            best_grant.update(granted)
        else:
            best_grant = granted
    return first_scope, best_grant


def _shared_emails(
    people: Sequence[SourcePerson], keys: Mapping[SourceId, EmailKey]
) -> tuple[set[EmailKey], list[str]]:
    """Emails several source people share, and a warning naming each."""
    if len(set(keys.values())) == len(people):
        return set(), []  # as many distinct emails as people: nobody shares one
    by_email: dict[EmailKey, list[SourceId]] = defaultdict(list)
    for person in people:
        by_email[keys[person.id]].append(person.id)
    ambiguous = {key for key, ids in by_email.items() if len(ids) > 1}
    warnings = [
        f"{len(by_email[key])} source people share the email {key!r} "
        f"({', '.join(sorted(by_email[key]))}): none of them is acted on"
        for key in sorted(ambiguous)
    ]
    return ambiguous, warnings


def _rejected_warnings(rejected: Sequence[RejectedRecord]) -> list[str]:
    """One warning per source record orgsync cannot act on, naming its id."""
    return [
        f"source record {record.source_id!r} rejected: {record.reason}; nothing is done "
        "about this person (not invited, and a member linked to them is left as is)"
        for record in sorted(rejected, key=lambda r: r.source_id)
    ]


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
    membership = GroupMembership(nesting, keys, wanted)
    patterns = [(_glob([rule.source]), rule) for rule in rules]
    chosen: list[DesiredGroup] = []
    for group in sorted(snapshot.groups, key=lambda g: (g.name, g.id)):
        folded = group.name.casefold()
        for index, (pattern, rule) in enumerate(patterns):
            if pattern is not None and pattern.fullmatch(folded):
                name = rule.target_name(group.name)
                chosen.append(
                    DesiredGroup(group.id, group.name, name, rule.roles, index, membership)
                )
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


# --------------------------------------------------------------------------- provenance


def paths_to(snapshot: SourceSnapshot, person_id: SourceId) -> Mapping[SourceId, tuple[str, ...]]:
    """Every IdP group `person_id` belongs to, directly or through nested groups, with one
    shortest path: the names of the groups from that group down to a group listing them.

    For `orgsync explain` (one person), never for planning: it walks the whole directory
    once. Nesting is read as `desired_state` reads it (`_Nesting`): a member id that is a
    person (a rejected record's too) is that person, one that is only a group's id is a
    nested group, and `subgroups` are nested groups whatever their id.
    """
    groups = {g.id: g for g in snapshot.groups}
    people = {p.id for p in snapshot.people} | {r.source_id for r in snapshot.rejected}
    parents: dict[SourceId, list[SourceId]] = defaultdict(list)
    found: dict[SourceId, tuple[str, ...]] = {}
    queue: list[SourceId] = []
    for group in groups.values():
        nested = [m for m in group.members if m in groups and m not in people]
        for child in (*nested, *group.subgroups):
            parents[child].append(group.id)
        if person_id in group.members and person_id in people:
            found[group.id] = (group.name,)
            queue.append(group.id)
    # Breadth first over "is nested in": each group is reached by a shortest path.
    while queue:
        following: list[SourceId] = []
        for child in sorted(queue):
            for parent in sorted(parents.get(child, ())):
                if parent not in found:
                    found[parent] = (groups[parent].name, *found[child])
                    following.append(parent)
        queue = following
    return MappingProxyType(found)
