"""Red team: IdP values others control (a record's id, a person's name, a group's name)
shown to the operator by the real `orgsync` command against the OpenAI emulator.

- Console log lines (stderr on a terminal, `--log-format console`) wrote a string value
  as it was: a rejected record's id carrying ESC sequences erased lines of the operator's
  terminal, OSC 52 set their clipboard. They are escaped now, as the plan already was.
- The JSON plan keeps every value exact (JSON escapes it; nothing is rewritten), so a
  reviewed plan file still applies; the terminal plan shows it escaped; a very long
  group name stays one line.
"""

from __future__ import annotations

import json

import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import Rig, directory

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

HIDE = "\x1b[1A\x1b[2K"
CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07"
BIDI = "\u202e"
HOSTILE = f"{HIDE}{CLIPBOARD}{BIDI}<script>alert(1)</script>\r\nforged line"


def hostile_directory() -> dict[str, object]:
    document = directory(3)
    people = document["people"]
    people[1]["name"] = f"Mallory{HOSTILE}"
    people.append({"id": f"p-bad{HOSTILE}", "email": "not an address", "name": HOSTILE})
    document["groups"].append({"id": "g-evil", "name": f"openai-x{HOSTILE}", "members": ["p2"]})
    document["groups"].append({"id": "g-long", "name": "openai-" + "L" * 5000, "members": ["p0"]})
    return document


def test_console_logs_show_hostile_values_escaped(rig: Rig, emulator: OpenAIEmulator) -> None:
    rig.write(hostile_directory())
    result = rig.orgsync("--log-format", "console", "sync", "--dry-run")
    assert result.returncode == 2, result.stderr[-3000:]
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "\x07" not in stream and BIDI not in stream, stream
        assert "\r" not in stream
    (rejected,) = [line for line in result.stderr.splitlines() if "record_rejected" in line]
    assert "p-bad" in rejected and "x1b[1A" in rejected and "x0d" in rejected


def test_the_json_plan_keeps_hostile_values_exact(rig: Rig, emulator: OpenAIEmulator) -> None:
    rig.extra_target = '[[targets.groups]]\nsource = "openai-x*"\n'
    rig.write(hostile_directory())
    plan_file = str(rig.folder / "plan.json")
    result = rig.orgsync("sync", "--dry-run", "--json", "--plan-out", plan_file)
    assert result.returncode == 2, result.stderr[-3000:]
    (target,) = json.loads(result.stdout)["targets"]
    groups = {op["group"] for op in target["operations"] if op["op"] == "create_group"}
    assert groups == {f"openai-x{HOSTILE}"}
    written = json.loads((rig.folder / "plan.json").read_text(encoding="utf-8"))
    assert [
        op["group"]
        for plan in written["targets"]
        for op in plan["operations"]
        if op["op"] == "create_group"
    ] == [f"openai-x{HOSTILE}"]

    terminal = rig.orgsync("sync", "--dry-run")
    assert "\x1b" not in terminal.stdout and BIDI not in terminal.stdout
    assert "forged line" not in terminal.stdout.splitlines()[0]
    assert all(not line.startswith("forged line") for line in terminal.stdout.splitlines())

    applied = rig.orgsync("sync", "--plan", plan_file)
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    assert {str(u["email"]) for u in emulator.state.invites()} == {
        f"person{i}@example.com" for i in range(3)
    }
    assert [g["name"] for g in emulator.state.groups()] == [f"openai-x{HOSTILE}"]
