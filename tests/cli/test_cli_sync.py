"""`orgsync` as an administrator runs it, against the emulated OpenAI Admin API on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.harness import Rig, directory, wanted_roles

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


def test_dry_run_writes_nothing_and_exits_2(rig: Rig) -> None:
    rig.write(directory(5, owners=2))
    result = rig.orgsync("sync", "--dry-run")
    assert result.returncode == 2, result.stderr
    assert "Target openai-test: 5 operations to apply" in result.stdout
    assert "to apply: 5 invite" in result.stdout
    assert "member of openai-owners" in result.stdout
    assert rig.emulator.writes() == []
    assert rig.holdings() == {}


def test_sync_converges_and_a_second_dry_run_is_empty(rig: Rig) -> None:
    document = directory(12, owners=2, inactive=(11,))
    rig.emulator.state.add_user("person11@example.com", "reader")  # left: inactive
    rig.emulator.state.add_user("person0@example.com", "reader")  # must become owner
    rig.emulator.state.add_user("stranger@example.com", "owner")  # unmanaged: left alone
    rig.emulator.state.add_invite("person3@example.com", "owner")  # wrong role
    rig.write(document)
    result = rig.orgsync("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert rig.holdings() == {**wanted_roles(document), "stranger@example.com": "owner"}
    again = rig.orgsync("sync", "--dry-run", "--json")
    assert again.returncode == 0, again.stderr
    (plan,) = json.loads(again.stdout)["targets"]
    assert plan["operations"] == []
    assert plan["held"] == []
    writes = len(rig.emulator.writes())
    assert rig.orgsync("sync").returncode == 0
    assert len(rig.emulator.writes()) == writes, "a sync right after a sync writes nothing"


def test_too_many_removals_are_held_while_the_rest_applies(rig: Rig) -> None:
    rig.safety = "max_removals = 2\nmax_removal_ratio = 1.0"
    document = directory(6, inactive=(2, 3, 4))
    for i in (2, 3, 4):
        rig.emulator.state.add_user(f"person{i}@example.com", "reader")
    rig.write(document)
    result = rig.orgsync("sync", "--json")
    assert result.returncode == 3, result.stderr
    (plan,) = json.loads(result.stdout)["targets"]
    assert [h["op"] for h in plan["held"]] == ["remove_member"] * 3
    assert plan["held"][0]["guard"] == "3 removals exceed safety.max_removals = 2"
    held = rig.holdings()
    assert {f"person{i}@example.com" for i in (2, 3, 4)} <= set(held), (
        "held removals were not applied"
    )
    assert {"person0@example.com", "person1@example.com", "person5@example.com"} <= set(held)
    dry = rig.orgsync("sync", "--dry-run")
    assert dry.returncode == 3, "a dry run whose plan the guard would hold exits 3"
    lifted = rig.orgsync("sync", "--allow-removals", "3")
    assert lifted.returncode == 0, lifted.stdout
    assert rig.holdings() == wanted_roles(document)


def test_an_empty_source_aborts_with_exit_1_and_zero_writes(rig: Rig) -> None:
    rig.emulator.state.add_user("person0@example.com", "reader")
    rig.write({"people": [], "groups": []})
    result = rig.orgsync("sync")
    assert result.returncode == 1
    assert "fewer than safety.min_source_users" in result.stdout + result.stderr
    assert rig.emulator.writes() == []


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            '{"people": [{"name": "No Id", "email": "a@x.com"}]}',
            "people[0]: 'id' must be a non-empty string",
        ),
        (
            '{"people": [{"id": "p1", "email": "a@x.com"}, {"id": "p1", "email": "b@x.com"}]}',
            "people[1]: duplicate id 'p1'",
        ),
        (
            '{"people": [{"id": "p1", "email": "a@x.com"}], "groups": [{"id": "g", "name": "openai-users", "members": ["p9"]}]}',
            "groups[0] (id 'g'): member 'p9' is neither a person id nor a group id",
        ),
        ('{"people": [', "invalid JSON at line 1"),
    ],
)
def test_a_malformed_source_exits_1_naming_the_record_with_zero_writes(
    rig: Rig, document: str, message: str
) -> None:
    rig.emulator.state.add_user("a@x.com", "reader")
    rig.write(document)
    result = rig.orgsync("sync")
    assert result.returncode == 1
    assert message in result.stdout + result.stderr
    assert rig.emulator.writes() == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda text: text.replace("[safety]", "[safety\n"), "not valid TOML"),
        (
            lambda text: text.replace("[safety]", "[safety]\nmax_removalz = 1"),
            "safety.max_removalz: unknown key",
        ),
        (
            lambda text: text.replace("ORGSYNC_TEST_ADMIN_KEY", "ORGSYNC_UNSET_VARIABLE"),
            "api_key_env: environment variable ORGSYNC_UNSET_VARIABLE is not set",
        ),
        (
            lambda text: text.replace('role = "owner"', 'role = "superuser"'),
            "targets.openai-test.roles[0].role: role 'superuser' is not in the target's role catalog",
        ),
    ],
)
def test_bad_configuration_exits_1_naming_the_key_with_zero_writes(
    rig: Rig, mutate, message: str
) -> None:  # type: ignore[no-untyped-def]
    rig.write(directory(3))
    rig.config_path.write_text(mutate(rig.config_path.read_text()))
    result = rig.orgsync("sync")
    assert result.returncode == 1
    assert message in result.stdout + result.stderr
    assert rig.emulator.writes() == []


def test_a_reviewed_plan_applies_only_while_it_still_holds(rig: Rig, tmp_path: Path) -> None:
    rig.write(directory(3))
    plan_file = tmp_path / "plan.json"
    assert rig.orgsync("sync", "--dry-run", "--plan-out", str(plan_file)).returncode == 2
    (reviewed,) = json.loads(plan_file.read_text())["targets"]
    assert reviewed["summary"] == {"invite": 3}
    rig.emulator.state.add_invite("person0@example.com", "reader")  # the world moved on
    refused = rig.orgsync("sync", "--plan", str(plan_file))
    assert refused.returncode == 1
    assert "no longer matches" in refused.stdout + refused.stderr
    assert len(rig.emulator.writes()) == 0
    assert rig.orgsync("sync", "--dry-run", "--plan-out", str(plan_file)).returncode == 2
    applied = rig.orgsync("sync", "--plan", str(plan_file))
    assert applied.returncode == 0, applied.stdout
    assert rig.holdings() == wanted_roles(directory(3))


def test_an_edited_plan_file_is_refused(rig: Rig, tmp_path: Path) -> None:
    rig.write(directory(2))
    plan_file = tmp_path / "plan.json"
    rig.orgsync("sync", "--dry-run", "--plan-out", str(plan_file))
    document = json.loads(plan_file.read_text())
    document["targets"][0]["operations"][-1]["role"] = "owner"  # person1 is a reader
    plan_file.write_text(json.dumps(document))
    result = rig.orgsync("sync", "--plan", str(plan_file))
    assert result.returncode == 1
    assert "the file was edited" in result.stderr
    assert rig.emulator.writes() == []


def test_status_runs_and_validate_report_what_happened(rig: Rig) -> None:
    rig.write(directory(3))
    rig.orgsync("sync", "--dry-run")
    rig.orgsync("sync")
    runs = json.loads(rig.orgsync("runs", "--json").stdout)
    assert [(r["mode"], r["status"], r["exit_code"]) for r in runs] == [
        ("sync", "ok", 0),
        ("dry-run", "changes-pending", 2),
    ]
    status = json.loads(rig.orgsync("status", "--json").stdout)
    assert status[0]["target"] == "openai-test"
    assert status[0]["last_run"]["status"] == "ok"
    assert status[0]["lock_holder"] is None
    human = rig.orgsync("status").stdout
    assert "openai-test:" in human and "lock: free" in human
    validate = rig.orgsync("validate")
    assert validate.returncode == 0, validate.stdout
    assert "3 people (0 inactive)" in validate.stdout
    assert "API key owner found" in validate.stdout
    offline = rig.orgsync("validate", "--offline")
    assert offline.returncode == 0
    assert "not contacted" in offline.stdout


def test_the_api_key_never_appears_in_output_logs_or_state(rig: Rig) -> None:
    from tests.cli.harness import API_KEY

    rig.write(directory(3))
    result = rig.orgsync("--log-level", "debug", "sync")
    assert API_KEY not in result.stdout + result.stderr
    assert API_KEY.encode() not in (rig.folder / "state.db").read_bytes()
