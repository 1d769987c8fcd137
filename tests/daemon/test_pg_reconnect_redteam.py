"""Red team: the state server ends every connection of a running daemon (a restart, a
failover, an administrator's pg_terminate_backend) between two runs.

Harm: a daemon that silently stops reconciling: its store, lease, listener and status
connections are all dead, and unless each opens again by itself the daemon answers
`/healthz` but never writes again until someone restarts it. Or, opening again, it
invites people twice (lost journal). Tried against the suite's real PostgreSQL: after the
cut, new people are asked for and must be invited once each, with no restart."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.daemon.harness import Daemon, DaemonRig, wait_for
from tests.postgres import PostgresServer


def _cut_every_connection(postgres: PostgresServer, database: str) -> int:
    with postgres.admin() as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        ).fetchall()
    return len(rows)


def test_a_daemon_goes_on_reconciling_after_the_server_cut_its_connections(
    tmp_path: Path,
    started: list[Daemon],
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    database = postgres.new_database()
    document = directory(4, owners=1)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator)
        rig.on_postgres(postgres.url(database), 'lease_ttl = "3s"')
        rig.write(document)
        daemon = rig.start("a")
        started.append(daemon)
        daemon.wait_started()
        wait_for(lambda: rig.holdings() == wanted_roles(document), timeout=60, what="first sync")
        wait_for(
            lambda: httpx.get(daemon.probe_url("/readyz"), timeout=10).status_code == 200,
            timeout=60,
            what="readiness",
        )
        assert _cut_every_connection(postgres, database) >= 2  # store and lease at least

        bigger = directory(8, owners=1)
        (tmp_path / "directory.json").write_text(json.dumps(bigger))
        emails = [f"person{i}@example.com" for i in range(4, 8)]
        wait_for(
            lambda: daemon.post_generic({"emails": emails}).status_code == 202,
            timeout=30,
            what="the webhook accepted after the cut",
        )
        wait_for(lambda: rig.holdings() == wanted_roles(bigger), timeout=60, what="convergence")
        assert max(rig.pending_invites().values()) == 1
        assert daemon.get("/").status_code == 200  # the status page reads again too
        assert daemon.process.poll() is None
        assert daemon.terminate() == 0
