"""Rehearsing a configuration: `orgsync emulate` serves an organization until stopped, and
`orgsync demo --keep DIR` leaves a folder whose printed next commands work as printed.

Every command runs as a separate process, as a person would type it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from orgsync.testing.openai import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, directory
from tests.cli.shapes import only_target


def _orgsync(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli.run(None, *args, env={**os.environ, **(env or {})})


class Served:
    """`orgsync emulate ...` running in the background; its stdout read as it comes."""

    def __init__(self, *args: str) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = cli.start(
            None, "emulate", *args, env=os.environ, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self._stderr.seek(0)
        raise AssertionError(f"no {pattern!r} in {self.lines} {self._stderr.read()!r}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()
        return code


def _exported(lines: list[str]) -> dict[str, str]:
    """`export NAME=value` lines the command printed, as an environment."""
    env: dict[str, str] = {}
    for line in lines:
        found = re.fullmatch(r"\s*export (\w+)=(\S+)", line)
        if found:
            env[found.group(1)] = found.group(2)
    return env


def test_emulate_openai_serves_a_sample_organization_to_dry_run_against(tmp_path: Path) -> None:
    served = Served("openai", "--listen", "127.0.0.1:0", "--people", "3")
    try:
        url = served.wait_for(r'base_url = "(http://127\.0\.0\.1:\d+/v1)"').group(1)
        served.wait_for("Ctrl-C stops")
        env = _exported(served.lines)
        (name,) = env
        # The printed target table, pasted into a configuration, works as printed.
        table = "\n".join(
            line.strip() for line in served.lines if re.match(r"\s+(\[\[targets\]\]|\w+ = )", line)
        )
        (tmp_path / "directory.json").write_text(json.dumps(directory(4)))
        config = tmp_path / "orgsync.toml"
        config.write_text(
            f'[source]\ntype = "file"\npath = "directory.json"\n\n{table}\n'
            'default_role = "reader"\nscope_groups = ["openai-*"]\n'
            "[safety]\nmax_removals = 100\nmax_removal_ratio = 1.0\n"
            '[state]\npath = "state.db"\n'
        )
        dry = _orgsync("--config", str(config), "sync", "--dry-run", "--json", env=env)
        assert dry.returncode == 2, dry.stderr
        plan = only_target(json.loads(dry.stdout))
        ops = {(op["op"], op["email"]) for op in plan["operations"]}
        # person1..3 are the --people members, person0..3 the directory's people.
        assert ("invite", "person0@example.com") in ops
        assert not {e for o, e in ops if o == "invite"} & {
            f"person{i}@example.com" for i in (1, 2, 3)
        }
        assert ("remove_member", "ken@example.com") not in ops  # unknown, never linked
        assert url in config.read_text()
        assert name == "ORGSYNC_DEMO_ADMIN_KEY"
    finally:
        code = served.stop()
    assert code == 0
    assert served.lines[-1] == "emulator stopped"


def test_emulate_keycard_with_a_seed_file(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "members": [
                    {"email": "person0@example.com", "role": "org_admin"},
                    {"email": "old@example.com", "role": "org_member", "status": "disabled"},
                ],
                "invites": [{"email": "person1@example.com", "role": "org_admin"}],
            }
        )
    )
    served = Served("keycard", "--seed-file", str(seed))
    try:
        table = []
        served.wait_for("Ctrl-C stops")
        table = [
            line.strip() for line in served.lines if re.match(r"\s+(\[\[targets\]\]|\w+ = )", line)
        ]
        (tmp_path / "directory.json").write_text(json.dumps(directory(3)))
        config = tmp_path / "orgsync.toml"
        config.write_text(
            '[source]\ntype = "file"\npath = "directory.json"\n\n'
            + "\n".join(table)
            + '\ndefault_role = "org_member"\n[[targets.roles]]\n'
            'group = "openai-owners"\nrole = "org_admin"\n'
            '[state]\npath = "state.db"\n'
        )
        dry = _orgsync(
            "--config", str(config), "sync", "--dry-run", "--json", env=_exported(served.lines)
        )
        assert dry.returncode == 2, dry.stderr
        plan = only_target(json.loads(dry.stdout))
        ops = {(op["op"], op.get("email")) for op in plan["operations"]}
        assert ("invite", "person2@example.com") in ops
        assert ("invite", "person1@example.com") in ops  # wrong role on the invitation
        assert not [o for o in ops if o[1] == "person0@example.com"]  # already an admin
    finally:
        assert served.stop() == 0


def _pasted(lines: list[str]) -> str:
    """The configuration table the command printed, as a person would paste it."""
    return "\n".join(line.strip() for line in lines if re.match(r"\s+(\[\[?\w+\]\]?|\w+ = )", line))


def _dry_run_from(served: Served, folder: Path) -> set[str]:
    """A dry run from the printed [source] table into an OpenAI organization: who would be
    invited."""
    with OpenAIEmulator(api_key=API_KEY) as organization:
        config = folder / "orgsync.toml"
        config.write_text(
            f"{_pasted(served.lines)}\n\n[[targets]]\n"
            f'name = "org"\ntype = "openai"\nbase_url = "{organization.base_url}"\n'
            f'api_key_env = "{KEY_ENV}"\nallow_plaintext = true\n'
            'default_role = "reader"\nscope_groups = ["openai-users"]\n'
            '[state]\npath = "state.db"\n'
        )
        env = {**_exported(served.lines), KEY_ENV: API_KEY}
        dry = _orgsync("--config", str(config), "sync", "--dry-run", "--json", env=env)
    assert dry.returncode == 2, dry.stderr
    plan = only_target(json.loads(dry.stdout))
    return {op["email"] for op in plan["operations"] if op["op"] == "invite"}


@pytest.mark.parametrize("kind", ["okta", "entra", "google"])
def test_emulate_a_directory_and_plan_from_it(tmp_path: Path, kind: str) -> None:
    """The printed [source] table works as printed: the sample company's active people in
    openai-users (nested team-ml included, Okta's copy flattened) plus --people are wanted;
    the leaver and the two people sharing one email are not."""
    served = Served(kind, "--people", "2")
    try:
        served.wait_for("Ctrl-C stops")
        assert _dry_run_from(served, tmp_path) == {
            "grace@example.com",
            "alan@example.com",
            "edsger@example.com",
            "margaret@example.com",
            "barbara@example.com",
            "person1@example.com",
            "person2@example.com",
        }
    finally:
        assert served.stop() == 0
    assert served.lines[-1] == "emulator stopped"


def test_emulate_a_directory_from_a_seed_file_in_the_file_source_format(tmp_path: Path) -> None:
    seed = tmp_path / "directory.json"
    seed.write_text(json.dumps(directory(3, inactive=(2,))))
    served = Served("okta", "--seed-file", str(seed))
    try:
        served.wait_for("Ctrl-C stops")
        assert _dry_run_from(served, tmp_path) == {"person0@example.com", "person1@example.com"}
    finally:
        assert served.stop() == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"people": [{"id": "p1", "email": "a@example.com"}], "groups": 3}))
    refused = _orgsync("emulate", "okta", "--seed-file", str(bad))
    assert refused.returncode == 1
    assert "groups" in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["emulate", "scim-x"], "invalid choice"),
        (["emulate", "openai", "--listen", "nowhere"], "not HOST:PORT"),
        (["emulate", "openai", "--people", "-1"], "must be 0 or more"),
        (["--log-format", "xml", "sync"], "invalid choice"),
    ],
)
def test_emulate_usage_errors_exit_64(args: list[str], message: str) -> None:
    result = _orgsync(*args)
    assert result.returncode == 64
    assert message in result.stderr
    assert result.stdout == ""


def test_emulate_refuses_a_bad_seed_file_naming_the_record(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"members": [{"email": "a@example.com", "role": "emperor"}]}))
    result = _orgsync("emulate", "openai", "--seed-file", str(seed))
    assert result.returncode == 1
    assert "members[0]" in result.stderr
    assert "emperor" in result.stderr


def test_demo_keep_leaves_a_folder_whose_printed_commands_work(tmp_path: Path) -> None:
    keep = tmp_path / "rehearsal"
    demo = _orgsync("demo", "--keep", str(keep))
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert {p.name for p in keep.iterdir()} >= {"orgsync.toml", "directory.json", "orgsync.db"}
    lines = demo.stdout.splitlines()
    start = lines.index("=== kept in " + str(keep.resolve()) + " ===")
    commands = [line.strip() for line in lines[start:] if line.strip().startswith("orgsync ")]
    emulate, *sync_commands = commands
    assert emulate.startswith("orgsync emulate openai --listen 127.0.0.1:")
    env = _exported(lines[start:])
    served = Served(*shlex.split(emulate)[2:])
    try:
        served.wait_for("Ctrl-C stops")
        results = []
        for command in sync_commands:
            argv = shlex.split(command)[1:]
            results.append(_orgsync(*argv, env=env))
        dry, sync, status = results
        # The emulator starts from the demo's first organization; the kept state database
        # remembers whom the demo invited, so the plan is the demo's first one again.
        assert dry.returncode == 2, dry.stdout + dry.stderr
        assert re.search(r"set_role\s+ada@example\.com\s+reader -> owner", dry.stdout)
        assert sync.returncode == 0, sync.stdout + sync.stderr
        assert status.returncode == 0
        assert "last run" in status.stdout
        again = _orgsync(*shlex.split(sync_commands[0])[1:], env=env)
        assert again.returncode == 0, again.stdout
    finally:
        assert served.stop() == 0


def test_demo_keep_never_overwrites_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "orgsync.toml").write_text("# mine\n")
    result = _orgsync("demo", "--keep", str(tmp_path))
    assert result.returncode == 1
    assert "nothing was overwritten" in result.stderr
    assert (tmp_path / "orgsync.toml").read_text() == "# mine\n"
    assert not (tmp_path / "orgsync.db").exists()
