"""Red team: `orgsync explain` and `orgsync status` printing text others control (a
directory record carrying terminal control sequences, a server's error message).

A rejected record's email was printed as it came from the directory, so whoever could
edit that attribute (a helpdesk role, a SCIM client, an LDAP write) wrote to the terminal
of the administrator investigating them: OSC 52 set their clipboard, cursor moves erased
lines. It is shown escaped now.
"""

from __future__ import annotations

from orgsync.store import StateStore
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import Rig, directory

HOSTILE = "\x1b]52;c;ZXZpbA==\x07\x1b[2K\x1b[1A"


def test_explain_shows_a_records_control_characters_escaped(
    rig: Rig, emulator: OpenAIEmulator
) -> None:
    document = directory(3)
    document["people"][2]["email"] = f"mal{HOSTILE}@example.com"
    document["people"][1]["name"] = f"Mallory{HOSTILE}"
    document["groups"].append({"id": "g-x", "name": f"team{HOSTILE}", "members": ["p2"]})
    rig.write(document)
    for lookup in ("p2", "p1"):
        result = rig.orgsync("explain", lookup)
        assert result.returncode in (0, 2), result.stderr[-2000:]
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout, result.stdout
        assert "\\x1b" in result.stdout


def test_status_shows_a_runs_error_escaped(rig: Rig) -> None:
    """`orgsync status` printed a run's error (a server's message) as it was."""
    rig.write(directory(2))
    assert rig.orgsync("sync").returncode == 0
    with StateStore.open(rig.folder / "state.db") as store:
        run_id = store.start_run("openai-test", "sync")
        store.finish_run(
            run_id,
            status="failed",
            exit_code=1,
            summary={},
            checksum=None,
            error=f"HTTP 500 from openai-test: {HOSTILE}",
        )
    result = rig.orgsync("status")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout, result.stdout
    assert "HTTP 500 from openai-test: \\x1b]52" in result.stdout
