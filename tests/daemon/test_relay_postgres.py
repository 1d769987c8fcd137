"""Webhooks across replicas on PostgreSQL (issue 15): a delivery received by the replica
that does not hold the target is run by the one that does, soon; a replica killed with
requests claimed leaves them to the next holder, which serves them after the lease TTL.
Real daemon processes, the suite's PostgreSQL, the OpenAI emulator."""

from __future__ import annotations

import re
import time
from pathlib import Path

import psycopg
import pytest

from orgsync.store import StateStore
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.daemon.harness import SECRET, Daemon, DaemonRig, wait_for
from tests.daemon.test_daemon_process import with_people
from tests.leaks import traces
from tests.postgres import PASSWORD, PostgresServer

PEOPLE = 30
RATE = 4
"""Requests per second to the target: the start-up run (30 invitations) holds the
target's lease for several seconds, long enough to send a webhook while it does."""
LEASE_TTL = 3


def replicas_rig(
    tmp_path: Path, emulator: OpenAIEmulator, postgres: PostgresServer
) -> tuple[DaemonRig, str]:
    url = postgres.url_for_new_database()
    rig = DaemonRig(
        folder=tmp_path,
        emulator=emulator,
        debounce="100ms",
        target_keys=f"requests_per_second = {RATE}",
    )
    rig.on_postgres(url, f'lease_ttl = "{LEASE_TTL}s"')
    rig.write(directory(PEOPLE, owners=1))
    return rig, url


def holder_of(url: str) -> tuple[int, str] | None:
    """(pid, instance) of the daemon holding the target's lease now, if one does."""
    with StateStore.open(url) as store:
        lease = store.lease_holder("openai-test")
    if lease is None:
        return None
    match = re.search(r"pid (\d+), instance (\w+)", lease.holder)
    assert match, lease.holder
    return int(match.group(1)), match.group(2)


def holder_pid(url: str) -> int | None:
    held = holder_of(url)
    return held[0] if held else None


def everything_stored(url: str) -> str:
    """Every value of every table of the database, as text."""
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        ]
        return "\n".join(
            repr(row) for table in tables for row in conn.execute(f'SELECT * FROM "{table}"')
        )


def claimed_events(daemon: Daemon) -> list[dict[str, object]]:
    return [e for e in daemon.events() if e.get("event") == "webhook.claimed"]


def test_a_webhook_to_the_replica_not_holding_the_target_is_run_by_the_holder(
    tmp_path: Path,
    started: list[Daemon],
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig, url = replicas_rig(tmp_path, emulator, postgres)
        daemons = [rig.start("a"), rig.start("b")]
        started.extend(daemons)
        for daemon in daemons:
            daemon.wait_started()
        by_pid = {d.process.pid: d for d in daemons}
        # The start-up run of one of them holds the target for a while (rate-limited).
        pid, instance = wait_for(lambda: holder_of(url), timeout=30, what="a lease holder")
        holder = by_pid[pid]
        (other,) = [d for d in daemons if d is not holder]

        newcomer = PEOPLE
        rig.write(with_people(directory(PEOPLE, owners=1), newcomer))
        email = f"person{newcomer}@example.com"
        sent = time.monotonic()
        answer = other.post_generic({"id": "to-the-other", "emails": [email]})
        assert answer.status_code == 202, answer.text
        assert holder_pid(url) == holder.process.pid, "the run ended before the webhook"

        wait_for(lambda: email in rig.holdings(), timeout=60, what="the newcomer invited")
        latency = time.monotonic() - sent
        wait_for(
            lambda: rig.holdings() == wanted_roles(with_people(directory(PEOPLE), newcomer)),
            timeout=60,
            what="convergence",
        )
        with StateStore.open(url) as store:
            (row,) = store.queued_requests("openai-test")
            wait_for(lambda: all(r.done for r in store.queued_requests()), timeout=20, what="done")
            runs = store.runs(limit=100, target="openai-test")
        # Claimed and run by the holder; the replica that received it claimed nothing.
        assert (row.kind, row.person) == ("email", email)
        assert claimed_events(holder) and not claimed_events(other)
        assert row.claimed_by == instance
        writers = {r.pid for r in runs if r.status == "ok" and r.summary.get("invite")}
        assert writers == {holder.process.pid}
        assert max(rig.pending_invites().values()) == 1
        # Nothing of the delivery but its ids is in the database: not the body's other
        # fields, not the signature's secret, not the database's own password.
        stored = everything_stored(url)
        assert email in stored
        for secret in (SECRET, PASSWORD, "to-the-other"):
            assert traces(secret, stored) == [], secret
        print(f"\nwebhook to the other replica: invited {latency:.1f} s after it was sent")
        # The holder first finishes its start-up run (30 invitations at 4/s), then runs it.
        assert latency < 30
        for daemon in daemons:
            assert daemon.terminate() == 0


def test_requests_claimed_by_a_replica_killed_are_served_after_its_lease_expired(
    tmp_path: Path,
    started: list[Daemon],
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig, url = replicas_rig(tmp_path, emulator, postgres)
        daemons = [rig.start("a"), rig.start("b")]
        started.extend(daemons)
        for daemon in daemons:
            daemon.wait_started()
        by_pid = {d.process.pid: d for d in daemons}
        pid, instance = wait_for(lambda: holder_of(url), timeout=30, what="a lease holder")
        doomed = by_pid[pid]
        (survivor,) = [d for d in daemons if d is not doomed]

        newcomer = PEOPLE
        rig.write(with_people(directory(PEOPLE, owners=1), newcomer))
        email = f"person{newcomer}@example.com"
        assert doomed.post_generic({"id": "claimed", "emails": [email]}).status_code == 202
        wait_for(lambda: claimed_events(doomed), timeout=10, what="the holder's claim")
        assert holder_pid(url) == doomed.process.pid, "the run ended before the claim"
        doomed.kill()  # kill -9, its start-up run and the claimed request unfinished
        killed = time.monotonic()
        with StateStore.open(url) as store:
            (row,) = store.queued_requests()
            assert (row.claimed_by, row.done) == (instance, False)
            dead = row.claimed_by

            wait_for(lambda: email in rig.holdings(), timeout=90, what="the newcomer invited")
            served = time.monotonic() - killed
            wait_for(lambda: all(r.done for r in store.queued_requests()), timeout=30, what="done")
            (after,) = store.queued_requests()
        assert after.claimed_by not in (None, dead)
        assert claimed_events(survivor)
        assert rig.holdings() == wanted_roles(with_people(directory(PEOPLE), newcomer))
        assert max(rig.pending_invites().values()) == 1  # nobody invited twice
        print(f"\nclaimed requests served {served:.1f} s after the holder was killed")
        # Not before the lease TTL (the dead replica is presumed live until then), and
        # not long after it (the survivor polls every 2 s and reruns the start-up pass).
        assert served >= LEASE_TTL - 0.5
        assert served < LEASE_TTL + 45
        assert survivor.terminate() == 0
