"""What recording deliveries seen in the state database costs a webhook's answer, and what
looking at Graph's clientState before the parse saves a forgery.

The daemon's webhook app (receiver and relay, as `orgsync daemon` wires them) is served
over loopback by uvicorn on a SQLite file (and, given a URL, a PostgreSQL database).
N signed generic deliveries, each with an id of its own, are sent each way, in turn;
printed: p50 and p95 of the answer time, with the delivery's keys recorded in the queue's
transaction (`seen_deliveries`, as the daemon does) and without (the queue write alone,
as before). Then a forged Graph notification of 1 MiB (a wrong clientState first) is
sent M times: p50 of the answer (401), and in-process the CPU a parse of that body costs
against the look at its first clientState.

usage: .venv/bin/python bench/webhook_accept.py [N] [POSTGRESQL_URL]   (default 300, at most
       500: past 1000 people waiting for the target, the queue would widen them to one
       full row and write nothing more)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from starlette.applications import Starlette

from orgsync.core.webhook import Delivery, WebhookEvent, first_string_member, parse_json
from orgsync.daemon.http import HttpServer
from orgsync.daemon.queue import Mailbox
from orgsync.daemon.relay import Relay
from orgsync.daemon.webhooks import MAX_BODY, WebhookReceiver, WebhookSecrets, sign
from orgsync.logs import configure_logging
from orgsync.store import StateStore

SECRET = b"bench-secret"
STATE = "bench-client-state"


def served(store: StateStore, *, record: bool) -> tuple[HttpServer, str]:
    relay = Relay(
        store=store,
        instance="bench",
        mailboxes={"t": Mailbox()},
        runnable=list,
        count=lambda target, result: None,
    )

    def memory_only(event: WebhookEvent, delivery: Delivery) -> tuple[str, ...]:
        relay.submit(event)
        return delivery.keys

    receiver = WebhookReceiver(
        secrets=WebhookSecrets(SECRET, None, STATE),
        enqueue=relay.submit if record else memory_only,
        count=lambda kind, result: None,
        known_targets=frozenset({"t"}),
    )
    server = HttpServer(Starlette(routes=receiver.routes()), "127.0.0.1", 0)
    host, port = server.start()
    return server, f"http://{host}:{port}"


def timed(send: Callable[[int], httpx.Response], n: int, expect: int) -> list[float]:
    times = []
    for i in range(n):
        started = time.perf_counter()
        answer = send(i)
        times.append(time.perf_counter() - started)
        assert answer.status_code == expect, answer.text
    return times


def line(label: str, times: list[float]) -> str:
    p95 = statistics.quantiles(times, n=20)[-1]
    return f"{label}: p50 {statistics.median(times) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms"


def generic(store_at: str, n: int, run: int) -> None:
    """Both ways at once, one delivery each in turn, so that the machine's load (shared,
    changing) weighs on both alike."""
    times: dict[bool, list[float]] = {False: [], True: []}
    with StateStore.open(store_at) as before, StateStore.open(store_at) as after:
        servers = {False: served(before, record=False), True: served(after, record=True)}
        try:
            with httpx.Client(timeout=30) as http:
                for i in range(2 * n):
                    record = bool(i % 2)
                    body = json.dumps({"id": f"{run}-{i}", "emails": [f"p{run}-{i}@x.io"]}).encode()
                    header = sign(SECRET, int(time.time()), body)
                    started = time.perf_counter()
                    answer = http.post(
                        f"{servers[record][1]}/webhooks/generic",
                        content=body,
                        headers={"X-Orgsync-Signature": header},
                    )
                    times[record].append(time.perf_counter() - started)
                    assert answer.status_code == 202, answer.text
        finally:
            for server, _ in servers.values():
                server.stop()
    print(line("  generic, queue only (before)", times[False]))
    print(line("  generic, queue + seen_deliveries", times[True]))


def forged_graph(store_at: str, n: int) -> None:
    item = {"clientState": "guess", "resource": "Users/u-1", "changeType": "updated"}
    count = (MAX_BODY - 100) // (len(json.dumps(item)) + 2)
    body = json.dumps({"value": [item] * count}).encode()
    with StateStore.open(store_at) as store:
        server, base = served(store, record=True)
        try:
            with httpx.Client(timeout=30) as http:
                times = timed(lambda i: http.post(f"{base}/webhooks/entra", content=body), n, 401)
        finally:
            server.stop()
    print(line(f"  forged Graph body of {len(body)} bytes, answered 401", times))
    for label, work in (
        ("parse (before)", lambda: parse_json(body)),
        ("first clientState", lambda: first_string_member(body, "clientState")),
    ):
        started = time.process_time()
        for _ in range(20):
            work()
        print(f"  CPU of {label}: {(time.process_time() - started) / 20 * 1000:.3f} ms")


def main() -> None:
    configure_logging("error")  # a line per delivery would be timed too
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as folder:
        places = [str(Path(folder) / "state.db"), *sys.argv[2:3]]
        for run, place in enumerate(places):
            print("sqlite" if run == 0 else "postgresql")
            generic(place, n, run)
        forged_graph(places[0], 20)


if __name__ == "__main__":
    main()
