"""Moving an installation's state from one database to another (`orgsync state migrate`).

Everything orgsync remembers goes: run history and its journal, links (whom orgsync
manages), missing-since clocks (removal grace), the ownership ledger of target groups and
the learned request forms, the baselines incremental passes trust (source digests
and cursors), the write generation and restore acknowledgements (`marks.py`: the copy
keeps the source's database id and generation, and a SQLite destination gets its mark
file at once, so a later restore of the destination is seen too), and the webhook
requests not yet served (`webhook_queue` rows not done):
a leaver's removal a webhook queued must not be dropped by a move, and a destination
may be used by `orgsync sync` alone, with no daemon's full start-up pass to cover it.
They arrive unclaimed, whoever had claimed them in the source (a daemon of the source
claimed them and was stopped before its run finished, or it would hold a writer lock
and the move be refused), and one row per person and target, as the queue keeps them.
Served (done) rows stay behind: history for `status`, pruned within minutes anyway.

Liveness rows do not go: `leases` (who holds a target's writer lease now, until when,
with which fencing token) and `replicas` (which daemons are alive). They describe
processes attached to the source database; in the destination they would make a daemon
wait out the expiry of a lease no process holds, or count a replica that does not exist
and take less than its share of the targets. The destination's daemons write their own
within a lease TTL of starting; a lease's token restarts at 1 there, which fences nothing
wrongly since no process of the source can write to the destination. Nor do the
webhook deliveries seen (`deliveries.py`, at most a day old): within its window, a
delivery captured before the move could be taken once more by the destination's
daemons, which costs one reconcile of the people it names.

Both databases are brought to the latest schema first (the same migrations on either
backend), so the tables and columns match. The source's writer locks of every target it
knows are held for the whole copy: a sync running there is refused, not raced. The
destination is written in one transaction (all or nothing), and must hold none of
orgsync's rows unless `overwrite` (then they are replaced). The row counts of the
destination are compared with the source's after the commit.

Copying a database onto itself would, with `overwrite`, delete everything before copying
nothing. A file under two names is caught by `os.path.samefile`; a server reached under
two URLs (`localhost` and `127.0.0.1`, another user, a pooler in front) is not, so a
random marker row is written into the source and looked for in the destination first
(then deleted): found, it is the same database.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from orgsync.core.errors import StateError
from orgsync.store.db import Session, SqlValue, encode_time
from orgsync.store.state import StateStore
from orgsync.store.writer_lock import WriterLock

# Parents before children (operations reference runs).
TABLES = (
    "runs",
    "operations",
    "links",
    "missing",
    "owned_groups",
    "learned_forms",
    "baselines",
    "source_digests",
    "webhook_queue",
    "target_identities",
    "write_marks",
    "restores",
)
_NOT_COPIED = ("leases", "replicas", "seen_deliveries")
_QUEUE_COLUMNS = ("id", "target", "kind", "person", "triggered_by", "received_at")


@dataclass(frozen=True, slots=True)
class Transfer:
    """What was copied: rows per table, as counted in the destination after the commit."""

    counts: dict[str, int]
    replaced: dict[str, int]
    """Rows the destination held before, deleted with `overwrite`."""


def count_rows(store: StateStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    with store.db.read() as session:
        for table in (*TABLES, *_NOT_COPIED):
            value = session.scalar(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - our names
            counts[table] = value if isinstance(value, int) else 0
    return counts


def copy_state(source: StateStore, destination: StateStore, *, overwrite: bool) -> Transfer:
    """Copy every table of `source` into `destination` (see the module docstring)."""
    if source.location == destination.location or _same_file(source, destination):
        raise StateError(f"--from and --to are the same database ({source.location})")
    if _same_database(source, destination):
        raise StateError(
            f"--from and --to are the same database, reached under two names "
            f"({source.location} and {destination.location}): a marker written into the "
            "first was found in the second; nothing was copied"
        )
    before = count_rows(destination)
    # A new database's own write generation row (`marks.py`) is not state to protect.
    held = {
        table: n for table, n in before.items() if n and table in TABLES and table != "write_marks"
    }
    if held and not overwrite:
        listed = ", ".join(f"{n} {table}" for table, n in held.items())
        raise StateError(
            f"{destination.location} already holds orgsync state ({listed}); nothing was "
            "copied. Copying into it would mix two installations' memory of whom they "
            "manage: point --to at an empty database, or pass --overwrite to replace it"
        )
    locks = _hold_all_writer_locks(source)
    try:
        with source.db.read() as reading:
            rows = {
                table: [row.values() for row in reading.query(f"SELECT * FROM {table}")]  # noqa: S608
                for table in TABLES
                if table != "webhook_queue"
            }
            rows["webhook_queue"] = _waiting_requests(reading)
        with destination.db.write() as writing:
            for table in reversed((*TABLES, *_NOT_COPIED)):
                writing.execute(f"DELETE FROM {table}")  # noqa: S608 - our names
            for table in TABLES:
                writing.insert_all(table, iter(rows[table]))
    finally:
        for lock in locks:
            lock.release()
    after = count_rows(destination)
    wrong = {t: (len(rows[t]), after[t]) for t in TABLES if after[t] != len(rows[t])}
    if wrong:
        detail = ", ".join(
            f"{t}: {want} in the source, {got} copied" for t, (want, got) in wrong.items()
        )
        raise StateError(f"the copy in {destination.location} is incomplete ({detail})")
    return Transfer(counts={t: after[t] for t in TABLES}, replaced=held)


def _same_file(source: StateStore, destination: StateStore) -> bool:
    """One SQLite file under two names (a symbolic or hard link, another spelling)."""
    if source.path is None or destination.path is None:
        return False
    try:
        return os.path.samefile(source.path, destination.path)
    except OSError:
        return False


def _same_database(source: StateStore, destination: StateStore) -> bool:
    """Whether a marker row written into `source` can be read in `destination`."""
    marker = secrets.token_hex(16)
    with source.db.write() as session:
        session.execute(
            "INSERT INTO state_markers (marker, written_at) VALUES (?, ?)",
            (marker, encode_time(source.db.clock())),
        )
    try:
        with destination.db.read() as session:
            found = session.scalar("SELECT COUNT(*) FROM state_markers WHERE marker = ?", (marker,))
    finally:
        with source.db.write() as session:
            session.execute("DELETE FROM state_markers WHERE marker = ?", (marker,))
    return found == 1


def _waiting_requests(session: Session) -> list[dict[str, SqlValue]]:
    """The queue's rows not done, unclaimed, the oldest one per (target, kind, person)."""
    found = session.query(
        "SELECT id, target, kind, person, triggered_by, received_at FROM webhook_queue "
        "WHERE done = 0 ORDER BY received_at, id"
    )
    kept: dict[tuple[SqlValue, SqlValue, SqlValue], dict[str, SqlValue]] = {}
    for row in found:
        values = row.values()
        key = (values["target"], values["kind"], values["person"])
        if key not in kept:
            kept[key] = {column: values[column] for column in _QUEUE_COLUMNS} | {
                "claimed_by": None,
                "claimed_at": None,
                "done": 0,
                "done_at": None,
            }
    return list(kept.values())


def _hold_all_writer_locks(store: StateStore) -> list[WriterLock]:
    """The writer lock of every target `store` has state for; refused if one is busy."""
    with store.db.read() as session:
        found = session.query(
            "SELECT target FROM runs UNION SELECT target FROM links "
            "UNION SELECT target FROM missing UNION SELECT target FROM owned_groups "
            "UNION SELECT target FROM learned_forms UNION SELECT target FROM leases "
            "UNION SELECT target FROM webhook_queue UNION SELECT target FROM baselines "
            "UNION SELECT target FROM target_identities"
        )
    if store.db.leases_expire:
        # On PostgreSQL the lease rows, not the advisory locks, say who is writing.
        held = store.lease_holders()
        if held:
            target, lease = next(iter(held.items()))
            raise StateError(
                f"target {target} is being synced from {store.location} right now (by "
                f"{lease.holder}): stop every orgsync (daemon, timers) using it before "
                "moving its state"
            )
    locks: list[WriterLock] = []
    busy: str | None = None
    for target in sorted(row.text("target") for row in found):
        lock = store.writer_lock(target)
        if not lock.try_acquire():
            busy = target
            break
        locks.append(lock)
    if busy is not None:
        for lock in locks:
            lock.release()
        raise StateError(
            f"target {busy} is being synced from {store.location} right now: stop every "
            "orgsync (daemon, timers) using it before moving its state"
        )
    return locks
