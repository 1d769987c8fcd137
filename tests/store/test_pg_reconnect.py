"""Red team: the state server's connection ends inside a write transaction (a server
restart, a failover, a proxy's idle timeout, a network blip), against the suite's real
PostgreSQL behind a TCP relay that cuts it at a chosen moment.

Harms: a daemon that fails a whole run for a blip (a person left without access, or
with access they lost, until the next run), a transaction written twice when the cut
came while its COMMIT was under way (journal rows twice, an invitation recorded twice),
a redo that writes over what changed meanwhile, and a replica whose lease was taken
over or ran out during the cut writing through it (two writers of one organization).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from orgsync.core.errors import StateError
from orgsync.store import StateStore
from orgsync.store.leases import LeaseLost
from tests.postgres import PASSWORD, USER, PostgresServer


class CutRelay:
    """A TCP relay to PostgreSQL that ends every connection through it: now
    (`cut`), or when the client sends a statement holding `marker` (`cut_at`): before
    the server sees it, or after the server answered it, its answer dropped; or ends
    the client's side only, the statement lost and the server's side left open (`hold`:
    a network gone quiet, as the server sees it)."""

    def __init__(self, upstream: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._upstream = upstream
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._trap: tuple[bytes, bool | None] | None = None
        self._held: list[socket.socket] = []
        self._swallow: set[int] = set()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._upstream))
            pair = (client, server)
            with self._lock:
                self._pairs.append(pair)
            for source, sink, up in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, up, pair), daemon=True
                ).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        up: bool,
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                self._close(pair)
                return
            with self._lock:
                trap = self._trap
                if up and trap is not None and trap[0] in data:
                    self._trap = None
                    if trap[1] is None:  # held: the client is cut, the server waits on
                        self._held.append(pair[1])
                        self._close((pair[0],))
                        return
                    if not trap[1]:  # before: the server never sees it
                        self._close(pair)
                        return
                    self._swallow.add(id(pair))
                elif not up and id(pair) in self._swallow:
                    # The server's answer to the trapped statement: dropped.
                    self._swallow.discard(id(pair))
                    self._close(pair)
                    return
            try:
                sink.sendall(data)
            except OSError:
                return

    def _close(self, pair: tuple[socket.socket, ...]) -> None:
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.cuts += 1

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._close(pair)

    def cut_at(self, marker: bytes, *, answered: bool | None) -> None:
        with self._lock:
            self._trap = (marker, answered)

    def close(self) -> None:
        self._listener.close()
        self.cut()
        for sock in self._held:
            sock.close()


@pytest.fixture
def relay(postgres: PostgresServer) -> Iterator[CutRelay]:
    relay = CutRelay(postgres.port)
    yield relay
    relay.close()


@pytest.fixture
def store(postgres_url: str, relay: CutRelay) -> Iterator[StateStore]:
    url = f"postgresql://{USER}@127.0.0.1:{relay.port}/{_database(postgres_url)}?sslmode=disable"
    with StateStore.open(url, password=PASSWORD) as opened:
        with opened.db.write() as session:
            # No key: a row written twice shows as two.
            session.execute("CREATE TABLE scratch (n integer)")
        yield opened


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", 1)[0]


def _rows(store: StateStore) -> list[int]:
    with store.db.read() as session:
        return [row.integer("n") for row in session.query("SELECT n FROM scratch ORDER BY n")]


def test_a_cut_between_and_inside_transactions_costs_nothing(
    store: StateStore, relay: CutRelay
) -> None:
    """A cut between two transactions, then one inside a transaction (after a write,
    before the next): the block goes on, on a new connection where its first write
    is redone, and each row is there once."""
    with store.db.write() as session:
        session.execute("INSERT INTO scratch (n) VALUES (1)")
    relay.cut()
    with store.db.write() as session:
        session.execute("INSERT INTO scratch (n) VALUES (2)")
        assert session.scalar("SELECT count(*) FROM scratch") == 2
        relay.cut()
        session.execute("INSERT INTO scratch (n) VALUES (3)")
    assert relay.cuts >= 2
    assert _rows(store) == [1, 2, 3]


def test_a_redo_that_finds_the_database_changed_writes_nothing(
    store: StateStore, relay: CutRelay, postgres: PostgresServer
) -> None:
    """What the block read before the cut was changed by someone else during it: the
    block's decision may be wrong now, so the redo is given up and nothing written."""
    with store.db.write() as session:
        session.execute("INSERT INTO scratch (n) VALUES (1)")

    def next_number() -> None:
        with store.db.write() as session:
            seen = session.scalar("SELECT max(n) FROM scratch")
            relay.cut()
            with postgres.admin(_database(store.location)) as admin:
                admin.execute("INSERT INTO scratch (n) VALUES (5)")
            session.execute("INSERT INTO scratch (n) VALUES (?)", (int(str(seen)) + 1,))

    with pytest.raises(StateError, match=r"changed when it was redone.*nothing of it"):
        next_number()
    assert _rows(store) == [1, 5]


@pytest.mark.parametrize(
    "answered", [True, False, None], ids=["committed", "never-sent", "lost-on-the-way"]
)
def test_a_cut_during_commit_writes_the_transaction_once(
    store: StateStore, relay: CutRelay, answered: bool
) -> None:
    """The connection ends while COMMIT is under way: whether the server committed is
    unknown to orgsync. It asks the server (by the transaction's id) on a new
    connection: committed (the answer was lost), it is not redone; never received, it
    is redone; lost on the way while the server's session lives on (still "in
    progress"), that session is ended, and then it is redone. Either way the row is
    there once, and the block's caller goes on."""
    relay.cut_at(b"COMMIT", answered=answered)
    with store.db.write() as session:
        session.execute("INSERT INTO scratch (n) VALUES (7)")
    assert relay.cuts >= 1
    assert _rows(store) == [7]


def test_a_lease_taken_over_during_the_cut_is_not_written_through(
    store: StateStore, relay: CutRelay, postgres: PostgresServer
) -> None:
    """A fenced write (the lease checked first) is cut; meanwhile another replica takes
    the lease over: the redo checks the lease again, finds it lost, writes nothing."""
    taken = store.leases.take("t", "me", timedelta(seconds=30))
    assert taken is not None

    def fenced_write() -> None:
        with store.db.write() as session:
            store.leases.check_fence(session, "t", taken.record.token)
            session.execute("INSERT INTO scratch (n) VALUES (1)")
            relay.cut()
            with postgres.admin(_database(store.location)) as admin:
                admin.execute("UPDATE leases SET holder = 'other', fence = fence + 1")
            session.execute("INSERT INTO scratch (n) VALUES (2)")

    with pytest.raises(LeaseLost, match="other took it over"):
        fenced_write()
    assert _rows(store) == []


def test_a_lease_renewed_during_the_cut_is_written_through_once(
    store: StateStore, relay: CutRelay, postgres: PostgresServer
) -> None:
    """The lease's own renewal (another connection of the same replica) moves its
    expiry while the fenced write is cut: still the replica's lease, so the redo goes
    on, and each row is there once."""
    taken = store.leases.take("t", "me", timedelta(seconds=30))
    assert taken is not None
    with store.db.write() as session:
        store.leases.check_fence(session, "t", taken.record.token)
        session.execute("INSERT INTO scratch (n) VALUES (1)")
        relay.cut()
        with postgres.admin(_database(store.location)) as admin:
            # What a renewal writes: a later expiry, the same holder and token.
            admin.execute("UPDATE leases SET expires_at = '2999-01-01T00:00:00.000000+00:00'")
        session.execute("INSERT INTO scratch (n) VALUES (2)")
    assert _rows(store) == [1, 2]


def test_a_lease_that_expired_during_the_cut_is_not_written_through(
    store: StateStore, relay: CutRelay
) -> None:
    """The lease row is unchanged, but by the time the write is redone the lease has
    expired by the server's clock: the fencing check, run again, refuses the write."""
    now = store.leases.now()
    ttl = timedelta(seconds=1)
    taken = store.leases.take("t", "me", ttl, now=now - ttl + timedelta(milliseconds=700))
    assert taken is not None

    def fenced_write() -> None:
        with store.db.write() as session:
            store.leases.check_fence(session, "t", taken.record.token)
            session.execute("INSERT INTO scratch (n) VALUES (1)")
            relay.cut()
            time.sleep(0.8)  # the server's clock, read in this block, would redo it
            session.execute("INSERT INTO scratch (n) VALUES (2)")

    with pytest.raises(LeaseLost, match="expired"):
        fenced_write()
    assert _rows(store) == []


def test_a_cut_inside_the_lease_check_runs_the_check_again(
    store: StateStore, relay: CutRelay
) -> None:
    """The connection ends on the fencing check's own read (it never reaches the
    server): the check is run again on the new connection, after the writes before it
    are redone, and the block goes on."""
    taken = store.leases.take("t", "me", timedelta(seconds=30))
    assert taken is not None
    with store.db.write() as session:
        session.execute("INSERT INTO scratch (n) VALUES (1)")
        relay.cut_at(b"FOR KEY SHARE", answered=False)
        store.leases.check_fence(session, "t", taken.record.token)
        session.execute("INSERT INTO scratch (n) VALUES (2)")
    assert relay.cuts >= 1
    assert _rows(store) == [1, 2]


def test_a_server_restart_inside_a_transaction_is_waited_for_and_redone(
    postgres: PostgresServer, postgres_url: str
) -> None:
    """The server itself restarts (a fast shutdown ends every session) in the middle of
    a write transaction, and is still starting up when orgsync reconnects: it waits a
    moment, tries again, redoes the transaction, and each row is there once."""
    with StateStore.open(postgres_url, password=PASSWORD) as store:
        with store.db.write() as session:
            session.execute("CREATE TABLE scratch (n integer)")
        with store.db.write() as session:
            session.execute("INSERT INTO scratch (n) VALUES (1)")
            # -W: back once the server is stopped and starting, not once it is ready.
            log = str(postgres.folder / "server.log")
            restarted = postgres.pg_ctl("restart", "-m", "fast", "-W", "-l", log)
            assert restarted.returncode == 0, restarted.stderr
            session.execute("INSERT INTO scratch (n) VALUES (2)")
        assert _rows(store) == [1, 2]
