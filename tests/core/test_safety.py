"""The safety gate: one gate for every access removal, suspect sources hold additions,
ratios only for organizations large enough; truncated sources abort."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orgsync.core.errors import SourceError
from orgsync.core.model import (
    Capabilities,
    InviteStatus,
    Memory,
    RoleCatalog,
    SourceId,
    SourceSnapshot,
    TargetSnapshot,
    normalize_email,
)
from orgsync.core.planner import PlanInput, RemovalPolicy, plan
from orgsync.core.rules import GroupRule, MembershipRules
from orgsync.core.safety import (
    Allowances,
    Population,
    SafetyLimits,
    check_source_size,
    gate,
    managed_in_memory,
    managed_people,
)
from orgsync.core.scope import Subjects, restrict
from tests.coremodels import (
    NOW,
    OPENAI,
    desired_for,
    group,
    invite,
    make_plan,
    member,
    org,
    org_with_groups,
    person,
    snapshot,
    target_group,
)

SCIM = Capabilities(
    invites=False, create_users=True, roles=False, suspend=True, groups=True, change_emails=True
)


def managed(*emails: str) -> Memory:
    return Memory(managed=frozenset(normalize_email(e) for e in emails))


def leavers(count: int, *, stay: int = 1):  # type: ignore[no-untyped-def]
    people = [person(str(i), f"p{i}@x.com", active=i >= count) for i in range(count + stay)]
    observed = org(*(member(f"u{i}", f"p{i}@x.com") for i in range(count + stay)))
    return snapshot(
        *people, groups=(group("g", "openai-users", *(p.id for p in people)),)
    ), observed


def test_removals_over_max_removals_are_all_held_and_the_rest_applies() -> None:
    source, observed = leavers(3)
    source = snapshot(
        *source.people,
        person("new", "new@x.com"),
        groups=(group("g", "openai-users", *(p.id for p in source.people), "new"),),
    )
    plan = make_plan(source, observed)
    limits = SafetyLimits(max_removals=2, max_removal_ratio=1, min_managed_for_ratio=0)
    gated = gate(plan, population=Population(4), limits=limits, allowances=Allowances(additions=1))
    assert [op.op for op in gated.operations] == ["invite"]
    assert len(gated.held) == 3
    assert gated.held[0].guard == "3 removals exceed safety.max_removals = 2"


def test_ratio_guard_counts_against_managed_population() -> None:
    source, observed = leavers(2, stay=20)
    plan = make_plan(source, observed)
    limits = SafetyLimits(max_removals=100, max_removal_ratio=0.05)
    gated = gate(plan, population=Population(22), limits=limits)
    assert len(gated.held) == 2 and "(9%)" in gated.held[0].guard
    within = gate(
        plan,
        population=Population(22),
        limits=SafetyLimits(max_removals=100, max_removal_ratio=0.1),
    )
    assert not within.held


def test_allow_removals_lifts_the_guard_for_up_to_n() -> None:
    source, observed = leavers(3)
    plan = make_plan(source, observed)
    limits = SafetyLimits(max_removals=1, max_removal_ratio=1)
    assert not gate(
        plan, population=Population(4), limits=limits, allowances=Allowances(removals=3)
    ).held
    still = gate(plan, population=Population(4), limits=limits, allowances=Allowances(removals=2))
    assert len(still.held) == 3 and "--allow-removals 2" in still.held[0].guard


def test_owner_downgrades_count_as_removals() -> None:
    people = snapshot(
        person("1", "a@x.com"),
        person("2", "b@x.com"),
        groups=(group("g", "openai-users", "1", "2"),),
    )
    observed = org(
        member("u1", "a@x.com", "owner"),
        member("u2", "b@x.com", "owner"),
        member("k", "k@x.com", "owner"),
        key_owner="k",
    )
    plan = make_plan(people, observed)
    gated = gate(
        plan, population=Population(3), limits=SafetyLimits(max_removals=1, max_removal_ratio=1)
    )
    assert [h.operation.op for h in gated.held] == ["set_role", "set_role"]


def test_every_role_lowering_takes_access_away_not_only_the_privileged() -> None:
    catalog = RoleCatalog(
        order=("viewer", "member", "admin"),
        privileged=frozenset({"admin"}),
        invitable=frozenset({"viewer", "member", "admin"}),
    )
    people = snapshot(person("1", "a@x.com"), groups=(group("g", "openai-users", "1"),))
    observed = TargetSnapshot(
        members=(member("u1", "a@x.com", "member"),), invites=(), roles=catalog
    )
    rules = MembershipRules(scope_groups=("openai-*",), default_role="viewer")
    plan = make_plan(people, observed, rules=rules)
    (lowering,) = plan.operations
    assert lowering.op == "set_role" and lowering.is_removal
    assert gate(plan, population=Population(1), limits=SafetyLimits(max_removals=0)).held


def test_reader_raises_are_not_removals() -> None:
    people = snapshot(person("1", "a@x.com"), groups=(group("g", "openai-owners", "1"),))
    plan = make_plan(people, org(member("u1", "a@x.com")))
    assert not gate(plan, population=Population(1), limits=SafetyLimits(max_removals=0)).held


def test_revocations_count_as_removals() -> None:
    people = snapshot(person("1", "a@x.com", active=False))
    plan = make_plan(people, org(invites=(invite("i1", "a@x.com"),)))
    assert gate(plan, population=Population(1), limits=SafetyLimits(max_removals=0)).held


def test_a_source_with_too_few_people_aborts() -> None:
    with pytest.raises(SourceError, match=r"fewer than safety\.min_source_users = 1"):
        check_source_size(0, SafetyLimits(min_source_users=1))
    check_source_size(1, SafetyLimits(min_source_users=1))


# ---------------------------------------------------------------- item 3: one gate


TEAM_RULES = MembershipRules(
    scope_groups=("openai-*",), default_role="reader", groups=(GroupRule("team-*"),)
)


def team_org(size: int) -> tuple[TargetSnapshot, Memory]:
    members = tuple(member(f"u{i}", f"p{i}@x.com") for i in range(size))
    team = target_group("tg", "team-ml", tuple(m.id for m in members))
    memory = Memory(
        managed=frozenset(normalize_email(f"p{i}@x.com") for i in range(size)),
        owned_groups={"tg": SourceId("t")},
    )
    return org_with_groups(team, members=members), memory


def team_source(size: int, *, in_team: int) -> SourceSnapshot:
    people = [person(f"p{i}", f"p{i}@x.com") for i in range(size)]
    return snapshot(
        *people,
        groups=(
            group("g", "openai-users", *(p.id for p in people)),
            group("t", "team-ml", *(p.id for p in people[:in_team])),
        ),
    )


def test_a_truncated_group_read_empties_no_group() -> None:
    """Issue 9.3: 12 group member removals used to pass max_removals (and the per-group 50)."""
    observed, memory = team_org(12)
    plan = make_plan(team_source(12, in_team=0), observed, rules=TEAM_RULES, memory=memory)
    assert [op.op for op in plan.operations] == ["remove_group_member"] * 12
    gated = gate(plan, population=Population(12), limits=SafetyLimits())
    assert gated.operations == ()
    assert gated.held[0].guard == "12 removals exceed safety.max_removals = 10"


def test_a_truncated_source_holds_its_suspensions_and_group_removals_alike() -> None:
    """Issue 9.3: 3 of 30 people; the suspensions were held, the group removals were not."""
    observed, memory = team_org(30)
    truncated = team_source(3, in_team=3)
    plan = make_plan(
        truncated,
        observed,
        rules=TEAM_RULES,
        memory=memory,
        policy=RemovalPolicy(on_removal="suspend"),
        capabilities=SCIM,
    )
    gated = gate(plan, population=Population(30), limits=SafetyLimits())
    assert not [op for op in gated.operations if op.is_removal]
    assert sorted({h.operation.op for h in gated.held}) == ["remove_group_member", "suspend_member"]
    assert len(gated.held) == 27 * 2


def test_one_group_over_its_own_limit_is_held_even_under_the_run_limits() -> None:
    observed, memory = team_org(6)
    plan = make_plan(team_source(6, in_team=2), observed, rules=TEAM_RULES, memory=memory)
    limits = SafetyLimits(max_removals=10, max_removal_ratio=1, max_group_member_removals=3)
    gated = gate(plan, population=Population(6), limits=limits)
    assert gated.operations == ()
    assert gated.held[0].guard == (
        "4 removals from group 'team-ml' exceed safety.max_group_member_removals = 3"
    )
    lifted = gate(plan, population=Population(6), limits=limits, allowances=Allowances(removals=4))
    assert lifted == plan, "--allow-removals N accepts N removals, wherever they are"


def test_a_group_deletion_counts_every_member_it_empties() -> None:
    observed, memory = team_org(11)
    source = snapshot(
        *(person(f"p{i}", f"p{i}@x.com") for i in range(11)),
        groups=(group("g", "openai-users", *(f"p{i}" for i in range(11))),),
    )
    plan = make_plan(source, observed, rules=TEAM_RULES, memory=memory)
    gated = gate(plan, population=Population(11), limits=SafetyLimits())
    assert gated.operations == ()
    assert {h.operation.op for h in gated.held} == {"remove_group_member", "delete_group"}


# ---------------------------------------------------------------- item 4: additions


def wrong_tenant(count: int) -> tuple[SourceSnapshot, TargetSnapshot, Memory]:
    """`count` managed members, and a source holding `count` other people."""
    members = [member(f"u{i}", f"staff{i}@x.com") for i in range(count)]
    strangers = [person(f"s{i}", f"stranger{i}@elsewhere.com") for i in range(count)]
    source = snapshot(*strangers, groups=(group("g", "openai-users", *(p.id for p in strangers)),))
    return source, org(*members), managed(*(m.email or "" for m in members))


def measured(
    source: SourceSnapshot,
    observed: TargetSnapshot,
    memory: Memory,
    capabilities: Capabilities | None = None,
) -> Population:
    desired = desired_for(source, observed, capabilities=capabilities or OPENAI)
    return managed_people(observed, memory, desired)


def test_a_source_that_swaps_everyone_sends_no_invitation() -> None:
    """Issue 9.4: 100 strangers instead of the 100 members; 100 e-mails went out."""
    source, observed, memory = wrong_tenant(100)
    plan = make_plan(source, observed, memory=memory)
    population = measured(source, observed, memory)
    assert population == Population(managed=100, missing=100)
    gated = gate(plan, population=population, limits=SafetyLimits())
    assert gated.operations == ()
    invites = [h for h in gated.held if h.operation.op == "invite"]
    assert len(invites) == 100
    assert invites[0].guard == (
        "the source looks wrong (100 managed people missing from the source exceed "
        "safety.max_removals = 10): nobody new is let in until it is checked"
    )
    lifted = gate(
        plan,
        population=population,
        limits=SafetyLimits(),
        allowances=Allowances(removals=100),
    )
    assert {h.operation.op for h in lifted.held} == {"invite"}, "--allow-removals: removals only"
    both = gate(
        plan,
        population=population,
        limits=SafetyLimits(),
        allowances=Allowances(removals=100, additions=100),
    )
    assert both == plan


def test_allow_additions_lets_the_new_people_in_while_the_removals_stay_held() -> None:
    source, observed, memory = wrong_tenant(12)
    plan = make_plan(source, observed, memory=memory)
    population = measured(source, observed, memory)
    gated = gate(
        plan, population=population, limits=SafetyLimits(), allowances=Allowances(additions=12)
    )
    assert {op.op for op in gated.operations} == {"invite"}
    assert {h.operation.op for h in gated.held} == {"remove_member"}
    short = gate(
        plan, population=population, limits=SafetyLimits(), allowances=Allowances(additions=11)
    )
    assert short.operations == ()
    held_invite = next(h for h in short.held if h.operation.op == "invite")
    assert held_invite.guard.endswith("(more than --allow-additions 11)")


def test_people_waiting_out_removal_grace_make_a_source_suspect_too() -> None:
    source, observed, memory = wrong_tenant(30)
    plan = make_plan(
        source, observed, memory=memory, policy=RemovalPolicy(removal_grace=timedelta(days=7))
    )
    assert len(plan.waiting) == 30 and not [op for op in plan.operations if op.is_removal]
    gated = gate(plan, population=measured(source, observed, memory), limits=SafetyLimits())
    assert gated.operations == ()
    assert "30 managed people missing from the source" in gated.held[0].guard


def test_people_the_source_reports_out_of_scope_are_not_missing() -> None:
    """Inactive people the source still reports are a decision, not a lost read: the
    new people the same run invites are not held for them."""
    source, observed = leavers(12, stay=3)
    source = snapshot(
        *source.people,
        *(person(f"n{i}", f"new{i}@x.com") for i in range(3)),
        groups=(group("g", "openai-users", *(p.id for p in source.people), "n0", "n1", "n2"),),
    )
    memory = managed(*(f"p{i}@x.com" for i in range(15)))
    plan = make_plan(source, observed, memory=memory)
    population = measured(source, observed, memory)
    assert population == Population(managed=15, missing=0)
    gated = gate(plan, population=population, limits=SafetyLimits())
    assert {h.operation.op for h in gated.held} == {"remove_member"}
    assert [op.op for op in gated.operations] == ["invite"] * 3


def test_a_first_sync_invites_everyone_without_an_override() -> None:
    people = [person(f"p{i}", f"p{i}@x.com") for i in range(300)]
    source = snapshot(*people, groups=(group("g", "openai-users", *(p.id for p in people)),))
    observed = org(*(member(f"o{i}", f"old{i}@x.com") for i in range(40)))  # unmanaged
    plan = make_plan(source, observed)
    population = measured(source, observed, Memory())
    assert population == Population(managed=0, missing=0)
    assert gate(plan, population=population, limits=SafetyLimits()) == plan
    capped = gate(plan, population=population, limits=SafetyLimits(max_additions=100))
    assert capped.operations == () and len(capped.held) == 300
    assert capped.held[0].guard == "300 additions exceed safety.max_additions = 100"


def test_the_addition_ratio_is_of_managed_people() -> None:
    people = [person(f"p{i}", f"p{i}@x.com") for i in range(40)]
    source = snapshot(*people, groups=(group("g", "openai-users", *(p.id for p in people)),))
    observed = org(*(member(f"u{i}", f"p{i}@x.com") for i in range(25)))
    memory = managed(*(f"p{i}@x.com" for i in range(25)))
    plan = make_plan(source, observed, memory=memory)
    limits = SafetyLimits(max_addition_ratio=0.5)
    gated = gate(plan, population=managed_people(observed, memory), limits=limits)
    assert len(gated.held) == 15
    assert gated.held[0].guard == (
        "15 additions of 25 managed people (60%) exceed safety.max_addition_ratio = 0.5"
    )


def test_a_held_creation_holds_the_group_memberships_of_that_user() -> None:
    source, observed, memory = wrong_tenant(12)
    strangers_team = group("t", "team-new", *(f"s{i}" for i in range(12)))
    source = snapshot(*source.people, groups=(*source.groups, strangers_team))
    plan = make_plan(source, observed, memory=memory, capabilities=SCIM, rules=TEAM_RULES)
    gated = gate(plan, population=measured(source, observed, memory, SCIM), limits=SafetyLimits())
    assert {op.op for op in gated.operations} == {"create_group"}
    held = {h.operation.op for h in gated.held}
    assert held == {"create_user", "add_group_member", "remove_member"}


# ---------------------------------------------------------------- item 5: small organizations


def test_one_leaver_in_a_small_organization_is_not_held() -> None:
    """Issue 9.5: with max_removal_ratio = 0.05, one leaver of 19 was held."""
    source, observed = leavers(1, stay=18)
    memory = managed(*(f"p{i}@x.com" for i in range(19)))
    plan = make_plan(source, observed, memory=memory)
    population = managed_people(observed, memory)
    assert population.managed == 19
    assert gate(plan, population=population, limits=SafetyLimits()) == plan
    # From min_managed_for_ratio people on, the ratio holds 2 of 20 (10%)...
    source, observed = leavers(2, stay=18)
    plan = make_plan(source, observed, memory=memory)
    gated = gate(plan, population=Population(20), limits=SafetyLimits())
    assert len(gated.held) == 2
    assert gated.held[0].guard == (
        "2 removals of 20 managed people (10%) exceed safety.max_removal_ratio = 0.05"
    )
    # ...and below it only max_removals guards.
    assert gate(plan, population=Population(19), limits=SafetyLimits()) == plan
    assert gate(plan, population=Population(19), limits=SafetyLimits(max_removals=1)).held


def test_managed_population_counts_only_people_orgsync_manages_each_once() -> None:
    observed = org(
        member("a", "a@x.com"),  # invited by orgsync, accepted
        member("b", "b@x.com"),  # linked by source id only
        member("c", "c@x.com"),  # unmanaged
        member("bot", "bot@x.com", is_service_account=True),
        member("scim", "scim@x.com", is_scim_managed=True),
        member("k", "k@x.com", "owner"),
        invites=(
            invite("ia", "a@x.com", status=InviteStatus.ACCEPTED),
            invite("ip", "p@x.com"),  # pending, sent by orgsync
            invite("iq", "P@x.com", expires_at=NOW - timedelta(days=1)),  # same person
            invite("ix", "x@x.com"),  # pending, sent by someone else
        ),
        key_owner="k",
    )
    memory = Memory(
        managed=frozenset(
            normalize_email(e) for e in ("a@x.com", "p@x.com", "bot@x.com", "scim@x.com", "k@x.com")
        ),
        links={SourceId("sb"): "b"},
    )
    assert managed_people(observed, memory).managed == 3  # a, b, p
    assert managed_people(observed, memory, remove_unmanaged=True).managed == 5  # + c, x


def test_accepted_invitations_do_not_dilute_the_ratio() -> None:
    """Each of 25 members also has their accepted invitation: 2 leavers are 8%, not 4%."""
    source, observed = leavers(2, stay=23)
    history = tuple(invite(f"i{i}", f"p{i}@x.com", status=InviteStatus.ACCEPTED) for i in range(25))
    observed = org(*observed.members, invites=history)
    memory = managed(*(f"p{i}@x.com" for i in range(25)))
    population = managed_people(observed, memory)
    assert population.managed == 25
    gated = gate(
        make_plan(source, observed, memory=memory), population=population, limits=SafetyLimits()
    )
    assert len(gated.held) == 2 and "(8%)" in gated.held[0].guard


def test_a_targeted_population_is_everyone_orgsync_manages_not_the_slice() -> None:
    """A targeted run reads one member; its gate still measures against the 25 people the
    state database says orgsync manages, and counts the managed people the source lost."""
    people = [person(str(i), f"p{i}@x.com") for i in range(23)]  # p23 and p24 left
    source = snapshot(*people, groups=(group("g", "openai-users", *(p.id for p in people)),))
    slice_ = org(member("u24", "p24@x.com"))
    desired = desired_for(source, slice_)
    memory = managed(*(f"p{i}@x.com" for i in range(25)))
    population = managed_in_memory(memory, desired)
    assert population == Population(managed=25, missing=2)
    scoped = restrict(desired, slice_, memory, Subjects.of(emails=["p24@x.com"]))
    assert scoped is not None
    draft = plan(
        PlanInput("t", scoped.desired, scoped.observed, scoped.memory, RemovalPolicy(), OPENAI, NOW)
    )
    assert [op.op for op in draft.operations] == ["remove_member"]
    limits = SafetyLimits(max_removal_ratio=0.05, min_managed_for_ratio=1)
    assert gate(draft, population=population, limits=limits).held == ()  # 1/25 = 4%
    sliced = managed_people(slice_, memory, desired)
    assert len(gate(draft, population=sliced, limits=limits).held) == 1  # 1/1 = 100%
