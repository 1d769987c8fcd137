"""Leases and fencing (`orgsync.store.leases`) on a real PostgreSQL and on SQLite.

On PostgreSQL the lease row decides who writes: it expires by the server's clock while
its holder's connection stays open, a takeover raises the fencing token, and a write
carrying a stale token (or an expired lease) is refused with nothing written. On SQLite
the kernel lock decides and a stale token is refused too.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from orgsync.core.errors import StateError
from orgsync.core.plan import Invite, Plan
from orgsync.store import HeldLease, LeaseLost, StateStore
from orgsync.store.db import utc_now
from orgsync.store.leases import LeaseKeeper, LeaseRecord, margin_of

TTL = timedelta(seconds=1)


def held(store: StateStore, target: str, holder: str, ttl: timedelta = TTL) -> HeldLease:
    """A lease taken with no renewal thread: it runs out unless the test renews it."""
    sent = time.monotonic()
    taken = store.leases.take(target, holder, ttl)
    assert taken is not None, f"{holder} could not take {target}"
    valid_for = ttl - margin_of(ttl) if store.db.leases_expire else None
    return HeldLease(taken.record, valid_for=valid_for, sent=sent)


def count(store: StateStore, table: str) -> int:
    with store.db.read() as session:
        value = session.scalar(f"SELECT COUNT(*) FROM {table}")
    assert isinstance(value, int)
    return value


def a_plan(target: str) -> Plan:
    return Plan(
        target=target,
        generated_at=utc_now(),
        operations=[Invite(email="new@example.com", role="reader", source_id="s1", reason="r")],
    )


# --------------------------------------------------------------------------- PostgreSQL


def test_a_lease_expires_by_time_while_its_holders_connection_stays_open(postgres_url: str) -> None:
    with StateStore.open(postgres_url) as one, StateStore.open(postgres_url) as two:
        first = one.leases.take("t", "replica a", TTL)
        assert first is not None and first.record.token == 1 and first.previous is None
        assert two.leases.take("t", "replica b", TTL) is None  # held, not expired
        holder = two.lease_holder("t")
        assert holder is not None and holder.holder == "replica a"
        # The holder's connection stays open and idle: only time ends its lease.
        time.sleep(TTL.total_seconds() + 0.2)
        assert two.lease_holder("t") is None
        second = two.leases.take("t", "replica b", TTL)
        assert second is not None
        assert second.record.token == 2
        assert second.previous is not None and second.previous.holder == "replica a"
        assert not one.leases.renew("t", "replica a", 1, TTL)  # its token is stale
        assert one.lease_holders()["t"].holder == "replica b"


def test_renewing_keeps_a_lease_past_its_ttl(postgres_url: str) -> None:
    with StateStore.open(postgres_url) as one, StateStore.open(postgres_url) as two:
        keeper = one.lease_keeper("replica a", TTL, instance="a")
        try:
            lease = keeper.try_take("t")
            assert lease is not None
            deadline = time.monotonic() + 3 * TTL.total_seconds()
            while time.monotonic() < deadline:
                assert two.leases.take("t", "replica b", TTL) is None
                assert lease.valid
                time.sleep(0.1)
            assert keeper.held_targets() == frozenset({"t"})
        finally:
            keeper.close()
        # Released: free at once, and the next holder's token is higher.
        taken = two.leases.take("t", "replica b", TTL)
        assert taken is not None and taken.record.token == 2


def test_a_stale_tokens_journal_write_is_refused_and_writes_nothing(postgres_url: str) -> None:
    with StateStore.open(postgres_url) as one, StateStore.open(postgres_url) as two:
        lease = held(one, "t", "replica a")
        fenced = one.fenced(lease)
        run_id = fenced.start_run("t", "sync")
        fenced.record_plan(run_id, a_plan("t"))
        journal = fenced.journal(run_id)
        (operation,) = a_plan("t").operations
        time.sleep(TTL.total_seconds() + 0.2)
        taken = two.leases.take("t", "replica b", TTL)
        assert taken is not None and taken.record.token == 2
        before = [op.status.value for op in one.operations(run_id)]
        # The holder's own check refuses first (its lease ran out on its clock)...
        with pytest.raises(LeaseLost):
            journal.started(0, operation)
        # ...and the database refuses a write even from a holder that believes it is
        # still valid (a clock that ran slow, a check raced): the token is stale.
        believer = HeldLease(lease_record(one, "t", token=1), valid_for=None, sent=0.0)
        with pytest.raises(LeaseLost, match="token 2 > 1"):
            one.fenced(believer).journal(run_id).started(0, operation)
        with pytest.raises(LeaseLost):
            one.fenced(believer).link("t", email_key="new@example.com", source_id="s1")
        with pytest.raises(LeaseLost):
            one.fenced(believer).finish_run(
                run_id, status="ok", exit_code=0, summary={}, checksum=None
            )
        assert [op.status.value for op in one.operations(run_id)] == before == ["planned"]
        assert count(one, "links") == 0
        run = one.run(run_id)
        assert run is not None and run.status == "running"
        # The new holder writes.
        two.fenced(held(two, "t", "replica b")).link(
            "t", email_key="new@example.com", source_id="s1"
        )
        assert count(one, "links") == 1


def test_an_expired_lease_nobody_took_over_refuses_writes_too(postgres_url: str) -> None:
    with StateStore.open(postgres_url) as store:
        lease = held(store, "t", "replica a")
        believer = HeldLease(lease_record(store, "t", token=lease.token), valid_for=None, sent=0)
        time.sleep(TTL.total_seconds() + 0.2)
        with pytest.raises(LeaseLost, match="expired"):
            store.fenced(believer).start_run("t", "sync")
        assert count(store, "runs") == 0


def test_the_holder_stops_before_its_lease_ends_by_its_own_clock(postgres_url: str) -> None:
    with StateStore.open(postgres_url) as store:
        lease = held(store, "t", "replica a", ttl=timedelta(seconds=2))
        assert lease.valid
        lease.check()
        # A quarter of the TTL before the end, the holder no longer writes.
        time.sleep(2 - margin_of(timedelta(seconds=2)).total_seconds() + 0.1)
        assert not lease.valid
        with pytest.raises(LeaseLost, match="not renewed in time"):
            lease.check()


def test_a_holder_frozen_inside_a_transaction_does_not_keep_its_target(postgres_url: str) -> None:
    # A replica frozen (SIGSTOP, a VM pause) in the middle of a renewal or a fenced write
    # keeps its connection open and the lease row locked; the takeover skips a locked
    # row, so without a bound the target would wait for as long as the freeze lasts.
    with StateStore.open(postgres_url) as one, StateStore.open(postgres_url) as two:
        keeper = one.lease_keeper("replica a", TTL, instance="a")  # bounds its transactions
        keeper.close()
        assert one.leases.take("t", "replica a", TTL) is not None
        taken = None
        with pytest.raises(StateError, match="connection"):  # noqa: PT012
            with one.db.write() as frozen:
                frozen.one("SELECT fence FROM leases WHERE target = ? FOR KEY SHARE", ("t",))
                deadline = time.monotonic() + 3 * TTL.total_seconds() + 5
                while taken is None and time.monotonic() < deadline:
                    taken = two.leases.take("t", "replica b", TTL)
                    time.sleep(0.05)
                assert taken is not None, "the frozen transaction kept the target"
                frozen.one("SELECT 1")  # what the frozen replica does when resumed
        assert taken.record.token == 2
        assert one.lease_holders()["t"].holder == "replica b"  # its next session sees it


def test_racing_replicas_take_a_free_lease_once(postgres_url: str) -> None:
    stores = [StateStore.open(postgres_url) for _ in range(6)]
    try:
        barrier = threading.Barrier(len(stores))
        won: list[str] = []

        def take(index: int) -> None:
            barrier.wait()
            if stores[index].leases.take("t", f"replica {index}", timedelta(seconds=30)):
                won.append(f"replica {index}")

        threads = [threading.Thread(target=take, args=(i,)) for i in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1
        holder = stores[0].lease_holder("t")
        assert holder is not None and [holder.holder] == won and holder.token == 1
    finally:
        for store in stores:
            store.close()


def test_replicas_share_the_targets_fairly(postgres_url: str) -> None:
    stores = [StateStore.open(postgres_url) for _ in range(3)]
    keepers = [s.lease_keeper(f"replica {i}", TTL, instance=f"r{i}") for i, s in enumerate(stores)]
    try:
        for keeper in keepers:
            keeper.join()
        assert [k.fair_share(30) for k in keepers] == [10, 10, 10]
        assert keepers[0].fair_share(31) == 11
        # A replica holds no more than its share at once.
        targets = [f"t{i}" for i in range(30)]
        for target in targets:
            keepers[0].try_take(target, limit=10)
        assert len(keepers[0].held_targets()) == 10
        # One replica leaves (or dies: its registration expires like its leases).
        keepers[2].close()
        time.sleep(1.1)  # the live replicas are read at most once a second
        assert keepers[0].fair_share(30) == 15
    finally:
        for keeper in keepers:
            keeper.close()
        for store in stores:
            store.close()


def test_a_dead_replicas_registration_and_leases_expire(postgres_url: str) -> None:
    with StateStore.open(postgres_url) as one, StateStore.open(postgres_url) as two:
        dead = LeaseKeeper(one.db, "replica dead", TTL, instance="dead")
        dead.join()
        assert dead.try_take("t") is not None
        dead._stopped.set()  # stops renewing, as a killed process would, without releasing
        alive = two.lease_keeper("replica alive", TTL, instance="alive")
        try:
            alive.join()
            assert alive.fair_share(2) == 1
            assert alive.try_take("t") is None
            lease = alive.try_take("t", patience=3 * TTL.total_seconds())
            assert lease is not None and lease.token == 2
            time.sleep(1.1)  # the live replicas are read at most once a second
            assert alive.fair_share(2) == 2
        finally:
            alive.close()
            dead.close()  # its stale token releases nothing
        holder = two.lease_holder("t")
        assert holder is None  # released by alive, not by dead


# --------------------------------------------------------------------------- SQLite


def test_on_sqlite_the_lock_decides_and_a_stale_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(path) as one, StateStore.open(path) as two:
        keeper = one.lease_keeper("cli a", TTL, instance="a")
        rival = two.lease_keeper("cli b", TTL, instance="b")
        try:
            lease = keeper.try_take("t")
            assert lease is not None and lease.token == 1
            assert rival.try_take("t") is None  # the kernel lock, not time, decides
            time.sleep(TTL.total_seconds() + 0.2)
            assert lease.valid  # no expiry by time on one host: the lock is still held
            assert rival.try_take("t") is None
            one.fenced(lease).start_run("t", "sync")
            # A row taken over under it (as when its lock file was replaced) fences it.
            assert two.leases.take("t", "cli b", TTL) is not None
            with pytest.raises(LeaseLost, match="took it over"):
                one.fenced(lease).start_run("t", "sync")
            assert count(one, "runs") == 1
        finally:
            keeper.close()
            rival.close()


def lease_record(store: StateStore, target: str, *, token: int) -> LeaseRecord:
    """The lease row of `target`, as if `token` still held it."""
    with store.db.read() as session:
        row = session.one(
            "SELECT holder, acquired_at, expires_at FROM leases WHERE target = ?", (target,)
        )
    assert row is not None
    return LeaseRecord(
        target, row.text("holder"), row.time("acquired_at"), row.time("expires_at"), token
    )
