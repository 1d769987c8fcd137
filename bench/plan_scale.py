"""Planning people without target groups: N people in N/50 teams nested under a scope group.

The organization holds 80% of them (some with the wrong role), invitations for 10%, and 2%
have left. The step measured is what `Planning.make_plan` does: desired state, plan, and the
safety gates. Prints the 100k line against the issue 13 goals (3 s of CPU, 500 MiB peak
RSS; `bench/group_scale.py` adds 10k groups and 1M memberships to it) and the growth per
doubling from 10k to 160k people (goal at most x2.2: linear, with room for caches).

usage: .venv/bin/python bench/plan_scale.py [--sizes 10000 20000 ...] [--goal-size 100000]
       [--repeats 3] [--tracemalloc]
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta

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
    TargetInvite,
    TargetMember,
    TargetSnapshot,
    normalize_email,
)
from orgsync.core.planner import PlanInput, RemovalPolicy, plan
from orgsync.core.rules import MembershipRules, RoleRule, desired_state
from orgsync.core.safety import (
    SafetyLimits,
    gate,
    managed_people,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CATALOG = RoleCatalog(("reader", "owner"), frozenset({"owner"}), frozenset({"reader", "owner"}))
RULES = MembershipRules(("openai-*",), (RoleRule("openai-owners", "owner"),), "reader")

World = tuple[SourceSnapshot, TargetSnapshot, Memory]


def world(size: int, seed: int = 7) -> World:
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


def make_plan(inputs: World) -> int:
    source, observed, memory = inputs
    desired = desired_state(source, RULES, CATALOG)
    draft = plan(
        PlanInput("bench", desired, observed, memory, RemovalPolicy(), Capabilities(), NOW)
    )
    population = managed_people(observed, memory, desired)
    gated = gate(draft, population=population, limits=SafetyLimits())
    return len(gated.operations) + len(gated.held)


def label(people: int) -> str:
    return f"{measure.human(people)} people, {measure.human(max(1, people // 50))} nested teams"


if __name__ == "__main__":
    options = measure.arguments(__doc__, [10_000, 20_000, 40_000, 80_000, 160_000], 100_000)
    if options.child is not None:
        measure.child(world, make_plan, options.child, options.tracemalloc)
    else:
        measure.report(sys.argv[0], label, options)
