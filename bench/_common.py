"""Set-up the end-to-end benchmarks share: the emulator in its own process, the CLI in a
fresh one, a directory file and a configuration for an OpenAI target, and the state a
full sync leaves.

Figures of a process come from `wait4` on it alone (its CPU time and peak RSS), so the
emulator's work never counts as orgsync's. The machine is shared: CPU time is the steady
figure, elapsed time is what an administrator waits.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KEY = "sk-admin-bench-0000000000000000000000000000000000000000"
KEY_ENV = "BENCH_KEY"
MiB = 2**20


# --------------------------------------------------------------------------- the emulator


@dataclass(frozen=True)
class Seed:
    """What the emulated organization holds before the benchmark starts.

    `people` members `p0@example.com`..., `groups` groups `team-<g>` each holding
    `per_group` members (group g: people g*per_group ... modulo people), and an accepted
    invitation per member with `history`."""

    people: int
    groups: int = 0
    per_group: int = 1
    history: bool = False

    def members_of(self, group: int) -> range:
        start = (group * self.per_group) % max(self.people, 1)
        return range(start, start + self.per_group)

    def arguments(self) -> list[str]:
        return [
            str(self.people),
            str(self.groups),
            str(self.per_group),
            "history" if self.history else "-",
        ]

    @classmethod
    def parse(cls, argv: Sequence[str]) -> Seed:
        return cls(int(argv[0]), int(argv[1]), int(argv[2]), argv[3] == "history")


def serve(seed: Seed, ids_file: Path) -> None:
    """The emulator's process: seed, write the ids, print the base URL, then answer on
    stdin `count` (requests served so far), `cpu` (its own CPU seconds so far, all
    threads) and `invited EMAIL` (1 if an invitation to EMAIL exists, else 0)."""
    from orgsync.testing.openai.emulator import OpenAIEmulator

    with OpenAIEmulator(api_key=KEY) as emulator:
        state = emulator.state
        ids = [state.add_user(f"p{i}@example.com", "reader") for i in range(seed.people)]
        if seed.history:
            for i in range(seed.people):
                state.add_invite(f"p{i}@example.com", "reader", status="accepted")
        groups = {}
        for g in range(seed.groups):
            group_id = state.add_group(f"team-{g}")
            for i in seed.members_of(g):
                state.add_group_member(group_id, ids[i % seed.people])
            groups[f"team-{g}"] = group_id
        members = {f"p{i}": user_id for i, user_id in enumerate(ids)}
        ids_file.write_text(json.dumps({"members": members, "groups": groups}))
        print(emulator.start(), flush=True)
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "count":
                print(len(emulator.requests), flush=True)
            elif command == "cpu":
                print(time.process_time(), flush=True)
            elif command == "invited":
                found = any(i["email"] == argument for i in state.invites())
                print(int(found), flush=True)


class Emulator:
    """The OpenAI emulator running `serve` in a process of its own."""

    def __init__(self, process: subprocess.Popen[str], ids_file: Path) -> None:
        self._process = process
        assert process.stdout is not None
        self.url = process.stdout.readline().strip()
        if not self.url:
            raise SystemExit("the emulator process did not start")
        self.ids: dict[str, Any] = json.loads(ids_file.read_text())

    def count(self) -> int:
        """Requests served so far."""
        return int(self._ask("count"))

    def cpu_s(self) -> float:
        """The emulator process's own CPU seconds so far (user + system, all threads)."""
        return float(self._ask("cpu"))

    def invited(self, email: str) -> bool:
        """Whether the organization holds an invitation to `email`."""
        return self._ask(f"invited {email}") == "1"

    def _ask(self, line: str) -> str:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(f"{line}\n")
        self._process.stdin.flush()
        return self._process.stdout.readline().strip()


@contextmanager
def emulator(script: str, seed: Seed, folder: Path) -> Iterator[Emulator]:
    """Start `script --serve SEED...` (whose main calls `serve`) and stop it afterwards."""
    ids_file = folder / "ids.json"
    process = subprocess.Popen(
        [sys.executable, script, "--serve", *seed.arguments(), str(ids_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield Emulator(process, ids_file)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(60)


def serve_main(argv: Sequence[str]) -> bool:
    """Run `serve` when `argv` is `--serve SEED... IDS_FILE`; True if it was."""
    if argv[:1] != ["--serve"]:
        return False
    serve(Seed.parse(argv[1:5]), Path(argv[5]))
    return True


# --------------------------------------------------------------------------- the world


def write_directory(folder: Path, seed: Seed, *, extra_people: int = 0) -> None:
    """`directory.json`: every seeded member (plus `extra_people` newcomers) in
    `openai-users`, and the groups `team-<g>` with the seeded members."""
    members = [f"p{i}" for i in range(seed.people + extra_people)]
    groups: list[dict[str, Any]] = [{"id": "u", "name": "openai-users", "members": members}]
    groups += [
        {
            "id": f"t{g}",
            "name": f"team-{g}",
            "members": [f"p{i % seed.people}" for i in seed.members_of(g)],
        }
        for g in range(seed.groups)
    ]
    document = {
        "people": [{"id": p, "email": f"{p}@example.com"} for p in members],
        "groups": groups,
    }
    (folder / "directory.json").write_text(json.dumps(document))


SAFETY = """
[safety]
max_removals = 1000
max_removal_ratio = 1.0
"""


def write_config(
    folder: Path, url: str, *, groups: bool = True, safety: str = SAFETY, extra: str = ""
) -> Path:
    """`orgsync.toml`: the file source and one OpenAI target `bench` (its people: the
    `openai-*` groups), mirroring `team-*` groups unless `groups` is false."""
    mirror = '[[targets.groups]]\nsource = "team-*"\nname = "{source}"' if groups else ""
    path = folder / "orgsync.toml"
    path.write_text(
        f"""
[source]
type = "file"
path = "directory.json"
[[targets]]
name = "bench"
type = "openai"
base_url = "{url}"
api_key_env = "{KEY_ENV}"
allow_plaintext = true
default_role = "reader"
scope_groups = ["openai-*"]
timeout = "60s"
{mirror}
{safety}
[state]
path = "state.db"
{extra}
"""
    )
    return path


def remember_full_sync(folder: Path, ids: dict[str, Any]) -> None:
    """The links and owned groups a full sync would have left, in one transaction (the
    database must exist: run any orgsync command that opens it first)."""
    from orgsync.store.db import encode_time

    now = encode_time(datetime.now(UTC))
    with sqlite3.connect(folder / "state.db") as db:
        db.executemany(
            "INSERT OR REPLACE INTO links (target, email_key, source_id, member_id, invite_id,"
            " first_linked_at, updated_at) VALUES ('bench', ?, ?, ?, NULL, ?, ?)",
            [(f"{p}@example.com", p, m, now, now) for p, m in ids["members"].items()],
        )
        db.executemany(
            "INSERT OR REPLACE INTO owned_groups (target, group_id, source_group_id, name, how,"
            " first_owned_at, updated_at) VALUES ('bench', ?, ?, ?, 'created', ?, ?)",
            [
                (group_id, f"t{name.removeprefix('team-')}", name, now, now)
                for name, group_id in ids["groups"].items()
            ],
        )


# --------------------------------------------------------------------------- the CLI


@dataclass(frozen=True)
class Run:
    """One `python -m orgsync` process: its exit code, elapsed time, and from `wait4` its
    own CPU time (user + system) and peak RSS."""

    code: int
    elapsed_s: float
    cpu_s: float
    peak_rss_mib: float


PROFILED = """
import cProfile, pstats, runpy, sys, threading, time
profiles = []
def start(*_):
    sys.setprofile(None)
    profile = cProfile.Profile(time.thread_time)
    profiles.append(profile)
    profile.enable()
threading.setprofile(start)
out, sys.argv = sys.argv[1], ["orgsync", *sys.argv[2:]]
main = cProfile.Profile(time.thread_time)
profiles.append(main)
code = 0
try:
    main.runcall(runpy.run_module, "orgsync", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
finally:
    stats = pstats.Stats(profiles[0])
    for other in profiles[1:]:
        stats.add(other)
    stats.dump_stats(out)
sys.exit(code)
"""
"""`python -c PROFILED OUT ARGS...`: `python -m orgsync ARGS...` under cProfile in every
thread (`-m cProfile` sees the main thread only, and the group reads run on a pool), the
statistics of all threads merged into the file OUT."""


def environment(folder: Path) -> dict[str, str]:
    return {**os.environ, KEY_ENV: KEY, "ORGSYNC_CONFIG": str(folder / "orgsync.toml")}


def orgsync(
    folder: Path, *args: str, codes: Sequence[int] = (0, 2), profile: Path | None = None
) -> Run:
    """Run the CLI in a fresh process in `folder`; exit if its code is not in `codes`.
    With `profile`, the process runs under cProfile and writes its statistics there."""
    started = time.perf_counter()
    command = ["-m", "orgsync", "--log-level", "warning", *args]
    if profile is not None:
        command = ["-c", PROFILED, str(profile), *command[2:]]
    process = subprocess.Popen(
        [sys.executable, *command],
        cwd=folder,
        env=environment(folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code
    process.stderr.close()
    if code not in codes:
        sys.exit(f"orgsync {' '.join(args)} exited {code}: {errors.decode()[-2000:]}")
    return Run(code, elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def spread(values: Sequence[float], fmt: str = ".2f") -> str:
    """`median (min-max)` of a list of figures."""
    ordered = sorted(values)
    middle = (
        ordered[len(ordered) // 2]
        if len(ordered) % 2
        else sum(ordered[len(ordered) // 2 - 1 : len(ordered) // 2 + 1]) / 2
    )
    if len(ordered) == 1:
        return format(middle, fmt)
    return f"{middle:{fmt}} ({ordered[0]:{fmt}}-{ordered[-1]:{fmt}})"
