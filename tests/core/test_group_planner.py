"""Group rules: create, adopt, rename, delete, members, roles, and what is never touched."""

from __future__ import annotations

from orgsync.core.model import Memory, SourceId
from orgsync.core.plan import Phase, Plan
from orgsync.core.rules import GroupRule, MembershipRules, RoleRule
from orgsync.core.safety import Population, SafetyLimits, gate
from tests.coremodels import (
    group,
    make_plan,
    member,
    org_with_groups,
    person,
    snapshot,
    target_group,
)

ADA, BOB = person("1", "ada@x.com"), person("2", "bob@x.com")
MEMBERS = (member("u1", "ada@x.com"), member("u2", "bob@x.com"))


def source(*team: str, team_name: str = "team-ml", team_id: str = "t1"):  # type: ignore[no-untyped-def]
    return snapshot(
        ADA,
        BOB,
        groups=(group("g", "openai-users", "1", "2"), group(team_id, team_name, *team)),
    )


def ops(plan: Plan) -> list[tuple[str, str]]:
    return [(op.op, op.detail or op.subject) for op in plan.operations]


def owned(**groups: str) -> Memory:
    return Memory(owned_groups={gid: SourceId(src) for gid, src in groups.items()})


def test_a_new_idp_group_is_created_with_members_and_roles() -> None:
    plan = make_plan(source("1", "2"), org_with_groups(members=MEMBERS))
    assert ops(plan) == [
        ("create_group", "group team-ml"),
        ("add_group_member", "ada@x.com"),
        ("add_group_member", "bob@x.com"),
        ("assign_group_role", "ml-engineer"),
    ]
    assert all(op.group_id is None and op.source_group_id == "t1" for op in plan.operations)  # type: ignore[union-attr]


def test_an_existing_group_with_the_exact_name_is_adopted_on_first_sight() -> None:
    existing = target_group("tg", "team-ml", ("u1",), ("role-ml",))
    plan = make_plan(source("1", "2"), org_with_groups(existing, members=MEMBERS))
    assert ops(plan) == [("adopt_group", "group team-ml"), ("add_group_member", "bob@x.com")]
    assert plan.operations[0].group_id == "tg"  # type: ignore[union-attr]


def test_a_renamed_idp_group_is_renamed_never_deleted_and_recreated() -> None:
    existing = target_group("tg", "team-ml", ("u1",), ("role-ml",))
    plan = make_plan(
        source("1", team_name="team-ai"),
        org_with_groups(existing, members=MEMBERS),
        memory=owned(tg="t1"),
    )
    assert ops(plan) == [("rename_group", "group team-ai")]
    (rename,) = plan.operations
    assert rename.phase is Phase.RENAME
    assert rename.previous_name == "team-ml"  # type: ignore[union-attr]


def test_a_group_whose_idp_group_left_is_emptied_then_deleted() -> None:
    existing = target_group("tg", "team-old", ("u1",), ("role-ml",))
    plan = make_plan(
        source("1"), org_with_groups(existing, members=MEMBERS), memory=owned(tg="gone")
    )
    kinds = [op.op for op in plan.operations if op.source_group_id == "gone"]  # type: ignore[union-attr]
    assert kinds == ["unassign_group_role", "remove_group_member", "delete_group"]
    phases = [op.phase for op in plan.operations if op.source_group_id == "gone"]  # type: ignore[union-attr]
    assert phases == sorted(phases) and phases[-1] is Phase.DELETE_GROUPS


def test_groups_nobody_owns_and_scim_managed_groups_are_never_changed() -> None:
    stranger = target_group("tx", "finance", ("u1",))
    scim = target_group("ts", "team-ml", ("u2",), scim=True)
    plan = make_plan(
        source("1"), org_with_groups(stranger, scim, members=MEMBERS), memory=owned(ts="t1")
    )
    assert all(op.group_id not in {"tx", "ts"} for op in plan.operations)  # type: ignore[union-attr]
    assert any("is_scim_managed" in w for w in plan.warnings)


def test_a_rule_colliding_with_a_scim_managed_group_warns_and_does_nothing() -> None:
    scim = target_group("ts", "team-ml", scim=True)
    plan = make_plan(source("1"), org_with_groups(scim, members=MEMBERS))
    assert plan.operations == ()
    assert any("rule targets.groups[0] names group 'team-ml'" in w for w in plan.warnings)


def test_invited_people_wait_for_acceptance_and_are_not_drift() -> None:
    plan = make_plan(source("1", "2"), org_with_groups(members=(MEMBERS[0],)))
    assert ("add_group_member", "bob@x.com") not in ops(plan)
    (waiting,) = [w for w in plan.waiting if w.group]
    assert (waiting.email, waiting.group, waiting.op) == (
        "bob@x.com",
        "team-ml",
        "add_group_member",
    )


def test_members_outside_the_idp_group_are_removed_from_owned_groups() -> None:
    existing = target_group("tg", "team-ml", ("u1", "u2"), ("role-ml",))
    plan = make_plan(source("1"), org_with_groups(existing, members=MEMBERS), memory=owned(tg="t1"))
    assert ops(plan) == [("remove_group_member", "bob@x.com")]


def test_foreign_members_stay_in_owned_groups() -> None:
    bot = member("u9", "bot@x.com", is_service_account=True)
    existing = target_group("tg", "team-ml", ("u1", "u9"), ("role-ml",))
    plan = make_plan(
        source("1"), org_with_groups(existing, members=(*MEMBERS, bot)), memory=owned(tg="t1")
    )
    assert plan.operations == ()
    assert any("bot@x.com" in w and "service account" in w for w in plan.warnings)


def test_roles_not_in_the_rule_are_unassigned_and_each_unassignment_counts() -> None:
    rules = MembershipRules(
        scope_groups=("openai-*",),
        default_role="reader",
        groups=(GroupRule("team-*", roles=("reader",)),),
    )
    existing = target_group("tg", "team-ml", ("u1",), ("role-owner", "role-reader"))
    plan = make_plan(
        source("1"), org_with_groups(existing, members=MEMBERS), rules=rules, memory=owned(tg="t1")
    )
    (unassign,) = plan.operations
    assert unassign.op == "unassign_group_role"
    assert unassign.is_removal, "every member of the group loses what the role granted"
    held = gate(plan, population=Population(2), limits=SafetyLimits(max_removals=0))
    assert [h.operation.op for h in held.held] == ["unassign_group_role"]


def test_group_member_removals_over_the_limit_are_held_per_group() -> None:
    existing = target_group("tg", "team-ml", ("u1", "u2"), ("role-ml",))
    plan = make_plan(source(), org_with_groups(existing, members=MEMBERS), memory=owned(tg="t1"))
    assert len(plan.operations) == 2
    per_group = SafetyLimits(max_removals=100, max_removal_ratio=1, max_group_member_removals=1)
    gated = gate(plan, population=Population(2), limits=per_group)
    assert gated.operations == ()
    assert (
        gated.held[0].guard
        == "2 removals from group 'team-ml' exceed safety.max_group_member_removals = 1"
    )
    roomy = SafetyLimits(max_removals=100, max_removal_ratio=1, max_group_member_removals=2)
    assert gate(plan, population=Population(2), limits=roomy) == plan


def test_a_held_group_deletion_holds_the_emptying_of_that_group() -> None:
    existing = target_group("tg", "team-old", ("u1",), ("role-ml",))
    plan = make_plan(
        source("1"), org_with_groups(existing, members=MEMBERS), memory=owned(tg="gone")
    )
    gated = gate(plan, population=Population(2), limits=SafetyLimits(max_removals=0))
    assert [op.op for op in gated.operations if op.source_group_id == "gone"] == []  # type: ignore[union-attr]
    assert {h.operation.op for h in gated.held} == {
        "delete_group",
        "remove_group_member",
        "unassign_group_role",
    }


def test_two_idp_groups_mapping_to_one_name_are_both_refused() -> None:
    rules = MembershipRules(
        scope_groups=("openai-*",),
        default_role="reader",
        groups=(GroupRule("team-*", "engineering"),),
    )
    src = snapshot(
        ADA,
        groups=(
            group("g", "openai-users", "1"),
            group("a", "team-a", "1"),
            group("b", "team-b", "1"),
        ),
    )
    plan = make_plan(src, org_with_groups(members=MEMBERS[:1]), rules=rules)
    assert plan.operations == ()
    assert any("would all become target group 'engineering'" in w for w in plan.warnings)


def test_group_operations_carry_name_and_id_in_json() -> None:
    existing = target_group("tg", "team-ml", (), ("role-ml",))
    plan = make_plan(source("1"), org_with_groups(existing, members=MEMBERS), memory=owned(tg="t1"))
    (document,) = plan.to_json()["operations"]  # type: ignore[misc]
    assert document["group"] == "team-ml"
    assert document["group_id"] == "tg"
    assert document["email"] == "ada@x.com"


def test_role_rules_still_apply_next_to_group_rules() -> None:
    rules = MembershipRules(
        scope_groups=("openai-*",), roles=(RoleRule("team-*", "owner"),), default_role="reader"
    )
    plan = make_plan(source("1"), org_with_groups(members=MEMBERS), rules=rules)
    assert [op.op for op in plan.operations] == ["set_role"]


def test_namesakes_nobody_owns_are_not_adopted_at_random() -> None:
    one, two = target_group("ta", "team-ml"), target_group("tb", "TEAM-ML")
    plan = make_plan(source("1"), org_with_groups(one, two, members=MEMBERS))
    assert plan.operations == ()
    assert any("2 unowned groups have that name: none is adopted" in w for w in plan.warnings)


def test_deleting_a_group_counts_every_access_it_takes_away() -> None:
    existing = target_group("tg", "team-old", ("u1",), ("role-owner",))
    plan = make_plan(
        source("1"), org_with_groups(existing, members=MEMBERS), memory=owned(tg="gone")
    )
    assert [op.op for op in plan.operations if op.is_removal] == [
        "unassign_group_role",
        "remove_group_member",
        "delete_group",
    ]
