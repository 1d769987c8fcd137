"""Webhook deliveries seen: a captured delivery sent again is a replay whichever daemon
process receives it, a replica sharing the database or the same daemon restarted.

Owns the `seen_deliveries` table: one row per delivery key (a generic event's id or, in
want of one, its signature; an Okta event's uuid; a digest of a Graph notification),
stored as a SHA-256 digest of the kind and key, never the key itself, a body, a header or
any secret, with the time its window ends. The daemon records a delivery's keys in the
very transaction that queues its requests (`WebhookQueue.put(first=...)`), so:

- a delivery is remembered exactly when its requests are queued: a refused one (the
  database failing mid-write, a 503) leaves no row, and its retry is taken;
- insert-if-absent is one statement (`INSERT ... ON CONFLICT DO UPDATE ... WHERE` the
  row's window is over, its changed rows returned): two replicas receiving the same
  delivery at once both try, the second waits for the first's transaction (PostgreSQL's
  unique index) or its turn (SQLite's `BEGIN IMMEDIATE`), finds the row and records
  nothing, and its caller queues nothing;
- a row whose window is over counts as unseen (renewed in place), before it is pruned.

Bounded: rows are deleted once expired, after the first recording past `prune_every`
(per process; in a transaction of its own, whose failure is only logged: pruning never
refuses a delivery); a kind holding more than `max_rows` live
rows then loses those nearest their end (their replay becomes possible again early, as the
daemon's memory forgot its oldest before; logged). Only authenticated deliveries reach
this table (the signature, authorization or clientState is checked first), so its size
is the senders' legitimate rate times the window, capped at `max_rows` per kind plus what
arrives within one `prune_every`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import structlog

from orgsync.store.db import Session, StateDB, encode_json, encode_time

log = structlog.get_logger(__name__)

KINDS: Final = ("generic", "okta", "entra")
MAX_ROWS_PER_KIND: Final = 100_000
"""Live rows of one kind kept at most (about 25 MB of table and index on either backend)."""
PRUNE_EVERY: Final = timedelta(seconds=60)
"""How often (per process, on a recording) expired rows are deleted and the cap applied."""


def digest(kind: str, key: str) -> str:
    """What is stored of a delivery key: a digest, so that no value of the delivery is."""
    return hashlib.sha256(f"{kind}\n{key}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SeenRow:
    kind: str
    digest: str
    seen_at: datetime
    expires_at: datetime


class SeenDeliveries:
    def __init__(
        self,
        db: StateDB,
        *,
        max_rows: int = MAX_ROWS_PER_KIND,
        prune_every: timedelta = PRUNE_EVERY,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self._db = db
        self._max_rows = max_rows
        self._prune_every = prune_every.total_seconds()
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()

    def record(
        self, session: Session, kind: str, keys: Iterable[str], window: timedelta
    ) -> list[str]:
        """In the caller's write transaction: record `keys` of a `kind` delivery, seen
        now and remembered for `window`; returns those not already seen within their
        window, in order (none: the delivery is a replay, or every event in it is)."""
        if kind not in KINDS:
            raise ValueError(f"unknown delivery kind {kind!r}")
        by_digest = {digest(kind, key): key for key in dict.fromkeys(keys)}
        now = self._db.clock()
        if not by_digest:
            return []
        digests = session.dialect.json_array_values
        # `WHERE true`: SQLite's parser needs it between an INSERT's SELECT and ON CONFLICT.
        rows = session.query(
            "INSERT INTO seen_deliveries (kind, digest, seen_at, expires_at) "  # noqa: S608
            f"SELECT ?, d.value, ?, ? FROM ({digests}) AS d WHERE true "
            "ON CONFLICT (kind, digest) DO UPDATE SET "
            "seen_at = excluded.seen_at, expires_at = excluded.expires_at "
            "WHERE seen_deliveries.expires_at <= excluded.seen_at "
            "RETURNING digest",
            (
                kind,
                encode_time(now),
                encode_time(now + window),
                encode_json(sorted(by_digest)),
            ),
        )
        fresh = {row.text("digest") for row in rows}
        return [key for found, key in by_digest.items() if found in fresh]

    def prune(self) -> int:
        """Delete expired rows and apply the cap now, in a transaction of its own; returns
        the rows deleted."""
        with self._db.write() as session:
            return self._prune(session, self._db.clock())

    def prune_if_due(self) -> int:
        """`prune` when `prune_every` has passed since this process last did (or never
        did); 0 otherwise."""
        with self._prune_lock:
            due = time.monotonic() >= self._next_prune
            if due:
                self._next_prune = time.monotonic() + self._prune_every
        return self.prune() if due else 0

    def rows(self, kind: str | None = None) -> list[SeenRow]:
        """Every row (of `kind`), for tests and a curious operator."""
        with self._db.read() as session:
            found = session.query(
                "SELECT kind, digest, seen_at, expires_at FROM seen_deliveries "
                "WHERE (CAST(? AS TEXT) IS NULL OR kind = ?) ORDER BY seen_at, digest",
                (kind, kind),
            )
        return [
            SeenRow(
                kind=r.text("kind"),
                digest=r.text("digest"),
                seen_at=r.time("seen_at"),
                expires_at=r.time("expires_at"),
            )
            for r in found
        ]

    def _prune(self, session: Session, now: datetime) -> int:
        # Rows another replica's prune holds are skipped, not waited for: two prunes at
        # once never deadlock, and whatever one skips the next takes.
        skip = session.dialect.lock_row
        deleted = session.execute(
            "DELETE FROM seen_deliveries WHERE (kind, digest) IN ("  # noqa: S608
            f"SELECT kind, digest FROM seen_deliveries WHERE expires_at <= ?{skip})",
            (encode_time(now),),
        )
        for kind in KINDS:
            count = session.scalar("SELECT COUNT(*) FROM seen_deliveries WHERE kind = ?", (kind,))
            over = (count if isinstance(count, int) else 0) - self._max_rows
            if over <= 0:
                continue
            deleted += session.execute(
                "DELETE FROM seen_deliveries WHERE kind = ? AND digest IN ("  # noqa: S608
                "SELECT digest FROM seen_deliveries WHERE kind = ? "
                f"ORDER BY expires_at, digest LIMIT ?{skip})",
                (kind, kind, over),
            )
            log.warning(
                "webhook.seen_capped",
                kind=kind,
                forgotten=over,
                note=f"more than {self._max_rows} {kind} deliveries seen within their window: "
                "the oldest are forgotten early, and a replay of one of them would be taken",
            )
        return deleted
