"""Red team, continued from test_liveness_redteam.py: a daemon whose state database
stops answering (locked by another program, or its PostgreSQL server frozen) must show
it and recover, not hang or look healthy.

A file of its own so that `--dist loadfile` can run it beside the rest of the liveness
red team: together they were the suite's longest file, which one worker ran alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.daemon.harness import Daemon, DaemonRig, wait_for
from tests.daemon.test_daemon_process import with_people
from tests.postgres import PostgresServer


def test_a_state_database_locked_by_another_program_is_not_ready_until_released(
    tmp_path: Path, started: list[Daemon]
) -> None:
    """An operator's `sqlite3 state.db` shell left inside a write transaction (or a backup
    tool holding the lock): no run can take its lease, so nothing is reconciled. Reads
    still work under WAL, so `/readyz` said ready, `/healthz` ok, and no metric moved;
    only a log line said why. Now `/readyz` is 503 naming the lock and the status page
    says no run can start; once the shell lets go, the daemon runs again by itself."""
    document = directory(3, owners=1)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator, interval="2s")
        rig.write(document)
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(rig.finished_runs, timeout=30, what="the startup run")
        shell = subprocess.Popen(["sqlite3", str(rig.state_db)], stdin=subprocess.PIPE, text=True)
        try:
            assert shell.stdin is not None
            shell.stdin.write("BEGIN IMMEDIATE;\n")
            shell.stdin.flush()

            def not_ready() -> str | None:
                # 503 naming the lock: as the target's reason, or as the state database's
                # (a readiness read queued behind a lease attempt waiting on the lock).
                response = daemon.get("/readyz")
                named = response.status_code == 503 and "locked" in response.text
                return response.text if named else None

            wait_for(not_ready, timeout=60, what="/readyz 503 naming the lock")
            wait_for(
                lambda: "cannot start a run" in daemon.get("/readyz").text,
                timeout=60,
                what="the target named",
            )
            page = daemon.get("/").text
            assert "no run can start" in page and "locked" in page
            assert daemon.get("/healthz").status_code == 200  # a restart would not help
            runs_before = len(rig.finished_runs())
            later = with_people(document, 9)
            rig.write(later)

            shell.stdin.write("ROLLBACK;\n.quit\n")
            shell.stdin.flush()
            shell.wait(10)
            wait_for(lambda: rig.holdings() == wanted_roles(later), timeout=60, what="a run")
            wait_for(lambda: len(rig.finished_runs()) > runs_before, timeout=30, what="it recorded")
            wait_for(lambda: daemon.get("/readyz").status_code == 200, timeout=30, what="ready")
            assert daemon.terminate() == 0
        finally:
            if shell.poll() is None:
                shell.kill()
                shell.wait(10)
            if shell.stdin is not None:
                shell.stdin.close()


def test_a_frozen_postgresql_state_database_is_a_visible_stall_not_a_hang(
    tmp_path: Path, started: list[Daemon], postgres: PostgresServer
) -> None:
    """The state database's server processes frozen (SIGSTOP: a hung storage volume, a
    VM paused under the database): its statement and lock timeouts run in the frozen
    processes and its kernel still answers TCP keepalives, so the daemon's next query
    waits for ever. The run stalls: `/healthz` 503 (a restart), and `/readyz` answers 503
    in bounded time instead of hanging with the database; webhooks are answered 503 in
    bounded time and never take the threads the probes and the status page need (each used
    to hold one for ever); the status page is served from memory with a banner (each
    reload used to hold a thread too). Thawed, the daemon is healthy again and reconciles.

    The webhooks, the page reloads and the probes come at the same time (each waits its
    bound, 10 s or 5 s, on the frozen database): probes answered while the others wait,
    and once more after them, show that none of them held the pool's threads."""
    database = postgres.new_database()
    document = directory(3, owners=1)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(
            folder=tmp_path, emulator=emulator, interval="1s", quarantine='stall_after = "3s"'
        )
        # A short lease: on a shared database the start-up run first waits a third of it
        # for replicas to register (10 s of this test with the default 30 s).
        rig.on_postgres(postgres.url(database), 'lease_ttl = "3s"')
        rig.write(document)
        daemon = rig.start()
        started.append(daemon)
        daemon.wait_started()
        wait_for(lambda: daemon.get("/readyz").status_code == 200, timeout=30, what="ready")
        assert daemon.get("/").status_code == 200  # the page has its connection now
        with postgres.admin(database) as admin:
            backends = [
                int(str(row[0]))
                for row in admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()",
                    (database,),
                )
            ]
        assert backends
        # The whole server: its backends, and the postmaster (no new connection either).
        postmaster = (postgres.folder / "data" / "postmaster.pid").read_text().split()[0]
        backends.append(int(postmaster))
        for pid in backends:
            os.kill(pid, signal.SIGSTOP)
        try:

            def unhealthy() -> dict[str, Any] | None:
                response = daemon.get("/healthz")
                return response.json() if response.status_code == 503 else None

            sick = wait_for(unhealthy, timeout=30, what="/healthz 503")
            assert sick["components"]["progress:openai-test"] is False

            # Each kind of client from an address of its own (all loopback): the daemon
            # takes at most max_connections_per_client (32) from one address. One client
            # each, shared by its threads (each new client reads the CA bundle: CPU this
            # test's timings do not need).
            def client(address: str) -> httpx.Client:
                return httpx.Client(
                    timeout=30,
                    transport=httpx.HTTPTransport(
                        local_address=address, limits=httpx.Limits(max_connections=None)
                    ),
                )

            # Webhooks: each is answered 503 (send it again) in bounded time.
            def deliveries() -> tuple[list[int], float]:
                began = time.monotonic()
                with client("127.0.0.2") as sender, ThreadPoolExecutor(60) as pool:

                    def deliver(i: int) -> int:
                        body = {"emails": [f"late{i}@example.com"]}
                        return daemon.post_generic(body, client=sender).status_code

                    return list(pool.map(deliver, range(60))), time.monotonic() - began

            # The status page: served from memory, saying so, however often reloaded.
            def reloads() -> tuple[list[httpx.Response], float]:
                began = time.monotonic()
                # 30 at a time: under max_connections_per_client.
                with client("127.0.0.3") as browser, ThreadPoolExecutor(30) as pool:
                    pages = list(pool.map(lambda _: browser.get(daemon.url("/")), range(90)))
                    return pages, time.monotonic() - began

            # `/readyz`: 503 in bounded time, while those wait and after them.
            def probe() -> float:
                began = time.monotonic()
                assert httpx.get(daemon.probe_url("/readyz"), timeout=20).status_code == 503
                return time.monotonic() - began

            with ThreadPoolExecutor(2) as storm:
                webhooks = storm.submit(deliveries)
                pages = storm.submit(reloads)
                probes = [probe()]
                while not (webhooks.done() and pages.done()):
                    probes.append(probe())
                codes, webhooks_took = webhooks.result()
                answered, pages_took = pages.result()
            probes.append(probe())
            assert set(codes) == {503}, codes
            assert webhooks_took < 25
            assert {p.status_code for p in answered} == {200}
            assert "did not answer" in answered[-1].text and "stalled" in answered[-1].text
            assert pages_took < 25
            assert len(probes) >= 3 and max(probes) < 10, probes
        finally:
            for pid in backends:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        later = with_people(document, 5)
        rig.write(later)
        wait_for(lambda: daemon.get("/healthz").status_code == 200, timeout=60, what="healthy")
        wait_for(lambda: rig.holdings() == wanted_roles(later), timeout=60, what="reconciled")
        assert daemon.terminate() == 0
