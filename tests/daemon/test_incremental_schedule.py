"""The daemon's schedule (issue 13): a full pass at start, incremental passes every
`interval` (a quiet one makes no call to the organization), a full one again once
`full_interval` has passed. The real daemon process, the file source, the OpenAI emulator
over loopback and the SQLite state database."""

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


def passes(rig: DaemonRig) -> list[tuple[str, str | None]]:
    return [
        (row["pass_kind"], row["pass_reason"])
        for row in rig.finished_runs()
        if row["mode"] == "sync"
    ]


def test_full_at_start_incremental_between_full_again_after_full_interval(
    tmp_path: Path, emulator: OpenAIEmulator, started: list[Daemon]
) -> None:
    rig = DaemonRig(
        folder=tmp_path, emulator=emulator, interval="1s", quarantine='full_interval = "6s"'
    )
    rig.write(directory(5))
    daemon = rig.start()
    started.append(daemon)
    daemon.wait_started()
    wait_for(lambda: len(passes(rig)) >= 1, timeout=60, what="the pass at start")
    assert passes(rig)[0][0] == "full"
    assert len(rig.holdings()) == 5

    wait_for(lambda: len(passes(rig)) >= 3, timeout=60, what="two scheduled passes")
    mark = len(emulator.requests)
    wait_for(lambda: len(passes(rig)) >= 4, timeout=60, what="a third scheduled pass")
    assert [kind for kind, _ in passes(rig)[1:4]] == ["incremental"] * 3
    assert emulator.requests[mark:] == [], "a quiet incremental pass calls nobody"

    rig.write(directory(6))
    wait_for(lambda: "person5@example.com" in rig.holdings(), timeout=60, what="the joiner")

    def refreshed() -> bool:
        return any(
            kind == "full" and reason is not None and "full_interval" in reason
            for kind, reason in passes(rig)[1:]
        )

    wait_for(refreshed, timeout=60, what="a full pass after full_interval")
    assert daemon.terminate() == 0


def test_a_scheduled_pass_that_absorbed_a_webhook_is_a_full_pass(
    tmp_path: Path, emulator: OpenAIEmulator, started: list[Daemon]
) -> None:
    """A webhook asks for its people to be reconciled against the organization as it is
    now; merged into a scheduled request (it waits out its debounce while the schedule
    fires every second), the run is a full pass, which also corrects what was changed on
    the organization by hand, where an incremental pass trusts the last recorded state."""
    rig = DaemonRig(folder=tmp_path, emulator=emulator, interval="1s", debounce="4s")
    rig.write(directory(5))
    daemon = rig.start()
    started.append(daemon)
    daemon.wait_started()
    wait_for(lambda: len(passes(rig)) >= 2, timeout=60, what="start and a scheduled pass")
    assert [kind for kind, _ in passes(rig)[:2]] == ["full", "incremental"]

    (invite,) = [i for i in emulator.state.invites() if i["email"] == "person2@example.com"]
    emulator.state.api_delete_invite(invite["id"])  # by hand, on the organization
    seen = len(passes(rig))
    wait_for(lambda: len(passes(rig)) >= seen + 2, timeout=60, what="two more scheduled passes")
    assert [kind for kind, _ in passes(rig)[seen:]] == ["incremental"] * (len(passes(rig)) - seen)
    assert "person2@example.com" not in rig.holdings(), "an incremental pass trusts the record"

    seen = len(passes(rig))
    response = daemon.post_generic({"id": "evt-1", "emails": ["person4@example.com"]})
    assert response.status_code == 202, response.text

    def after() -> list[tuple[str, str]]:
        runs = [r for r in rig.finished_runs() if r["mode"] == "sync"][seen:]
        return [(r["triggered_by"], r["pass_kind"]) for r in runs]

    wait_for(lambda: ("schedule", "full") in after(), timeout=60, what="the full pass")
    assert "person2@example.com" in rig.holdings()
    assert [run for run in after() if run[1] != "incremental"] == [("schedule", "full")]
    assert not any(trigger.startswith("webhook") for trigger, _ in after()), "absorbed"
    assert daemon.terminate() == 0
