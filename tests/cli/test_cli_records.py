"""Bad records from the source through the real `orgsync` process: reported by source id
in the plan and the log, never invited, and a member whose record went bad is kept."""

from __future__ import annotations

import json

import pytest

from tests.cli.harness import Rig

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


def people(*records: tuple[str, str]) -> dict[str, object]:
    return {
        "people": [{"id": pid, "email": email} for pid, email in records],
        "groups": [{"id": "g", "name": "openai-users", "members": [pid for pid, _ in records]}],
    }


def test_bad_emails_are_reported_never_invited_and_cost_nobody_access(rig: Rig) -> None:
    rig.emulator.state.add_user("bob@example.com", "reader")
    rig.write(people(("p-ada", "ada@example.com"), ("p-bob", "bob@example.com")))
    first = rig.orgsync("sync")
    assert first.returncode == 0, first.stdout + first.stderr
    assert rig.holdings() == {"ada@example.com": "reader", "bob@example.com": "reader"}

    # Both records go bad (a broken export, a typo in the IdP); two newcomers are bad too.
    rig.write(
        people(
            ("p-ada", "ada@@example.com"),
            ("p-bob", "bob@"),
            ("p-new1", "new bie@@exa mple"),
            ("p-new2", "newbie@"),
            ("p-eve", "eve@example.com"),
        )
    )
    dry = rig.orgsync("sync", "--dry-run", "--json")
    assert dry.returncode == 2, dry.stderr
    (plan,) = json.loads(dry.stdout)["targets"]
    assert [(op["op"], op["email"]) for op in plan["operations"]] == [("invite", "eve@example.com")]
    logged = [json.loads(line) for line in dry.stderr.splitlines() if line.startswith("{")]
    rejected_in_log = {e["source_id"] for e in logged if e["event"] == "source.record_rejected"}
    assert rejected_in_log == {"p-ada", "p-bob", "p-new1", "p-new2"}
    for pid in rejected_in_log:
        assert any(f"source record '{pid}' rejected" in w for w in plan["warnings"]), pid

    applied = rig.orgsync("sync")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "source record 'p-new1' rejected" in applied.stdout
    assert rig.holdings() == {
        "ada@example.com": "reader",  # her invitation is kept
        "bob@example.com": "reader",  # he stays a member
        "eve@example.com": "reader",
    }
    invited = {str(i["email"]) for i in rig.emulator.state.invites()}
    assert not invited & {"new bie@@exa mple", "newbie@", "ada@@example.com", "bob@"}
