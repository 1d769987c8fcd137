"""The one way the suite runs the real `orgsync` command: `python -m orgsync` in a child
process, as an administrator would, with the environment the test gives (credentials come
from the environment, never from the command line).

Every folder's rig (`tests/cli/harness.py`, `tests/daemon/harness.py`,
`tests/sources/cli.py`, `tests/targets/cli.py`) builds its configuration and environment,
then runs the command through `run` or `start`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

DEFAULT_TIMEOUT = 120.0


def command(config: Path | None, *args: str) -> list[str]:
    """The argv of `orgsync [--config CONFIG] ARGS...` on this interpreter."""
    prefix = ["--config", str(config)] if config is not None else []
    return [sys.executable, "-m", "orgsync", *prefix, *args]


def run(
    config: Path | None,
    *args: str,
    env: Mapping[str, str],
    timeout: float = DEFAULT_TIMEOUT,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the command to its end; its output captured as text, its exit code not checked
    (the tests assert on it)."""
    return subprocess.run(
        command(config, *args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env),
        check=False,
    )


def start(
    config: Path | None,
    *args: str,
    env: Mapping[str, str],
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    """Start the command without waiting (a daemon, a sync to interrupt, a second writer);
    the test waits on it, signals it and reads its files."""
    return subprocess.Popen(
        command(config, *args),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        text=True,
        env=dict(env),
    )
