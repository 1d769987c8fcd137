"""The webhook queue: targeted-run requests on their way to the replica running the target.

Owns the `webhook_queue` table. The replica that receives a webhook writes what its
parser produced (target names, people's emails and source ids, the trigger) and nothing
else: never a body or a header, so no secret a vendor put in a delivery reaches the
database. The replica that holds a target claims its rows (`claim`), hands them to the
target's worker, and marks them done once the run they were part of has finished
(`finish`), so a replica that dies between claim and finish leaves them claimed but not
done: once its registration among the replicas (`replicas`, renewed with its leases)
has expired, whichever replica may run the target claims them again. Rows are claimed by
the instance id of a daemon, its id among the replicas.

One row per (target, person): a person named again while an earlier request for them
is still waiting is not queued twice (the unique index over unclaimed rows). A `full`
row (the event named nobody) asks for the whole organization and absorbs the people
waiting for that target. A target's waiting rows are bounded (`max_pending`): beyond
it they are replaced by one `full` row, which `put` reports (`Queued.widened`) for the
caller's log line and metric. Done rows are deleted once `keep_done` old.

On PostgreSQL the writing transaction notifies `CHANNEL` with the target names, so every
replica listening (`PostgresDB.listen`) claims at once instead of at its next poll; the
claim locks the rows it takes (`FOR UPDATE SKIP LOCKED`) so two replicas never take the
same row. On SQLite there is one process, and `BEGIN IMMEDIATE` serialises claims.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from orgsync.store.db import Session, StateDB, encode_json, encode_time, server_now

CHANNEL = "orgsync_webhook_queue"
"""The PostgreSQL notification channel; the payload is a JSON list of target names."""

KINDS = ("email", "source_id", "full")
MAX_PENDING_PER_TARGET = 1000
"""Waiting people per target beyond which they become one full reconcile (the daemon's
in-process queue widens a request naming more than this many people the same way)."""
KEEP_DONE = timedelta(minutes=10)
"""How long a done row stays (for `status` and a curious operator) before it is pruned."""


class QueueListener(Protocol):
    """Notifications of queued requests (`PostgresDB.listen(CHANNEL)`)."""

    def wait(self, timeout: float) -> list[str]:
        """Payloads (JSON lists of target names) notified within `timeout` seconds."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Request:
    """What one webhook asked of one target: people, or the whole organization."""

    target: str
    trigger: str
    emails: frozenset[str] = frozenset()
    source_ids: frozenset[str] = frozenset()

    @property
    def full(self) -> bool:
        return not (self.emails or self.source_ids)


@dataclass(frozen=True, slots=True)
class Queued:
    """What `put` did: rows added, people already waiting, targets widened to full."""

    added: int = 0
    coalesced: int = 0
    widened: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Claimed:
    """The rows of one target a replica claimed, merged into one request."""

    target: str
    trigger: str
    ids: frozenset[str]
    emails: frozenset[str] = frozenset()
    source_ids: frozenset[str] = frozenset()
    full: bool = False


@dataclass(slots=True)
class _Merging:
    trigger: str
    ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    source_ids: set[str] = field(default_factory=set)
    full: bool = False


class WebhookQueue:
    def __init__(
        self,
        db: StateDB,
        *,
        max_pending: int = MAX_PENDING_PER_TARGET,
        keep_done: timedelta = KEEP_DONE,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self._db = db
        self._max_pending = max_pending
        self._keep_done = keep_done

    # ------------------------------------------------------------------ writing

    def put(
        self, requests: Iterable[Request], *, first: Callable[[Session], bool] | None = None
    ) -> Queued:
        """Queue requests, in one transaction (notifying listeners on PostgreSQL).

        `first(session)` runs first in that transaction (the delivery's seen keys,
        `store/deliveries.py`); when it answers False, nothing is queued."""
        batch = list(requests)
        if not batch and first is None:
            return Queued()
        now = encode_time(self._db.clock())
        added = coalesced = 0
        widened: list[str] = []
        with self._db.write() as session:
            if first is not None and not first(session):
                return Queued()
            for request in batch:
                rows = _rows(request)
                if _has_pending_full(session, request.target):
                    coalesced += len(rows)
                    continue
                pending = _pending_count(session, request.target)
                if not request.full and pending + len(rows) > self._max_pending:
                    widened.append(request.target)
                    session.execute(
                        "DELETE FROM webhook_queue WHERE target = ? AND claimed_by IS NULL "
                        "AND done = 0",
                        (request.target,),
                    )
                    rows = [("full", "")]
                for kind, person in rows:
                    changed = session.execute(
                        "INSERT INTO webhook_queue "
                        "(id, target, kind, person, triggered_by, received_at, done) "
                        "VALUES (?, ?, ?, ?, ?, ?, 0) "
                        "ON CONFLICT (target, kind, person) "
                        "WHERE claimed_by IS NULL AND done = 0 DO NOTHING",
                        (
                            _new_id(now, added + coalesced),
                            request.target,
                            kind,
                            person,
                            request.trigger,
                            now,
                        ),
                    )
                    added += changed
                    coalesced += 1 - changed
                if request.full:
                    # The whole organization covers every person waiting for it.
                    session.execute(
                        "DELETE FROM webhook_queue WHERE target = ? AND claimed_by IS NULL "
                        "AND done = 0 AND kind != 'full'",
                        (request.target,),
                    )
            if batch and session.dialect.name == "postgresql":
                targets = sorted({r.target for r in batch})
                session.scalar("SELECT pg_notify(?, ?)", (CHANNEL, encode_json(targets)))
        return Queued(added=added, coalesced=coalesced, widened=tuple(widened))

    # ------------------------------------------------------------------ the holder's side

    def claim(self, claimer: str, targets: Collection[str]) -> list[Claimed]:
        """Take the waiting rows of `targets` (those `claimer` may run now) for `claimer`.

        Rows another replica claimed are taken too once that replica is no longer live
        (its `replicas` row expired: it died, or was cut off past its lease TTL, and runs
        nothing any more). Returns one merged request per target.
        """
        if not targets:
            return []
        names = encode_json(sorted(targets))
        with self._db.write() as session:
            now = encode_time(server_now(self._db, session))
            values = session.dialect.json_array_values
            lock = session.dialect.lock_row
            rows = session.query(
                "UPDATE webhook_queue SET claimed_by = ?, claimed_at = ? WHERE id IN ("  # noqa: S608
                "SELECT id FROM webhook_queue WHERE done = 0 "
                f"AND target IN ({values}) AND {_CLAIMABLE}{lock}) "
                "RETURNING id, target, kind, person, triggered_by, received_at",
                (claimer, now, names, claimer, now),
            )
        merged: dict[str, _Merging] = {}
        for row in sorted(rows, key=lambda r: (r.text("received_at"), r.text("id"))):
            target = row.text("target")
            into = merged.setdefault(target, _Merging(row.text("triggered_by")))
            into.ids.add(row.text("id"))
            kind, person = row.text("kind"), row.text("person")
            if kind == "full":
                into.full = True
            elif kind == "email":
                into.emails.add(person)
            else:
                into.source_ids.add(person)
        return [
            Claimed(
                target=target,
                trigger=m.trigger,
                ids=frozenset(m.ids),
                emails=frozenset() if m.full else frozenset(m.emails),
                source_ids=frozenset() if m.full else frozenset(m.source_ids),
                full=m.full,
            )
            for target, m in sorted(merged.items())
        ]

    def waiting(
        self, targets: Collection[str] | None = None, *, claimer: str | None = None
    ) -> bool:
        """Whether any row (of `targets`) is not done, or (with `claimer`) is one that
        `claim` would take: a cheap read before a claim, which writes."""
        with self._db.read() as session:
            where = "done = 0"
            params: list[str] = []
            if claimer is not None:
                where += f" AND {_CLAIMABLE}"
                params += [claimer, encode_time(server_now(self._db, session))]
            if targets is not None:
                where += f" AND target IN ({session.dialect.json_array_values})"
                params.append(encode_json(sorted(targets)))
            found = session.scalar(
                f"SELECT 1 FROM webhook_queue WHERE {where} LIMIT 1",  # noqa: S608
                params,
            )
        return found is not None

    def finish(self, claimer: str, ids: Iterable[str]) -> int:
        """Mark `claimer`'s rows done (their run finished); prune old done rows.

        A row another replica has claimed since (it took the target over) stays theirs.
        """
        wanted = sorted(set(ids))
        now = self._db.clock()
        with self._db.write() as session:
            changed = 0
            if wanted:
                values = session.dialect.json_array_values
                changed = session.execute(
                    "UPDATE webhook_queue SET done = 1, done_at = ? "  # noqa: S608
                    f"WHERE claimed_by = ? AND done = 0 AND id IN ({values})",
                    (encode_time(now), claimer, encode_json(wanted)),
                )
            session.execute(
                "DELETE FROM webhook_queue WHERE done = 1 AND done_at < ?",
                (encode_time(now - self._keep_done),),
            )
        return changed

    def rows(self, target: str | None = None) -> list[QueueRow]:
        """Every row (of `target`), oldest first: for `status`, tests and operators."""
        with self._db.read() as session:
            found = session.query(
                "SELECT id, target, kind, person, triggered_by, received_at, claimed_by, "
                "claimed_at, done FROM webhook_queue WHERE (CAST(? AS TEXT) IS NULL OR target = ?) "
                "ORDER BY received_at, id",
                (target, target),
            )
        return [
            QueueRow(
                id=r.text("id"),
                target=r.text("target"),
                kind=r.text("kind"),
                person=r.text("person"),
                trigger=r.text("triggered_by"),
                received_at=r.time("received_at"),
                claimed_by=r.opt_text("claimed_by"),
                claimed_at=r.opt_time("claimed_at"),
                done=bool(r.integer("done")),
            )
            for r in found
        ]


@dataclass(frozen=True, slots=True)
class QueueRow:
    id: str
    target: str
    kind: str
    person: str
    trigger: str
    received_at: datetime
    claimed_by: str | None
    claimed_at: datetime | None
    done: bool


def _rows(request: Request) -> list[tuple[str, str]]:
    if request.full:
        return [("full", "")]
    return [("email", e) for e in sorted(request.emails)] + [
        ("source_id", s) for s in sorted(request.source_ids)
    ]


_CLAIMABLE = (
    "(claimed_by IS NULL OR (claimed_by != ? AND claimed_by NOT IN ("
    "SELECT instance FROM replicas WHERE expires_at > ?)))"
)
"""A row `claim` takes: nobody's, or a claimer's that is no longer a live replica.
Parameters: the claimer, now."""


def _has_pending_full(session: Session, target: str) -> bool:
    return (
        session.scalar(
            "SELECT 1 FROM webhook_queue WHERE target = ? AND kind = 'full' "
            "AND claimed_by IS NULL AND done = 0",
            (target,),
        )
        is not None
    )


def _pending_count(session: Session, target: str) -> int:
    count = session.scalar(
        "SELECT COUNT(*) FROM webhook_queue WHERE target = ? AND claimed_by IS NULL AND done = 0",
        (target,),
    )
    return int(count) if isinstance(count, int) else 0


def _new_id(now: str, seq: int) -> str:
    # Time and place in its batch first: ids sort by arrival (the first trigger of a
    # merged claim is the oldest); the random part keeps two replicas' ids apart.
    return f"{now}-{seq:06d}-{secrets.token_hex(6)}"
