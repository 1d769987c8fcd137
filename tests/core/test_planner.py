"""The rules that decide the plan (docs/reference.md "Rules"), one test each."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orgsync.core.model import Capabilities, InviteStatus, Memory, SourceId, normalize_email
from orgsync.core.plan import (
    Invite,
    Phase,
    Plan,
    RemoveMember,
    SetRole,
    SuspendMember,
    UpdateUser,
)
from orgsync.core.planner import RemovalPolicy
from tests.coremodels import NOW, group, invite, make_plan, member, org, person, snapshot

USERS = group("g", "openai-users", "1", "2", "3")
OWNERS = group("o", "openai-owners")


def source(*people, owners: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    members = tuple(p.id for p in people)
    return snapshot(
        *people, groups=(group("g", "openai-users", *members), group("o", "openai-owners", *owners))
    )


def ops(plan: Plan) -> list[tuple[str, str]]:
    return [(op.op, op.subject) for op in plan.operations]


def test_absent_person_is_invited_with_reason() -> None:
    plan = make_plan(source(person("1", "ada@x.com")), org())
    assert plan.operations == (
        Invite(
            email="ada@x.com",
            role="reader",
            source_id="1",
            reason="member of openai-users (default role)",
        ),
    )


def test_member_found_by_normalized_email_is_not_invited() -> None:
    plan = make_plan(source(person("1", "Ada@X.com")), org(member("u1", "ada@x.com")))
    assert plan.operations == ()


def test_pending_invite_with_right_role_is_left_alone() -> None:
    plan = make_plan(source(person("1", "ada@x.com")), org(invites=(invite("i1", "ADA@x.com"),)))
    assert plan.operations == ()


def test_pending_invite_with_wrong_role_is_replaced_in_one_operation() -> None:
    plan = make_plan(
        source(person("1", "ada@x.com"), owners=("1",)), org(invites=(invite("i1", "ada@x.com"),))
    )
    (op,) = plan.operations
    assert isinstance(op, Invite)
    assert (op.role, op.replaces_invite_id) == ("owner", "i1")


def test_expired_invite_is_renewed() -> None:
    expired = invite("i1", "ada@x.com", expires_at=NOW - timedelta(days=1))
    also_expired = invite("i0", "ada@x.com", status=InviteStatus.EXPIRED)
    plan = make_plan(source(person("1", "ada@x.com")), org(invites=(also_expired, expired)))
    (op,) = plan.operations
    assert isinstance(op, Invite)
    assert op.replaces_invite_id == "i1"
    assert "expired" in op.reason


def test_accepted_invites_are_history_and_never_touched() -> None:
    accepted = invite("i1", "gone@x.com", status=InviteStatus.ACCEPTED)
    plan = make_plan(
        source(person("1", "ada@x.com")),
        org(member("u1", "ada@x.com"), invites=(accepted,)),
        policy=RemovalPolicy(remove_unmanaged=True),
    )
    assert plan.operations == ()


def test_duplicate_pending_invites_are_reduced_to_one() -> None:
    plan = make_plan(
        source(person("1", "ada@x.com")),
        org(invites=(invite("i1", "ada@x.com"), invite("i2", "ada@x.com"))),
    )
    assert ops(plan) == [("revoke_invite", "ada@x.com")]
    assert plan.operations[0].invite_id == "i2"  # type: ignore[union-attr]


def test_role_raise_and_lowering_are_separate_phases() -> None:
    people = source(person("1", "up@x.com"), person("2", "down@x.com"), owners=("1",))
    observed = org(
        member("u1", "up@x.com"),
        member("u2", "down@x.com", "owner"),
        member("k", "k@x.com", "owner"),
        key_owner="k",
    )
    plan = make_plan(people, observed)
    raise_, lower = plan.operations
    assert (
        isinstance(raise_, SetRole)
        and raise_.phase is Phase.ADD_OR_RAISE
        and raise_.role == "owner"
    )
    assert isinstance(lower, SetRole) and lower.phase is Phase.LOWER and lower.is_removal


def test_out_of_scope_member_is_removed_and_invite_revoked() -> None:
    people = snapshot(
        person("1", "ada@x.com", active=False),
        person("2", "bob@x.com"),
        groups=(group("g", "openai-users", "1"),),
    )
    observed = org(member("u1", "ada@x.com"), invites=(invite("i2", "bob@x.com"),))
    plan = make_plan(people, observed)
    assert ops(plan) == [("remove_member", "ada@x.com"), ("revoke_invite", "bob@x.com")]
    assert plan.operations[0].reason == "inactive in the source"
    assert plan.operations[1].reason == "in no scope group"


def test_unknown_unmanaged_people_are_left_alone() -> None:
    plan = make_plan(
        source(person("1", "ada@x.com")),
        org(
            member("u1", "ada@x.com"),
            member("u9", "stranger@x.com"),
            invites=(invite("i9", "visitor@x.com"),),
        ),
    )
    assert plan.operations == ()


def test_unknown_people_orgsync_managed_are_removed() -> None:
    memory = Memory(
        managed=frozenset({normalize_email("left@x.com"), normalize_email("inv@x.com")})
    )
    plan = make_plan(
        source(person("1", "ada@x.com")),
        org(
            member("u1", "ada@x.com"),
            member("u2", "left@x.com"),
            invites=(invite("i3", "inv@x.com"),),
        ),
        memory=memory,
    )
    assert ops(plan) == [("revoke_invite", "inv@x.com"), ("remove_member", "left@x.com")]


def test_unknown_people_linked_by_member_id_are_removed() -> None:
    memory = Memory(links={SourceId("old"): "u2"})
    plan = make_plan(
        source(person("1", "ada@x.com")),
        org(member("u1", "ada@x.com"), member("u2", None)),
        memory=memory,
    )
    assert ops(plan) == [("remove_member", "u2")]


def test_remove_unmanaged_removes_every_unknown_person() -> None:
    plan = make_plan(
        source(person("1", "ada@x.com")),
        org(member("u1", "ada@x.com"), member("u9", "stranger@x.com")),
        policy=RemovalPolicy(remove_unmanaged=True),
    )
    assert ops(plan) == [("remove_member", "stranger@x.com")]


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        ({"is_service_account": True}, "a service account"),
        ({"is_scim_managed": True}, "managed by another provisioner"),
    ],
)
def test_service_accounts_and_foreign_members_are_never_touched(
    flags: dict[str, bool], why: str
) -> None:
    people = snapshot(
        person("1", "x@x.com", active=False),
        person("2", "y@x.com"),
        groups=(group("o", "openai-owners", "2"),),
    )
    observed = org(
        member("u1", "x@x.com", **flags),
        member("u2", "y@x.com", "owner", **flags),
        member("u3", "z@x.com", **flags),
    )
    plan = make_plan(people, observed, policy=RemovalPolicy(remove_unmanaged=True))
    assert plan.operations == ()
    assert any(why in w for w in plan.warnings)


def test_the_api_keys_owner_is_never_touched() -> None:
    plan = make_plan(
        source(person("1", "ada@x.com")),
        org(member("u1", "ada@x.com"), member("k", "keyowner@x.com", "owner"), key_owner="k"),
        policy=RemovalPolicy(remove_unmanaged=True),
    )
    assert plan.operations == ()
    assert any("API key" in w for w in plan.warnings)


def test_protected_people_are_never_removed_demoted_or_uninvited() -> None:
    protected = frozenset({normalize_email("Boss@x.com"), normalize_email("inv@x.com")})
    people = snapshot(
        person("1", "boss@x.com"),
        person("2", "inv@x.com", active=False),
        groups=(group("g", "openai-users", "1"),),
    )
    observed = org(
        member("u1", "boss@x.com", "owner"),
        member("u2", "other-owner@x.com", "owner"),
        invites=(invite("i2", "inv@x.com"),),
    )
    plan = make_plan(
        people, observed, policy=RemovalPolicy(protected=protected, remove_unmanaged=True)
    )
    assert ops(plan) == [("remove_member", "other-owner@x.com")]


def test_the_last_owner_is_never_removed_or_demoted() -> None:
    people = snapshot(
        person("1", "a@x.com"),
        person("2", "b@x.com", active=False),
        groups=(group("g", "openai-users", "1"),),
    )
    observed = org(member("u1", "a@x.com", "owner"), member("u2", "b@x.com", "owner"))
    plan = make_plan(people, observed)
    # Demoting a@ is planned first (wanted pass), which leaves b@ as the last owner.
    assert ops(plan) == [("set_role", "a@x.com")]
    assert any("last owner" in w for w in plan.warnings)


def test_a_suspended_owner_does_not_make_the_active_one_removable() -> None:
    # Found by a property: a suspended owner (here the API key's, never touched) counted as
    # "another owner", so the only active owner was removed as unmanaged and nobody could
    # administer the organization.
    observed = org(
        member("u0", "gone@x.com", "owner", active=False),
        member("u2", "boss@x.com", "owner"),
        key_owner="u0",
    )
    plan = make_plan(
        source(person("1", "a@x.com")), observed, policy=RemovalPolicy(remove_unmanaged=True)
    )
    assert ("remove_member", "boss@x.com") not in ops(plan)
    assert any("boss@x.com" in w and "last owner" in w for w in plan.warnings)


def test_a_returning_owner_counts_as_an_owner_in_the_same_plan() -> None:
    # Re-enabling applies before removals, as raises do: the returning owner keeps the
    # organization administered, so the leaver goes now rather than on the next run.
    people = source(person("1", "back@x.com"), owners=("1",))
    observed = org(
        member("u1", "back@x.com", "owner", active=False),
        member("u2", "leaver@x.com", "owner"),
    )
    memory = Memory(managed=frozenset({normalize_email("leaver@x.com")}))
    plan = make_plan(people, observed, memory=memory)
    assert ("update_user", "back@x.com") in ops(plan)
    assert ("remove_member", "leaver@x.com") in ops(plan)


def test_suspend_where_the_target_can_remove_elsewhere() -> None:
    people = snapshot(person("1", "a@x.com", active=False), groups=())
    observed = org(member("u1", "a@x.com"))
    suspend = RemovalPolicy(on_removal="suspend")
    can = make_plan(people, observed, policy=suspend, capabilities=Capabilities(suspend=True))
    cannot = make_plan(people, observed, policy=suspend)
    assert isinstance(can.operations[0], SuspendMember)
    assert isinstance(cannot.operations[0], RemoveMember)


def test_removal_grace_keeps_missing_people_as_pending_removal() -> None:
    key = normalize_email("left@x.com")
    policy = RemovalPolicy(removal_grace=timedelta(days=3))
    observed = org(member("u1", "ada@x.com"), member("u2", "left@x.com"))
    fresh = make_plan(
        source(person("1", "ada@x.com")),
        observed,
        policy=policy,
        memory=Memory(managed=frozenset({key})),
    )
    assert fresh.operations == ()
    (waiting,) = fresh.waiting
    assert waiting.until == NOW + timedelta(days=3)
    later = Memory(managed=frozenset({key}), missing_since={key: NOW - timedelta(days=4)})
    due = make_plan(source(person("1", "ada@x.com")), observed, policy=policy, memory=later)
    assert ops(due) == [("remove_member", "left@x.com")]


def test_grace_does_not_delay_out_of_scope_removals() -> None:
    people = snapshot(person("1", "a@x.com", active=False))
    plan = make_plan(
        people, org(member("u1", "a@x.com")), policy=RemovalPolicy(removal_grace=timedelta(days=3))
    )
    assert ops(plan) == [("remove_member", "a@x.com")]


def test_duplicate_source_emails_protect_the_member_from_removal() -> None:
    people = snapshot(
        person("1", "dup@x.com"),
        person("2", "Dup@x.com"),
        groups=(group("g", "openai-users", "1", "2"),),
    )
    plan = make_plan(
        people, org(member("u1", "dup@x.com")), policy=RemovalPolicy(remove_unmanaged=True)
    )
    assert plan.operations == ()
    assert plan.warnings


def test_an_email_change_on_a_target_that_cannot_rename_is_kept_and_shown_waiting() -> None:
    memory = Memory(links={SourceId("1"): "u1"}, managed=frozenset({normalize_email("old@x.com")}))
    plan = make_plan(
        source(person("1", "new@x.com")), org(member("u1", "old@x.com")), memory=memory
    )
    assert plan.operations == (), "never a removal plus a new invitation"
    (waiting,) = plan.waiting
    assert waiting.op == "update_user"
    assert "from old@x.com" in waiting.reason and "linked by source id" in waiting.reason


def test_an_email_change_on_a_target_that_can_rename_is_a_rename() -> None:
    memory = Memory(links={SourceId("1"): "u1"}, managed=frozenset({normalize_email("old@x.com")}))
    capable = Capabilities(invites=False, create_users=True, roles=False, change_emails=True)
    plan = make_plan(
        source(person("1", "new@x.com")),
        org(member("u1", "old@x.com")),
        memory=memory,
        capabilities=capable,
    )
    (rename,) = plan.operations
    assert isinstance(rename, UpdateUser)
    assert (rename.email, rename.previous_email, rename.user_id) == ("new@x.com", "old@x.com", "u1")


def test_a_case_only_email_change_is_no_change() -> None:
    memory = Memory(links={SourceId("1"): "u1"})
    capable = Capabilities(invites=False, create_users=True, roles=False, change_emails=True)
    plan = make_plan(
        source(person("1", "Ada@X.com")),
        org(member("u1", "ada@x.com")),
        memory=memory,
        capabilities=capable,
    )
    assert plan.operations == ()
    assert plan.waiting == ()


def test_roleless_targets_plan_no_role_changes() -> None:
    plan = make_plan(
        source(person("1", "a@x.com"), owners=("1",)),
        org(member("u1", "a@x.com")),
        capabilities=Capabilities(roles=False),
    )
    assert plan.operations == ()


def test_plan_order_is_phase_then_subject() -> None:
    people = source(person("1", "b@x.com"), person("2", "a@x.com"), owners=("2",))
    observed = org(
        member("u9", "z@x.com"),
        member("u2", "a@x.com"),
        member("o", "o@x.com", "owner"),
        key_owner="o",
    )
    plan = make_plan(people, observed, policy=RemovalPolicy(remove_unmanaged=True))
    assert ops(plan) == [
        ("invite", "b@x.com"),
        ("set_role", "a@x.com"),
        ("remove_member", "z@x.com"),
    ]


def test_plan_json_matches_the_spec_shape() -> None:
    plan = make_plan(source(person("1", "ada@x.com")), org())
    document = plan.to_json()
    assert set(document) == {
        "target",
        "generated_at",
        "operations",
        "held",
        "waiting",
        "warnings",
        "checksum",
        "summary",
    }
    assert document["operations"] == [
        {
            "op": "invite",
            "email": "ada@x.com",
            "role": "reader",
            "source_id": "1",
            "replaces_invite_id": None,
            "reason": "member of openai-users (default role)",
        }
    ]
    assert document["summary"] == {"invite": 1}
    assert str(document["checksum"]).startswith("sha256:")
    assert Plan.from_json(document).checksum == plan.checksum


def test_checksum_ignores_generation_time_but_not_operations() -> None:
    one = make_plan(source(person("1", "ada@x.com")), org())
    later = make_plan(source(person("1", "ada@x.com")), org(), now=NOW + timedelta(minutes=5))
    other = make_plan(source(person("1", "bob@x.com")), org())
    assert one.checksum == later.checksum != other.checksum


def test_a_protected_person_is_not_demoted_under_an_old_email() -> None:
    """Found by the ownership property: the member linked to a protected person still
    carries their old address; the protection holds by either address."""
    source = snapshot(person("p2", "b@x.com"), groups=(group("g0", "openai-users", "p2"),))
    observed = org(member("u5", "a@x.com", "owner"), member("u6", "z@x.com", "owner"))
    plan = make_plan(
        source,
        observed,
        memory=Memory(links={SourceId("p2"): "u5"}),
        policy=RemovalPolicy(protected=frozenset({normalize_email("b@x.com")})),
    )
    assert [op for op in plan.operations if op.op == "set_role"] == []
    assert any("b@x.com" in w and "protected" in w for w in plan.warnings)


def test_two_links_to_one_member_the_one_whose_email_it_carries_wins() -> None:
    # Found by a property: both people were matched to u1 (b@ through its stale link, c@
    # by email), so the plan renamed c@'s account to b@ and back on every run.
    people = source(person("1", "c@x.com"), person("2", "b@x.com"))
    observed = org(member("u1", "c@x.com", "reader"))
    memory = Memory(links={SourceId("1"): "u1", SourceId("2"): "u1"})
    plan = make_plan(people, observed, memory=memory, capabilities=Capabilities(change_emails=True))
    assert not [op for op in plan.operations if op.op == "update_user"]
    assert ("invite", "b@x.com") in ops(plan)


def test_a_reused_address_does_not_inherit_the_account_it_was_on() -> None:
    # Ada (source id 1) is now ada.l@; her old address was given to a newcomer. Ada keeps
    # her account (renamed); the newcomer waits until the address is free, never getting
    # Ada's account (and groups) by email.
    people = source(person("1", "ada.l@x.com"), person("2", "ada@x.com"))
    observed = org(member("u1", "ada@x.com", "reader"))
    memory = Memory(links={SourceId("1"): "u1"})
    plan = make_plan(people, observed, memory=memory, capabilities=Capabilities(change_emails=True))
    assert ops(plan) == [("update_user", "ada.l@x.com")]
    assert [(w.op, w.email) for w in plan.waiting] == [("invite", "ada@x.com")]


def test_a_second_account_carrying_the_address_is_matched_instead_of_waiting() -> None:
    # Found by the gate property: the target carries ada@ on two accounts (a provider
    # allowing duplicates); Ada's old account u1 is another person's by link, so the
    # newcomer takes the free duplicate u2 at once rather than waiting one run for the
    # rename (and joining their groups a run late).
    people = source(person("1", "ada.l@x.com"), person("2", "ada@x.com"))
    observed = org(member("u1", "ada@x.com", "reader"), member("u2", "ada@x.com", "reader"))
    memory = Memory(links={SourceId("1"): "u1"})
    plan = make_plan(people, observed, memory=memory, capabilities=Capabilities(change_emails=True))
    assert ops(plan) == [("update_user", "ada.l@x.com")]
    assert plan.waiting == ()
