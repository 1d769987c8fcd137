"""The desired-state build equals a naive reference on generated directories.

`core/rules.py` resolves nesting once per group and space (shared closures, one look-up per
membership) and assigns scope and role grants a whole group at a time. These properties pin
it to the plain definitions, on directories with cycles, self-nesting, diamonds, ids that
name both a person and a group, unknown ids and duplicate group ids:

- a group's people are those reachable through nested groups (breadth-first search);
- a person's role is the highest granted one, ties to the first group by name, then the
  first rule; their reason names that group, or the first scope group by name;
- a mirrored group holds the wanted people reachable from it.
"""

from __future__ import annotations

from collections import deque

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orgsync.core.model import EmailKey, RoleCatalog, SourceId, SourceSnapshot
from orgsync.core.rules import (
    DesiredState,
    GroupRule,
    MembershipRules,
    RoleRule,
    _Nesting,
    desired_state,
)
from tests.coremodels import group, person

CATALOG = RoleCatalog(order=("reader", "writer", "owner"), privileged=frozenset({"owner"}))
PEOPLE = [f"p{i}" for i in range(6)]
GROUP_IDS = [f"g{j}" for j in range(7)]
# "g1" is also a person: a member id naming both counts as the person.
IDS = [*PEOPLE, *GROUP_IDS, "unknown"]
NAMES = ["openai-users", "openai-owners", "openai-writers", "team-a", "team-b", "Team-A", "x"]
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def directories(draw: st.DrawFn) -> SourceSnapshot:
    people = [
        person(pid, draw(st.sampled_from(["a@x.com", "b@x.com", "c@x.com", f"{pid}@x.com"])))
        for pid in [*PEOPLE, "g1"]
        if draw(st.integers(0, 4)) > 0
    ]
    people = [p if draw(st.integers(0, 5)) else person(p.id, p.email, active=False) for p in people]
    groups = [
        group(
            draw(st.sampled_from(GROUP_IDS)) if draw(st.integers(0, 6)) == 0 else gid,
            draw(st.sampled_from(NAMES)),
            *draw(st.lists(st.sampled_from(IDS), max_size=6)),
        )
        for gid in GROUP_IDS
        if draw(st.integers(0, 5)) > 0
    ]
    return SourceSnapshot(people=tuple(people), groups=tuple(groups))


def reachable(source: SourceSnapshot, start: SourceId) -> frozenset[SourceId]:
    """Breadth-first search over group ids; person ids are collected, never expanded."""
    by_id = {g.id: g for g in source.groups}
    people = {p.id for p in source.people}
    found: set[SourceId] = set()
    seen, queue = {start}, deque([start])
    while queue:
        current = by_id.get(queue.popleft())
        for member in current.members if current else ():
            if member in people:
                found.add(member)
            elif member not in seen:
                seen.add(member)
                queue.append(member)
    return frozenset(found)


@PROPERTY
@given(directories(), st.randoms(use_true_random=False))
def test_nesting_equals_reachability_in_any_order_of_questions(source, rnd) -> None:  # type: ignore[no-untyped-def]
    keys = {p.id: p.email_key for p in source.people}
    wanted = {pid: key for pid, key in keys.items() if rnd.random() < 0.7}
    nesting = _Nesting(source.groups, keys.keys())
    questions = [*GROUP_IDS, "unknown"] * 2
    rnd.shuffle(questions)  # the memo must not depend on the order of the questions
    for group_id in questions:
        expected = reachable(source, SourceId(group_id))
        assert nesting.people_in(SourceId(group_id)) == expected
        assert nesting.wanted_in(SourceId(group_id), wanted) == {
            wanted[p] for p in expected if p in wanted
        }


def reference(source: SourceSnapshot, rules: MembershipRules) -> dict[str, object]:
    """The rules spelled out person by person, group by group."""
    from fnmatch import fnmatchcase

    def matches(pattern: str, name: str) -> bool:
        return fnmatchcase(name.casefold(), pattern.casefold())

    by_name = sorted(source.groups, key=lambda g: g.name)
    keys = {p.id: p.email_key for p in source.people}
    counts: dict[EmailKey, int] = {}
    for p in source.people:
        counts[keys[p.id]] = counts.get(keys[p.id], 0) + 1
    wanted: dict[EmailKey, tuple[str, str]] = {}
    out: dict[EmailKey, str] = {}
    for p in source.people:
        key = keys[p.id]
        if counts[key] > 1:
            continue
        scope = [
            g.name
            for g in by_name
            if any(matches(s, g.name) for s in rules.scope_groups)
            and p.id in reachable(source, g.id)
        ]
        grants = [
            (rule.role, g.name)
            for g in by_name
            for rule in rules.roles
            if matches(rule.group, g.name) and p.id in reachable(source, g.id)
        ]
        best = None
        for grant in grants:
            if best is None or CATALOG.rank(grant[0]) > CATALOG.rank(best[0]):
                best = grant
        if not p.active:
            out[key] = "inactive in the source"
        elif rules.scope_groups and not scope:
            out[key] = "in no scope group"
        elif rules.roleless:
            wanted[key] = ("", f"member of {scope[0]}" if scope else "active in the source")
        elif best is not None:
            wanted[key] = (best[0], f"member of {best[1]}")
        elif rules.default_role is not None:
            where = f"member of {scope[0]}" if scope else "active in the source"
            wanted[key] = (rules.default_role, f"{where} (default role)")
        else:
            out[key] = "no role rule matches and no default_role is set"
    mirrored = []
    for g in sorted(source.groups, key=lambda g: (g.name, g.id)):
        rule = next((r for r in rules.groups if matches(r.source, g.name)), None)
        if rule is not None:
            members = {keys[p] for p in reachable(source, g.id) if keys[p] in wanted}
            mirrored.append((g.id, rule.target_name(g.name), frozenset(members)))
    names = [name.casefold() for _, name, _ in mirrored]
    unique = [m for m in mirrored if names.count(m[1].casefold()) == 1]
    return {"wanted": wanted, "out": out, "groups": unique}


def observed(desired: DesiredState) -> dict[str, object]:
    return {
        "wanted": {k: (w.role, w.reason) for k, w in desired.wanted.items()},
        "out": dict(desired.out_of_scope),
        "groups": [(d.source_id, d.name, d.members) for d in desired.groups],
    }


RULE_SETS = [
    MembershipRules(
        scope_groups=("openai-*",),
        roles=(RoleRule("openai-owners", "owner"), RoleRule("openai-writers", "writer")),
        default_role="reader",
        groups=(GroupRule("team-*"),),
    ),
    MembershipRules(
        roles=(
            RoleRule("team-*", "writer"),
            RoleRule("openai-*", "reader"),
            RoleRule("x", "no-such-role"),
            RoleRule("team-a", "owner"),
        ),
        groups=(GroupRule("openai-*", "{source}-copy"), GroupRule("team-*", "same")),
    ),
    MembershipRules(scope_groups=("team-*", "x"), default_role="reader"),
    MembershipRules(scope_groups=("openai-*", "team-b"), roleless=True),
]


@PROPERTY
@given(directories(), st.sampled_from(RULE_SETS))
def test_desired_state_equals_the_rules_spelled_out(source, rules) -> None:  # type: ignore[no-untyped-def]
    desired = desired_state(source, rules, CATALOG)
    expected = reference(source, rules)
    got = observed(desired)
    assert got == expected
