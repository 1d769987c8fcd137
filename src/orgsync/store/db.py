"""The one connection of a state database: the backend seam, and SQLite behind it.

`StateDB` and `Session` are what the rest of the store writes its SQL against: SQLite's
dialect (`?` and `:name` parameters), run in a `read()` or `write()` transaction, with
values read through the typed `Row`. Two backends implement them: `SqliteDB` here (the
embedded default) and `PostgresDB` (`postgres.py`). The few statements that cannot be
written once for both ask the session's `Dialect` for their backend's form.

This module owns everything that touches `sqlite3`/`sqlite_utils` directly: creating the
file with mode 0600, the connection pragmas (WAL, busy timeout, foreign keys, durable
commits), the lock that lets several threads share the connection, the translation of
driver errors into `StateError`, and the typed `Row` through which the rest of the store
reads values, so that SQLite's dynamic typing (and sqlite-utils' `Any`) stops here.
Schema and migrations live in `migrations.py`; the tables' meaning in the other modules.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sqlite3
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from orgsync.core.errors import StateError
from orgsync.store.writer_lock import WriterLock, WriterLocks, owner_hint

if TYPE_CHECKING:
    # Imported on first connection: sqlite-utils (and click, which it imports) cost every
    # command start-up time, `--help` and `validate --offline` included.
    from sqlite_utils import Database

SqlValue = str | int | float | bytes | None
"""What may be bound as a statement parameter."""

Params = Sequence[SqlValue] | Mapping[str, SqlValue]

Clock = Callable[[], datetime]

MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 5000

# umask is process-wide: two threads opening stores at once must not restore each other's
# saved value (the second would "restore" the restrictive one for good).
_UMASK_LOCK = threading.Lock()


def utc_now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- values


def encode_time(value: datetime) -> str:
    """Fixed-width ISO 8601 in UTC, so that text order is time order in SQL."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: the state database stores UTC only")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def iso_z(value: datetime) -> str:
    """A UTC time as the plan format writes it (`2026-01-01T00:00:00Z`), for JSON output."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def decode_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def encode_json(value: object) -> str:
    # sort_keys: the same payload always produces the same text (diffable, comparable).
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _corrupt_value(key: str, value: object, expected: str) -> StateError:
    return StateError(
        f"state database column {key!r} holds {type(value).__name__} {value!r}, expected {expected}"
    )


def text_time(key: str, text: str) -> datetime:
    """The time a text column `key` holds (as `Row.time` reads it)."""
    try:
        return decode_time(text)
    except ValueError:
        raise _corrupt_value(key, text, "an ISO 8601 timestamp") from None


_TEXT: frozenset[type] = frozenset({str})
_TEXT_OR_NULL: frozenset[type] = frozenset({str, type(None)})


class Row:
    """One result row with checked accessors; a wrong type is a corrupt database."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = values

    def values(self) -> dict[str, SqlValue]:
        """Every column, as stored (to copy a row to another database)."""
        out: dict[str, SqlValue] = {}
        for key, value in self._values.items():
            if value is not None and not isinstance(value, str | int | float | bytes):
                raise self._corrupt(key, "a value SQL stores")
            out[key] = value
        return out

    def _get(self, key: str) -> object:
        try:
            return self._values[key]
        except KeyError:
            raise StateError(f"state database row has no column {key!r}") from None

    def _corrupt(self, key: str, expected: str) -> StateError:
        return _corrupt_value(key, self._values.get(key), expected)

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._corrupt(key, "text")
        return value

    def opt_text(self, key: str) -> str | None:
        return None if self._get(key) is None else self.text(key)

    def integer(self, key: str) -> int:
        value = self._get(key)
        # bool is an int subclass but never comes out of SQLite: excluding it keeps this honest.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._corrupt(key, "integer")
        return value

    def opt_integer(self, key: str) -> int | None:
        return None if self._get(key) is None else self.integer(key)

    def time(self, key: str) -> datetime:
        return text_time(key, self.text(key))

    def opt_time(self, key: str) -> datetime | None:
        return None if self._get(key) is None else self.time(key)

    def json_object(self, key: str) -> dict[str, object]:
        try:
            value: object = json.loads(self.text(key))
        except json.JSONDecodeError:
            raise self._corrupt(key, "a JSON object") from None
        if not isinstance(value, dict):
            raise self._corrupt(key, "a JSON object")
        return {str(k): v for k, v in value.items()}


# --------------------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the backends' SQL, for the statements that cannot be written
    once in the common subset (everything else is written in SQLite's form and translated
    by the backend's session)."""

    name: str
    json_array_values: str
    """A subquery of the text values of a JSON array bound as one parameter, column
    `value`."""
    table_names: str
    """The names of the tables of the database (the current schema), column `name`."""
    schema_lock: str | None
    """Run first in a migration's transaction, to make concurrent migrations wait."""
    now_epoch: str | None = None
    """A query of the server's clock (seconds since the epoch), the one clock of leases
    shared by several hosts; None: the store's own clock (one host)."""
    lock_row: str = ""
    """Appended to a SELECT of one row that the transaction then decides on (a lease):
    locks it against a concurrent writer where the backend does not serialise writers,
    and skips it, rather than wait, while another transaction holds it."""
    share_row: str = ""
    """Appended to a SELECT of one row that a write transaction depends on (a fencing
    check): excludes a concurrent `lock_row` (a takeover), not a plain update (a renewal)."""

    def ddl(self, statement: str) -> str:
        """A migration's statement (written for SQLite) in this backend's form."""
        return statement


SQLITE = Dialect(
    name="sqlite",
    json_array_values="SELECT value FROM json_each(?)",
    table_names=(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ),
    schema_lock=None,  # BEGIN IMMEDIATE already serialises writers
)


class Session(ABC):
    """Statements run while the connection lock is held (see `StateDB.read`/`write`).

    SQL is written in SQLite's form (`?` or `:name` parameters); a backend translates it.
    """

    dialect: Dialect

    @abstractmethod
    def query(self, sql: str, params: Params = ()) -> list[Row]: ...

    def one(self, sql: str, params: Params = ()) -> Row | None:
        rows = self.query(sql, params)
        if len(rows) > 1:
            raise StateError(f"expected at most one row, got {len(rows)}: {sql}")
        return rows[0] if rows else None

    def texts(
        self, sql: str, params: Params = (), *, optional: Sequence[bool]
    ) -> list[tuple[str | None, ...]]:
        """The rows of a query of text columns as tuples in column order, each column
        checked as `Row.text` (`optional[i]` False) or `Row.opt_text` (True) checks it.

        For reads of a row per person (links at 100k people): a tuple per row and one
        check per column, rather than a `Row` and a checked accessor call per value."""
        names, rows = self._tuples(sql, params)
        if not rows:
            return []
        for index, (name, nullable) in enumerate(zip(names, optional, strict=True)):
            allowed = _TEXT_OR_NULL if nullable else _TEXT
            column = [row[index] for row in rows]
            if not set(map(type, column)) <= allowed:
                value = next(v for v in column if type(v) not in allowed)
                raise _corrupt_value(name, value, "text")
        return cast("list[tuple[str | None, ...]]", rows)

    def _tuples(self, sql: str, params: Params) -> tuple[list[str], list[tuple[object, ...]]]:
        """The column names and the rows of `sql` as tuples (a backend may do it directly)."""
        rows = [row.values() for row in self.query(sql, params)]
        return (list(rows[0]) if rows else []), [tuple(row.values()) for row in rows]

    @abstractmethod
    def scalar(self, sql: str, params: Params = ()) -> object: ...

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    @abstractmethod
    def insert_all(self, table: str, rows: Iterable[Mapping[str, SqlValue]]) -> None: ...

    def rerun(self, check: Callable[[Session], None]) -> None:
        """Run `check` (statements that decide whether the transaction may go on, raising
        if not) now; and, if the transaction is redone on a new connection (PostgreSQL,
        after the server ended the connection inside it: `PostgresDB._recover`), run it
        again there, rather than require its statements to answer as they did. For a
        decision on rows that may change harmlessly meanwhile (a lease renewed) or on
        the server's clock. SQLite never redoes a transaction: it just runs `check`."""
        check(self)


class SqliteSession(Session):
    dialect = SQLITE

    def __init__(self, db: Database) -> None:
        self._db = db

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        return [Row(dict(r)) for r in self._db.query(sql, _bind(params))]

    def _tuples(self, sql: str, params: Params) -> tuple[list[str], list[tuple[object, ...]]]:
        cursor = self._db.execute(sql, _bind(params))
        names = [column[0] for column in cursor.description or ()]
        return names, cursor.fetchall()

    def scalar(self, sql: str, params: Params = ()) -> object:
        cursor = self._db.execute(sql, _bind(params))
        row = cursor.fetchone()
        return None if row is None else row[0]

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._db.execute(sql, _bind(params)).rowcount

    def insert_all(self, table: str, rows: Iterable[Mapping[str, SqlValue]]) -> None:
        # alter=False: a row with an unknown column is a bug, never a reason to change the schema.
        self._db.table(table).insert_all(
            (dict(r) for r in rows), alter=False, ignore=False, replace=False
        )


def _bind(params: Params) -> Sequence[SqlValue] | dict[str, SqlValue]:
    # sqlite-utils accepts a dict, not any Mapping, for named parameters.
    return dict(params) if isinstance(params, Mapping) else params


# --------------------------------------------------------------------------- the database


class StateDB(ABC):
    """A state database behind one lock-guarded connection, whatever the backend.

    `read()` is a consistent snapshot; `write()` one transaction, durable when the block
    ends. Both may be used from several threads (they take turns).
    """

    path: Path | None
    """The SQLite file; None in memory and on a server."""
    clock: Clock
    """The store's clock: every time it writes that another process reads as a time
    (missing-since, runs, baselines, journal, queue). The host's on SQLite (one host);
    the server's on PostgreSQL (`ServerClock`: replicas on hosts whose clocks disagree
    must still agree on when a grace or an interval ends)."""
    created: bool
    """True when `open` created the database (a brand-new one, announced once)."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the database is, for people (a server's URL without any secret)."""

    @property
    def in_memory(self) -> bool:
        return False

    leases_expire: bool = False
    """Whether a target's lease row, expiring by time, decides who writes it (a server
    shared by hosts, where a holder may be frozen or cut off while its connection lives),
    rather than the kernel lock of `writer_lock` (one host; the row only reports)."""

    @abstractmethod
    def read(self) -> AbstractContextManager[Session]: ...

    @abstractmethod
    def write(self) -> AbstractContextManager[Session]: ...

    def companion(self) -> StateDB:
        """The same database on a connection of its own, for work that must not queue
        behind the runs' writes (lease renewals on a server); itself on SQLite, whose
        writers are serialised by the file anyway. Close it when done (a no-op for
        itself)."""
        return BorrowedDB(self)

    def bound_idle_transactions(self, limit: timedelta) -> None:
        """Have a transaction this process leaves idle longer than `limit` ended by the
        server (PostgreSQL, see there). On SQLite nothing: the kernel lock decides who
        writes, and a frozen process keeps it, by design."""
        return

    @abstractmethod
    def writer_lock(self, target: str) -> WriterLock:
        """The lock that makes its holder the one writer of `target` (see writer_lock.py)."""

    @abstractmethod
    def close(self) -> None: ...


class BorrowedDB(StateDB):
    """Another `StateDB` itself, handed out for a while (a companion on SQLite, a fenced
    view): everything goes to the original, and closing it leaves the original open."""

    def __init__(self, inner: StateDB) -> None:
        self._inner = inner
        self.path = inner.path
        self.clock = inner.clock
        self.created = inner.created
        self.leases_expire = inner.leases_expire

    @property
    def location(self) -> str:
        return self._inner.location

    @property
    def in_memory(self) -> bool:
        return self._inner.in_memory

    def read(self) -> AbstractContextManager[Session]:
        return self._inner.read()

    def write(self) -> AbstractContextManager[Session]:
        return self._inner.write()

    def writer_lock(self, target: str) -> WriterLock:
        return self._inner.writer_lock(target)

    def bound_idle_transactions(self, limit: timedelta) -> None:
        self._inner.bound_idle_transactions(limit)

    def close(self) -> None:
        pass


def server_now(db: StateDB, session: Session) -> datetime:
    """The server's time on PostgreSQL, asked now (what lease and replica expiries are
    written in, so that hosts whose clocks disagree still agree on who holds what and who
    is live); the store's clock on SQLite. Each answer also sets the store's
    `ServerClock` again, which every other time of the store is read from."""
    query = session.dialect.now_epoch
    if query is None:
        return db.clock()
    sent = _elapsed()
    value = session.scalar(query)
    received = _elapsed()
    if not isinstance(value, int | float):
        raise StateError(f"the state database's clock answered {value!r}")
    if isinstance(db.clock, ServerClock):
        db.clock.observe(float(value), sent, received)
    return datetime.fromtimestamp(float(value), UTC)


def _elapsed() -> float:
    """Seconds on this host's boot clock: never stepped (as the monotonic clock), and
    counting a suspended host's sleep too (Linux's CLOCK_BOOTTIME), so that a laptop or
    a VM resumed after hours does not read a server time hours old."""
    return time.clock_gettime(_BOOT_CLOCK)


_BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


class ServerClock:
    """A database server's clock, read without a round trip (the store's clock on
    PostgreSQL, `StateDB.clock`).

    Replicas on several hosts share one state database, and everything they write there
    that another replica reads as a time must be on one clock: when a person went
    missing (`removal_grace` counts from it), when a full pass ran (`full_interval`),
    when a run started and ended (quarantine, "done elsewhere", `status`, pruning), when
    a queued request was claimed, a baseline, a journal row. Each host's own clock is
    only as right as its NTP: one running two hours ahead would cut a person's grace
    short, or postpone the others' full passes. The server's clock is the one all of
    them read (leases already decide on it).

    Asking the server for every time (a round trip per journal row) would cost as much
    as the write itself. So the server's answer is kept with the moment it came, on this
    host's boot clock (`_elapsed`: never stepped, unlike the wall clock, so an NTP step
    or a wrong host clock never moves it), and a time is that answer plus the boot clock's
    seconds since. The server is asked when the store connects, each time a lease is
    taken, renewed or checked or a replica's registration renewed (those queries ask it
    anyway: `server_now`), and, with none of them for `REFRESH`, once more when a time is
    read. Error: half a round trip, plus the drift of this host's crystal over at most
    `REFRESH` (tens of ppm: milliseconds), far below any interval orgsync counts.
    """

    REFRESH = 60.0
    """Seconds after which a time read asks the server again (`refresh`)."""

    def __init__(self, host: Clock) -> None:
        self._host = host
        self._guard = threading.Lock()
        self._sample: tuple[float, float] | None = None  # (server epoch, boot clock)
        self.refresh: Callable[[], None] | None = None
        """Asks the server again, without waiting behind another thread's transaction
        (set by the database); None: only `observe` moves the clock."""

    def observe(self, server_epoch: float, sent: float, received: float) -> None:
        """The server answered `server_epoch` to a query sent at `sent` and answered at
        `received` (boot clock): taken as the server's time halfway."""
        with self._guard:
            first = self._sample is None
            self._sample = (server_epoch, (sent + received) / 2)
        if first:
            skew = self._host().timestamp() - server_epoch
            if abs(skew) > SKEW_WARNING.total_seconds():
                # The store goes by the server's clock; the host's is still wrong for
                # everything else it stamps (logs, notifications, the schedule).
                _log().warning(
                    "state.clock_skew",
                    seconds=round(skew, 1),
                    note="this host's clock differs from the state database server's; "
                    "orgsync records shared times on the server's clock, but fix NTP",
                )

    def __call__(self) -> datetime:
        sample = self._sample
        if sample is None or _elapsed() - sample[1] > self.REFRESH:
            refresh = self.refresh
            if refresh is not None:
                refresh()
            sample = self._sample
        if sample is None:  # never connected: nothing shared is written without a server
            return self._host()
        epoch, at = sample
        return datetime.fromtimestamp(epoch + (_elapsed() - at), UTC)


SKEW_WARNING = timedelta(minutes=1)
"""How far this host's clock may be from the state server's before a warning says so."""


def _log() -> Any:
    import structlog

    return structlog.get_logger(__name__)


class SqliteDB(StateDB):
    """A state database file (or `:memory:`) behind one lock-guarded connection.

    Every write runs in `BEGIN IMMEDIATE` … `COMMIT` and returns only after the commit, with
    `synchronous=FULL`, so a row written by a call that returned survives `kill -9` (and a
    power loss). The lock is re-entrant so a write may call helpers that read; writes do
    not nest (one call, one transaction).
    """

    def __init__(self, db: Database, path: Path | None, clock: Clock) -> None:
        self._db = db
        self._session = SqliteSession(db)
        self._lock = threading.RLock()
        self._closed = False
        self.path = path
        self.clock = clock
        self.created = False
        self._locks = WriterLocks(path)
        self._companions: tuple[int, int] | None = None
        """The -wal and -shm this connection has open (see `_follow_companions`)."""
        if path is not None:
            _OPEN_FILES.opened(path)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        clock: Clock = utc_now,
        prepare: Callable[[StateDB], object] | None = None,
        create: bool = True,
    ) -> SqliteDB:
        """Open `path` (`":memory:"` for tests) and run `prepare` (the migrations) on it.

        A file that does not exist is created (with `create`; else `NoStateDatabase`),
        fully prepared before it appears under its name, and `created` is then True. A file
        that exists must be a database with tables: an empty or unreadable one is an error
        naming it and how to start over, never silently replaced (it would forget whom
        orgsync manages). The connection is closed again if `prepare` fails.
        """
        if str(path) == MEMORY:
            return cls._prepared(cls._connect(MEMORY, None, clock), prepare)
        file = _real_file(Path(path))
        if not file.parent.is_dir():
            raise StateError(f"state database directory {file.parent} does not exist")
        if file.is_dir():
            raise StateError(f"state database {file} is a directory, not a file")
        with _UMASK_LOCK:
            # 077 also covers the -wal and -shm files SQLite creates lazily on first access,
            # which happens in `_connect` (journal_mode) or in `prepare` (the first write).
            previous = os.umask(0o077)
            try:
                created = False
                if not file.exists():
                    if not create:
                        raise NoStateDatabase(file)
                    created = cls._create(file, clock, prepare)
                else:
                    _refuse_stray_log(file)
                db = cls._prepared(cls._connect(str(file), file, clock), prepare)
            finally:
                os.umask(previous)
        db.created = created
        _warn_if_readable_by_others(file)
        return db

    @classmethod
    def _create(cls, file: Path, clock: Clock, prepare: Callable[[StateDB], object] | None) -> bool:
        """Build a new database beside `file` and link it in; False if another process
        created `file` first (then theirs is used).

        Built under a temporary name, so that a database under `file` is always a prepared
        one: an empty file there means something went wrong, never "being created".
        """
        scratch = file.with_name(f".{file.name}.new-{secrets.token_hex(4)}")
        try:
            _create_private(scratch)
            try:
                built = cls._connect(str(scratch), scratch, clock, fresh=True)
                cls._prepared(built, prepare).close()
            except StateError as exc:
                # Named by the path the operator configured, with the cause only: advice
                # about restoring or moving aside a scratch file would make no sense.
                cause = exc.__cause__ if isinstance(exc.__cause__, sqlite3.Error) else exc
                raise StateError(f"cannot create state database {file}: {cause}") from exc
            try:
                os.link(scratch, file)
            except FileExistsError:
                return False
            except OSError as exc:
                raise StateError(f"cannot create state database {file}: {exc.strerror}") from exc
            return True
        finally:
            for leftover in (scratch, *(Path(f"{scratch}{s}") for s in ("-wal", "-shm"))):
                leftover.unlink(missing_ok=True)

    @staticmethod
    def _prepared(db: SqliteDB, prepare: Callable[[StateDB], object] | None) -> SqliteDB:
        if prepare is not None:
            try:
                prepare(db)
            except BaseException:
                db.close()
                raise
        return db

    @classmethod
    def _connect(
        cls, target: str, path: Path | None, clock: Clock, *, fresh: bool = False
    ) -> SqliteDB:
        try:
            # isolation_level=None: the driver opens no implicit transactions; every
            # transaction is an explicit BEGIN IMMEDIATE below. check_same_thread=False: the
            # connection is shared by the applier's threads, serialised by `_lock`.
            # mode=rw: SQLite must never create the file itself (see `open`).
            conn = _sqlite_connect(target, path)
        except sqlite3.Error as exc:
            denied = _access_problem(path) if path is not None else None
            raise StateError(f"cannot open state database {target}: {denied or exc}") from exc
        from sqlite_utils import Database

        try:
            db = Database(conn, execute_plugins=False)
            store = cls(db, path, clock)
            store._configure(fresh=fresh)
        except sqlite3.DatabaseError as exc:
            conn.close()
            disk = _disk_problem(path, exc) if path is not None else None
            if disk is not None:
                # Not a broken database either: restoring or moving it aside for a full
                # or failing disk would forget whom orgsync manages.
                raise StateError(
                    f"cannot open state database {target}: {disk}. The database was not "
                    "found broken: keep it as it is"
                ) from exc
            if path is not None and _folder_read_only(path, exc):
                # SQLite in WAL mode creates <db>-shm beside the file to open it: a healthy
                # database must not be called unreadable (and a backup advised) for that.
                raise StateError(
                    f"cannot open state database {target}: its directory {path.parent} is "
                    "not writable (a read-only filesystem, or another user's folder), and "
                    f"SQLite needs to create {path.name}-wal and {path.name}-shm beside it. "
                    "The database itself was not found broken: keep it as it is, and run "
                    "orgsync where its directory is writable"
                ) from exc
            denied = _access_problem(path) if path is not None else None
            if denied is not None:
                # Not a broken database: the advice to restore or start over would lose
                # whom orgsync manages for a chown's sake.
                raise StateError(f"cannot open state database {target}: {denied}") from exc
            raise StateError(
                f"state database {target} is unreadable ({exc}). {start_over(target)}"
            ) from exc
        except sqlite3.Error as exc:
            conn.close()
            raise StateError(f"state database {target} is unusable: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return store

    def _configure(self, *, fresh: bool) -> None:
        conn = self._db.conn
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Schema SQL comes from this code only; nothing stored may run functions on read.
        conn.execute("PRAGMA trusted_schema = OFF")
        if self.path is not None:
            # The first statement that reads the file: a non-database fails here. Before
            # journal_mode, which would write a header into an empty file.
            tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            if not fresh and (tables is None or tables[0] == 0):
                size = self.path.stat().st_size
                raise StateError(
                    f"state database {self.path} exists but is empty ({size} bytes, no "
                    f"tables): it was truncated or replaced. {start_over(self.path)}"
                )
            current = conn.execute("PRAGMA journal_mode").fetchone()
            if not fresh and (current is None or str(current[0]).lower() != "wal"):
                # Switching to WAL rewrites the file's header: another application's
                # database (a wrong `path`) must be refused before, left as it was.
                from orgsync.store.migrations import schema_version

                schema_version(self)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StateError(
                    f"state database {self.path}: cannot enable WAL journaling "
                    f"(got {mode[0] if mode else None!r}); is it on a network file system?"
                )
        # FULL: in WAL mode NORMAL may lose the last commits on power loss; the journal
        # must not, and it is a few small rows per operation.
        conn.execute("PRAGMA synchronous = FULL")
        # A quarter of SQLite's 1000 pages: the log is copied into the database (and then
        # reused from its start) once past 1 MiB, not 4 MiB. On a volume with little room
        # left, a log allowed to grow to 4 MiB takes all of it, and then the copy that
        # would free it cannot grow the database: every write fails until a restart,
        # although the disk was cleared (`_free_the_log`).
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_PAGES}")

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A consistent snapshot for several SELECTs (a deferred read transaction)."""
        with self._guard():
            conn = self._db.conn
            if conn.in_transaction:
                # Inside a write of this thread: its transaction already is the snapshot.
                yield self._session
                return
            conn.execute("BEGIN DEFERRED")
            try:
                yield self._session
            finally:
                # An error may already have ended the transaction; COMMIT would then mask it.
                if conn.in_transaction:
                    conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One durable write transaction; committed before the block's caller continues.

        IMMEDIATE takes the write lock up front, so two processes never both read-then-write
        (the lease and the migrations depend on it) and a busy database waits for
        `busy_timeout` instead of failing on upgrade.
        """
        with self._guard():
            conn = self._db.conn
            conn.execute("BEGIN IMMEDIATE")
            changes = conn.total_changes
            try:
                yield self._session
                if self.path is not None and conn.total_changes != changes:
                    _count_commit(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise StateError("the state database is closed")
            try:
                if self.path is not None and not self._db.conn.in_transaction:
                    self._follow_companions(self.path)
                yield
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise StateError(
                        f"state database {self._name} is locked by another writer "
                        f"(waited {BUSY_TIMEOUT_MS} ms): {exc}"
                    ) from exc
                if _is_full(exc):
                    self._free_the_log()
                denied = _access_problem(self.path) if self.path is not None else None
                if denied is not None and "readonly" in str(exc):
                    raise StateError(f"state database {self._name}: {exc}: {denied}") from exc
                raise StateError(f"state database {self._name}: {exc}") from exc
            except sqlite3.DatabaseError as exc:
                hint = f" {start_over(self._name)}" if _is_corruption(exc) else ""
                raise StateError(f"state database {self._name}: {exc}.{hint}") from exc
            except sqlite3.Error as exc:
                raise StateError(f"state database {self._name}: {exc}") from exc

    def _free_the_log(self) -> None:
        """After a write refused for a full disk, copy the write-ahead log into the
        database and cut it to nothing. SQLite checkpoints on its own only once the log
        passes 1000 pages (4 MiB): on a volume that filled up, a log just below that
        stays as it is, each retry adds to it, and freed space goes straight back to it,
        so writes would keep failing after the disk was cleared. Best effort: with a
        reader in the log, or no room for the database to grow, it does nothing."""
        conn = self._db.conn
        if conn.in_transaction:
            return
        if conn.in_transaction:
            return
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _follow_companions(self, path: Path) -> None:
        """Reconnect if `<db>-wal` or `<db>-shm` was deleted or replaced while open.

        A cleanup job or an operator removing them under a running daemon leaves it
        committing into a log no other process sees: `orgsync status` and `sync` read the
        database without those commits (the links of people just invited: "unmanaged",
        leavers no longer removed), and a `kill -9` of the daemon loses them for good.
        Checkpointing the unlinked log into the file at once saves them; a new connection
        then makes a log every process shares again.
        """
        current = _companions(path)
        if self._companions is None or current == self._companions:
            self._companions = current
            return
        log_ = _log()
        log_.warning(
            "state.wal_replaced",
            path=str(path),
            note="the database's -wal or -shm file was deleted or replaced while orgsync "
            "had it open; its commits were checkpointed into the file and it reconnected. "
            "Never delete them while orgsync runs",
        )
        old = self._db
        old.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        from sqlite_utils import Database

        self._db = Database(_sqlite_connect(str(path), path), execute_plugins=False)
        self._session = SqliteSession(self._db)
        old.close()
        self._configure(fresh=False)
        self._companions = _companions(path)

    @property
    def _name(self) -> str:
        return str(self.path) if self.path is not None else MEMORY

    @property
    def location(self) -> str:
        return self._name

    @property
    def in_memory(self) -> bool:
        return self.path is None

    def writer_lock(self, target: str) -> WriterLock:
        return self._locks.lock(target)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
                if self.path is not None:
                    _OPEN_FILES.closed(self.path)


class _OpenFiles:
    """The database files this process has open (SQLite's own POSIX locks, which tell
    other processes, are invisible to the process holding them)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._count: dict[Path, int] = {}

    def opened(self, file: Path) -> None:
        with self._guard:
            self._count[file] = self._count.get(file, 0) + 1

    def closed(self, file: Path) -> None:
        with self._guard:
            left = self._count.get(file, 0) - 1
            if left > 0:
                self._count[file] = left
            else:
                self._count.pop(file, None)

    def __contains__(self, file: Path) -> bool:
        with self._guard:
            return file in self._count


_OPEN_FILES = _OpenFiles()

_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER = 32
_FRAME_HEADER = 24
_SHM_DMS = 128
"""The byte of `-shm` every connection to the database holds a shared lock on (SQLite's
unix VFS, `UNIX_SHM_DMS`)."""


def _count_commit(conn: sqlite3.Connection) -> None:
    """Raise the database's commit count (SQLite's `user_version`, in page 1's header),
    in the transaction about to commit: page 1, and the count with it, then goes into the
    write-ahead log with every commit that changed anything (one page more), and tells
    the log's own database from another file (`_refuse_stray_log`)."""
    row = conn.execute("PRAGMA user_version").fetchone()
    count = int(row[0]) if row is not None else 0
    conn.execute(f"PRAGMA user_version = {count % _COUNT_WRAP + 1}")


_COUNT_WRAP = 0x7FFFFFFF


def _refuse_stray_log(file: Path) -> None:
    """Refuse, before SQLite reads anything, a `-wal` beside `file` that is not its own.

    SQLite replays a write-ahead log it finds beside a database over whatever file is
    there: the log carries nothing naming its database. A backup copied over the file
    while the log of a crash was still beside it therefore gets the other database's
    pages written into it without an error, a database mixing both.

    What ties a log to its file: every commit of orgsync that changes anything raises the
    commit count in page 1 (`_count_commit`), so each commit's frames carry an image of
    page 1 with its count. A log starts (new salts in its header) only once everything
    before it was copied into the file, and a checkpoint copies into the file only page
    images of the log. So the file's count is at least the log's first image's less one
    (the commit before the log began), and at most its last image's: a crash's own log,
    even one checkpointed in part, always passes. A file outside that range is another
    file (a backup from before the log began, or a copy from later), refused. One inside
    it is the log's own, or a copy of it taken at one of the log's commits (or just
    before the log began), onto which replaying the log gives back that same database:
    the restore undone, never a mixture. A log with no page-1 image (written by a
    version of orgsync without the count), or a database open in another process (its
    log still growing), tells nothing, and is left to SQLite as before.
    """
    wal = Path(f"{file}-wal")
    try:
        if wal.stat().st_size < _WAL_HEADER + _FRAME_HEADER or _open_elsewhere(file):
            return
        with file.open("rb") as main:
            header = main.read(100)
        if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
            return  # not a database: the usual checks name it
        counters = _page_one_counters(wal)
        if not counters:
            return
        ours = int.from_bytes(header[60:64], "big")
        first, last = counters[0], max(counters)
        if first - 1 <= ours <= last:
            return
        # A process that opened the database meanwhile may have moved both files on
        # (a checkpoint, a new log): only files that stood still are judged.
        with file.open("rb") as main:
            still = main.read(100) == header
        if not still or _open_elsewhere(file) or _page_one_counters(wal) != counters:
            return
    except OSError:
        return  # unreadable: opening it says so
    raise StateError(
        f"state database {file}: the write-ahead log {wal} beside it is not this "
        f"database's (the database file's commit count is {ours}, the log holds commits "
        f"{first} to {last}): it was left by the database that was there "
        f"before {file} was replaced (a backup copied over it while the log of a crash "
        "was still beside it). SQLite would replay it into this file, mixing the two "
        "databases; nothing was read or changed. If you restored the file on purpose, "
        "stop every orgsync using it and move the log aside, not the database: "
        f"mv {wal} {wal}.stray && mv {file}-shm {file}-shm.stray (keep them: they hold "
        "the old database's last commits), then run again. If you did not, keep all "
        "three files as they are and find out what replaced the file"
    )


def _page_one_counters(wal: Path) -> list[int]:
    """The commit counts (`_count_commit`) of the page-1 images in `wal`'s current
    frames (those with its header's salts), in log order."""
    counters: list[int] = []
    with wal.open("rb") as log_:
        header = log_.read(_WAL_HEADER)
        if len(header) < _WAL_HEADER or int.from_bytes(header[:4], "big") not in _WAL_MAGIC:
            return counters
        page_size = int.from_bytes(header[8:12], "big")
        if page_size == 1:
            page_size = 65536
        salts = header[16:24]
        offset = _WAL_HEADER
        size = wal.stat().st_size
        while offset + _FRAME_HEADER + 64 <= size:
            log_.seek(offset)
            frame = log_.read(_FRAME_HEADER + 64)
            if frame[8:16] != salts:
                break  # a frame of an earlier log, beyond this one's end
            if int.from_bytes(frame[:4], "big") == 1:
                counters.append(int.from_bytes(frame[_FRAME_HEADER + 60 :], "big"))
            offset += _FRAME_HEADER + page_size
    return counters


def _open_elsewhere(file: Path) -> bool:
    """Whether a connection of any process has `file` open (SQLite's shared lock on
    `-shm`), asked without taking any lock."""
    if file in _OPEN_FILES:
        return True
    try:
        fd = os.open(f"{file}-shm", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        query = struct.pack("hh4xqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        return bool(struct.unpack("hh4xqqi4x", answer)[0] != fcntl.F_UNLCK)
    finally:
        os.close(fd)


WAL_PAGES = 250
"""Pages of write-ahead log after which a commit copies it into the database."""


def _primary_code(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code of `error` (its extended code's low byte)."""
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _is_full(error: sqlite3.Error) -> bool:
    return _primary_code(error) == sqlite3.SQLITE_FULL


FULL_BELOW = 1 << 20
"""Free bytes under which an I/O error opening the database is put down to a full disk
(SQLite reports one when it cannot make its 32 KiB -shm there)."""


def _disk_problem(path: Path, error: sqlite3.DatabaseError) -> str | None:
    """What the disk under `path` has to do with `error`: full, or failing; else None."""
    primary = _primary_code(error)
    if primary not in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return None
    try:
        stat = os.statvfs(path.parent)
        free: int | None = stat.f_bavail * stat.f_frsize
    except OSError:
        free = None
    if primary == sqlite3.SQLITE_FULL or (free is not None and free < FULL_BELOW):
        room = "" if free is None else f", {free} bytes free"
        return f"the disk of {path.parent} is full ({error}{room}): free space there and run again"
    return f"an I/O error on the disk of {path.parent} ({error}): check the disk and the system log"


def _warn_if_readable_by_others(file: Path) -> None:
    """Say so when users other than the owner may read the database (and so its -wal and
    -shm, which SQLite gives the file's mode): it holds every managed person's e-mail.
    orgsync creates it 0600; a copy restored with `cp` under umask 022 is 0644. Left as it
    is (the operator may mean it: a group that reads it), but never unnoticed."""
    try:
        mode = file.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        _log().warning(
            "state.readable_by_others",
            path=str(file),
            mode=f"{mode:o}",
            note="the state database holds the e-mail of everyone orgsync manages; "
            f"other users may open it. chmod 600 {file} unless that is meant",
        )


def _sqlite_connect(target: str, path: Path | None) -> sqlite3.Connection:
    return sqlite3.connect(
        f"{path.absolute().as_uri()}?mode=rw" if path is not None else target,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
        uri=path is not None,
    )


def _companions(path: Path) -> tuple[int, int] | None:
    """The inodes of `<db>-wal` and `<db>-shm`; None while either is missing."""
    try:
        return (os.stat(f"{path}-wal").st_ino, os.stat(f"{path}-shm").st_ino)
    except FileNotFoundError:
        return None


class NoStateDatabase(StateError):
    """There is no state database at the configured path yet (nothing has run)."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(
            f"no state database at {path} yet: the first `orgsync sync` (or the daemon) creates it"
        )
        self.path = path


def _real_file(path: Path) -> Path:
    """The file `path` names, symbolic links followed, as an absolute path.

    SQLite follows a link to the database and puts its -wal and -shm beside the real file;
    the writer locks, the write mark and the scratch file of a new database must go there
    too. Left beside the link, a process opening the database through the link and
    another opening it by its real name would each hold "the" writer lock of a target
    (both applying, inviting everyone twice) and keep marks of their own.
    """
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # a loop of links
        raise StateError(f"state database path {path} cannot be followed: {exc}") from exc


def _access_problem(path: Path) -> str | None:
    """Which of the database's files this process may not read and write, if any: a file
    another user owns (root ran orgsync once), or one made read-only."""
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if file.exists() and not os.access(file, os.R_OK | os.W_OK):
            hint = owner_hint(file, path) or " (chmod 600 it)"
            return (
                f"{file} is not readable and writable by this user{hint}. The database "
                "was not found broken: keep it as it is"
            )
    return None


def _folder_read_only(path: Path, error: sqlite3.DatabaseError) -> bool:
    """Whether `error` opening `path` comes from its directory refusing the files SQLite
    creates beside it (a read-only filesystem, a folder this user may not write)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code not in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):
        return False
    return path.exists() and not os.access(path.parent, os.W_OK)


def start_over(path: str | Path) -> str:
    """How to start over deliberately, for the message of an unusable database."""
    return (
        f"orgsync will not replace it by itself: a new database forgets whom orgsync "
        f"manages (people it invited or linked become unmanaged, and leavers among them are "
        f"no longer removed). Restore {path} from a backup; or, to start over on purpose, "
        f"stop every orgsync using it, move it aside with its -wal and -shm files "
        f"(mv {path} {path}.broken) and run again: a new database is created and announced"
    )


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


def _create_private(path: Path) -> None:
    """Create a new database file readable by its owner only, before SQLite opens it.

    An existing file keeps the mode its operator gave it; SQLite gives the -wal and -shm
    files the database file's mode.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"cannot create state database {path}: {exc.strerror}") from exc
    os.close(fd)
