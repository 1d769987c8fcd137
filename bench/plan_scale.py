"""Planning time and peak memory for synthetic directories of 10k and 100k people.

The planner must be linear: the script prints, for each size, the time to map the source
to the desired state and to plan, the peak memory (tracemalloc), and the ratio of each
size's time to the smallest size's, next to the ratio of the sizes. A quadratic step would
show as a time ratio near the square of the size ratio.

usage: .venv/bin/python bench/plan_scale.py [SIZE ...]   (default: 10000 100000)
"""

from __future__ import annotations

import gc
import random
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from orgsync.core.model import (
    Capabilities,
    InviteStatus,
    Memory,
    RoleCatalog,
    SourceGroup,
    SourceId,
    SourcePerson,
    SourceSnapshot,
    TargetInvite,
    TargetMember,
    TargetSnapshot,
    normalize_email,
)
from orgsync.core.planner import PlanInput, RemovalPolicy, plan
from orgsync.core.rules import MembershipRules, RoleRule, desired_state
from orgsync.core.safety import SafetyLimits, hold_mass_removals, managed_population

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CATALOG = RoleCatalog(("reader", "owner"), frozenset({"owner"}), frozenset({"reader", "owner"}))


def world(size: int, seed: int = 7) -> tuple[SourceSnapshot, TargetSnapshot, Memory]:
    """A company of `size` people in size/50 teams nested under openai-users; an org that
    holds 80% of them (some with the wrong role), invites for 10%, and 2% leavers."""
    rng = random.Random(seed)
    people = tuple(
        SourcePerson(
            SourceId(f"p{i}"), f"person{i}@example.com", f"Person {i}", active=rng.random() > 0.02
        )
        for i in range(size)
    )
    teams = max(1, size // 50)
    team_members: list[list[SourceId]] = [[] for _ in range(teams)]
    for person in people:
        team_members[rng.randrange(teams)].append(person.id)
    groups = [
        SourceGroup(SourceId(f"t{j}"), f"team-{j}", tuple(m)) for j, m in enumerate(team_members)
    ]
    groups.append(
        SourceGroup(
            SourceId("users"), "openai-users", tuple(SourceId(f"t{j}") for j in range(teams))
        )
    )
    groups.append(
        SourceGroup(
            SourceId("owners"), "openai-owners", tuple(people[i].id for i in range(0, size, 100))
        )
    )
    members, invites = [], []
    for i, person in enumerate(people):
        roll = rng.random()
        if roll < 0.8:
            members.append(
                TargetMember(
                    f"user-{i}", person.email, "owner" if rng.random() < 0.01 else "reader"
                )
            )
        elif roll < 0.9:
            invites.append(
                TargetInvite(
                    f"inv-{i}",
                    person.email,
                    "reader",
                    InviteStatus.PENDING,
                    NOW + timedelta(days=3),
                )
            )
    managed = frozenset(normalize_email(p.email) for p in people)
    observed = TargetSnapshot(tuple(members), tuple(invites), CATALOG, key_owner_id="user-0")
    return SourceSnapshot(people, tuple(groups)), observed, Memory(managed=managed)


def run_once(
    source: SourceSnapshot, observed: TargetSnapshot, memory: Memory
) -> tuple[float, float, int]:
    rules = MembershipRules(("openai-*",), (RoleRule("openai-owners", "owner"),), "reader")
    started = time.perf_counter()
    desired = desired_state(source, rules, CATALOG)
    mapped = time.perf_counter()
    draft = plan(
        PlanInput("bench", desired, observed, memory, RemovalPolicy(), Capabilities(), NOW)
    )
    gated = hold_mass_removals(
        draft, population=managed_population(observed), limits=SafetyLimits()
    )
    planned = time.perf_counter()
    return mapped - started, planned - mapped, len(gated.operations) + len(gated.held)


def measure(size: int) -> tuple[float, float, float, int, int]:
    """Times from runs without tracing (tracemalloc slows Python 2-3x), memory from a traced
    one; the last time is with the garbage collector paused, which isolates the algorithm
    from CPython's collections of the growing heap."""
    source, observed, memory = world(size)
    map_s, plan_s, ops = min(run_once(source, observed, memory) for _ in range(3))
    gc.collect()
    gc.disable()
    try:
        quiet = min(sum(run_once(source, observed, memory)[:2]) for _ in range(3))
    finally:
        gc.enable()
    tracemalloc.start()
    run_once(source, observed, memory)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return map_s, plan_s, quiet, peak, ops


def main(sizes: list[int]) -> None:
    print(
        f"{'people':>8} {'map s':>7} {'plan s':>7} {'total s':>8} {'no-gc s':>8} {'peak MiB':>9}"
        f" {'ops':>7} {'size x':>7} {'time x':>7} {'no-gc x':>8}"
    )
    base: tuple[int, float, float] | None = None
    for size in sizes:
        map_s, plan_s, quiet, peak, ops = measure(size)
        total = map_s + plan_s
        base = base or (size, total, quiet)
        print(
            f"{size:>8} {map_s:>7.3f} {plan_s:>7.3f} {total:>8.3f} {quiet:>8.3f} {peak / 2**20:>9.1f}"
            f" {ops:>7} {size / base[0]:>7.1f} {total / base[1]:>7.1f} {quiet / base[2]:>8.1f}"
        )
    print(
        "linear: 'time x' should track 'size x'; a quadratic step would be its square\n"
        "(CPU caches make per-person cost creep up with heap size; compare successive doublings)"
    )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000])
