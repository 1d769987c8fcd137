"""What a time read costs on PostgreSQL: the store's `ServerClock` against asking the
server each time (what a round trip per journal row, run or link batch would cost).

A throwaway PostgreSQL (orgsync.testing.postgres, in a temporary folder, loopback), one store:
N reads of `StateStore.clock()`, then M `SELECT clock_timestamp()` in a read transaction,
as `server_now` runs it. Loopback is the best case for the round trip; a database on
another host adds its network latency to every one.

usage: .venv/bin/python bench/server_clock.py [READS] [QUERIES]
       (default 20000 2000)
"""

from __future__ import annotations

import sys
import time

from orgsync.store import StateStore
from orgsync.store.db import server_now
from orgsync.testing.postgres import PASSWORD, running_postgres


def main() -> None:
    reads = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    queries = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
    with running_postgres() as server:
        url = server.url(server.new_database())
        with StateStore.open(url, password=PASSWORD) as store:
            began = time.perf_counter()
            for _ in range(reads):
                store.clock()
            local = (time.perf_counter() - began) / reads
            began = time.perf_counter()
            for _ in range(queries):
                with store.db.read() as session:
                    server_now(store.db, session)
            remote = (time.perf_counter() - began) / queries
    print(f"ServerClock read: {local * 1e6:.2f} us ({reads} reads)")
    print(f"server query per read: {remote * 1e6:.0f} us ({queries} queries, loopback)")


if __name__ == "__main__":
    main()
