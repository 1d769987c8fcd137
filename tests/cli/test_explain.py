"""`orgsync explain` as an administrator runs it: the real command against the OpenAI
emulator, compared with what `orgsync sync --dry-run` plans for the same person."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from orgsync.store.writer_lock import FileLock, lock_path
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory, openai_target

TEAM_RULE = """
[[targets.groups]]
source = "team-*"
name = "{source}"
"""


# In this process (cli.run_here): these tests are about what explain and the dry run
# decide and print. The writer-lock test runs them as processes.
pytestmark = pytest.mark.orgsync_in_process


def explain_json(rig: Rig, *args: str) -> tuple[int, dict[str, Any]]:
    result = rig.orgsync("explain", *args, "--json")
    assert result.returncode in (0, 1, 2, 3), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)


def only_target(document: dict[str, Any]) -> dict[str, Any]:
    (target,) = document["targets"]
    return target  # type: ignore[no-any-return]


def dry_run_about(rig: Rig, email: str) -> tuple[int, list[Any], list[Any]]:
    """The dry run's exit code, and its operations and held operations naming `email`."""
    result = rig.orgsync("sync", "--dry-run", "--json")
    assert result.returncode in (0, 2, 3), result.stdout + result.stderr
    (plan,) = json.loads(result.stdout)["targets"]
    mine = [op for op in plan["operations"] if op.get("email", "").lower() == email]
    held = [op for op in plan["held"] if op.get("email", "").lower() == email]
    return result.returncode, mine, held


def run_count(rig: Rig) -> int:
    result = rig.orgsync("runs", "--json", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    return len(json.loads(result.stdout))


def guard_kinds(target: dict[str, Any]) -> list[str]:
    return [g["kind"] for g in target["guards"]]


def test_a_new_joiner_is_explained_as_the_dry_run_plans_them_and_nothing_is_recorded(
    rig: Rig,
) -> None:
    document = directory(3)
    # Whatever else a directory export carries stays out of the explanation.
    document["people"][1]["recovery_code"] = "rc-7f3a9c1e55d0b2"
    rig.write(document)
    code, explained = explain_json(rig, "Person1@Example.com")
    assert code == 2
    assert not (rig.folder / "state.db").exists(), "explain must not create the state database"
    target = only_target(explained)
    assert [(op["op"], op["email"], op["role"]) for op in target["operations"]] == [
        ("invite", "person1@example.com", "reader")
    ]
    assert target["desired"]["wanted"] and target["current"]["state"] == "absent"
    assert target["source"][0]["matches"][0]["path"] == ["openai-users"]
    dry_code, mine, held = dry_run_about(rig, "person1@example.com")
    assert dry_code == 2 and mine == target["operations"] and held == []
    # After the dry run recorded its run, explain records none.
    before = run_count(rig)
    human = rig.orgsync("explain", "p1")
    assert human.returncode == 2, human.stderr
    assert "+ invite person1@example.com as reader" in human.stdout
    assert "(targets.scope_groups: 'openai-*')" in human.stdout
    assert "=> openai-test: changes pending for this person (exit 2)" in human.stdout
    assert run_count(rig) == before
    everything = human.stdout + human.stderr + json.dumps(explained)
    assert "rc-7f3a9c1e55d0b2" not in everything and "recovery_code" not in everything
    assert rig.emulator.state.invites() == [], "explain changed the organization"


def test_a_leaver_is_found_by_email_and_by_the_source_id_orgsync_remembers(rig: Rig) -> None:
    for i in range(4):
        rig.emulator.state.add_user(f"person{i}@example.com", "reader")
    rig.write(directory(4, owners=0))
    assert rig.orgsync("sync").returncode == 0
    rig.write(directory(3, owners=0))  # person3 left the directory
    for lookup in ("person3@example.com", "p3"):
        code, document = explain_json(rig, lookup)
        target = only_target(document)
        assert code == 2, lookup
        assert [(op["op"], op["reason"]) for op in target["operations"]] == [
            ("remove_member", "no longer in the source (orgsync managed them)")
        ], lookup
        assert target["current"]["managed"] and target["source"] == []
    dry_code, mine, _ = dry_run_about(rig, "person3@example.com")
    assert dry_code == 2 and mine == target["operations"]
    # Someone else in the same run: nothing to do for them, exit 0.
    assert explain_json(rig, "person0@example.com")[0] == 0


def test_a_role_change_names_the_rule_and_the_nested_group(rig: Rig) -> None:
    rig.emulator.state.add_user("person1@example.com", "reader")
    document = directory(2, owners=0)
    document["groups"][1]["members"] = ["g-admins"]
    document["groups"].append({"id": "g-admins", "name": "admins", "members": ["p1"]})
    rig.write(document)
    code, explained = explain_json(rig, "person1@example.com")
    target = only_target(explained)
    assert code == 2
    (op,) = target["operations"]
    assert (op["op"], op["previous_role"], op["role"]) == ("set_role", "reader", "owner")
    grant = next(m for m in target["source"][0]["matches"] if m["rule"] == "targets.roles[0]")
    assert grant["path"] == ["openai-owners", "admins"] and grant["decides"]
    human = rig.orgsync("explain", "person1@example.com").stdout
    assert "^ set_role person1@example.com reader -> owner" in human
    assert "via nested group 'admins'" in human


def test_the_key_owner_and_a_protected_owner_are_left_alone_and_say_why(rig: Rig) -> None:
    rig.emulator.state.add_user("boss@example.com", "owner")
    rig.safety += '\nprotected = ["boss@example.com"]'
    document = directory(1)
    document["people"].append({"id": "p-boss", "email": "boss@example.com"})
    document["groups"][0]["members"].append("p-boss")  # a reader by the rules
    rig.write(document)
    code, keyed = explain_json(rig, "key-owner@example.com")
    assert code == 0
    assert "key_owner" in guard_kinds(only_target(keyed))
    code, boss = explain_json(rig, "boss@example.com")
    target = only_target(boss)
    assert code == 0 and target["operations"] == []
    assert "protected" in guard_kinds(target)
    assert any("would change role owner to reader" in w for w in target["warnings"])
    assert dry_run_about(rig, "boss@example.com")[1:] == ([], [])


def test_a_held_removal_exits_3_with_the_guard_as_the_dry_run_does(rig: Rig) -> None:
    rig.safety = "max_removals = 1"
    for i in range(5):
        rig.emulator.state.add_user(f"person{i}@example.com", "reader")
    rig.write(directory(5, owners=0))
    assert rig.orgsync("sync").returncode == 0
    rig.write(directory(2, owners=0))  # three leave at once: more than max_removals
    code, document = explain_json(rig, "person4@example.com")
    target = only_target(document)
    assert code == 3
    assert target["operations"] == []
    (held,) = target["held"]
    assert held["op"] == "remove_member" and "safety.max_removals = 1" in held["guard"]
    assert "safety_gate" in guard_kinds(target)
    dry_code, _, dry_held = dry_run_about(rig, "person4@example.com")
    assert dry_code == 3 and dry_held == target["held"]


def test_a_group_membership_waits_for_the_invitation_to_be_accepted(rig: Rig) -> None:
    rig.extra_target = TEAM_RULE
    rig.emulator.state.add_invite("person2@example.com", "reader")
    document = directory(3, owners=0)
    document["groups"].append({"id": "t-ml", "name": "team-ml", "members": ["p2"]})
    rig.write(document)
    code, explained = explain_json(rig, "p2")
    target = only_target(explained)
    assert target["current"]["state"] == "invited"
    assert target["desired"]["groups"] == ["team-ml"]
    assert [(w["op"], w["group"]) for w in target["waiting"]] == [("add_group_member", "team-ml")]
    assert "waiting_for_acceptance" in guard_kinds(target)
    assert code == 0 and target["operations"] == []


def test_an_unknown_person_exits_1_with_a_clear_message(rig: Rig) -> None:
    rig.write(directory(2))
    result = rig.orgsync("explain", "nobody@example.com")
    assert result.returncode == 1
    assert "nobody matches 'nobody@example.com'" in result.stderr
    code, document = explain_json(rig, "nobody@example.com")
    assert code == 1 and document["found"] is False and document["exit_code"] == 1


def test_a_rejected_record_is_shown_with_its_reason_and_its_member_is_kept(rig: Rig) -> None:
    rig.emulator.state.add_user("bob@example.com", "reader")
    ada = {"id": "p-ada", "email": "ada@example.com"}
    people = {
        "people": [ada, {"id": "p-bob", "email": "bob@example.com"}],
        "groups": [{"id": "g", "name": "openai-users", "members": ["p-ada", "p-bob"]}],
    }
    rig.write(people)
    assert rig.orgsync("sync").returncode == 0
    people["people"] = [ada, {"id": "p-bob", "email": "bob@"}]
    rig.write(people)
    for lookup in ("p-bob", "bob@example.com"):
        code, document = explain_json(rig, lookup)
        target = only_target(document)
        assert code == 0 and target["operations"] == [], lookup
        assert target["source"][0]["rejected"], lookup
        assert "rejected_record" in guard_kinds(target), lookup
        assert target["current"]["state"] == "member", lookup
    human = rig.orgsync("explain", "p-bob").stdout
    assert "REJECTED: email 'bob@' is not an address" in human


def test_usage_errors_exit_64_an_unknown_target_too(rig: Rig) -> None:
    """`--target` naming no configured target is a bad option value (SPEC: 64, nothing
    read or changed), not a failed run: a script must not take a typo for an outage."""
    rig.write(directory(1))
    missing = rig.orgsync("explain")
    assert missing.returncode == 64, missing.stderr
    for command in (("explain", "p0"), ("sync",), ("sync", "--dry-run")):
        unknown = rig.orgsync(*command, "--target", "nope")
        assert unknown.returncode == 64, (command, unknown.stderr)
        assert "usage error: --target nope: no such target" in unknown.stderr
    assert not Path(rig.folder / "state.db").exists()


def database_dump(path: Path) -> list[str]:
    with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as db:
        return list(db.iterdump())


# As processes: the lock is another process's, and `orgsync explain` runs through its real
# entry point (python -m orgsync) here.
@pytest.mark.orgsync_in_process(False)
def test_explain_runs_beside_a_sync_holding_the_lock_and_changes_no_byte_of_state(
    rig: Rig,
) -> None:
    rig.emulator.state.add_user("person0@example.com", "reader")
    rig.write(directory(2, owners=0))
    assert rig.orgsync("sync").returncode == 0
    rig.write(directory(1, owners=0))
    before = database_dump(rig.folder / "state.db")
    lock = FileLock(lock_path(rig.folder / "state.db", "openai-test"))
    assert lock.try_acquire(), "the test could not take the writer lock"
    try:
        busy = rig.orgsync("sync")
        assert busy.returncode == 1 and "run.busy" in busy.stderr, "the lock is not held"
        code, document = explain_json(rig, "person1@example.com")
    finally:
        lock.release()
    assert code == 2
    assert [op["op"] for op in only_target(document)["operations"]] == ["revoke_invite"]
    assert database_dump(rig.folder / "state.db") == before


def test_every_target_is_explained_unless_one_is_named(rig: Rig) -> None:
    # A second table for the one emulated organization, as if another one: under its
    # own key variable (one organization configured twice is refused).
    rig.more_targets = (
        openai_target("openai-second", rig.emulator.start())
        .replace('scope_groups = ["openai-*"]', 'scope_groups = ["nobody-*"]')
        .replace(f'api_key_env = "{KEY_ENV}"', 'api_key_env = "ORGSYNC_TEST_SECOND_KEY"')
    )
    rig.env = {"ORGSYNC_TEST_SECOND_KEY": API_KEY}
    rig.write(directory(2))
    code, both = explain_json(rig, "person1@example.com")
    assert [(t["target"], t["exit_code"]) for t in both["targets"]] == [
        ("openai-test", 2),
        ("openai-second", 0),
    ]
    assert code == 2 and both["exit_code"] == 2
    second = only_target(both | {"targets": both["targets"][1:]})
    assert second["desired"] == {
        "wanted": False,
        "reason": "in no scope group",
        "role": None,
        "groups": [],
    }
    code, one = explain_json(rig, "person1@example.com", "--target", "openai-second")
    assert code == 0 and [t["target"] for t in one["targets"]] == ["openai-second"]
