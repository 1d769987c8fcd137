"""Command-line mistakes, as a careless operator or a script makes them, through the real
`orgsync` process: a usage error exits 64 (never 2, "changes pending"), says what is
wrong, and reads or changes nothing."""

from __future__ import annotations

import os

from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory

USAGE_ERRORS = [
    (["sync", "--dry-rn"], "unrecognized arguments: --dry-rn"),
    (["sync", "--allow-removals", "all"], "'all' is not a whole number"),
    (["sync", "--allow-removals", "-1"], "must be 0 or more, not -1"),
    (["synk"], "invalid choice: 'synk'"),
    ([], "required: COMMAND"),
    (["runs", "--limit", "0"], "must be 1 or more, not 0"),
    (["--log-level", "loud", "status"], "invalid choice: 'loud'"),
    (
        ["sync", "--plan-out", "plan.json"],
        "--plan-out writes a plan for review and needs --dry-run",
    ),
    # Found by the red team: exited 1, like a failed run, after reading the configuration.
    (["sync", "--dry-run", "--plan", "plan.json"], "--plan applies a reviewed plan"),
]


def test_a_usage_error_exits_64_and_touches_nothing(rig: Rig) -> None:
    rig.write(directory(3))
    for given, says in USAGE_ERRORS:
        args = [str(rig.folder / a) if a == "plan.json" else a for a in given]
        result = rig.orgsync(*args)
        assert result.returncode == 64, (args, result.stdout + result.stderr)
        assert says in result.stderr, (args, result.stderr)
        assert "usage:" in result.stderr
        assert result.stdout == ""
    assert rig.emulator.requests == [], "a usage error contacted the target"
    assert not (rig.folder / "state.db").exists(), "a usage error opened the state database"
    assert not (rig.folder / "plan.json").exists()


def test_config_is_accepted_after_the_command(rig: Rig) -> None:
    rig.write(directory(2))
    env = {**os.environ, KEY_ENV: API_KEY}
    after = cli.run(
        None,
        *("sync", "--dry-run", "--config", str(rig.config_path)),
        env=env,
        cwd=rig.folder.parent,
        timeout=60,
    )
    assert after.returncode == 2, after.stderr
    assert "to apply: 2 invite" in after.stdout


def test_config_after_the_command_wins_over_the_one_before(rig: Rig) -> None:
    rig.write(directory(2))
    env = {**os.environ, KEY_ENV: API_KEY}
    missing = rig.folder / "absent.toml"
    given = ["--config", str(missing), "status", "--config", str(rig.config_path)]
    both = cli.run(None, *given, env=env, timeout=60)
    assert both.returncode == 0, both.stderr
    before_only = cli.run(missing, "status", env=env, timeout=60)
    assert before_only.returncode == 1
    assert "absent.toml: cannot read the configuration" in before_only.stderr


def test_help_documents_the_exit_codes_and_plan_out() -> None:
    for args in (["--help"], ["sync", "--help"]):
        result = cli.run(None, *args, env=os.environ, timeout=60)
        assert result.returncode == 0
        for line in ("0   nothing left to do", "2   changes pending", "64  usage error"):
            assert line in result.stdout
    sync_help = cli.run(None, "sync", "--help", env=os.environ, timeout=60).stdout
    assert "required: --dry-run" in " ".join(sync_help.split())
