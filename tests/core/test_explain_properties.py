"""`orgsync explain` never disagrees with the plan: for generated directories and
organizations (those of the planner's properties, plus rejected records, remembered links
and removal grace), the operations explain lists for a person are the full gated plan's
operations about that person, held ones with the same guard, and nothing else.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from orgsync.core.explain import ExplainInput, Explanation, explain
from orgsync.core.model import (
    Capabilities,
    Memory,
    SourceId,
    SourceSnapshot,
    TargetSnapshot,
    normalize_email,
)
from orgsync.core.plan import (
    AddGroupMember,
    GroupOperationFields,
    Operation,
    Plan,
    RemoveGroupMember,
)
from orgsync.core.planner import PlanInput, RemovalPolicy, plan
from orgsync.core.rules import (
    GroupRule,
    MembershipRules,
    RoleRule,
    _Nesting,
    desired_state,
    paths_to,
)
from orgsync.core.safety import SafetyLimits, gate, managed_people
from tests.core.test_planner_properties import PROPERTY, limits_strategy, worlds
from tests.coremodels import NOW, person

RULES = MembershipRules(
    scope_groups=("openai-*",),
    roles=(RoleRule("openai-owners", "owner"),),
    default_role="reader",
    groups=(GroupRule("team-*", "{source}", ("ml-engineer",)),),
)

World = tuple[SourceSnapshot, TargetSnapshot, Memory, RemovalPolicy, Capabilities]


@st.composite
def richer_worlds(draw: st.DrawFn) -> World:
    """The planner's worlds, plus what only explain has to find people through: a record
    with a broken email, the emails earlier runs linked to source ids, removal grace."""
    source, observed, memory, policy, capabilities = draw(worlds())
    people = list(source.people)
    if people and draw(st.booleans()):
        broken = draw(st.sampled_from(people))
        people[people.index(broken)] = person(broken.id, broken.email + "@", active=broken.active)
    linked_sources = {
        normalize_email(p.email): SourceId(p.id) for p in source.people if draw(st.booleans())
    }
    missing = {
        key: NOW - timedelta(hours=draw(st.integers(0, 48)))
        for key in memory.managed
        if draw(st.booleans())
    }
    grace = timedelta(hours=draw(st.sampled_from([0, 24])))
    return (
        replace(source, people=tuple(people)),
        observed,
        replace(memory, linked_sources=linked_sources, missing_since=missing),
        replace(policy, removal_grace=grace),
        capabilities,
    )


def inputs_of(world: World, limits: SafetyLimits) -> tuple[ExplainInput, Plan]:
    source, observed, memory, policy, capabilities = world
    rules = (
        RULES if capabilities.roles else replace(RULES, roles=(), default_role=None, roleless=True)
    )
    desired = desired_state(source, rules, observed.roles)
    given_ = PlanInput("t", desired, observed, memory, policy, capabilities, NOW)
    population = managed_people(observed, memory, desired, remove_unmanaged=policy.remove_unmanaged)
    full = gate(plan(given_), population=population, limits=limits)
    return ExplainInput(given_, source, rules, population, limits), full


def person_email(operation: Operation) -> str | None:
    """The email an operation about one person names (None for a group's own changes)."""
    if isinstance(operation, AddGroupMember | RemoveGroupMember):
        return operation.email
    if isinstance(operation, GroupOperationFields):
        return None
    return operation.email


def lookups(world: World) -> set[str]:
    source, observed, memory, _, _ = world
    texts = {p.id for p in source.people} | {p.email for p in source.people}
    texts |= {m.email for m in observed.members if m.email} | {i.email for i in observed.invites}
    return texts | set(memory.links) | {"nobody@x.com"}


@PROPERTY
@given(richer_worlds(), limits_strategy)
def test_explain_lists_the_plans_operations_about_the_person_and_no_others(world, limits) -> None:  # type: ignore[no-untyped-def]
    inputs, full = inputs_of(world, limits)
    held_guards = {h.operation: h.guard for h in full.held}
    explained: dict[str, Explanation] = {text: explain(text, inputs) for text in lookups(world)}
    for text, explanation in explained.items():
        # Only the plan's own operations, in its order, held ones held by the same guard.
        assert [op for op in full.operations if op in explanation.operations] == list(
            explanation.operations
        ), text
        for kept in explanation.held:
            assert held_guards.get(kept.operation) == kept.guard, text
        assert explanation.exit_code == (
            3 if explanation.held else 2 if explanation.operations else 0
        )
        if not explanation.found:
            assert explanation.operations == () and explanation.held == (), text
    # Every operation about a person is in the explanation of the email it names, and in
    # that of the source id of the wanted person with that email.
    by_key = inputs.given.desired.wanted
    for op in [*full.operations, *(h.operation for h in full.held)]:
        email = person_email(op)
        if email is None:
            continue
        everything = {*explain(email, inputs).operations}
        everything |= {h.operation for h in explain(email, inputs).held}
        assert op in everything, (email, op)
        wanted = by_key.get(normalize_email(email))
        if wanted is not None:
            by_id = explained.get(wanted.source_id) or explain(wanted.source_id, inputs)
            assert op in {*by_id.operations, *(h.operation for h in by_id.held)}, (wanted, op)


@PROPERTY
@given(richer_worlds())
def test_the_paths_explain_shows_are_the_groups_the_rules_count(world) -> None:  # type: ignore[no-untyped-def]
    source = world[0]
    ids = [p.id for p in source.people]
    nesting = _Nesting(source.groups, ids)
    for person_id in ids:
        expected = {g.id for g in source.groups if person_id in nesting.people_in(g.id)}
        paths = paths_to(source, person_id)
        assert set(paths) == expected, person_id
        names = {g.id: g.name for g in source.groups}
        for group_id, path in paths.items():
            assert path[0] == names[group_id]
