"""Red team: who a person is on a SCIM target (scim2-server and SCIMMY over loopback, the
real `orgsync` command), where orgsync can change a user's `userName`.

- An IdP person sets their email to the address of an account orgsync does not manage
  (an administrator's). They were matched to that account, their own suspended; moving
  back, the administrator's account was renamed to theirs: the account taken over
  (whoever signs in with their address now has it). Now nothing is taken.
- A plain email change is a rename of the same account (no new user, nobody suspended).
- Two people swapping addresses in one export.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.targets.cli import Rig, directory, scim_target
from tests.targets.scim_servers import Scim2Server, start_scimmy
from tests.targets.test_scim_e2e import Org

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture(params=["scim2-server", "scimmy"])
def upstream(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "scim2-server":
        scim2: Scim2Server = request.getfixturevalue("scim2")
        yield scim2.tenant()
        return
    scimmy = start_scimmy(tmp_path / "scimmy")
    yield scimmy.url
    scimmy.stop()


@pytest.fixture
def org(upstream: str) -> Iterator[Org]:
    reader = Org(upstream)
    yield reader
    reader.close()


def accounts(org: Org) -> dict[str, tuple[str, bool]]:
    """userName -> (id, active)."""
    return {name: (u["id"], u.get("active", True)) for name, u in org.users().items()}


def synced(rig: Rig, document: dict[str, Any]) -> dict[str, Any]:
    rig.write(document)
    result = rig.orgsync("sync", "--json")
    assert result.stdout.strip(), result.stderr[-3000:]
    (target,) = json.loads(result.stdout)["targets"]
    assert result.returncode == 0, target
    return dict(target)


def test_an_email_moved_onto_an_unmanaged_account_takes_it_over_never(
    tmp_path: Path, upstream: str, org: Org
) -> None:
    made = org.http.post(
        "/Users",
        json={"schemas": [USER], "userName": "admin@example.com", "active": True},
    )
    assert made.status_code == 201, made.text
    rig = Rig(tmp_path, [scim_target(upstream, groups=False)])
    document = directory(3)
    synced(rig, document)
    before = accounts(org)
    assert set(before) == {"admin@example.com", *(f"person{i}@example.com" for i in range(3))}

    document["people"][2]["email"] = "Admin@example.com"
    plan = synced(rig, document)
    assert plan["operations"] == [] and plan["held"] == []
    (waiting,) = plan["waiting"]
    assert "already carries the new address" in waiting["reason"]
    assert accounts(org) == before

    document["people"][2]["email"] = "person2@example.com"
    assert synced(rig, document)["operations"] == []
    assert accounts(org) == before, "the administrator's account is neither renamed nor suspended"


def test_an_email_change_renames_the_same_account(tmp_path: Path, upstream: str, org: Org) -> None:
    rig = Rig(tmp_path, [scim_target(upstream, groups=False)])
    document = directory(2)
    synced(rig, document)
    before = accounts(org)

    document["people"][1]["email"] = "person1.new@example.com"
    plan = synced(rig, document)
    assert [(op["op"], op["email"]) for op in plan["operations"]] == [
        ("update_user", "person1.new@example.com")
    ]
    after = accounts(org)
    assert after["person1.new@example.com"] == before["person1@example.com"]
    assert "person1@example.com" not in after and len(after) == len(before)
    assert synced(rig, document)["operations"] == []


def test_two_people_swapping_addresses_keep_their_accounts(
    tmp_path: Path, upstream: str, org: Org
) -> None:
    """Each was renamed into the other's address, which the server refused (409
    uniqueness) on every run: a target failing forever, quarantined by the daemon. Both
    renames now wait, named, and the run is clean; one rename by hand lets them through."""
    rig = Rig(tmp_path, [scim_target(upstream, groups=False)])
    document = directory(3)
    synced(rig, document)
    before = accounts(org)

    people = document["people"]
    people[0]["email"], people[1]["email"] = people[1]["email"], people[0]["email"]
    for _ in range(2):
        plan = synced(rig, document)
        assert plan["operations"] == []
        assert len(plan["waiting"]) == 2
        assert all("swapped addresses" in w["reason"] for w in plan["waiting"])
        assert accounts(org) == before

    # The administrator moves one of them out of the way, as the plan says.
    moved = org.http.patch(
        f"/Users/{before['person0@example.com'][0]}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "replace", "path": "userName", "value": "tmp@example.com"},
                {
                    "op": "replace",
                    "path": "emails",
                    "value": [{"value": "tmp@example.com", "type": "work", "primary": True}],
                },
            ],
        },
    )
    assert moved.status_code in (200, 204), moved.text
    # p1's account takes the address p0's left free, then p0's takes p1's old one: the
    # same two accounts (p0 kept its link while p1 took the row of its old address).
    assert [op["op"] for op in synced(rig, document)["operations"]] == ["update_user"]
    assert [op["op"] for op in synced(rig, document)["operations"]] == ["update_user"]
    after = accounts(org)
    assert after == {
        "person0@example.com": before["person1@example.com"],
        "person1@example.com": before["person0@example.com"],
        "person2@example.com": before["person2@example.com"],
    }
    assert synced(rig, document)["operations"] == []
