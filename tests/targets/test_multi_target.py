"""Several `[[targets]]` in one run: an OpenAI emulator, a Keycard emulator, a SCIM server.

One `orgsync sync` plans, leases and applies each target on its own; a target that fails
(its server gone, its credentials refused) fails alone, the others converge, and the
process exits with the worst code (1 > 3 > 2 > 0). `orgsync validate` refuses a rule a
target cannot honour, naming the rule and the missing capability.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orgsync.testing.keycard.emulator import KeycardEmulator
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY
from tests.targets.cli import (
    KEYCARD_SECRET_ENV,
    OPENAI_KEY_ENV,
    Rig,
    directory,
    keycard_target,
    scim_target,
)
from tests.targets.scim_servers import Scim2Server, ScimProxy
from tests.targets.test_scim_e2e import Org

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

KEYCARD_ID = "sa_multi"
KEYCARD_SECRET = "multi-target-secret-0123456789"
PEOPLE = 8
ADMINS = (0,)
INACTIVE = (7,)


def openai_target(url: str) -> str:
    return f"""
[[targets]]
name = "openai-test"
type = "openai"
base_url = "{url}"
api_key_env = "{OPENAI_KEY_ENV}"
allow_plaintext = true
scope_groups = ["scim-*"]
default_role = "reader"
timeout = "5s"
max_attempts = 2
max_retry_delay = "10s"
[[targets.roles]]
group = "scim-admins"
role = "owner"
"""


class Orgs:
    """The three organizations and a rig whose configuration names all of them."""

    def __init__(self, folder: Path, scim2: Scim2Server) -> None:
        self.openai = OpenAIEmulator(api_key=API_KEY)
        self.keycard = KeycardEmulator(client_id=KEYCARD_ID, client_secret=KEYCARD_SECRET)
        self.keycard.state.add_user("root@example.com", "org_admin")
        self.scim_upstream = scim2.tenant()
        self.proxy = ScimProxy(self.scim_upstream)
        self.scim = Org(self.scim_upstream)
        self.rig = Rig(
            folder,
            [
                openai_target(self.openai.start()),
                keycard_target(
                    self.keycard.start(), self.keycard.state.organization_id, KEYCARD_ID
                ),
                # Two attempts: the tests that stop a server need not wait out retries.
                scim_target(self.proxy.url, extra="max_attempts = 2"),
            ],
            env={OPENAI_KEY_ENV: API_KEY, KEYCARD_SECRET_ENV: KEYCARD_SECRET},
        )

    def close(self) -> None:
        self.scim.close()
        self.proxy.stop()
        self.keycard.stop()
        self.openai.stop()

    def openai_holdings(self) -> dict[str, str]:
        state = self.openai.state
        held = {
            str(u["email"]): str(u["role"]) for u in state.users() if u["id"] != state.key_owner_id
        }
        held.update(
            {str(i["email"]): str(i["role"]) for i in state.invites() if i["status"] == "pending"}
        )
        return held

    def keycard_holdings(self) -> dict[str, str]:
        state = self.keycard.state
        held = {
            str(u["email"]): str(u["role"])
            for u in state.users()
            if u["email"] != "root@example.com" and u["status"] == "active"
        }
        held.update(
            {
                str(i["email"]): str(i["role"])
                for i in state.invitations()
                if i["status"] == "pending"
            }
        )
        return held


def wanted(admin_role: str, member_role: str) -> dict[str, str]:
    return {
        f"person{i}@example.com": admin_role if i in ADMINS else member_role
        for i in range(PEOPLE)
        if i not in INACTIVE
    }


@pytest.fixture
def orgs(tmp_path: Path, scim2: Scim2Server) -> Iterator[Orgs]:
    running = Orgs(tmp_path, scim2)
    yield running
    running.close()


def runs_by_target(state_db: Path) -> dict[str, list[tuple[str, int]]]:
    with sqlite3.connect(state_db) as db:
        rows = db.execute(
            "SELECT target, status, exit_code FROM runs ORDER BY started_at"
        ).fetchall()
    found: dict[str, list[tuple[str, int]]] = {}
    for target, status, code in rows:
        found.setdefault(target, []).append((status, code))
    return found


def test_three_targets_converge_in_one_run_each_with_its_own_plan(orgs: Orgs) -> None:
    rig = orgs.rig
    rig.write(directory(PEOPLE, inactive=INACTIVE, admins=ADMINS, teams={"team-a": [0, 1]}))
    code, plans = rig.plans("--dry-run")
    assert code == 2
    assert set(plans) == {"openai-test", "keycard-test", "scim-test"}
    assert plans["openai-test"]["summary"] == {"invite": 7}
    assert plans["keycard-test"]["summary"] == {"invite": 7}
    assert plans["scim-test"]["summary"] == {
        "add_group_member": 2,
        "create_group": 1,
        "create_user": 7,
    }
    assert len({p["checksum"] for p in plans.values()}) == 3

    code, results = rig.plans()
    assert code == 0, results
    assert {name: r["run"]["exit_code"] for name, r in results.items()} == {
        "openai-test": 0, "keycard-test": 0, "scim-test": 0,
    }  # fmt: skip
    assert orgs.openai_holdings() == wanted("owner", "reader")
    assert orgs.keycard_holdings() == wanted("org_admin", "org_member")
    assert set(orgs.scim.users()) == set(wanted("", ""))
    assert orgs.scim.members("team-a") == {"person0@example.com", "person1@example.com"}

    code, plans = rig.plans("--dry-run")
    assert code == 0
    assert all(p["operations"] == [] for p in plans.values())
    runs = runs_by_target(rig.folder / "state.db")
    assert {name: [s for s, _ in r] for name, r in runs.items()} == {
        name: ["changes-pending", "ok", "ok"]
        for name in ("openai-test", "keycard-test", "scim-test")
    }


@pytest.mark.parametrize("failure", ["server-stopped", "bad-credentials"])
def test_one_failing_target_fails_alone_and_the_run_exits_1(orgs: Orgs, failure: str) -> None:
    rig = orgs.rig
    if failure == "server-stopped":
        orgs.proxy.stop()  # the SCIM server is unreachable (connection refused)
        broken = "scim-test"
    else:
        rig.env[KEYCARD_SECRET_ENV] = "not-the-secret"
        broken = "keycard-test"
    rig.write(directory(PEOPLE, inactive=INACTIVE, admins=ADMINS, teams={"team-a": [0, 1]}))
    code, results = rig.plans()
    assert code == 1
    codes = {name: r["run"]["exit_code"] for name, r in results.items()}
    assert codes == {name: (1 if name == broken else 0) for name in codes}
    assert len(codes) == 3
    error = results[broken]["run"]["error"]
    assert ("ConnectError" in error) if failure == "server-stopped" else ("invalid_client" in error)
    assert "not-the-secret" not in json.dumps(results)
    # The healthy targets converged anyway.
    assert orgs.openai_holdings() == wanted("owner", "reader")
    if broken == "scim-test":
        assert orgs.keycard_holdings() == wanted("org_admin", "org_member")
        assert orgs.scim.users() == {}
    else:
        assert set(orgs.scim.users()) == set(wanted("", ""))
        assert orgs.keycard.state.invitations() == []
    runs = runs_by_target(rig.folder / "state.db")
    assert runs[broken] == [("failed", 1)]
    # Leases are per target and all released, the failed one's included.
    with sqlite3.connect(rig.folder / "state.db") as db:
        # A released lease keeps its row (the fencing token only grows), expired now.
        now = datetime.now(UTC).isoformat()
        assert (
            db.execute("SELECT COUNT(*) FROM leases WHERE expires_at > ?", (now,)).fetchone()[0]
            == 0
        )


def test_the_worst_exit_code_wins(orgs: Orgs) -> None:
    """A held target (3) outranks a pending one (2); a failed one (1) outranks both."""
    rig = orgs.rig
    rig.safety = "max_removals = 2\nmax_removal_ratio = 1.0"
    for i in range(4):  # four stray members orgsync is told to remove: held by the guard
        orgs.keycard.state.add_user(f"stray{i}@example.com")
    rig.safety += "\nremove_unmanaged = true"
    rig.write(directory(PEOPLE, inactive=INACTIVE, admins=ADMINS))
    code, plans = rig.plans("--dry-run")
    exits = {name: p["run"]["exit_code"] for name, p in plans.items()}
    assert exits == {"openai-test": 2, "keycard-test": 3, "scim-test": 2}
    assert code == 3
    orgs.openai.stop()
    code, plans = rig.plans("--dry-run")
    assert {name: p["run"]["exit_code"] for name, p in plans.items()}["openai-test"] == 1
    assert code == 1


def test_validate_refuses_group_rules_on_keycard(orgs: Orgs) -> None:
    rig = orgs.rig
    rig.targets[1] += '\n[[targets.groups]]\nsource = "team-*"\nname = "{source}"\n'
    rig.write(directory(PEOPLE, admins=ADMINS, teams={"team-a": [0]}))
    result = rig.orgsync("validate")
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if "keycard-test" in x)
    assert "FAILED" in line
    assert "targets.keycard-test.groups[0]" in line  # the rule
    assert "group rules need a target with groups" in line  # the missing capability
    assert "keycard targets have none" in line
    others = [x for x in result.stdout.splitlines() if "openai-test" in x or "scim-test" in x]
    assert others and all("FAILED" not in x for x in others)
    # A sync refuses that target the same way and still runs the others.
    code, results = rig.plans("--dry-run")
    assert code == 1
    assert "group rules need a target with groups" in results["keycard-test"]["run"]["error"]
    assert results["scim-test"]["run"]["exit_code"] == 2
