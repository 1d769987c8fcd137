"""The schema of the state database: numbered migrations and the `schema_version` table.

Each migration is written once, in SQLite's form, and applied on both backends: the
session's dialect turns it into PostgreSQL's (`Dialect.ddl`). So a migration uses the
SQL both understand (TEXT, INTEGER, CHECK, partial indexes, ALTER TABLE ADD COLUMN);
nothing but `WITHOUT ROWID` is SQLite's own.

A migration is frozen text once released: never edit one, append the next number. The
CHECK constraints spell their allowed values out literally for that reason (a constant
changed in code must not silently change what an old migration created). No column holds
a secret: credentials live in the environment or in files named by the configuration.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from orgsync.core.errors import StateError
from orgsync.store.db import Session, StateDB, encode_time


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, operation journal, links, missing people, leases",
        (
            """
            CREATE TABLE runs (
                run_id       TEXT PRIMARY KEY,
                target       TEXT NOT NULL,
                mode         TEXT NOT NULL CHECK (mode IN ('dry-run', 'sync')),
                triggered_by TEXT NOT NULL,
                status       TEXT NOT NULL CHECK (status IN (
                    'running', 'ok', 'changes-pending', 'held', 'failed', 'interrupted')),
                exit_code    INTEGER,
                started_at   TEXT NOT NULL,
                finished_at  TEXT,
                summary      TEXT NOT NULL DEFAULT '{}',
                checksum     TEXT,
                error        TEXT,
                held         INTEGER NOT NULL DEFAULT 0,
                failed       INTEGER NOT NULL DEFAULT 0,
                waiting      INTEGER NOT NULL DEFAULT 0,
                host         TEXT NOT NULL,
                pid          INTEGER NOT NULL
            )
            """,
            "CREATE INDEX runs_by_target ON runs (target, started_at)",
            "CREATE INDEX runs_running ON runs (target) WHERE status = 'running'",
            """
            CREATE TABLE operations (
                run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
                seq         INTEGER NOT NULL CHECK (seq >= 0),
                kind        TEXT NOT NULL,
                subject     TEXT NOT NULL,
                status      TEXT NOT NULL CHECK (status IN (
                    'planned', 'in_flight', 'done', 'failed', 'held', 'skipped',
                    'interrupted')),
                guard       TEXT,
                payload     TEXT NOT NULL,
                detail      TEXT,
                object_id   TEXT,
                attempts    INTEGER NOT NULL DEFAULT 0,
                planned_at  TEXT NOT NULL,
                started_at  TEXT,
                finished_at TEXT,
                PRIMARY KEY (run_id, seq)
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE links (
                target          TEXT NOT NULL,
                email_key       TEXT NOT NULL,
                source_id       TEXT,
                member_id       TEXT,
                invite_id       TEXT,
                first_linked_at TEXT NOT NULL,
                updated_at      TEXT NOT NULL,
                PRIMARY KEY (target, email_key)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX links_by_source ON links (target, source_id)",
            """
            CREATE TABLE missing (
                target    TEXT NOT NULL,
                email_key TEXT NOT NULL,
                since     TEXT NOT NULL,
                PRIMARY KEY (target, email_key)
            ) WITHOUT ROWID
            """,
            """
            CREATE TABLE leases (
                target      TEXT PRIMARY KEY,
                holder      TEXT NOT NULL,
                acquired_at TEXT NOT NULL,
                expires_at  TEXT NOT NULL
            )
            """,
        ),
    ),
    Migration(
        2,
        "ownership ledger of target groups",
        (
            """
            CREATE TABLE owned_groups (
                target          TEXT NOT NULL,
                group_id        TEXT NOT NULL,
                source_group_id TEXT NOT NULL,
                name            TEXT NOT NULL,
                how             TEXT NOT NULL CHECK (how IN ('created', 'adopted')),
                first_owned_at  TEXT NOT NULL,
                updated_at      TEXT NOT NULL,
                PRIMARY KEY (target, group_id)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX owned_groups_by_source ON owned_groups (target, source_group_id)",
        ),
    ),
    Migration(
        3,
        "request forms each target's server accepted (learned SCIM dialect)",
        (
            """
            CREATE TABLE learned_forms (
                target     TEXT NOT NULL,
                change     TEXT NOT NULL,
                form       TEXT NOT NULL,
                server     TEXT NOT NULL,
                reason     TEXT NOT NULL,
                learned_at TEXT NOT NULL,
                PRIMARY KEY (target, change)
            ) WITHOUT ROWID
            """,
        ),
    ),
    Migration(
        4,
        "who ran each run (cli or daemon, which instance); runs by start time for pruning",
        (
            """
            ALTER TABLE runs ADD COLUMN origin TEXT NOT NULL DEFAULT 'cli'
                CHECK (origin IN ('cli', 'daemon'))
            """,
            # Before this version only the daemon's runs had triggers other than "cli".
            "UPDATE runs SET origin = 'daemon' WHERE triggered_by != 'cli'",
            "ALTER TABLE runs ADD COLUMN instance TEXT",
            "CREATE INDEX runs_by_start ON runs (started_at)",
        ),
    ),
    Migration(
        5,
        "fencing tokens on leases; the replicas sharing the targets",
        (
            "ALTER TABLE leases ADD COLUMN fence INTEGER NOT NULL DEFAULT 0",  # the fencing token
            """
            CREATE TABLE replicas (
                instance   TEXT PRIMARY KEY,
                holder     TEXT NOT NULL,
                seen_at    TEXT NOT NULL,
                expires_at TEXT NOT NULL
            )
            """,
        ),
    ),
    Migration(
        6,
        "webhook queue: targeted-run requests on their way to the replica holding the target",
        (
            # Only what a webhook parser produced (target, kind of id, the id, the trigger),
            # never a body or header. `person` is '' for a full reconcile.
            """
            CREATE TABLE webhook_queue (
                id           TEXT PRIMARY KEY,
                target       TEXT NOT NULL,
                kind         TEXT NOT NULL CHECK (kind IN ('email', 'source_id', 'full')),
                person       TEXT NOT NULL,
                triggered_by TEXT NOT NULL,
                received_at  TEXT NOT NULL,
                claimed_by   TEXT,
                claimed_at   TEXT,
                done         INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)),
                done_at      TEXT
            )
            """,
            # One waiting row per person and target: a second webhook about them coalesces.
            """
            CREATE UNIQUE INDEX webhook_queue_waiting ON webhook_queue (target, kind, person)
                WHERE claimed_by IS NULL AND done = 0
            """,
            "CREATE INDEX webhook_queue_open ON webhook_queue (target) WHERE done = 0",
            "CREATE INDEX webhook_queue_done ON webhook_queue (done_at) WHERE done = 1",
        ),
    ),
    Migration(
        7,
        "incremental passes: per target baseline, source cursor and compact source snapshot",
        (
            # Which pass a run was: 'full', 'incremental' or 'targeted'; NULL before.
            "ALTER TABLE runs ADD COLUMN pass_kind TEXT",
            "ALTER TABLE runs ADD COLUMN pass_reason TEXT",
            """
            CREATE TABLE baselines (
                target      TEXT PRIMARY KEY,
                config      TEXT NOT NULL,
                cursor      TEXT,
                full_at     TEXT NOT NULL,
                updated_at  TEXT NOT NULL,
                people      INTEGER NOT NULL DEFAULT 0,
                groups      INTEGER NOT NULL DEFAULT 0
            )
            """,
            # One digest per source record (never the record): see orgsync.core.delta.
            """
            CREATE TABLE source_digests (
                target    TEXT NOT NULL,
                kind      TEXT NOT NULL CHECK (kind IN ('person', 'group')),
                source_id TEXT NOT NULL,
                digest    TEXT NOT NULL,
                PRIMARY KEY (target, kind, source_id)
            ) WITHOUT ROWID
            """,
        ),
    ),
    Migration(
        8,
        "which organization each target's memory is about; markers telling two databases apart",
        (
            # `organization`: what the API says it is (OpenAI's `openai-organization` response
            # header, Keycard's organization id); NULL when it says nothing (SCIM). `address`:
            # the target type and base URL without credentials or query. Never a secret.
            """
            CREATE TABLE target_identities (
                target       TEXT PRIMARY KEY,
                organization TEXT,
                address      TEXT NOT NULL,
                recorded_at  TEXT NOT NULL,
                updated_at   TEXT NOT NULL
            )
            """,
            # A random value `state migrate` writes into its source and looks for in its
            # destination (one database under two URLs), then deletes.
            """
            CREATE TABLE state_markers (
                marker     TEXT PRIMARY KEY,
                written_at TEXT NOT NULL
            )
            """,
        ),
    ),
    Migration(
        9,
        "write generation and restore acknowledgements (a database restored from a backup)",
        (
            # One row: the database's random id and its write generation, raised by every
            # write run and copied into the mark file beside the database (store/marks.py).
            """
            CREATE TABLE write_marks (
                id          INTEGER PRIMARY KEY CHECK (id = 1),
                database_id TEXT NOT NULL,
                generation  INTEGER NOT NULL,
                written_at  TEXT NOT NULL,
                what        TEXT NOT NULL
            )
            """,
            # `orgsync state accept-restore`: when, and which generations it reconciled.
            """
            CREATE TABLE restores (
                accepted_at         TEXT NOT NULL,
                database_generation INTEGER,
                database_written_at TEXT,
                mark_generation     INTEGER,
                mark_written_at     TEXT
            )
            """,
        ),
    ),
    Migration(
        10,
        "webhook deliveries seen: replays refused across restarts and replicas",
        (
            # A digest of each delivery's key (an event id, Okta's event uuid, a Graph
            # notification's digest, a signature), never the key, a body or a secret.
            """
            CREATE TABLE seen_deliveries (
                kind       TEXT NOT NULL CHECK (kind IN ('generic', 'okta', 'entra')),
                digest     TEXT NOT NULL,
                seen_at    TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                PRIMARY KEY (kind, digest)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX seen_deliveries_expiry ON seen_deliveries (kind, expires_at)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_CREATE_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_version (
        version     INTEGER PRIMARY KEY,
        description TEXT NOT NULL,
        applied_at  TEXT NOT NULL
    )
"""


def migrate(db: StateDB) -> int:
    """Bring the schema to `LATEST_VERSION`; returns the version found before.

    Refuses a database written by a newer orgsync: its tables may mean something this
    code does not know, and writing to them could corrupt it for the newer version.
    """
    with db.read() as session:
        found = _current_version(db, session)
    _refuse_newer(db, found)
    if found == LATEST_VERSION:
        return found
    # All pending migrations in one IMMEDIATE transaction: a crash leaves the old schema,
    # and a second process opening at the same moment waits, re-reads, and finds no work.
    with db.write() as session:
        if session.dialect.schema_lock is not None:
            session.scalar(session.dialect.schema_lock)
        found = _current_version(db, session)
        _refuse_newer(db, found)
        if found == 0:
            _refuse_foreign(db, session)
        session.execute(session.dialect.ddl(_CREATE_VERSION_TABLE))
        for migration in MIGRATIONS:
            if migration.version <= found:
                continue
            for statement in migration.statements:
                session.execute(session.dialect.ddl(statement))
            session.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, encode_time(db.clock())),
            )
    return found


def schema_version(db: StateDB) -> int:
    """The version of `db`'s schema, reading only; refuses one that is not orgsync's or is
    newer than this code (as `migrate` would)."""
    with db.read() as session:
        found = _current_version(db, session)
        if found == 0:
            _refuse_foreign(db, session)
    _refuse_newer(db, found)
    return found


def _current_version(db: StateDB, session: Session) -> int:
    tables = {row.text("name") for row in session.query(session.dialect.table_names)}
    if "schema_version" not in tables:
        return 0
    if session.dialect.name == "sqlite":  # PostgreSQL checks when it connects (postgres.py)
        refuse_foreign_versions(db, session)
    version = session.scalar("SELECT MAX(version) FROM schema_version")
    if version is None:
        return 0
    if not isinstance(version, int):
        raise StateError(f"schema_version holds {version!r}, not a number")
    return version


def _refuse_foreign(db: StateDB, session: Session) -> None:
    """An unversioned file with tables belongs to something else; never write into it."""
    tables = session.query(session.dialect.table_names)
    if tables:
        names = ", ".join(sorted(row.text("name") for row in tables))
        raise StateError(
            f"{db.location} is not an orgsync state database (it has tables {names} but no "
            "schema_version); refusing to write into it"
        )


def refuse_foreign_versions(db: StateDB, session: Session) -> None:
    """A `schema_version` table is a common name (Flyway before 5, hand-made migrations):
    one whose first row is not orgsync's first migration belongs to another application
    (a `[state]` path or search_path pointed at its database), and taking it for an old
    orgsync schema would run our migrations into its database. SQLite checks it here,
    PostgreSQL when it connects (`postgres.py`, before `information_schema` could hide it)."""
    first = MIGRATIONS[0]
    if session.dialect.name == "sqlite":
        try:
            found = session.scalar(
                "SELECT description FROM schema_version WHERE version = ?", (first.version,)
            )
        except sqlite3.Error:  # a table with other columns
            found = None
    else:
        # Through jsonb, so that a table with other columns answers NULL instead of failing
        # (a failed statement would end the transaction; one that our role may not read
        # fails, naming the permission: not ours either).
        found = session.scalar(
            "SELECT to_jsonb(s) ->> 'description' FROM schema_version AS s "
            "WHERE to_jsonb(s) ->> 'version' = ?",
            (str(first.version),),
        )
    if found != first.description:
        raise StateError(
            f"{db.location} is not an orgsync state database (its schema_version table "
            "is another application's); refusing to write into it"
        )


def _refuse_newer(db: StateDB, found: int) -> None:
    if found > LATEST_VERSION:
        where = db.location if not db.in_memory else "(memory)"
        raise StateError(
            f"state database {where} has schema version {found}, newer than the "
            f"{LATEST_VERSION} this orgsync understands; upgrade orgsync or use another "
            "[state] path or url"
        )
