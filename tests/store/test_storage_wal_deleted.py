"""Red team: `state.db-wal` and `state.db-shm` deleted while `orgsync daemon` runs.

A cleanup job (`find -name '*-wal' -delete`), or an operator who takes them for leftovers,
removes them under a running daemon. SQLite keeps writing into the unlinked log: every
other process (`orgsync status`, a `sync` run by hand) reads the database without those
commits, and when the daemon is killed (`kill -9`, an OOM kill, a power cut) they are
gone for good: the links of the people it invited (they become "unmanaged": leavers
among them are never removed) and the journal of what it sent.

Expected: the daemon notices at its next transaction, checkpoints what it committed into
the database file, reconnects (a new log every process shares), and says so in its log.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory, wanted_roles
from tests.daemon.harness import DaemonRig, wait_for


def _links(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM links").fetchone()[0])


def test_a_log_deleted_under_the_daemon_loses_no_commit_when_it_is_killed(
    tmp_path: Path,
) -> None:
    document = directory(6, owners=1)
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = DaemonRig(folder=tmp_path, emulator=emulator, interval="1s")
        rig.write(document)
        daemon = rig.start()
        try:
            daemon.wait_started()
            wait_for(lambda: rig.holdings() == wanted_roles(document), timeout=60, what="run 1")

            def finished() -> int:
                return sum(e.get("event") == "run.finished" for e in daemon.events())

            wait_for(lambda: finished() >= 1, timeout=30, what="run 1 recorded")
            for suffix in ("-wal", "-shm"):
                Path(f"{rig.state_db}{suffix}").unlink()
            seen = finished()
            wait_for(lambda: finished() >= seen + 2, timeout=60, what="two more runs")
            os.kill(daemon.process.pid, signal.SIGKILL)
            daemon.process.wait(10)
            assert _links(rig.state_db) == 6, "commits lost with the deleted log"
            assert any(e.get("event") == "state.wal_replaced" for e in daemon.events())
        finally:
            daemon.kill()
        again = rig.orgsync("sync")
        assert again.returncode == 0, again.stdout + again.stderr
        assert set(rig.pending_invites().values()) == {1}
