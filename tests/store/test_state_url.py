"""Checking and showing a PostgreSQL state URL, and the store's SQL translation for it."""

from __future__ import annotations

import pytest

from orgsync.core.state_url import is_server_url, redact_state_url, state_url_problem
from orgsync.store.postgres import POSTGRESQL, lock_key, translate


def test_server_urls_are_told_from_paths() -> None:
    assert is_server_url("postgresql://u@h/d")
    assert is_server_url("POSTGRES://u@h/d")
    assert not is_server_url("orgsync.db")
    assert not is_server_url("/var/lib/orgsync/postgresql://x")
    assert not is_server_url(":memory:")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u@h:5432/d?sslmode=require", "postgresql://u@h:5432/d?sslmode=require"),
        ("postgresql://u:s3cret-pw@h/d", "postgresql://u:[redacted]@h/d"),
        ("postgresql://u:p%40ss@h/d", "postgresql://u:[redacted]@h/d"),
        (
            "postgresql://u@h/d?sslmode=verify-full&password=s3cret-pw",
            "postgresql://u@h/d?sslmode=verify-full&password=[redacted]",
        ),
        ("postgresql://u@h/d?PassWord=s3cret-pw", "postgresql://u@h/d?PassWord=[redacted]"),
        ("postgresql://u@h/d?sslpassword=s3cret-pw", "postgresql://u@h/d?sslpassword=[redacted]"),
        ("postgresql://u@[::1/d?password=s3cret-pw", "postgresql://[redacted]"),
    ],
)
def test_redaction_leaves_no_password(url: str, shown: str) -> None:
    assert redact_state_url(url) == shown
    assert "s3cret" not in redact_state_url(url)


def test_a_good_url_has_no_problem() -> None:
    assert state_url_problem("postgresql://orgsync@db.internal:5432/orgsync") is None
    assert state_url_problem("postgresql://orgsync@/orgsync?host=/run/postgresql") is None


def test_parameters_are_translated_outside_quotes_only() -> None:
    assert translate("SELECT * FROM t WHERE a = ? AND b = ?") == (
        "SELECT * FROM t WHERE a = %s AND b = %s"
    )
    assert translate("UPDATE t SET a = :a WHERE id = :run_id") == (
        "UPDATE t SET a = %(a)s WHERE id = %(run_id)s"
    )
    assert translate("SELECT 'what? :no 100%' || x::text, y LIKE 'a%'") == (
        "SELECT 'what? :no 100%%' || x::text, y LIKE 'a%%'"
    )
    assert translate('SELECT "odd?col" FROM t WHERE z = ?') == (
        'SELECT "odd?col" FROM t WHERE z = %s'
    )


def test_migrations_in_postgresql_form() -> None:
    ddl = POSTGRESQL.ddl("CREATE TABLE x (\n  a TEXT NOT NULL,\n  b INTEGER\n) WITHOUT ROWID\n")
    assert ddl == 'CREATE TABLE x (\n  a TEXT COLLATE "C" NOT NULL,\n  b INTEGER\n)'


def test_lock_keys_are_stable_32_bit_numbers() -> None:
    keys = {lock_key(f"target-{i}") for i in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**31) <= k < 2**31 for k in keys)
    assert lock_key("openai-prod") == lock_key("openai-prod")
