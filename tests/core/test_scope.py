"""A targeted reconcile plans for the named people only, and never more than a full pass."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orgsync.core.model import (
    EmailKey,
    Memory,
    SourceId,
    SourceSnapshot,
    TargetSnapshot,
    normalize_email,
)
from orgsync.core.plan import Plan
from orgsync.core.planner import PlanInput, RemovalPolicy, plan
from orgsync.core.rules import GroupRule, MembershipRules, RoleRule, desired_state
from orgsync.core.scope import Subjects, needs_invitations, restrict, unknown_subjects
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
)


def directory(*people_in_scope: tuple[str, str], out: tuple[tuple[str, str], ...] = ()):  # type: ignore[no-untyped-def]
    people = [person(pid, email) for pid, email in (*people_in_scope, *out)]
    users = group("g", "openai-users", *(pid for pid, _ in people_in_scope))
    return snapshot(*people, groups=(users, group("o", "openai-owners")))


def full_and_scoped(
    source: SourceSnapshot,
    observed: TargetSnapshot,
    subjects: Subjects,
    *,
    memory: Memory | None = None,
    rules: MembershipRules = RULES,
) -> tuple[Plan, Plan | None]:
    memory = memory or Memory()
    desired = desired_state(source, rules, observed.roles)

    def planned(d, o, m) -> Plan:  # type: ignore[no-untyped-def]
        return plan(PlanInput("t", d, o, m, RemovalPolicy(), OPENAI, NOW))

    scoped = restrict(desired, observed, memory, subjects)
    full = planned(desired, observed, memory)
    if scoped is None:
        return full, None
    return full, planned(scoped.desired, scoped.observed, scoped.memory)


def subjects_of(plan_: Plan) -> list[str]:
    return sorted(op.subject for op in plan_.operations)


def test_only_the_named_person_is_invited() -> None:
    source = directory(("1", "ada@x.com"), ("2", "bob@x.com"))
    full, scoped = full_and_scoped(source, org(), Subjects.of(emails=["ADA@x.com "]))
    assert subjects_of(full) == ["ada@x.com", "bob@x.com"]
    assert scoped is not None
    assert subjects_of(scoped) == ["ada@x.com"]


def test_a_source_id_names_the_person_too() -> None:
    source = directory(("1", "ada@x.com"), ("2", "bob@x.com"))
    _, scoped = full_and_scoped(source, org(), Subjects.of(source_ids=["2"]))
    assert scoped is not None
    assert subjects_of(scoped) == ["bob@x.com"]


def test_named_person_out_of_scope_is_removed_and_nobody_else() -> None:
    source = directory(("1", "ada@x.com"), out=(("2", "bob@x.com"), ("3", "cy@x.com")))
    observed = org(member("u1", "ada@x.com"), member("u2", "bob@x.com"), member("u3", "cy@x.com"))
    full, scoped = full_and_scoped(source, observed, Subjects.of(emails=["bob@x.com"]))
    assert [op.op for op in full.operations] == ["remove_member", "remove_member"]
    assert scoped is not None
    assert [(op.op, op.subject) for op in scoped.operations] == [("remove_member", "bob@x.com")]


def test_a_pending_invitation_of_the_named_person_counts_and_others_are_ignored() -> None:
    source = directory(("1", "ada@x.com"), out=(("2", "bob@x.com"),))
    observed = org(invites=(invite("i1", "ada@x.com"), invite("i2", "bob@x.com")))
    full, scoped = full_and_scoped(source, observed, Subjects.of(emails=["ada@x.com"]))
    assert [(op.op, op.subject) for op in full.operations] == [("revoke_invite", "bob@x.com")]
    assert scoped is not None
    assert scoped.operations == ()


def test_a_person_whose_email_changed_is_found_through_the_link() -> None:
    source = directory(("1", "ada.new@x.com"))
    observed = org(member("u1", "ada.old@x.com", role="reader"))
    memory = Memory(managed=frozenset({EmailKey("ada.old@x.com")}), links={SourceId("1"): "u1"})
    desired = desired_state(source, RULES, observed.roles)
    scoped = restrict(desired, observed, memory, Subjects.of(source_ids=["1"]))
    assert scoped is not None
    assert [m.id for m in scoped.observed.members] == ["u1"]
    assert normalize_email("ada.old@x.com") in scoped.keys


def test_a_named_owner_needs_the_whole_organization() -> None:
    source = directory(out=(("1", "ada@x.com"),))
    observed = org(member("u1", "ada@x.com", role="owner"), member("u2", "eve@x.com", "owner"))
    _, scoped = full_and_scoped(source, observed, Subjects.of(emails=["ada@x.com"]))
    assert scoped is None


def test_an_unknown_name_plans_nothing() -> None:
    source = directory(("1", "ada@x.com"))
    observed = org(member("u9", "mallory@x.com"))
    _, scoped = full_and_scoped(source, observed, Subjects.of(emails=["nobody@x.com"]))
    assert scoped is not None
    assert scoped.operations == ()


def test_groups_are_left_to_the_full_pass() -> None:
    rules = MembershipRules(
        scope_groups=("openai-*",), default_role="reader", groups=(GroupRule("openai-*"),)
    )
    source = directory(("1", "ada@x.com"), ("2", "bob@x.com"))
    observed = org_with_groups(
        target_group("tg", "openai-users", members=("u2",)),
        members=(member("u1", "ada@x.com"), member("u2", "bob@x.com")),
    )
    memory = Memory(owned_groups={"tg": SourceId("g")})
    full, scoped = full_and_scoped(
        source, observed, Subjects.of(emails=["ada@x.com"]), memory=memory, rules=rules
    )
    assert any(op.op == "add_group_member" for op in full.operations)
    assert scoped is not None
    assert scoped.operations == ()


def test_subjects_ignore_blank_names() -> None:
    assert not Subjects.of(emails=["  "], source_ids=[""])
    assert Subjects.of(emails=["A@X.com"]).emails == {normalize_email("a@x.com")}


EMAILS = [f"p{i}@x.com" for i in range(6)]


@settings(max_examples=200, deadline=None)
@given(
    in_scope=st.sets(st.integers(0, 5)),
    present=st.sets(st.integers(0, 5)),
    invited=st.sets(st.integers(0, 5)),
    named=st.sets(st.integers(0, 5), min_size=1),
)
def test_a_scoped_plan_is_the_full_plan_restricted_to_the_named(
    in_scope: set[int], present: set[int], invited: set[int], named: set[int]
) -> None:
    """Whatever the world, the slice plans exactly the full plan's operations on the named."""
    source = directory(
        *((str(i), EMAILS[i]) for i in sorted(in_scope)),
        out=tuple((str(i), EMAILS[i]) for i in range(6) if i not in in_scope),
    )
    observed = org(
        member("owner", "boss@x.com", role="owner"),
        *(member(f"u{i}", EMAILS[i]) for i in sorted(present)),
        invites=tuple(invite(f"i{i}", EMAILS[i]) for i in sorted(invited - present)),
    )
    full, scoped = full_and_scoped(source, observed, Subjects.of(emails=[EMAILS[i] for i in named]))
    assert scoped is not None
    names = {EMAILS[i] for i in named}
    assert scoped.operations == tuple(op for op in full.operations if op.subject in names)


def test_unknown_subjects_are_names_nobody_answers_to() -> None:
    source = directory(("1", "ada@x.com"), out=(("2", "oscar@x.com"),))
    observed = org(member("u7", "gone@x.com"), invites=(invite("i1", "invited@x.com"),))
    memory = Memory(
        managed=frozenset({EmailKey("remembered@x.com")}),
        links={SourceId("9"): "u9"},
        linked_sources={EmailKey("pending@x.com"): SourceId("8")},
    )
    desired = desired_state(source, RULES, observed.roles)
    subjects = Subjects.of(
        emails=[
            "ADA@x.com",  # in scope at the source (normalized)
            "oscar@x.com",  # at the source, out of scope
            "gone@x.com",  # a member only
            "invited@x.com",  # an invitation only
            "remembered@x.com",  # in orgsync's memory only
            "typo@x.com",
        ],
        source_ids=["1", "2", "9", "8", "p404"],
    )
    assert unknown_subjects(subjects, desired, observed, memory) == ["typo@x.com", "p404"]


def test_invitations_matter_only_for_people_who_are_not_wanted_members() -> None:
    source = directory(("1", "ada@x.com"), ("2", "new@x.com"), out=(("3", "gone@x.com"),))
    observed = org(member("u1", "ada@x.com"), member("u3", "gone@x.com"))
    desired = desired_state(source, RULES, observed.roles)

    def needs(*emails: str) -> bool:
        scoped = restrict(desired, observed, Memory(), Subjects.of(emails=emails))
        assert scoped is not None
        return needs_invitations(scoped)

    assert not needs("ada@x.com")  # a wanted member: their invitations change nothing
    assert needs("new@x.com")  # a joiner: an invitation may exist already
    assert needs("gone@x.com")  # a leaver: their invitations are revoked
    assert needs("stranger@x.com")  # maybe someone with an invitation only
    assert needs("ada@x.com", "new@x.com")
