"""The rules (docs/reference.md "Matching", "Roles") that decide who is wanted, with which role."""

from __future__ import annotations

from orgsync.core.model import SourceGroup, SourceId, normalize_email
from orgsync.core.rules import MembershipRules, RoleRule, desired_state
from tests.coremodels import CATALOG, group, person, snapshot

RULES = MembershipRules(
    scope_groups=("openai-*",), roles=(RoleRule("openai-owners", "owner"),), default_role="reader"
)


def test_email_normalization_is_nfkc_casefold_trim() -> None:
    """Full-width letters, case and surrounding spaces do not make a different person."""
    assert normalize_email("  ＡＤＡ@Example.COM ") == "ada@example.com"
    assert normalize_email("STRASSE@example.com") == normalize_email("strasse@EXAMPLE.com")


def test_highest_role_wins_by_catalog_order() -> None:
    """A person in a reader group and an owner group is an owner."""
    source = snapshot(
        person("1", "a@x.com"),
        groups=(group("g1", "openai-readers", "1"), group("g2", "openai-owners", "1")),
    )
    rules = MembershipRules(
        scope_groups=("openai-*",),
        roles=(RoleRule("openai-readers", "reader"), RoleRule("openai-owners", "owner")),
    )
    wanted = desired_state(source, rules, CATALOG).wanted[normalize_email("a@x.com")]
    assert wanted.role == "owner"
    assert wanted.reason == "member of openai-owners"


def test_default_role_applies_to_in_scope_people_without_a_rule() -> None:
    source = snapshot(person("1", "a@x.com"), groups=(group("g", "openai-users", "1"),))
    wanted = desired_state(source, RULES, CATALOG).wanted
    assert wanted[normalize_email("a@x.com")].role == "reader"


def test_without_default_role_only_rules_decide() -> None:
    """Omitting default_role means: people no role rule matches are not members."""
    source = snapshot(person("1", "a@x.com"), groups=(group("g", "openai-users", "1"),))
    rules = MembershipRules(scope_groups=("openai-*",), roles=(RoleRule("openai-owners", "owner"),))
    desired = desired_state(source, rules, CATALOG)
    assert not desired.wanted
    assert "no role rule" in desired.out_of_scope[normalize_email("a@x.com")]


def test_scope_globs_are_case_insensitive_and_exclude_others() -> None:
    source = snapshot(
        person("1", "in@x.com"),
        person("2", "out@x.com"),
        groups=(group("g1", "OpenAI-Users", "1"), group("g2", "sales", "2")),
    )
    desired = desired_state(source, RULES, CATALOG)
    assert set(desired.wanted) == {"in@x.com"}
    assert desired.out_of_scope["out@x.com"] == "in no scope group"


def test_no_scope_groups_means_every_active_person() -> None:
    source = snapshot(person("1", "a@x.com"), person("2", "b@x.com", active=False))
    desired = desired_state(source, MembershipRules(default_role="reader"), CATALOG)
    assert set(desired.wanted) == {"a@x.com"}
    assert desired.out_of_scope["b@x.com"] == "inactive in the source"


def test_nested_groups_count_transitively_and_cycles_are_broken() -> None:
    """openai-users > team-a > team-b > team-a (a cycle): everyone in reach is in scope."""
    source = snapshot(
        person("1", "a@x.com"),
        person("2", "b@x.com"),
        person("3", "c@x.com"),
        groups=(
            group("top", "openai-users", "ta"),
            group("ta", "team-a", "1", "tb"),
            group("tb", "team-b", "2", "ta"),
            group("lone", "team-c", "3"),
        ),
    )
    desired = desired_state(source, RULES, CATALOG)
    assert set(desired.wanted) == {"a@x.com", "b@x.com"}


def test_nested_owner_group_grants_owner_through_nesting() -> None:
    source = snapshot(
        person("1", "a@x.com"),
        groups=(group("o", "openai-owners", "sub"), group("sub", "leads", "1")),
    )
    assert desired_state(source, RULES, CATALOG).wanted["a@x.com"].role == "owner"


def test_inactive_people_are_out_of_scope_even_in_owner_group() -> None:
    source = snapshot(
        person("1", "a@x.com", active=False), groups=(group("o", "openai-owners", "1"),)
    )
    desired = desired_state(source, RULES, CATALOG)
    assert not desired.wanted
    assert desired.known["a@x.com"] == "1"


def test_duplicate_emails_exclude_both_people_with_a_warning_naming_both() -> None:
    source = snapshot(
        person("1", "dup@x.com"),
        person("2", "DUP@x.com "),
        groups=(group("g", "openai-users", "1", "2"),),
    )
    desired = desired_state(source, RULES, CATALOG)
    assert not desired.wanted
    assert "dup@x.com" in desired.ambiguous
    assert "dup@x.com" not in desired.known
    assert any("1" in w and "2" in w and "dup@x.com" in w for w in desired.warnings)


def test_deep_nesting_does_not_exhaust_the_stack() -> None:
    depth = 5000
    groups = [group(f"g{i}", f"team-{i}", f"g{i + 1}") for i in range(depth)]
    groups.append(group(f"g{depth}", "leaf", "1"))
    groups[0] = group("g0", "openai-users", "g1")
    source = snapshot(person("1", "a@x.com"), groups=tuple(groups))
    assert set(desired_state(source, RULES, CATALOG).wanted) == {"a@x.com"}


def test_a_nested_group_sharing_a_persons_id_is_a_group() -> None:
    """An IdP numbering people and groups from separate sequences: person "2" and group "2".
    A source that knows group "2" is nested says so with `subgroups`; its people are in
    scope, and person "2" is not (issue 11: taking a group for a person gives access)."""
    source = snapshot(
        person("2", "two@x.com"),
        person("3", "three@x.com"),
        groups=(
            SourceGroup(id=SourceId("1"), name="openai-users", subgroups=(SourceId("2"),)),
            group("2", "team", "3"),
        ),
    )
    assert set(desired_state(source, RULES, CATALOG).wanted) == {"three@x.com"}
