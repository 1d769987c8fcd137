"""Replicas sharing targets on PostgreSQL (issue 15): throughput with 1, 2 and 3 daemons,
and the failover time after one is killed, against the lease TTL.

A throwaway PostgreSQL server (Debian's, initdb in a temporary folder, as the test suite
starts it; or `--url` with the password in PGPASSWORD) and TARGETS small emulated OpenAI
organizations behind one loopback server in a process of its own (`--serve`). For each
replica count, a fresh state database and N `python -m orgsync daemon` processes with the
same configuration: every target every `--interval` seconds (so that the replicas always
have work: the figure is their capacity, not the schedule's), each organization holding
PEOPLE people. Once every target has had a good run, the good sync runs finishing during
`--window` seconds are counted from the run history: targets reconciled per minute, and
the ratio to one replica. The peak RSS of each daemon (VmHWM) is read before it stops.

Failover (with the most replicas): the replica holding the most leases is killed with
SIGKILL; for each target whose lease it held, the time until another replica starts a
run of it (its lease expired by the server's clock, then taken) is read from the run
history. The expected figure is the lease TTL plus the taker's next attempt.

Every process shares this machine's cores: with N replicas on one host, the ratio says
how much the daemon itself (the lease, the queue, the shared state database) costs, not
what N hosts would give.

usage: .venv/bin/python bench/replicas.py [--targets 300] [--people 5] [--window 60]
           [--ttl 10] [--interval 2] [--replicas 1 2 3] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orgsync.testing.fleet import ManyOrgs, replicas_config, target_names

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY_ENV = "ORGSYNC_BENCH_OPENAI_KEY"
API_KEY = "sk-admin-bench-0000000000000000000000"
PASSWORD_ENV = "ORGSYNC_BENCH_PG_PASSWORD"


def serve(count: int) -> None:
    """The organizations' process: print the origin, serve until stdin closes."""
    with ManyOrgs(count, api_key=API_KEY) as orgs:
        print(orgs.url(0).rsplit("/o0/", 1)[0], flush=True)
        sys.stdin.read()


def directory(people: int) -> dict[str, Any]:
    return {
        "people": [
            {"id": f"p{i}", "email": f"person{i}@example.com", "name": f"P{i}", "active": True}
            for i in range(people)
        ],
        "groups": [
            {"id": "g-users", "name": "openai-users", "members": [f"p{i}" for i in range(people)]},
            {"id": "g-owners", "name": "openai-owners", "members": ["p0"]},
        ],
    }


def write_config(folder: Path, url: str, origin: str, args: argparse.Namespace) -> Path:
    (folder / "directory.json").write_text(json.dumps(directory(args.people)))
    path = folder / "orgsync.toml"
    text = replicas_config(
        [f"{origin}/o{i}/v1" for i in range(args.targets)],
        key_env=KEY_ENV,
        state_url=url,
        password_env=PASSWORD_ENV,
        lease_ttl=f"{args.ttl}s",
        interval=f"{args.interval}s",
    )
    path.write_text(text, encoding="utf-8")
    return path


def runs(url: str, password: str) -> list[dict[str, Any]]:
    import psycopg

    with psycopg.connect(url, password=password or None) as conn:
        try:
            rows = conn.execute(
                "SELECT target, status, pid, started_at, finished_at FROM runs WHERE mode = 'sync'"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []  # the first daemon has not created the schema yet
    return [
        {
            "target": r[0],
            "status": r[1],
            "pid": r[2],
            "started": datetime.fromisoformat(r[3]),
            "finished": datetime.fromisoformat(r[4]) if r[4] else None,
        }
        for r in rows
    ]


def leases(url: str, password: str) -> dict[str, tuple[int, datetime]]:
    """target -> (holder pid, expiry) of every lease row."""
    import psycopg

    with psycopg.connect(url, password=password or None) as conn:
        rows = conn.execute("SELECT target, holder, expires_at FROM leases").fetchall()
    found = {}
    for target, holder, expires in rows:
        match = re.search(r"pid (\d+)", holder)
        if match:
            found[target] = (int(match.group(1)), datetime.fromisoformat(expires))
    return found


def lease_lost(folder: Path) -> int:
    """Runs the replicas ended because their lease ran out (their logs: such a run is not
    recorded in the run history)."""
    return sum(
        log.read_text(errors="replace").count('"status": "lease-lost"')
        for log in folder.glob("replica*.log")
    )


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_daemons(count: int, config: Path, folder: Path, password: str) -> list[Any]:
    env = {**os.environ, KEY_ENV: API_KEY, PASSWORD_ENV: password}
    env.pop("PGPASSWORD", None)
    daemons = []
    for n in range(count):
        log = (folder / f"replica{n}.log").open("wb")
        daemons.append(
            subprocess.Popen(
                [sys.executable, "-m", "orgsync", "--config", str(config), "daemon"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=folder,
            )
        )
    return daemons


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def measure(count: int, url: str, password: str, origin: str, args: argparse.Namespace) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"orgsync-bench-replicas{count}-"))
    config = write_config(folder, url, origin, args)
    daemons = start_daemons(count, config, folder, password)
    try:
        names = set(target_names(args.targets))

        def all_reconciled() -> bool:
            good = {r["target"] for r in runs(url, password) if r["status"] == "ok"}
            return good >= names

        began = time.monotonic()
        try:
            wait(all_reconciled, args.first_pass, "a good run of every target")
        except TimeoutError as error:
            # A finding, not a crash: say what the replicas did instead.
            return {
                "replicas": count,
                "error": str(error),
                "good_targets": len(
                    {r["target"] for r in runs(url, password) if r["status"] == "ok"}
                ),
                "lease_lost_runs": lease_lost(folder),
                "rss_mib": [round(vm_hwm_mib(d.pid), 1) for d in daemons],
            }
        warmed = time.monotonic() - began
        window_start = datetime.now(UTC)
        time.sleep(args.window)
        window_end = datetime.now(UTC)
        done = [
            r
            for r in runs(url, password)
            if r["status"] == "ok"
            and r["finished"] is not None
            and window_start <= r["finished"] < window_end
        ]
        per_minute = len(done) * 60 / (window_end - window_start).total_seconds()
        by_pid: dict[int, int] = {}
        for r in done:
            by_pid[r["pid"]] = by_pid.get(r["pid"], 0) + 1
        result: dict[str, Any] = {
            "replicas": count,
            "first_pass_s": round(warmed, 1),
            "per_minute": round(per_minute, 1),
            "per_replica": sorted(by_pid.values(), reverse=True),
            "rss_mib": [round(vm_hwm_mib(d.pid), 1) for d in daemons],
            "lease_lost_runs": lease_lost(folder),
        }
        if count == max(args.replicas) and count > 1:
            result["failover"] = failover(daemons, url, password, args)
        return result
    finally:
        for d in daemons:
            if d.poll() is None:
                d.send_signal(signal.SIGTERM)
        for d in daemons:
            try:
                d.wait(120)
            except subprocess.TimeoutExpired:
                d.kill()


def pick_victim(
    rows: dict[str, tuple[int, datetime]], now: datetime, pids: set[int]
) -> tuple[int, set[str]] | None:
    """The replica (one of `pids`) holding the most live leases, and those targets; None
    when none of them holds one (a lease is held only while its target runs, so with few
    targets, or more replicas than targets, there may be none at a given instant)."""
    held: dict[int, set[str]] = {}
    for target, (pid, expires) in rows.items():
        if expires > now and pid in pids:
            held.setdefault(pid, set()).add(target)
    if not held:
        return None
    pid = max(sorted(held), key=lambda p: len(held[p]))
    return pid, held[pid]


def failover(daemons: list[Any], url: str, password: str, args: argparse.Namespace) -> dict:
    """Kill the replica holding the most leases; how long until its targets run again."""
    pids = {d.pid for d in daemons if d.poll() is None}

    def someone_holds() -> tuple[int, set[str]] | None:
        return pick_victim(leases(url, password), datetime.now(UTC), pids)

    try:
        # Leases come and go with the runs: look for a holder for a few TTLs.
        pid, orphaned = wait(someone_holds, 3 * args.ttl + 2, "a replica holding a lease")
    except TimeoutError as error:
        return {"lease_ttl_s": args.ttl, "error": str(error)}
    victim = next(d for d in daemons if d.pid == pid)
    victim.kill()  # SIGKILL
    killed = datetime.now(UTC)
    victim.wait(10)

    def taken() -> dict[str, float] | None:
        first: dict[str, float] = {}
        for r in runs(url, password):
            if r["target"] in orphaned and r["pid"] != pid and r["started"] > killed:
                delay = (r["started"] - killed).total_seconds()
                first[r["target"]] = min(delay, first.get(r["target"], delay))
        return first if set(first) == orphaned else None

    delays = wait(taken, 5 * args.ttl + 120, "the dead replica's targets taken over")
    values = sorted(delays.values())
    return {
        "lease_ttl_s": args.ttl,
        "targets": len(values),
        "median_s": round(statistics.median(values), 1),
        "max_s": round(values[-1], 1),
        "min_s": round(values[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--targets", type=int, default=300)
    parser.add_argument("--people", type=int, default=5)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--ttl", type=int, default=10)
    parser.add_argument("--interval", type=int, default=2)
    parser.add_argument(
        "--first-pass", type=float, default=600.0, help="seconds allowed for a good run of each"
    )
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--url", help="a PostgreSQL database to use (emptied per count)")
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(args.targets)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert server.stdout is not None
    assert server.stdin is not None
    origin = server.stdout.readline().strip()
    results = []
    try:
        with databases(args.url) as fresh:
            for count in args.replicas:
                url, password = fresh()
                result = measure(count, url, password, origin, args)
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        server.stdin.close()
        server.wait(30)
    base = next((r.get("per_minute") for r in results if r["replicas"] == 1), None)
    print(
        f"\n{args.targets} targets of {args.people} people, schedule every {args.interval} s, "
        f"lease TTL {args.ttl} s, window {args.window:.0f} s, {os.cpu_count()} cores shared"
    )
    print("replicas  targets reconciled/min  vs 1 replica  per replica       peak RSS MiB")
    for r in results:
        if "error" in r:
            print(
                f"{r['replicas']:>8}  {r['error']}: {r['good_targets']} targets had a good "
                f"run, {r['lease_lost_runs']} runs lost their lease"
            )
            continue
        ratio = f"{r['per_minute'] / base:.2f}x" if base else "-"
        print(
            f"{r['replicas']:>8}  {r['per_minute']:>22}  {ratio:>12}  "
            f"{r['per_replica']!s:<16}  {r['rss_mib']}"
        )
    for r in results:
        if "failover" in r:
            f = r["failover"]
            if "error" in f:
                print(f"failover (kill -9 of 1 of {r['replicas']}): not measured: {f['error']}")
                continue
            print(
                f"failover (kill -9 of 1 of {r['replicas']}): {f['targets']} targets taken over "
                f"after {f['min_s']}-{f['max_s']} s (median {f['median_s']} s), lease TTL "
                f"{f['lease_ttl_s']} s"
            )


@contextlib.contextmanager
def databases(url: str | None) -> Iterator[Any]:
    """A function giving (url, password) of a fresh database for each replica count."""
    if url is not None:
        password = os.environ.get("PGPASSWORD", "")

        def reuse() -> tuple[str, str]:
            import psycopg

            with psycopg.connect(url, password=password or None, autocommit=True) as conn:
                conn.execute("DROP SCHEMA public CASCADE")
                conn.execute("CREATE SCHEMA public")
            return url, password

        yield reuse
        return
    from orgsync.testing.postgres import PASSWORD, running_postgres

    with running_postgres() as server:
        yield lambda: (server.url(server.new_database("bench")), PASSWORD)


if __name__ == "__main__":
    main()
