"""The emulators' own cost of list walks and creations: linear, so benchmarks measure orgsync.

Calls the emulated organizations' API methods directly (what each HTTP request runs under
the organization's lock, without the HTTP layer) and prints the CPU time of: walking a
whole list page by page at the client's page size, and creating every object one request
at a time. Each is measured at N and 2N objects; the growth per doubling is x2 for linear
work and x4 for a server that sorts or scans the whole table per request. Seeding is not
timed. Each figure is the median of `--repeats` runs.

usage: .venv/bin/python bench/emulator_lists.py [--size 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from orgsync.testing.keycard.state import KeycardState
from orgsync.testing.openai.state import OrgState

GOAL_GROWTH = 2.2  # linear, with room for caches (a quadratic walk shows x4)


def walk(
    fetch: Callable[[str | None], dict[str, Any]], cursor: Callable[[dict[str, Any]], str | None]
) -> int:
    pages, after = 0, None
    while True:
        page = fetch(after)
        pages += 1
        after = cursor(page)
        if after is None:
            return pages


def openai_with_users(n: int) -> OrgState:
    state = OrgState()
    for i in range(n):
        state.add_user(f"u{i}@example.com")
    return state


def openai_users_walk(state: OrgState) -> None:
    walk(
        lambda after: state.api_list_users(limit=100, after=after, emails=[]),
        lambda page: page["last_id"] if page["has_more"] else None,
    )


def openai_with_invites(n: int) -> OrgState:
    state = OrgState()
    for i in range(n):
        state.add_invite(f"i{i}@example.com")
    return state


def openai_invites_walk(state: OrgState) -> None:
    walk(
        lambda after: state.api_list_invites(limit=100, after=after),
        lambda page: page["last_id"] if page["has_more"] else None,
    )


def openai_invite_creations(state: OrgState, n: int) -> None:
    for i in range(n):
        state.api_create_invite(
            {"email": f"new{i}@example.com", "role": "reader"}, allow_duplicates=False
        )


def openai_group_creations(state: OrgState, n: int) -> None:
    for i in range(n):
        state.directory.api_create_group({"name": f"team-{i}"}, allow_duplicates=False)


def openai_with_groups(n: int) -> OrgState:
    state = OrgState()
    for i in range(n):
        state.add_group(f"team-{i}")
    return state


def openai_groups_walk(state: OrgState) -> None:
    walk(
        lambda after: state.directory.api_list_groups(limit=100, after=after, order="asc"),
        lambda page: page["next"],
    )


def openai_with_big_group(n: int) -> tuple[OrgState, str]:
    state = openai_with_users(n)
    group = state.add_group("everyone")
    for user in state.users():
        state.add_group_member(group, user["id"])
    return state, group


def openai_group_users_walk(seeded: tuple[OrgState, str]) -> None:
    state, group = seeded
    walk(
        lambda after: state.directory.api_list_group_users(
            group, limit=100, after=after, order="desc"
        ),
        lambda page: page["next"],
    )


def keycard_with_users(n: int) -> KeycardState:
    state = KeycardState()
    for i in range(n):
        state.add_user(f"u{i}@example.com")
    return state


def keycard_users_walk(state: KeycardState) -> None:
    walk(
        lambda after: state.api_list_users(after=after, before=None, limit=100, role=None),
        lambda page: (
            page["page_info"]["end_cursor"] if page["page_info"]["has_next_page"] else None
        ),
    )


def keycard_invitation_creations(state: KeycardState, n: int) -> None:
    for i in range(n):
        state.api_create_invitation(
            {"email": f"new{i}@example.com", "role": "org_member"},
            created_by="bench",
            allow_duplicates=False,
        )


CASES: list[tuple[str, Callable[[int], Any], Callable[[Any, int], None]]] = [
    ("openai users list walk", openai_with_users, lambda s, n: openai_users_walk(s)),
    ("openai invites list walk", openai_with_invites, lambda s, n: openai_invites_walk(s)),
    ("openai invite creations", lambda n: OrgState(), openai_invite_creations),
    ("openai group creations", lambda n: OrgState(), openai_group_creations),
    ("openai groups list walk", openai_with_groups, lambda s, n: openai_groups_walk(s)),
    ("openai group users walk", openai_with_big_group, lambda s, n: openai_group_users_walk(s)),
    ("keycard users list walk", keycard_with_users, lambda s, n: keycard_users_walk(s)),
    ("keycard invitation creations", lambda n: KeycardState(), keycard_invitation_creations),
]


def cpu(setup: Callable[[int], Any], run: Callable[[Any, int], None], n: int) -> float:
    state = setup(n)
    started = time.process_time()
    run(state, n)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=10_000, help="objects (N); also run at 2N")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    n = options.size
    print(f"{'server-side work':<30} {f'{n} cpu s':>12} {f'{2 * n} cpu s':>12} {'growth':>8}")
    worst = 0.0
    for label, setup, run in CASES:
        small = statistics.median(cpu(setup, run, n) for _ in range(options.repeats))
        large = statistics.median(cpu(setup, run, 2 * n) for _ in range(options.repeats))
        growth = large / small if small else float("inf")
        worst = max(worst, growth)
        print(f"{label:<30} {small:>12.3f} {large:>12.3f} {f'x{growth:.2f}':>8}")
    print(
        f"growth per doubling: worst x{worst:.2f} (goal <= {GOAL_GROWTH:g}: {worst / GOAL_GROWTH:.2f}x;"
        " linear is x2, a sort or scan per request x4)"
    )


if __name__ == "__main__":
    main()
