"""bench/replicas.py's failover step (a benchmark that crashes gives no figure at all).

With few targets, or more replicas than targets, no replica may hold a lease at the
instant the failover looks (a lease is held only while its target runs): it crashed on
`max()` of nobody. Against a real PostgreSQL database with orgsync's schema.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import psycopg

from orgsync.store import StateStore
from tests.postgres import PASSWORD

BENCH = Path(__file__).resolve().parents[2] / "bench" / "replicas.py"


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_replicas", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_lease(url: str, target: str, pid: int, expires: datetime) -> None:
    with psycopg.connect(url, password=PASSWORD, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO leases (target, holder, acquired_at, expires_at, fence) "
            "VALUES (%s, %s, %s, %s, 1)",
            (
                target,
                f"daemon on host (pid {pid}, i-{pid})",
                datetime.now(UTC).isoformat(),
                expires.isoformat(),
            ),
        )


def test_failover_with_no_lease_held_is_reported_not_a_crash(postgres_url: str) -> None:
    replicas = bench()
    StateStore.open(postgres_url).close()  # the schema, no lease row
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        args = argparse.Namespace(ttl=1)
        began = time.monotonic()
        result = replicas.failover([sleeper], postgres_url, PASSWORD, args)
        assert time.monotonic() - began < 30
        assert "error" in result and "holding a lease" in result["error"], result
        assert sleeper.poll() is None  # nobody was killed
        # A lease of a process that is not one of the replicas (an earlier count's, an
        # operator's sync) is not a victim either.
        add_lease(postgres_url, "t-foreign", 1, datetime.now(UTC) + timedelta(hours=1))
        result = replicas.failover([sleeper], postgres_url, PASSWORD, args)
        assert "error" in result, result
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_victim_is_the_replica_holding_most_live_leases() -> None:
    replicas = bench()
    now = datetime.now(UTC)
    live, dead = now + timedelta(seconds=30), now - timedelta(seconds=1)
    rows = {"a": (10, live), "b": (10, live), "c": (11, live), "d": (11, dead), "e": (12, dead)}
    assert replicas.pick_victim(rows, now, {10, 11, 12}) == (10, {"a", "b"})
    assert replicas.pick_victim(rows, now, {11, 12}) == (11, {"c"})
    assert replicas.pick_victim(rows, now, {12}) is None
    assert replicas.pick_victim({}, now, {10}) is None
