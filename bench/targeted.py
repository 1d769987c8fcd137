"""A targeted run (`orgsync sync --only EMAIL`) against a large organization: requests and
elapsed time, against a full pass over the same organization.

The OpenAI emulator runs in its own process (`--serve`), seeded with PEOPLE members and
PEOPLE/100 groups orgsync owns (each with a member, so that a full read lists both the
members and the roles of every group). The directory file has every member plus one new
joiner. The state database holds what a full sync leaves: a link per member and the
ownership of every group (written in one transaction here, to spare the benchmark 100k
fsyncs; issue 13's "state writes" item is another engineer's). Then, each as a fresh
`python -m orgsync` process, timed from spawn to exit with its peak RSS (`wait4`):

- `sync --dry-run` (the full pass: every member, invitation and group is read);
- `sync --only NEW_JOINER` (a real sync: the joiner is invited; the invitations list is
  read, since the joiner may hold one already);
- `sync --dry-run --only MEMBER` (a member who stays: no invitations list).

Requests are counted by the emulator. Goal (issue 13): the targeted run makes a handful of
requests, independent of the organization's size.

`--invite-history` also records an accepted invitation per member, as an organization
whose people all joined by invitation holds: the Admin API's invitations list has no
filter, so a targeted run reads it whole (one request per 100 invitations).

usage: .venv/bin/python bench/targeted.py [--invite-history] [PEOPLE ...]
       (default 10000 100000)
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KEY = "sk-admin-bench-0000000000000000000000000000000000000000"
GOAL_REQUESTS = 5
PEOPLE_PER_GROUP = 100


def serve(people: int, ids_file: Path, *, history: bool) -> None:
    """The emulator's process: seed, print the base URL, answer `count` on stdin."""
    from orgsync.testing.openai.emulator import OpenAIEmulator

    with OpenAIEmulator(api_key=KEY) as emulator:
        state = emulator.state
        ids = {f"p{i}": state.add_user(f"p{i}@example.com", "reader") for i in range(people)}
        if history:
            for i in range(people):
                state.add_invite(f"p{i}@example.com", "reader", status="accepted")
        groups = {}
        for g in range(people // PEOPLE_PER_GROUP):
            group_id = state.add_group(f"team-{g}")
            state.add_group_member(group_id, ids[f"p{g * PEOPLE_PER_GROUP}"])
            groups[f"team-{g}"] = group_id
        ids_file.write_text(json.dumps({"members": ids, "groups": groups}))
        print(emulator.start(), flush=True)
        for line in sys.stdin:
            if line.strip() == "count":
                print(len(emulator.requests), flush=True)


def write_world(folder: Path, people: int, url: str) -> None:
    members = [f"p{i}" for i in range(people + 1)]  # p<people> is the new joiner
    groups: list[dict[str, Any]] = [
        {"id": "u", "name": "openai-users", "members": members},
    ]
    groups += [
        {"id": f"t{g}", "name": f"team-{g}", "members": [f"p{g * PEOPLE_PER_GROUP}"]}
        for g in range(people // PEOPLE_PER_GROUP)
    ]
    document = {
        "people": [{"id": p, "email": f"{p}@example.com"} for p in members],
        "groups": groups,
    }
    (folder / "directory.json").write_text(json.dumps(document))
    (folder / "orgsync.toml").write_text(
        f"""
[source]
type = "file"
path = "directory.json"
[[targets]]
name = "bench"
type = "openai"
base_url = "{url}"
api_key_env = "BENCH_KEY"
allow_plaintext = true
default_role = "reader"
scope_groups = ["openai-*"]
timeout = "60s"
[[targets.groups]]
source = "team-*"
name = "{{source}}"
[safety]
max_removals = 1000
max_removal_ratio = 1.0
[state]
path = "state.db"
"""
    )


def remember_full_sync(folder: Path, ids: dict[str, Any]) -> None:
    """The links and owned groups a full sync would have left (one transaction)."""
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


def orgsync(folder: Path, *args: str) -> tuple[int, float, float, float]:
    """Run the CLI in a fresh process: (exit code, elapsed seconds, its CPU seconds, its
    peak RSS MiB). Elapsed includes the interpreter's start; on a shared machine the CPU
    figure is the steadier one."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "orgsync", "--log-level", "warning", *args],
        cwd=folder,
        env={**os.environ, "BENCH_KEY": KEY, "ORGSYNC_CONFIG": str(folder / "orgsync.toml")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code
    if code not in (0, 2):
        sys.exit(f"orgsync {' '.join(args)} exited {code}: {errors.decode()[-2000:]}")
    return code, elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def measure(people: int, *, history: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ids_file = folder / "ids.json"
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                str(people),
                str(ids_file),
                *(["--invite-history"] if history else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdin is not None
        assert server.stdout is not None

        def count() -> int:
            assert server.stdin is not None
            assert server.stdout is not None
            server.stdin.write("count\n")
            server.stdin.flush()
            return int(server.stdout.readline())

        try:
            url = server.stdout.readline().strip()
            write_world(folder, people, url)
            before = count()
            _, full_s, full_cpu, full_rss = orgsync(folder, "sync", "--dry-run")
            full_requests = count() - before
            remember_full_sync(folder, json.loads(ids_file.read_text()))
            before = count()
            code, only_s, only_cpu, only_rss = orgsync(
                folder, "sync", "--only", f"p{people}@example.com"
            )
            only_requests = count() - before
            before = count()
            _, member_s, member_cpu, member_rss = orgsync(
                folder, "sync", "--dry-run", "--only", "p1@example.com"
            )
            member_requests = count() - before
        finally:
            server.stdin.close()
            server.wait(30)
        groups = people // PEOPLE_PER_GROUP
        invitations = f", {people} accepted invitations" if history else ""
        print(
            f"{people:>7} people, {groups:>5} groups{invitations}\n"
            f"  full pass (sync --dry-run):    {full_requests:>6} requests, {full_s:6.2f} s "
            f"elapsed, {full_cpu:6.2f} s CPU, {full_rss:4.0f} MiB peak RSS\n"
            f"  sync --only one joiner (exit {code}): {only_requests:>6} requests, "
            f"{only_s:6.2f} s elapsed, {only_cpu:6.2f} s CPU, {only_rss:4.0f} MiB peak RSS\n"
            f"  sync --dry-run --only a member:  {member_requests:>6} requests, "
            f"{member_s:6.2f} s elapsed, {member_cpu:6.2f} s CPU, {member_rss:4.0f} MiB peak RSS\n"
            f"  requests / goal ({GOAL_REQUESTS}): joiner {only_requests / GOAL_REQUESTS:.2f}, "
            f"member {member_requests / GOAL_REQUESTS:.2f}; "
            f"full / joiner requests: {full_requests / max(only_requests, 1):.0f}x",
            flush=True,
        )


def main(argv: list[str]) -> None:
    if argv[:1] == ["--serve"]:
        serve(int(argv[1]), Path(argv[2]), history="--invite-history" in argv)
        return
    history = "--invite-history" in argv
    sizes = [int(a) for a in argv if a != "--invite-history"]
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores; goal: a targeted run "
        f"makes at most {GOAL_REQUESTS} requests at any size"
    )
    for people in sizes or [10_000, 100_000]:
        measure(people, history=history)


if __name__ == "__main__":
    main(sys.argv[1:])
