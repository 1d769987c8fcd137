"""The growth per doubling of the least work any planner does on `group_scale.py`'s world.

`group_scale.py` holds planning to a growth of at most x2.2 per doubling of the world from
10k to 160k people. Its world's groups are 100 people drawn at random from everyone, so
resolving them touches the people's records in random order, and from about 40k people
those records no longer fit the CPU's caches: each access then waits on memory, and the
cost per access grows with the world although the work per person does not.

This bench times only that irreducible part on the same world: for every source group,
look each member up by id and collect their e-mail addresses into a set (one dictionary
look-up and one set insertion per membership, what any desired-state build must do at
least). Its growth per doubling is this machine's floor for the planner's: a planner
growing no faster than it is linear in its work, and the rest is the memory hierarchy.

usage: .venv/bin/python bench/growth_floor.py [--sizes 10000 20000 ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import time

from group_scale import world
from orgsync.core.model import SourceSnapshot


def floor_cpu(source: SourceSnapshot, repeats: int) -> float:
    """The least CPU seconds, of `repeats` runs, of resolving every group's e-mails."""
    people = {person.id: person for person in source.people}
    best = float("inf")
    for _ in range(repeats):
        gc.disable()
        started = time.process_time()
        resolved = []
        for group in source.groups:
            emails = set()
            for member in group.members:
                emails.add(people[member].email)
            resolved.append(emails)
        best = min(best, time.process_time() - started)
        gc.enable()
        del resolved
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000 * 2**i for i in range(5)])
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    print(f"{'people':>8} {'floor cpu s':>12} {'growth':>7}")
    figures: list[float] = []
    for size in options.sizes:
        source, _observed, _memory = world(size)
        cpu = floor_cpu(source, options.repeats)
        growth = f"x{cpu / figures[-1]:.2f}" if figures else ""
        print(f"{size:>8} {cpu:>12.4f} {growth:>7}")
        figures.append(cpu)
        del source, _observed, _memory
    steps = [b / a for a, b in itertools.pairwise(figures)]
    if steps:
        print(
            "floor growth per doubling: "
            + " ".join(f"x{s:.2f}" for s in steps)
            + f" (mean x{sum(steps) / len(steps):.2f}); compare with group_scale.py's growth"
        )


if __name__ == "__main__":
    main()
