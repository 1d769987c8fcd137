"""Red team of the daemon's incremental schedule (issue 13): the full pass at start is
what corrects the organization after the daemon was down (changes made by hand, a
crash mid-apply); incremental passes trust what the last pass recorded.

How it could hurt an administrator: a daemon whose start-up pass failed (the directory
unreachable for a minute at boot) and whose every later pass is incremental never
corrects what was done by hand meanwhile until `full_interval` (a day) has passed: an
invitation revoked by hand stays revoked, a stranger added by hand stays. The real
daemon process, the file source, the OpenAI emulator over loopback, SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, directory
from tests.daemon.harness import Daemon, DaemonRig, wait_for


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=API_KEY) as running:
        yield running


def syncs(rig: DaemonRig) -> list[tuple[str, str | None]]:
    return [
        (row["status"], row["pass_kind"])
        for row in rig.finished_runs()
        if row["mode"] == "sync" and row["origin"] == "daemon"
    ]


def test_a_failed_start_up_pass_leaves_the_next_pass_full(
    tmp_path: Path, emulator: OpenAIEmulator, started: list[Daemon]
) -> None:
    """Bug found: the worker made every pass after its first incremental, whether or not
    the first (full) one reached the organization; with the source unreadable at start,
    the invitation revoked by hand while the daemon was down stayed revoked until
    `full_interval`. Now passes stay full until one full pass of this process did."""
    rig = DaemonRig(
        folder=tmp_path, emulator=emulator, interval="1s", quarantine='full_interval = "1h"'
    )
    rig.write(directory(5))
    assert rig.orgsync("sync").returncode == 0, "the baseline of an earlier daemon"
    (invite,) = [i for i in emulator.state.invites() if i["email"] == "person2@example.com"]
    emulator.state.api_delete_invite(invite["id"])  # by hand, while no daemon runs
    (tmp_path / "directory.json").write_text("{", encoding="utf-8")  # unreadable at start

    daemon = rig.start()
    started.append(daemon)
    daemon.wait_started()
    wait_for(lambda: len(syncs(rig)) >= 1, timeout=60, what="the pass at start")
    assert syncs(rig)[0][0] == "failed"
    rig.write(directory(5))  # the directory is back
    wait_for(
        lambda: any(status == "ok" for status, _ in syncs(rig)),
        timeout=60,
        what="a pass that reads the directory",
    )
    first_ok = next(kind for status, kind in syncs(rig) if status == "ok")
    assert first_ok == "full", syncs(rig)
    wait_for(lambda: "person2@example.com" in rig.holdings(), timeout=30, what="the re-invitation")
    wait_for(lambda: syncs(rig)[-1][1] == "incremental", timeout=30, what="incremental again")
    assert daemon.terminate() == 0


def test_a_webhook_naming_one_joiner_many_ways_invites_them_once_and_nobody_else(
    tmp_path: Path, emulator: OpenAIEmulator, started: list[Daemon]
) -> None:
    """An event names the same joiner under case, full-width and padded spellings of
    their address and their id twice, beside a stranger and ids that look like filters:
    one invitation, to the joiner, and nothing else changes."""
    rig = DaemonRig(folder=tmp_path, emulator=emulator, interval="1h")
    rig.write(directory(5))
    daemon = rig.start()
    started.append(daemon)
    daemon.wait_started()
    wait_for(lambda: len(syncs(rig)) >= 1, timeout=60, what="the pass at start")
    before = rig.holdings()
    rig.write(directory(6))  # person5 joins; nobody else changes
    named = {
        "id": "evt-hostile",
        "emails": [
            "PERSON5@EXAMPLE.COM",
            "ｐｅｒｓｏｎ５@ｅｘａｍｐｌｅ.ｃｏｍ",
            "  person5@example.com ",
            "stranger@elsewhere.example",
            'person1@example.com" or "1" eq "1',
        ],
        "source_ids": ["p5", "*", "(|(uid=*))", 'p1" or "1" eq "1'],
    }
    response = daemon.post_generic(named)
    assert response.status_code == 202, response.text
    wait_for(lambda: "person5@example.com" in rig.holdings(), timeout=60, what="the joiner invited")
    wait_for(lambda: len(syncs(rig)) >= 2, timeout=30, what="the targeted run recorded")
    assert rig.pending_invites() == {**dict.fromkeys(before, 1), "person5@example.com": 1}
    assert rig.holdings() == {**before, "person5@example.com": "reader"}
    assert daemon.terminate() == 0
