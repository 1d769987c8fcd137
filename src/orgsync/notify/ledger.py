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

It also keeps the quarantine and recovery messages that failed every attempt
(`events.KEPT_KINDS`), so that the next pass, or the next process, sends them again:
`keep` records one, `due` hands back those whose turn has come (and pushes their turn
past the time a sending takes, so that two processes do not both send one), `retried`
settles a new try. It is bounded: at most `UNSENT_TRIES` rounds of attempts, the wait
between two doubling from the dispatcher's `retry_after`, nothing kept beyond
`UNSENT_FOR`, at most `UNSENT_PER_ENTRY` per entry (the oldest goes first); a message
given up is logged as `notify.given_up`.

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
from collections.abc import Iterator
from contextlib import closing, contextmanager
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

UNSENT_TRIES = 6
"""Rounds of attempts of a kept message, its first included; then it is given up."""
UNSENT_FOR = 86400.0
"""A kept message older than this is given up: news of a day ago is no longer news."""
UNSENT_PER_ENTRY = 20
"""Kept messages per entry: a receiver down for days must not grow the file without
bound (a target flapping in and out of quarantine makes two a flap)."""


@dataclass(frozen=True, slots=True)
class Unsent:
    """A kept message: `event` is `events.to_json` of it."""

    row: int
    entry: str
    event: str
    first_failed: float
    tries: int
    in_memory: bool = False
    """Kept by a `MemoryLedger` (a `FileLedger`'s, while its file could not be used)."""


def _next_try(now: float, tries: int, retry_after: float) -> float:
    return now + retry_after * float(2 ** max(0, tries - 1))


def _given_up(entry: str, event: str, why: str) -> None:
    kind, target = "?", "?"
    try:
        fields = json.loads(event)
        kind, target = str(fields["kind"]), str(fields["target"])
    except (ValueError, KeyError, TypeError):
        pass
    log.error("notify.given_up", entry=entry, kind=kind, target=target, reason=why)


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

    def keep(self, entry: str, event: str, *, now: float, retry_after: float) -> None:
        """A message that failed its first round: to send again after `retry_after`."""
        ...

    def due(self, entry: str, *, now: float, lease: float) -> list[Unsent]:
        """The kept messages of `entry` to send now, oldest first; each is taken for
        `lease` seconds (the longest a sending lasts) so no other process sends it."""
        ...

    def retried(self, unsent: Unsent, *, sent: bool, now: float, retry_after: float) -> None:
        """A kept message was sent (forgotten) or failed again (its next turn, or given
        up after `UNSENT_TRIES` rounds)."""
        ...

    def postpone(self, unsent: Unsent, *, now: float) -> None:
        """A kept message was not tried (the rate limit): its turn comes at the next look."""
        ...


class MemoryLedger:
    def __init__(self) -> None:
        self._rows: dict[Key, tuple[float, int]] = {}
        self._sendings: dict[str, list[float]] = {}
        self._dropped: dict[str, int] = {}
        self._unsent: dict[int, tuple[Unsent, float]] = {}
        """Kept messages by row, with the time of their next turn."""
        self._rows_made = 0
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

    def keep(self, entry: str, event: str, *, now: float, retry_after: float) -> None:
        with self._lock:
            self._rows_made += 1
            unsent = Unsent(self._rows_made, entry, event, now, 1, in_memory=True)
            self._unsent[unsent.row] = (unsent, _next_try(now, 1, retry_after))
            mine = sorted(row for row, (u, _) in self._unsent.items() if u.entry == entry)
            for row in mine[: max(0, len(mine) - UNSENT_PER_ENTRY)]:
                dropped, _ = self._unsent.pop(row)
                _given_up(entry, dropped.event, f"more than {UNSENT_PER_ENTRY} kept")

    def due(self, entry: str, *, now: float, lease: float) -> list[Unsent]:
        with self._lock:
            for row, (unsent, _) in list(self._unsent.items()):
                if now - unsent.first_failed > UNSENT_FOR:
                    del self._unsent[row]
                    _given_up(unsent.entry, unsent.event, "undelivered for a day")
            found = sorted(
                (u for u, turn in self._unsent.values() if u.entry == entry and turn <= now),
                key=lambda u: u.row,
            )
            for unsent in found:
                self._unsent[unsent.row] = (unsent, now + lease)
            return found

    def retried(self, unsent: Unsent, *, sent: bool, now: float, retry_after: float) -> None:
        with self._lock:
            if self._unsent.pop(unsent.row, None) is None or sent:
                return
            tries = unsent.tries + 1
            if tries >= UNSENT_TRIES:
                _given_up(unsent.entry, unsent.event, f"{tries} rounds of attempts failed")
                return
            again = Unsent(unsent.row, unsent.entry, unsent.event, unsent.first_failed, tries, True)
            self._unsent[unsent.row] = (again, _next_try(now, tries, retry_after))

    def postpone(self, unsent: Unsent, *, now: float) -> None:
        with self._lock:
            if unsent.row in self._unsent:
                self._unsent[unsent.row] = (unsent, now)


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
CREATE TABLE IF NOT EXISTS unsent (  -- quarantine and recovery messages not delivered yet
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    entry TEXT NOT NULL,
    event TEXT NOT NULL,          -- events.to_json: redacted, as the message would be
    first_failed REAL NOT NULL,
    tries INTEGER NOT NULL,       -- rounds of attempts made
    next_try REAL NOT NULL        -- not before: a round in flight pushes it past its end
);
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

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction on a connection of its own to the ledger file: every
        decision reads and writes it whole, so two processes never decide on one state."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

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
            with self._transaction() as db:
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
                    db.execute("INSERT OR REPLACE INTO sent VALUES (?, ?, 0)", (_encode(key), now))
                    db.execute(
                        "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)",
                        (_encode(key), now + pending_for, *(row or (None, None))),
                    )
                    claim = Claim(key, row[1] if row else 0, row[0] if row else None, row)
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
            with self._transaction() as db:
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
                return slot
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)
            return self._fallback.reserve(entry, now=now, limit=limit)

    def unreserve(self, slot: Slot) -> None:
        if self._degraded:
            self._fallback.unreserve(slot)
            return
        try:
            with self._transaction() as db:
                db.execute("DELETE FROM sendings WHERE rowid = ?", (slot.row,))
                if slot.dropped:
                    db.execute(
                        "INSERT INTO dropped VALUES (?, ?) "
                        "ON CONFLICT (entry) DO UPDATE SET count = count + excluded.count",
                        (slot.entry, slot.dropped),
                    )
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)

    def keep(self, entry: str, event: str, *, now: float, retry_after: float) -> None:
        if self._degraded:
            self._fallback.keep(entry, event, now=now, retry_after=retry_after)
            return
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO unsent (entry, event, first_failed, tries, next_try) "
                    "VALUES (?, ?, ?, 1, ?)",
                    (entry, event, now, _next_try(now, 1, retry_after)),
                )
                beyond = db.execute(
                    "SELECT row, event FROM unsent WHERE entry = ? ORDER BY row DESC "
                    "LIMIT -1 OFFSET ?",
                    (entry, UNSENT_PER_ENTRY),
                ).fetchall()
                for row, dropped in beyond:
                    db.execute("DELETE FROM unsent WHERE row = ?", (row,))
                    _given_up(entry, dropped, f"more than {UNSENT_PER_ENTRY} kept")
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)
            self._fallback.keep(entry, event, now=now, retry_after=retry_after)

    def due(self, entry: str, *, now: float, lease: float) -> list[Unsent]:
        found = [] if self._degraded else self._due(entry, now=now, lease=lease)
        # Kept in memory while the file could not be used: those too.
        return found + self._fallback.due(entry, now=now, lease=lease)

    def _due(self, entry: str, *, now: float, lease: float) -> list[Unsent]:
        try:
            with self._transaction() as db:
                for old_entry, event in db.execute(
                    "DELETE FROM unsent WHERE first_failed < ? RETURNING entry, event",
                    (now - UNSENT_FOR,),
                ).fetchall():
                    _given_up(old_entry, event, "undelivered for a day")
                rows = db.execute(
                    "SELECT row, entry, event, first_failed, tries FROM unsent "
                    "WHERE entry = ? AND next_try <= ? ORDER BY row",
                    (entry, now),
                ).fetchall()
                db.execute(
                    "UPDATE unsent SET next_try = ? WHERE entry = ? AND next_try <= ?",
                    (now + lease, entry, now),
                )
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)
            return []
        return [Unsent(int(r), str(e), str(ev), float(f), int(t)) for r, e, ev, f, t in rows]

    def retried(self, unsent: Unsent, *, sent: bool, now: float, retry_after: float) -> None:
        if unsent.in_memory or self._degraded:
            self._fallback.retried(unsent, sent=sent, now=now, retry_after=retry_after)
            return
        tries = unsent.tries + 1
        try:
            with closing(self._connect()) as db:
                if sent or tries >= UNSENT_TRIES:
                    db.execute("DELETE FROM unsent WHERE row = ?", (unsent.row,))
                else:
                    db.execute(
                        "UPDATE unsent SET tries = ?, next_try = ? WHERE row = ?",
                        (tries, _next_try(now, tries, retry_after), unsent.row),
                    )
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)
            return
        if not sent and tries >= UNSENT_TRIES:
            _given_up(unsent.entry, unsent.event, f"{tries} rounds of attempts failed")

    def postpone(self, unsent: Unsent, *, now: float) -> None:
        if unsent.in_memory or self._degraded:
            self._fallback.postpone(unsent, now=now)
            return
        try:
            with closing(self._connect()) as db:
                db.execute("UPDATE unsent SET next_try = ? WHERE row = ?", (now, unsent.row))
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)
