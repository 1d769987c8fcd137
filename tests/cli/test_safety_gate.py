"""Issue 9, items 3-5, as an administrator meets them: `orgsync` against the OpenAI emulator.

- one gate for every access removal: a truncated source empties no group;
- a suspect source (people swapped for strangers) sends no invitation;
- the ratio guard leaves small organizations alone and counts only managed people.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cli.harness import Rig, directory

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

TEAM_RULE = """
[[targets.groups]]
source = "team-*"
name = "{source}"
"""


def with_team(document: dict[str, Any], members: list[str]) -> dict[str, Any]:
    return {
        **document,
        "groups": [*document["groups"], {"id": "t", "name": "team-ml", "members": members}],
    }


def sync_json(rig: Rig, *args: str) -> tuple[int, dict[str, Any]]:
    result = rig.orgsync("sync", "--json", *args)
    assert result.returncode in (0, 2, 3), result.stdout + result.stderr
    (plan,) = json.loads(result.stdout)["targets"]
    return result.returncode, plan


def other_tenant(count: int) -> dict[str, Any]:
    """A directory of `count` people none of whom is in the organization (other ids, other
    e-mails), shaped as `directory(count)`."""
    document = directory(count, owners=0)
    for entry in document["people"]:
        entry["id"] = "s" + entry["id"]
        entry["email"] = entry["email"].replace("@example.com", "@other-tenant.example")
    for group in document["groups"]:
        group["members"] = ["s" + member for member in group["members"]]
    return document


def seed_members(rig: Rig, count: int) -> None:
    for i in range(count):
        rig.emulator.state.add_user(f"person{i}@example.com", "reader")


def team_members(rig: Rig) -> int:
    (team,) = [g for g in rig.emulator.state.groups() if g["name"] == "team-ml"]
    return len(team["members"])


def test_a_truncated_source_removes_nobody_from_the_organization_or_its_groups(rig: Rig) -> None:
    """3 of 12 people come back: 9 removals and 9 group member removals, all held."""
    rig.safety = ""  # the defaults: max_removals = 10, ratio 5% from 20 managed people
    rig.extra_target = TEAM_RULE
    seed_members(rig, 12)
    everyone = [f"p{i}" for i in range(12)]
    rig.write(with_team(directory(12, owners=0), everyone))
    assert rig.orgsync("sync").returncode == 0
    assert team_members(rig) == 12

    rig.write(with_team(directory(12, owners=0), []))  # the group's members did not come back
    code, plan = sync_json(rig)
    assert code == 3
    assert [h["op"] for h in plan["held"]] == ["remove_group_member"] * 12
    assert plan["held"][0]["guard"] == "12 removals exceed safety.max_removals = 10"
    assert team_members(rig) == 12, "a truncated IdP read must not empty groups"

    truncated = directory(3, owners=0)
    rig.write(with_team(truncated, ["p0", "p1", "p2"]))
    writes = len(rig.emulator.writes())
    code, plan = sync_json(rig)
    assert code == 3
    assert sorted({h["op"] for h in plan["held"]}) == ["remove_group_member", "remove_member"]
    assert len(plan["held"]) == 18
    assert len(rig.emulator.writes()) == writes, "nothing held was applied"
    assert team_members(rig) == 12

    human = rig.orgsync("sync", "--dry-run").stdout
    assert "Held by the safety gate: 18 removals exceed safety.max_removals = 10" in human
    assert "orgsync sync --allow-removals 18" in human
    assert rig.orgsync("sync", "--allow-removals", "18").returncode == 0
    assert team_members(rig) == 3


def test_a_source_pointed_at_the_wrong_tenant_sends_no_invitation(rig: Rig) -> None:
    """12 members managed; the source now lists 12 strangers: no e-mail goes out."""
    rig.safety = ""
    seed_members(rig, 12)
    rig.write(directory(12, owners=0))
    assert rig.orgsync("sync").returncode == 0  # links them: orgsync manages them now
    rig.write(other_tenant(12))

    code, plan = sync_json(rig)
    assert code == 3
    assert plan["operations"] == []
    held_invites = [h for h in plan["held"] if h["op"] == "invite"]
    assert len(held_invites) == 12
    assert held_invites[0]["guard"] == (
        "the source looks wrong (12 managed people missing from the source exceed "
        "safety.max_removals = 10): nobody new is let in until it is checked"
    )
    assert rig.emulator.state.invites() == [], "invitations are e-mails: none may go out"

    code, plan = sync_json(rig, "--dry-run", "--allow-removals", "12")
    assert code == 3, "--allow-removals lifts removals only"
    assert {h["op"] for h in plan["held"]} == {"invite"}
    human = rig.orgsync("sync", "--dry-run").stdout
    assert "orgsync sync --allow-removals 12 --allow-additions 12" in human

    code, plan = sync_json(rig, "--allow-additions", "12")
    assert code == 3, "the removals are still held"
    assert len(rig.emulator.state.invites()) == 12
    assert {h["op"] for h in plan["held"]} == {"remove_member"}


def test_people_waiting_out_removal_grace_still_make_the_source_suspect(rig: Rig) -> None:
    rig.safety = 'removal_grace = "7d"'
    seed_members(rig, 12)
    rig.write(directory(12, owners=0))
    assert rig.orgsync("sync").returncode == 0
    rig.write(other_tenant(12))
    code, plan = sync_json(rig)
    assert code == 3
    assert len(plan["waiting"]) == 12
    assert [h["op"] for h in plan["held"]] == ["invite"] * 12
    assert rig.emulator.state.invites() == []


def test_a_first_sync_invites_everyone_without_an_override(rig: Rig) -> None:
    rig.safety = ""
    for i in range(5):
        rig.emulator.state.add_user(f"already{i}@example.com", "reader")  # not orgsync's
    rig.write(directory(40, owners=1))
    result = rig.orgsync("sync")
    assert result.returncode == 0, result.stdout
    assert len(rig.emulator.state.invites()) == 40
    rig.safety = "max_additions = 5"
    rig.write(directory(50, owners=1))
    code, plan = sync_json(rig)
    assert code == 3
    assert plan["held"][0]["guard"] == "10 additions exceed safety.max_additions = 5"


def test_one_leaver_in_a_small_organization_is_not_held(rig: Rig) -> None:
    """Issue 9.5: with the default ratio (5%), the first leaver of 11 exited 3."""
    rig.safety = ""
    seed_members(rig, 11)
    rig.write(directory(11, owners=0))
    assert rig.orgsync("sync").returncode == 0
    rig.write(directory(11, owners=0, inactive=(4,)))
    dry = rig.orgsync("sync", "--dry-run")
    assert dry.returncode == 2, dry.stdout
    assert rig.orgsync("sync").returncode == 0
    assert "person4@example.com" not in {u["email"] for u in rig.emulator.state.users()}


def test_members_who_joined_by_invitation_count_once(rig: Rig) -> None:
    """25 members, each with their accepted invitation: 2 leavers are 8% of 25, not 4% of 51."""
    rig.safety = ""
    for i in range(25):
        rig.emulator.state.accept_invite(
            rig.emulator.state.add_invite(f"person{i}@example.com", "reader")
        )
    rig.write(directory(25, owners=0))
    assert rig.orgsync("sync").returncode == 0
    rig.write(directory(25, owners=0, inactive=(3, 7)))
    code, plan = sync_json(rig, "--dry-run")
    assert code == 3
    assert plan["held"][0]["guard"] == (
        "2 removals of 25 managed people (8%) exceed safety.max_removal_ratio = 0.05"
    )
