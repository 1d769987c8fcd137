"""`orgsync sync --incremental` as an administrator runs it (file source, OpenAI emulator
over loopback, real SQLite): a quiet pass makes no target call, a change is planned for
the people it touches alone, and every guard a full pass has still holds (issue 13,
"incremental passes")."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest

from tests.cli.harness import Rig, directory
from tests.cli.test_only import PEOPLE, USERS, reads, synced, without, writes

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


def incremental(rig: Rig, *args: str) -> tuple[int, dict[str, Any]]:
    result = rig.orgsync("sync", "--incremental", "--json", *args)
    assert result.returncode in (0, 2, 3), result.stdout + result.stderr
    (target,) = json.loads(result.stdout)["targets"]
    return result.returncode, target


def last_run(rig: Rig) -> dict[str, Any]:
    result = rig.orgsync("runs", "--json", "--limit", "1")
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)
    assert isinstance(run, dict)
    return run


def test_without_a_baseline_the_pass_is_full_and_says_why(rig: Rig) -> None:
    rig.write(directory(5))
    result = rig.orgsync("sync", "--incremental")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "full pass: no clean full pass recorded yet" in result.stdout
    run = last_run(rig)
    assert (run["pass"], run["pass_reason"]) == ("full", "no clean full pass recorded yet")
    assert len(rig.holdings()) == 5


def test_a_quiet_incremental_pass_makes_no_target_call(rig: Rig) -> None:
    synced(rig)  # a plain full sync records the baseline
    mark = len(rig.emulator.requests)
    code, target = incremental(rig)
    assert code == 0
    assert target["run"]["pass"] == "incremental", target
    assert target["operations"] == []
    assert rig.emulator.requests[mark:] == []
    assert last_run(rig)["pass"] == "incremental"
    # A full sync is still a full sync, recorded as such.
    assert rig.orgsync("sync").returncode == 0
    assert last_run(rig)["pass"] == "full"


def test_one_joiner_is_invited_reading_only_them(rig: Rig) -> None:
    synced(rig)
    rig.write(directory(PEOPLE + 1))
    mark = len(rig.emulator.requests)
    code, target = incremental(rig)
    assert code == 0, target
    assert rig.pending_invites_per_email() == {f"person{PEOPLE}@example.com": 1}
    got = reads(rig, mark)
    assert got[USERS] == 1, got  # the `emails` filter: one page of the users list, not two
    assert sum(got.values()) <= 5, got
    # The change is now part of the baseline: the next pass is quiet again.
    mark = len(rig.emulator.requests)
    assert incremental(rig)[0] == 0
    assert rig.emulator.requests[mark:] == []


def test_a_person_deleted_at_the_source_is_removed_after_the_grace(rig: Rig) -> None:
    """The missing-since clock runs across incremental passes: once the grace is over the
    next pass removes them although nothing changed at the source since."""
    rig.safety = 'max_removals = 10\nmax_removal_ratio = 0.5\nremoval_grace = "2s"'
    document = synced(rig, 20)
    rig.write(without(document, "p7"))
    code, target = incremental(rig)
    assert code == 0, target
    assert [w["email"] for w in target["waiting"]] == ["person7@example.com"]
    assert "person7@example.com" in rig.holdings()
    time.sleep(2.2)
    mark = len(rig.emulator.requests)
    code, target = incremental(rig)
    assert code == 0, target
    assert "person7@example.com" not in rig.holdings()
    assert [m for m, _ in writes(rig, mark)] == ["DELETE"]
    mark = len(rig.emulator.requests)
    assert incremental(rig)[0] == 0
    assert rig.emulator.requests[mark:] == [], "once removed, nobody is left to check"


def test_a_truncated_directory_meets_the_same_safety_gate(rig: Rig) -> None:
    """A delta saying most people left is held exactly as a full pass would hold it, and
    stays held (and untrusted) on the passes after."""
    document = synced(rig, 40)
    rig.write(without(document, *(f"p{i}" for i in range(5, 40))))
    mark = len(rig.emulator.requests)
    code, target = incremental(rig)
    assert code == 3, target
    assert len(target["held"]) == 35
    assert writes(rig, mark) == []
    assert len(rig.holdings()) == 40
    code, target = incremental(rig)
    assert code == 3
    assert writes(rig, mark) == []


def test_a_configuration_change_makes_the_next_pass_full(rig: Rig) -> None:
    synced(rig, 10)
    rig.safety = "max_removals = 9\nmax_removal_ratio = 0.5"
    rig.write(directory(10))
    code, target = incremental(rig)
    assert code == 0
    assert target["run"]["pass"] == "full"
    assert "configuration changed" in target["run"]["pass_reason"]
    assert incremental(rig)[1]["run"]["pass"] == "incremental"


def test_a_change_made_by_hand_on_the_target_waits_for_the_full_pass(rig: Rig) -> None:
    """Documented trade: an incremental pass trusts the organization as the last pass
    left it; the next full pass (`full_interval`, at the daemon's start, `sync`)
    corrects it."""
    synced(rig, 10)
    rig.emulator.state.add_user("intruder@example.com", "owner")
    rig.safety = "max_removals = 10\nmax_removal_ratio = 0.5\nremove_unmanaged = true"
    rig.write(directory(10))
    assert incremental(rig)[1]["run"]["pass"] == "full", "the safety keys changed"
    assert "intruder@example.com" not in rig.holdings()
    rig.emulator.state.add_user("intruder2@example.com", "owner")
    assert incremental(rig)[1]["run"]["pass"] == "incremental"
    assert "intruder2@example.com" in rig.holdings()
    assert rig.orgsync("sync").returncode == 0
    assert "intruder2@example.com" not in rig.holdings()


def test_a_dry_run_records_no_baseline(rig: Rig) -> None:
    rig.write(directory(5))
    assert rig.orgsync("sync", "--incremental", "--dry-run").returncode == 2
    code, target = incremental(rig, "--dry-run")
    assert code == 2
    assert target["run"]["pass"] == "full"


def test_incremental_with_only_or_a_reviewed_plan_is_a_usage_error(rig: Rig) -> None:
    rig.write(directory(5))
    for extra in (["--only", "person1@example.com"], ["--plan", "plan.json"]):
        result = rig.orgsync("sync", "--incremental", *extra)
        assert result.returncode == 64, result.stderr
        assert "--incremental cannot be combined" in result.stderr


def test_a_full_pass_recorded_by_a_clock_that_ran_ahead_does_not_put_off_the_next(
    rig: Rig,
) -> None:
    """A host whose clock ran a year ahead records its full pass a year ahead; once NTP
    corrects the clock, `full_interval` must not wait for that year to come."""
    synced(rig)
    future = "2099-01-01T00:00:00.000000+00:00"
    with sqlite3.connect(rig.folder / "state.db") as db:
        assert db.execute("UPDATE baselines SET full_at = ?", (future,)).rowcount == 1
    code, target = incremental(rig)
    assert code == 0, target
    assert target["run"]["pass"] == "full", target["run"]
    assert "recorded in the future" in target["run"]["pass_reason"]
    assert incremental(rig)[1]["run"]["pass"] == "incremental", "the new full pass is trusted"
