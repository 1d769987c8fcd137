"""What a person or a script sees while `orgsync sync` runs: --quiet, -v, --log-format,
progress bars on a terminal (a real pseudo-terminal) and progress events elsewhere.

Everything through the real command against the OpenAI emulator on loopback.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import time

import pytest

from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory
from tests.cli.shapes import only_target

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


def _json_lines(text: str) -> list[dict[str, object]]:
    """Every non-empty line as JSON (fails the test on a line that is not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_quiet_prints_nothing_and_keeps_the_exit_codes(rig: Rig) -> None:
    rig.write(directory(5))
    before = rig.orgsync("--quiet", "sync", "--dry-run")
    after = rig.orgsync("sync", "--dry-run", "-q")
    assert (before.returncode, before.stdout) == (2, "")
    assert (after.returncode, after.stdout) == (2, "")
    assert "progress" not in before.stderr + after.stderr  # no progress either
    applied = rig.orgsync("sync", "--quiet")
    assert (applied.returncode, applied.stdout) == (0, "")
    assert len(rig.holdings()) == 5, "--quiet must still apply"
    settled = rig.orgsync("-q", "sync", "--dry-run")
    assert (settled.returncode, settled.stdout) == (0, "")


def test_quiet_failure_still_says_why_on_stderr(rig: Rig) -> None:
    rig.write(directory(3))
    rig.env = {KEY_ENV: "sk-admin-wrong-key-0000000000000000000000000000"}
    failed = rig.orgsync("--quiet", "sync")
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "=> openai-test: error (exit 1)" in failed.stderr  # the report, moved to stderr
    assert rig.holdings() == {}


def test_quiet_held_run_reports_the_guard_on_stderr(rig: Rig) -> None:
    rig.write(directory(6))
    assert rig.orgsync("sync").returncode == 0
    rig.safety = "max_removals = 1\nmax_removal_ratio = 1.0"
    rig.write(directory(6, inactive=(1, 2, 3)))
    held = rig.orgsync("sync", "-q")
    assert held.returncode == 3
    assert held.stdout == ""
    assert "Held by the safety gate" in held.stderr


def test_log_format_json_gives_json_lines_and_console_does_not(rig: Rig) -> None:
    rig.write(directory(3))
    as_json = rig.orgsync("sync", "--dry-run", "--log-format", "json")
    events = _json_lines(as_json.stderr)
    assert {"source.read", "run.finished"} <= {e["event"] for e in events}
    assert all({"level", "timestamp"} <= set(e) for e in events)
    console = rig.orgsync("--log-format", "console", "sync", "--dry-run")
    assert console.returncode == as_json.returncode == 2
    assert "run.finished" in console.stderr
    assert not any(line.startswith("{") for line in console.stderr.splitlines())


def test_verbose_shows_debug_events_and_default_does_not(rig: Rig) -> None:
    rig.write(directory(3))
    plain = _json_lines(rig.orgsync("sync", "--dry-run", "--log-format", "json").stderr)
    verbose = _json_lines(rig.orgsync("-v", "sync", "--dry-run", "--log-format", "json").stderr)
    assert not [e for e in plain if e["level"] == "debug"]
    requests = [e for e in verbose if e["event"] == "http.request"]
    assert requests
    assert all(e["level"] == "debug" for e in requests)
    assert API_KEY not in json.dumps(verbose)


def test_progress_events_off_a_terminal_and_stdout_stays_json(rig: Rig) -> None:
    rig.write(directory(40))
    result = rig.orgsync("sync", "--json")
    assert result.returncode == 0, result.stderr
    document = only_target(json.loads(result.stdout))  # nothing but the document on stdout
    assert document["run"]["status"] == "ok"
    progress = [e for e in _json_lines(result.stderr) if e["event"] == "progress"]
    phases = {(e["phase"], e["state"]) for e in progress}
    assert {
        ("read source", "started"),
        ("read source", "finished"),
        ("read target", "started"),
        ("read target", "finished"),
        ("apply", "started"),
        ("apply", "finished"),
    } <= phases
    running = [e for e in progress if e["phase"] == "apply" and e["state"] == "running"]
    # One event per tenth of the operations (the last is the `finished` one).
    assert [e["done"] for e in running] == [4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert all(e["total"] == 40 and "eta_seconds" in e for e in running)
    finished = next(e for e in progress if e["phase"] == "apply" and e["state"] == "finished")
    assert finished["count"] == 40
    source = next(e for e in progress if e["phase"] == "read source" and e["state"] == "finished")
    assert (source["count"], source["unit"]) == (40, "people")


def _run_on_terminal(rig: Rig, *args: str, timeout: float = 120) -> tuple[int, str]:
    """Run the command with stdout and stderr on a pseudo-terminal; its exit code and
    everything it wrote there."""
    leader, follower = pty.openpty()
    env = {**os.environ, KEY_ENV: API_KEY, "COLUMNS": "140", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = cli.start(rig.config_path, *args, env=env, stdout=follower, stderr=follower)
    os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the last writer closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(leader)
    return code, output.decode("utf-8", errors="replace")


def test_progress_bars_on_a_terminal_with_the_plan_before_the_apply(rig: Rig) -> None:
    rig.write(directory(30))
    # Warnings only: each e-mail then appears on the screen only where the plan shows it.
    code, screen = _run_on_terminal(rig, "sync", "--log-level", "warning")
    assert code == 0, screen
    apply_at = screen.index("apply openai-test")
    # The plan is shown before the apply's bar, and once: the result does not repeat it.
    for i in range(30):
        assert screen.count(f"person{i}@example.com") == 1, f"person{i}"
        assert screen.index(f"person{i}@example.com") < apply_at
    assert "read source: 30 people" in screen
    assert "read target openai-test: 1 members and invitations" in screen
    assert "apply openai-test: 30 operations" in screen
    assert "━" in screen  # a bar was drawn
    assert "eta" in screen
    assert re.search(r"\] progress\s", screen) is None  # bars, not log events, on a terminal
    assert len(rig.holdings()) == 30


def test_log_lines_print_above_the_bars_on_a_terminal(rig: Rig) -> None:
    rig.write(directory(12))
    code, screen = _run_on_terminal(rig, "sync", "--log-format", "console", "--log-level", "info")
    assert code == 0, screen
    done = [line for line in screen.splitlines() if "apply.op.done" in line]
    assert len(done) == 12  # every operation's log line, none lost in the bars
    assert "run.finished" in screen


def test_a_sync_on_a_terminal_shows_bars_not_a_line_per_operation(rig: Rig) -> None:
    # 1,500 invitations must not print 1,500 log lines over the bars by default.
    rig.write(directory(12))
    code, screen = _run_on_terminal(rig, "sync")
    assert code == 0, screen
    assert "apply.op.done" not in screen
    assert "apply openai-test: 12 operations" in screen


def test_on_a_terminal_json_stdout_gets_no_progress(rig: Rig) -> None:
    """stderr on a terminal (bars there), stdout piped: stdout is the document alone."""
    rig.write(directory(10))
    leader, follower = pty.openpty()
    try:
        result = cli.run(
            rig.config_path,
            "sync",
            "--json",
            env={**os.environ, KEY_ENV: API_KEY},
            stdin="",
            stderr=follower,
        )
        os.close(follower)
        follower = -1
        drawn = b""
        while select.select([leader], [], [], 0.2)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert result.returncode == 0
    assert only_target(json.loads(result.stdout))["run"]["status"] == "ok"
    assert b"apply openai-test" in drawn
