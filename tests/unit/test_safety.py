"""The safety gate: mass removals held, everything else applied; truncated sources abort."""

from __future__ import annotations

import pytest

from orgsync.core.errors import SourceError
from orgsync.core.safety import (
    SafetyLimits,
    check_source_size,
    hold_mass_removals,
    managed_population,
)
from tests.coremodels import group, invite, make_plan, member, org, person, snapshot


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
    gated = hold_mass_removals(
        plan,
        population=managed_population(observed),
        limits=SafetyLimits(max_removals=2, max_removal_ratio=1),
    )
    assert [op.op for op in gated.operations] == ["invite"]
    assert len(gated.held) == 3
    assert gated.held[0].guard == "3 removals exceed safety.max_removals = 2"


def test_ratio_guard_counts_against_managed_population() -> None:
    source, observed = leavers(2, stay=8)
    plan = make_plan(source, observed)
    limits = SafetyLimits(max_removals=100, max_removal_ratio=0.1)
    gated = hold_mass_removals(plan, population=managed_population(observed), limits=limits)
    assert len(gated.held) == 2 and "20%" in gated.held[0].guard
    within = hold_mass_removals(
        plan,
        population=managed_population(observed),
        limits=SafetyLimits(max_removals=100, max_removal_ratio=0.2),
    )
    assert not within.held


def test_allow_removals_lifts_the_guard_for_up_to_n() -> None:
    source, observed = leavers(3)
    plan = make_plan(source, observed)
    limits = SafetyLimits(max_removals=1, max_removal_ratio=1)
    assert not hold_mass_removals(plan, population=4, limits=limits, allow_removals=3).held
    still = hold_mass_removals(plan, population=4, limits=limits, allow_removals=2)
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
    gated = hold_mass_removals(
        plan, population=3, limits=SafetyLimits(max_removals=1, max_removal_ratio=1)
    )
    assert [h.operation.op for h in gated.held] == ["set_role", "set_role"]


def test_reader_raises_are_not_removals() -> None:
    people = snapshot(person("1", "a@x.com"), groups=(group("g", "openai-owners", "1"),))
    plan = make_plan(people, org(member("u1", "a@x.com")))
    assert not hold_mass_removals(plan, population=1, limits=SafetyLimits(max_removals=0)).held


def test_revocations_count_as_removals() -> None:
    people = snapshot(person("1", "a@x.com", active=False))
    plan = make_plan(people, org(invites=(invite("i1", "a@x.com"),)))
    assert hold_mass_removals(plan, population=1, limits=SafetyLimits(max_removals=0)).held


def test_a_source_with_too_few_people_aborts() -> None:
    with pytest.raises(SourceError, match=r"fewer than safety\.min_source_users = 1"):
        check_source_size(0, SafetyLimits(min_source_users=1))
    check_source_size(1, SafetyLimits(min_source_users=1))


def test_population_excludes_service_accounts_and_foreign_members() -> None:
    observed = org(
        member("a", "a@x.com"),
        member("b", "b@x.com", is_service_account=True),
        member("c", "c@x.com", is_scim_managed=True),
        invites=(invite("i", "i@x.com"),),
    )
    assert managed_population(observed) == 2
