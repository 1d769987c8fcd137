"""What a person at a terminal sees during a 1,500-person `orgsync sync`, and when.

Runs `orgsync sync` in a pseudo-terminal (as a person at a terminal would) against the
OpenAI emulator with a file source of PEOPLE people (half already members, half to be
invited, at RATE requests per second on both sides), and prints:
- seconds until the first byte reached the terminal, until the plan's first operation
  line was on it, and until the command ended;
- the last screenful, escape codes removed.

`--src DIR` runs another checkout's `src` (e.g. a worktree of an older commit) under the
same emulator, for before/after comparisons.

usage: .venv/bin/python bench/operator_view.py [PEOPLE] [RATE] [--src DIR]
       (default 1500 people, 100 req/s)
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from orgsync.testing.openai.emulator import OpenAIEmulator

KEY = _common.KEY
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
OPERATION_LINE = re.compile(rb"invite\s+person\d+@example\.com")


def _config(folder: Path, url: str, rate: float) -> Path:
    people = [
        {"id": f"p{i}", "email": f"person{i}@example.com", "name": f"Person {i}"}
        for i in range(PEOPLE)
    ]
    (folder / "directory.json").write_text(
        json.dumps(
            {
                "people": people,
                "groups": [
                    {"id": "g", "name": "openai-users", "members": [p["id"] for p in people]},
                    {"id": "o", "name": "openai-owners", "members": ["p0"]},
                ],
            }
        )
    )
    path = folder / "orgsync.toml"
    path.write_text(
        f"""
[source]
type = "file"
path = "directory.json"

[[targets]]
name = "openai-bench"
type = "openai"
base_url = "{url}"
api_key_env = "BENCH_KEY"
allow_plaintext = true
default_role = "reader"
scope_groups = ["openai-*"]
requests_per_second = {rate}
roles = [{{ group = "openai-owners", role = "owner" }}]

[safety]
max_removals = 1000
max_removal_ratio = 1.0

[state]
path = "state.db"
"""
    )
    return path


def _watch(argv: list[str], env: dict[str, str]) -> tuple[float, float | None, float, bytes]:
    started = time.monotonic()
    leader, follower = pty.openpty()
    process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    seen = b""
    first_byte: float | None = None
    first_operation: float | None = None
    while True:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            now = time.monotonic() - started
            first_byte = now if first_byte is None else first_byte
            seen += chunk
            if first_operation is None and OPERATION_LINE.search(ANSI.sub(b"", seen)):
                first_operation = now
        elif process.poll() is not None:
            break
    process.wait()
    ended = time.monotonic() - started
    return first_byte or ended, first_operation, ended, seen


def main(rate: float, src: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp, OpenAIEmulator(api_key=KEY) as emulator:
        for i in range(1, PEOPLE // 2):
            emulator.state.add_user(f"person{i}@example.com", "reader")
        config = _config(Path(tmp), emulator.start(), rate)
        env = dict(os.environ, BENCH_KEY=KEY, COLUMNS="110", LINES="40", TERM="xterm-256color")
        if src is not None:
            env["PYTHONPATH"] = str(src)
        argv = [sys.executable, "-m", "orgsync", "--config", str(config), "sync"]
        first_byte, first_operation, ended, seen = _watch(argv, env)
    text = ANSI.sub(b"", seen).decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.strip()]
    print(f"people={PEOPLE} rate={rate}/s src={src or 'this checkout'}")
    print(f"first byte on the terminal : {first_byte:6.2f} s")
    shown = f"{first_operation:6.2f} s" if first_operation is not None else "   never"
    print(f"first planned operation    : {shown}")
    print(f"command ended              : {ended:6.2f} s")
    print(f"lines printed              : {len(lines)}")
    print("--- first 14 lines ---")
    print("\n".join(lines[:14]))
    print("--- last 8 lines ---")
    print("\n".join(lines[-8:]))


if __name__ == "__main__":
    args = sys.argv[1:]
    source: Path | None = None
    if "--src" in args:
        at = args.index("--src")
        source = Path(args[at + 1]).resolve()
        del args[at : at + 2]
    PEOPLE = int(args[0]) if args else 1500
    main(float(args[1]) if len(args) > 1 else 100.0, source)
