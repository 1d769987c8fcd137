"""`whole_plan_needed`: when a targeted slice (a webhook naming a few people) must defer to
a whole organization's plan, so that no guard a full pass applies is passed a few people
at a time. The daemon-level attempts are in tests/daemon/test_webhook_guards_redteam.py;
these pin the rule on the cases a real target there cannot show cheaply (a catalog with a
privileged role below the top, as Keycard's `org_admin`)."""

from __future__ import annotations

from dataclasses import replace

from orgsync.core.model import EmailKey, Memory, RoleCatalog, SourceId, TargetSnapshot
from orgsync.core.rules import MembershipRules, RoleRule, desired_state
from orgsync.core.safety import SafetyLimits
from orgsync.core.scope import Subjects, restrict, whole_plan_needed
from tests.coremodels import group, member, person, snapshot

CATALOG = RoleCatalog(
    order=("member", "org_admin", "owner"), privileged=frozenset({"org_admin", "owner"})
)
RULES = MembershipRules(
    scope_groups=("app-*",),
    roles=(RoleRule("app-admins", "org_admin"),),
    default_role="member",
)
LIMITS = SafetyLimits(max_removals=3, max_removal_ratio=1.0, max_privilege_grants=3)


def people(count: int, *, admins: int = 0, inactive: int = 0):  # type: ignore[no-untyped-def]
    everyone = [person(f"p{i}", f"p{i}@x.com", active=i >= inactive) for i in range(count)]
    users = group("u", "app-users", *(p.id for p in everyone))
    admin_group = group("a", "app-admins", *(p.id for p in everyone[:admins]))
    return snapshot(*everyone, groups=(users, admin_group))


def organization(count: int, *, admins: int = 0) -> TargetSnapshot:
    members = tuple(
        member(f"m{i}", f"p{i}@x.com", "org_admin" if i < admins else "member")
        for i in range(count)
    )
    return TargetSnapshot(members=members, invites=(), roles=CATALOG)


def linked(count: int) -> Memory:
    return Memory(
        managed=frozenset(EmailKey(f"p{i}@x.com") for i in range(count)),
        links={SourceId(f"p{i}"): f"m{i}" for i in range(count)},
    )


def why(source, observed: TargetSnapshot, memory: Memory, *named: str, **flags: bool):  # type: ignore[no-untyped-def]
    desired = desired_state(source, RULES, CATALOG)
    scoped = restrict(desired, observed, memory, Subjects.of(emails=named))
    assert scoped is not None
    return whole_plan_needed(scoped, memory, desired, LIMITS, **flags)


def test_lowering_an_admin_below_the_top_role_defers_to_a_whole_plan() -> None:
    """A rule change drops 10 org_admins to member: a full pass counts 10 lowerings as
    removals and holds them (max_removals = 3). A webhook naming one of them saw one."""
    reason = why(people(12), organization(12, admins=10), linked(12), "p1@x.com")
    assert reason == "a named person's role is lowered"
    assert why(people(12), organization(12, admins=10), linked(12), "p1@x.com",
               judge_removals=False) is None  # fmt: skip


def test_granting_past_the_limit_defers_and_within_it_does_not() -> None:
    many = why(people(12, admins=8), organization(12), linked(12), "p1@x.com")
    assert many == "a named person is granted a privileged role"
    few = why(people(12, admins=2), organization(12), linked(12), "p1@x.com")
    assert few is None


def test_removing_while_many_are_out_of_scope_defers_and_one_leaver_does_not() -> None:
    many = why(people(12, inactive=6), organization(12), linked(12), "p1@x.com")
    assert many is not None and "no longer wants" in many
    one = why(people(12, inactive=1), organization(12), linked(12), "p0@x.com")
    assert one is None


def test_a_newcomer_alone_is_planned_in_the_slice() -> None:
    source = people(13)
    observed = organization(12)
    assert why(source, observed, linked(12), "p12@x.com") is None
    limits = replace(LIMITS, max_additions=0)
    desired = desired_state(source, RULES, CATALOG)
    scoped = restrict(desired, observed, linked(12), Subjects.of(emails=["p12@x.com"]))
    assert scoped is not None
    assert "newcomers" in (whole_plan_needed(scoped, linked(12), desired, limits) or "")
