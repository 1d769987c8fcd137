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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

DEFAULT_TIMEOUT = 120.0
MODULE = ("-m", "orgsync")
"""How the interpreter is told to run orgsync: `python -m orgsync`. A test that must change
the interpreter first (hide a library) gives its own, e.g. `("-c", code)`."""


def command(
    config: Path | None, *args: str, entry: Sequence[str] = MODULE, wrapper: Sequence[str] = ()
) -> list[str]:
    """The argv of `orgsync [--config CONFIG] ARGS...` on this interpreter; `wrapper` comes
    first (`unshare ...` to run it in a namespace of its own)."""
    prefix = ["--config", str(config)] if config is not None else []
    return [*wrapper, sys.executable, *entry, *prefix, *args]


def run(
    config: Path | None,
    *args: str,
    env: Mapping[str, str],
    timeout: float = DEFAULT_TIMEOUT,
    stdin: str | None = None,
    stdout: int | IO[bytes] = subprocess.PIPE,
    stderr: int | IO[bytes] = subprocess.PIPE,
    cwd: Path | None = None,
    entry: Sequence[str] = MODULE,
) -> subprocess.CompletedProcess[str]:
    """Run the command to its end; its output captured as text (unless `stdout`/`stderr`
    send it elsewhere, e.g. to a pseudo-terminal), its exit code not checked (the tests
    assert on it)."""
    return subprocess.run(
        command(config, *args, entry=entry),
        input=stdin,
        stdout=stdout,
        stderr=stderr,
        text=True,
        timeout=timeout,
        env=dict(env),
        cwd=cwd,
        check=False,
    )


def start(
    config: Path | None,
    *args: str,
    env: Mapping[str, str],
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    wrapper: Sequence[str] = (),
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.Popen[str]:
    """Start the command without waiting (a daemon, a sync to interrupt, a second writer);
    the test waits on it, signals it and reads its files. `preexec_fn` runs in the child
    before orgsync does (to lower a resource limit)."""
    return subprocess.Popen(
        command(config, *args, wrapper=wrapper),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        text=True,
        env=dict(env),
        preexec_fn=preexec_fn,  # noqa: PLW1509 - callers only set resource limits
    )
