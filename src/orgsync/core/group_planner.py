"""Planning target groups: create, adopt, rename, delete, members and role assignments.

Pure. Owns the group ownership rules (docs/reference.md "Ownership"): orgsync changes only
groups in its ledger (created, or adopted by exact name on first sight) and never a group
the target marks as managed elsewhere (`is_scim_managed`); a rule whose name collides with
such a group, or with a group owned for another IdP group, is reported as a warning. People
who are only invited cannot join a group yet (the API wants a user id): those memberships
are listed as waiting, not planned.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import TypedDict, cast

from orgsync.core.model import EmailKey, SourceId, TargetGroup, TargetMember, TargetSnapshot
from orgsync.core.plan import (
    AddGroupMember,
    AdoptGroup,
    AssignGroupRole,
    CreateGroup,
    DeleteGroup,
    Operation,
    RemoveGroupMember,
    RenameGroup,
    UnassignGroupRole,
    Waiting,
)
from orgsync.core.rules import DesiredGroup, MembershipSpace


class _Common(TypedDict):
    """The fields every operation on one group shares."""

    group: str
    group_id: str | None
    source_group_id: str | None


class NotAMember:
    """What a wanted person who is no member of the organization (yet: invited, or created
    by this plan) stands for among user ids: one per person, carrying their email key, so
    that a group resolved to user ids also says who of it still has to join (it can never
    be among a group's current members, so it always lands among the missing)."""

    __slots__ = ("key",)

    def __init__(self, key: EmailKey) -> None:
        self.key = key


class GroupPlanner:
    """Plans every group operation of one target.

    `member_ids` maps the email of each wanted person who already is a member to their
    user id; `untouchable` says why a member must never be removed from a group (None if
    they may be). The planner also hands over what it indexed already, so that nothing is
    indexed twice at 100k people: `members_by_id` (the organization's members by id),
    `key_of_user` (`member_ids` inverted) and `user_of_source` (each wanted person's source
    id -> their user id, or their `NotAMember`).
    """

    def __init__(
        self,
        observed: TargetSnapshot,
        owned: Mapping[str, SourceId],
        member_ids: Mapping[EmailKey, str],
        untouchable: Callable[[TargetMember], str | None],
        being_created: frozenset[EmailKey] = frozenset(),
        *,
        members_by_id: Mapping[str, TargetMember] | None = None,
        key_of_user: Mapping[str, EmailKey] | None = None,
        user_of_source: Mapping[SourceId, object] | None = None,
    ) -> None:
        self.observed = observed
        self.owned = owned
        self.member_ids = member_ids
        self.untouchable = untouchable
        self.being_created = being_created
        self.operations: list[Operation] = []
        self.waiting: list[Waiting] = []
        self.warnings: list[str] = []
        self.groups_by_id = {g.id: g for g in observed.groups}
        self.groups_by_name: dict[str, list[TargetGroup]] = defaultdict(list)
        for group in sorted(observed.groups, key=lambda g: g.id):
            self.groups_by_name[group.name.casefold()].append(group)
        # One group per IdP group; should the ledger hold several (a crash between a
        # create and its journal entry, then an adoption), a changeable one is preferred
        # and the others are free for other rules or deletion.
        self.owned_by_source: dict[SourceId, str] = {}
        present = [(g.is_scim_managed, g.id) for g in observed.groups if g.id in owned]
        for _, group_id in sorted(present):
            self.owned_by_source.setdefault(owned[group_id], group_id)
        self.members_by_id = (
            members_by_id if members_by_id is not None else {m.id: m for m in observed.members}
        )
        # Each member's wanted person, when no member stands for two people (the planner
        # matches one member per person, but an email and a stale link can meet).
        if key_of_user is None:
            key_of_user = {user_id: key for key, user_id in member_ids.items()}
        self.key_of_user = key_of_user if len(key_of_user) == len(member_ids) else None
        self.user_of_source = user_of_source
        catalog = observed.roles
        self.role_names = {role_id: name for name, role_id in catalog.assignable.items()}
        self.kept: set[str] = set()
        self.vacating: set[str] = set()
        self.desired_sources: set[SourceId] = set()
        self._space: MembershipSpace | None = None

    def plan(self, desired: tuple[DesiredGroup, ...]) -> None:
        # Names owned groups give up by being renamed this run are free for other rules.
        final_names = {d.source_id: d.name.casefold() for d in desired}
        self.desired_sources = set(final_names)
        self.vacating = {
            group_id
            for source_id, group_id in self.owned_by_source.items()
            if final_names.get(source_id, self.groups_by_id[group_id].name.casefold())
            != self.groups_by_id[group_id].name.casefold()
        }
        for group in desired:
            self.plan_group(group)
        for group_id, source_id in sorted(self.owned.items()):
            target = self.groups_by_id.get(group_id)
            if target is not None and group_id not in self.kept and not target.is_scim_managed:
                self.plan_deletion(target, source_id)

    # ------------------------------------------------------------------ one desired group

    def find_or_claim(self, desired: DesiredGroup) -> tuple[TargetGroup | None, bool]:
        """The target group mirroring `desired`, and whether it may be changed."""
        owned_id = self.owned_by_source.get(desired.source_id)
        if owned_id is not None:
            target = self.groups_by_id[owned_id]
            if target.is_scim_managed:
                self.warnings.append(
                    f"group {target.name!r} is now managed by another provisioner "
                    "(is_scim_managed): left alone"
                )
                return target, False
            return target, True
        candidates = [
            g
            for g in self.groups_by_name.get(desired.name.casefold(), [])
            if g.id not in self.vacating
        ]
        foreign = [g for g in candidates if g.is_scim_managed]
        # A group owned for an IdP group that no rule selects any more (deleted and
        # recreated under a new id, say) is re-adopted, not deleted and created again.
        taken = [
            g
            for g in candidates
            if self.owned_by_source.get(self.owned.get(g.id, SourceId(""))) == g.id
            and self.owned[g.id] in self.desired_sources
        ]
        if foreign or taken:
            why = (
                "managed by another provisioner (is_scim_managed)"
                if foreign
                else "owned by orgsync for another IdP group"
            )
            self.warnings.append(
                f"rule targets.groups[{desired.rule}] names group {desired.name!r} for IdP "
                f"group {desired.source_name!r}, but that group is {why}: left alone"
            )
            return None, False
        ours = [g for g in candidates if g.id in self.owned]
        if ours:
            # A group orgsync already owns wins over strangers' namesakes; among several of
            # its own, the first is kept and the rest are deleted as orphans.
            candidates = ours[:1]
        if len(candidates) > 1:
            self.warnings.append(
                f"rule targets.groups[{desired.rule}] names group {desired.name!r}, but "
                f"{len(candidates)} unowned groups have that name: none is adopted"
            )
            return None, False
        if candidates and not ours:
            target = candidates[0]
            catalog = self.observed.roles
            given = {catalog.assignable.get(name) for name in desired.roles}
            beyond = sorted(self.role_names.get(r, r) for r in target.role_ids - given)
            if beyond:
                # Adopting would put the IdP group's people into a group that grants more
                # than the rule does, before the extra roles are unassigned (additions
                # apply first, and the gate may hold the unassignment): whoever can create
                # an IdP group the rule selects, named after a privileged group made by
                # hand, would get its roles, and its members would be taken out.
                self.warnings.append(
                    f"rule targets.groups[{desired.rule}] names existing group "
                    f"{target.name!r} for IdP group {desired.source_name!r}, but that group "
                    f"holds roles the rule does not give ({', '.join(beyond)}): not adopted, "
                    "left alone (give the rule those roles, or take them off the group, to "
                    "adopt it)"
                )
                return None, False
        if candidates:
            target = candidates[0]
            self.operations.append(
                AdoptGroup(
                    group=target.name,
                    group_id=target.id,
                    source_group_id=desired.source_id,
                    reason=f"rule targets.groups[{desired.rule}] names this existing group "
                    f"exactly (IdP group {desired.source_name!r}): adopting it",
                )
            )
            return target, True
        self.operations.append(
            CreateGroup(
                group=desired.name,
                source_group_id=desired.source_id,
                reason=f"IdP group {desired.source_name!r} (rule targets.groups[{desired.rule}])",
            )
        )
        return None, True

    def plan_group(self, desired: DesiredGroup) -> None:
        target, changeable = self.find_or_claim(desired)
        if target is not None:
            self.kept.add(target.id)
        if not changeable:
            return
        group_id = target.id if target is not None else None
        label = desired.name
        namesakes = (
            [
                g
                for g in self.groups_by_name.get(desired.name.casefold(), [])
                if g.id != target.id and g.id not in self.owned
            ]
            if target is not None and target.name != desired.name
            else []
        )
        if target is not None and namesakes:
            # A group orgsync does not own (made by hand, another provisioner's) has that
            # name: renaming into it would leave two groups of one name, one of them
            # orgsync's, and whoever can rename IdP groups could so dress an ordinary group
            # as a privileged one (or the target refuses the name on every run).
            label = target.name
            self.warnings.append(
                f"IdP group {desired.source_id} is now named {desired.source_name!r}, but "
                f"group {namesakes[0].id}, which orgsync does not own, is named "
                f"{desired.name!r}: group {target.name!r} keeps its name"
            )
        elif target is not None and target.name != desired.name:
            self.operations.append(
                RenameGroup(
                    group=desired.name,
                    previous_name=target.name,
                    group_id=group_id,
                    source_group_id=desired.source_id,
                    reason=f"IdP group {desired.source_id} is now named {desired.source_name!r}",
                )
            )
        common: _Common = {
            "group": label,
            "group_id": group_id,
            "source_group_id": desired.source_id,
        }
        self.plan_members(desired, target, common)
        self.plan_roles(desired, target, common)

    def plan_members(
        self, desired: DesiredGroup, target: TargetGroup | None, common: _Common
    ) -> None:
        current = target.member_ids if target is not None else frozenset()
        member_ids = self.member_ids
        key_of_user = self.key_of_user
        looked_at: set[EmailKey] = set()
        if key_of_user is None:
            # Two people matched one member: a user id no longer says whose membership it
            # is, so every wanted person of the group is looked at by email.
            by_email = set(map(member_ids.get, desired.members))
            by_email.discard(None)
            found: AbstractSet[object] = cast(set[object], by_email)
            looked_at.update(desired.members)
        else:
            # The group resolved straight to user ids (and a `NotAMember` for each of its
            # people who is no member yet): one look-up per membership.
            found = desired.membership.resolve(desired.source_id, self.user_space(desired))
        missing = found - current
        if key_of_user is not None:
            for user in missing:
                looked_at.add(
                    user.key if isinstance(user, NotAMember) else key_of_user[cast(str, user)]
                )
        for key in sorted(looked_at):
            user_id = member_ids.get(key)
            if user_id is None and key in self.being_created:
                self.operations.append(
                    AddGroupMember(
                        **common,
                        email=key,
                        user_id=None,
                        reason=f"member of IdP group {desired.source_name!r} (user created "
                        "by this plan)",
                    )
                )
                continue
            if user_id is None:
                self.waiting.append(
                    Waiting(
                        op="add_group_member",
                        email=key,
                        group=desired.name,
                        reason=f"not a member yet (invited): joins {desired.name!r} on acceptance",
                    )
                )
                continue
            if user_id not in current:
                self.operations.append(
                    AddGroupMember(
                        **common,
                        email=key,
                        user_id=user_id,
                        reason=f"member of IdP group {desired.source_name!r}",
                    )
                )
        # The group holds len(found) - len(missing) wanted members (every `NotAMember` is
        # missing): anyone beyond them is extra (in a group already in sync, no second pass
        # over its members).
        extra = current - found if len(current) > len(found) - len(missing) else ()
        for user_id in sorted(extra):
            self.plan_member_removal(
                user_id, common, f"not a member of IdP group {desired.source_name!r}"
            )

    def user_space(self, desired: DesiredGroup) -> MembershipSpace:
        """Each wanted person's source id -> their user id, or their `NotAMember`; one
        space per desired state (every group of one shares its membership)."""
        membership = desired.membership
        if self._space is None or self._space.membership is not membership:
            user_of_source = self.user_of_source
            if user_of_source is None:
                member_ids = self.member_ids
                user_of_source = {
                    source_id: NotAMember(key) if user_id is None else user_id
                    for source_id, key in membership.wanted_keys.items()
                    for user_id in (member_ids.get(key),)
                }
            self._space = membership.space(user_of_source)
        return self._space

    def plan_member_removal(
        self, user_id: str, common: _Common, reason: str, *, deleting: bool = False
    ) -> None:
        member = self.members_by_id.get(user_id)
        label = (member.email if member else None) or user_id
        if member is not None:
            blocked = self.untouchable(member)
            if blocked is not None:
                if not deleting:  # a deleted group takes them out with it; nothing to say
                    self.warnings.append(
                        f"{label}: would leave group {common['group']!r}, but they are "
                        f"{blocked}; left in it"
                    )
                return
        self.operations.append(
            RemoveGroupMember(**common, email=label, user_id=user_id, reason=reason)
        )

    def plan_roles(
        self, desired: DesiredGroup, target: TargetGroup | None, common: _Common
    ) -> None:
        catalog = self.observed.roles
        wanted: dict[str, str] = {}
        for name in desired.roles:
            role_id = catalog.assignable.get(name)
            if role_id is None:
                self.warnings.append(
                    f"rule targets.groups[{desired.rule}]: role {name!r} is not in the "
                    "target's role catalog; not assigned"
                )
                continue
            wanted[role_id] = name
        current = target.role_ids if target is not None else frozenset()
        for role_id in sorted(set(wanted) - current):
            self.operations.append(
                AssignGroupRole(
                    **common,
                    role=wanted[role_id],
                    role_id=role_id,
                    reason=f"rule targets.groups[{desired.rule}] gives it {wanted[role_id]!r}",
                )
            )
        self.plan_unassignments(
            current, set(wanted), common, f"not in rule targets.groups[{desired.rule}].roles"
        )

    def plan_unassignments(
        self, current: frozenset[str], keep: set[str], common: _Common, reason: str
    ) -> None:
        for role_id in sorted(current - keep):
            self.operations.append(
                UnassignGroupRole(
                    **common,
                    role=self.role_names.get(role_id, role_id),
                    role_id=role_id,
                    reason=reason,
                )
            )

    # ------------------------------------------------------------------ groups that go

    def plan_deletion(self, target: TargetGroup, source_id: SourceId) -> None:
        common: _Common = {
            "group": target.name,
            "group_id": target.id,
            "source_group_id": source_id,
        }
        reason = f"its IdP group {source_id} is gone or no rule selects it"
        for user_id in sorted(target.member_ids):
            self.plan_member_removal(
                user_id, common, f"{reason}; emptied before deletion", deleting=True
            )
        self.plan_unassignments(target.role_ids, set(), common, f"{reason}; before deletion")
        self.operations.append(DeleteGroup(**common, reason=reason))
