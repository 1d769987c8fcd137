"""Shared harness of the planning benchmarks: one fresh process per measurement.

Each measurement runs in its own interpreter (`SCRIPT --child SIZE`) so that one size's
peak RSS (`ru_maxrss`, the kernel's high-water mark of the process) is not inherited by
the next, and so that CPU figures come from untraced runs: tracemalloc slows Python 2-3x
and runs only with `--tracemalloc`, in separate processes, for the heap figure. CPU time
(user + system from `getrusage`, around the measured step only), not wall time, is
quoted: the machine is shared, and the load average at the start is printed, since a
loaded machine inflates even CPU time (other processes evict the caches a million
dictionary look-ups depend on). Each figure is the median of `--repeats` processes.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MiB = 2**20
MB = 10**6
GOAL_CPU_S = 3.0
GOAL_RSS_MB = 500.0
"""The issue's "500 MB" (476.8 MiB)."""
GOAL_GROWTH = 2.2


@dataclass(frozen=True)
class Figures:
    """One process's measurement of one size."""

    cpu_s: float
    """CPU seconds of the measured step alone (world building excluded)."""
    world_rss_mib: float
    """Peak RSS once the inputs are built, before planning starts."""
    peak_rss_mib: float
    """Peak RSS of the whole process, planning included."""
    operations: int
    traced_peak_mib: float | None = None


def human(count: int) -> str:
    """100000 -> '100k', 1600000 -> '1.6M'."""
    if count >= 1_000_000:
        return f"{count / 1_000_000:g}M"
    if count >= 1_000:
        return f"{count / 1_000:g}k"
    return str(count)


def peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(build: Callable[[int], Any], step: Callable[[Any], int], size: int, trace: bool) -> None:
    """Build the inputs of `size`, run `step` once, print the figures as one JSON line."""
    inputs = build(size)
    gc.collect()
    world = peak_rss_mib()
    traced: float | None = None
    if trace:
        tracemalloc.start()
    started = cpu_s()
    operations = step(inputs)
    cpu = cpu_s() - started
    if trace:
        traced = tracemalloc.get_traced_memory()[1] / MiB
        tracemalloc.stop()
    figures = Figures(cpu, world, peak_rss_mib(), operations, traced)
    print(json.dumps(figures.__dict__))


def measure(
    script: str, size: int, repeats: int, *, trace: bool = False, extra: Sequence[str] = ()
) -> Figures:
    """Median figures of `repeats` fresh processes running `script --child size`, with
    `extra` arguments (the options that shape the script's world)."""
    runs: list[Figures] = []
    for _ in range(repeats):
        command = [sys.executable, script, "--child", str(size), *extra]
        if trace:
            command.append("--tracemalloc")
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs.append(Figures(**json.loads(output.strip().splitlines()[-1])))

    def median(values: Sequence[float]) -> float:
        return statistics.median(values)

    traced = [r.traced_peak_mib for r in runs if r.traced_peak_mib is not None]
    return Figures(
        cpu_s=median([r.cpu_s for r in runs]),
        world_rss_mib=median([r.world_rss_mib for r in runs]),
        peak_rss_mib=median([r.peak_rss_mib for r in runs]),
        operations=runs[0].operations,
        traced_peak_mib=median(traced) if traced else None,
    )


def arguments(
    doc: str | None,
    default_sizes: list[int],
    goal_size: int,
    more: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The options every planning bench takes; `more` adds the script's own."""
    parser = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=default_sizes,
        help="people per growth step, each the double of the last "
        f"(default {' '.join(map(str, default_sizes))})",
    )
    parser.add_argument(
        "--goal-size", type=int, default=goal_size, help=f"people of the goal line ({goal_size})"
    )
    parser.add_argument("--repeats", type=int, default=3, help="processes per size (median)")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also report the traced heap (separate runs)"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    if more is not None:
        more(parser)
    return parser.parse_args()


def report(
    script: str,
    label: Callable[[int], str],
    options: argparse.Namespace,
    extra: Sequence[str] = (),
) -> None:
    """Print the goal line, then one line per size and the growth per doubling; each child
    gets `extra` arguments too."""
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    goal = measure(script, options.goal_size, options.repeats, extra=extra)
    peak_mb = goal.peak_rss_mib * MiB / MB
    print(
        f"plan {label(options.goal_size)}: cpu {goal.cpu_s:.2f} s "
        f"(goal {GOAL_CPU_S:g} s: {goal.cpu_s / GOAL_CPU_S:.2f}x), "
        f"peak RSS {peak_mb:.0f} MB = {goal.peak_rss_mib:.0f} MiB (goal {GOAL_RSS_MB:g} MB: "
        f"{peak_mb / GOAL_RSS_MB:.2f}x; inputs alone {goal.world_rss_mib:.0f} MiB), "
        f"{goal.operations} operations"
    )
    if options.tracemalloc:
        traced = measure(script, options.goal_size, 1, trace=True, extra=extra)
        print(f"  traced heap peak of planning: {traced.traced_peak_mib:.0f} MiB (tracemalloc)")
    print(f"{'people':>8} {'cpu s':>7} {'peak MiB':>9} {'inputs MiB':>11} {'ops':>8} {'growth':>7}")
    figures: list[Figures] = []
    for size in options.sizes:
        current = measure(script, size, options.repeats, extra=extra)
        growth = f"x{current.cpu_s / figures[-1].cpu_s:.2f}" if figures else ""
        figures.append(current)
        print(
            f"{size:>8} {current.cpu_s:>7.3f} {current.peak_rss_mib:>9.0f} "
            f"{current.world_rss_mib:>11.0f} {current.operations:>8} {growth:>7}"
        )
    steps = [b.cpu_s / a.cpu_s for a, b in itertools.pairwise(figures)]
    if steps:
        worst = max(steps)
        print(
            f"growth per doubling {human(options.sizes[0])}->{human(options.sizes[-1])}: "
            + " ".join(f"x{s:.2f}" for s in steps)
            + f" (goal <= {GOAL_GROWTH:g}: worst {worst:.2f} = {worst / GOAL_GROWTH:.2f}x)"
        )
        # One step's ratio swings with the machine's load; the mean over all steps does not.
        mean = (figures[-1].cpu_s / figures[0].cpu_s) ** (1 / len(steps))
        print(f"  mean growth per doubling: x{mean:.2f} ({mean / GOAL_GROWTH:.2f}x the goal)")
    print(
        "cpu = user + system CPU of the planning step (getrusage, untraced), median of "
        f"{options.repeats} fresh processes; load average at the end: "
        + " ".join(f"{x:.1f}" for x in os.getloadavg())
    )
