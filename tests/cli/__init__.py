"""The one way the suite runs the real `orgsync` command: `python -m orgsync` in a child
process, as an administrator would, with the environment the test gives (credentials come
from the environment, never from the command line).

Every folder's rig (`tests/cli/harness.py`, `tests/daemon/harness.py`,
`tests/sources/cli.py`, `tests/targets/cli.py`) builds its configuration and environment,
then runs the command through `run` or `start`.

In a test module marked `pytestmark = pytest.mark.orgsync_in_process` (tests/conftest.py),
`run` calls `run_here` instead: the same `orgsync.cli.main` in the test's process (its
environment, stdin, stdout and stderr swapped in for the call), without an interpreter's
start-up and the product's imports (0.5-2 s a call on a busy machine). That is for tests
whose point is what a command decides, writes and prints, not the process: a run with a
pseudo-terminal, another entry or a working directory of its own, and `start`, still
start a process, and a test marked `orgsync_in_process(False)` runs every command as a
process. Each command keeps tests that run it as a process, through the real entry point.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

DEFAULT_TIMEOUT = 120.0
_here = False
"""Whether `run` runs the command in this process (`in_process`)."""
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
    assert on it). In this process (`run_here`) under `in_process`, when nothing but its
    arguments, environment and stdin is asked for, from the main thread."""
    if (
        _here
        and entry == MODULE
        and stdout == stderr == subprocess.PIPE
        and cwd is None
        # Commands run from other threads run at the same time as others: processes.
        and threading.current_thread() is threading.main_thread()
    ):
        return run_here(config, *args, env=env, stdin=stdin)
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


@contextlib.contextmanager
def in_process(on: bool = True) -> Iterator[None]:
    """`run` calls `run_here` (or, `on` False, starts processes) while this lasts."""
    global _here  # noqa: PLW0603 - the switch of the test that is running
    previous, _here = _here, on
    try:
        yield
    finally:
        _here = previous


_HERE = threading.Lock()
"""One in-process command at a time: the environment and the standard streams are the
process's own."""


def run_here(
    config: Path | None,
    *args: str,
    env: Mapping[str, str],
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`run`, but through `orgsync.cli.main` in this process: its exit code (a SystemExit's
    too), stdout and stderr as `run` gives them, and an escaping exception as the
    interpreter would end on it (its traceback on stderr, exit code 1)."""
    argv = command(config, *args)[len(command(None)) :]
    out, err = io.StringIO(), io.StringIO()
    with _HERE, _environment(env), _logging(), contextlib.ExitStack() as streams:
        streams.enter_context(contextlib.redirect_stdout(out))
        streams.enter_context(contextlib.redirect_stderr(err))
        previous_stdin = sys.stdin
        sys.stdin = io.StringIO(stdin or "")
        try:
            from orgsync.cli import main

            code = main(argv)
        except SystemExit as exit_:
            code = _exit_code(exit_, err)
        except Exception:  # as the interpreter ends on it
            traceback.print_exc(file=err)
            code = 1
        finally:
            sys.stdin = previous_stdin
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def _exit_code(exit_: SystemExit, err: io.StringIO) -> int:
    if exit_.code is None:
        return 0
    if isinstance(exit_.code, int):
        return exit_.code
    print(exit_.code, file=err)
    return 1


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _logging() -> Iterator[None]:
    """The command configures structlog (level, renderer) and may bind context: the
    test process's own logging, which later tests capture, is put back as it was."""
    import structlog

    saved = structlog.get_config()
    bound = structlog.contextvars.get_contextvars()
    try:
        yield
    finally:
        structlog.configure(**saved)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**bound)
