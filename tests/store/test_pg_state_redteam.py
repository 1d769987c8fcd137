"""Red team: a `[state] url` naming the wrong PostgreSQL database, against the suite's
real server.

Harms tried as a careless operator would:
* a read-only server (a hot standby, or `default_transaction_read_only = on`) given by
  mistake: a run would read the state, call the targets, then fail to record what it did
  (a journal that lies, invitations sent again next run). It must be refused when the
  store is opened, before any target is called;
* a database another application owns, with tables named like ours (`runs`, or even a
  `schema_version` of its own): never written into;
* a role that may not create tables in the schema: a clear error naming the permission,
  never a half-created schema.
"""

from __future__ import annotations

import psycopg
import pytest

from orgsync.core.errors import StateError
from orgsync.store.state import StateStore
from tests.postgres import PASSWORD, USER, PostgresServer


def _admin_sql(postgres: PostgresServer, database: str, *statements: str) -> None:
    with postgres.admin(database) as conn:
        for statement in statements:
            conn.execute(statement)


def _tables(postgres: PostgresServer, database: str) -> set[str]:
    with postgres.admin(database) as conn:
        rows = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_a_read_only_database_is_refused_when_opened(postgres: PostgresServer) -> None:
    """A migrated state database turned read-only (what a hot standby is to its clients):
    the open fails with an error naming the cause, before any run could call a target
    and then fail to journal what it did."""
    name = postgres.new_database("ro")
    url = postgres.url(name)
    StateStore.open(url, password=PASSWORD).close()
    _admin_sql(
        postgres, "postgres", f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
    )
    try:
        with pytest.raises(StateError, match="read-only") as caught:
            StateStore.open(url, password=PASSWORD)
        assert "primary" in str(caught.value)
        assert PASSWORD not in str(caught.value)
    finally:
        postgres.drop_database(name)


def test_an_empty_read_only_database_is_refused_with_the_same_words(
    postgres: PostgresServer,
) -> None:
    name = postgres.new_database("ro")
    _admin_sql(
        postgres, "postgres", f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
    )
    try:
        with pytest.raises(StateError, match="read-only"):
            StateStore.open(postgres.url(name), password=PASSWORD)
    finally:
        postgres.drop_database(name)


def test_another_applications_tables_are_never_written_into(postgres: PostgresServer) -> None:
    name = postgres.new_database("foreign")
    with psycopg.connect(postgres.url(name), password=PASSWORD, autocommit=True) as conn:
        conn.execute("CREATE TABLE runs (id integer PRIMARY KEY, note text)")
        conn.execute("INSERT INTO runs VALUES (1, 'theirs')")
    try:
        with pytest.raises(StateError, match="not an orgsync state database"):
            StateStore.open(postgres.url(name), password=PASSWORD)
        assert _tables(postgres, name) == {"public.runs"}
    finally:
        postgres.drop_database(name)


def test_another_applications_schema_version_table_is_never_migrated(
    postgres: PostgresServer,
) -> None:
    """`schema_version (version integer)` is a common name (Flyway before 5, hand-made
    migrations): a database holding one of another application's, at a version below
    ours, must not be taken for an old orgsync database and 'upgraded' with our tables."""
    name = postgres.new_database("foreign")
    with psycopg.connect(postgres.url(name), password=PASSWORD, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_version (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at text NOT NULL)"
        )
        conn.execute("INSERT INTO schema_version VALUES (3, 'add invoices', '2020-01-01')")
        conn.execute("CREATE TABLE invoices (id integer PRIMARY KEY)")
    before = _tables(postgres, name)
    try:
        with pytest.raises(StateError, match="not an orgsync state database"):
            StateStore.open(postgres.url(name), password=PASSWORD)
        assert _tables(postgres, name) == before
    finally:
        postgres.drop_database(name)


def test_a_role_without_create_on_the_schema_gets_a_clear_error(
    postgres: PostgresServer,
) -> None:
    """The database belongs to someone else and our role may only connect (PostgreSQL
    15's default for the public schema): the error names the permission, nothing is
    created."""
    name = f"notours_{USER}"
    _admin_sql(postgres, "postgres", f'CREATE DATABASE "{name}"')
    try:
        _admin_sql(postgres, name, f'GRANT CONNECT ON DATABASE "{name}" TO {USER}')
        with pytest.raises(StateError, match="permission denied for schema public") as caught:
            StateStore.open(postgres.url(name), password=PASSWORD)
        assert PASSWORD not in str(caught.value)
        assert _tables(postgres, name) == set()
    finally:
        postgres.drop_database(name)


def test_a_search_path_onto_another_schema_never_writes_there(postgres: PostgresServer) -> None:
    """`options=-csearch_path=app` in the URL points orgsync at a schema another
    application owns, with a table named like ours: refused, that schema untouched."""
    name = postgres.new_database("schema")
    _admin_sql(
        postgres,
        name,
        "CREATE SCHEMA app",
        "CREATE TABLE app.leases (target text PRIMARY KEY)",
        f"GRANT USAGE, CREATE ON SCHEMA app TO {USER}",
    )
    url = postgres.url(name) + "&options=-csearch_path%3Dapp"
    try:
        with pytest.raises(StateError, match="not an orgsync state database"):
            StateStore.open(url, password=PASSWORD)
        assert _tables(postgres, name) == {"app.leases"}
    finally:
        postgres.drop_database(name)


def test_a_reconnect_landing_on_a_read_only_server_is_named(postgres: PostgresServer) -> None:
    """A failover that leaves the URL pointing at a standby: the store's next transaction
    opens a new connection (the old one was ended) and must say the server is read-only,
    not fail later on whatever statement first writes; and work again, without a
    restart, once the URL leads to a writable server."""
    name = postgres.new_database("failover")
    url = postgres.url(name)
    store = StateStore.open(url, password=PASSWORD)
    try:
        _admin_sql(
            postgres,
            "postgres",
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = on',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        )
        with pytest.raises(StateError, match="read-only"):
            store.runs(limit=1)
        with pytest.raises(StateError, match="read-only"):
            store.runs(limit=1)  # still refused, not an error of a closed connection
        # The primary is back under that URL: the same store works again, no restart.
        _admin_sql(
            postgres, "postgres", f'ALTER DATABASE "{name}" RESET default_transaction_read_only'
        )
        assert store.runs(limit=1) == []
    finally:
        store.close()
        postgres.drop_database(name)
