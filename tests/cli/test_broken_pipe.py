"""Red team: `orgsync ... | head`, the reader of stdout gone before the output is written.

A Python traceback (BrokenPipeError) came out on stderr, after a sync had applied its
plan as much as before a dry run. Now one line says what happened, and the exit code is
1 (the output was not delivered), as for any other error.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory


@pytest.mark.parametrize("command", [["sync", "--dry-run"], ["runs"], ["status", "--json"]])
def test_a_closed_stdout_ends_without_a_traceback(rig: Rig, command: list[str]) -> None:
    rig.write(directory(2))
    assert rig.orgsync("sync").returncode == 0
    rig.write(directory(400))  # a dry run's plan larger than a pipe's buffer
    reader, writer = os.pipe()
    os.close(reader)  # the reader exited (head -c 1 had what it wanted)
    try:
        process = cli.start(
            rig.config_path,
            *command,
            env={**os.environ, KEY_ENV: API_KEY},
            stdout=writer,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(writer)
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err[-3000:]
    assert "BrokenPipeError" not in err, err[-3000:]
    assert "stdout was closed" in err, err[-3000:]
    assert process.returncode == 1
