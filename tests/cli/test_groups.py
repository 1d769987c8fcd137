"""Groups end to end: IdP teams mirrored as target groups through the CLI and the emulator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cli.harness import Rig

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

GROUP_RULE = """
[[targets.groups]]
source = "team-*"
name = "{source}"
roles = ["ml-engineer"]
"""


def team_directory(
    team_ml: list[str], *, team_name: str = "team-ml", with_data: bool = True
) -> dict[str, Any]:
    people = [
        {"id": f"p{i}", "email": f"person{i}@example.com", "name": f"P {i}"} for i in range(5)
    ]
    groups = [
        {"id": "g-users", "name": "openai-users", "members": [p["id"] for p in people]},
        {"id": "g-owners", "name": "openai-owners", "members": []},
    ]
    if team_ml is not None:
        groups.append({"id": "t-ml", "name": team_name, "members": team_ml})
    if with_data:
        groups.append({"id": "t-data", "name": "team-data", "members": ["p3"]})
    return {"people": people, "groups": groups}


def setup_org(rig: Rig) -> dict[str, str]:
    state = rig.emulator.state
    ids = {f"p{i}": state.add_user(f"person{i}@example.com", "reader") for i in (0, 1, 3, 4)}
    state.add_invite("person2@example.com", "reader")  # invited, not yet accepted
    state.add_role("ml-engineer", ["api.model.read"])
    rig.extra_target = GROUP_RULE
    return ids


def groups_by_name(rig: Rig) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in rig.emulator.state.groups()}


def plan_json(rig: Rig) -> dict[str, Any]:
    result = rig.orgsync("sync", "--dry-run", "--json")
    assert result.returncode in (0, 2, 3), result.stdout + result.stderr
    (plan,) = json.loads(result.stdout)["targets"]
    return plan  # type: ignore[no-any-return]


def test_teams_become_groups_with_roles_and_invitees_wait(rig: Rig) -> None:
    ids = setup_org(rig)
    rig.write(team_directory(["p0", "p1", "p2"]))
    plan = plan_json(rig)
    assert {op["op"] for op in plan["operations"]} >= {
        "create_group",
        "add_group_member",
        "assign_group_role",
    }
    assert all("group" in op and "group_id" in op for op in plan["operations"] if "group" in op)
    assert [(w["email"], w["group"]) for w in plan["waiting"]] == [
        ("person2@example.com", "team-ml")
    ]
    human = rig.orgsync("sync", "--dry-run").stdout
    assert "Group team-ml (new)" in human and "Group team-data (new)" in human
    result = rig.orgsync("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    groups = groups_by_name(rig)
    role_ml = rig.emulator.state.role_id("ml-engineer")
    assert set(groups["team-ml"]["members"]) == {ids["p0"], ids["p1"]}
    assert groups["team-ml"]["roles"] == [role_ml]
    assert set(groups["team-data"]["members"]) == {ids["p3"]}
    again = plan_json(rig)
    assert again["operations"] == []
    assert len(again["waiting"]) == 1
    assert rig.orgsync("sync", "--dry-run").returncode == 0, "waiting memberships are not drift"
    # Acceptance: the next run adds the new member to the group.
    invite = next(i for i in rig.emulator.state.invites() if i["email"] == "person2@example.com")
    new_user = rig.emulator.state.accept_invite(invite["id"])
    assert rig.orgsync("sync").returncode == 0
    assert new_user in groups_by_name(rig)["team-ml"]["members"]
    assert plan_json(rig)["waiting"] == []


def test_a_renamed_team_is_renamed_in_place(rig: Rig) -> None:
    setup_org(rig)
    rig.write(team_directory(["p0"]))
    assert rig.orgsync("sync").returncode == 0
    before = groups_by_name(rig)["team-ml"]["id"]
    rig.write(team_directory(["p0"], team_name="team-ai"))
    plan = plan_json(rig)
    assert [op["op"] for op in plan["operations"]] == ["rename_group"]
    assert rig.orgsync("sync").returncode == 0
    assert groups_by_name(rig)["team-ai"]["id"] == before
    assert "team-ml" not in groups_by_name(rig)


def test_existing_groups_are_adopted_by_exact_name_and_scim_groups_left_alone(rig: Rig) -> None:
    ids = setup_org(rig)
    state = rig.emulator.state
    adopted = state.add_group("team-ml")
    state.add_group_member(adopted, ids["p4"])
    scim = state.add_group("team-data", is_scim_managed=True)
    state.add_group_member(scim, ids["p0"])
    unrelated = state.add_group("finance")
    state.add_group_member(unrelated, ids["p1"])
    rig.write(team_directory(["p0"]))
    plan = plan_json(rig)
    adopt = [op for op in plan["operations"] if op["op"] == "adopt_group"]
    assert [(op["group"], op["group_id"]) for op in adopt] == [("team-ml", adopted)]
    assert any("team-data" in w and "is_scim_managed" in w for w in plan["warnings"])
    assert rig.orgsync("sync").returncode == 0
    groups = groups_by_name(rig)
    assert groups["team-ml"]["members"] == [ids["p0"]]
    assert groups["team-data"]["members"] == [ids["p0"]], "SCIM-managed group untouched"
    assert groups["finance"]["members"] == [ids["p1"]], "a group no rule names is untouched"


def test_a_team_that_disappears_is_emptied_then_deleted_and_inherited_roles_untouched(
    rig: Rig,
) -> None:
    ids = setup_org(rig)
    rig.write(team_directory(["p0", "p1"]))
    assert rig.orgsync("sync").returncode == 0
    team = groups_by_name(rig)["team-ml"]
    inherited = rig.emulator.state.user_role_list(ids["p0"])
    assert any(r.get("assignment_sources") for r in inherited), (
        "the group's role is inherited by p0"
    )
    rig.write(team_directory(None))
    plan = plan_json(rig)
    ops = [op["op"] for op in plan["operations"] if op.get("group_id") == team["id"]]
    assert ops == [
        "unassign_group_role",
        "remove_group_member",
        "remove_group_member",
        "delete_group",
    ]
    assert rig.orgsync("sync").returncode == 0
    assert "team-ml" not in groups_by_name(rig)
    user_role_writes = [
        r
        for r in rig.emulator.requests
        if "/roles" in r.path and "/users/" in r.path and r.method != "GET"
    ]
    assert user_role_writes == [], "orgsync never edits a user's own role assignments"


def test_group_rules_name_unknown_roles_at_validate(rig: Rig) -> None:
    setup_org(rig)
    rig.extra_target = GROUP_RULE.replace("ml-engineer", "astronaut")
    rig.write(team_directory(["p0"]))
    result = rig.orgsync("validate")
    assert result.returncode == 1
    assert (
        "targets.openai-test.groups[0].roles: role 'astronaut' is not in the target's role catalog"
        in result.stdout
    )
