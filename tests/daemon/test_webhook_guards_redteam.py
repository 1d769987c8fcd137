"""Red team: a signed webhook naming people asks for a targeted run; can a run of a few
people do what a full pass would hold?

How it could hurt an administrator (each tried against a real `orgsync daemon`, the file
source and the OpenAI emulator over loopback):
- lost access: a bad IdP change puts many people out of scope at once (a scope group
  emptied, a mass deactivation). A full pass holds their removals (max_removals); a
  webhook per "leaver", each naming a few of them, removes them all, a few at a time.
- extra access: a rule change makes many people owners at once. A full pass holds the
  grants (max_privilege_grants); webhooks naming two at a time granted them all.
- extra access: a scope group suddenly lists many strangers. A full pass holds the
  invitations (max_additions); webhooks naming two at a time invited them all.
- lost access: the last owner named by a webhook after leaving the directory.
Found broken (the first three): a targeted run now plans the whole organization when its
slice could pass a guard a whole plan would apply (`core.scope.whole_plan_needed`); the
everyday single leaver is still a cheap targeted run. (A webhook naming more people than
the targeted cap is one full pass: tests/daemon/test_hostile_clients.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.cli.test_only import without
from tests.daemon.harness import Daemon, DaemonRig, wait_for

PEOPLE = 20


LIMITS = """
max_removals = 5
max_removal_ratio = 1.0
max_privilege_grants = 3
max_additions = 3
"""
BASELINE = directory(PEOPLE)


@dataclass
class Guarded:
    rig: DaemonRig
    daemon: Daemon
    emulator: OpenAIEmulator

    def write(self, document: dict[str, Any]) -> None:
        self.rig.write(document)
        # The harness's generous limits make way for the ones under test.
        text = self.rig.config_path.read_text(encoding="utf-8")
        text = text.replace("max_removals = 100\nmax_removal_ratio = 1.0\n", "")
        self.rig.config_path.write_text(text, encoding="utf-8")

    def run_after(self, names: list[str]) -> Any:
        """Send one signed delivery naming `names` and wait for the run it causes."""
        before = len(self.rig.finished_runs())
        answer = self.daemon.post_generic({"emails": names})
        assert answer.status_code == 202, answer.text
        wait_for(
            lambda: len(self.rig.finished_runs()) > before, timeout=30, what="the targeted run"
        )
        return self.rig.finished_runs()[-1]

    def full_dry_run_holds(self) -> None:
        full = self.rig.orgsync("sync", "--dry-run", "--json")
        assert full.returncode == 3, full.stdout + full.stderr


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    """One daemon for the module, its organization already holding everybody (the first
    pass links them and invites nobody); each test leaves the directory as it found it."""
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        for i in range(PEOPLE):
            emulator.state.add_user(f"person{i}@example.com", "owner" if i == 0 else "reader")
        rig = DaemonRig(
            folder=tmp_path_factory.mktemp("guarded"), emulator=emulator, debounce="50ms"
        )
        rig.safety_extra = LIMITS
        Guarded(rig, None, emulator).write(BASELINE)  # type: ignore[arg-type]
        daemon = rig.start()
        served = Guarded(rig, daemon, emulator)
        try:
            daemon.wait_started()
            wait_for(rig.finished_runs, timeout=30, what="the first pass")
            assert rig.holdings() == wanted_roles(BASELINE)
            yield served
            assert daemon.terminate() == 0
        finally:
            daemon.kill()


@pytest.fixture
def guarded_test(guarded: Guarded) -> Iterator[Guarded]:
    yield guarded
    guarded.write(BASELINE)


def test_webhooks_one_leaver_at_a_time_cannot_remove_a_mass_deactivation(
    guarded_test: Guarded,
) -> None:
    """10 of 20 people deactivated at once (a bad IdP script): a full pass holds the 10
    removals (max_removals = 5). Webhooks naming two of them at a time must not remove
    them piecemeal: each targeted run holds its removals too."""
    g = guarded_test
    gone = tuple(range(10, PEOPLE))
    g.write(directory(PEOPLE, inactive=gone))
    g.full_dry_run_holds()
    for first in (10, 12):
        run = g.run_after([f"person{first}@example.com", f"person{first + 1}@example.com"])
        assert run["status"] == "held", dict(run)
    for i in gone:
        assert f"person{i}@example.com" in g.rig.holdings(), f"person{i} was removed piecemeal"


def test_webhooks_two_owners_at_a_time_cannot_grant_what_a_full_pass_holds(
    guarded_test: Guarded,
) -> None:
    """A wrong rule change adds 12 people to openai-owners: a full pass holds the 12
    grants (max_privilege_grants = 3). Webhooks naming two of them at a time must not
    make them owners piecemeal."""
    g = guarded_test
    g.write(directory(PEOPLE, owners=13))
    g.full_dry_run_holds()
    for first in (1, 3):
        run = g.run_after([f"person{first}@example.com", f"person{first + 1}@example.com"])
        assert run["status"] == "held", dict(run)
    owners = {e for e, role in g.rig.holdings().items() if role == "owner"}
    assert owners == {"person0@example.com"}, owners


def test_webhooks_two_newcomers_at_a_time_cannot_invite_what_a_full_pass_holds(
    guarded_test: Guarded,
) -> None:
    """A scope group that suddenly lists 12 strangers: a full pass holds the 12
    invitations (max_additions = 3). Webhooks naming two of them at a time must not
    invite them piecemeal."""
    g = guarded_test
    g.write(directory(PEOPLE + 12))
    g.full_dry_run_holds()
    for first in (PEOPLE, PEOPLE + 2):
        run = g.run_after([f"person{first}@example.com", f"person{first + 1}@example.com"])
        assert run["status"] == "held", dict(run)
    assert g.rig.holdings() == wanted_roles(BASELINE)


def test_a_webhook_for_one_leaver_still_removes_them_at_once(guarded_test: Guarded) -> None:
    """The guards above must not cost the everyday case: one person deactivated, one
    webhook, removed by a targeted run that read only them (no whole plan)."""
    g = guarded_test
    widened = len([e for e in g.daemon.events() if e.get("event") == "run.widened"])
    g.write(directory(PEOPLE, inactive=(7,)))
    run = g.run_after(["person7@example.com"])
    assert run["status"] == "ok", dict(run)
    assert "person7@example.com" not in g.rig.holdings()
    assert len([e for e in g.daemon.events() if e.get("event") == "run.widened"]) == widened


def test_a_webhook_naming_the_last_owner_as_a_leaver_never_removes_them(
    guarded_test: Guarded,
) -> None:
    """The key's owner stepped down, so person0 is the organization's last owner; they
    leave the directory and a webhook names them: the targeted run sees every owner (a
    whole plan) and keeps the last one."""
    g = guarded_test
    state = g.emulator.state
    state.api_update_user(state.key_owner_id, {"role": "reader"})
    try:
        g.write(without(BASELINE, "p0"))
        (person0,) = [u["id"] for u in state.users() if u["email"] == "person0@example.com"]
        writes = len(g.emulator.writes())
        g.run_after(["person0@example.com"])
        owners = [u["email"] for u in state.users() if u["role"] == "owner"]
        assert owners == ["person0@example.com"]
        touched = [r.path for r in g.emulator.writes()[writes:] if person0 in r.path]
        assert touched == []
    finally:
        state.api_update_user(state.key_owner_id, {"role": "owner"})
