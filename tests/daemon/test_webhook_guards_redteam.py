"""Red team: a signed webhook naming people asks for a targeted run; can a run of a few
people do what a full pass would hold?

How it could hurt an administrator (each tried against a real `orgsync daemon`, the file
source and the OpenAI emulator over loopback):
- lost access: a bad IdP change puts many people out of scope at once (a scope group
  emptied, a mass deactivation). A full pass holds their removals (max_removals); a
  webhook per "leaver", each naming a few of them, removes them all, a few at a time.
- extra access: a rule change makes many people owners at once. A full pass holds the
  grants (max_privilege_grants); webhooks naming two at a time grant them all.
- lost access: the last owner named by a webhook after leaving the owners group.
- a webhook naming thousands of people (over the targeted cap) becomes one full pass,
  and a full pass's guards hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.cli.test_only import without
from tests.daemon.harness import Daemon, DaemonRig, wait_for

PEOPLE = 20


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as running:
        yield running


def guarded_rig(folder: Path, emulator: OpenAIEmulator, safety: str) -> DaemonRig:
    rig = DaemonRig(folder=folder, emulator=emulator, debounce="50ms")
    rig.safety_extra = safety
    return rig


def write(rig: DaemonRig, document: dict[str, Any]) -> None:
    rig.write(document)
    # The harness's generous limits make way for the ones under test.
    text = rig.config_path.read_text(encoding="utf-8")
    text = text.replace("max_removals = 100\nmax_removal_ratio = 1.0\n", "")
    rig.config_path.write_text(text, encoding="utf-8")


def runs_done(rig: DaemonRig, count: int) -> bool:
    return len(rig.finished_runs()) >= count


def run_after(rig: DaemonRig, daemon: Daemon, document: dict[str, Any], names: list[str]) -> Any:
    """Send one signed delivery naming `names` and wait for the run it causes."""
    before = len(rig.finished_runs())
    answer = daemon.post_generic({"emails": names})
    assert answer.status_code == 202, answer.text
    wait_for(lambda: runs_done(rig, before + 1), timeout=30, what="the targeted run")
    return rig.finished_runs()[-1]


def started_synced(rig: DaemonRig, document: dict[str, Any], started: list[Daemon]) -> Daemon:
    write(rig, document)
    daemon = rig.start()
    started.append(daemon)
    daemon.wait_started()
    wait_for(lambda: rig.holdings() == wanted_roles(document), timeout=30, what="start-up")
    wait_for(lambda: runs_done(rig, 1), timeout=30, what="the first pass")
    return daemon


def test_webhooks_one_leaver_at_a_time_cannot_remove_a_mass_deactivation(
    tmp_path: Path, emulator: OpenAIEmulator, started: list[Daemon]
) -> None:
    """10 of 20 people deactivated at once (a bad IdP script): a full pass holds the 10
    removals (max_removals = 5). Webhooks naming two of them at a time must not remove
    them piecemeal: each targeted run holds its removals too."""
    rig = guarded_rig(tmp_path, emulator, "max_removals = 5\nmax_removal_ratio = 1.0")
    document = directory(PEOPLE)
    daemon = started_synced(rig, document, started)
    gone = tuple(range(10, PEOPLE))
    write(rig, directory(PEOPLE, inactive=gone))
    full = rig.orgsync("sync", "--dry-run", "--json")
    assert full.returncode == 3, full.stdout + full.stderr

    for first in (10, 12):
        run = run_after(
            rig, daemon, document, [f"person{first}@example.com", f"person{first + 1}@example.com"]
        )
        assert run["status"] == "held", dict(run)
    for i in gone:
        assert f"person{i}@example.com" in rig.holdings(), f"person{i} was removed piecemeal"
    assert daemon.terminate() == 0


def test_webhooks_two_owners_at_a_time_cannot_grant_what_a_full_pass_holds(
    tmp_path: Path, emulator: OpenAIEmulator, started: list[Daemon]
) -> None:
    """A wrong rule change adds 12 people to openai-owners: a full pass holds the 12
    grants (max_privilege_grants = 3). Webhooks naming two of them at a time must not
    make them owners piecemeal."""
    rig = guarded_rig(tmp_path, emulator, "max_privilege_grants = 3")
    document = directory(PEOPLE)
    daemon = started_synced(rig, document, started)
    promoted = directory(PEOPLE, owners=13)
    write(rig, promoted)
    full = rig.orgsync("sync", "--dry-run", "--json")
    assert full.returncode == 3, full.stdout + full.stderr

    for first in (1, 3):
        run = run_after(
            rig, daemon, promoted, [f"person{first}@example.com", f"person{first + 1}@example.com"]
        )
        assert run["status"] == "held", dict(run)
    owners = {e for e, role in rig.holdings().items() if role == "owner"}
    assert owners == {"person0@example.com"}, owners
    assert daemon.terminate() == 0


def test_a_webhook_for_one_leaver_still_removes_them_at_once(
    tmp_path: Path, emulator: OpenAIEmulator, started: list[Daemon]
) -> None:
    """The guard above must not cost the everyday case: one person deactivated, one
    webhook, removed by a targeted run that read only them (no whole plan)."""
    rig = guarded_rig(tmp_path, emulator, "max_removals = 5\nmax_removal_ratio = 1.0")
    document = directory(PEOPLE)
    daemon = started_synced(rig, document, started)
    write(rig, directory(PEOPLE, inactive=(7,)))
    run = run_after(rig, daemon, document, ["person7@example.com"])
    assert run["status"] == "ok", dict(run)
    assert run["pass_kind"] != "full", dict(run)
    assert "person7@example.com" not in rig.holdings()
    assert not [e for e in daemon.events() if e.get("event") == "run.widened"]
    assert daemon.terminate() == 0


def test_webhooks_two_newcomers_at_a_time_cannot_invite_what_a_full_pass_holds(
    tmp_path: Path, emulator: OpenAIEmulator, started: list[Daemon]
) -> None:
    """A scope group that suddenly lists 12 strangers: a full pass holds the 12
    invitations (max_additions = 3). Webhooks naming two of them at a time must not
    invite them piecemeal."""
    rig = guarded_rig(tmp_path, emulator, "max_additions = 3")
    document = directory(PEOPLE)
    for i in range(PEOPLE):  # members already: the first pass links them, invites nobody
        emulator.state.add_user(f"person{i}@example.com", "owner" if i == 0 else "reader")
    daemon = started_synced(rig, document, started)
    grown = directory(PEOPLE + 12)
    write(rig, grown)
    full = rig.orgsync("sync", "--dry-run", "--json")
    assert full.returncode == 3, full.stdout + full.stderr

    for first in (PEOPLE, PEOPLE + 2):
        run = run_after(
            rig, daemon, grown, [f"person{first}@example.com", f"person{first + 1}@example.com"]
        )
        assert run["status"] == "held", dict(run)
    assert rig.holdings() == wanted_roles(document)
    assert daemon.terminate() == 0


def test_a_webhook_naming_the_last_owner_as_a_leaver_never_removes_them(
    tmp_path: Path, emulator: OpenAIEmulator, started: list[Daemon]
) -> None:
    """The key's owner stepped down, so person0 is the organization's last owner; they
    leave the directory and a webhook names them: the targeted run sees every owner (a
    whole plan) and keeps the last one."""
    rig = guarded_rig(tmp_path, emulator, "")
    document = directory(PEOPLE)
    for i in range(PEOPLE):
        emulator.state.add_user(f"person{i}@example.com", "owner" if i == 0 else "reader")
    daemon = started_synced(rig, document, started)
    emulator.state.api_update_user(emulator.state.key_owner_id, {"role": "reader"})
    write(rig, without(document, "p0"))
    writes = sum(1 for r in emulator.requests if r.method != "GET")
    run_after(rig, daemon, document, ["person0@example.com"])
    owners = [u["email"] for u in emulator.state.users() if u["role"] == "owner"]
    assert owners == ["person0@example.com"]
    assert sum(1 for r in emulator.requests if r.method != "GET") == writes
    assert daemon.terminate() == 0
