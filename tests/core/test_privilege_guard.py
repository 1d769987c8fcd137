"""The privilege guard of the safety gate (`core.safety._privilege_guards`), one function
at a time: grants of a privileged role are counted whatever their kind (invitation, user
creation, role raise), lowerings and plain roles never are, a held user's group
memberships wait with it, and `--allow-additions N` lifts it for at most N."""

from __future__ import annotations

from datetime import UTC, datetime

from orgsync.core.plan import AddGroupMember, CreateUser, Invite, Plan, SetRole
from orgsync.core.safety import Allowances, Population, SafetyLimits, gate

ADMIN = frozenset({"org_admin"})
LIMITS = SafetyLimits(max_privilege_grants=2)


def _plan(*operations: object) -> Plan:
    return Plan.build(
        target="t", generated_at=datetime(2026, 1, 1, tzinfo=UTC), operations=list(operations)
    )


def _raise(i: int, role: str = "org_admin", *, up: bool = True) -> SetRole:
    return SetRole(
        email=f"p{i}@x.com", user_id=f"u{i}", role=role, previous_role="x", raise_=up, reason="r"
    )


def test_three_grants_of_every_kind_are_held_with_the_membership_of_the_held_user() -> None:
    plan = _plan(
        _raise(1),
        Invite(email="p2@x.com", role="org_admin", source_id="s2", reason="r"),
        CreateUser(email="p3@x.com", role="org_admin", source_id="s3", reason="r"),
        AddGroupMember(group="eng", email="p3@x.com", user_id=None, reason="r"),
        Invite(email="p4@x.com", role="org_member", source_id="s4", reason="r"),
        _raise(5, up=False),
    )
    gated = gate(plan, population=Population(10), limits=LIMITS, privileged=ADMIN)
    held = {(h.operation.op, h.operation.email) for h in gated.held}
    assert held == {
        ("set_role", "p1@x.com"),
        ("invite", "p2@x.com"),
        ("create_user", "p3@x.com"),
        ("add_group_member", "p3@x.com"),
    }
    assert {h.guard for h in gated.held} == {
        "3 grants of a privileged role (org_admin) exceed safety.max_privilege_grants = 2"
    }
    assert {op.email for op in gated.operations} == {"p4@x.com", "p5@x.com"}


def test_within_the_limit_or_allowed_nothing_is_held() -> None:
    two = _plan(_raise(1), _raise(2))
    assert gate(two, population=Population(10), limits=LIMITS, privileged=ADMIN).held == ()
    three = _plan(_raise(1), _raise(2), _raise(3))
    allowed = gate(
        three,
        population=Population(10),
        limits=LIMITS,
        allowances=Allowances(additions=3),
        privileged=ADMIN,
    )
    assert allowed.held == ()
    short = gate(
        three,
        population=Population(10),
        limits=LIMITS,
        allowances=Allowances(additions=2),
        privileged=ADMIN,
    )
    assert len(short.held) == 3
    assert short.held[0].guard.endswith("(more than --allow-additions 2)")


def test_a_target_without_privileged_roles_is_not_guarded() -> None:
    three = _plan(_raise(1), _raise(2), _raise(3))
    assert gate(three, population=Population(10), limits=LIMITS).held == ()
