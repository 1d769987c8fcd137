"""The README's test command sets itself up: scripts/setup-system installs what is
missing when it can, and otherwise stops with one message listing what to install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fake_bin(folder: Path, *, keep: tuple[str, ...]) -> Path:
    """A PATH holding only `keep` (real tools) and an `id` that says: not root."""
    folder.mkdir()
    for name in keep:
        real = shutil.which(name)
        assert real, name
        (folder / name).symlink_to(real)
    (folder / "id").write_text("#!/bin/sh\necho 1000\n")
    (folder / "id").chmod(0o755)
    return folder


def test_without_root_or_sudo_one_message_lists_the_packages(tmp_path: Path) -> None:
    path = fake_bin(tmp_path / "bin", keep=("dirname", "find", "head", "bash"))
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-system")],
        capture_output=True,
        text=True,
        env={"PATH": str(path), "HOME": str(tmp_path)},
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert (
        lines[0] == "setup-system: the tests need these system packages, which are not installed:"
    )
    listed = lines[1].split()
    # /usr/sbin is looked into too, so slapd may count as present on this machine.
    assert {"ldap-utils", "openssl", "nodejs", "npm", "systemd"} <= set(listed)
    assert len(listed) == len(set(listed)), "each package once"
    assert "sudo apt-get install" in result.stderr


def test_with_everything_present_it_is_quiet_and_succeeds() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-system")],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stdout


def test_ci_only_runs_the_readme_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line for line in ci.splitlines() if line and not line.startswith("#")]
    assert commands[-1] == "exec scripts/test"
    assert "apt-get" not in ci and "npm" not in ci
    assert "scripts/setup-system" in (ROOT / "scripts" / "test").read_text(encoding="utf-8")
