"""Telling a state database that went back in time (`write_marks`, `<db>.mark`).

A state database restored from an old backup (or rolled back with a VM snapshot, or
copied back from another host) forgets silently what orgsync did after the backup was
taken: people it invited since are unknown to it, so they are "unmanaged", and a leaver
among them keeps their access. Nothing in the database itself can tell: it is a perfectly
good database of an earlier day.

So every write run (a sync's start and finish, `state forget`/`rename`, an accepted
restore) raises a write generation inside the database (one `write_marks` row, in the
same transaction as the run row) and then (a sync: at its end) copies it into a small
high-water-mark file beside the SQLite file (`<db>.mark`: JSON of the database's random
id, the generation, its time and what wrote it; never a secret; written to a scratch
file, fsynced, renamed over the mark). A database whose generation is below its mark's
is behind: write runs are refused (`StateBehind`, exit 1, nothing read or changed)
until an operator says the restore is known (`orgsync state accept-restore`), which
records the acknowledgement, raises the generation past the mark and makes every
target's next pass full.

The order is database first, file second: a crash in between leaves the database ahead
of its mark, which is fine (the next write raises the mark); the other order would leave
a mark ahead of a database that lost nothing and refuse it falsely. Writers of one file
take turns on an flock beside it, so a slower writer never lowers a mark another raised.

Not a refusal:
- no mark file (the first run with this code, or it was deleted): recreated by the next
  write (a restore from before then cannot be told, and a warning says so once);
- a mark naming another database id: the database was replaced on purpose (moved aside
  and created again, as `start_over` describes, or a `state migrate` destination): its
  mark is replaced at the next write;
- a mark that cannot be read (not JSON, truncated): replaced, with a warning (refusing
  would stop every sync on a file no orgsync output depends on);
- a mark that cannot be written (a read-only folder): the write is logged, never fatal.
Reading commands (`status`, `runs`, `explain`, dry runs) never write the mark.

On PostgreSQL the generation is kept in the database all the same, but there is no file
beside it: replicas on several hosts have no one folder in common, and a mark kept by one
host would refuse the others' legitimate writes as soon as it falls behind theirs (or, the
other way, see nothing). Detecting a restored server is out of scope: PostgreSQL's own
point-in-time recovery keeps its timeline id (`pg_control_checkpoint()`) for that.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from orgsync.core.errors import StateError
from orgsync.store.baselines import INVALIDATED
from orgsync.store.db import Session, StateDB, encode_time, text_time
from orgsync.store.writer_lock import share_owner

log = structlog.get_logger(__name__)

MARK_SUFFIX = ".mark"
MARKS_VERSION = 9
"""The schema version that added `write_marks`."""


@dataclass(frozen=True, slots=True)
class Mark:
    """One write generation of one database: `database` is its random id."""

    database: str
    generation: int
    written_at: datetime
    what: str

    def describe(self) -> str:
        when = self.written_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"generation {self.generation} written {when} by {self.what}"


class StateBehind(StateError):
    """The state database is older than its high-water mark: restored from a backup or
    rolled back. Write runs are refused until `orgsync state accept-restore`."""

    def __init__(self, location: str, database: Mark | None, mark: Mark, mark_file: Path) -> None:
        held = (
            database.describe()
            if database is not None
            else "no write generation at all (it predates every mark)"
        )
        self.summary = (
            f"state database {location} is behind its high-water mark: it holds {held}, "
            f"but {mark_file} records {mark.describe()}. It was restored from an older "
            "backup or rolled back (a VM snapshot, a copied file); write runs are refused "
            "until `orgsync state accept-restore`"
        )
        super().__init__(
            f"state database {location} is behind its high-water mark: it holds {held}, "
            f"but {mark_file} records {mark.describe()}. It was restored from an older "
            "backup or rolled back (a VM snapshot, a copied file). What orgsync did after "
            "that backup is unknown to it: people it invited or linked since are treated "
            "as unmanaged (a leaver among them would keep their access), and groups it "
            "created since as not its own. Nothing was read or changed. Review with "
            "`orgsync sync --dry-run` (it lists members and invitations the database does "
            "not know whom the source no longer reports as active), then run `orgsync "
            "state accept-restore` to go on with this database (the next pass of every "
            "target is full)"
        )
        self.database = database
        self.mark = mark
        self.mark_file = mark_file


def mark_file(path: Path) -> Path:
    return path.with_name(path.name + MARK_SUFFIX)


def read_mark_file(file: Path) -> Mark | None:
    """The mark in `file`; None when absent or unreadable (a warning says which)."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("state.mark_unreadable", file=str(file), error=exc.strerror)
        return None
    try:
        data = json.loads(text)
        return Mark(
            database=str(data["database"]),
            generation=int(data["generation"]),
            written_at=text_time("written_at", str(data["written_at"])),
            what=str(data["what"]),
        )
    except (ValueError, KeyError, TypeError, StateError):
        log.warning(
            "state.mark_unreadable",
            file=str(file),
            note="not a mark orgsync wrote; it is replaced by the next write run",
        )
        return None


def _write_mark_file(file: Path, mark: Mark) -> None:
    """Raise `file`'s mark to `mark` (never lower it), atomically and durably."""
    body = json.dumps(
        {
            "database": mark.database,
            "generation": mark.generation,
            "written_at": encode_time(mark.written_at),
            "what": mark.what,
        },
        sort_keys=True,
    )
    lock_path = file.with_name(file.name + ".lock")
    database = file.with_name(file.name.removesuffix(MARK_SUFFIX))
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    share_owner(fd, database)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = read_mark_file(file) if file.exists() else None
        if (
            current is not None
            and current.database == mark.database
            and current.generation >= mark.generation
        ):
            return
        scratch = file.with_name(f".{file.name}.new-{secrets.token_hex(4)}")
        try:
            out = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                share_owner(out, database)
                os.write(out, body.encode("utf-8"))
                os.fsync(out)
            finally:
                os.close(out)
            # No fsync of the folder: a rename lost to a power cut leaves the previous
            # mark, lower, which can only miss a restore, never refuse a good database;
            # and a sync's fsyncs are counted (bench/state_writes.py).
            os.replace(scratch, file)
        finally:
            scratch.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _row_mark(session: Session) -> Mark | None:
    row = session.one(
        "SELECT database_id, generation, written_at, what FROM write_marks WHERE id = 1"
    )
    if row is None:
        return None
    return Mark(
        database=row.text("database_id"),
        generation=row.integer("generation"),
        written_at=row.time("written_at"),
        what=row.text("what"),
    )


def bump_in(session: Session, now: datetime, what: str) -> Mark:
    """Raise the database's generation by one inside `session`'s write transaction."""
    was = _row_mark(session)
    mark = Mark(
        database=was.database if was is not None else secrets.token_hex(8),
        generation=(was.generation if was is not None else 0) + 1,
        written_at=now,
        what=what,
    )
    session.execute(
        """
        INSERT INTO write_marks (id, database_id, generation, written_at, what)
        VALUES (1, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET
            database_id = excluded.database_id,
            generation = excluded.generation,
            written_at = excluded.written_at,
            what = excluded.what
        """,
        (mark.database, mark.generation, encode_time(now), what),
    )
    return mark


class WriteMarks:
    """Owns `write_marks`, `restores` and the mark file beside a SQLite database."""

    def __init__(self, db: StateDB) -> None:
        self._db = db

    @property
    def file(self) -> Path | None:
        return None if self._db.path is None else mark_file(self._db.path)

    def database_mark(self) -> Mark | None:
        with self._db.read() as session:
            return _row_mark(session)

    def behind(self) -> StateBehind | None:
        """The refusal when the database is older than its mark file (None: it is not,
        or there is no file to compare with). Reads only."""
        file = self.file
        if file is None:
            return None
        mark = read_mark_file(file)
        if mark is None:
            return None
        database = self.database_mark()
        if database is not None and database.database != mark.database:
            return None  # another database replaced this one on purpose
        if database is not None and database.generation >= mark.generation:
            return None
        return StateBehind(self._db.location, database, mark, file)

    def check_writable(self) -> None:
        """Refuse a write run on a database behind its mark (`StateBehind`)."""
        refusal = self.behind()
        if refusal is not None:
            raise refusal

    def initialize(self) -> None:
        """A database created just now: its id and generation 0, so a mark that another
        database left beside the path is seen as another database's."""
        with self._db.write() as session:
            # Two processes opening a new PostgreSQL database at once both find no row
            # (its writers are not serialised as SQLite's are): the first id stays.
            session.execute(
                "INSERT INTO write_marks (id, database_id, generation, written_at, what) "
                "VALUES (1, ?, 0, ?, 'creation') ON CONFLICT (id) DO NOTHING",
                (secrets.token_hex(8), encode_time(self._db.clock())),
            )

    def publish(self, mark: Mark) -> None:
        """Copy a generation the database committed into the mark file (never fatal)."""
        file = self.file
        if file is None:
            return
        had = file.exists()
        try:
            _write_mark_file(file, mark)
        except OSError as exc:
            log.warning(
                "state.mark_not_written",
                file=str(file),
                error=exc.strerror,
                note="a restore of this database to an older backup cannot be detected "
                "until the mark can be written",
            )
            return
        if not had and mark.generation > 1:
            log.warning(
                "state.mark_created",
                file=str(file),
                generation=mark.generation,
                note="the high-water mark was missing (deleted, or new in this version); "
                "a restore from before now cannot be detected",
            )

    def bump(self, what: str) -> Mark:
        """Raise the generation in a transaction of its own, then the mark."""
        with self._db.write() as session:
            mark = bump_in(session, self._db.clock(), what)
        self.publish(mark)
        return mark

    def accept_restore(self) -> tuple[StateBehind | None, Mark]:
        """Record that the operator knows the database went back (`state accept-restore`):
        an acknowledgement row, every baseline invalidated (the next pass of every target
        is full), the generation raised past the mark. Returns the refusal it ends (None
        when the database was not behind) and the new mark."""
        refusal = self.behind()
        now = self._db.clock()
        with self._db.write() as session:
            database = _row_mark(session)
            floor = refusal.mark.generation if refusal is not None else 0
            if database is not None and database.generation < floor:
                session.execute("UPDATE write_marks SET generation = ? WHERE id = 1", (floor,))
            mark = bump_in(session, now, "state accept-restore")
            session.execute(
                """
                INSERT INTO restores (accepted_at, database_generation, database_written_at,
                    mark_generation, mark_written_at)
                VALUES (?, ?, ?, ?, ?)
                """,
                (
                    encode_time(now),
                    database.generation if database is not None else None,
                    encode_time(database.written_at) if database is not None else None,
                    refusal.mark.generation if refusal is not None else None,
                    encode_time(refusal.mark.written_at) if refusal is not None else None,
                ),
            )
            # A baseline may be older than what the target holds: the next pass is full.
            session.execute("UPDATE baselines SET config = ?", (INVALIDATED,))
        self.publish(mark)
        return refusal, mark

    def last_accepted(self) -> datetime | None:
        with self._db.read() as session:
            value = session.scalar("SELECT MAX(accepted_at) FROM restores")
        return None if not isinstance(value, str) else text_time("accepted_at", value)
