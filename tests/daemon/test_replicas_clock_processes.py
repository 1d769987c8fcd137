"""Replicas whose host clocks disagree, as real `orgsync sync` processes on one
PostgreSQL state database (the red team of tests/daemon/test_replicas_clock.py, through
the production wiring: no clock is given to anything, the process's wall clock itself is
off, by `skewed_host/sitecustomize.py`).

Harm (lost access): a host two hours behind runs the sync that first sees a leaver
missing; the next sync, on a host with the right clock, finds `removal_grace` (one hour)
already over and removes them at once. They must keep access for the hour.
"""

from __future__ import annotations

from pathlib import Path

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, Rig, directory, holdings

SKEWED_HOST = Path(__file__).parent / "skewed_host"


def test_a_sync_on_a_host_two_hours_behind_does_not_cut_a_leavers_grace_short(
    tmp_path: Path, postgres_url: str
) -> None:
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        rig = Rig(
            folder=tmp_path,
            emulator=emulator,
            safety='max_removals = 10\nmax_removal_ratio = 1.0\nremoval_grace = "1h"',
            state=f'url = "{postgres_url}"',
        )
        rig.write(directory(4))
        right = rig.orgsync("sync")
        assert right.returncode == 0, right.stderr
        assert "person3@example.com" in holdings(emulator)

        rig.write(directory(3))
        rig.env = {"PYTHONPATH": str(SKEWED_HOST), "ORGSYNC_TEST_SKEW_SECONDS": "-7200"}
        behind = rig.orgsync("sync")
        assert behind.returncode == 0, behind.stderr
        assert "person3@example.com" in holdings(emulator)

        rig.env = {}
        again = rig.orgsync("sync")
        assert again.returncode == 0, again.stderr
        assert "person3@example.com" in holdings(emulator), "removed before its grace"
        assert "state.clock_skew" in behind.stderr, "the wrong host clock went unreported"
        assert "state.clock_skew" not in again.stderr
