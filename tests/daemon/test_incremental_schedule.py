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
