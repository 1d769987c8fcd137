"""State on PostgreSQL, end to end (issue 15, first half): the real `orgsync` command
against the OpenAI emulator with `[state] url` on the suite's PostgreSQL server.

What could hurt an administrator here: the database password in an output, a log line or
a row; a second sync writing at the same time as the first (duplicate invitations); an
installation moved to PostgreSQL that forgot whom it manages (links, missing-since
clocks, owned groups, learned forms, history), or a move that silently merged into a
database already in use; a bad URL or an unreachable server that is not named clearly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from orgsync.core.forms import LearnedForm
from orgsync.store import StateStore
from orgsync.store.transfer import TABLES
from orgsync.testing.faults import Faults
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory, wanted_roles
from tests.leaks import traces
from tests.postgres import PASSWORD, PASSWORD_ENV, PostgresServer, state_keys
from tests.servers import free_port

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

TARGET = "openai-test"


def use_postgres(rig: Rig, url: str) -> None:
    rig.state = state_keys(url)
    rig.env = {PASSWORD_ENV: PASSWORD}


def no_password_in(*texts: str) -> None:
    for text in texts:
        assert traces(PASSWORD, text) == [], text


def dump(store: StateStore) -> dict[str, list[dict[str, object]]]:
    """Every row of every table orgsync keeps, in a stable order."""
    tables: dict[str, list[dict[str, object]]] = {}
    with store.db.read() as session:
        for table in TABLES:
            rows = [row.values() for row in session.query(f"SELECT * FROM {table}")]
            tables[table] = sorted(rows, key=lambda r: sorted((k, str(v)) for k, v in r.items()))
    return tables


def test_a_sync_on_postgresql_keeps_the_password_out_of_everything(
    rig: Rig, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = postgres.url_for_new_database()
    use_postgres(rig, url)
    document = directory(6, owners=1)
    rig.write(document)

    before = rig.orgsync("validate")
    assert before.returncode == 0, before.stdout + before.stderr
    assert f"state {url}: reachable, empty (the first sync creates the schema)" in before.stdout
    offline = rig.orgsync("validate", "--offline")
    assert f"state {url}: not contacted (--offline)" in offline.stdout

    first = rig.orgsync("sync")
    assert first.returncode == 0, first.stdout + first.stderr
    assert rig.holdings() == wanted_roles(document)
    # Debug logs too (the driver's own logger included).
    again = rig.orgsync("--log-level", "debug", "sync", "--dry-run")
    assert again.returncode == 0, again.stdout + again.stderr  # it remembers what it did
    status = rig.orgsync("status")
    history = rig.orgsync("runs", "--json")
    after = rig.orgsync("validate")
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"state {url}: ok (schema version" in after.stdout
    assert ", 2 runs; TLS off)" in after.stdout
    assert TARGET in status.stdout
    assert history.stdout.count('"run_id"') == 2
    assert max(rig.pending_invites_per_email().values()) == 1
    no_password_in(
        *(p.stdout + p.stderr for p in (before, offline, first, again, status, history, after))
    )
    # Nor in any row (the URL a row might name, a learned form's server, an error).
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with StateStore.open(url) as store:
        no_password_in(repr(dump(store)))
        assert len(store.memory(TARGET).managed) == 6


def applying(url: str) -> bool:
    """A sync is running and has applied at least one operation."""
    try:
        with psycopg.connect(url, password=PASSWORD, autocommit=True) as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM runs JOIN operations USING (run_id) "
                "WHERE runs.status = 'running' AND operations.status = 'done'"
            ).fetchone()
    except psycopg.Error:
        return False  # the schema is not there yet
    return bool(row and row[0])


def test_two_syncs_on_one_postgresql_database_never_write_together(
    rig: Rig, postgres: PostgresServer
) -> None:
    """The advisory lock, between two processes: the second sync is refused as busy
    while the first applies, and no email gets two invitations."""
    url = postgres.url_for_new_database()
    use_postgres(rig, url)
    document = directory(30, owners=2)
    rig.extra_target = "max_concurrency = 1\n"
    rig.write(document)
    rig.config_path.write_text(
        rig.config_path.read_text().replace('timeout = "2s"', 'timeout = "30s"')
    )
    rig.emulator.faults = Faults(latency=0.25)
    rig.emulator.allow_duplicate_invites = True  # only the lock stands between two e-mails
    first = cli.start(
        rig.config_path,
        "sync",
        env={**os.environ, **_rig_env(rig)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not applying(url):
            assert time.monotonic() < deadline, "the first sync never started applying"
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        rig.emulator.faults = Faults(latency=2.0)
        second = rig.orgsync("sync")
        status = rig.orgsync("status")
        overlapped = first.poll() is None
        rig.emulator.faults = Faults()
        out, err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, out + err
    assert second.returncode == 1, second.stdout + second.stderr
    assert overlapped, "the second sync waited for the first instead of being refused"
    assert f"another orgsync is syncing {TARGET}: cli on " in second.stdout
    assert "lock: held by cli on " in status.stdout
    assert max(rig.pending_invites_per_email().values()) == 1
    assert rig.holdings() == wanted_roles(document)
    no_password_in(out, err, second.stdout, second.stderr, status.stdout, status.stderr)


def _rig_env(rig: Rig) -> dict[str, str]:
    return {KEY_ENV: API_KEY, **rig.env}


def test_state_migrate_moves_an_installation_without_losing_anything(
    rig: Rig, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An installation on SQLite with history, links, a person missing within the removal
    # grace, an owned group and a learned request form.
    rig.safety = 'removal_grace = "7d"\nmax_removals = 10\nmax_removal_ratio = 0.5'
    document = directory(8, owners=1)
    rig.write(document)
    assert rig.orgsync("sync").returncode == 0
    gone = directory(7, owners=1)  # person7 left the directory
    rig.write(gone)
    waiting = rig.orgsync("sync")
    assert waiting.returncode == 0, waiting.stdout + waiting.stderr
    sqlite_path = rig.folder / "state.db"
    with StateStore.open(sqlite_path) as store:
        store.own_group(
            TARGET, group_id="grp-1", source_group_id="g-users", name="users", how="created"
        )
        server = "https://scim.example.com/v2"
        store.learn_form(TARGET, LearnedForm("remove_members", "value_array", server, "HTTP 501"))
        assert store.memory(TARGET).missing_since  # the clock of the person who left
        original = dump(store)
    # (The webhook queue's move has its own test: tests/store/test_transfer_queue.py.)
    # (No restore was accepted: `restores` is empty; its move is in test_restored_state.py.)
    assert all(original[t] for t in TABLES if t not in ("webhook_queue", "restores")), {
        t: len(r) for t, r in original.items()
    }

    url = postgres.url_for_new_database()
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # libpq's own variable, for the command line
    moved = rig.orgsync("state", "migrate", "--from", f"sqlite:{sqlite_path}", "--to", url)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "verified: every table holds as many rows as in the source" in moved.stdout
    assert f'next: set [state] url = "{url}"' in moved.stdout
    with StateStore.open(url) as store:
        assert dump(store) == original  # every row, every column, as it was

    # Once more into the same database: refused, nothing changed; --overwrite replaces.
    again = rig.orgsync("state", "migrate", "--from", f"sqlite:{sqlite_path}", "--to", url)
    assert again.returncode == 1
    assert "already holds orgsync state" in again.stderr
    assert "--overwrite" in again.stderr
    with StateStore.open(url) as store:
        assert dump(store) == original
    replaced = rig.orgsync(
        "state", "migrate", "--from", f"sqlite:{sqlite_path}", "--to", url, "--overwrite"
    )
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert "replaced what" in replaced.stdout

    # A sync running on the source refuses the move (it would copy a state in motion).
    with StateStore.open(sqlite_path) as store:
        lock = store.writer_lock(TARGET)
        assert lock.try_acquire()
        busy = rig.orgsync(
            "state", "migrate", "--from", f"sqlite:{sqlite_path}", "--to", url, "--overwrite"
        )
        lock.release()
    assert busy.returncode == 1
    assert f"target {TARGET} is being synced" in busy.stderr

    # The moved installation carries on: nothing to do, nobody invited twice, and the
    # person who left is still waiting out the grace that started on SQLite.
    use_postgres(rig, url)
    rig.write(gone)
    carried = rig.orgsync("sync")
    assert carried.returncode == 0, carried.stdout + carried.stderr
    assert max(rig.pending_invites_per_email().values()) == 1
    with StateStore.open(url) as store:
        moved_dump = dump(store)
        missing = dict(store.memory(TARGET).missing_since)
    assert missing and all(t < datetime.now(UTC) for t in missing.values())
    assert {tuple(sorted(r.items())) for r in original["missing"]} == {
        tuple(sorted(r.items())) for r in moved_dump["missing"]
    }
    assert {r["email_key"] for r in moved_dump["links"]} == {
        r["email_key"] for r in original["links"]
    }

    # And back: PostgreSQL to a new SQLite file, every row as it is on the server.
    back_path = rig.folder / "back.db"
    back = rig.orgsync("state", "migrate", "--from", url, "--to", f"sqlite:{back_path}")
    assert back.returncode == 0, back.stdout + back.stderr
    with StateStore.open(back_path) as store:
        assert dump(store) == moved_dump
    no_password_in(*(p.stdout + p.stderr for p in (moved, again, replaced, busy, carried, back)))


def test_bad_urls_and_unreachable_servers_are_named_and_exit_1(
    rig: Rig, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    rig.env = {PASSWORD_ENV: PASSWORD}
    cases: list[tuple[str, str]] = [
        # a password in the URL: refused before anything runs, and not repeated
        (
            f'url = "postgresql://orgsync:{PASSWORD}@127.0.0.1:{postgres.port}/x"',
            "holds a password",
        ),
        (f'url = "mysql://orgsync@127.0.0.1/{PASSWORD}"', "must start with postgresql://"),
        ('url = "postgresql://orgsync@127.0.0.1:5432/"', "names no database"),
        (
            f'url = "postgresql://orgsync@127.0.0.1:{postgres.port}/x?password={PASSWORD}"',
            "holds password= in its query",
        ),
        ('url = "postgresql://orgsync@db/x"\npath = "state.db"', "either path"),
        ('password_env = "X"', "need url"),
    ]
    for state, expected in cases:
        rig.state = state
        rig.write(directory(2))
        result = rig.orgsync("sync", "--dry-run")
        assert result.returncode == 1, (state, result.stdout, result.stderr)
        assert expected in result.stderr, (state, result.stderr)
        no_password_in(result.stdout, result.stderr)

    # Nobody listening there.
    closed = free_port()
    use_postgres(rig, f"postgresql://orgsync@127.0.0.1:{closed}/orgsync")
    rig.write(directory(2))
    unreachable = rig.orgsync("sync", "--dry-run")
    assert unreachable.returncode == 1
    assert (
        f"cannot connect to the state database postgresql://orgsync@127.0.0.1:{closed}/orgsync"
        in unreachable.stderr
    )
    validate = rig.orgsync("validate")
    assert validate.returncode == 1
    assert "state: FAILED: cannot connect" in validate.stdout

    # A wrong password, and a password variable that is not set.
    url = postgres.url_for_new_database()
    use_postgres(rig, url)
    rig.env = {PASSWORD_ENV: "not-the-" + PASSWORD[::-1]}
    rig.write(directory(2))
    wrong = rig.orgsync("sync", "--dry-run")
    assert wrong.returncode == 1
    assert "password authentication failed" in wrong.stderr
    assert traces(rig.env[PASSWORD_ENV], wrong.stdout + wrong.stderr) == []
    rig.env = {}
    unset = rig.orgsync("sync", "--dry-run")
    assert unset.returncode == 1
    assert f"state.password_env: environment variable {PASSWORD_ENV} is not set" in unset.stderr

    # The migrate command: a password on its command line is a usage error (64), unshown.
    with_password = rig.orgsync(
        "state",
        "migrate",
        "--from",
        "sqlite:state.db",
        "--to",
        f"postgresql://orgsync:{PASSWORD}@127.0.0.1/x",
    )
    assert with_password.returncode == 64
    assert "holds a password" in with_password.stderr
    no_password_in(with_password.stdout, with_password.stderr)
    neither = rig.orgsync("state", "migrate", "--from", "state.db", "--to", url)
    assert neither.returncode == 64
    assert "neither sqlite:PATH nor postgresql://" in neither.stderr
    missing = rig.orgsync(
        "state", "migrate", "--from", f"sqlite:{rig.folder / 'none.db'}", "--to", url
    )
    assert missing.returncode == 1
    assert "no state database at" in missing.stderr


WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None  # as if `pip install orgsync` without the extra
from orgsync.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_url_without_psycopg_installed_says_how_to_install_it(rig: Rig) -> None:
    use_postgres(rig, "postgresql://orgsync@127.0.0.1:5432/orgsync")
    rig.write(directory(2))
    result = cli.run(
        rig.config_path,
        "sync",
        env={**os.environ, **_rig_env(rig)},
        timeout=60,
        entry=("-c", WITHOUT_PSYCOPG),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pip install 'orgsync[postgresql]'" in result.stderr
    assert rig.holdings() == {}  # nothing was read or sent


def test_sqlite_needs_nothing_new(tmp_path: Path) -> None:
    """The embedded default still works where psycopg is not installed."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from orgsync.store import StateStore\n"
        f"s = StateStore.open({str(tmp_path / 'state.db')!r}); s.start_run('t', 'sync'); s.close()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_on_postgresql_the_write_generation_is_kept_and_no_mark_is_compared(
    rig: Rig, postgres: PostgresServer
) -> None:
    """reference.md "A restored state database": on PostgreSQL the generation moves in
    the database (and `state migrate` carries it), but no mark file is written anywhere
    and a server restored to an older generation is not refused (out of scope: replicas
    share no folder)."""
    url = postgres.url_for_new_database()
    use_postgres(rig, url)
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    assert rig.orgsync("sync").returncode == 0
    with StateStore.open(url, password=PASSWORD) as store:
        mark = store.write_mark()
        assert mark is not None and mark.generation == 4
        with store.db.write() as session:  # as a restore of the server would leave it
            session.execute("UPDATE write_marks SET generation = 1")
        assert store.behind() is None
    assert not list(rig.folder.glob("*.mark"))
    assert rig.orgsync("sync").returncode == 0
