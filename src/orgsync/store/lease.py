"""The per-target single-writer lease: one process applies to a target at a time.

Owns the `leases` table. Every decision reads and writes inside one `BEGIN IMMEDIATE`
transaction, which SQLite grants to one connection at a time across processes, so two
contenders can never both see the lease free. A lease expires rather than relying on its
holder to release it: a holder killed with `kill -9` stops blocking others after `ttl`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from orgsync.store.db import StateDB, encode_time


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """Who holds a target's lease (e.g. "hostname:pid:random"), since when, until when."""

    target: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


class Leases:
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def acquire(
        self, target: str, holder: str, ttl: timedelta, now: datetime | None = None
    ) -> bool:
        """Take the lease if it is free, expired, or already `holder`'s (then extend it)."""
        _check_ttl(ttl)
        at = now if now is not None else self._db.clock()
        stamp, expires = encode_time(at), encode_time(at + ttl)
        with self._db.write() as session:
            current = session.one(
                "SELECT holder, expires_at FROM leases WHERE target = ?", (target,)
            )
            if current is None:
                session.execute(
                    "INSERT INTO leases (target, holder, acquired_at, expires_at) "
                    "VALUES (?, ?, ?, ?)",
                    (target, holder, stamp, expires),
                )
                return True
            if current.text("holder") == holder:
                # Re-acquiring our own lease extends it and keeps the original acquired_at.
                session.execute(
                    "UPDATE leases SET expires_at = ? WHERE target = ?", (expires, target)
                )
                return True
            if current.time("expires_at") <= at:
                session.execute(
                    "UPDATE leases SET holder = ?, acquired_at = ?, expires_at = ? "
                    "WHERE target = ?",
                    (holder, stamp, expires, target),
                )
                return True
            return False

    def renew(self, target: str, holder: str, ttl: timedelta, now: datetime | None = None) -> bool:
        """Extend `holder`'s lease; False if someone else holds it (or nobody does).

        A lease that expired but was not taken over is still ours to renew: nobody else
        can have acted on the target in between.
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
        """The live lease of `target`; an expired one binds nobody and is not reported."""
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
