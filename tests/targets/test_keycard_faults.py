"""The core's crash and fault tests, against the Keycard emulator (after tests/cli/
test_crash_and_faults.py): a sync killed at any instant, or fighting a flaky API or an
expiring token, still converges with no duplicate invitation.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.testing.faults import Faults
from orgsync.testing.keycard.emulator import KeycardEmulator
from tests.targets.cli import KEYCARD_SECRET_ENV, Rig, directory, keycard_target
from tests.targets.crash import killed_during_apply, wait_for_apply

CLIENT_ID = "sa_faults"
SECRET = "keycard-faults-secret-0123456789"
ROOT = "root@example.com"
PEOPLE = 40
INACTIVE = tuple(range(30, 40))
ADMINS = (0, 1, 2)
KILLS = 10


def wanted() -> dict[str, str]:
    return {
        f"person{i}@example.com": "org_admin" if i in ADMINS else "org_member"
        for i in range(PEOPLE)
        if i not in INACTIVE
    }


def holdings(emulator: KeycardEmulator) -> dict[str, str]:
    """email -> role of every active user and pending invitation, the seeded admin aside."""
    state = emulator.state
    held = {
        str(u["email"]): str(u["role"])
        for u in state.users()
        if u["email"] != ROOT and u["status"] == "active"
    }
    for invitation in state.invitations():
        if invitation["status"] == "pending":
            held[str(invitation["email"])] = str(invitation["role"])
    return held


def assert_converged(emulator: KeycardEmulator) -> None:
    assert holdings(emulator) == wanted()
    pending: dict[str, int] = {}
    for invitation in emulator.state.invitations():
        if invitation["status"] == "pending":
            pending[invitation["email"]] = pending.get(invitation["email"], 0) + 1
    assert {e: n for e, n in pending.items() if n > 1} == {}, "duplicate invitations"
    emails = [u["email"] for u in emulator.state.users()]
    assert len(emails) == len(set(emails)), "a person is a user twice"
    # Inactive people who are users are disabled (on_removal = "suspend"), never deleted.
    for user in emulator.state.users():
        index = int(str(user["email"])[6:].split("@")[0]) if user["email"] != ROOT else -1
        if index in INACTIVE:
            assert user["status"] == "disabled", user


@pytest.fixture
def emulator() -> Iterator[KeycardEmulator]:
    with KeycardEmulator(
        client_id=CLIENT_ID, client_secret=SECRET, allow_duplicate_invitations=True
    ) as running:
        running.state.add_user(ROOT, "org_admin")
        yield running


def make_rig(folder: Path, emulator: KeycardEmulator, extra: str = "") -> Rig:
    rig = Rig(
        folder,
        [keycard_target(emulator.base_url, emulator.state.organization_id, CLIENT_ID, extra=extra)],
        env={KEYCARD_SECRET_ENV: SECRET},
    )
    rig.write(directory(PEOPLE, inactive=INACTIVE, admins=ADMINS))
    return rig


def drift(emulator: KeycardEmulator, rng: random.Random) -> None:
    """Undo and advance what earlier syncs did, so every run has work to be killed in:
    revoke some invitations, let others be accepted, re-enable or add inactive people."""
    state = emulator.state
    pending = [i for i in state.invitations() if i["status"] == "pending"]
    for invitation in rng.sample(pending, k=min(len(pending), 10)):
        if rng.random() < 0.5:
            state.api_delete_invitation(invitation["id"])
        else:
            state.accept_invitation(invitation["id"])
    present = {str(u["email"]): u for u in state.users()}
    for i in INACTIVE[:5]:
        email = f"person{i}@example.com"
        if email not in present:
            state.add_user(email, "org_member")
        elif present[email]["status"] == "disabled":
            state.api_update_user(str(present[email]["id"]), {"status": "active"})


@pytest.mark.slow
def test_kill_9_at_random_moments_then_sync_converges(
    tmp_path: Path, emulator: KeycardEmulator
) -> None:
    rng = random.Random(20261124)
    emulator.faults = Faults(latency=0.05)
    rig = make_rig(tmp_path, emulator, extra="max_concurrency = 2")
    kills, attempts = 0, 0
    while kills < KILLS:
        attempts += 1
        assert attempts <= 40, f"only {kills} kills landed during apply"
        drift(emulator, rng)
        process = rig.popen("sync")
        wait_for_apply(tmp_path / "state.db", process)
        time.sleep(rng.uniform(0.0, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        if process.returncode == -signal.SIGKILL and killed_during_apply(tmp_path / "state.db"):
            kills += 1
    emulator.faults = Faults()
    final = rig.orgsync("sync")
    assert final.returncode == 0, final.stdout + final.stderr
    assert_converged(emulator)
    assert rig.orgsync("sync", "--dry-run").returncode == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_thirty_percent_faults_converge_without_duplicates(
    tmp_path: Path, emulator: KeycardEmulator, seed: int
) -> None:
    state = emulator.state
    state.add_user("person31@example.com", "org_member")  # inactive at the IdP
    state.add_user("person1@example.com", "org_viewer")  # wrong role
    state.add_user("person4@example.com", "org_member", status="disabled")  # returns
    state.add_invitation("person5@example.com", "org_viewer")  # wrong-role invitation
    state.add_invitation("person6@example.com", expires_at=state.clock() - 5)  # expired
    rig = make_rig(tmp_path, emulator, extra="max_attempts = 8")
    emulator.faults = Faults(error_rate=0.3, kinds=("429", "500", "reset"), seed=seed)
    result = rig.orgsync("sync")
    injected = sum(1 for r in emulator.requests if r.injected_fault)
    assert injected > 5, ("the faults must actually have been injected", result.stderr[-2000:])
    assert result.returncode == 0, result.stdout + result.stderr
    emulator.faults = Faults()
    assert_converged(emulator)
    person4 = next(u for u in state.users() if u["email"] == "person4@example.com")
    assert person4["status"] == "active"  # re-enabled, not invited again
    assert "person4@example.com" not in {i["email"] for i in state.invitations()}
    assert rig.orgsync("sync", "--dry-run").returncode == 0


def test_lost_invitation_responses_are_adopted_not_duplicated(
    tmp_path: Path, emulator: KeycardEmulator
) -> None:
    rig = make_rig(tmp_path, emulator, extra="max_attempts = 8")
    rig.config_path.write_text(
        rig.config_path.read_text().replace('timeout = "5s"', 'timeout = "0.5s"')
    )
    emulator.faults = Faults(
        error_rate=0.25, kinds=("timeout",), timeout_seconds=1.0, seed=3, phases=("after",)
    )
    result = rig.orgsync("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    lost = [r for r in emulator.requests if r.injected_fault == "timeout" and r.method == "POST"]
    assert lost, "no invitation response was lost"
    emulator.faults = Faults()
    assert_converged(emulator)


def test_tokens_expiring_during_a_sync_are_renewed(tmp_path: Path) -> None:
    with KeycardEmulator(
        client_id=CLIENT_ID, client_secret=SECRET, token_lifetime=1.0, faults=Faults(latency=0.06)
    ) as emulator:
        emulator.state.add_user(ROOT, "org_admin")
        rig = make_rig(tmp_path, emulator, extra="max_concurrency = 1")
        started = time.monotonic()
        result = rig.orgsync("sync")
        assert result.returncode == 0, result.stdout + result.stderr
        assert time.monotonic() - started > 1.5  # the run outlived a token
        assert emulator.token_grants >= 2
        assert_converged(emulator)
