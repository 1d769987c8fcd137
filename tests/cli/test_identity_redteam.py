"""Red team: who a person is, end to end (the real `orgsync` command, the OpenAI emulator
over loopback, a real SQLite state database), over several syncs, since links written by
one sync decide the next.

- An attacker who can edit their IdP email sets it to an unmanaged owner's address: the
  first sync lowered the owner and removed the attacker's own account, and linked the
  attacker to the owner's account. Now nothing changes, sync after sync.
- Ada's address is reused for a newcomer while Ada moves to a new one (OpenAI cannot
  rename): the first sync linked the newcomer to Ada's account (it carried the address),
  so the second handed it to the newcomer and invited Ada afresh. Now Ada keeps it.
- A typo gives one person another's address: the one who lost theirs was removed.
- One mailbox with a Punycode domain in the organization and a Unicode one in the IdP:
  removed under `remove_unmanaged` and invited again.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from orgsync.store import StateStore
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import Rig, directory

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


def accept_all(emulator: OpenAIEmulator) -> None:
    for pending in emulator.state.invites():
        if pending["status"] == "pending":
            emulator.state.accept_invite(str(pending["id"]))


def members(emulator: OpenAIEmulator) -> dict[str, tuple[str, str]]:
    """email -> (user id, role), the key's owner left out."""
    state = emulator.state
    return {
        str(u["email"]): (str(u["id"]), str(u["role"]))
        for u in state.users()
        if u["id"] != state.key_owner_id
    }


def synced(rig: Rig, document: dict[str, Any], *args: str) -> dict[str, Any]:
    rig.write(document)
    result = rig.orgsync("sync", "--json", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (target,) = json.loads(result.stdout)["targets"]
    return dict(target)


def onboarded(rig: Rig, emulator: OpenAIEmulator, document: dict[str, Any]) -> None:
    """Everyone invited, every invitation accepted, and a sync that links them (and
    puts them in their groups, which an invitation cannot)."""
    synced(rig, document)
    accept_all(emulator)
    synced(rig, document)
    assert synced(rig, document)["operations"] == []


def test_an_email_changed_to_an_unmanaged_owners_address_takes_nothing(
    rig: Rig, emulator: OpenAIEmulator
) -> None:
    emulator.state.add_user("ceo@example.com", "owner")  # an owner orgsync never managed
    document = directory(3)
    onboarded(rig, emulator, document)
    before = members(emulator)

    document["people"][2]["email"] = "CEO@example.com"  # person2 edits their profile
    for _ in range(2):
        plan = synced(rig, document)
        assert plan["operations"] == [] and plan["held"] == []
        (waiting,) = plan["waiting"]
        assert "already carries the new address" in waiting["reason"]
        assert members(emulator) == before, "nobody lowered, nobody removed"
    with StateStore.open(rig.folder / "state.db") as store:
        links = store.memory("openai-test").links
    assert links["p2"] == before["person2@example.com"][0]
    assert before["ceo@example.com"][0] not in links.values()
    explained = rig.orgsync("explain", "p2")
    assert "already carries the new address" in explained.stdout, explained.stdout
    assert "missing from the source" not in explained.stdout, explained.stdout

    # A webhook naming them (a targeted run) decides the same.
    rig.write(document)
    only = rig.orgsync("sync", "--only", "p2", "--json")
    assert only.returncode == 0, only.stdout[-3000:] + only.stderr[-3000:]
    assert json.loads(only.stdout)["targets"][0]["operations"] == []
    assert members(emulator) == before

    # Back to their own address: still their own account, and the CEO untouched.
    document["people"][2]["email"] = "person2@example.com"
    assert synced(rig, document)["operations"] == []
    assert members(emulator) == before


def test_a_reused_address_never_hands_the_account_over_on_a_later_sync(
    rig: Rig, emulator: OpenAIEmulator
) -> None:
    document = directory(2)
    onboarded(rig, emulator, document)
    ada = members(emulator)["person1@example.com"][0]

    # Ada moves to a new address; a newcomer gets her old one, in the same export.
    document["people"][1]["email"] = "ada.new@example.com"
    document["people"].append({"id": "p9", "email": "person1@example.com", "name": "New"})
    document["groups"][0]["members"].append("p9")
    for _ in range(3):
        plan = synced(rig, document)
        assert plan["operations"] == [], plan["operations"]
        assert {w["email"] for w in plan["waiting"]} == {
            "ada.new@example.com",
            "person1@example.com",
        }
        assert members(emulator)["person1@example.com"][0] == ada
        assert emulator.state.invites() == [
            i for i in emulator.state.invites() if i["status"] != "pending"
        ]
    with StateStore.open(rig.folder / "state.db") as store:
        links = store.memory("openai-test").links
    assert links.get("p1") == ada and "p9" not in links


def test_a_typo_giving_one_person_anothers_address_removes_nobody(
    rig: Rig, emulator: OpenAIEmulator
) -> None:
    document = directory(3)
    onboarded(rig, emulator, document)
    before = members(emulator)

    document["people"][2]["email"] = "Person1@Example.com"
    plan = synced(rig, document)
    assert plan["operations"] == [] and plan["held"] == []
    assert any("share the email" in w for w in plan["warnings"])
    assert members(emulator) == before

    document["people"][2]["email"] = "person2@example.com"  # the typo corrected
    assert synced(rig, document)["operations"] == []
    assert members(emulator) == before


def test_a_punycode_member_is_the_unicode_idp_person(rig: Rig, emulator: OpenAIEmulator) -> None:
    rig.safety += "\nremove_unmanaged = true"
    emulator.state.add_user("zoe@xn--bcher-kva.example", "reader")
    document = directory(1)
    document["people"].append({"id": "pz", "email": "zoe@bücher.example", "name": "Zoë"})
    document["groups"][0]["members"].append("pz")
    plan = synced(rig, document)
    assert [(op["op"], op["email"]) for op in plan["operations"]] == [
        ("invite", "person0@example.com")
    ]
    assert "zoe@xn--bcher-kva.example" in members(emulator)
    # `explain` finds the person under either spelling.
    for spelling in ("ZOE@XN--BCHER-KVA.example", "zoe@bücher.example"):
        explained = rig.orgsync("explain", spelling)
        assert explained.returncode == 0, explained.stdout + explained.stderr[-2000:]
        assert "zoe@xn--bcher-kva.example" in explained.stdout, explained.stdout


def test_an_idp_group_named_after_a_privileged_group_gets_none_of_it(
    rig: Rig, emulator: OpenAIEmulator
) -> None:
    """An IdP user who may create groups names one after the organization's hand-made
    `team-admins`, which grants the owner role. Before: adopted, the creator added while
    it still granted owner, its members removed. Now it is left alone, named."""
    rig.extra_target = '[[targets.groups]]\nsource = "team-*"\n'
    document = directory(3)
    onboarded(rig, emulator, document)
    state = emulator.state
    ids = {email: uid for email, (uid, _) in members(emulator).items()}
    admins = state.add_group("team-admins")
    state.add_group_member(admins, ids["person0@example.com"])
    state.assign_group_role(admins, state.role_id("owner"))

    document["groups"].append({"id": "g-mal", "name": "team-admins", "members": ["p2"]})
    plan = synced(rig, document)
    assert plan["operations"] == [] and plan["held"] == []
    assert any("holds roles the rule does not give (owner)" in w for w in plan["warnings"])
    (group,) = [g for g in state.groups() if g["name"] == "team-admins"]
    assert group["members"] == [ids["person0@example.com"]]
    assert group["roles"] == [state.role_id("owner")]


def test_an_invited_person_moving_to_an_owners_address_is_not_given_the_account(
    rig: Rig, emulator: OpenAIEmulator
) -> None:
    emulator.state.add_user("ceo@example.com", "owner")
    document = directory(3)
    synced(rig, document)  # invited; person2 never accepts
    for pending in emulator.state.invites():
        if pending["email"] != "person2@example.com":
            emulator.state.accept_invite(str(pending["id"]))
    synced(rig, document)
    ceo = members(emulator)["ceo@example.com"]

    document["people"][2]["email"] = "ceo@example.com"
    synced(rig, document)
    document["people"].pop(2)  # then they leave
    document["groups"][0]["members"].remove("p2")
    synced(rig, document)
    assert members(emulator)["ceo@example.com"] == ceo, "the CEO is neither lowered nor removed"


def test_a_re_created_person_keeps_their_account(rig: Rig, emulator: OpenAIEmulator) -> None:
    """Deleted and re-created in the IdP (a re-hire): a new source id, the same address.
    The account is kept (no removal, no second invitation), the link moves to the new id,
    and the plan names both ids."""
    document = directory(3)
    onboarded(rig, emulator, document)
    before = members(emulator)
    document["people"][1]["id"] = "p1-rehired"
    document["groups"][0]["members"][1] = "p1-rehired"
    plan = synced(rig, document)
    assert plan["operations"] == [] and plan["held"] == []
    assert any("'p1'" in w and "'p1-rehired'" in w for w in plan["warnings"])
    assert members(emulator) == before
    with StateStore.open(rig.folder / "state.db") as store:
        assert store.memory("openai-test").links["p1-rehired"] == before["person1@example.com"][0]
    assert synced(rig, document)["warnings"] == []


def test_an_idp_group_renamed_to_a_privileged_groups_name_keeps_its_own(
    rig: Rig, emulator: OpenAIEmulator
) -> None:
    """The mirrored group was renamed into the hand-made group's name, which the API
    refused (409 group_name_taken) on every run: a target failing until quarantined."""
    rig.extra_target = '[[targets.groups]]\nsource = "team-*"\n'
    document = directory(3)
    document["groups"].append({"id": "g-a", "name": "team-a", "members": ["p2"]})
    onboarded(rig, emulator, document)
    state = emulator.state
    admins = state.add_group("team-admins")
    state.assign_group_role(admins, state.role_id("owner"))

    document["groups"][-1]["name"] = "team-admins"
    plan = synced(rig, document)
    assert plan["operations"] == [], plan["operations"]
    assert any("keeps its name" in w for w in plan["warnings"])
    assert sorted(g["name"] for g in state.groups()) == ["team-a", "team-admins"]
