"""`orgsync state migrate` and what is waiting: the webhook queue, leases and replica
rows (`orgsync.store.transfer`), between a real SQLite file and the suite's PostgreSQL.

What could hurt an administrator: a leaver's removal, queued by a webhook and not yet
served, silently dropped by a move (their access stays until someone notices); a request
claimed by a daemon that was stopped before its run finished, lost the same way; a lease
or replica row carried over, so that a daemon started on the destination believes a
process of the old installation holds a target (busy until it expires) or counts a
replica that does not exist (its fair share halved).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orgsync.core.errors import StateError
from orgsync.store import StateStore
from orgsync.store.queue import Request
from orgsync.store.transfer import copy_state


def _open_rows(store: StateStore) -> set[tuple[str, str, str]]:
    """(target, kind, person) of every request not yet served, claimed or not."""
    return {(r.target, r.kind, r.person) for r in store.queued_requests() if not r.done}


def test_waiting_requests_survive_a_move_and_back_liveness_rows_do_not(
    tmp_path: Path, postgres_url: str
) -> None:
    sqlite_path = tmp_path / "state.db"
    with StateStore.open(sqlite_path) as store:
        store.queue_requests(
            [
                Request(
                    "openai-prod",
                    "okta: user.lifecycle.deactivate",
                    emails=frozenset({"leaver@example.com"}),
                ),
                Request("openai-prod", "generic", source_ids=frozenset({"00u-claimed"})),
                Request("openai-prod", "generic", source_ids=frozenset({"00u-served"})),
                Request("keycard-prod", "generic"),  # a full reconcile, nobody named
            ]
        )
        # A daemon of the old installation claimed two of them; its run served one, and
        # it was stopped before the other's run finished.
        claimed = store.claim_requests("daemon-old", ["openai-prod"])
        served = [r.id for r in store.queued_requests("openai-prod") if r.person == "00u-served"]
        assert claimed and served
        assert store.finish_requests("daemon-old", served) == 1
        # The same person queued again while the claimed request waits: two open rows for
        # one person, which the destination's unique index over unclaimed rows allows
        # only once they are both unclaimed there.
        store.queue_requests(
            [Request("openai-prod", "generic", source_ids=frozenset({"00u-claimed"}))]
        )
        with store.db.write() as session:
            # Liveness rows of the old installation's daemon.
            session.execute(
                "INSERT INTO leases (target, holder, acquired_at, expires_at, fence) "
                "VALUES ('openai-prod', 'daemon on old-host (pid 1, daemon-old)', "
                "'2026-01-01T00:00:00.000000Z', '2999-01-01T00:00:00.000000Z', 3)"
            )
            session.execute(
                "INSERT INTO replicas (instance, holder, seen_at, expires_at) VALUES "
                "('daemon-old', 'daemon on old-host', '2026-01-01T00:00:00.000000Z', "
                "'2999-01-01T00:00:00.000000Z')"
            )
        waiting = _open_rows(store)
    assert waiting == {
        ("openai-prod", "email", "leaver@example.com"),
        ("openai-prod", "source_id", "00u-claimed"),
        ("keycard-prod", "full", ""),
    }

    with StateStore.open(sqlite_path) as source, StateStore.open(postgres_url) as destination:
        moved = copy_state(source, destination, overwrite=False)
    assert moved.counts["webhook_queue"] == 3
    with StateStore.open(postgres_url) as store:
        rows = store.queued_requests()
        assert {(r.target, r.kind, r.person) for r in rows} == waiting
        # Waiting for whichever daemon runs the target on the new database, not for a
        # process of the old one.
        assert all(r.claimed_by is None and not r.done for r in rows)
        with store.db.read() as session:
            assert session.scalar("SELECT COUNT(*) FROM leases") == 0
            assert session.scalar("SELECT COUNT(*) FROM replicas") == 0
        # And a daemon of the new installation is handed them.
        new = {c.target: c for c in store.claim_requests("daemon-new", ["openai-prod"])}
        assert new["openai-prod"].emails == {"leaver@example.com"}
        assert new["openai-prod"].source_ids == {"00u-claimed"}

    # Back to a new SQLite file: what is waiting on the server (now claimed by a live
    # daemon that has not finished) is waiting there too.
    back = tmp_path / "back.db"
    with StateStore.open(postgres_url) as source, StateStore.open(back) as destination:
        copy_state(source, destination, overwrite=False)
    with StateStore.open(back) as store:
        assert _open_rows(store) == waiting
        assert all(r.claimed_by is None for r in store.queued_requests())


def test_one_file_under_two_names_is_the_same_database(tmp_path: Path) -> None:
    """Red team: `--from` and `--to` were compared as strings, so the same file through a
    symbolic link (or a hard link) was copied onto itself with `--overwrite`, losing the
    rows the copy does not carry (leases, replica rows, served requests)."""
    with StateStore.open(tmp_path / "state.db") as store:
        store.queue_requests([Request("t", "generic", emails=frozenset({"a@example.com"}))])
    (tmp_path / "alias").symlink_to(tmp_path)
    os.link(tmp_path / "state.db", tmp_path / "hard.db")
    for other in (tmp_path / "alias" / "state.db", tmp_path / "hard.db"):
        with StateStore.open(tmp_path / "state.db") as source, StateStore.open(other) as same:
            with pytest.raises(StateError, match="are the same database"):
                copy_state(source, same, overwrite=True)
