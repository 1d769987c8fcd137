"""Red team: a captured webhook delivery sent again, where the daemon's memory cannot see it.

The daemon refuses a delivery it has seen (409 for the generic signed webhook; Okta's and
Graph's acknowledged without running). That memory was the process's own, so the same
delivery was taken again after a restart, or by another replica sharing the state
database. How it could hurt an administrator, each tried below against the daemon's
webhook app served over loopback (uvicorn, as the daemon serves it), its relay writing to
a real state database (a SQLite file, and the suite's PostgreSQL):

- extra runs an attacker chooses: a captured signed delivery replayed after a restart, or
  to the other replica, runs its reconcile again (and again, one per replica and restart);
- a delivery run twice: the sender's own redelivery reaching two replicas at once;
- lost reconciles: a delivery answered 503 (the database failed mid-write) remembered as
  seen anyway, so the sender's retry is refused as a replay and never runs;
- a state database growing without bound under a flood of valid deliveries;
- a leaked secret: the body, signature secret, Okta authorization or Graph clientState
  stored to recognise a delivery;
- a forged Graph notification costing a full parse of a mebibyte before its clientState
  is looked at.

All were broken but the last two (nothing was stored; the parse came first) and are fixed:
`store/deliveries.py` records each delivery's keys, as digests, in the transaction that
queues it (`Relay.submit`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette

from orgsync.daemon.http import HttpServer
from orgsync.daemon.queue import Mailbox
from orgsync.daemon.relay import Relay
from orgsync.daemon.webhooks import (
    GENERIC_REMEMBERED,
    VENDOR_REMEMBERED,
    WebhookReceiver,
    WebhookSecrets,
    sign,
)
from orgsync.store import StateStore
from orgsync.store.deliveries import SeenDeliveries
from tests.leaks import traces
from tests.postgres import PASSWORD, PostgresServer

SECRET = b"generic-signing-secret-0123456789"
OKTA = "okta-authorization-value-0123456789"
STATE = "graph-client-state-0123456789"
TARGET = "openai-test"


@dataclass
class Replica:
    """One daemon's webhook side: receiver, relay and state store, served on loopback."""

    location: str
    store: StateStore
    receiver: WebhookReceiver
    server: HttpServer
    base: str
    http: httpx.Client
    now: Callable[[], float]
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    queued: Counter[tuple[str, str]] = field(default_factory=Counter)

    def generic(self, document: dict[str, Any], *, at: float | None = None) -> httpx.Response:
        body = json.dumps(document).encode()
        header = sign(SECRET, int(self.now() if at is None else at), body)
        return self.http.post(
            f"{self.base}/webhooks/generic",
            content=body,
            headers={"X-Orgsync-Signature": header, "Content-Type": "application/json"},
        )

    def signed(self, body: bytes, header: str) -> httpx.Response:
        return self.http.post(
            f"{self.base}/webhooks/generic", content=body, headers={"X-Orgsync-Signature": header}
        )

    def okta(self, uuid: str, user: str) -> httpx.Response:
        return self.http.post(
            f"{self.base}/webhooks/okta",
            json=okta_event(uuid, user),
            headers={"Authorization": OKTA},
        )

    def entra(self, user: str, *, body: bytes | None = None) -> httpx.Response:
        content = body if body is not None else json.dumps(graph(user)).encode()
        return self.http.post(
            f"{self.base}/webhooks/entra",
            content=content,
            headers={"Content-Type": "application/json"},
        )

    def stop(self) -> None:
        self.server.stop()
        self.store.close()


def okta_event(uuid: str, user: str) -> dict[str, Any]:
    target = [{"id": user, "type": "User", "alternateId": f"{user}@example.com"}]
    return {"data": {"events": [{"uuid": uuid, "target": target}]}}


def graph(user: str, state: str = STATE) -> dict[str, Any]:
    return {
        "value": [
            {
                "subscriptionId": "sub-1",
                "clientState": state,
                "changeType": "updated",
                "resource": f"Users/{user}",
                "resourceData": {"@odata.type": "#Microsoft.Graph.User", "id": user},
                "tenantId": "tenant-1",
            }
        ]
    }


@dataclass
class Backend:
    location: str
    open_store: Callable[..., StateStore]
    execute: Callable[[str], None]
    """Run SQL on the database as an administrator would (a connection of its own)."""
    dump: Callable[[], str]
    """Everything the database holds, as text (SQLite: the file's bytes, WAL included)."""
    started: list[Replica] = field(default_factory=list)

    def replica(self, *, now: Callable[[], float] = time.time) -> Replica:
        """A daemon's webhook side on this database; a new one is a restart (no memory)."""
        store = self.open_store(now)
        counts: Counter[tuple[str, str]] = Counter()
        queued: Counter[tuple[str, str]] = Counter()
        relay = Relay(
            store=store,
            instance=f"replica-{len(self.started)}",
            mailboxes={TARGET: Mailbox()},
            runnable=list,
            count=lambda target, result: queued.update([(target, result)]),
        )
        receiver = WebhookReceiver(
            secrets=WebhookSecrets(SECRET, OKTA, STATE),
            enqueue=relay.submit,
            count=lambda kind, result: counts.update([(kind, result)]),
            known_targets=frozenset({TARGET}),
            clock=now,
        )
        server = HttpServer(Starlette(routes=receiver.routes()), "127.0.0.1", 0)
        host, port = server.start()
        replica = Replica(
            location=self.location,
            store=store,
            receiver=receiver,
            server=server,
            base=f"http://{host}:{port}",
            http=httpx.Client(timeout=20),
            now=now,
            counts=counts,
            queued=queued,
        )
        self.started.append(replica)
        return replica


def _sqlite_backend(folder: Path) -> Backend:
    path = folder / "state.db"

    def open_store(now: Callable[[], float]) -> StateStore:
        return StateStore.open(path, clock=lambda: datetime.fromtimestamp(now(), UTC))

    def execute(sql: str) -> None:
        with sqlite3.connect(path) as conn:
            conn.executescript(sql)

    def dump() -> str:
        files = [path, path.with_name(path.name + "-wal")]
        return "\n".join(f.read_bytes().decode("latin-1") for f in files if f.exists())

    return Backend(str(path), open_store, execute, dump)


def _postgres_backend(url: str) -> Backend:
    def open_store(now: Callable[[], float]) -> StateStore:
        if now is time.time:  # the server's clock, as replicas use it
            return StateStore.open(url, password=PASSWORD)
        return StateStore.open(
            url,
            password=PASSWORD,
            clock=lambda: datetime.fromtimestamp(now(), UTC),
            server_clock=False,
        )

    def execute(sql: str) -> None:
        with psycopg.connect(url, password=PASSWORD, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # our own statements

    def dump() -> str:
        with psycopg.connect(url, password=PASSWORD) as conn:
            tables = [
                str(r[0])
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"
                )
            ]
            return "\n".join(
                repr(row)
                for table in tables
                for row in conn.execute(f'SELECT * FROM "{table}"')  # type: ignore[arg-type]
            )

    return Backend(url, open_store, execute, dump)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """One state database per backend for the module; every test uses ids of its own."""
    if request.param == "sqlite":
        made = _sqlite_backend(tmp_path_factory.mktemp("replay"))
        name = None
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres")
        name = postgres.new_database("replay")
        made = _postgres_backend(postgres.url(name))
    try:
        yield made
    finally:
        for replica in made.started:
            replica.stop()
            replica.http.close()
        if name is not None:
            postgres.drop_database(name)


@pytest.fixture
def backend_(backend: Backend) -> Iterator[Backend]:
    """The module's backend, no request waiting (another test's served); the replicas a
    test started are stopped after it."""
    first = len(backend.started)
    with backend.open_store(time.time) as store:
        for claim in store.claim_requests("holder", [TARGET]):
            store.finish_requests("holder", claim.ids)
    yield backend
    for replica in backend.started[first:]:
        replica.stop()
        replica.http.close()
    del backend.started[first:]


def waiting(replica: Replica) -> bool:
    return replica.store.requests_waiting([TARGET])


def serve_everything(replica: Replica) -> None:
    """What the holder of the target does: claim every waiting request and finish it,
    so that a request queued again would show as a new waiting row."""
    claims = replica.store.claim_requests("holder", [TARGET])
    for claim in claims:
        replica.store.finish_requests("holder", claim.ids)


def test_a_replay_after_a_restart_is_refused(backend_: Backend) -> None:
    """The three kinds, delivered once, then sent again to the same daemon restarted (a
    new process: nothing in memory) on the same state database: the generic one is
    refused with 409, Okta's and Graph's acknowledged as duplicates; nothing is queued."""
    first = backend_.replica()
    generic = {"id": "restart-1", "emails": ["ada@example.com"]}
    signed_at = int(time.time())
    assert first.generic(generic, at=signed_at).status_code == 202
    assert first.okta("restart-uuid-1", "00u-restart").status_code == 204
    assert first.entra("restart-user").status_code == 202
    assert first.counts == {("generic", "accepted"): 1, ("okta", "accepted"): 1,
                            ("entra", "accepted"): 1}  # fmt: skip
    serve_everything(first)
    first.stop()

    again = backend_.replica()
    replayed = again.generic(generic, at=signed_at)
    assert replayed.status_code == 409, replayed.text
    assert replayed.json()["error"] == "replay"
    assert again.okta("restart-uuid-1", "00u-restart").status_code == 204
    assert again.entra("restart-user").status_code == 202
    assert again.counts == {("generic", "replay"): 1, ("okta", "duplicate"): 1,
                            ("entra", "duplicate"): 1}  # fmt: skip
    assert again.queued == Counter()
    assert not waiting(again)
    # A new delivery is still taken.
    assert again.generic({"id": "restart-2"}).status_code == 202


def test_a_replay_to_another_replica_is_refused(backend_: Backend) -> None:
    """Two replicas on one database: a delivery one took, sent to the other, is refused
    (a captured signed request without an id too: its signature is its key)."""
    one, other = backend_.replica(), backend_.replica()
    body = json.dumps({"emails": ["grace@example.com"]}).encode()
    header = sign(SECRET, int(time.time()), body)
    assert one.signed(body, header).status_code == 202
    assert one.okta("replica-uuid-1", "00u-replica").status_code == 204
    assert other.entra("replica-user").status_code == 202
    serve_everything(one)

    refused = other.signed(body, header)
    assert refused.status_code == 409, refused.text
    assert other.okta("replica-uuid-1", "00u-replica").status_code == 204
    assert one.entra("replica-user").status_code == 202
    assert other.counts == {("generic", "replay"): 1, ("okta", "duplicate"): 1,
                            ("entra", "accepted"): 1}  # fmt: skip
    assert one.counts == {("generic", "accepted"): 1, ("okta", "accepted"): 1,
                          ("entra", "duplicate"): 1}  # fmt: skip
    assert not waiting(one)


def at_once(send: Callable[[Replica], httpx.Response], replicas: list[Replica]) -> list[int]:
    """`send` to every replica at the same moment (one thread each, a barrier)."""
    barrier = threading.Barrier(len(replicas))
    answers: list[int] = []

    def deliver(replica: Replica) -> None:
        barrier.wait()
        answers.append(send(replica).status_code)

    threads = [threading.Thread(target=deliver, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == len(replicas), answers
    return answers


def test_the_same_delivery_to_two_replicas_at_once_runs_once(backend_: Backend) -> None:
    """Each of 12 deliveries (four of each kind) sent to two replicas at the same moment
    (a barrier, two threads): one replica takes it, the other refuses or acknowledges it
    as a duplicate, whichever wins."""
    replicas = [backend_.replica(), backend_.replica()]
    signed_at = int(time.time())
    sends: list[Callable[[Replica], httpx.Response]] = []
    for i in range(4):
        sends.append(lambda r, i=i: r.generic({"id": f"race-{i}"}, at=signed_at))
        sends.append(lambda r, i=i: r.okta(f"race-uuid-{i}", f"00u-race-{i}"))
        sends.append(lambda r, i=i: r.entra(f"race-user-{i}"))
    for send in sends:
        answers = at_once(send, replicas)
        assert sorted(answers) in ([202, 409], [204, 204], [202, 202]), answers
    taken = sum((r.counts for r in replicas), Counter())
    assert taken == {
        ("generic", "accepted"): 4,
        ("generic", "replay"): 4,
        ("okta", "accepted"): 4,
        ("okta", "duplicate"): 4,
        ("entra", "accepted"): 4,
        ("entra", "duplicate"): 4,
    }
    assert sum(r.queued[(TARGET, "queued")] for r in replicas) == 12


def test_a_delivery_refused_with_503_is_taken_on_retry_and_then_only(backend_: Backend) -> None:
    """The database fails the queue write after the delivery's keys were recorded (a
    trigger refusing inserts into the queue, as a full disk or a revoked grant would):
    503, and nothing of the delivery remembered. Its retry, to the other replica, is
    taken; once taken, a replay of it is refused, wherever it goes."""
    one, other = backend_.replica(), backend_.replica()
    if backend_.location.startswith("postgresql"):
        backend_.execute(
            "CREATE FUNCTION refuse_queue() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the queue is refusing writes'; END $$; "
            "CREATE TRIGGER refuse_queue BEFORE INSERT ON webhook_queue "
            "FOR EACH ROW EXECUTE FUNCTION refuse_queue()"
        )
        unblock = "DROP TRIGGER refuse_queue ON webhook_queue; DROP FUNCTION refuse_queue()"
    else:
        backend_.execute(
            "CREATE TRIGGER refuse_queue BEFORE INSERT ON webhook_queue "
            "BEGIN SELECT RAISE(ABORT, 'the queue is refusing writes'); END"
        )
        unblock = "DROP TRIGGER refuse_queue"
    generic = {"id": "retry-1", "emails": ["linus@example.com"]}
    signed_at = int(time.time())
    try:
        failed = [
            one.generic(generic, at=signed_at),
            one.okta("retry-uuid-1", "00u-retry"),
            one.entra("retry-user"),
        ]
    finally:
        backend_.execute(unblock)
    assert [r.status_code for r in failed] == [503, 503, 503], [r.text for r in failed]
    assert all(r.headers["retry-after"] == "30" for r in failed)

    retried = [
        other.generic(generic, at=signed_at),
        other.okta("retry-uuid-1", "00u-retry"),
        other.entra("retry-user"),
    ]
    assert [r.status_code for r in retried] == [202, 204, 202], [r.text for r in retried]
    assert other.queued[(TARGET, "queued")] == 3
    serve_everything(other)
    # Taken now: a replay of it is refused, by the replica that answered 503 too.
    assert one.generic(generic, at=signed_at).status_code == 409
    assert one.okta("retry-uuid-1", "00u-retry").status_code == 204
    assert one.entra("retry-user").status_code == 202
    assert one.counts[("okta", "duplicate")] == one.counts[("entra", "duplicate")] == 1
    assert not waiting(one)


def test_a_key_past_its_window_is_taken_again_and_expired_rows_are_pruned(
    backend_: Backend,
) -> None:
    """A day on a clock of the test's: a generic delivery's key expires after
    GENERIC_REMEMBERED (its id may be sent again, signed anew), Okta's and Graph's after
    VENDOR_REMEMBERED, and the next delivery after that deletes every expired row."""
    start = time.time()
    clock = [start]
    first = backend_.replica(now=lambda: clock[0])
    assert first.generic({"id": "window-1"}).status_code == 202
    assert first.okta("window-uuid-1", "00u-window").status_code == 204
    assert first.entra("window-user").status_code == 202
    first.stop()

    clock[0] = start + GENERIC_REMEMBERED + 1
    later = backend_.replica(now=lambda: clock[0])
    assert later.generic({"id": "window-1"}).status_code == 202  # its window is over
    assert later.okta("window-uuid-1", "00u-window").status_code == 204
    assert later.counts == {("generic", "accepted"): 1, ("okta", "duplicate"): 1}
    later.stop()

    clock[0] = start + VENDOR_REMEMBERED + 1
    day_after = backend_.replica(now=lambda: clock[0])
    assert day_after.entra("window-user").status_code == 202
    assert day_after.counts == {("entra", "accepted"): 1}  # taken again, a day later
    # That recording pruned (the first of a process does): only rows still in their
    # window are left, every one of them recorded by this last delivery.
    rows = day_after.store.seen_deliveries().rows()
    assert rows, "nothing recorded"
    assert all(row.expires_at.timestamp() > clock[0] for row in rows)
    assert {row.kind for row in rows} == {"entra"}
    assert all(row.seen_at.timestamp() == pytest.approx(clock[0], abs=1) for row in rows)


def test_the_table_is_capped_per_kind_dropping_what_expires_first(backend_: Backend) -> None:
    """A flood of valid deliveries: beyond `max_rows` live rows of a kind, a prune keeps
    the ones expiring last."""
    clock = [time.time() + 10 * VENDOR_REMEMBERED]  # after every other test's rows
    with backend_.open_store(lambda: clock[0]) as store:
        seen = SeenDeliveries(store.db, max_rows=3, prune_every=timedelta(hours=1))
        with store.db.write() as session:
            seen._prune(session, store.db.clock())  # the other tests' rows, expired
        for i in range(5):
            clock[0] += 1
            with store.db.write() as session:
                fresh = seen.record(session, "okta", [f"flood-{i}"], timedelta(hours=1))
                assert fresh == [f"flood-{i}"]
        assert len(seen.rows("okta")) == 5  # not due yet
        assert seen.prune() == 2
        kept = seen.rows("okta")
        assert [r.seen_at.timestamp() for r in kept] == pytest.approx(
            [clock[0] - 2, clock[0] - 1, clock[0]]
        )


def test_nothing_of_a_delivery_but_digests_is_stored(backend_: Backend) -> None:
    """The signature secret, Okta's authorization, Graph's clientState, and the deliveries'
    own ids, uuids, signatures and bodies: none is in the database, in any form."""
    replica = backend_.replica()
    event_id = "leak-check-event-id-4242"
    uuid = "leak-check-okta-uuid-4242"
    body = json.dumps({"id": event_id, "source_ids": ["leak-source-4242"]}).encode()
    header = sign(SECRET, int(time.time()), body)
    anonymous = json.dumps({"emails": ["leak-anon@example.com"]}).encode()
    anonymous_header = sign(SECRET, int(time.time()), anonymous)
    assert replica.signed(body, header).status_code == 202
    assert replica.signed(anonymous, anonymous_header).status_code == 202
    assert replica.okta(uuid, "00u-leak").status_code == 204
    assert replica.entra("leak-user").status_code == 202
    kinds = Counter(row.kind for row in replica.store.seen_deliveries().rows())
    assert kinds["generic"] >= 2 and kinds["okta"] >= 1 and kinds["entra"] >= 1
    stored = backend_.dump()
    signature = header.split("v1=")[1]
    anonymous_signature = anonymous_header.split("v1=")[1]
    for value in (SECRET.decode(), OKTA, STATE, event_id, uuid, signature, anonymous_signature):
        assert traces(value, stored) == [], value


def test_a_wrong_or_missing_graph_client_state_is_refused_before_the_parse(
    backend_: Backend,
) -> None:
    """A forged Graph notification is refused on its first clientState, before the body
    is parsed: a body that is not JSON past that point answers 401 (a parse would say
    400)."""
    replica = backend_.replica()
    forged = b'{"value": [{"clientState": "guess", "resource": "Users/x"}' + b"[" * 100
    missing = b'{"value": [{"resource": "Users/x"}' + b"[" * 100
    for body in (forged, missing):
        answer = replica.entra("x", body=body)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "bad_client_state"
    right = json.dumps(graph("first-state-user")).encode()[:-2] + b"[" * 100
    assert replica.entra("x", body=right).status_code == 400  # past it: parsed
    assert replica.counts == {("entra", "bad_client_state"): 2, ("entra", "malformed"): 1}
    # The look is a shortcut, not the check: a later notification's is still read.
    document = graph("later-user")
    document["value"].append(graph("later-user-2", state="guess")["value"][0])
    assert replica.entra("x", body=json.dumps(document).encode()).status_code == 401
    assert replica.queued == Counter()
