"""Who holds a target's writer lock: the lease row, for `orgsync status` and the logs.

Owns the `leases` table. The row does not decide who writes: the kernel lock of
`writer_lock.py` does, and a process writes a lease row only while it holds that lock. A
row whose holder no longer holds the lock belongs to a process that ended without
releasing it (`kill -9`, a power cut): the next lock holder takes it over at once. The
holder renews the row every third of `ttl` for as long as its run lasts; a renewal that
finds the row taken over (the lock file was replaced under it) halts its applier, and a
row not renewed for `ttl` is no longer reported as held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from orgsync.store.db import StateDB, encode_time


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """Who holds a target's lease (e.g. "cli on host (pid 42, instance 1a2b3c4d)"), since
    when, until when (unless renewed)."""

    target: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


class Leases:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def take(
        self, target: str, holder: str, ttl: timedelta, now: datetime | None = None
    ) -> LeaseRecord | None:
        """Record `holder` as the lease holder; call only while holding the writer lock.

        Taking our own lease again extends it and keeps its `acquired_at`. Returns the
        row it replaced if that was another holder's (a process that died holding it).
        """
        _check_ttl(ttl)
        at = now if now is not None else self._db.clock()
        stamp, expires = encode_time(at), encode_time(at + ttl)
        with self._db.write() as session:
            current = session.one(
                "SELECT holder, acquired_at, expires_at FROM leases WHERE target = ?", (target,)
            )
            if current is not None and current.text("holder") == holder:
                session.execute(
                    "UPDATE leases SET expires_at = ? WHERE target = ?", (expires, target)
                )
                return None
            session.execute(
                "INSERT INTO leases (target, holder, acquired_at, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (target) DO UPDATE SET holder = excluded.holder, "
                "acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
                (target, holder, stamp, expires),
            )
        if current is None:
            return None
        return LeaseRecord(
            target=target,
            holder=current.text("holder"),
            acquired_at=current.time("acquired_at"),
            expires_at=current.time("expires_at"),
        )

    def renew(self, target: str, holder: str, ttl: timedelta, now: datetime | None = None) -> bool:
        """Extend `holder`'s lease; False if someone else holds it (or nobody does).

        A lease that expired but was not taken over is still ours to renew: we held the
        writer lock all along, so nobody else can have acted on the target in between.
        """
        _check_ttl(ttl)
        at = now if now is not None else self._db.clock()
        with self._db.write() as session:
            changed = session.execute(
                "UPDATE leases SET expires_at = ? WHERE target = ? AND holder = ?",
                (encode_time(at + ttl), target, holder),
            )
        return changed == 1

    def release(self, target: str, holder: str) -> None:
        """Give the lease up; a no-op if `holder` no longer holds it."""
        with self._db.write() as session:
            session.execute("DELETE FROM leases WHERE target = ? AND holder = ?", (target, holder))

    def holder(self, target: str, now: datetime | None = None) -> LeaseRecord | None:
        """The lease row of `target` unless it expired (a holder that stopped renewing)."""
        at = now if now is not None else self._db.clock()
        with self._db.read() as session:
            row = session.one(
                "SELECT holder, acquired_at, expires_at FROM leases WHERE target = ?",
                (target,),
            )
        if row is None:
            return None
        record = LeaseRecord(
            target=target,
            holder=row.text("holder"),
            acquired_at=row.time("acquired_at"),
            expires_at=row.time("expires_at"),
        )
        return record if record.expires_at > at else None


def _check_ttl(ttl: timedelta) -> None:
    if ttl <= timedelta(0):
        raise ValueError(f"lease ttl must be positive, got {ttl}")
