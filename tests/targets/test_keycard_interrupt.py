"""A stop request ends a Keycard token fetch in flight, in the apply phase too.

The apply pauses the stop signal so that calls in flight finish (SPEC: SIGTERM finishes
the operation in flight). A token fetch is no such call: it changes nothing in the
organization, and the operation waiting for it has not been sent. A token expiring during
a long apply, against a slow identity service, used to hold a daemon's stop for as long as
the token endpoint took (up to the timeout, per attempt). Against the project's Keycard
emulator over loopback, its token endpoint slow and its API prompt.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.core.errors import Interrupted
from orgsync.core.plan import Invite
from orgsync.interrupt import ReadInterrupt
from orgsync.retrying import RetrySettings
from orgsync.targets.keycard import KeycardTarget
from orgsync.testing.faults import Faults
from orgsync.testing.keycard.emulator import KeycardEmulator
from tests.daemon.harness import wait_for
from tests.targets.cli import KEYCARD_SECRET_ENV, Rig, directory, keycard_target

CLIENT_ID = "sa_interrupt"
SECRET = "interrupt-secret-0123456789abcdef"
SLOW = 8.0
"""Seconds the token endpoint takes: far longer than a prompt stop."""
PROMPT = 2.0


@pytest.fixture
def emulator() -> Iterator[KeycardEmulator]:
    with KeycardEmulator(client_id=CLIENT_ID, client_secret=SECRET) as running:
        running.state.add_user("admin@example.com", "org_admin")
        running.start()
        yield running


def connect(emulator: KeycardEmulator, interrupt: ReadInterrupt) -> KeycardTarget:
    return KeycardTarget.connect(
        emulator.base_url,
        organization_id=emulator.state.organization_id,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        system="keycard-test",
        retry=RetrySettings(max_attempts=3, max_delay=5, base=0.01, cap=0.05),
        timeout=30,
        interrupt=interrupt,
    )


def stopped_after(work: object, stop: threading.Event, delay: float = 0.5) -> tuple[float, object]:
    """Run `work` on a thread, set `stop` after `delay`; seconds from the stop to its end
    and what it raised (or returned)."""
    outcome: dict[str, object] = {}
    assert callable(work)

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:
            outcome["value"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(delay)
    stopped = time.monotonic()
    stop.set()
    thread.join(SLOW * 3)
    assert not thread.is_alive()
    return time.monotonic() - stopped, outcome["value"]


def test_a_token_fetch_during_the_apply_ends_at_the_stop_and_nothing_is_sent(
    emulator: KeycardEmulator,
) -> None:
    stop = threading.Event()
    interrupt = ReadInterrupt(stop)
    target = connect(emulator, interrupt)
    try:
        target.read()  # a token, fetched promptly
        interrupt.pause()  # the apply begins: calls in flight run to their end
        emulator.expire_tokens()
        emulator.token_delay = SLOW
        invite = Invite(email="ada@example.com", role="org_member", source_id="s1", reason="t")
        took, raised = stopped_after(lambda: target.execute(invite), stop)
    finally:
        target.close()
    print(f"\ntoken fetch ended {took:.2f} s after the stop ({SLOW} s token endpoint)")
    assert took < PROMPT
    assert isinstance(raised, Interrupted), raised
    # The invitation waiting for the token was never sent again: its one attempt was the
    # one the expired token had refused.
    assert emulator.state.invitations() == []
    sent = [r.status for r in emulator.requests if r.method == "POST" and "invitations" in r.path]
    assert sent == [401]


def test_a_call_in_flight_during_the_apply_still_finishes(emulator: KeycardEmulator) -> None:
    """The other half of the rule: the stop leaves a write on the wire alone."""
    stop = threading.Event()
    interrupt = ReadInterrupt(stop)
    target = connect(emulator, interrupt)
    try:
        target.read()
        interrupt.pause()
        emulator.faults = Faults(latency=1.5)
        invite = Invite(email="ada@example.com", role="org_member", source_id="s1", reason="t")
        _, returned = stopped_after(lambda: target.execute(invite), stop)
    finally:
        target.close()
    assert isinstance(returned, str), returned
    assert [i["email"] for i in emulator.state.invitations()] == ["ada@example.com"]


def test_sigterm_while_the_sync_waits_for_a_token_mid_apply_ends_it_promptly(
    tmp_path: Path,
) -> None:
    """The real `orgsync sync`: the token expires during the apply and the token endpoint
    turns slow; SIGTERM then ends the sync at once, the operations not sent are skipped,
    and every one sent is recorded."""
    with KeycardEmulator(client_id=CLIENT_ID, client_secret=SECRET) as kc:
        kc.state.add_user("admin@example.com", "org_admin")
        kc.start()
        target = keycard_target(kc.base_url, kc.state.organization_id, CLIENT_ID)
        rig = Rig(
            folder=tmp_path,
            targets=[target.replace('timeout = "5s"', 'timeout = "30s"')],
            env={KEYCARD_SECRET_ENV: SECRET},
        )
        rig.write(directory(40, admins=()))
        kc.faults = Faults(latency=0.3)  # an apply of 40 invitations lasts a few seconds
        sync = rig.popen("sync")
        try:
            wait_for(
                lambda: any(r.method == "POST" and "invitations" in r.path for r in kc.requests),
                timeout=60,
                what="the apply's first invitation",
            )
            kc.token_delay = SLOW
            kc.expire_tokens()
            wait_for(
                lambda: any(r.status == 401 and "invitations" in r.path for r in kc.requests),
                timeout=30,
                what="an invitation refused for its expired token",
            )
            time.sleep(0.3)  # the renewal is on its way
            signalled = time.monotonic()
            sync.send_signal(signal.SIGTERM)
            out, _ = sync.communicate(timeout=60)
            took = time.monotonic() - signalled
        finally:
            if sync.poll() is None:
                sync.kill()
                sync.communicate()
        print(f"\nsync ended {took:.2f} s after SIGTERM while waiting {SLOW} s for a token")
        assert took < PROMPT + 1, (out or "")[-3000:]
        invited = {i["email"] for i in kc.state.invitations()}
    with sqlite3.connect(tmp_path / "state.db") as db:
        (status,) = db.execute("SELECT status FROM runs").fetchone()
        rows = db.execute("SELECT status, COUNT(*) FROM operations GROUP BY status").fetchall()
    assert status == "interrupted", status
    counts = dict(rows)
    # Every invitation the organization holds was recorded as done, none is left
    # in flight with its outcome unknown or never reached, and the rest were skipped, not
    # failed.
    assert counts.get("done", 0) == len(invited), (counts, out)
    assert counts.get("in_flight", 0) == counts.get("planned", 0) == 0, counts
    assert counts.get("failed", 0) == 0, (counts, out)
    assert counts.get("skipped", 0) == 40 - len(invited), counts
