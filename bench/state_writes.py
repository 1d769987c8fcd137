"""Durable writes of a `sync`: fsync/fdatasync calls of a no-change pass and of a small change.

The organization (OpenAI emulator, in this process) already holds every person of the file
source with the right role. `orgsync sync` runs in a fresh process under `strace -f -c`,
which counts the fsync and fdatasync system calls of orgsync and its threads only (the
emulator is not traced). Three syncs, one database:
- the first links everyone (its writes are the links of 10k people, in one transaction);
- the second changes nothing: the figure the issue's goal is about (a handful of fsyncs);
- the third follows 100 people joining the source (100 invitations, each journaled
  durably before and after its call, its link before and after: a few fsyncs each).

Each fsync costs one disk flush (about 1 ms on an ordinary cloud disk), which is why the
count, not the time on this machine's page cache, is the figure.

usage: .venv/bin/python bench/state_writes.py [PEOPLE] [CHANGES]   (default 10000 100)
needs: strace (apt-get install strace)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from orgsync.testing.openai.emulator import OpenAIEmulator

KEY = _common.KEY
GOAL_NO_CHANGE = 10
"""'A handful': one commit each for the lease, the run row, the plan's journal, the run's
finish, the lease's release and the pruning of old runs, plus SQLite's sync of the
directory when it starts a WAL file and of the database at the checkpoint on close."""


def traced_sync(folder: Path) -> tuple[int, float, int]:
    """Run `orgsync sync` under strace; (fsync+fdatasync calls, wall seconds, exit code)."""
    summary = folder / "strace.txt"
    command = [
        "strace",
        "-f",
        "-c",
        "-e",
        "trace=fsync,fdatasync",
        "-o",
        str(summary),
        sys.executable,
        "-m",
        "orgsync",
        "sync",
        "--config",
        str(folder / "orgsync.toml"),
        "--log-level",
        "warning",
    ]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=folder,
        env={**os.environ, _common.KEY_ENV: KEY},
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise SystemExit(f"orgsync sync failed ({done.returncode}): {done.stderr[-2000:]}")
    calls = 0
    for line in summary.read_text().splitlines():
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)$", line)
        if match:
            calls += int(match.group(1))
    return calls, elapsed, done.returncode


def directory(folder: Path, people: int) -> None:
    _common.write_directory(folder, _common.Seed(people))


def main(people: int, changes: int) -> None:
    if shutil.which("strace") is None:
        raise SystemExit("bench/state_writes.py needs strace (apt-get install strace)")
    with tempfile.TemporaryDirectory() as tmp, OpenAIEmulator(api_key=KEY) as emulator:
        folder = Path(tmp)
        for i in range(people):
            emulator.state.add_user(f"p{i}@example.com", "reader")
        directory(folder, people)
        safety = "[safety]\nmax_additions = 1000000\nmax_addition_ratio = 1.0"
        _common.write_config(folder, emulator.start(), groups=False, safety=safety)
        first, first_s, _ = traced_sync(folder)
        quiet, quiet_s, quiet_code = traced_sync(folder)
        directory(folder, people + changes)
        changed, changed_s, changed_code = traced_sync(folder)
        print(f"people {people}; fsync+fdatasync calls of `orgsync sync` (strace -f -c)")
        print(f"first sync (links everyone)      {first:6d}   {first_s:5.1f} s")
        print(
            f"no-change sync                   {quiet:6d}   {quiet_s:5.1f} s   exit {quiet_code}"
            f"   goal <= {GOAL_NO_CHANGE}: {quiet / GOAL_NO_CHANGE:.2f}x"
        )
        print(
            f"sync of {changes} invitations       {changed:6d}   {changed_s:5.1f} s   "
            f"exit {changed_code}   {changed / max(changes, 1):.2f} per operation"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 10_000, int(args[1]) if len(args) > 1 else 100)
