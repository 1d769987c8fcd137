"""Builders and an in-memory organization for tests of the pure core."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from orgsync.core.model import (
    Capabilities,
    InviteStatus,
    Memory,
    RoleCatalog,
    SourceGroup,
    SourceId,
    SourcePerson,
    SourceSnapshot,
    TargetGroup,
    TargetInvite,
    TargetMember,
    TargetSnapshot,
    normalize_email,
)
from orgsync.core.plan import (
    AddGroupMember,
    AdoptGroup,
    AssignGroupRole,
    CreateGroup,
    CreateUser,
    DeleteGroup,
    Invite,
    Plan,
    RemoveGroupMember,
    RemoveMember,
    RenameGroup,
    RevokeInvite,
    SetRole,
    SuspendMember,
    UnassignGroupRole,
    UpdateUser,
)
from orgsync.core.planner import PlanInput, RemovalPolicy, plan
from orgsync.core.rules import DesiredState, GroupRule, MembershipRules, RoleRule, desired_state

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CATALOG = RoleCatalog(
    order=("reader", "owner"),
    privileged=frozenset({"owner"}),
    invitable=frozenset({"reader", "owner"}),
    assignable={"owner": "role-owner", "reader": "role-reader", "ml-engineer": "role-ml"},
)
OPENAI = Capabilities(invites=True, roles=True, groups=True)


def person(pid: str, email: str, *, active: bool = True, name: str = "") -> SourcePerson:
    return SourcePerson(id=SourceId(pid), email=email, name=name, active=active)


def group(gid: str, name: str, *members: str) -> SourceGroup:
    return SourceGroup(id=SourceId(gid), name=name, members=tuple(SourceId(m) for m in members))


def target_group(
    gid: str,
    name: str,
    members: tuple[str, ...] = (),
    roles: tuple[str, ...] = (),
    *,
    scim: bool = False,
) -> TargetGroup:
    return TargetGroup(gid, name, frozenset(members), frozenset(roles), is_scim_managed=scim)


def member(mid: str, email: str | None, role: str = "reader", **flags: bool) -> TargetMember:
    return TargetMember(id=mid, email=email, role=role, **flags)


def invite(
    iid: str,
    email: str,
    role: str = "reader",
    status: InviteStatus = InviteStatus.PENDING,
    expires_at: datetime | None = None,
) -> TargetInvite:
    return TargetInvite(id=iid, email=email, role=role, status=status, expires_at=expires_at)


def org_with_groups(
    *groups: TargetGroup, members: tuple[TargetMember, ...] = (), key_owner: str | None = None
) -> TargetSnapshot:
    return TargetSnapshot(
        members=members, invites=(), roles=CATALOG, key_owner_id=key_owner, groups=groups
    )


def org(
    *members: TargetMember, invites: tuple[TargetInvite, ...] = (), key_owner: str | None = None
) -> TargetSnapshot:
    return TargetSnapshot(
        members=tuple(members), invites=invites, roles=CATALOG, key_owner_id=key_owner
    )


def desired_for(
    source: SourceSnapshot,
    observed: TargetSnapshot,
    *,
    rules: MembershipRules | None = None,
    capabilities: Capabilities = OPENAI,
) -> DesiredState:
    """What `make_plan` plans towards: the test rules (or `rules`) applied to `source`."""
    rules = rules or MembershipRules(
        scope_groups=("openai-*",),
        roles=(RoleRule("openai-owners", "owner"),),
        default_role="reader",
        groups=(GroupRule("team-*", "{source}", ("ml-engineer",)),),
    )
    if not capabilities.roles:
        rules = replace(rules, roles=(), default_role=None, roleless=True)
    return desired_state(source, rules, observed.roles)


def make_plan(
    source: SourceSnapshot,
    observed: TargetSnapshot,
    *,
    rules: MembershipRules | None = None,
    memory: Memory | None = None,
    policy: RemovalPolicy | None = None,
    capabilities: Capabilities = OPENAI,
    now: datetime = NOW,
) -> Plan:
    desired = desired_for(source, observed, rules=rules, capabilities=capabilities)
    return plan(
        PlanInput(
            target="t",
            desired=desired,
            observed=observed,
            memory=memory or Memory(),
            policy=policy or RemovalPolicy(),
            capabilities=capabilities,
            now=now,
        )
    )


class InMemoryOrg:
    """Applies plan operations the way the real APIs would, to a TargetSnapshot."""

    def __init__(self, snapshot: TargetSnapshot, memory: Memory | None = None) -> None:
        memory = memory or Memory()
        self.members = {m.id: m for m in snapshot.members}
        self.invites = {i.id: i for i in snapshot.invites}
        self.groups = {g.id: g for g in snapshot.groups}
        self.roles = snapshot.roles
        self.key_owner = snapshot.key_owner_id
        self.managed = set(memory.managed)
        self.links = dict(memory.links)
        self.owned = dict(memory.owned_groups)
        self.created_users: dict[str, str] = {}
        self.counter = 0

    def apply(self, operations: tuple[object, ...]) -> None:
        created: dict[str, str] = {}
        for op in operations:
            self.counter += 1
            if isinstance(
                op,
                Invite
                | CreateUser
                | UpdateUser
                | RevokeInvite
                | SetRole
                | RemoveMember
                | SuspendMember,
            ):
                self.apply_member(op)
                continue
            assert isinstance(
                op,
                CreateGroup
                | AdoptGroup
                | RenameGroup
                | DeleteGroup
                | AddGroupMember
                | RemoveGroupMember
                | AssignGroupRole
                | UnassignGroupRole,
            ), op
            if isinstance(op, CreateGroup):
                group_id = f"grp-new-{self.counter}"
                created[op.source_group_id or op.group] = group_id
                self.groups[group_id] = TargetGroup(group_id, op.group)
                self.owned[group_id] = SourceId(op.source_group_id or "")
                continue
            group_id = op.group_id or created[op.source_group_id or op.group]
            group = self.groups[group_id]
            assert not group.is_scim_managed, f"changed a SCIM-managed group: {op}"
            if isinstance(op, AdoptGroup):
                self.owned[group_id] = SourceId(op.source_group_id or "")
            elif isinstance(op, RenameGroup):
                self.groups[group_id] = replace(group, name=op.group)
            elif isinstance(op, DeleteGroup):
                del self.groups[group_id]
                del self.owned[group_id]
            elif isinstance(op, AddGroupMember):
                user_id = op.user_id or self.created_users[normalize_email(op.email)]
                assert user_id in self.members, f"added a non-member to a group: {op}"
                self.groups[group_id] = replace(group, member_ids=group.member_ids | {user_id})
            elif isinstance(op, RemoveGroupMember):
                self.groups[group_id] = replace(group, member_ids=group.member_ids - {op.user_id})
            elif isinstance(op, AssignGroupRole):
                self.groups[group_id] = replace(group, role_ids=group.role_ids | {op.role_id})
            else:
                self.groups[group_id] = replace(group, role_ids=group.role_ids - {op.role_id})

    def apply_member(
        self,
        op: Invite
        | CreateUser
        | UpdateUser
        | RevokeInvite
        | SetRole
        | RemoveMember
        | SuspendMember,
    ) -> None:
        if isinstance(op, Invite):
            if op.replaces_invite_id:
                self.invites.pop(op.replaces_invite_id, None)
            new_id = f"inv-new-{self.counter}"
            self.invites[new_id] = invite(
                new_id, op.email, op.role, expires_at=NOW + timedelta(days=7)
            )
            self.managed.add(normalize_email(op.email))
        elif isinstance(op, CreateUser):
            assert not any(
                m.email_key == normalize_email(op.email) for m in self.members.values()
            ), op
            new_id = f"user-new-{self.counter}"
            self.members[new_id] = TargetMember(new_id, op.email, op.role)
            self.created_users[normalize_email(op.email)] = new_id
            self.managed.add(normalize_email(op.email))
        elif isinstance(op, UpdateUser):
            renamed = op.previous_email is not None
            email = op.email if renamed else self.members[op.user_id].email
            self.members[op.user_id] = replace(
                self.members[op.user_id], active=op.active, email=email
            )
        elif isinstance(op, RevokeInvite):
            del self.invites[op.invite_id]
            self.managed.discard(normalize_email(op.email))
        elif isinstance(op, SetRole):
            self.members[op.user_id] = replace(self.members[op.user_id], role=op.role)
        elif isinstance(op, SuspendMember):
            assert self.members[op.user_id].active, f"suspended twice: {op}"
            self.members[op.user_id] = replace(self.members[op.user_id], active=False)
        else:
            del self.members[op.user_id]
            self.managed.discard(normalize_email(op.email))
            # The API drops a removed user from every group.
            for group_id, group in self.groups.items():
                self.groups[group_id] = replace(group, member_ids=group.member_ids - {op.user_id})

    def snapshot(self) -> TargetSnapshot:
        return TargetSnapshot(
            members=tuple(self.members.values()),
            invites=tuple(self.invites.values()),
            roles=self.roles,
            key_owner_id=self.key_owner,
            groups=tuple(self.groups.values()),
        )

    def memory(self) -> Memory:
        return Memory(managed=frozenset(self.managed), links=self.links, owned_groups=self.owned)


def snapshot(*people: SourcePerson, groups: tuple[SourceGroup, ...] = ()) -> SourceSnapshot:
    return SourceSnapshot(people=tuple(people), groups=groups)
