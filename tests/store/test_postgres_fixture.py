"""The suite's shared PostgreSQL fixtures (tests/postgres.py, tests/conftest.py) keep
tests apart: each gets a database of its own, and a copy of a prepared one is a copy."""

from __future__ import annotations

import psycopg

from tests.postgres import PASSWORD, USER, PostgresServer


def test_each_test_gets_a_fresh_database_reachable_with_the_password(
    postgres_url: str, postgres: PostgresServer
) -> None:
    with psycopg.connect(postgres_url, password=PASSWORD) as conn:
        row = conn.execute(
            "SELECT current_user, count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert row == (USER, 0)


def test_a_copy_of_a_template_has_its_rows_and_is_independent(postgres: PostgresServer) -> None:
    template = postgres.new_database("template")
    with postgres.admin(template) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (1)")
    copy = postgres.new_database(template=template)
    try:
        with postgres.admin(copy) as conn:
            conn.execute("INSERT INTO t VALUES (2)")
            assert conn.execute("SELECT v FROM t ORDER BY v").fetchall() == [(1,), (2,)]
        with postgres.admin(template) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [(1,)]
    finally:
        postgres.drop_database(copy)
        postgres.drop_database(template)
