"""Webhook -> applied: how long a newcomer named by a webhook waits for their invitation.

The OpenAI emulator runs in its own process, seeded with PEOPLE members and PEOPLE/100
groups of 100 members owned by orgsync; the state database holds what a full sync leaves
(links and owned groups). `orgsync daemon` (a fresh process, `debounce = "0s"`, a full
pass an hour) starts, and once its start-up full pass is done, for each of `--samples`
newcomers: the directory file gains them (written whole, then renamed into place), a
signed `POST /webhooks/generic` names their email, and the clock runs from just before
the POST until the emulator holds their invitation (asked every 10 ms). Printed: p50 and
p95 (and the range) per size, and the daemon's CPU time over the samples. The file source
is read whole on every run (SPEC: sources are never read in part), so the figure grows
with the directory; the organization side is read for the named person only.

Takes about a minute at 10k and eleven at 100k on a busy 2-core machine (load 10: the
start-up full pass, which reads the whole organization, about 200 s of it). The load
averages close each line: the wall figures mean little without them; the daemon's CPU
per webhook is the steadier figure.

usage: .venv/bin/python bench/webhook_latency.py [--samples 10] [PEOPLE ...]
       (default 10000 100000)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import _common
from orgsync.daemon.webhooks import sign

SECRET = "bench-webhook-secret-0123456789"
SECRET_ENV = "BENCH_WEBHOOK_SECRET"
PER_GROUP = 100
DAEMON_CONFIG = f"""
[schedule]
interval = "1h"
[server]
listen = "127.0.0.1:0"
webhook_secret_env = "{SECRET_ENV}"
debounce = "0s"
"""


def events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # being written
    return found


def wait_for(
    log: Path, process: subprocess.Popen[bytes], what: str, count: int = 1
) -> dict[str, Any]:
    while True:
        if process.poll() is not None:
            sys.exit(f"the daemon exited {process.returncode}: {log.read_text()[-3000:]}")
        matching = [e for e in events(log) if e.get("event") == what]
        if len(matching) >= count:
            return matching[count - 1]
        time.sleep(0.2)


def write_directory(folder: Path, seed: _common.Seed, newcomers: int) -> None:
    """The directory with `newcomers` people beyond the seeded ones, renamed into place
    so that the daemon never reads half a file."""
    _common.write_directory(folder / "next", seed, extra_people=newcomers)
    os.replace(folder / "next" / "directory.json", folder / "directory.json")


def post(port: int, email: str, event_id: str) -> None:
    body = json.dumps({"id": event_id, "emails": [email]}).encode()
    headers = {
        "X-Orgsync-Signature": sign(SECRET.encode(), int(time.time()), body),
        "Content-Type": "application/json",
    }
    answer = httpx.post(
        f"http://127.0.0.1:{port}/webhooks/generic", content=body, headers=headers, timeout=30
    )
    if answer.status_code >= 300:
        sys.exit(f"webhook answered {answer.status_code}: {answer.text}")


def measure(people: int, samples: int) -> None:
    seed = _common.Seed(people, groups=people // PER_GROUP, per_group=PER_GROUP)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "next").mkdir()
        with _common.emulator(__file__, seed, folder) as server:
            write_directory(folder, seed, 0)
            _common.write_config(folder, server.url, extra=DAEMON_CONFIG)
            _common.orgsync(folder, "sync", "--dry-run", "--only", "p0@example.com")
            _common.remember_full_sync(folder, server.ids)
            log = folder / "daemon.log"
            with log.open("wb") as sink:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "orgsync", "--log-format", "json", "daemon"],
                    cwd=folder,
                    env={**_common.environment(folder), SECRET_ENV: SECRET},
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            try:
                port = int(wait_for(log, daemon, "daemon.started")["port"])
                started = time.monotonic()
                wait_for(log, daemon, "run.done")  # the start-up full pass
                first_pass = time.monotonic() - started
                before = _daemon_cpu(daemon.pid)
                latencies = []
                for i in range(samples):
                    email = f"p{people + i}@example.com"
                    write_directory(folder, seed, i + 1)
                    sent = time.perf_counter()
                    post(port, email, f"bench-{i}")
                    while not server.invited(email):
                        time.sleep(0.01)
                    latencies.append(time.perf_counter() - sent)
                    wait_for(log, daemon, "run.done", count=i + 2)  # the run has finished
                cpu = _daemon_cpu(daemon.pid) - before
            finally:
                daemon.terminate()
                daemon.wait(60)
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(
        f"{people:>7} people, {seed.groups} groups: webhook -> invitation p50 "
        f"{statistics.median(ordered):.2f} s, p95 {p95:.2f} s "
        f"(range {ordered[0]:.2f}-{ordered[-1]:.2f} s, {samples} samples); daemon CPU "
        f"{cpu / samples:.2f} s per webhook; start-up full pass {first_pass:.1f} s; load "
        + " ".join(f"{figure:.1f}" for figure in os.getloadavg()),
        flush=True,
    )


def _daemon_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    if not _common.serve_main(sys.argv[1:]):
        parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
        parser.add_argument("people", type=int, nargs="*", default=[10_000, 100_000])
        parser.add_argument("--samples", type=int, default=10)
        options = parser.parse_args()
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; debounce 0 s")
        for size in options.people:
            measure(size, options.samples)
