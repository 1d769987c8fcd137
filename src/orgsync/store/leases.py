"""Leases: which process writes a target now, with a fencing token; and the replicas.

A sync writes a target (calls its API, journals what it does) only while it holds the
target's lease. Owns the `leases` and `replicas` tables.

- **The lease row** (`leases`: target, holder, acquired_at, expires_at, fence) names the
  holder, until when it holds the target unless it renews, and a fencing token that grows
  by one each time another holder takes the target. It is never deleted: a release makes
  it expire now, so the token of a target only ever grows.
- **Who decides.** On SQLite (one host) the kernel lock beside the database decides
  (`writer_lock.py`: the kernel frees it the instant its process dies, and a frozen
  process keeps it); the row reports the holder and is taken over at once by the next
  lock holder. On PostgreSQL (`StateDB.leases_expire`: several hosts) the row decides:
  taken in one transaction that locks it (`SELECT ... FOR UPDATE SKIP LOCKED`: a row
  locked by another transaction is busy, never waited for) only if it is free or
  expired by the server's clock, renewed every third of the TTL, and lost by time even
  while the holder's connection stays open, so a replica frozen (SIGSTOP, a long pause)
  or cut off loses its targets after the TTL and another takes them over.
- **Fencing.** Every write of a run goes through a store fenced by its lease
  (`StateStore.fenced`): each write transaction first checks, holding the row (`FOR
  KEY SHARE`: a takeover skips the row meanwhile, a renewal does not wait), that the
  token is still the holder's and, on PostgreSQL, that the lease has not expired by the
  server's clock; otherwise it raises `LeaseLost` and writes nothing. And
  before every target call the applier asks `HeldLease.check`: the token not seen taken
  over and, on PostgreSQL, the lease's expiry not passed by this process's monotonic
  clock, counted from before the request that took or last renewed it, less a safety
  margin. So a replica resumed after another took over calls nothing and records nothing.
  What no check can close: a call already sent when the process froze reaches the target
  late; the next holder reads the organization fresh and adopts what it finds.
- **Replicas.** A daemon registers itself (`replicas`: instance, holder, expires_at,
  renewed with its leases); the fair share of a replica is the targets divided by the
  live replicas, rounded up (`LeaseKeeper.fair_share`), and it takes no more leases at
  once than that, so N replicas share the targets and a dead one's share goes back to
  the others once its leases and registration expire.

Times are the server's on PostgreSQL (`Dialect.now_epoch`), so replicas on hosts whose
clocks disagree still agree on who holds what; the store's clock on SQLite.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from orgsync.core.errors import StateError
from orgsync.store.db import BorrowedDB, Row, Session, StateDB, encode_time, server_now
from orgsync.store.writer_lock import WriterLock

log = structlog.get_logger(__name__)

MAX_MARGIN = timedelta(seconds=5)
RELEASED = ""
"""The holder of a lease given up (its row stays, so that its token only grows)."""


class LeaseLost(StateError):
    """The lease of a target is no longer this holder's (taken over, or expired): a write
    was refused, nothing was written, and the run must call the target no more."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"lease of {target} lost: {reason}; nothing more was done")
        self.target = target
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """Who holds a target's lease (e.g. "daemon on host (pid 42, instance 1a2b3c4d)"), since
    when, until when unless renewed, and its fencing token."""

    target: str
    holder: str
    acquired_at: datetime
    expires_at: datetime
    token: int = 0


class TargetBusy(StateError):
    """Another process holds the target's lease; nothing was read or written."""

    def __init__(self, target: str, lease: LeaseRecord | None) -> None:
        if lease is not None:
            who = f"{lease.holder}, holding it since {lease.acquired_at:%Y-%m-%d %H:%M:%S}Z"
        else:
            who = "a process that has not recorded itself yet"
        super().__init__(
            f"another orgsync is syncing {target}: {who}; nothing was done, try again "
            "later (the lock is released when that run ends or its process dies)"
        )
        self.lease = lease


@dataclass(frozen=True, slots=True)
class Taken:
    """A lease just taken: ours now, and the other holder's row it replaced, if any."""

    record: LeaseRecord
    previous: LeaseRecord | None


def holder_label(who: str, instance: str) -> str:
    """A lease holder's name, for people: the pid is as this process sees itself, and is
    never used to decide anything (see `orgsync.store.writer_lock`)."""
    return f"{who} on {socket.gethostname()} (pid {os.getpid()}, instance {instance})"


def margin_of(ttl: timedelta) -> timedelta:
    """How long before its expiry a holder stops writing: a quarter of the TTL, at most
    5 s (room for a request in flight and for scheduling delays)."""
    return min(ttl / 4, MAX_MARGIN)


# --------------------------------------------------------------------------- the tables


def _record(target: str, row: Row) -> LeaseRecord:
    return LeaseRecord(
        target=target,
        holder=row.text("holder"),
        acquired_at=row.time("acquired_at"),
        expires_at=row.time("expires_at"),
        token=row.integer("fence"),
    )


_COLUMNS = "holder, acquired_at, expires_at, fence"


def _read(session: Session, target: str) -> LeaseRecord | None:
    """`target`'s lease row, expired or not; None: never taken."""
    row = session.one(
        f"SELECT {_COLUMNS} FROM leases WHERE target = ?",  # noqa: S608 - our names
        (target,),
    )
    return None if row is None else _record(target, row)


class LeaseTable:
    """The `leases` rows (module docstring); each method is one transaction."""

    def __init__(self, db: StateDB) -> None:
        self._db = db

    def now(self) -> datetime:
        """The leases' clock: the server's on PostgreSQL, the store's on SQLite."""
        with self._db.read() as session:
            return server_now(self._db, session)

    def take(
        self, target: str, holder: str, ttl: timedelta, now: datetime | None = None
    ) -> Taken | None:
        """Make `holder` the lease holder; None while another holder's unexpired lease
        decides (PostgreSQL). On SQLite, call only while holding the writer lock: the
        row of another holder is then a dead process's, taken over at once.

        Taking our own lease again extends it and keeps its token; taking another's
        raises the token by one.
        """
        _check_ttl(ttl)
        by_time = self._db.leases_expire
        with self._db.write() as session:
            at = now if now is not None else server_now(self._db, session)
            stamp, expires = encode_time(at), encode_time(at + ttl)
            if by_time:
                # Another's unexpired lease: busy, without locking its row (a lock held
                # here by a starved process would hold up its holder's renewals).
                peek = session.one(
                    f"SELECT {_COLUMNS} FROM leases WHERE target = ?",  # noqa: S608
                    (target,),
                )
                if peek is not None:
                    seen = _record(target, peek)
                    if seen.holder not in {holder, RELEASED} and seen.expires_at > at:
                        return None
            row = session.one(
                f"SELECT {_COLUMNS} FROM leases WHERE target = ?{session.dialect.lock_row}",  # noqa: S608
                (target,),
            )
            # Locked by another transaction (a takeover, a fenced write): busy now, rather
            # than wait for it on the connection the renewals need.
            if (
                row is None
                and session.dialect.lock_row
                and session.scalar("SELECT 1 FROM leases WHERE target = ?", (target,))
            ):
                return None
            if row is None:
                # Two replicas inserting at once: one row wins, the other changes nothing.
                inserted = session.execute(
                    "INSERT INTO leases (target, holder, acquired_at, expires_at, fence) "
                    "VALUES (?, ?, ?, ?, 1) ON CONFLICT (target) DO NOTHING",
                    (target, holder, stamp, expires),
                )
                if inserted != 1:
                    return None
                return Taken(LeaseRecord(target, holder, at, at + ttl, 1), None)
            current = _record(target, row)
            if current.holder == holder:
                session.execute(
                    "UPDATE leases SET expires_at = ? WHERE target = ? AND fence = ?",
                    (expires, target, current.token),
                )
                return Taken(
                    LeaseRecord(target, holder, current.acquired_at, at + ttl, current.token),
                    None,
                )
            if by_time and current.expires_at > at:
                return None
            token = current.token + 1
            session.execute(
                "UPDATE leases SET holder = ?, acquired_at = ?, expires_at = ?, fence = ? "
                "WHERE target = ? AND fence = ?",
                (holder, stamp, expires, token, target, current.token),
            )
        return Taken(
            LeaseRecord(target, holder, at, at + ttl, token),
            None if current.holder == RELEASED else current,
        )

    def renew_all(self, holder: str, tokens: dict[str, int], ttl: timedelta) -> frozenset[str]:
        """Renew several leases in one transaction; returns the targets renewed (the
        others were taken over)."""
        _check_ttl(ttl)
        renewed: set[str] = set()
        with self._db.write() as session:
            expires = encode_time(server_now(self._db, session) + ttl)
            for target, token in sorted(tokens.items()):
                changed = session.execute(
                    "UPDATE leases SET expires_at = ? "
                    "WHERE target = ? AND holder = ? AND fence = ?",
                    (expires, target, holder, token),
                )
                if changed == 1:
                    renewed.add(target)
        return frozenset(renewed)

    def renew(
        self, target: str, holder: str, token: int, ttl: timedelta, now: datetime | None = None
    ) -> bool:
        """Extend the lease while its token is still `token`; False once another holder
        took it. A lease that expired but was not taken over is still ours: its token says
        nobody else held the target in between."""
        _check_ttl(ttl)
        with self._db.write() as session:
            at = now if now is not None else server_now(self._db, session)
            changed = session.execute(
                "UPDATE leases SET expires_at = ? WHERE target = ? AND holder = ? AND fence = ?",
                (encode_time(at + ttl), target, holder, token),
            )
        return changed == 1

    def release(self, target: str, holder: str, token: int) -> None:
        """Give the lease up: it expires now and names no holder (the row and its token
        stay); a no-op once another holder has it."""
        with self._db.write() as session:
            at = server_now(self._db, session)
            session.execute(
                "UPDATE leases SET holder = ?, expires_at = ? "
                "WHERE target = ? AND holder = ? AND fence = ? AND expires_at > ?",
                (RELEASED, encode_time(at), target, holder, token, encode_time(at)),
            )

    def mark(self, target: str) -> tuple[str, int] | None:
        """(holder, token) of `target`'s lease row, expired or not; None: never taken.
        A run compares it with the lease it then takes: any other holder in between may
        have written the target (`Engine.run`)."""
        with self._db.read() as session:
            record = _read(session, target)
        return None if record is None else (record.holder, record.token)

    def holder(self, target: str, now: datetime | None = None) -> LeaseRecord | None:
        """The lease of `target` unless it expired (released, or not renewed in time)."""
        with self._db.read() as session:
            at = now if now is not None else server_now(self._db, session)
            record = _read(session, target)
        return record if record is not None and record.expires_at > at else None

    def holders(self, now: datetime | None = None) -> dict[str, LeaseRecord]:
        """Every unexpired lease, by target."""
        with self._db.read() as session:
            at = now if now is not None else server_now(self._db, session)
            rows = session.query(
                f"SELECT target, {_COLUMNS} FROM leases WHERE expires_at > ? ORDER BY target",  # noqa: S608
                (encode_time(at),),
            )
        return {row.text("target"): _record(row.text("target"), row) for row in rows}

    def check_fence(self, session: Session, target: str, token: int) -> None:
        """Inside a write transaction: raise `LeaseLost` (the transaction then writes
        nothing) unless `token` still holds `target` (and, where leases expire by time,
        has not expired). The row is held until the transaction ends, so a takeover
        skips it while the write is under way, or the write sees the takeover.

        Run again, as a whole, if the transaction is redone on a new connection
        (`Session.rerun`): the lease must still be ours, unexpired, by then; a renewal
        in between (a later expiry) is no reason to give the redo up."""
        session.rerun(lambda again: self._check_fence(again, target, token))

    def _check_fence(self, session: Session, target: str, token: int) -> None:
        row = session.one(
            f"SELECT {_COLUMNS} FROM leases WHERE target = ?{session.dialect.share_row}",  # noqa: S608
            (target,),
        )
        if row is None:
            raise LeaseLost(target, "no lease row")
        current = _record(target, row)
        if current.token != token:
            raise LeaseLost(
                target, f"{current.holder} took it over (token {current.token} > {token})"
            )
        if self._db.leases_expire and current.expires_at <= server_now(self._db, session):
            raise LeaseLost(target, f"it expired at {current.expires_at:%H:%M:%S}Z")


@dataclass(frozen=True, slots=True)
class Replica:
    instance: str
    holder: str
    expires_at: datetime


class ReplicaTable:
    """The `replicas` rows: the daemons sharing the targets, each until its expiry."""

    def __init__(self, db: StateDB) -> None:
        self._db = db

    def heartbeat(self, instance: str, holder: str, ttl: timedelta) -> None:
        with self._db.write() as session:
            at = server_now(self._db, session)
            session.execute(
                "INSERT INTO replicas (instance, holder, seen_at, expires_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (instance) DO UPDATE SET "
                "seen_at = excluded.seen_at, expires_at = excluded.expires_at",
                (instance, holder, encode_time(at), encode_time(at + ttl)),
            )
            # A replica gone for a day is forgotten (its instance id never comes back).
            session.execute(
                "DELETE FROM replicas WHERE expires_at < ?", (encode_time(at - timedelta(days=1)),)
            )

    def leave(self, instance: str) -> None:
        with self._db.write() as session:
            session.execute("DELETE FROM replicas WHERE instance = ?", (instance,))

    def live(self) -> list[Replica]:
        with self._db.read() as session:
            at = server_now(self._db, session)
            rows = session.query(
                "SELECT instance, holder, expires_at FROM replicas WHERE expires_at > ? "
                "ORDER BY instance",
                (encode_time(at),),
            )
        return [
            Replica(row.text("instance"), row.text("holder"), row.time("expires_at"))
            for row in rows
        ]


def assign(target: str, instances: Iterable[str]) -> str:
    """The replica (instance) `target` falls to among `instances` (rendezvous hashing)."""
    return max(
        instances, key=lambda instance: hashlib.sha256(f"{target}\0{instance}".encode()).digest()
    )


def _check_ttl(ttl: timedelta) -> None:
    if ttl <= timedelta(0):
        raise ValueError(f"lease ttl must be positive, got {ttl}")


# --------------------------------------------------------------------------- one holder


class HeldLease:
    """A lease this process holds: its token, and whether it may still write.

    Safe to share between threads (the applier's, the renewal thread)."""

    def __init__(self, record: LeaseRecord, *, valid_for: timedelta | None, sent: float) -> None:
        self.target = record.target
        self.holder = record.holder
        self.token = record.token
        self.acquired_at = record.acquired_at
        self._guard = threading.Lock()
        self._deadline: float | None = None
        self._valid_for = valid_for
        self._lost: str | None = None
        self._extended(sent)

    def __repr__(self) -> str:
        return f"HeldLease({self.target!r}, token={self.token}, lost={self._lost!r})"

    def _extended(self, sent: float) -> None:
        """Renewed by a request sent at `sent` (monotonic): valid until TTL - margin after."""
        if self._valid_for is None:
            return
        with self._guard:
            self._deadline = sent + self._valid_for.total_seconds()

    def lose(self, reason: str) -> None:
        with self._guard:
            if self._lost is None:
                self._lost = reason

    @property
    def lost(self) -> str | None:
        """Why the lease is no longer ours, or None while it may be."""
        with self._guard:
            deadline = self._deadline
            if self._lost is None and deadline is not None and time.monotonic() >= deadline:
                self._lost = "not renewed in time (its expiry, less the safety margin, passed)"
            return self._lost

    @property
    def valid(self) -> bool:
        return self.lost is None

    def check(self) -> None:
        """Raise `LeaseLost` unless this process may still write the target (asked before
        every call the applier makes, and before every fenced write)."""
        reason = self.lost
        if reason is not None:
            raise LeaseLost(self.target, reason)


# --------------------------------------------------------------------------- the keeper


class LeaseKeeper:
    """One holder's leases on one state database: take, renew (every third of the TTL on
    one thread), release, and say which targets it holds now.

    `holder` names this process for people ("daemon on host (pid 42, instance ab12cd34)");
    `instance` is its id among the replicas (`join`). Safe to share between threads.
    """

    def __init__(
        self,
        db: StateDB,
        holder: str,
        ttl: timedelta,
        *,
        instance: str,
        on_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        _check_ttl(ttl)
        self._db = db
        # A holder frozen inside a transaction must not keep its lease row locked past
        # its lease (PostgreSQL: see `bound_idle_transactions`).
        db.bound_idle_transactions(ttl)
        # Taking and renewing on a connection of their own (on a server): a renewal must
        # not wait behind the runs' writes, or a busy replica would lose its leases.
        self._own = db.companion()
        self._table = LeaseTable(self._own)
        self._replicas = ReplicaTable(self._own)
        self.holder = holder
        self.instance = instance
        self.ttl = ttl
        self.on_change = on_change or (lambda target, held: None)
        self._guard = threading.Lock()
        self._held: dict[str, HeldLease] = {}
        self._locks: dict[str, WriterLock] = {}
        self._joined = False
        self._live_cache: tuple[float, frozenset[str]] | None = None
        self._stopped = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def table(self) -> LeaseTable:
        return self._table

    # ------------------------------------------------------------------ taking

    def try_take(
        self, target: str, *, patience: float = 0.0, limit: int | None = None
    ) -> HeldLease | None:
        """The target's lease, taken (or the one this keeper holds); None while another
        holder has it after `patience` seconds, or while this keeper already holds `limit`
        other targets (its fair share)."""
        with self._guard:
            held = self._held.get(target)
            if held is None and limit is not None and len(self._held) >= limit:
                return None
        if held is not None:
            if held.valid:
                return held
            self.release(target)  # lost: taken afresh below, with a new token
        deadline = time.monotonic() + patience
        while True:
            lease = self._take_once(target)
            if lease is not None or time.monotonic() >= deadline:
                return lease
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _take_once(self, target: str) -> HeldLease | None:
        lock: WriterLock | None = None
        if not self._db.leases_expire:
            with self._guard:
                lock = self._locks.get(target)
            if lock is None:
                lock = self._db.writer_lock(target)
                if not lock.try_acquire():
                    return None
        sent = time.monotonic()
        try:
            taken = self._table.take(target, self.holder, self.ttl)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if taken is None:
            if lock is not None:
                lock.release()
            return None
        if taken.previous is not None:
            log.warning(
                "lease.taken_over",
                target=target,
                previous=taken.previous.holder,
                token=taken.record.token,
                reason=(
                    "its lease expired"
                    if self._db.leases_expire
                    else "its process ended without releasing the target's lock"
                ),
            )
        valid_for = self.ttl - margin_of(self.ttl) if self._db.leases_expire else None
        lease = HeldLease(taken.record, valid_for=valid_for, sent=sent)
        with self._guard:
            self._held[target] = lease
            if lock is not None:
                self._locks[target] = lock
        self._start_renewing()
        self.on_change(target, True)
        return lease

    def held(self, target: str) -> HeldLease | None:
        with self._guard:
            return self._held.get(target)

    def held_targets(self) -> frozenset[str]:
        """The targets this holder holds a valid lease on now (what it may write)."""
        with self._guard:
            leases = list(self._held.values())
        return frozenset(lease.target for lease in leases if lease.valid)

    def release(self, target: str) -> None:
        """Stop holding `target` (a no-op if this keeper does not)."""
        with self._guard:
            lease = self._held.pop(target, None)
            lock = self._locks.pop(target, None)
        try:
            if lease is not None:
                lease.lose("released")
                self._table.release(target, self.holder, lease.token)
        finally:
            if lock is not None:
                lock.release()
            if lease is not None:
                self.on_change(target, False)

    # ------------------------------------------------------------------ replicas

    def join(self) -> None:
        """Register as a replica sharing the targets (the daemon), renewed with the leases."""
        self._replicas.heartbeat(self.instance, self.holder, self.ttl)
        with self._guard:
            self._joined = True
        self._start_renewing()

    def replicas(self) -> list[Replica]:
        return self._replicas.live()

    def _live(self) -> frozenset[str]:
        """The live replicas' instances (this one counted), read at most once a second."""
        with self._guard:
            cached = self._live_cache
        if cached is not None and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        try:
            live = frozenset({r.instance for r in self._replicas.live()} | {self.instance})
        except StateError as error:
            log.warning("replicas.unreadable", error=str(error))
            return frozenset({self.instance})
        with self._guard:
            self._live_cache = (time.monotonic(), live)
        return live

    def fair_share(self, targets: int) -> int:
        """How many targets this replica may hold at once: the targets over the live
        replicas (itself counted), rounded up."""
        return max(1, -(-targets // len(self._live())))

    def preferred(self, target: str) -> bool:
        """Whether `target` falls to this replica: the live replica whose hash with the
        target's name is highest (rendezvous hashing), so the replicas agree on a split
        of about 1/N each without talking, and a replica's departure moves only its own
        targets."""
        return assign(target, self._live()) == self.instance

    # ------------------------------------------------------------------ renewing

    def _start_renewing(self) -> None:
        with self._guard:
            if self._renewer is not None or self._stopped.is_set():
                return
            self._renewer = threading.Thread(target=self._renew_loop, name="leases", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        period = self.ttl.total_seconds() / 3
        while not self._stopped.wait(period):
            began = time.monotonic()
            self.renew_now()
            late = time.monotonic() - began
            if late > period:
                log.warning("lease.renewal_late", seconds=round(late, 3))

    def renew_now(self) -> None:
        """Renew every lease held (and the replica registration): one pass of the
        renewal thread. A lease found taken over, or whose lock file was replaced, is lost."""
        with self._guard:
            leases = list(self._held.values())
            locks = dict(self._locks)
            joined = self._joined
        keep: list[HeldLease] = []
        for lease in leases:
            if lease.lost is not None:
                continue
            lock = locks.get(lease.target)
            if lock is not None and not lock.intact():
                self._lost(lease, "the lock file was deleted or replaced")
                continue
            keep.append(lease)
        if keep:
            sent = time.monotonic()
            try:
                renewed = self._table.renew_all(
                    self.holder, {lease.target: lease.token for lease in keep}, self.ttl
                )
            except StateError as error:  # unreachable for now: the leases run out locally
                log.warning("lease.renew_failed", targets=len(keep), error=str(error))
                renewed = None
            took = time.monotonic() - sent
            if took > self.ttl.total_seconds() / 6:
                log.warning("lease.renew_slow", seconds=round(took, 3), leases=len(keep))
            for lease in keep:
                if renewed is None:
                    break
                if lease.target in renewed:
                    lease._extended(sent)
                else:
                    self._lost(lease, "another holder took it over")
        if joined:
            try:
                self._replicas.heartbeat(self.instance, self.holder, self.ttl)
            except StateError as error:
                log.warning("replica.heartbeat_failed", error=str(error))

    def _lost(self, lease: HeldLease, reason: str) -> None:
        lease.lose(reason)
        log.error("lease.lost", target=lease.target, holder=self.holder, reason=reason)
        self.on_change(lease.target, False)

    def close(self) -> None:
        """Release every lease and leave the replicas; stop renewing."""
        self._stopped.set()
        renewer = self._renewer
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join()
        with self._guard:
            targets = list(self._held)
            joined, self._joined = self._joined, False
        for target in targets:
            try:
                self.release(target)
            except StateError as error:
                log.warning("lease.release_failed", target=target, error=str(error))
        if joined:
            try:
                self._replicas.leave(self.instance)
            except StateError as error:
                log.warning("replica.leave_failed", error=str(error))
        self._own.close()


# --------------------------------------------------------------------------- fenced writes


class FencedDB(BorrowedDB):
    """The same database, every write transaction of which first checks the lease
    (`LeaseTable.check_fence`), and before it the holder's own view (`HeldLease.check`).
    Closing it leaves the connection open: it is the unfenced store's."""

    def __init__(self, inner: StateDB, lease: HeldLease) -> None:
        super().__init__(inner)
        self._lease = lease
        self._table = LeaseTable(inner)

    @contextmanager
    def _write(self) -> Iterator[Session]:
        self._lease.check()
        with self._inner.write() as session:
            self._table.check_fence(session, self._lease.target, self._lease.token)
            yield session

    def write(self) -> AbstractContextManager[Session]:
        return self._write()
