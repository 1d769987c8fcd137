"""The daemon's status page: its cost must not grow with what is held.

For each size, one fresh process builds a state database (SQLite file, as the daemon's)
whose target's last sync held SIZE removals and left 20 failed operations, plus 40 runs of
history, then renders `GET /` through `StatusPage` (its own connection, as in the daemon)
with the page cache off. Prints per size: CPU ms of the first render (opening the
connection, and counting what the run left undone: one pass over its journal, done once
per run) and the median of 20 renders after it, the page's size, and the process's peak
RSS before and after rendering (the "before" is the database build's). Bounded means:
the median and the page size are flat from 1k to 100k held.

usage: .venv/bin/python bench/status_page.py [SIZE ...]   (default 1000 10000 100000)
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orgsync.core.plan import HeldOperation, Invite, Plan, RemoveMember
from orgsync.core.ports import OperationStatus
from orgsync.core.quarantine import Quarantine
from orgsync.daemon.status_page import StatusPage
from orgsync.logs import configure_logging
from orgsync.store import Origin, StateStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(path: Path, held: int) -> None:
    store = StateStore.open(path)
    origin = Origin("daemon", "bench")
    for i in range(40):
        run_id = store.start_run("prod", "sync", "schedule", origin=origin)
        store.finish_run(run_id, status="ok", exit_code=0, summary={"invite": i}, checksum=None)
    failing = [
        Invite(email=f"f{i}@example.com", role="reader", source_id=f"f{i}", reason="member of x")
        for i in range(20)
    ]
    plan = Plan.build(
        target="prod",
        generated_at=T0,
        operations=failing,
        held=[
            HeldOperation(
                operation=RemoveMember(
                    email=f"p{i:06}@example.com", user_id=f"u{i}", reason="not in the IdP"
                ),
                guard=f"{held} removals exceed safety.max_removals = 10",
            )
            for i in range(held)
        ],
    )
    run_id = store.start_run("prod", "sync", "schedule", origin=origin)
    store.record_plan(run_id, plan)
    journal = store.journal(run_id)
    for seq, op in enumerate(plan.operations):
        journal.started(seq, op)
        journal.finished(seq, op, OperationStatus.FAILED, detail="409 conflict")
    store.finish_run(
        run_id, status="held", exit_code=3, summary={}, checksum=None, held=held, failed=20
    )
    store.close()


def child(held: int) -> None:
    configure_logging("warning")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        build(path, held)
        world = peak_rss_mib()
        page = StatusPage(
            [("prod", "openai")],
            open_store=lambda: StateStore.open(path, create=False),
            standing=lambda _t: Quarantine(),
            next_run=lambda _t: T0 + timedelta(minutes=15),
            queued=lambda _t: None,
            cache_seconds=0,
        )
        started = time.process_time()
        html = page.html()
        first = time.process_time() - started
        times = []
        for _ in range(20):
            started = time.process_time()
            page.html()
            times.append(time.process_time() - started)
        page.close()
        print(
            json.dumps(
                {
                    "first_ms": first * 1000,
                    "median_ms": statistics.median(times) * 1000,
                    "bytes": len(html.encode()),
                    "world_rss_mib": world,
                    "peak_rss_mib": peak_rss_mib(),
                }
            )
        )


def main(sizes: list[int]) -> None:
    print(f"{'held':>8} {'first ms':>9} {'median ms':>10} {'page KiB':>9} {'RSS MiB':>15}")
    for size in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(size)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        f = json.loads(out.strip().splitlines()[-1])
        print(
            f"{size:>8} {f['first_ms']:>9.1f} {f['median_ms']:>10.1f} {f['bytes'] / 1024:>9.1f}"
            f" {f['world_rss_mib']:>6.1f} -> {f['peak_rss_mib']:<6.1f}"
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
    else:
        main([int(a) for a in sys.argv[1:]] or [1_000, 10_000, 100_000])
