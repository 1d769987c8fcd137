"""What was sent when: the memory that keeps a repeated event from paging people again.

A key is (entry, target, kind, fingerprint). `claim` answers whether an event with that key
may be sent now: yes if none was sent within `window` seconds (the entry's `repeat_after`),
and then it records the sending at once, so that a daemon and an operator's `orgsync sync`
sharing the state directory do not both send it; no otherwise, and the suppressed repeat is
counted for the summary the next sending carries. A sending that fails is `release`d, so
the next occurrence tries again.

`FileLedger` keeps this in a small SQLite file beside the state database
(`orgsync.db` -> `orgsync.notify.db`, mode 0600), so that a `sync` run every 15 minutes by
cron, or a daemon restarted by systemd, does not forget what it already said. If that
file cannot be used the ledger degrades to memory with a log line: a notification sent
twice is better than one never sent.
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


class Ledger(Protocol):
    def claim(self, key: Key, *, now: float, window: float) -> Claim | None:
        """A claim to send now, or None: sent within `window`, counted as a repeat."""
        ...

    def release(self, claim: Claim) -> None:
        """The claimed sending failed: forget it."""
        ...


class MemoryLedger:
    def __init__(self) -> None:
        self._rows: dict[Key, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def claim(self, key: Key, *, now: float, window: float) -> Claim | None:
        with self._lock:
            row = self._rows.get(key)
            if row is not None and now - row[0] < window:
                self._rows[key] = (row[0], row[1] + 1)
                return None
            self._rows[key] = (now, 0)
            return Claim(key, row[1] if row else 0, row[0] if row else None, row)

    def release(self, claim: Claim) -> None:
        with self._lock:
            current = self._rows.get(claim.key)
            if claim.previous is None:
                self._rows.pop(claim.key, None)
            else:
                extra = current[1] if current else 0
                self._rows[claim.key] = (claim.previous[0], claim.previous[1] + extra)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (
    key TEXT PRIMARY KEY,   -- JSON [entry, target, kind, fingerprint]
    last_sent REAL NOT NULL,
    repeats INTEGER NOT NULL DEFAULT 0
)
"""


def _encode(key: Key) -> str:
    return json.dumps(list(key), separators=(",", ":"))


def ledger_path(state_path: Path) -> Path:
    """`orgsync.db` -> `orgsync.notify.db`, in the same directory."""
    return state_path.with_name(f"{state_path.stem}.notify.db")


class FileLedger:
    """The ledger in a SQLite file; one short connection per call (a sender thread's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fallback = MemoryLedger()
        self._degraded = False

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        connection = sqlite3.connect(self.path, timeout=2.0, isolation_level=None)
        connection.execute(_SCHEMA)
        return connection

    def _degrade(self, error: sqlite3.Error | OSError) -> None:
        if not self._degraded:
            log.warning("notify.ledger_unavailable", path=str(self.path), error=str(error))
            self._degraded = True

    def claim(self, key: Key, *, now: float, window: float) -> Claim | None:
        if self._degraded:
            return self._fallback.claim(key, now=now, window=window)
        try:
            with closing(self._connect()) as db:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("DELETE FROM sent WHERE last_sent < ?", (now - FORGET_AFTER,))
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
                        claim = Claim(key, row[1] if row else 0, row[0] if row else None, row)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                return claim
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)
            return self._fallback.claim(key, now=now, window=window)

    def release(self, claim: Claim) -> None:
        if self._degraded:
            self._fallback.release(claim)
            return
        try:
            with closing(self._connect()) as db:
                if claim.previous is None:
                    db.execute("DELETE FROM sent WHERE key = ?", (_encode(claim.key),))
                else:
                    db.execute(
                        "UPDATE sent SET last_sent = ?, repeats = repeats + ? WHERE key = ?",
                        (*claim.previous, _encode(claim.key)),
                    )
        except (sqlite3.Error, OSError) as error:
            self._degrade(error)
