"""What was sent when: the memory that keeps a repeated event from paging people again.

It also keeps each entry's sendings of the last hour, for `max_per_hour`: the limit holds
across processes (cron'd `orgsync sync` runs, the daemon beside them), not only within
one, where 12 targets failing at once each pass of a cron'd sync sent 12 messages a pass.
A sending is `reserve`d before it is made, and `unreserve`d if it fails; an event the
limit drops is counted, and the next sending of the entry takes that count to report.

A key is (entry, target, kind, fingerprint). `claim` answers whether an event with that key
may be sent now: yes if none was sent within `window` seconds (the entry's `repeat_after`),
and then it records the sending at once, so that a daemon and an operator's `orgsync sync`
sharing the state directory do not both send it; no otherwise, and the suppressed repeat is
counted for the summary the next sending carries. A sending that fails is `release`d, so
the next occurrence tries again; one that succeeds is `confirm`ed. A claim neither
confirmed nor released within `pending_for` seconds belonged to a process that died
mid-send (killed by a cron timeout or systemd): the next claim undoes it, so that event
is told, not taken for one already told and kept quiet for `repeat_after`.

`FileLedger` keeps this in a small SQLite file beside the state database
(`orgsync.db` -> `orgsync.notify.db`, mode 0600), so that a `sync` run every 15 minutes by
cron, or a daemon restarted by systemd, does not forget what it already said. If that
file cannot be used the ledger degrades to memory with a log line: a notification sent
twice is better than one never sent. A file another process holds locked past the busy
timeout is only skipped for that one decision.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

Key = tuple[str, str, str, str]
"""(entry name, target, kind, fingerprint)."""

FORGET_AFTER = 30 * 86400.0
"""Rows older than this are dropped (no entry repeats less often than every 30 days)."""


@dataclass(frozen=True, slots=True)
class Claim:
    key: Key
    repeats: int
    """Repeats suppressed since the last sending (to report in this one)."""
    since: float | None
    """Unix time of the last sending, if there was one."""
    previous: tuple[float, int] | None


@dataclass(frozen=True, slots=True)
class Slot:
    """A sending counted against its entry's `max_per_hour`."""

    entry: str
    at: float
    dropped: int
    """Events of the entry the limit dropped before this sending (to report in it)."""
    row: int = 0


HOUR = 3600.0


class Ledger(Protocol):
    def claim(
        self, key: Key, *, now: float, window: float, pending_for: float = 3600.0
    ) -> Claim | None:
        """A claim to send now, or None: sent within `window`, counted as a repeat.
        `pending_for`: how long the sending may take before it is presumed to have died."""
        ...

    def confirm(self, claim: Claim) -> None:
        """The claimed sending was delivered."""
        ...

    def release(self, claim: Claim) -> None:
        """The claimed sending failed: forget it."""
        ...

    def reserve(self, entry: str, *, now: float, limit: int) -> Slot | None:
        """A slot to send now, or None: `limit` sent within the hour, counted as dropped."""
        ...

    def unreserve(self, slot: Slot) -> None:
        """The reserved sending failed: it does not count, its dropped count is kept."""
        ...


class MemoryLedger:
    def __init__(self) -> None:
        self._rows: dict[Key, tuple[float, int]] = {}
        self._sendings: dict[str, list[float]] = {}
        self._dropped: dict[str, int] = {}
        self._lock = threading.Lock()

    def claim(
        self, key: Key, *, now: float, window: float, pending_for: float = 3600.0
    ) -> Claim | None:
        # In memory a claim dies with its process: `pending_for` has nothing to undo.
        with self._lock:
            row = self._rows.get(key)
            if row is not None and now - row[0] < window:
                self._rows[key] = (row[0], row[1] + 1)
                return None
            self._rows[key] = (now, 0)
            return Claim(key, row[1] if row else 0, row[0] if row else None, row)

    def confirm(self, claim: Claim) -> None:
        pass

    def release(self, claim: Claim) -> None:
        with self._lock:
            current = self._rows.get(claim.key)
            if claim.previous is None:
                self._rows.pop(claim.key, None)
            else:
                extra = current[1] if current else 0
                self._rows[claim.key] = (claim.previous[0], claim.previous[1] + extra)

    def reserve(self, entry: str, *, now: float, limit: int) -> Slot | None:
        with self._lock:
            recent = [at for at in self._sendings.get(entry, []) if now - at < HOUR]
            self._sendings[entry] = recent
            if len(recent) >= limit:
                self._dropped[entry] = self._dropped.get(entry, 0) + 1
                return None
            recent.append(now)
            return Slot(entry, now, self._dropped.pop(entry, 0))

    def unreserve(self, slot: Slot) -> None:
        with self._lock:
            sendings = self._sendings.get(slot.entry, [])
            if slot.at in sendings:
                sendings.remove(slot.at)
            self._dropped[slot.entry] = self._dropped.get(slot.entry, 0) + slot.dropped


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (
    key TEXT PRIMARY KEY,   -- JSON [entry, target, kind, fingerprint]
    last_sent REAL NOT NULL,
    repeats INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS pending (  -- claims being sent; the sent row's values before
    key TEXT PRIMARY KEY,
    until REAL NOT NULL,
    last_sent REAL,
    repeats INTEGER
);
CREATE TABLE IF NOT EXISTS sendings (entry TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dropped (entry TEXT PRIMARY KEY, count INTEGER NOT NULL);
"""


def _encode(key: Key) -> str:
    return json.dumps(list(key), separators=(",", ":"))


def ledger_path(state_path: Path) -> Path:
    """`orgsync.db` -> `orgsync.notify.db`, in the same directory."""
    return state_path.with_name(f"{state_path.stem}.notify.db")


def _busy(error: sqlite3.Error | OSError) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error).lower()


class FileLedger:
    """The ledger in a SQLite file; one short connection per call (a sender thread's)."""

    def __init__(self, path: Path, *, busy_timeout: float = 2.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._fallback = MemoryLedger()
        self._degraded = False

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        connection = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        connection.executescript(_SCHEMA)
        return connection

    def _degrade(self, error: sqlite3.Error | OSError) -> None:
        if _busy(error):
            # Another process held the file a moment too long (a backup, an operator's
            # sqlite3 shell): this call decides in memory, the next one tries the file
            # again. Degrading for good made the daemon forget across processes until
            # it restarted, and a cron'd sync then told again what the daemon had told.
            log.warning("notify.ledger_busy", path=str(self.path))
            return
        if not self._degraded:
            log.warning("notify.ledger_unavailable", path=str(self.path), error=str(error))
            self._degraded = True

    def claim(
        self, key: Key, *, now: float, window: float, pending_for: float = 3600.0
    ) -> Claim | None:
        if self._degraded:
            return self._fallback.claim(key, now=now, window=window)
        try:
            with closing(self._connect()) as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("DELETE FROM sent WHERE last_sent < ?", (now - FORGET_AFTER,))
                    db.execute("DELETE FROM pending WHERE until < ?", (now - FORGET_AFTER,))
                    self._undo_dead_claim(db, key, now)
                    found = db.execute(
                        "SELECT last_sent, repeats FROM sent WHERE key = ?", (_encode(key),)
                    ).fetchone()
                    row = (float(found[0]), int(found[1])) if found else None
                    if row is not None and now - row[0] < window:
                        db.execute(
                            "UPDATE sent SET repeats = repeats + 1 WHERE key = ?", (_encode(key),)
                        )
                        claim = None
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO sent VALUES (?, ?, 0)", (_encode(key), now)
                        )
                        db.execute(
                            "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)",
                            (_encode(key), now + pending_for, *(row or (None, None))),
                        )
                        claim = Claim(key, row[1] if row else 0, row[0] if row else None, row)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                return claim
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)
            return self._fallback.claim(key, now=now, window=window)

    @staticmethod
    def _undo_dead_claim(db: sqlite3.Connection, key: Key, now: float) -> None:
        """Put back the row a claim overwrote if its sending outlived `pending_for`."""
        dead = db.execute(
            "SELECT last_sent, repeats FROM pending WHERE key = ? AND until < ?",
            (_encode(key), now),
        ).fetchone()
        if dead is None:
            return
        log.warning("notify.unfinished", entry=key[0], target=key[1], kind=key[2])
        if dead[0] is None:
            db.execute("DELETE FROM sent WHERE key = ?", (_encode(key),))
        else:  # the repeats counted while it was pending stay counted
            db.execute(
                "UPDATE sent SET last_sent = ?, repeats = repeats + ? WHERE key = ?",
                (dead[0], dead[1], _encode(key)),
            )
        db.execute("DELETE FROM pending WHERE key = ?", (_encode(key),))

    def confirm(self, claim: Claim) -> None:
        if self._degraded:
            return
        try:
            with closing(self._connect()) as db:
                db.execute("DELETE FROM pending WHERE key = ?", (_encode(claim.key),))
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)

    def release(self, claim: Claim) -> None:
        if self._degraded:
            self._fallback.release(claim)
            return
        try:
            with closing(self._connect()) as db:
                db.execute("DELETE FROM pending WHERE key = ?", (_encode(claim.key),))
                if claim.previous is None:
                    db.execute("DELETE FROM sent WHERE key = ?", (_encode(claim.key),))
                else:
                    db.execute(
                        "UPDATE sent SET last_sent = ?, repeats = repeats + ? WHERE key = ?",
                        (*claim.previous, _encode(claim.key)),
                    )
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)

    def reserve(self, entry: str, *, now: float, limit: int) -> Slot | None:
        if self._degraded:
            return self._fallback.reserve(entry, now=now, limit=limit)
        try:
            with closing(self._connect()) as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("DELETE FROM sendings WHERE at <= ?", (now - HOUR,))
                    (count,) = db.execute(
                        "SELECT count(*) FROM sendings WHERE entry = ?", (entry,)
                    ).fetchone()
                    slot = None
                    if count >= limit:
                        db.execute(
                            "INSERT INTO dropped VALUES (?, 1) "
                            "ON CONFLICT (entry) DO UPDATE SET count = count + 1",
                            (entry,),
                        )
                    else:
                        row = db.execute("INSERT INTO sendings VALUES (?, ?)", (entry, now))
                        found = db.execute(
                            "DELETE FROM dropped WHERE entry = ? RETURNING count", (entry,)
                        ).fetchone()
                        slot = Slot(entry, now, int(found[0]) if found else 0, row.lastrowid or 0)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                return slot
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)
            return self._fallback.reserve(entry, now=now, limit=limit)

    def unreserve(self, slot: Slot) -> None:
        if self._degraded:
            self._fallback.unreserve(slot)
            return
        try:
            with closing(self._connect()) as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM sendings WHERE rowid = ?", (slot.row,))
                if slot.dropped:
                    db.execute(
                        "INSERT INTO dropped VALUES (?, ?) "
                        "ON CONFLICT (entry) DO UPDATE SET count = count + excluded.count",
                        (slot.entry, slot.dropped),
                    )
                db.execute("COMMIT")
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)
