"""What interruptible reads cost: an organization read with and without `orgsync.interrupt`.

The HTTP clients read a response in slices of `SLICE` seconds so that a stop request
(SIGTERM) ends a read in flight (see `orgsync.interrupt`). This reads the same
organization from the OpenAI emulator on loopback (no latency, no rate limit: every cost
the slicing could add is in view) with a plain transport and with the interruptible one,
alternating, and prints the median time of each and their ratio (1.00: no cost).

usage: .venv/bin/python bench/read_interrupt.py [MEMBERS] [ROUNDS]   (default 5000 7)
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

from orgsync.interrupt import ReadInterrupt
from orgsync.logs import configure_logging
from orgsync.retrying import RetrySettings
from orgsync.targets.http import ApiClient
from orgsync.targets.openai import OpenAITarget
from orgsync.testing.openai.emulator import OpenAIEmulator

KEY = "sk-admin-bench-0000000000000000000000000000000000000000"


def read_once(url: str, interrupt: ReadInterrupt | None) -> float:
    client = ApiClient(
        url,
        bearer_token=KEY,
        system="bench",
        retry=RetrySettings(),
        user_agent="orgsync-bench",
        interrupt=interrupt,
    )
    target = OpenAITarget(client, api_key=KEY)
    started = time.perf_counter()
    try:
        target.read()
    finally:
        target.close()
    return time.perf_counter() - started


def main(members: int, rounds: int) -> None:
    configure_logging("warning")
    with OpenAIEmulator(api_key=KEY) as emulator:
        for i in range(members):
            emulator.state.add_user(f"p{i}@example.com", "reader")
        url = emulator.start()
        read_once(url, None)  # warm up both sides
        plain: list[float] = []
        sliced: list[float] = []
        for _ in range(rounds):
            plain.append(read_once(url, None))
            sliced.append(read_once(url, ReadInterrupt(threading.Event())))
    p, s = statistics.median(plain), statistics.median(sliced)
    print(f"members {members}, rounds {rounds}, {len(emulator.requests)} requests in all")
    print(f"plain transport        median {p:.3f} s")
    print(f"interruptible reads    median {s:.3f} s")
    print(f"ratio interruptible / plain = {s / p:.2f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 5000, int(args[1]) if len(args) > 1 else 7)
