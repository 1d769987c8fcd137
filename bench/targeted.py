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

import os
import sys
import tempfile
from pathlib import Path

import _common

GOAL_REQUESTS = 5
PEOPLE_PER_GROUP = 100


def measure(people: int, *, history: bool) -> None:
    # PEOPLE/100 groups orgsync owns, each holding one member.
    seed = _common.Seed(people, groups=people // PEOPLE_PER_GROUP, per_group=1, history=history)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with _common.emulator(__file__, seed, folder) as server:
            # p<people> is the new joiner.
            _common.write_directory(folder, seed, extra_people=1)
            _common.write_config(folder, server.url)
            before = server.count()
            full = _common.orgsync(folder, "sync", "--dry-run")
            full_requests = server.count() - before
            _common.remember_full_sync(folder, server.ids)
            before = server.count()
            only = _common.orgsync(folder, "sync", "--only", f"p{people}@example.com")
            only_requests = server.count() - before
            before = server.count()
            member = _common.orgsync(folder, "sync", "--dry-run", "--only", "p1@example.com")
            member_requests = server.count() - before
        full_s, full_cpu, full_rss = full.elapsed_s, full.cpu_s, full.peak_rss_mib
        code, only_s, only_cpu, only_rss = only.code, only.elapsed_s, only.cpu_s, only.peak_rss_mib
        member_s, member_cpu, member_rss = member.elapsed_s, member.cpu_s, member.peak_rss_mib
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
    if _common.serve_main(argv):
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
