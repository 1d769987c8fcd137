"""A sync killed at any instant, or fighting a flaky API, still converges without duplicates."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, Rig, directory, wanted_roles
from tests.targets.crash import killed_during_apply, wait_for_apply

PEOPLE = 40
INACTIVE = tuple(range(30, 40))


TEAMS = {"team-a": range(0, 8), "team-b": range(5, 14), "team-c": range(20, 26)}
SEEDED_USERS = range(0, 12)
GROUP_RULE = """
[[targets.groups]]
source = "team-*"
roles = ["ml-engineer"]
"""


def with_teams(document: dict[str, Any]) -> dict[str, Any]:
    """Add IdP teams mirrored as groups; some members are users, others only invited."""
    teams = [
        {"id": f"t-{name}", "name": name, "members": [f"p{i}" for i in members]}
        for name, members in TEAMS.items()
    ]
    return {**document, "groups": [*document["groups"], *teams]}


def seed_users_and_role(emulator: OpenAIEmulator) -> None:
    for i in SEEDED_USERS:
        emulator.state.add_user(f"person{i}@example.com", "reader")
    emulator.state.add_role("ml-engineer", ["api.model.read"])


def _assert_groups_converged(rig: Rig) -> None:
    """Each team is one group (never two), holding its members who are users, and the role."""
    state = rig.emulator.state
    user_ids = {str(u["email"]): u["id"] for u in state.users()}
    names = [g["name"] for g in state.groups()]
    assert sorted(names) == sorted(TEAMS), f"groups: {names}"
    role = state.role_id("ml-engineer")
    for group in state.groups():
        expected = {
            user_ids[f"person{i}@example.com"]
            for i in TEAMS[group["name"]]
            if f"person{i}@example.com" in user_ids
        }
        assert set(group["members"]) == expected, group["name"]
        assert group["roles"] == [role], group["name"]


def _drift(emulator: OpenAIEmulator, rng: random.Random) -> None:
    """Undo some of what earlier syncs did, so every run has work to be killed in."""
    state = emulator.state
    pending = [i for i in state.invites() if i["status"] == "pending"]
    for invite in rng.sample(pending, k=min(len(pending), 12)):
        state.api_delete_invite(invite["id"])
    present = {str(u["email"]) for u in state.users()}
    for i in INACTIVE:
        if f"person{i}@example.com" not in present:
            state.add_user(f"person{i}@example.com", "reader")
    groups = state.groups()
    if groups and rng.random() < 0.3:  # and take a group away, so group creates get killed too
        with state.lock:
            state.directory.api_delete_group(rng.choice(groups)["id"])


def _assert_converged(rig: Rig, document: dict[str, Any]) -> None:
    assert rig.holdings() == wanted_roles(document)
    duplicates = {email: n for email, n in rig.pending_invites_per_email().items() if n > 1}
    assert duplicates == {}, f"emails with several pending invitations: {duplicates}"


@pytest.mark.slow
def test_kill_9_at_random_moments_then_sync_converges(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    document = with_teams(directory(PEOPLE, owners=3, inactive=INACTIVE))
    # Duplicates allowed server-side: only orgsync's own care can keep invitations and
    # groups unique.
    with OpenAIEmulator(
        api_key=API_KEY,
        allow_duplicate_invites=True,
        allow_duplicate_group_names=True,
        faults=Faults(latency=0.05),
    ) as emulator:
        seed_users_and_role(emulator)
        rig = Rig(
            folder=tmp_path, emulator=emulator, safety="max_removals = 100\nmax_removal_ratio = 1.0"
        )
        rig.extra_target = "max_concurrency = 2" + GROUP_RULE
        rig.write(document)
        kills_during_apply, attempts = 0, 0
        while kills_during_apply < 20:
            attempts += 1
            assert attempts <= 80, f"only {kills_during_apply} kills landed during apply"
            _drift(emulator, rng)
            process = rig.popen("sync")
            wait_for_apply(tmp_path / "state.db", process)
            time.sleep(rng.uniform(0.0, 0.8))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            if process.returncode == -signal.SIGKILL and killed_during_apply(tmp_path / "state.db"):
                kills_during_apply += 1
        # The drift revokes invitations and deletes groups by hand, more than the removal
        # limits: a read lacking them is held as a possibly truncated one until an
        # operator confirms, as here.
        final = rig.orgsync("sync", "--allow-additions", "1000")
        assert final.returncode == 0, final.stdout + final.stderr
        _assert_converged(rig, document)
        _assert_groups_converged(rig)
        check = rig.orgsync("sync", "--dry-run", "--json")
        assert check.returncode == 0, check.stdout
        print(f"{kills_during_apply} kills during apply in {attempts} attempts")


@pytest.mark.parametrize("seed", [1, 2])
def test_thirty_percent_faults_converge_without_duplicates(tmp_path: Path, seed: int) -> None:
    document = with_teams(directory(60, owners=2, inactive=(28, 29)))
    faults = Faults(error_rate=0.3, kinds=("429", "500", "reset"), seed=seed)
    with OpenAIEmulator(
        api_key=API_KEY, allow_duplicate_invites=True, allow_duplicate_group_names=True
    ) as emulator:
        seed_users_and_role(emulator)
        emulator.state.add_user("person28@example.com", "reader")
        emulator.state.add_invite("person40@example.com", "owner")  # wrong role: replaced
        rig = Rig(folder=tmp_path, emulator=emulator)
        rig.extra_target = "max_attempts = 8" + GROUP_RULE
        rig.write(document)
        emulator.faults = faults
        result = rig.orgsync("sync")
        injected = sum(1 for r in emulator.requests if r.injected_fault)
        assert injected > 10, ("the faults must actually have been injected", result.stderr[-2000:])
        assert result.returncode == 0, result.stdout + result.stderr
        emulator.faults = Faults()
        _assert_converged(rig, document)
        _assert_groups_converged(rig)
        assert rig.orgsync("sync", "--dry-run").returncode == 0


def test_timeouts_are_retried_and_lost_invites_adopted(tmp_path: Path) -> None:
    document = directory(6)
    with OpenAIEmulator(api_key=API_KEY, allow_duplicate_invites=True) as emulator:
        rig = Rig(folder=tmp_path, emulator=emulator)
        rig.extra_target = "max_attempts = 8"
        rig.write(document)
        rig.config_path.write_text(
            rig.config_path.read_text().replace('timeout = "2s"', 'timeout = "0.5s"')
        )
        emulator.faults = Faults(
            error_rate=0.25, kinds=("timeout",), timeout_seconds=1.0, seed=3, phases=("after",)
        )
        result = rig.orgsync("sync")
        assert result.returncode == 0, result.stdout + result.stderr
        assert any(r.injected_fault == "timeout" and r.method == "POST" for r in emulator.requests)
        emulator.faults = Faults()
        _assert_converged(rig, document)
