"""Planning at scale with groups: N people, N/10 IdP groups of 100, 10N memberships.

The goal line is the issue 13 figure: 100k people / 10k groups / 1M memberships, mirrored
by one group rule, planned within 3 s of CPU and 500 MiB of peak RSS. The target already
holds every group (owned by orgsync) with 98% of its members and its role; the plan must
find the missing 2% and the extra members. The step measured is what `Planning.make_plan`
does: desired state, plan, and both safety gates. Growth per doubling of the whole world
from 10k to 160k people must stay at most x2.2 (linear, with room for caches);
`bench/growth_floor.py` measures, on the same world, the growth of the least work any
planner does (one look-up per membership), which on a machine whose caches the larger
worlds outgrow is itself above x2.2.

`--not-members P` makes P percent of the people no members yet (each with a pending
invitation): the groups they are in must list them as waiting, which a plan finds without
resolving those groups a second time.

usage: .venv/bin/python bench/group_scale.py [--sizes 10000 20000 ...] [--goal-size 100000]
       [--repeats 3] [--tracemalloc] [--not-members PERCENT]
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
from datetime import UTC, datetime

import measure
from orgsync.core.model import (
    Capabilities,
    InviteStatus,
    Memory,
    RoleCatalog,
    SourceGroup,
    SourceId,
    SourcePerson,
    SourceSnapshot,
    TargetGroup,
    TargetInvite,
    TargetMember,
    TargetSnapshot,
)
from orgsync.core.planner import PlanInput, RemovalPolicy, plan
from orgsync.core.rules import GroupRule, MembershipRules, desired_state
from orgsync.core.safety import (
    SafetyLimits,
    gate,
    managed_people,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CATALOG = RoleCatalog(
    ("reader", "owner"),
    frozenset({"owner"}),
    frozenset({"reader", "owner"}),
    {"team-role": "role-team"},
)
PER_GROUP = 100
RULES = MembershipRules(("openai-*",), (), "reader", (GroupRule("team-*", roles=("team-role",)),))

World = tuple[SourceSnapshot, TargetSnapshot, Memory]


def world(people_count: int, seed: int = 11, not_members: float = 0.0) -> World:
    """`people_count` people, all members already but `not_members` percent of them (who
    are invited); people/10 groups of 100 random people."""
    rng = random.Random(seed)
    groups = max(1, people_count // 10)
    people = tuple(
        SourcePerson(SourceId(f"p{i}"), f"p{i}@example.com") for i in range(people_count)
    )
    members = tuple(
        TargetMember(f"u{i}", f"p{i}@example.com", "reader") for i in range(people_count)
    )
    source_groups, target_groups, owned = [], [], {}
    for g in range(groups):
        chosen = rng.sample(range(people_count), min(PER_GROUP, people_count))
        source_groups.append(
            SourceGroup(SourceId(f"g{g}"), f"team-{g}", tuple(SourceId(f"p{i}") for i in chosen))
        )
        present = {f"u{i}" for i in chosen if rng.random() > 0.02}
        present |= {f"u{rng.randrange(people_count)}" for _ in range(PER_GROUP // 50)}
        target_groups.append(
            TargetGroup(f"tg{g}", f"team-{g}", frozenset(present), frozenset({"role-team"}))
        )
        owned[f"tg{g}"] = SourceId(f"g{g}")
    source_groups.append(SourceGroup(SourceId("all"), "openai-users", tuple(p.id for p in people)))
    invites: tuple[TargetInvite, ...] = ()
    if not_members:
        # A generator of its own, so that the rest of the world is the same with or without.
        left_out = random.Random(seed + 1)
        out = {m.id for m in members if left_out.random() * 100 < not_members}
        invites = tuple(
            TargetInvite(f"i{m.id}", m.email, "reader", InviteStatus.PENDING)
            for m in members
            if m.id in out
        )
        members = tuple(m for m in members if m.id not in out)
    observed = TargetSnapshot(members, invites, CATALOG, groups=tuple(target_groups))
    return SourceSnapshot(people, tuple(source_groups)), observed, Memory(owned_groups=owned)


def make_plan(inputs: World) -> int:
    source, observed, memory = inputs
    desired = desired_state(source, RULES, CATALOG)
    draft = plan(
        PlanInput(
            "bench", desired, observed, memory, RemovalPolicy(), Capabilities(groups=True), NOW
        )
    )
    population = managed_people(observed, memory, desired)
    gated = gate(draft, population=population, limits=SafetyLimits())
    return len(gated.operations) + len(gated.held)


def label(people: int) -> str:
    groups = max(1, people // 10)
    return f"{measure.human(people)}/{measure.human(groups)}/{measure.human(groups * PER_GROUP)}"


def more_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--not-members",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="share of the people who are no members yet, each invited (default 0)",
    )


if __name__ == "__main__":
    options = measure.arguments(
        __doc__, [10_000, 20_000, 40_000, 80_000, 160_000], 100_000, more_options
    )
    build = functools.partial(world, not_members=options.not_members)
    if options.child is not None:
        measure.child(build, make_plan, options.child, options.tracemalloc)
    else:
        extra = ["--not-members", str(options.not_members)] if options.not_members else []
        measure.report(sys.argv[0], label, options, extra)
