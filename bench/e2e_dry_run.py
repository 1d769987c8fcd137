"""End-to-end full dry run at scale: orgsync's own CPU and peak RSS, and its requests.

The OpenAI emulator runs in its own process, seeded with PEOPLE members and PEOPLE/10
groups of 100 members (100k people: 10k groups, 1M memberships), every group owned by
orgsync. The directory file lists the same people and groups. Then `orgsync sync
--dry-run` runs in a fresh process, `--repeats` times; its CPU time (user + system) and
peak RSS come from `wait4` on that process alone, so the emulator's work is not counted.
Printed: median (range) against the issue 13 goals (12 s CPU, 500 MB peak RSS at 100k),
the emulator's own CPU time during the runs (separately), the load average (the machine
is shared: CPU time is the steady figure), and the requests made against the minimum a
full read needs: the users list and the
invitations list (100 per page), the role catalog, the groups list (1000 per page), and
per group its members and its roles (one page each).

`--profile FILE` runs once more under cProfile in every thread (CPU time per thread),
not counted in the figures, and writes the merged statistics to FILE (read them with
`python -m pstats FILE`).

usage: .venv/bin/python bench/e2e_dry_run.py [--repeats 3] [--profile FILE] [PEOPLE]
       (default 100000)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import _common

GOAL_CPU_S = 12.0
GOAL_RSS_MB = 500.0
PER_GROUP = 100


def minimum_requests(people: int, groups: int) -> int:
    users = math.ceil(people / 100) or 1
    invitations = 1
    roles = 1
    group_pages = math.ceil(groups / 1000) or 1
    return users + invitations + roles + group_pages + 2 * groups


def main(people: int, repeats: int, profile: Path | None) -> None:
    seed = _common.Seed(people, groups=people // 10, per_group=PER_GROUP)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with _common.emulator(__file__, seed, folder) as server:
            _common.write_directory(folder, seed)
            _common.write_config(folder, server.url)
            _common.orgsync(folder, "validate", "--offline")
            # The state a full sync leaves: links and owned groups (else every group would
            # be adopted, and the plan would not be the steady state's).
            _common.orgsync(folder, "sync", "--dry-run", "--only", "p0@example.com")
            _common.remember_full_sync(folder, server.ids)
            runs, requests, served = [], [], []
            load_before = os.getloadavg()[0]
            for _ in range(repeats):
                before, cpu_before = server.count(), server.cpu_s()
                runs.append(_common.orgsync(folder, "sync", "--dry-run"))
                requests.append(server.count() - before)
                served.append(server.cpu_s() - cpu_before)
            load_after = os.getloadavg()[0]
            if profile is not None:
                # One more run under cProfile, written to a file: not counted in the
                # figures above (tracing slows it several times).
                _common.orgsync(folder, "sync", "--dry-run", profile=profile.resolve())
                print(f"profile of one more run: {profile}")
    cpu = [r.cpu_s for r in runs]
    rss_mb = [r.peak_rss_mib * _common.MiB / 1e6 for r in runs]
    least = minimum_requests(people, seed.groups)
    median_cpu = sorted(cpu)[len(cpu) // 2]
    median_rss = sorted(rss_mb)[len(rss_mb) // 2]
    print(
        f"dry run {people} people / {seed.groups} groups / {seed.groups * PER_GROUP} "
        f"memberships, {repeats} fresh processes (median (range))\n"
        f"  orgsync CPU {_common.spread(cpu)} s (goal {GOAL_CPU_S:g} s: "
        f"{median_cpu / GOAL_CPU_S:.2f}x)\n"
        f"  orgsync peak RSS {_common.spread(rss_mb, '.0f')} MB (goal {GOAL_RSS_MB:g} MB: "
        f"{median_rss / GOAL_RSS_MB:.2f}x)\n"
        f"  elapsed {_common.spread([r.elapsed_s for r in runs])} s\n"
        f"  requests {requests[0]} (minimum {least}: {requests[0] / least:.2f}x); "
        f"orgsync CPU per request {1000 * median_cpu / requests[0]:.2f} ms (all work included)\n"
        f"  emulator CPU {_common.spread(served)} s (its own process, not counted above)\n"
        f"  load average (1 min) {load_before:.1f} before, {load_after:.1f} after, on "
        f"{os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    if not _common.serve_main(sys.argv[1:]):
        parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
        parser.add_argument("people", type=int, nargs="?", default=100_000)
        parser.add_argument("--repeats", type=int, default=3)
        parser.add_argument(
            "--profile", type=Path, help="also run once under cProfile, writing to this file"
        )
        options = parser.parse_args()
        main(options.people, options.repeats, options.profile)
