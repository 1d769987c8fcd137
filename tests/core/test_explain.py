"""`orgsync explain` in the core: one person's part of the plan, and every reason why."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from orgsync.core.explain import ExplainInput, Explanation, concerns, explain
from orgsync.core.model import (
    Capabilities,
    Memory,
    RejectedRecord,
    SourceGroup,
    SourceId,
    SourceSnapshot,
    TargetSnapshot,
    normalize_email,
)
from orgsync.core.plan import UpdateUser
from orgsync.core.planner import PlanInput, RemovalPolicy
from orgsync.core.rules import GroupRule, MembershipRules, RoleRule, desired_state, paths_to
from orgsync.core.safety import SafetyLimits, gate, managed_people
from tests.coremodels import (
    NOW,
    OPENAI,
    group,
    invite,
    member,
    org,
    org_with_groups,
    person,
    snapshot,
    target_group,
)

RULES = MembershipRules(
    scope_groups=("openai-*",),
    roles=(RoleRule("openai-owners", "owner"),),
    default_role="reader",
    groups=(GroupRule("team-*", "{source}", ("ml-engineer",)),),
)


def explained(
    lookup: str,
    source: SourceSnapshot,
    observed: TargetSnapshot,
    *,
    memory: Memory | None = None,
    policy: RemovalPolicy | None = None,
    limits: SafetyLimits | None = None,
    capabilities: Capabilities = OPENAI,
) -> Explanation:
    memory = memory or Memory()
    policy = policy or RemovalPolicy()
    desired = desired_state(source, RULES, observed.roles)
    given = PlanInput("t", desired, observed, memory, policy, capabilities, NOW)
    population = managed_people(observed, memory, desired, remove_unmanaged=policy.remove_unmanaged)
    return explain(lookup, ExplainInput(given, source, RULES, population, limits or SafetyLimits()))


def users(*ids: str) -> SourceGroup:
    return group("g-users", "openai-users", *ids)


def kinds(explanation: Explanation) -> list[str]:
    return [g.kind for g in explanation.guards]


def test_a_new_joiner_is_invited_and_the_scope_rule_says_why() -> None:
    source = snapshot(person("p1", "Ada@X.com", name="Ada"), groups=(users("p1"),))
    result = explained("ada@x.com ", source, org())
    assert result.found
    assert [(op.op, op.subject) for op in result.operations] == [("invite", "Ada@X.com")]
    assert result.exit_code == 2
    assert result.desired.wanted and result.desired.role == "reader"
    assert result.current.state == "absent"
    (record,) = result.sources
    assert (record.source_id, record.email, record.name) == ("p1", "Ada@X.com", "Ada")
    scope, default = record.matches
    assert (scope.rule, scope.pattern, scope.path, scope.decides) == (
        "targets.scope_groups",
        "openai-*",
        ("openai-users",),
        True,
    )
    assert (default.rule, default.gives, default.decides) == (
        "targets.default_role",
        "role reader",
        True,
    )
    # By source id: the same explanation.
    assert explained("p1", source, org()).operations == result.operations


def test_a_role_through_a_nested_group_names_the_path() -> None:
    source = snapshot(
        person("p1", "ada@x.com"),
        groups=(
            users("p1"),
            group("g-owners", "openai-owners", "g-admins"),
            group("g-admins", "admins", "g-oncall"),
            group("g-oncall", "oncall", "p1"),
        ),
    )
    result = explained("p1", source, org(member("u1", "ada@x.com", "reader")))
    (op,) = result.operations
    assert (op.op, getattr(op, "role", None)) == ("set_role", "owner")
    grant = next(m for m in result.sources[0].matches if m.rule == "targets.roles[0]")
    assert grant.path == ("openai-owners", "admins", "oncall") and grant.decides
    assert "via nested group 'admins' via nested group 'oncall'" in grant.describe()
    assert result.current.state == "member" and result.current.members[0].role == "reader"


def test_a_managed_leaver_is_found_by_email_and_by_the_source_id_orgsync_remembers() -> None:
    source = snapshot(person("p2", "bob@x.com"), groups=(users("p2"),))
    observed = org(member("u1", "ada@x.com"), member("u2", "bob@x.com"))
    memory = Memory(
        managed=frozenset({normalize_email("ada@x.com")}),
        links={SourceId("p1"): "u1"},
        linked_sources={normalize_email("ada@x.com"): SourceId("p1")},
    )
    by_email = explained("ada@x.com", source, observed, memory=memory)
    by_id = explained("p1", source, observed, memory=memory)
    for result in (by_email, by_id):
        assert result.found and not result.sources
        assert [(op.op, op.reason) for op in result.operations] == [
            ("remove_member", "no longer in the source (orgsync managed them)")
        ]
        assert result.current.managed and result.current.state == "member"
        assert not result.desired.wanted and result.desired.reason == "not in the source"
    # Bob is untouched by Ada's explanation, and his own has nothing to do.
    assert explained("bob@x.com", source, observed, memory=memory).exit_code == 0


def test_the_key_owner_and_protected_people_are_never_touched_and_say_so() -> None:
    source = snapshot(person("p1", "ada@x.com"), groups=(users("p1"),))
    observed = org(member("u0", "key@x.com", "owner"), member("u1", "ada@x.com", "owner"),
                   key_owner="u0")  # fmt: skip
    memory = Memory(managed=frozenset({normalize_email("key@x.com")}))
    keyed = explained("key@x.com", source, observed, memory=memory)
    assert keyed.operations == () and "key_owner" in kinds(keyed)
    assert any("owner of orgsync's API key" in w for w in keyed.warnings)
    policy = RemovalPolicy(protected=frozenset({normalize_email("ada@x.com")}))
    protected = explained("ada@x.com", source, observed, policy=policy)
    assert protected.operations == () and protected.exit_code == 0
    assert "protected" in kinds(protected)
    assert any("would change role owner to reader" in w for w in protected.warnings)


def test_a_held_removal_exits_3_and_names_the_guard() -> None:
    source = snapshot(person("p2", "bob@x.com"), groups=(users("p2"),))
    observed = org(member("u1", "ada@x.com"), member("u2", "bob@x.com"))
    memory = Memory(managed=frozenset({normalize_email("ada@x.com")}))
    result = explained(
        "ada@x.com", source, observed, memory=memory, limits=SafetyLimits(max_removals=0)
    )
    assert result.operations == () and len(result.held) == 1
    assert result.exit_code == 3
    (guard,) = [g for g in result.guards if g.kind == "safety_gate"]
    assert "safety.max_removals = 0" in guard.reason
    assert "orgsync sync --allow-removals 1" in guard.reason


def test_removal_grace_is_a_waiting_removal_with_its_date() -> None:
    source = snapshot(person("p2", "bob@x.com"), groups=(users("p2"),))
    observed = org(member("u1", "ada@x.com"))
    key = normalize_email("ada@x.com")
    memory = Memory(managed=frozenset({key}), missing_since={key: NOW - timedelta(hours=1)})
    policy = RemovalPolicy(removal_grace=timedelta(days=1))
    result = explained("ada@x.com", source, observed, memory=memory, policy=policy)
    assert result.operations == () and result.exit_code == 0
    assert [w.op for w in result.waiting] == ["remove_member"]
    (guard,) = [g for g in result.guards if g.kind == "removal_grace"]
    assert "2026-06-02T11:00:00Z" in guard.reason
    assert result.current.missing_since == NOW - timedelta(hours=1)


def test_an_invited_person_waits_for_acceptance_to_join_a_group() -> None:
    source = snapshot(person("p1", "ada@x.com"), groups=(users("p1"), group("t", "team-ml", "p1")))
    observed = replace(org_with_groups(), invites=(invite("i1", "ada@x.com"),))
    result = explained("ada@x.com", source, observed)
    assert result.current.state == "invited"
    assert result.desired.groups == ("team-ml",)
    assert [(w.op, w.group) for w in result.waiting] == [("add_group_member", "team-ml")]
    assert "waiting_for_acceptance" in kinds(result)
    assert all(op.op != "invite" for op in result.operations)


def test_a_rejected_record_keeps_its_member_and_is_found_by_id_and_by_its_email() -> None:
    source = SourceSnapshot(
        people=(person("p1", "ada@@x.com"), person("p2", "bob@x.com")),
        groups=(users("p1", "p2"),),
        rejected=(RejectedRecord(SourceId("p3"), "email is a list", None),),
    )
    observed = org(member("u1", "ada@x.com"))
    memory = Memory(
        managed=frozenset({normalize_email("ada@x.com")}),
        links={SourceId("p1"): "u1"},
        linked_sources={normalize_email("ada@x.com"): SourceId("p1")},
    )
    for lookup in ("p1", "ada@@x.com", "ada@x.com"):
        result = explained(lookup, source, observed, memory=memory)
        assert result.operations == (), lookup
        assert "rejected_record" in kinds(result), lookup
        assert result.sources and result.sources[0].rejected, lookup
        assert result.desired.reason.startswith("source record rejected"), lookup
    (scope,) = explained("p1", source, observed, memory=memory).sources[0].matches
    assert (scope.rule, scope.path, scope.decides) == (
        "targets.scope_groups",
        ("openai-users",),
        False,
    )
    only_rejected = explained("p3", source, observed, memory=memory)
    assert only_rejected.found and only_rejected.sources[0].rejected == "email is a list"


def test_an_unknown_person_is_not_found_and_an_unmanaged_member_is_left_alone() -> None:
    source = snapshot(person("p1", "ada@x.com"), groups=(users("p1"),))
    observed = org(member("u9", "stranger@x.com"))
    nobody = explained("nobody@x.com", source, observed)
    assert not nobody.found and nobody.exit_code == 0
    stranger = explained("stranger@x.com", source, observed)
    assert stranger.found and stranger.operations == ()
    assert kinds(stranger) == ["unmanaged"]
    swept = explained(
        "stranger@x.com", source, observed, policy=RemovalPolicy(remove_unmanaged=True)
    )
    assert [op.op for op in swept.operations] == ["remove_member"] and not swept.guards


def test_shared_emails_and_foreign_groups_are_named() -> None:
    source = snapshot(
        person("p1", "ada@x.com"), person("p2", "ADA@x.com"), groups=(users("p1", "p2"),)
    )
    observed = org_with_groups(
        target_group("tg1", "hr", ("u1",), scim=True), members=(member("u1", "ada@x.com"),)
    )
    result = explained("ada@x.com", source, observed)
    assert {r.source_id for r in result.sources} == {"p1", "p2"}
    assert "ambiguous_email" in kinds(result) and "foreign_group" in kinds(result)
    assert result.current.members[0].groups[0].owner == "another provisioner"


def test_an_email_change_on_a_target_that_cannot_rename_waits_and_both_emails_find_them() -> None:
    source = snapshot(person("p1", "ada.new@x.com"), groups=(users("p1"),))
    observed = org(member("u1", "ada.old@x.com"))
    memory = Memory(
        managed=frozenset({normalize_email("ada.old@x.com")}),
        links={SourceId("p1"): "u1"},
        linked_sources={normalize_email("ada.old@x.com"): SourceId("p1")},
    )
    for lookup in ("ada.new@x.com", "ada.old@x.com", "p1"):
        result = explained(lookup, source, observed, memory=memory)
        assert "email_change" in kinds(result), lookup
        assert result.operations == (), lookup


def test_concerns_covers_renames_by_previous_email_and_member_ids() -> None:
    rename = UpdateUser(
        email="new@x.com", user_id="u1", previous_email="Old@x.com", reason="renamed"
    )
    assert concerns(rename, {normalize_email("old@x.com")}, ())
    assert concerns(rename, (), {"u1"})
    assert not concerns(rename, {normalize_email("other@x.com")}, {"u2"})


def test_explain_lists_exactly_the_dry_runs_operations_for_the_person() -> None:
    source = snapshot(
        person("p1", "ada@x.com"),
        person("p2", "bob@x.com"),
        groups=(users("p1", "p2"), group("t", "team-ml", "p1")),
    )
    observed = org_with_groups(members=(member("u2", "bob@x.com", "owner"),))
    desired = desired_state(source, RULES, observed.roles)
    given = PlanInput("t", desired, observed, Memory(), RemovalPolicy(), OPENAI, NOW)
    from orgsync.core.planner import plan

    full = gate(plan(given), population=managed_people(observed, Memory(), desired),
                limits=SafetyLimits())  # fmt: skip
    ada = explained("ada@x.com", source, observed)
    bob = explained("bob@x.com", source, observed)
    assert set(ada.operations) | set(bob.operations) == {
        op for op in full.operations if getattr(op, "email", None) or op.op == "add_group_member"
    }
    assert not set(ada.operations) & set(bob.operations)


def test_paths_to_breaks_cycles_and_takes_a_person_id_for_the_person() -> None:
    source = snapshot(
        person("p1", "ada@x.com"),
        person("g2", "gina@x.com"),  # a person whose id is also a group's
        groups=(
            group("g1", "a", "g2", "g3"),
            group("g2", "b", "p1"),
            group("g3", "c", "g1", "p1"),
        ),
    )
    paths = paths_to(source, SourceId("p1"))
    # g1 lists "g2", which is a person: not a nested group. g3 <-> g1 is a cycle.
    assert dict(paths) == {"g2": ("b",), "g3": ("c",), "g1": ("a", "c")}
    assert dict(paths_to(source, SourceId("g2"))) == {"g1": ("a",), "g3": ("c", "a")}


def test_a_leaver_is_suspended_where_the_target_suspends() -> None:
    source = snapshot(person("p2", "bob@x.com"), groups=(users("p2"),))
    observed = org(member("u1", "ada@x.com"), member("u2", "bob@x.com"))
    memory = Memory(managed=frozenset({normalize_email("ada@x.com")}))
    keycard = Capabilities(invites=True, roles=True, suspend=True)
    result = explained(
        "ada@x.com",
        source,
        observed,
        memory=memory,
        policy=RemovalPolicy(on_removal="suspend"),
        capabilities=keycard,
    )
    assert [(op.op, op.reason) for op in result.operations] == [
        ("suspend_member", "no longer in the source (orgsync managed them)")
    ]


def test_a_group_rule_naming_a_group_another_provisioner_manages_is_a_guard() -> None:
    source = snapshot(person("p1", "ada@x.com"), groups=(users("p1"), group("t", "team-ml", "p1")))
    observed = org_with_groups(
        target_group("tg1", "team-ml", (), scim=True), members=(member("u1", "ada@x.com"),)
    )
    result = explained("ada@x.com", source, observed)
    assert result.desired.groups == ("team-ml",)
    (guard,) = [g for g in result.guards if g.kind == "group_rule"]
    assert "managed by another provisioner" in guard.reason
    assert not [op for op in result.operations if op.op == "add_group_member"]


def test_the_last_owner_is_kept_and_says_so() -> None:
    source = snapshot(person("p2", "bob@x.com"), groups=(users("p2"),))
    observed = org(member("u1", "ada@x.com", "owner"), member("u2", "bob@x.com"))
    memory = Memory(managed=frozenset({normalize_email("ada@x.com")}))
    result = explained("ada@x.com", source, observed, memory=memory)
    assert result.operations == () and result.exit_code == 0
    (guard,) = [g for g in result.guards if g.kind == "last_owner"]
    assert "the last owner" in guard.reason
