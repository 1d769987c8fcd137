"""`orgsync daemon` with its state on PostgreSQL (issue 15, first half): two daemon
processes on one database take turns per target (its lease), together converge the
organization, `/readyz` and the status page answer from the server, and the password is
in no log line or page."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from orgsync.store import StateStore
from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.daemon.harness import Daemon, DaemonRig, wait_for
from tests.leaks import traces
from tests.postgres import PASSWORD, PostgresServer


def writing_intervals(store: StateStore) -> list[tuple[int, datetime, datetime]]:
    """(pid, first call started, last call finished) of every run that wrote something."""
    found = []
    for run in store.runs(limit=1000):
        calls = [op for op in store.operations(run.run_id) if op.started_at and op.finished_at]
        if calls:
            found.append(
                (
                    run.pid,
                    min(op.started_at for op in calls if op.started_at),
                    max(op.finished_at for op in calls if op.finished_at),
                )
            )
    return found


def test_two_daemons_on_one_postgresql_database_take_turns(
    tmp_path: Path,
    started: list[Daemon],
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = postgres.url_for_new_database()
    document = directory(12, owners=1)
    with OpenAIEmulator(api_key=API_KEY, faults=Faults(latency=0.1)) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        rig.on_postgres(url)
        rig.write(document)
        first, second = rig.start("a"), rig.start("b")
        started.extend([first, second])
        first.wait_started()
        second.wait_started()
        wait_for(
            lambda: rig.holdings() == wanted_roles(document), timeout=60, what="the first sync"
        )
        wait_for(
            lambda: httpx.get(first.probe_url("/readyz"), timeout=10).status_code == 200,
            timeout=60,
            what="readiness",
        )

        # Each daemon is asked about different new people at the same moment: both write,
        # one at a time.
        bigger = directory(36, owners=1)
        (tmp_path / "directory.json").write_text(json.dumps(bigger))
        asks = [
            (first, [f"person{i}@example.com" for i in range(12, 24)]),
            (second, [f"person{i}@example.com" for i in range(24, 36)]),
        ]
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(lambda a: a[0].post_generic({"emails": a[1]}).status_code, asks)
            )
        assert answers == [202, 202]
        wait_for(lambda: rig.holdings() == wanted_roles(bigger), timeout=90, what="convergence")
        monkeypatch.setenv("PGPASSWORD", PASSWORD)
        with StateStore.open(url) as store:
            wait_for(
                lambda: all(r.status != "running" for r in store.runs(limit=1000)),
                timeout=30,
                what="every run finished",
            )
            intervals = writing_intervals(store)
            statuses = {r.status for r in store.runs(limit=1000)}
        # Which daemon writes is the lease's business (the target falls to one replica,
        # which claims the webhook requests of both); never two at the same time.
        assert intervals
        assert {pid for pid, _, _ in intervals} <= {first.process.pid, second.process.pid}
        for pid, start, end in intervals:
            for other_pid, other_start, other_end in intervals:
                if pid != other_pid:
                    assert end <= other_start or other_end <= start, intervals
        assert statuses == {"ok"}
        assert max(rig.pending_invites().values()) == 1
        page = first.get("/")  # the status page reads the state on a connection of its own
        assert page.status_code == 200
        assert "openai-test" in page.text
        assert traces(PASSWORD, page.text) == []
        assert first.terminate() == 0
        assert second.terminate() == 0
        for daemon in (first, second):
            log = daemon.log_path.read_text(encoding="utf-8", errors="replace")
            assert traces(PASSWORD, log) == []
