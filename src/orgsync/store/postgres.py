"""The state database on a PostgreSQL server (`[state] url`), through psycopg 3.

The same tables, migrations and SQL as on SQLite (`db.py` is the seam): statements are
written in SQLite's form and translated here (`?` and `:name` parameters become
psycopg's), migrations are applied through `POSTGRESQL.ddl` (TEXT compares byte-wise,
as SQLite's does, so times stored as ISO text sort as times whatever the database's
locale). One connection per store, shared by threads in turn like SQLite's; every write
is a transaction committed (durably: `synchronous_commit` is the server's business, on
by default) before the block's caller continues.

Who writes a target is decided by its lease row (`leases.py`, `leases_expire`): it
expires by the server's clock even while a paused or cut-off holder's connection lives
on, and carries a fencing token that every write of a run checks. Lease taking and
renewing run on a connection of their own (`companion`). The session-level advisory
lock of `writer_lock` (`AdvisoryLock`: granted to one session at a time, dropped the
moment that session ends) is taken only by `orgsync state migrate`, which also refuses a
database with a lease held (`transfer.py`).

psycopg is an optional dependency (`pip install orgsync[postgresql]`): imported on first
use, with an error saying how to install it.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from orgsync.core.errors import StateError
from orgsync.core.redaction import Scrubber
from orgsync.core.state_url import (
    DEFAULT_SSLMODE,
    redact_state_url,
    state_url_problem,
    tls_settings,
    unverified_tls,
)
from orgsync.store.db import (
    Clock,
    Dialect,
    NoStateDatabase,
    Params,
    Row,
    ServerClock,
    Session,
    SqlValue,
    StateDB,
    server_now,
    utc_now,
)
from orgsync.store.writer_lock import WriterLock

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT_S = 10
LOCK_TIMEOUT_MS = 5000
"""How long a statement waits for a row another transaction holds (SQLite's busy
timeout): a stuck writer elsewhere makes a run fail with a clear error, not hang."""

_KEEPALIVES = (
    ("tcp_keepalives_idle", 30),
    ("tcp_keepalives_interval", 10),
    ("tcp_keepalives_count", 3),
)
_LOCK_SPACE = 0x6F726773  # "orgs": the first key of orgsync's advisory locks
_SCHEMA_LOCK = 0  # second key of the lock that serialises migrations
_POLL = 0.05
RETRY_DELAYS = (0.1, 0.5, 2.0)
"""Pauses before opening a lost connection again, within one transaction: a server
restart or a failover takes a second or two; longer, and the error is the run's."""
_XID = "SELECT txid_current_if_assigned()"
_T = TypeVar("_T")


def _psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError:
        raise StateError(
            "[state] url names a PostgreSQL database, but psycopg (PostgreSQL's driver) is "
            "not installed: install it with `pip install 'orgsync[postgresql]'`"
        ) from None
    return psycopg


# --------------------------------------------------------------------------- dialect


@dataclass(frozen=True, slots=True)
class _PostgresDialect(Dialect):
    def ddl(self, statement: str) -> str:
        # WITHOUT ROWID is SQLite's storage hint; a PostgreSQL table has no rowid anyway.
        statement = re.sub(r"\)\s*WITHOUT ROWID\s*$", ")", statement.rstrip())
        # Byte order, as SQLite's BINARY collation: ISO times and run ids sort as written.
        return re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', statement)


POSTGRESQL = _PostgresDialect(
    name="postgresql",
    json_array_values="SELECT jsonb_array_elements_text(CAST(? AS jsonb)) AS value",
    # From the catalog, not information_schema: that one lists only the tables our role
    # has a privilege on, and another application's `runs` or `leases` in our schema
    # would pass for an empty database (tables, partitioned tables, views, materialized
    # and foreign tables: any name a CREATE TABLE of ours would collide with).
    table_names=(
        "SELECT CAST(relname AS text) AS name FROM pg_catalog.pg_class "
        "WHERE relnamespace = CAST(current_schema() AS regnamespace) "
        "AND relkind IN ('r', 'p', 'v', 'm', 'f')"
    ),
    schema_lock=f"SELECT pg_advisory_xact_lock({_LOCK_SPACE}, {_SCHEMA_LOCK})",
    now_epoch="SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS double precision)",
    lock_row=" FOR UPDATE SKIP LOCKED",
    share_row=" FOR KEY SHARE",
)


@lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite's parameters (`?`, `:name`) as psycopg's (`%s`, `%(name)s`); a literal `%`
    doubled. Quoted literals and identifiers are copied as they are."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char in "'\"":
            end = sql.index(char, i + 1) + 1  # the store's SQL has no escaped quotes
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif char == "?":
            out.append("%s")
            i += 1
        elif char == "%":
            out.append("%%")
            i += 1
        elif char == ":" and i + 1 < n and sql[i + 1] == ":":
            out.append("::")  # a cast
            i += 2
        elif char == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_"):
            match = re.match(r"[A-Za-z_]\w*", sql[i + 1 :])
            assert match is not None
            out.append(f"%({match.group()})s")
            i += 1 + match.end()
        else:
            out.append(char)
            i += 1
    return "".join(out)


# --------------------------------------------------------------------------- sessions


class PostgresSession(Session):
    """The statements of one transaction of a `PostgresDB`, each recorded with its
    result while the transaction lasts, so that the database can redo it on a new
    connection when the server ends ours in the middle (`PostgresDB._recover`)."""

    dialect = POSTGRESQL

    def __init__(self, db: PostgresDB) -> None:
        self._db = db

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        names, rows = self._db._statement(sql, _query(sql, params))
        return [Row(dict(zip(names, values, strict=True))) for values in rows]

    def _tuples(self, sql: str, params: Params) -> tuple[list[str], list[tuple[object, ...]]]:
        names, rows = self._db._statement(sql, _query(sql, params))
        return names, rows

    def scalar(self, sql: str, params: Params = ()) -> object:
        return self._db._statement(sql, _scalar(sql, params), clock=sql == POSTGRESQL.now_epoch)

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._db._statement(sql, _execute(sql, params))

    def insert_all(self, table: str, rows: Iterable[Mapping[str, SqlValue]]) -> None:
        batch = [dict(r) for r in rows]
        if not batch:
            return
        columns = list(batch[0])
        if any(list(r) != columns for r in batch):
            raise StateError(f"rows inserted into {table} have different columns")
        # Table and column names come from this code, never from data.
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
            f"VALUES ({', '.join(f'%({c})s' for c in columns)})"
        )

        def insert(conn: psycopg.Connection[Any]) -> int:
            with conn.cursor() as cursor:
                cursor.executemany(sql, batch)
                return cursor.rowcount

        self._db._statement(sql, insert)

    def rerun(self, check: Callable[[Session], None]) -> None:
        self._db._rerun(check)


def _bound(params: Params) -> Any:
    return dict(params) if isinstance(params, Mapping) else tuple(params)


def _query(
    sql: str, params: Params
) -> Callable[[psycopg.Connection[Any]], tuple[list[str], list[tuple[object, ...]]]]:
    def run(conn: psycopg.Connection[Any]) -> tuple[list[str], list[tuple[object, ...]]]:
        cursor = conn.execute(translate(sql), _bound(params))
        return [c.name for c in cursor.description or ()], cursor.fetchall()

    return run


def _scalar(sql: str, params: Params) -> Callable[[psycopg.Connection[Any]], object]:
    def run(conn: psycopg.Connection[Any]) -> object:
        row = conn.execute(translate(sql), _bound(params)).fetchone()
        return None if row is None else row[0]

    return run


def _execute(sql: str, params: Params) -> Callable[[psycopg.Connection[Any]], int]:
    def run(conn: psycopg.Connection[Any]) -> int:
        return conn.execute(translate(sql), _bound(params)).rowcount

    return run


class _Redone(Exception):
    """Unwinds a `Session.rerun` check whose connection was lost: the redo ran it again."""


@dataclass(slots=True)
class _Step:
    """A statement run in the current transaction and what it answered (`clock`: the
    server's time, which a redo reads anew), or a `check` to run again on a redo."""

    sql: str
    run: Callable[[psycopg.Connection[Any]], object] | None
    result: object = None
    clock: bool = False
    check: Callable[[Session], None] | None = None


# --------------------------------------------------------------------------- the database


class PostgresDB(StateDB):
    """A state database in a PostgreSQL database, behind one lock-guarded connection."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        connect: Callable[[], psycopg.Connection[Any]],
        url: str,
        scrubber: Scrubber,
        clock: Clock,
    ) -> None:
        self._conn = conn
        self._connect = connect
        self._session = PostgresSession(self)
        self._steps: list[_Step] | None = None
        """The current transaction's statements (`_statement`); None outside one."""
        self._redoing = False
        self._unrecorded = False
        """Inside a `Session.rerun` check: its statements are not recorded."""
        self._begun = "BEGIN"
        self._retries = 0
        """Connections the current transaction may still open again (`_reconnect`)."""
        self._lock = threading.RLock()
        self._closed = False
        self._url = redact_state_url(url)
        self._scrubber = scrubber
        self.path = None
        self.clock = clock
        self.created = False
        self.leases_expire = True
        self._idle_limit: timedelta | None = None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        password: str | None = None,
        clock: Clock = utc_now,
        server_clock: bool = True,
        prepare: Callable[[StateDB], object] | None = None,
        create: bool = True,
    ) -> PostgresDB:
        """Connect to `url` and run `prepare` (the migrations).

        A database with no table gets the schema (with `create`; else `NoStateDatabase`)
        and `created` is then True; one with tables that are not orgsync's is refused by
        the migrations. `clock` is this host's; the store's clock is the server's
        (`ServerClock`, set at once here), or `clock` itself without `server_clock`
        (tests that need times of their choosing).
        """
        problem = state_url_problem(url)
        if problem is not None:
            raise StateError(f"state url {redact_state_url(url)} {problem}")
        connect = _connector(url, password)
        shared = ServerClock(clock) if server_clock else clock
        db = cls(connect(), connect, url, Scrubber([password] if password else []), shared)
        if isinstance(shared, ServerClock):
            shared.refresh = db._sample_clock
        try:
            with db.read() as session:
                if isinstance(shared, ServerClock):
                    server_now(db, session)
                tables = {row.text("name") for row in session.query(POSTGRESQL.table_names)}
                if "schema_version" in tables:
                    from orgsync.store.migrations import refuse_foreign_versions

                    refuse_foreign_versions(db, session)
                empty = not tables
            if not (empty and not create) and prepare is not None:
                prepare(db)
        except BaseException:
            db.close()
            raise
        if empty and not create:
            db.close()
            raise NoStateDatabase(db.location)
        db.created = empty
        return db

    @property
    def location(self) -> str:
        return self._url

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A consistent snapshot for several SELECTs (a repeatable-read transaction)."""
        with self._guard():
            if self._steps is not None or self._in_transaction():
                yield self._session  # inside a write of this thread: that is the snapshot
                return
            self._begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield self._session
            finally:
                self._steps = None
                if self._in_transaction():
                    try:
                        self._conn.execute("COMMIT")
                    except _psycopg().OperationalError:
                        # Everything was read already; the next transaction reconnects.
                        if not self._connection_lost():
                            raise

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction, committed before the block's caller continues.

        A connection the server ends inside it (a restart, a failover, an idle timeout
        of a proxy) is opened again and the transaction redone there (`_recover`); one
        ended while COMMIT was under way is asked whether it committed before anything
        is redone (`_commit`), so nothing is ever written twice.
        """
        with self._guard():
            self._begin("BEGIN")
            try:
                yield self._session
                self._commit()
            except BaseException:
                if self._in_transaction():
                    try:
                        self._conn.execute("ROLLBACK")
                    except _psycopg().OperationalError:
                        # Lost too: the server rolls back what it ends. The block's own
                        # error is the one to tell.
                        if not self._connection_lost():
                            raise
                raise
            finally:
                self._steps = None

    def _begin(self, statement: str) -> None:
        """Start a transaction, on a new connection if the server ended ours (a restart,
        a failover, an idle timeout): nothing was done in it yet, so nothing is lost, and
        a daemon goes on reconciling instead of failing every run until restarted."""
        self._retries = len(RETRY_DELAYS)
        self._begun = statement
        first = True
        while True:
            try:
                self._conn.execute(statement)
            except _psycopg().OperationalError as exc:
                # `closed` too: psycopg closes a connection whose server ended it mid-call.
                if not self._connection_lost():
                    raise
                self._reconnect(exc, first=first)
                first = False
            else:
                self._steps = []
                return

    def _connection_lost(self) -> bool:
        return bool(self._conn.broken or self._conn.closed)

    def _reconnect(self, lost: Exception, *, first: bool = False) -> None:
        """Open the connection again after `lost` ended it: at once the first time a
        transaction finds it ended before it began, else after a short pause (a server
        restarting, a failover under way), at most `RETRY_DELAYS` times a transaction;
        then `lost` is the error."""
        pg = _psycopg()
        while True:
            if not first:
                if self._retries <= 0:
                    raise StateError(
                        f"state database {self._url}: the connection was lost and could not "
                        f"be opened again in time: {self._scrub(lost)}"
                    ) from lost
                time.sleep(RETRY_DELAYS[len(RETRY_DELAYS) - self._retries])
                self._retries -= 1
            first = False
            self._conn.close()
            try:
                self._conn = self._connect()
                self._limit_idle_transactions()
            except (StateError, pg.OperationalError) as exc:
                if isinstance(exc, StateError) and "read-only" in str(exc):
                    raise  # a standby answered: no pause makes it the primary
                lost = exc
                continue
            _log().warning(
                "state.reconnected", url=self._url, error=self._scrub(lost).splitlines()[0]
            )
            return

    def _statement(
        self, sql: str, run: Callable[[psycopg.Connection[Any]], _T], *, clock: bool = False
    ) -> _T:
        """`run` a statement on the connection; inside a transaction, recorded with its
        result, and on a connection the server ended, the transaction redone on a new
        one first (`_recover`)."""
        steps = self._steps
        if steps is None or self._redoing:
            return run(self._conn)
        if self._unrecorded:
            try:
                return run(self._conn)
            except _psycopg().OperationalError as exc:
                if not self._connection_lost():
                    raise
                self._recover(exc)
                raise _Redone from exc
        while True:
            try:
                result = run(self._conn)
            except _psycopg().OperationalError as exc:
                if not self._connection_lost():
                    raise
                self._recover(exc)
                continue
            steps.append(_Step(sql, run, result, clock=clock))
            return result

    def _rerun(self, check: Callable[[Session], None]) -> None:
        """`Session.rerun`: `check` is recorded as one step, its statements not (a redo
        runs it again instead of comparing their answers)."""
        steps = self._steps
        if steps is None or self._redoing or self._unrecorded:
            check(self._session)
            return
        steps.append(_Step("", None, check=check))
        self._unrecorded = True
        try:
            check(self._session)
        except _Redone:
            pass  # the connection was lost inside it: the redo has run it again
        finally:
            self._unrecorded = False

    def _recover(self, lost: Exception, *, connected: bool = False) -> None:
        """Redo the current transaction on a new connection, after the server ended ours
        (`lost`) before its COMMIT: the server rolled it back, so nothing of it is there.

        Its statements are run again in order, and each must answer what it answered the
        first time: the block that issued them decided on those answers, so it would
        issue the same statements again, and the redo writes what it would have written.
        The server's clock alone is read anew (later), and a check run through
        `Session.rerun` (a lease's fencing) is run again rather than compared: a lease
        taken over or expired meanwhile raises its `LeaseLost`. Anything else changed
        meanwhile (a row the block read was written): the redo is given up, nothing is
        written, and the error says so.
        """
        steps = self._steps
        assert steps is not None
        while True:
            if not connected:
                self._reconnect(lost)
            connected = False
            self._redoing = True
            try:
                self._conn.execute(self._begun)
                for step in steps:
                    if step.check is not None:
                        step.check(self._session)
                        continue
                    assert step.run is not None
                    again = step.run(self._conn)
                    if not step.clock and again != step.result:
                        raise StateError(
                            f"state database {self._url}: the connection was lost inside a "
                            f"transaction ({self._scrub(lost).splitlines()[0]}), and the "
                            "database had changed when it was redone on a new connection "
                            f"({step.sql.split()[0]} answered otherwise): nothing of it was "
                            "written"
                        ) from lost
            except _psycopg().OperationalError as exc:
                if not self._connection_lost():
                    raise
                lost = exc
                continue
            finally:
                self._redoing = False
            return

    def _commit(self) -> None:
        """COMMIT; if the connection is lost while it is under way, whether the server
        committed is unknown: ask it by the transaction's id on a new connection, and
        redo the transaction only if it did not (never twice)."""
        pg = _psycopg()
        while True:
            xid = self._statement(_XID, _scalar(_XID, ()), clock=True)
            try:
                self._conn.execute("COMMIT")
            except pg.OperationalError as exc:
                if not self._connection_lost():
                    raise
                if xid is None:
                    return  # it had written nothing: committed or not, nothing is lost
                if self._committed(int(str(xid)), exc):
                    return
                self._recover(exc, connected=True)
            else:
                return

    def _committed(self, xid: int, lost: Exception) -> bool:
        """Whether transaction `xid`, whose COMMIT was under way when `lost` ended the
        connection, committed (asked on a new connection; waiting while the server still
        finishes it).

        Still in progress: the server has not seen the COMMIT (lost on the way) and its
        session has not yet noticed the connection is gone (it would after the
        keepalives, a minute). Only that session can commit it, and it never will now:
        it is ended (`pg_terminate_backend`, by the transaction's id, allowed on the
        role's own sessions), which rolls the transaction back, or lets a commit under
        way finish; either is final and then known."""
        pg = _psycopg()
        while True:
            self._reconnect(lost)
            deadline = time.monotonic() + LOCK_TIMEOUT_MS / 1000
            ended = False
            try:
                while True:
                    row = self._conn.execute("SELECT txid_status(%s)", (xid,)).fetchone()
                    status = None if row is None else row[0]
                    if status == "committed":
                        return True
                    if status == "aborted":
                        return False
                    if status == "in progress" and not ended:
                        self._conn.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE backend_xid = CAST(CAST(%s AS text) AS xid)",
                            (xid & 0xFFFFFFFF,),
                        )
                        ended = True
                        continue
                    if status != "in progress" or time.monotonic() > deadline:
                        raise StateError(
                            f"state database {self._url}: the connection was lost while a "
                            f"transaction committed ({self._scrub(lost).splitlines()[0]}), "
                            f"and the server cannot say whether it did (status {status!r}): "
                            "the run stops here rather than risk writing it twice"
                        ) from lost
                    time.sleep(_POLL)
            except pg.OperationalError as exc:
                if not self._connection_lost():
                    raise
                lost = exc

    def bound_idle_transactions(self, limit: timedelta) -> None:
        """Have the server end any transaction of ours left idle longer than `limit`,
        releasing the rows it locks (`idle_in_transaction_session_timeout`, on this
        connection and every one it opens again or pairs with).

        A replica frozen (SIGSTOP, a VM pause) or cut off inside a transaction, a lease
        renewal or a fenced write, keeps its connection open, and its locks with it: the
        kernel of a frozen process still answers the keepalives. The takeover of its
        lease row (`FOR UPDATE SKIP LOCKED`) would then skip that row for as long as
        the freeze lasts, and the target would stay unreconciled however long ago its
        lease expired. Given the lease TTL, nobody waits longer than that. Our own
        transactions never wait on anything but the database, so only a frozen or
        starved process reaches the limit, and a process resumed after it finds its
        session ended and its lease lost, and writes nothing.
        """
        self._idle_limit = limit
        with self._guard():
            self._limit_idle_transactions()

    def _limit_idle_transactions(self) -> None:
        if self._idle_limit is not None:
            milliseconds = max(1, int(self._idle_limit.total_seconds() * 1000))
            self._conn.execute(f"SET idle_in_transaction_session_timeout = {milliseconds}")

    def _sample_clock(self) -> None:
        """Ask the server its time again for the store's `ServerClock` (which asks when its
        last answer is old): never waiting for another thread's transaction, nor inside a
        failed one of this thread's; on any error the clock goes on from its last answer."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._closed:
                return
            status = _psycopg().pq.TransactionStatus
            if self._conn.info.transaction_status == status.INERROR:
                return
            with self.read() as session:
                server_now(self, session)
        except StateError:
            pass
        finally:
            self._lock.release()

    def tls(self) -> str:
        """How the store's connection is protected, in a few words for `validate`."""
        with self._guard():
            if not self._conn.pgconn.ssl_in_use:
                return "TLS off"
            mode = next(
                (
                    o.val.decode()
                    for o in self._conn.pgconn.info
                    if o.keyword == b"sslmode" and o.val
                ),
                "prefer",
            )
        if mode == "verify-full":
            return "TLS, server certificate verified"
        if mode == "verify-ca":
            return "TLS, server certificate's CA verified (not its host name)"
        return f"TLS, server certificate NOT verified (sslmode={mode})"

    def _in_transaction(self) -> bool:
        # UNKNOWN is a connection the server ended: no transaction of ours is open on it.
        status = _psycopg().pq.TransactionStatus
        return bool(
            self._conn.info.transaction_status in (status.INTRANS, status.INERROR, status.ACTIVE)
        )

    @contextmanager
    def _guard(self) -> Iterator[None]:
        pg = _psycopg()
        with self._lock:
            if self._closed:
                raise StateError("the state database is closed")
            try:
                yield
            except pg.errors.LockNotAvailable as exc:
                raise StateError(
                    f"state database {self._url} is locked by another writer "
                    f"(waited {LOCK_TIMEOUT_MS} ms): {self._scrub(exc)}"
                ) from exc
            except pg.Error as exc:
                raise StateError(f"state database {self._url}: {self._scrub(exc)}") from exc

    def _scrub(self, exc: BaseException) -> str:
        return self._scrubber(str(exc).strip())

    def writer_lock(self, target: str) -> WriterLock:
        return AdvisoryLock(self, target)

    def companion(self) -> PostgresDB:
        """A new connection to the same database (its own lock, its own transactions)."""
        with self._lock:
            if self._closed:
                raise StateError("the state database is closed")
        twin = PostgresDB(self._connect(), self._connect, self._url, self._scrubber, self.clock)
        twin.leases_expire = self.leases_expire
        if self._idle_limit is not None:
            twin.bound_idle_transactions(self._idle_limit)
        return twin

    def listen(self, channel: str) -> Listener:
        """A connection of its own listening on `channel` (see `Listener`)."""
        return Listener(self, channel)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


def _connector(url: str, password: str | None) -> Callable[[], psycopg.Connection[Any]]:
    """A function opening a new connection to `url`, its errors as `StateError`s that
    name the server (never the password)."""
    pg = _psycopg()
    shown = redact_state_url(url)
    scrubber = Scrubber([password] if password else [])
    extra: dict[str, Any] = {"application_name": "orgsync"}
    if password:
        extra["password"] = password
    if "connect_timeout" not in url:
        extra["connect_timeout"] = CONNECT_TIMEOUT_S
    # TLS verification stays on by default (core.state_url.tls_settings): libpq's own
    # default would encrypt to whoever answers, checking nobody's certificate.
    extra.update(
        tls_settings(url, os.environ, root_certificate_configured=_default_root_certificate())
    )
    weak = unverified_tls(url, os.environ)
    if weak is not None:
        _log().warning(
            "state.tls_unverified",
            url=shown,
            sslmode=weak,
            hint="the server's certificate is not checked: anyone between here and it can "
            "read the state and forge leases; use sslmode=verify-full",
        )

    def connect() -> psycopg.Connection[Any]:
        try:
            conn: psycopg.Connection[Any] = pg.connect(url, autocommit=True, **extra)
        except pg.Error as exc:
            message = scrubber(str(exc).strip()) or type(exc).__name__
            if extra.get("sslmode") == DEFAULT_SSLMODE and _is_tls_failure(message):
                message += (
                    " (orgsync verifies the server's certificate by default: give its CA "
                    "with sslrootcert=PATH in the URL, or sslmode=... to choose otherwise)"
                )
            raise StateError(f"cannot connect to the state database {shown}: {message}") from exc
        try:
            read_only = conn.execute("SELECT current_setting('transaction_read_only')")
            row = read_only.fetchone()
            if row is not None and row[0] == "on":
                conn.close()
                raise StateError(
                    f"state database {shown} is read-only (a hot standby, or "
                    "default_transaction_read_only = on): every run records what it does "
                    "there before calling a target; give the primary's URL (with several "
                    "hosts, add target_session_attrs=read-write)"
                )
            conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            # The server probes an idle connection after 30 s and drops it (and the
            # session's advisory lock) after three unanswered probes: a writer whose host
            # vanished without closing it frees its targets in about a minute, not after
            # the kernel's default two hours.
            for setting, value in _KEEPALIVES:
                conn.execute(f"SET {setting} = {value}")
        except pg.Error as exc:
            conn.close()
            raise StateError(f"state database {shown}: {scrubber(str(exc))}") from exc
        return conn

    return connect


def _default_root_certificate() -> bool:
    """Whether libpq's own root certificate file (~/.postgresql/root.crt) exists; or
    whether a libpq before 16, which knows no `sslrootcert=system`, must be left to its
    own default (that file, its error naming it when missing)."""
    if _psycopg().pq.version() < 160000:
        return True
    try:
        return (Path.home() / ".postgresql" / "root.crt").is_file()
    except (OSError, RuntimeError):  # no home directory
        return False


def _is_tls_failure(message: str) -> bool:
    lowered = message.lower()
    return any(
        word in lowered for word in ("ssl", "certificate", "does not match host name", "tls")
    )


def _log() -> Any:
    import structlog

    return structlog.get_logger(__name__)


# --------------------------------------------------------------------------- writer lock


def lock_key(target: str) -> int:
    """The advisory lock's second key for `target`: 32 bits of its name's digest. Two
    names sharing it only make their targets wait for each other, never both written."""
    return int.from_bytes(hashlib.sha256(target.encode()).digest()[:4], "big", signed=True)


class AdvisoryLock:
    """A session-level advisory lock on a connection of its own (module docstring).

    Not shared between threads, like `FileLock`."""

    def __init__(self, db: PostgresDB, target: str) -> None:
        self._db = db
        self._key = lock_key(target)
        self._conn: psycopg.Connection[Any] | None = None

    def __repr__(self) -> str:
        return (
            f"AdvisoryLock({self._db.location!r}, key={self._key}, held={self._conn is not None})"
        )

    def try_acquire(self, patience: float = 0.0) -> bool:
        if self._conn is not None:
            return True
        pg = _psycopg()
        deadline = time.monotonic() + patience
        conn = self._db._connect()
        try:
            while True:
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(CAST(%s AS integer), CAST(%s AS integer))",
                    (_LOCK_SPACE, self._key),
                ).fetchone()
                if row is not None and row[0] is True:
                    self._conn = conn
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(_POLL)
        except pg.Error as exc:
            raise StateError(f"state database {self._db.location}: cannot lock: {exc}") from exc
        finally:
            if self._conn is not conn:
                conn.close()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            # Unlocked before the call returns; a close alone is noticed by the server a
            # moment later, and the next holder would find the lock still taken.
            conn.execute(
                "SELECT pg_advisory_unlock(CAST(%s AS integer), CAST(%s AS integer))",
                (_LOCK_SPACE, self._key),
            )
        except _psycopg().Error:
            pass  # the session is gone already, and its lock with it
        finally:
            conn.close()

    def held_elsewhere(self) -> bool:
        if self._conn is not None:
            return False
        with self._db.read() as session:
            return bool(session.scalar(_held_sql(mine=False), self._oids))

    def intact(self) -> bool:
        """Whether our session still holds the lock (a server restart or a connection cut
        ends the session, and with it the lock: another process may hold it now)."""
        if self._conn is None:
            return False
        try:
            row = self._conn.execute(translate(_held_sql(mine=True)), self._oids).fetchone()
        except _psycopg().Error:
            return False
        return row is not None and row[0] is True

    @property
    def _oids(self) -> tuple[int, int]:
        # pg_locks shows the two int4 keys as oids: unsigned.
        return _LOCK_SPACE, self._key & 0xFFFFFFFF


def _held_sql(*, mine: bool) -> str:
    """Whether a session (ours only, with `mine`) holds the advisory lock with the keys
    bound as two parameters (a two-key lock shows in pg_locks with objsubid 2)."""
    return (
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "  # noqa: S608
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND classid = CAST(CAST(? AS bigint) AS oid) "
        "AND objid = CAST(CAST(? AS bigint) AS oid) AND objsubid = 2"
        + (" AND pid = pg_backend_pid())" if mine else ")")
    )


# --------------------------------------------------------------------------- notifications


class Listener:
    """LISTEN on `channel` on a connection of its own (the store's is shared and runs
    transactions; a notification is delivered to a session between them).

    Used by one thread. A connection the server ended is opened again on the next
    `wait`, which then reports `MISSED`: notifications sent meanwhile are lost, so the
    caller looks at everything."""

    MISSED = "*"

    def __init__(self, db: PostgresDB, channel: str) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", channel):
            raise ValueError(f"not a channel name: {channel!r}")
        self._db = db
        self._channel = channel
        self._conn: psycopg.Connection[Any] | None = None
        self._open()

    def _open(self) -> None:
        conn = self._db._connect()
        try:
            conn.execute(f"LISTEN {self._channel}")
        except _psycopg().Error as exc:
            conn.close()
            raise StateError(f"state database {self._db.location}: cannot listen: {exc}") from exc
        self._conn = conn

    def wait(self, timeout: float) -> list[str]:
        """The payloads notified within `timeout` seconds (at least one, or none when the
        time ran out); `[MISSED]` when the connection was lost and opened again."""
        pg = _psycopg()
        if self._conn is None or self._conn.closed:
            self._open()
            return [self.MISSED]
        conn = self._conn
        try:
            payloads = [n.payload for n in conn.notifies(timeout=timeout, stop_after=1)]
            if payloads:
                # A burst arrives together: take what is there already, without waiting.
                payloads += [n.payload for n in conn.notifies(timeout=0.001)]
        except pg.OperationalError as exc:
            self.close()
            raise StateError(
                f"state database {self._db.location}: listening stopped: {exc}"
            ) from exc
        return payloads

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
