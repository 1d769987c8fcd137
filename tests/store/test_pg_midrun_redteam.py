"""Red team: the state server ends every connection of `orgsync sync` in the middle of
its apply (a restart, a failover, an administrator's pg_terminate_backend), right after
the target accepted an invitation.

Harms: a journal that lies (an invitation the target holds but the state does not, so
the next run sends it again: a duplicate e-mail), a run left "running" for ever, or a
second writer while the first still thinks it holds the lease. Tried against the suite's
real PostgreSQL and the OpenAI emulator: a second sync
converges the organization with one invitation per person and every run is closed.
The first sync itself opens its connections again and finishes (exit 0), whether they
were cut between transactions or inside one (redone: tests/store/test_pg_reconnect.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from orgsync.store import StateStore
from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, openai_target, wanted_roles
from tests.cli.test_lease_fencing import invite_posts, sync, write_config
from tests.postgres import PASSWORD, PostgresServer


def _cut(postgres: PostgresServer, database: str) -> int:
    with postgres.admin() as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        ).fetchall()
    return len(rows)


def _pending(emulator: OpenAIEmulator) -> dict[str, int]:
    pending: dict[str, int] = {}
    for invite in emulator.state.invites():
        if invite["status"] == "pending":
            email = str(invite["email"]).lower()
            pending[email] = pending.get(email, 0) + 1
    return pending


def test_connections_cut_mid_apply_leave_an_honest_journal(
    tmp_path: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    database = postgres.new_database("midrun")
    url = postgres.url(database)
    document = directory(4, owners=1)
    (tmp_path / "directory.json").write_text(json.dumps(document), encoding="utf-8")
    with OpenAIEmulator(
        api_key=API_KEY, faults=Faults(latency=0.2), allow_duplicate_invites=True
    ) as emulator:
        target = openai_target("t", emulator.base_url, "max_concurrency = 1")
        config = write_config(tmp_path, url, target, lease_ttl="3s")
        first = sync(config)
        deadline = time.monotonic() + 60
        while invite_posts(emulator) < 2:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the sync never started inviting"
            time.sleep(0.005)
        assert _cut(postgres, database) >= 1
        out, err = first.communicate(timeout=120)
        with StateStore.open(url, password=PASSWORD) as store:
            (run,) = store.runs(limit=10)
            done = [op for op in store.operations(run.run_id) if op.status.value == "done"]
        # Whether the cut found the connections idle between transactions or inside
        # one (a journal write, a fenced check), the run opens them again, redoes the
        # transaction cut short, and finishes: a server restart costs no run, and every
        # invitation the target holds is journaled as done, once.
        assert first.returncode == 0, out + err
        assert run.status == "ok"
        assert len(done) == invite_posts(emulator) == len(wanted_roles(document))
        emulator.faults = Faults()
        second = sync(config)
        out2, err2 = second.communicate(timeout=120)
        assert second.returncode == 0, out2 + err2
        pending = _pending(emulator)
        assert set(pending) == set(wanted_roles(document))
        assert max(pending.values()) == 1, (pending, err, err2)
        with StateStore.open(url, password=PASSWORD) as store:
            runs = store.runs(limit=10)
            assert all(r.status != "running" for r in runs), [r.status for r in runs]
            assert store.leases.holders() == {}
    postgres.drop_database(database)
