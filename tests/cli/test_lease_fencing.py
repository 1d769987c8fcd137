"""A sync frozen past its lease writes nothing once resumed (issue 15, PostgreSQL).

`orgsync sync` A is frozen with SIGSTOP while one of its invitations is on the wire; its
lease expires by the server's clock although its connection stays open; `orgsync sync`
B takes the target over (a higher fencing token) and applies everything; A is resumed
and must call the organization no more and record nothing: no request, no journal row,
no run finished. And no invitation is sent twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from orgsync.store import StateStore
from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, directory, openai_target, wanted_roles
from tests.postgres import PASSWORD, PASSWORD_ENV, PostgresServer, state_keys


def write_config(folder: Path, url: str, target: str, *, lease_ttl: str) -> Path:
    path = folder / "orgsync.toml"
    path.write_text(
        f"""
[source]
type = "file"
path = "directory.json"
{target}
[safety]
max_removals = 100
max_removal_ratio = 1.0

[state]
{state_keys(url)}
lease_ttl = "{lease_ttl}"
""",
        encoding="utf-8",
    )
    return path


def environ() -> dict[str, str]:
    """The password only where the configuration says (PASSWORD_ENV), not in PGPASSWORD."""
    env = {**os.environ, KEY_ENV: API_KEY, PASSWORD_ENV: PASSWORD}
    env.pop("PGPASSWORD", None)
    return env


def sync(config: Path) -> subprocess.Popen[str]:
    return cli.start(
        config, "sync", "--quiet", env=environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def status(config: Path) -> list[dict[str, object]]:
    done = cli.run(config, "status", "--json", env=environ(), timeout=60)
    assert done.returncode == 0, done.stderr
    document: list[dict[str, object]] = json.loads(done.stdout)
    return document


def journal(url: str) -> list[tuple[object, ...]]:
    """Every run and operation row as it stands (what a resumed process must not change)."""
    with StateStore.open(url, password=PASSWORD) as store:
        rows: list[tuple[object, ...]] = []
        for run in store.runs(limit=100):
            rows.append((run.run_id, run.status, run.finished_at))
            rows += [
                (op.run_id, op.seq, op.status.value, op.attempts, op.finished_at)
                for op in store.operations(run.run_id)
            ]
        return sorted(rows, key=repr)


def invite_posts(emulator: OpenAIEmulator) -> int:
    return sum(1 for r in emulator.writes() if r.method == "POST")


def test_a_sync_frozen_past_its_lease_writes_nothing_when_resumed(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.url_for_new_database("fencing")
    document = directory(8, owners=1)
    (tmp_path / "directory.json").write_text(json.dumps(document), encoding="utf-8")
    # One call at a time, each held 1.5 s by the server: when A is frozen right after
    # its invitation arrives, its only thread is waiting for that answer.
    with OpenAIEmulator(
        api_key=API_KEY, faults=Faults(latency=1.5), allow_duplicate_invites=True
    ) as emulator:
        target = openai_target("t", emulator.base_url, "max_concurrency = 1")
        config = write_config(tmp_path, url, target, lease_ttl="2s")
        first = sync(config)
        try:
            deadline = time.monotonic() + 60
            while invite_posts(emulator) < 1:
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "A never started inviting"
                time.sleep(0.01)
            (view,) = status(config)  # while A runs: its lease, renewed
            assert view["lock_held"] is True and view["lock_token"] == 1
            assert f"pid {first.pid}," in str(view["lock_holder"])
            seen = invite_posts(emulator)
            while invite_posts(emulator) <= seen:
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "A stopped inviting"
                time.sleep(0.002)
            os.kill(first.pid, signal.SIGSTOP)
            emulator.faults = Faults()  # the second sync runs at full speed
            sent_by_first = invite_posts(emulator)
            time.sleep(2.5)  # past A's lease (2 s), by the server's clock too
            (view,) = status(config)
            assert view["lock_held"] is False  # expired by time, A's connection still open

            second = sync(config)
            out, err = second.communicate(timeout=120)
            assert second.returncode == 0, out + err
            assert "lease.taken_over" in err
            after_second = invite_posts(emulator)
            rows = journal(url)
            assert after_second > sent_by_first  # B did the rest

            os.kill(first.pid, signal.SIGCONT)
            out, err = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                os.kill(first.pid, signal.SIGCONT)
                first.kill()
                first.communicate()  # closes its pipes, or a later test sees them collected
        assert first.returncode == 1, out + err
        assert "lease" in err and "lost" in err
        # Nothing reached the organization from A after it resumed, and nothing of it was
        # recorded: the journal and runs are exactly as B left them.
        assert invite_posts(emulator) == after_second
        assert journal(url) == rows
        pending: dict[str, int] = {}
        for invite in emulator.state.invites():
            if invite["status"] == "pending":
                email = str(invite["email"]).lower()
                pending[email] = pending.get(email, 0) + 1
        assert pending and max(pending.values()) == 1
        assert set(pending) == set(wanted_roles(document))
        with StateStore.open(url, password=PASSWORD) as store:
            statuses = sorted(r.status for r in store.runs(limit=10))
            lease = store.leases.holders()
        assert statuses == ["interrupted", "ok"]  # A's run, closed by B's recovery
        assert lease == {}  # B released it


@pytest.fixture(autouse=True)
def _no_pgpassword(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
