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
    TargetInvite,
    TargetMember,
    TargetSnapshot,
    normalize_email,
)
from orgsync.core.plan import Invite, Plan, RemoveMember, RevokeInvite, SetRole, SuspendMember
from orgsync.core.planner import PlanInput, RemovalPolicy, plan
from orgsync.core.rules import MembershipRules, RoleRule, desired_state

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CATALOG = RoleCatalog(
    order=("reader", "owner"),
    privileged=frozenset({"owner"}),
    invitable=frozenset({"reader", "owner"}),
)
OPENAI = Capabilities(invites=True, roles=True)


def person(pid: str, email: str, *, active: bool = True, name: str = "") -> SourcePerson:
    return SourcePerson(id=SourceId(pid), email=email, name=name, active=active)


def group(gid: str, name: str, *members: str) -> SourceGroup:
    return SourceGroup(id=SourceId(gid), name=name, members=tuple(SourceId(m) for m in members))


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


def org(
    *members: TargetMember, invites: tuple[TargetInvite, ...] = (), key_owner: str | None = None
) -> TargetSnapshot:
    return TargetSnapshot(
        members=tuple(members), invites=invites, roles=CATALOG, key_owner_id=key_owner
    )


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
    rules = rules or MembershipRules(
        scope_groups=("openai-*",),
        roles=(RoleRule("openai-owners", "owner"),),
        default_role="reader",
    )
    desired = desired_state(source, rules, observed.roles)
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
        self.members = {m.id: m for m in snapshot.members}
        self.invites = {i.id: i for i in snapshot.invites}
        self.roles = snapshot.roles
        self.key_owner = snapshot.key_owner_id
        self.managed = set((memory or Memory()).managed)
        self.links = dict((memory or Memory()).links)
        self.counter = 0

    def apply(self, operations: tuple[object, ...]) -> None:
        for op in operations:
            self.counter += 1
            if isinstance(op, Invite):
                if op.replaces_invite_id:
                    self.invites.pop(op.replaces_invite_id, None)
                new_id = f"inv-new-{self.counter}"
                self.invites[new_id] = invite(
                    new_id, op.email, op.role, expires_at=NOW + timedelta(days=7)
                )
                self.managed.add(normalize_email(op.email))
            elif isinstance(op, RevokeInvite):
                del self.invites[op.invite_id]
                self.managed.discard(normalize_email(op.email))
            elif isinstance(op, SetRole):
                self.members[op.user_id] = replace(self.members[op.user_id], role=op.role)
            elif isinstance(op, RemoveMember | SuspendMember):
                del self.members[op.user_id]
                self.managed.discard(normalize_email(op.email))
            else:  # pragma: no cover - every operation kind must be handled
                raise AssertionError(op)

    def snapshot(self) -> TargetSnapshot:
        return TargetSnapshot(
            members=tuple(self.members.values()),
            invites=tuple(self.invites.values()),
            roles=self.roles,
            key_owner_id=self.key_owner,
        )

    def memory(self) -> Memory:
        return Memory(managed=frozenset(self.managed), links=self.links)


def snapshot(*people: SourcePerson, groups: tuple[SourceGroup, ...] = ()) -> SourceSnapshot:
    return SourceSnapshot(people=tuple(people), groups=groups)
