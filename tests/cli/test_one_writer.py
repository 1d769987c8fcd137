"""One writer per organization, whatever the process layout (issue 9, item 1).

Real `orgsync sync` processes on one state database against a slowed OpenAI emulator,
one of them in a PID namespace of its own (`unshare -pf --mount-proc`, as two containers
sharing a state volume and a hostname): a process id says nothing about a process in
another namespace, so the writer is decided by a kernel lock, never by a pid. The second
sync is refused, naming the holder, and no email ever has two invitations. A sync killed
with `kill -9` holds nothing: the rerun takes over at once, even when both are pid 1 of
their namespace (a restarted container).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orgsync.testing.faults import Faults
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory, wanted_roles

PEOPLE = 40
TARGET = "openai-test"

# Root makes a PID namespace directly; anyone else through a user namespace of their own
# (where they are root), which most Linux machines allow.
UNSHARE = [
    "unshare",
    *(() if os.geteuid() == 0 else ("--user", "--map-root-user")),
    "--pid",
    "--fork",
    "--mount-proc",
    "--kill-child",
]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, check=False)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and not _can_unshare(),
    reason="needs unshare(1) and the right to make a PID namespace (never skipped in CI)",
)


def namespaced(rig: Rig, *args: str) -> subprocess.Popen[str]:
    """`orgsync` as pid 1 of a new PID namespace; SIGKILL of this process kills it too."""
    return cli.start(
        rig.config_path,
        *args,
        env={**os.environ, KEY_ENV: API_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        wrapper=UNSHARE,
    )


def plain(rig: Rig, *args: str) -> subprocess.Popen[str]:
    return cli.start(
        rig.config_path,
        *args,
        env={**os.environ, KEY_ENV: API_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def applying(state_db: Path) -> bool:
    """A sync is running and has applied at least one operation."""
    if not state_db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(
                "SELECT COUNT(*) FROM runs JOIN operations USING (run_id) "
                "WHERE runs.status = 'running' AND operations.status = 'done'"
            ).fetchone()
    except sqlite3.OperationalError:
        return False
    return bool(row and row[0])


def wait_until(check: object, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def query(state_db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{state_db}?mode=ro", uri=True) as db:
        return list(db.execute(sql))


def runs(state_db: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{state_db}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM runs ORDER BY started_at"))


@pytest.mark.parametrize("first_in_namespace", [False, True], ids=["host-first", "pidns-first"])
def test_two_syncs_one_in_another_pid_namespace_never_write_together(
    rig: Rig, first_in_namespace: bool
) -> None:
    document = directory(PEOPLE, owners=2)
    # One call at a time, each slow: the first sync is still applying when the second,
    # started after its first invitation, is ready to write.
    rig.extra_target = "max_concurrency = 1\n"
    rig.write(document)
    rig.config_path.write_text(
        rig.config_path.read_text().replace('timeout = "2s"', 'timeout = "30s"')
    )
    rig.emulator.faults = Faults(latency=0.25)
    # The real API accepts a second pending invitation for an email; only the single
    # writer stands between two syncs and two e-mails.
    rig.emulator.allow_duplicate_invites = True
    state_db = rig.folder / "state.db"
    start_first, start_second = (namespaced, plain) if first_in_namespace else (plain, namespaced)

    first = start_first(rig, "sync")
    try:
        wait_until(lambda: applying(state_db), timeout=60, what="the first sync to apply")
        # Slower still until the second has done what it does, however long it takes
        # to start on a busy machine.
        rig.emulator.faults = Faults(latency=2.0)
        second = start_second(rig, "sync")
        status = rig.orgsync("status")  # meanwhile, an operator asks who is writing
        out, err = second.communicate(timeout=120)
        overlapped = first.poll() is None  # the second ended while the first was writing
        rig.emulator.faults = Faults()
        first_out, first_err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()

    assert max(rig.pending_invites_per_email().values()) == 1
    assert rig.holdings() == wanted_roles(document)
    assert first.returncode == 0, first_out + first_err
    assert second.returncode == 1, out + err
    assert overlapped, "the second sync waited for the first instead of being refused"
    # The refusal names the holder: "cli on <host> (pid <its own view>, instance …)".
    holder_pid = 1 if first_in_namespace else first.pid
    assert f"another orgsync is syncing {TARGET}: cli on {socket.gethostname()} " in out
    assert f"(pid {holder_pid}, instance " in out
    assert "nothing was done" in out
    assert f"lock: held by cli on {socket.gethostname()} (pid {holder_pid}, " in status.stdout
    recorded = runs(state_db)
    assert [(r["mode"], r["status"]) for r in recorded] == [("sync", "ok")]  # busy: no run


def test_a_sync_killed_as_pid_1_does_not_block_the_next_pid_1(rig: Rig) -> None:
    """Both syncs are pid 1 of their namespace (a container restarted): the dead one's
    lease names a pid that is alive (the rerun itself) and must not keep it out."""
    document = directory(PEOPLE, owners=2)
    rig.write(document)
    rig.emulator.faults = Faults(latency=0.2)
    state_db = rig.folder / "state.db"

    victim = namespaced(rig, "sync")
    try:
        wait_until(lambda: applying(state_db), timeout=60, what="the sync to apply")
        victim.send_signal(signal.SIGKILL)  # unshare --kill-child kills pid 1 with it
        victim.communicate(timeout=30)
        wait_until(
            lambda: lock_is_free(state_db.with_name(f"state.db.{TARGET}.lock")),
            timeout=30,
            what="the kernel to free the dead sync's lock",
        )
        # The dead holder's lease row is still there, far from expiring (TTL 10 minutes),
        # but `status` asks the kernel: the target is free.
        assert [holder for (holder,) in query(state_db, "SELECT holder FROM leases")] != []
        status = rig.orgsync("status").stdout
        assert "lock: free" in status
        assert "its process ended without finishing" in status
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.communicate()

    rig.emulator.faults = Faults()
    started = time.monotonic()
    rerun = namespaced(rig, "sync")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out + err
    assert time.monotonic() - started < 60  # not the 10-minute TTL
    assert "lease.taken_over" in err
    assert max(rig.pending_invites_per_email().values()) == 1
    assert rig.holdings() == wanted_roles(document)
    statuses = [(r["mode"], r["status"]) for r in runs(state_db)]
    assert statuses == [("sync", "interrupted"), ("sync", "ok")]
    # Released at the end: the row stays (its fencing token must only grow), expired.
    released = query(state_db, "SELECT expires_at FROM leases")
    assert [datetime.fromisoformat(e) <= datetime.now(UTC) for (e,) in released] == [True]
