"""The webhook queue table (issue 15) on both backends, real SQLite files and the suite's
PostgreSQL: requests written by one replica are claimed by the one holding the target,
once; people are coalesced; the table is bounded; a dead claimer's rows return; a
PostgreSQL listener hears a write from another connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from orgsync.store import StateStore
from orgsync.store.leases import ReplicaTable
from orgsync.store.queue import MAX_PENDING_PER_TARGET, Request, WebhookQueue


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(location: str, clock: Clock) -> Iterator[StateStore]:
    with StateStore.open(location, clock=clock, server_clock=False) as opened:
        yield opened


@pytest.fixture
def other(location: str, store: StateStore, clock: Clock) -> Iterator[StateStore]:
    """A second connection to the same database: another replica."""
    with StateStore.open(location, clock=clock, server_clock=False) as opened:
        yield opened


def people(*emails: str, target: str = "t1", trigger: str = "webhook:generic") -> Request:
    return Request(target, trigger, emails=frozenset(emails))


def test_a_request_written_by_one_replica_is_claimed_once_by_the_holder(
    store: StateStore, other: StateStore
) -> None:
    queued = store.queue_requests(
        [
            people("a@example.com", "b@example.com"),
            Request("t1", "webhook:okta", source_ids=frozenset({"00u1"})),
            people("c@example.com", target="t2"),
        ]
    )
    assert (queued.added, queued.coalesced, queued.widened) == (4, 0, ())
    assert other.requests_waiting(["t1"])
    (claimed,) = other.claim_requests("replica-b", ["t1"])
    assert claimed.target == "t1"
    assert claimed.emails == {"a@example.com", "b@example.com"}
    assert claimed.source_ids == {"00u1"}
    assert claimed.trigger == "webhook:generic"
    assert not claimed.full
    assert len(claimed.ids) == 3
    assert other.claim_requests("replica-b", ["t1"]) == []
    assert store.claim_requests("replica-a", ["t3"]) == []
    # t2 is nobody's yet: it waits.
    assert store.requests_waiting(["t2"])
    assert [r.claimed_by for r in store.queued_requests("t2")] == [None]


def test_requests_are_done_when_their_run_finished_and_pruned_later(
    store: StateStore, clock: Clock
) -> None:
    store.queue_requests([people("a@example.com")])
    (claimed,) = store.claim_requests("me", ["t1"])
    assert store.requests_waiting(["t1"])  # claimed, not done: a crash would leave it
    assert store.finish_requests("me", claimed.ids) == 1
    assert not store.requests_waiting()
    (row,) = store.queued_requests()
    assert row.done and row.claimed_by == "me"
    clock.now += timedelta(minutes=11)
    store.queue_requests([people("b@example.com")])
    (fresh,) = store.claim_requests("me", ["t1"])
    store.finish_requests("me", fresh.ids)
    assert [r.person for r in store.queued_requests()] == ["b@example.com"]


def test_the_same_person_waiting_twice_is_one_row(store: StateStore) -> None:
    store.queue_requests([people("a@example.com")])
    again = store.queue_requests([people("a@example.com", "b@example.com")])
    assert (again.added, again.coalesced) == (1, 1)
    assert sorted(r.person for r in store.queued_requests()) == ["a@example.com", "b@example.com"]
    # Once claimed (its run may already have read the person), a new change is a new row.
    store.claim_requests("me", ["t1"])
    later = store.queue_requests([people("a@example.com")])
    assert later.added == 1
    assert len(store.queued_requests()) == 3


def test_a_full_request_absorbs_the_people_waiting_for_its_target(store: StateStore) -> None:
    store.queue_requests([people("a@example.com"), people("z@example.com", target="t2")])
    store.queue_requests([Request("t1", "webhook:generic")])
    after = store.queue_requests([people("b@example.com")])
    assert after.coalesced == 1
    assert {(r.target, r.kind) for r in store.queued_requests()} == {
        ("t2", "email"),
        ("t1", "full"),
    }
    (claimed,) = store.claim_requests("me", ["t1"])
    assert claimed.full and not claimed.emails


def test_too_many_waiting_people_become_one_full_reconcile(location: str, clock: Clock) -> None:
    with StateStore.open(location, clock=clock, server_clock=False) as store:
        queue = WebhookQueue(store.db, max_pending=3)
        assert queue.put([people("a@x.example", "b@x.example")]).widened == ()
        result = queue.put([people("c@x.example", "d@x.example")])
        assert result.widened == ("t1",)
        assert [(r.kind, r.person) for r in queue.rows()] == [("full", "")]
        (claimed,) = queue.claim("me", ["t1"])
        assert claimed.full
    assert MAX_PENDING_PER_TARGET >= 1000


def test_a_dead_replicas_claims_return_once_its_registration_expired(
    store: StateStore, other: StateStore, clock: Clock
) -> None:
    replicas = ReplicaTable(store.db)
    replicas.heartbeat("dying", "daemon on host-a", timedelta(seconds=0.3))
    replicas.heartbeat("alive", "daemon on host-b", timedelta(hours=1))
    store.queue_requests([people("a@example.com")])
    (first,) = store.claim_requests("dying", ["t1"])
    # While it is live, its claim stands: it will run them.
    assert not other.requests_waiting(["t1"], claimer="alive")
    assert other.claim_requests("alive", ["t1"]) == []
    # It stops renewing (kill -9, a partition): after the TTL the rows are anyone's.
    clock.now += timedelta(seconds=1)
    time.sleep(0.4)  # PostgreSQL's clock is the server's
    assert other.requests_waiting(["t1"], claimer="alive")
    (taken,) = other.claim_requests("alive", ["t1"])
    assert taken.ids == first.ids and taken.emails == {"a@example.com"}
    # The old claimer, if it was only paused, cannot mark them done any more.
    assert store.finish_requests("dying", first.ids) == 0
    assert other.finish_requests("alive", taken.ids) == 1
    assert not store.requests_waiting()


def test_concurrent_claims_never_take_the_same_row(location: str, clock: Clock) -> None:
    """Two replicas claiming at the same moment (each thinks it holds the target, as
    during a handover): every row goes to exactly one."""
    emails = [f"p{i}@example.com" for i in range(200)]
    with StateStore.open(location, clock=clock, server_clock=False) as writer:
        for name in ("a", "b"):
            ReplicaTable(writer.db).heartbeat(name, f"daemon {name}", timedelta(hours=1))
        for start in range(0, 200, 20):
            writer.queue_requests([people(*emails[start : start + 20])])
    results: dict[str, list[set[str]]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claimer(name: str) -> None:
        with StateStore.open(location, clock=clock, server_clock=False) as mine:
            barrier.wait()
            for claimed in mine.claim_requests(name, ["t1"]):
                results[name].append(set(claimed.emails))

    threads = [threading.Thread(target=claimer, args=(n,)) for n in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    a = set().union(*results["a"])
    b = set().union(*results["b"])
    assert a | b == set(emails)
    assert not a & b
    with StateStore.open(location, clock=clock, server_clock=False) as reader:
        owners = {r.claimed_by for r in reader.queued_requests()}
    assert owners <= {"a", "b"} and None not in owners


def test_postgresql_listeners_hear_what_another_replica_queued(
    location: str, store: StateStore, other: StateStore
) -> None:
    listener = other.queue_listener()
    if location.startswith("postgresql://"):
        assert listener is not None
        try:
            assert listener.wait(0.05) == []
            store.queue_requests([people("a@example.com", target="t2")])
            assert listener.wait(5) == ['["t2"]']
        finally:
            listener.close()
    else:
        assert listener is None  # one process: it knows what it queued


def test_only_parsed_ids_are_stored(store: StateStore) -> None:
    store.queue_requests([people("a@example.com")])
    with store.db.read() as session:
        columns = set(session.query("SELECT * FROM webhook_queue")[0].values())
    assert columns == {
        "id",
        "target",
        "kind",
        "person",
        "triggered_by",
        "received_at",
        "claimed_by",
        "claimed_at",
        "done",
        "done_at",
    }
