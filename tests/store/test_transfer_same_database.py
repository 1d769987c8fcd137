"""`orgsync state migrate` onto the database it copies from, reached under another name.

What could hurt an administrator: `--to` naming the source database under another URL
(`localhost` for `127.0.0.1`, another user) with `--overwrite`: the destination's rows
are deleted before the copy, so the installation's whole memory (whom it manages) would
be gone. A marker row written into the source and found in the destination refuses it,
on the real PostgreSQL; the marker never stays behind.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from orgsync.store import StateStore
from tests import cli
from tests.postgres import PASSWORD, PostgresServer


def _markers(location: str | Path) -> int:
    with StateStore.open(location) as store, store.db.read() as session:
        found = session.scalar("SELECT COUNT(*) FROM state_markers")
    assert isinstance(found, int)
    return found


def _migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return cli.run(None, "state", "migrate", *args, env={**os.environ, "PGPASSWORD": PASSWORD})


def _seeded(location: str | Path) -> None:
    with StateStore.open(location) as store:
        store.link("openai-prod", email_key="ada@example.com", source_id="p1", member_id="u1")


def _links(location: str | Path) -> int:
    with StateStore.open(location) as store:
        return len(store.memory("openai-prod").managed)


def test_one_postgresql_database_under_two_urls_is_refused(
    postgres: PostgresServer, postgres_url: str
) -> None:
    _seeded(postgres_url)
    by_name = postgres_url.replace("127.0.0.1", "localhost")
    other_user = f"other_{secrets.token_hex(4)}"
    with postgres.admin() as conn:
        owner = conn.execute(
            "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
            (postgres_url.rsplit("/", 1)[1].split("?", maxsplit=1)[0],),
        ).fetchone()
        assert owner is not None
        conn.execute(f"CREATE ROLE {other_user} LOGIN PASSWORD '{PASSWORD}' IN ROLE {owner[0]}")
    as_other = postgres_url.replace(f"//{owner[0]}@", f"//{other_user}@")
    assert as_other != postgres_url
    try:
        for destination in (by_name, as_other):
            refused = _migrate("--from", postgres_url, "--to", destination, "--overwrite")
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "the same database, reached under two names" in refused.stderr
            assert _links(postgres_url) == 1  # nothing deleted
            assert _markers(postgres_url) == 0
    finally:
        with postgres.admin() as conn:
            conn.execute(f"DROP OWNED BY {other_user}")
            conn.execute(f"DROP ROLE {other_user}")


def test_two_databases_are_copied_and_the_marker_does_not_stay(
    tmp_path: Path, postgres_url: str
) -> None:
    source = tmp_path / "state.db"
    _seeded(source)
    moved = _migrate("--from", f"sqlite:{source}", "--to", postgres_url)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert _links(postgres_url) == 1
    assert _markers(source) == 0
    assert _markers(postgres_url) == 0


@pytest.mark.parametrize("overwrite", [False, True])
def test_one_sqlite_file_under_two_names_is_still_refused(tmp_path: Path, overwrite: bool) -> None:
    source = tmp_path / "state.db"
    _seeded(source)
    (tmp_path / "alias.db").symlink_to(source)
    args = ["--from", f"sqlite:{source}", "--to", f"sqlite:{tmp_path / 'alias.db'}"]
    refused = _migrate(*args, *(["--overwrite"] if overwrite else []))
    assert refused.returncode == 1
    assert "same database" in refused.stderr
    assert _links(source) == 1
