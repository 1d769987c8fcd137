"""The plan as the real `orgsync` prints it against emulated organizations on loopback:
`--json` has one documented shape (validated against docs/plan-output.schema.json) for
one target and several, with held and waiting operations, failures and applied runs;
plan files keep their guarantees; the table is coloured only on a terminal."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig, openai_target
from tests.cli.test_groups import GROUP_RULE, team_directory
from tests.output_schema import (
    assert_plan_file,
    assert_runs_output,
    assert_status_output,
    assert_sync_output,
)

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def held_and_waiting(rig: Rig) -> None:
    """An organization whose plan has a bit of everything: invitations, a group with its
    role and members, a member waiting for an invitation to be accepted, and removals
    over the safety gate's limit (held)."""
    state = rig.emulator.state
    for i in (0, 1, 3, 4, 5, 6):
        state.add_user(f"person{i}@example.com", "reader")
    state.add_invite("person2@example.com", "reader")  # invited: team-ml waits for them
    state.add_role("ml-engineer", ["api.model.read"])
    rig.extra_target = GROUP_RULE
    rig.safety = "max_removals = 1\nmax_removal_ratio = 1.0"
    document = team_directory(["p0", "p1", "p2"])
    document["people"] += [
        {"id": f"p{i}", "email": f"person{i}@example.com", "name": f"P {i}", "active": False}
        for i in (5, 6)
    ]
    document["people"].append({"id": "p7", "email": "person7@example.com", "name": "P 7"})
    document["groups"][0]["members"] += ["p5", "p6", "p7"]
    rig.write(document)


def sync_output(rig: Rig, *args: str) -> tuple[int, dict[str, Any]]:
    result = rig.orgsync("sync", "--json", *args)
    assert result.stdout.strip(), result.stderr[-3000:]
    document: dict[str, Any] = json.loads(result.stdout)
    assert_sync_output(document)
    assert document["exit_code"] == result.returncode
    return result.returncode, document


@pytest.fixture
def two(rig: Rig, second: OpenAIEmulator) -> Rig:
    held_and_waiting(rig)
    rig.more_targets = openai_target("openai-b", second.start())
    rig.write((rig.folder / "directory.json").read_text())
    return rig


def test_one_target_with_held_and_waiting_is_a_targets_list_of_one(rig: Rig) -> None:
    held_and_waiting(rig)
    code, document = sync_output(rig, "--dry-run")
    assert (code, document["dry_run"]) == (3, True)
    (plan,) = document["targets"]
    assert plan["target"] == "openai-test"
    assert [h["op"] for h in plan["held"]] == ["remove_member", "remove_member"]
    assert all(h["guard"].startswith("2 removals exceed safety.max_removals") for h in plan["held"])
    assert [(w["email"], w["group"]) for w in plan["waiting"]] == [
        ("person2@example.com", "team-ml")
    ]
    assert {"invite", "create_group", "add_group_member", "assign_group_role"} <= set(
        plan["summary"]
    )
    assert plan["run"] == {"id": plan["run"]["id"], "status": "held", "exit_code": 3}
    assert rig.emulator.writes() == []


def test_several_targets_and_one_chosen_target_have_the_same_shape(two: Rig) -> None:
    code, both = sync_output(two, "--dry-run")
    assert code == 3
    assert [t["target"] for t in both["targets"]] == ["openai-test", "openai-b"]
    assert [t["run"]["exit_code"] for t in both["targets"]] == [3, 2]
    code, chosen = sync_output(two, "--dry-run", "--target", "openai-b")
    assert code == 2
    (only,) = chosen["targets"]
    assert only["target"] == "openai-b"
    assert only["checksum"] == both["targets"][1]["checksum"]


def test_a_target_that_fails_before_planning_is_its_name_and_its_error(
    two: Rig, second: OpenAIEmulator
) -> None:
    second.stop()
    code, document = sync_output(two, "--dry-run")
    assert code == 1
    planned, failed = document["targets"]
    assert planned["run"]["exit_code"] == 3 and planned["held"]
    assert set(failed) == {"target", "run"}, "never an empty plan that reads as nothing to do"
    assert failed["run"]["status"] == "failed" and failed["run"]["error"]


def test_an_applied_run_reports_each_operation_in_the_same_shape(rig: Rig) -> None:
    held_and_waiting(rig)
    code, document = sync_output(rig)
    assert (code, document["dry_run"]) == (3, False)
    (target,) = document["targets"]
    outcomes = target["run"]["outcomes"]
    assert {o["status"] for o in outcomes} == {"done"}
    assert len(outcomes) == len(target["operations"])
    assert {"person5@example.com", "person6@example.com"} <= set(rig.holdings()), "held"


def test_plan_files_validate_apply_and_older_files_still_apply(
    two: Rig, second: OpenAIEmulator, tmp_path: Path
) -> None:
    both = tmp_path / "both.json"
    assert two.orgsync("sync", "--dry-run", "--plan-out", str(both)).returncode == 3
    document = json.loads(both.read_text())
    assert_plan_file(document)
    assert [d["target"] for d in document["targets"]] == ["openai-test", "openai-b"]

    # `--json` output is not a plan file: refused, and it says how to write one.
    output = tmp_path / "output.json"
    output.write_text(two.orgsync("sync", "--dry-run", "--json").stdout)
    refused = two.orgsync("sync", "--plan", str(output))
    assert refused.returncode == 1
    assert "this is `sync --json` output, not a plan file" in refused.stderr
    assert two.emulator.writes() == [] and second.writes() == []

    # A file as the previous release wrote it for one target (a bare plan document).
    older = tmp_path / "older.json"
    older.write_text(json.dumps(document["targets"][1], indent=2))
    applied = two.orgsync("sync", "--plan", str(older))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert len(second.state.invites()) == document["targets"][1]["summary"]["invite"] == 6
    assert two.emulator.writes() == [], "only the targets in the file are applied"

    refreshed = tmp_path / "fresh.json"
    assert (
        two.orgsync(
            "sync", "--dry-run", "--target", "openai-test", "--plan-out", str(refreshed)
        ).returncode
        == 3
    )
    assert_plan_file(json.loads(refreshed.read_text()))
    applied = two.orgsync("sync", "--plan", str(refreshed))
    assert applied.returncode == 3, applied.stdout + applied.stderr  # the held stay held
    assert "person7@example.com" in two.holdings()


def test_the_human_plan_is_plain_when_piped(rig: Rig) -> None:
    held_and_waiting(rig)
    result = rig.orgsync("sync", "--dry-run")
    assert result.returncode == 3
    out = result.stdout
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0] == "Target openai-test: 8 operations to apply, 2 held, 1 waiting, 0 warnings"
    assert lines[1].startswith("  to apply: ") and lines[2] == "  held: 2 remove_member"
    assert lines[3].startswith("  legend: + create or invite")
    assert lines[4].split() == ["OPERATION", "PERSON", "OR", "GROUP", "ROLE", "REASON"]
    assert "  Group team-ml (new)" in lines
    assert "  Held by the safety gate: 2 removals exceed safety.max_removals = 1" in lines
    assert "    to apply what is held after checking it: orgsync sync --allow-removals 2" in lines
    assert "  Waiting: cannot happen yet" in lines
    assert any(line.lstrip().startswith("checksum sha256:") for line in lines)
    assert lines[-1] == "=> openai-test: some changes held by the safety gate (exit 3)"


def in_terminal(rig: Rig, *args: str, env: dict[str, str]) -> str:
    """What `orgsync` writes to stdout when stdout is a real pseudo-terminal."""
    leader, follower = os.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        process = cli.run(
            rig.config_path,
            *args,
            env={**os.environ, KEY_ENV: API_KEY, "TERM": "xterm-256color", **env},
            stdout=follower,
        )
    finally:
        os.close(follower)
    reader.join(timeout=10)
    os.close(leader)
    assert process.returncode == 3, process.stderr
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_the_human_plan_is_coloured_on_a_terminal_unless_no_color(rig: Rig) -> None:
    held_and_waiting(rig)
    plain = rig.orgsync("sync", "--dry-run").stdout
    coloured = in_terminal(rig, "sync", "--dry-run", env={"NO_COLOR": ""})
    assert ESCAPE.search(coloured), "a terminal gets colour"
    assert ESCAPE.sub("", coloured) == plain, "and nothing else changes"
    no_color = in_terminal(rig, "sync", "--dry-run", env={"NO_COLOR": "1"})
    assert "\x1b" not in no_color
    assert no_color == plain


def test_runs_have_a_header_and_runs_and_status_json_validate(two: Rig) -> None:
    two.orgsync("sync", "--dry-run")
    two.orgsync("sync", "--target", "openai-b")
    assert two.orgsync("sync", "--target", "openai-test").returncode == 3
    runs = two.orgsync("runs")
    lines = runs.stdout.splitlines()
    assert lines[0].split() == [
        "RUN",
        "STARTED",
        "(UTC)",
        "TARGET",
        "MODE",
        "ORIGIN",
        "STATUS",
        "EXIT",
        "CHANGES",
    ]
    assert len(lines) == 1 + 4
    for heading in ("TARGET", "STATUS", "EXIT", "CHANGES"):
        at = lines[0].index(heading)
        assert all(line[at - 2 : at] == "  " and line[at] != " " for line in lines[1:]), heading
    assert "\x1b" not in runs.stdout
    document = json.loads(two.orgsync("runs", "--json").stdout)
    assert_runs_output(document)
    assert len(document) == 4
    status = json.loads(two.orgsync("status", "--json").stdout)
    assert_status_output(status)
    assert [entry["target"] for entry in status] == ["openai-test", "openai-b"]
    held = [p for p in status[0]["pending"] if p["status"] == "held"]
    assert [p["operation"]["email"] for p in held] == ["person5@example.com", "person6@example.com"]
