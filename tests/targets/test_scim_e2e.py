"""The SCIM target end to end: the `orgsync` command against scim2-server, SCIMMY and
django-scim2.

Each test runs the real CLI in a child process, with a file source, against a real SCIM
server behind the recording proxy, and checks both the exit codes the reference promises and what
the server holds afterwards. The scenarios of issue 11 run against every provider in
test_scim_e2e_scenarios.py (a file of its own so `--dist loadfile` can run the two halves,
about two minutes each, on both workers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.targets.cli import Rig, directory, scim_target
from tests.targets.scim_servers import (
    TOKEN,
    Scim2Server,
    ScimProxy,
    start_scimmy,
)

BIG = 250
"""Members of one team: more member changes than one PATCH may carry (100)."""


class Org:
    """A SCIM server's users and groups as the tests look at them."""

    def __init__(self, upstream: str) -> None:
        self.http = httpx.Client(
            base_url=upstream, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def close(self) -> None:
        self.http.close()

    def _all(self, path: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page = self.http.get(path, params={"startIndex": len(found) + 1, "count": 1000})
            page.raise_for_status()
            body = page.json()
            found += body.get("Resources") or []
            if not body.get("Resources") or len(found) >= body["totalResults"]:
                return found

    def users(self) -> dict[str, dict[str, Any]]:
        return {u["userName"]: u for u in self._all("/Users")}

    def groups(self) -> dict[str, dict[str, Any]]:
        # Read one by one: a list page may leave members out.
        return {
            g["displayName"]: self.http.get(f"/Groups/{g['id']}").json()
            for g in self._all("/Groups")
        }

    def members(self, group: str) -> set[str]:
        by_id = {u["id"]: name for name, u in self.users().items()}
        values = [m["value"] for m in self.groups()[group].get("members") or []]
        assert len(values) == len(set(values)), "a member is listed twice"
        return {by_id[v] for v in values}


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


@pytest.fixture
def proxy(upstream: str) -> Iterator[ScimProxy]:
    running = ScimProxy(upstream)
    yield running
    running.stop()


def emails(*indexes: int) -> set[str]:
    return {f"person{i}@example.com" for i in indexes}


def test_dry_run_sync_and_a_second_dry_run_with_250_members_in_3_patches(
    tmp_path: Path, org: Org, proxy: ScimProxy
) -> None:
    people = BIG + 10
    document = directory(people, inactive=(3,), teams={"team-big": list(range(BIG)),
                                                       "team-small": [0, 1, 2, 3]})  # fmt: skip
    rig = Rig(tmp_path, [scim_target(proxy.url)])
    rig.write(document)
    code, plans = rig.plans("--dry-run")
    assert code == 2, plans
    summary = plans["scim-test"]["summary"]
    assert summary == {
        "add_group_member": BIG - 1 + 3,  # p3 is inactive: in no group
        "create_group": 2,
        "create_user": people - 1,
    }
    assert proxy.count("POST") == proxy.count("PATCH") == 0  # a dry run writes nothing

    result = rig.orgsync("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    users = org.users()
    assert set(users) == {f"person{i}@example.com" for i in range(people)} - emails(3)
    assert users["person7@example.com"]["externalId"] == "p7"
    assert org.members("team-big") == {f"person{i}@example.com" for i in range(BIG)} - emails(3)
    assert org.members("team-small") == emails(0, 1, 2)
    # 249 additions to team-big at 100 per request, 3 to team-small: 3 + 1 PATCH requests.
    patches = [path for method, path, _ in proxy.bodies if method == "PATCH"]
    assert len([p for p in patches if p.startswith(proxy_path(proxy, "/Groups/"))]) == 4
    big_id = org.groups()["team-big"]["id"]
    assert sum(1 for p in patches if p.endswith(big_id)) == 3

    writes = sum(1 for m, _, _ in proxy.bodies if m != "GET")
    code, plans = rig.plans("--dry-run")
    assert code == 0 and plans["scim-test"]["operations"] == []
    assert sum(1 for m, _, _ in proxy.bodies if m != "GET") == writes


def proxy_path(proxy: ScimProxy, suffix: str) -> str:
    return httpx.URL(proxy.url).path.rstrip("/") + suffix


def ops_of(result: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((op["op"], op.get("email") or op.get("group", "")) for op in result["operations"])


# On the strict server only: each CLI run costs seconds, and SCIMMY's looser dialect is
# exercised by the 250-member test above and by tests/targets/test_scim_faults.py.
@pytest.mark.parametrize("upstream", ["scim2-server"], indirect=True)
def test_removals_renames_and_returns_through_the_cli(
    tmp_path: Path, org: Org, proxy: ScimProxy
) -> None:
    """One organization's life, one sync per step; each step's plan holds exactly that
    step's changes, which also shows the step before it converged."""
    rig = Rig(tmp_path, [scim_target(proxy.url, on_removal="suspend")])
    teams = {"team-a": [0, 1, 2], "team-gone": [3]}
    rig.write(directory(6, teams=teams))
    code, results = rig.plans()
    assert code == 0, results
    before = org.groups()

    # p1 leaves (inactive at the IdP): suspended, not deleted, and out of its team; the IdP
    # renames team-a (same group id) to team-b and drops team-gone.
    document = directory(6, inactive=(1,), teams={"team-a": [0, 1, 2]})
    document["groups"][-1]["name"] = "team-b"
    rig.write(document)
    code, results = rig.plans()
    assert code == 0, results
    assert ops_of(results["scim-test"]) == [
        ("delete_group", "team-gone"),
        ("remove_group_member", "person1@example.com"),
        ("remove_group_member", "person3@example.com"),
        ("rename_group", "team-b"),
        ("suspend_member", "person1@example.com"),
    ]
    assert org.users()["person1@example.com"]["active"] is False
    after = org.groups()
    assert set(after) == {"team-b"}
    assert after["team-b"]["id"] == before["team-a"]["id"]  # renamed, not re-created
    assert org.members("team-b") == emails(0, 2)

    # p1 returns: re-enabled (update_user) and back in the team, never created again.
    document = directory(6, teams={"team-a": [0, 1, 2]})
    document["groups"][-1]["name"] = "team-b"
    rig.write(document)
    code, results = rig.plans()
    assert code == 0, results
    assert ops_of(results["scim-test"]) == [
        ("add_group_member", "person1@example.com"),
        ("update_user", "person1@example.com"),
    ]
    assert org.users()["person1@example.com"]["active"] is True
    assert org.members("team-b") == emails(0, 1, 2)

    # With on_removal = "remove", someone leaving scope is deleted.
    rig.targets = [scim_target(proxy.url, on_removal="remove")]
    document = directory(6, out_of_scope=(4,), teams={"team-a": [0, 1, 2]})
    document["groups"][-1]["name"] = "team-b"
    rig.write(document)
    code, results = rig.plans()
    assert code == 0, results
    assert ops_of(results["scim-test"]) == [("remove_member", "person4@example.com")]
    assert "person4@example.com" not in org.users()
    final = rig.orgsync("sync", "--dry-run")
    assert final.returncode == 0, final.stdout + final.stderr
