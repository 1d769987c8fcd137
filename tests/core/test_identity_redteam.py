"""Red team: who a person is (core rules and planner, docs/reference.md "Matching").

How matching could hurt an administrator, tried as a careless IdP admin and as someone who
controls some IdP attributes (a self-service profile edit, a SCIM client, a file export):

- takeover: a person linked to their account sets their IdP email to another account's
  address (an owner orgsync does not manage, another managed person). It was taken: the
  owner's role was set by their rules (an owner lowered to reader), their own account
  removed, and the link moved to the owner's account, so the owner would be removed when
  they leave (and on a SCIM target renamed to their address). Fixed: a linked person stays
  on their account; the other account is never taken for them.
- lost access: two IdP people given one address by a typo. Neither is acted on (held),
  but the account or invitation linked to the one who lost their own address was removed
  as "no longer in the source". Fixed: they are held as a rejected record is.
- duplicate accounts: one mailbox spelt with a Punycode domain on one side and Unicode on
  the other was two people: the member taken for a stranger (removed under
  `remove_unmanaged`) and the person invited again. Fixed: one key.
- held already (kept as regression tests): case, NFC/NFD, full-width letters and
  surrounding whitespace make one key; a Cyrillic look-alike, plus-addressing make
  another person, whose plan touches nobody else; a trailing dot, a zero-width space, a
  right-to-left override are rejected records, never acted on; a swap of addresses
  between two people keeps each on their own account; a re-created person (new source
  id, same address) keeps the account, now with a warning naming both ids.
"""

from __future__ import annotations

import unicodedata

from orgsync.core.model import Capabilities, Memory, SourceId, normalize_email
from orgsync.core.plan import Plan
from orgsync.core.planner import RemovalPolicy
from tests.coremodels import (
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

SCIM_LIKE = Capabilities(invites=False, create_users=True, roles=False, change_emails=True)


def source(*people, owners: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    return snapshot(
        *people,
        groups=(
            group("g", "openai-users", *(p.id for p in people)),
            group("o", "openai-owners", *owners),
        ),
    )


def ops(plan: Plan) -> list[tuple[str, str]]:
    return [(op.op, op.subject) for op in plan.operations] + [
        (h.operation.op, h.operation.subject) for h in plan.held
    ]


def linked(**links: str) -> Memory:
    """Memory of people linked by source id, each under their member's address."""
    return Memory(
        links={SourceId(s): m for s, m in links.items()},
        managed=frozenset(normalize_email(f"{s}@x.com") for s in links),
        linked_sources={normalize_email(f"{s}@x.com"): SourceId(s) for s in links},
    )


def test_an_email_changed_to_an_unmanaged_owners_address_takes_nothing() -> None:
    """Mallory (linked to u-mal) sets her IdP email to the CEO's, an owner orgsync never
    managed. The CEO keeps their role and account; Mallory keeps hers; the plan says why."""
    observed = org(
        member("u-mal", "mal@x.com"),
        member("u-ceo", "ceo@x.com", "owner"),
        member("u-cto", "cto@x.com", "owner"),
    )
    for capabilities in (Capabilities(), SCIM_LIKE):
        plan = make_plan(
            source(person("mal", "CEO@x.com")),
            observed,
            memory=linked(mal="u-mal"),
            capabilities=capabilities,
        )
        assert ops(plan) == [], plan.operations
        (waiting,) = plan.waiting
        assert waiting.op == "update_user"
        assert "member u-ceo already carries the new address" in waiting.reason
        assert "member u-mal is kept" in waiting.reason
        # What a sync links afterwards: Mallory's account, never the CEO's.
        assert dict(plan.matches) == {normalize_email("ceo@x.com"): "u-mal"}


def test_an_email_changed_to_another_managed_persons_address_removes_nobody() -> None:
    """A typo (or an attacker) gives Carol Bob's address: both are held, and Carol's own
    account and Bob's stay as they are."""
    observed = org(member("u-bob", "bob@x.com"), member("u-carol", "carol@x.com"))
    plan = make_plan(
        source(person("bob", "bob@x.com"), person("carol", "Bob@x.com ")),
        observed,
        memory=linked(bob="u-bob", carol="u-carol"),
    )
    assert ops(plan) == []
    assert any("share the email 'bob@x.com'" in w for w in plan.warnings)
    assert any(w.startswith("carol@x.com:") and "shared email" in w for w in plan.warnings)


def test_a_shared_address_keeps_the_invitation_of_the_one_who_lost_theirs() -> None:
    observed = org(member("u-bob", "bob@x.com"), invites=(invite("i-carol", "carol@x.com"),))
    plan = make_plan(
        source(person("bob", "bob@x.com"), person("carol", "bob@x.com")),
        observed,
        memory=linked(bob="u-bob", carol="u-never-accepted"),
    )
    assert ops(plan) == []
    assert any("invitation kept" in w for w in plan.warnings)


def test_a_punycode_domain_and_its_unicode_form_are_one_person() -> None:
    assert normalize_email("Alice@XN--BCHER-KVA.de") == normalize_email("alice@bücher.de")
    assert normalize_email("a@xn--e1afmkfd.xn--p1ai") == "a@пример.рф"
    assert normalize_email("a@xn--zz.de") == "a@xn--zz.de"  # no valid Punycode: as written
    plan = make_plan(
        source(person("1", "alice@bücher.de")),
        org(member("u1", "alice@xn--bcher-kva.de")),
        policy=RemovalPolicy(remove_unmanaged=True),
    )
    assert ops(plan) == [], "neither a second invitation nor the member removed"
    both = make_plan(
        source(person("1", "alice@bücher.de"), person("2", "alice@xn--bcher-kva.de")),
        org(),
    )
    assert ops(both) == []
    assert any("share the email" in w for w in both.warnings)


def test_case_unicode_forms_width_and_spaces_are_one_person() -> None:
    composed = "zoë@x.com"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    for spelling in (decomposed, " ZOË@X.COM\t", "ｚｏë@x.com"):
        plan = make_plan(
            source(person("1", spelling)),
            org(member("u1", composed)),
            policy=RemovalPolicy(remove_unmanaged=True),
        )
        assert ops(plan) == [], spelling


def test_a_look_alike_or_plus_address_is_another_person_who_touches_nobody_else() -> None:
    """A Cyrillic 'a' (U+0430) or a +tag is another mailbox: invited as written, and the owner whose
    address it imitates is neither matched, lowered nor removed."""
    observed = org(member("u-ceo", "ceo@x.com", "owner"), member("u-2", "b@x.com", "owner"))
    for address in ("сeo@x.com", "ceo+x@x.com", "ceo@exаmple.com"):
        plan = make_plan(source(person("1", address)), observed)
        assert ops(plan) == [("invite", address)], address
        assert dict(plan.matches) == {}
        # The reviewer reading "invite ceo@x.com" is told it is not what it reads as.
        mixes = [w for w in plan.warnings if "mixes scripts (CYRILLIC, LATIN)" in w]
        assert len(mixes) == (0 if address.isascii() else 1), plan.warnings
    for own_script in ("иван@example.com", "山田たろう@例え.jp", "zoë@bücher.de"):
        assert make_plan(source(person("1", own_script)), observed).warnings == ()


def test_addresses_with_invisible_or_trailing_characters_are_rejected_records() -> None:
    """A trailing dot, a zero-width space or a right-to-left override is no address: the
    record is reported and its linked member kept (never matched to 'ceo@x.com')."""
    observed = org(member("u-ceo", "ceo@x.com", "owner"), member("u-1", "one@x.com"))
    for address in ("ceo@x.com.", "ce\u200bo@x.com", "ceo\u202e@x.com"):
        plan = make_plan(
            source(person("one", address)),
            observed,
            memory=linked(one="u-1"),
            policy=RemovalPolicy(remove_unmanaged=True),
        )
        assert ops(plan) == [], address
        assert any("source record 'one' rejected" in w for w in plan.warnings)


def test_two_people_swapping_addresses_keep_their_own_accounts() -> None:
    observed = org(member("u-a", "a@x.com"), member("u-b", "b@x.com", "owner"))
    memory = Memory(links={SourceId("a"): "u-a", SourceId("b"): "u-b"})
    plan = make_plan(
        source(person("a", "b@x.com"), person("b", "a@x.com"), owners=("b",)),
        observed,
        memory=memory,
    )
    assert ops(plan) == []
    assert dict(plan.matches) == {"b@x.com": "u-a", "a@x.com": "u-b"}
    assert sorted(w.op for w in plan.waiting) == ["update_user", "update_user"]
    # Where emails can be changed, each rename waits for the other (the server would
    # refuse both as taken); a chain (b@ leaves its address for a new one) goes a run apart.
    renaming = make_plan(
        source(person("a", "b@x.com"), person("b", "a@x.com")),
        observed,
        memory=memory,
        capabilities=SCIM_LIKE,
    )
    assert ops(renaming) == []
    assert all("swapped addresses" in w.reason for w in renaming.waiting)
    assert len(renaming.waiting) == 2
    chain = make_plan(
        source(person("a", "b@x.com"), person("b", "b2@x.com")),
        observed,
        memory=memory,
        capabilities=SCIM_LIKE,
    )
    assert ops(chain) == [("update_user", "b2@x.com")]
    assert [w.email for w in chain.waiting] == ["b@x.com"]


def test_a_re_created_person_keeps_the_account_and_the_plan_names_both_ids() -> None:
    """Deleted and re-created in the IdP (new source id, same address): the account is
    kept, not removed and invited again; the warning says which id took whose account."""
    plan = make_plan(
        source(person("new-id", "ada@x.com")),
        org(member("u1", "ada@x.com")),
        memory=linked(ada="u1"),
    )
    assert ops(plan) == []
    assert dict(plan.matches) == {"ada@x.com": "u1"}
    (warning,) = plan.warnings
    assert "member u1 was linked to source id 'ada'" in warning
    assert "'new-id'" in warning


def test_an_owner_renamed_into_an_address_another_member_holds_is_not_renamed() -> None:
    """On a target that renames (SCIM userName), renaming into an address another account
    keeps would be refused by the server on every run: it waits, named."""
    plan = make_plan(
        source(person("a", "taken@x.com")),
        org(member("u-a", "a@x.com"), member("u-t", "taken@x.com")),
        memory=linked(a="u-a"),
        capabilities=SCIM_LIKE,
    )
    assert ops(plan) == []
    assert [w.op for w in plan.waiting] == ["update_user"]


def test_an_idp_group_named_after_a_privileged_hand_made_group_does_not_adopt_it() -> None:
    """Whoever can create an IdP group the rule `team-*` selects names it after the
    organization's hand-made 'team-admins', which grants the owner role: the group was
    adopted, its owner role unassigned only after the creator was added (additions apply
    first, and the gate may hold the unassignment), its own members taken out. A group
    holding roles beyond the rule's is now left alone, with a warning saying why."""
    people = snapshot(
        person("1", "a@x.com"),
        person("3", "mal@x.com"),
        groups=(group("g", "openai-users", "1", "3"), group("ga", "team-admins", "3")),
    )
    hand_made = target_group("tg", "team-admins", ("u1",), ("role-owner",))
    members = (member("u1", "a@x.com"), member("u3", "mal@x.com"))
    plan = make_plan(people, org_with_groups(hand_made, members=members))
    assert ops(plan) == []
    assert any("holds roles the rule does not give (owner)" in w for w in plan.warnings)
    # A group granting what the rule grants (or nothing) is still adopted on first sight.
    plain = target_group("tg", "team-admins", ("u1",), ("role-ml",))
    adopted = make_plan(people, org_with_groups(plain, members=members))
    assert ("adopt_group", "team-admins") in [
        (op.op, getattr(op, "group", "")) for op in adopted.operations
    ]


def test_an_invited_person_moving_to_an_unmanaged_owners_address_is_not_given_it() -> None:
    """Mallory has only a pending invitation (no account, so no member link) and sets
    her IdP email to the CEO's: she was matched to the CEO's account by email, which
    orgsync then managed (its role set by her rules, removed when she leaves). A person
    orgsync knows under another address is not adopted onto an unmanaged account."""
    observed = org(
        member("u-ceo", "ceo@x.com", "owner"),
        member("u-cto", "cto@x.com", "owner"),
        invites=(invite("i-mal", "mal@x.com"),),
    )
    memory = Memory(
        managed=frozenset({normalize_email("mal@x.com")}),
        linked_sources={normalize_email("mal@x.com"): SourceId("mal")},
    )
    plan = make_plan(source(person("mal", "ceo@x.com")), observed, memory=memory)
    assert [op for op in plan.operations if getattr(op, "user_id", None) == "u-ceo"] == []
    assert dict(plan.matches) == {}
    assert any("which orgsync does not manage" in w.reason for w in plan.waiting)
    # A person orgsync never met is still matched by email on first sight (onboarding).
    fresh = make_plan(source(person("new", "ceo@x.com")), observed)
    assert dict(fresh.matches) == {"ceo@x.com": "u-ceo"}


def test_an_idp_group_renamed_to_a_hand_made_groups_name_keeps_its_own_name() -> None:
    """Renamed in the IdP to 'team-admins', which a hand-made group granting owner has:
    the mirrored group was renamed too, which OpenAI refuses (409, every run: a target
    failing until quarantined) and a target allowing it shows as two 'team-admins', one
    of them orgsync's ordinary group dressed as the privileged one."""
    people = snapshot(
        person("1", "a@x.com"),
        person("3", "mal@x.com"),
        groups=(group("g", "openai-users", "1", "3"), group("ga", "team-admins", "3")),
    )
    observed = org_with_groups(
        target_group("tx", "team-a", ("u3",)),
        target_group("tg", "team-admins", ("u1",), ("role-owner",)),
        members=(member("u1", "a@x.com"), member("u3", "mal@x.com")),
    )
    memory = Memory(
        links={SourceId("1"): "u1", SourceId("3"): "u3"}, owned_groups={"tx": SourceId("ga")}
    )
    plan = make_plan(people, observed, memory=memory)
    assert [op.op for op in plan.operations] == ["assign_group_role"]  # the rule's own role
    assert plan.operations[0].group == "team-a"  # type: ignore[union-attr]
    assert any("group 'team-a' keeps its name" in w for w in plan.warnings)


def test_an_email_set_to_the_key_owners_address_changes_nothing_of_theirs() -> None:
    """A new IdP record carrying the address of the identity behind orgsync's key (or a
    service account) is matched on first sight, but that member is never changed: not
    lowered now, not removed when the record goes."""
    observed = org(
        member("u-key", "key@x.com", "owner"),
        member("u-svc", "svc@x.com", "reader", is_service_account=True),
        member("u-2", "two@x.com", "owner"),
        key_owner="u-key",
    )
    plan = make_plan(source(person("m1", "key@x.com"), person("m2", "svc@x.com")), observed)
    assert ops(plan) == []
    gone = make_plan(
        source(),
        observed,
        memory=Memory(links={SourceId("m1"): "u-key", SourceId("m2"): "u-svc"}),
    )
    assert ops(gone) == []
