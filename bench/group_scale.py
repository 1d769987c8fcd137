"""Planner scale with groups: 10k IdP groups and 1M memberships, mirrored by one rule.

The target already holds every group (owned by orgsync) with 98% of its members and its
role; the plan must find the missing 2% and the extra members — linear in memberships.
Prints the time and peak memory of mapping and planning, and operations per second.

usage: .venv/bin/python bench/group_scale.py [GROUPS] [MEMBERS_PER_GROUP]   (default 10000 100)
"""

from __future__ import annotations

import random
import sys
import time
import tracemalloc
from datetime import UTC, datetime

from orgsync.core.model import (
    Capabilities,
    Memory,
    RoleCatalog,
    SourceGroup,
    SourceId,
    SourcePerson,
    SourceSnapshot,
    TargetGroup,
    TargetMember,
    TargetSnapshot,
)
from orgsync.core.planner import PlanInput, RemovalPolicy, plan
from orgsync.core.rules import GroupRule, MembershipRules, desired_state

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CATALOG = RoleCatalog(
    ("reader", "owner"),
    frozenset({"owner"}),
    frozenset({"reader", "owner"}),
    {"team-role": "role-team"},
)


def world(
    groups: int, per_group: int, seed: int = 11
) -> tuple[SourceSnapshot, TargetSnapshot, Memory]:
    rng = random.Random(seed)
    people_count = max(per_group, groups * per_group // 10)
    people = tuple(
        SourcePerson(SourceId(f"p{i}"), f"p{i}@example.com") for i in range(people_count)
    )
    members = tuple(
        TargetMember(f"u{i}", f"p{i}@example.com", "reader") for i in range(people_count)
    )
    source_groups, target_groups, owned = [], [], {}
    for g in range(groups):
        chosen = rng.sample(range(people_count), per_group)
        source_groups.append(
            SourceGroup(SourceId(f"g{g}"), f"team-{g}", tuple(SourceId(f"p{i}") for i in chosen))
        )
        present = {f"u{i}" for i in chosen if rng.random() > 0.02}
        present |= {f"u{rng.randrange(people_count)}" for _ in range(per_group // 50)}
        target_groups.append(
            TargetGroup(f"tg{g}", f"team-{g}", frozenset(present), frozenset({"role-team"}))
        )
        owned[f"tg{g}"] = SourceId(f"g{g}")
    source_groups.append(SourceGroup(SourceId("all"), "openai-users", tuple(p.id for p in people)))
    observed = TargetSnapshot(members, (), CATALOG, groups=tuple(target_groups))
    return SourceSnapshot(people, tuple(source_groups)), observed, Memory(owned_groups=owned)


def main(groups: int, per_group: int) -> None:
    source, observed, memory = world(groups, per_group)
    rules = MembershipRules(
        ("openai-*",), (), "reader", (GroupRule("team-*", roles=("team-role",)),)
    )
    capabilities = Capabilities(groups=True)
    tracemalloc.start()
    started = time.perf_counter()
    desired = desired_state(source, rules, CATALOG)
    mapped = time.perf_counter()
    result = plan(PlanInput("bench", desired, observed, memory, RemovalPolicy(), capabilities, NOW))
    done = time.perf_counter()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    memberships = groups * per_group
    print(f"IdP groups {groups}, memberships {memberships}, people {len(source.people)}")
    print(
        f"map {mapped - started:.2f} s, plan {done - mapped:.2f} s (traced), peak {peak / 2**20:.0f} MiB"
    )
    print(
        f"operations {len(result.operations)}; {memberships / (done - started):,.0f} memberships/s"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*(args or [10_000, 100]))
