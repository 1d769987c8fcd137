"""Red team: months of operation by a hurried administrator, with the real command.

Each test names the harm it looks for. Those that held from the start stay as
regression tests; the one still open is marked `xfail(strict=True)` with what is missing.

- switching the source (file -> LDAP, another `id_attribute`) so that every source id
  changes: mass removal plus a second invitation for everyone? (held: e-mail re-links);
- a switch that changes every e-mail too (`mail` -> `userPrincipalName`): everyone
  removed and invited under the new address? (held: the gate holds both);
- Ctrl-C in the middle of an apply: a half-applied run that says "ok", or a duplicate
  invitation on the next run? (held: exit 1, recorded `interrupted`, the next converges);
- a week-old backup of the state database restored: an incremental pass that trusts its
  stale baseline? (held: full pass); a leaver invited after the backup was taken keeps
  access, silently? (was broken, fixed: the database is behind the mark beside it, write
  runs are refused until `state accept-restore`, and the leaver is named for review);
- a target deleted from the configuration: its people removed, or silently forgotten?
  (held: nothing is done to them; `status` now says its memory is still there);
- `orgsync sync` by hand while the daemon applies: two writers, two invitations?
  (held: refused with exit 1, naming the daemon).
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from orgsync.testing.faults import Faults
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import Rig, directory, openai_target, wanted_roles
from tests.cli.test_one_writer import applying
from tests.daemon.harness import DaemonRig, wait_for

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process


def _moved(document: dict[str, Any], *, ids: str = "", domain: str = "") -> dict[str, Any]:
    """`document` as another source would answer: every id prefixed with `ids`, every
    e-mail at `domain`."""
    moved = json.loads(json.dumps(document))
    for person in moved["people"]:
        person["id"] = ids + person["id"]
        if domain:
            person["email"] = person["email"].replace("@example.com", f"@{domain}")
    for group in moved["groups"]:
        group["members"] = [ids + m for m in group["members"]]
    return moved


def _without(document: dict[str, Any], *people: str) -> dict[str, Any]:
    left = json.loads(json.dumps(document))
    left["people"] = [p for p in left["people"] if p["id"] not in people]
    for group in left["groups"]:
        group["members"] = [m for m in group["members"] if m not in people]
    return left


def test_a_source_switch_that_changes_every_id_relinks_by_email_and_changes_nothing(
    rig: Rig,
) -> None:
    document = directory(30, owners=2)
    rig.write(document)
    assert rig.orgsync("sync").returncode == 0
    before = rig.holdings()
    rig.write(_moved(document, ids="ldap-"))
    planned = rig.orgsync("sync", "--dry-run", "--json")
    assert planned.returncode == 0, planned.stdout
    assert json.loads(planned.stdout)["targets"][0]["operations"] == []
    assert rig.orgsync("sync").returncode == 0
    assert rig.holdings() == before
    assert set(rig.pending_invites_per_email().values()) == {1}
    # Linked under the new ids now: a leaver of the new source is removed as orgsync's.
    rig.write(_without(_moved(document, ids="ldap-"), "ldap-p29"))
    left = rig.orgsync("sync")
    assert left.returncode == 0, left.stdout
    assert "person29@example.com" not in rig.holdings()


def test_a_source_switch_that_changes_every_email_removes_and_invites_nobody(rig: Rig) -> None:
    document = directory(30, owners=2)
    rig.write(document)
    assert rig.orgsync("sync").returncode == 0
    before = rig.holdings()
    rig.write(_moved(document, ids="ad-", domain="corp.example.com"))
    result = rig.orgsync("sync")
    assert result.returncode == 3, result.stdout
    assert "Held by the safety gate" in result.stdout
    assert rig.holdings() == before, "nobody removed, nobody invited at the new address"


def test_ctrl_c_in_the_middle_of_an_apply_exits_1_and_the_next_sync_converges(rig: Rig) -> None:
    rig.extra_target = "max_concurrency = 1"
    document = directory(40)
    rig.write(document)
    rig.emulator.faults = Faults(latency=0.1)
    sync = rig.popen("sync", piped=True)
    deadline = time.monotonic() + 60
    while len(rig.holdings()) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    sync.send_signal(signal.SIGINT)
    out, _ = sync.communicate(timeout=60)
    assert sync.returncode == 1, out
    assert "stopped before" in out and "the next run does them" in out
    assert 0 < len(rig.holdings()) < 40
    with sqlite3.connect(rig.folder / "state.db") as db:
        (status,) = db.execute("SELECT status FROM runs").fetchone()
    assert status == "interrupted"
    rig.emulator.faults = Faults()
    assert rig.orgsync("sync").returncode == 0
    assert len(rig.holdings()) == 40
    assert set(rig.pending_invites_per_email().values()) == {1}, "no duplicate invitation"


def _restore_week_old(rig: Rig) -> None:
    """Put back `backup.db` as the state database, its last full pass a week old."""
    for name in ("state.db", "state.db-wal", "state.db-shm"):  # the mark beside it stays
        (rig.folder / name).unlink(missing_ok=True)
    shutil.copy(rig.folder / "backup.db", rig.folder / "state.db")
    week_ago = "2026-01-01T00:00:00.000000+00:00"
    with sqlite3.connect(rig.folder / "state.db") as db:
        db.execute("UPDATE baselines SET full_at = ?", (week_ago,))


def test_a_restored_week_old_backup_is_not_trusted_by_an_incremental_pass(rig: Rig) -> None:
    document = directory(10)
    rig.write(document)
    assert rig.orgsync("sync").returncode == 0
    shutil.copy(rig.folder / "state.db", rig.folder / "backup.db")
    rig.write(_without(document, "p8"))  # person8 leaves after the backup was taken
    assert rig.orgsync("sync").returncode == 0
    assert "person8@example.com" not in rig.holdings()
    rig.write(_without(document, "p8", "p9"))  # person9 too, while the database is lost
    _restore_week_old(rig)
    refused = rig.orgsync("sync", "--incremental", "--json")
    assert refused.returncode == 1, refused.stdout
    assert "is behind its high-water mark" in refused.stderr + refused.stdout
    assert rig.orgsync("state", "accept-restore").returncode == 0
    result = rig.orgsync("sync", "--incremental", "--json")
    assert result.returncode == 0, result.stdout
    run = json.loads(result.stdout)["targets"][0]["run"]
    assert run["pass"] == "full", run
    assert "person8@example.com" not in rig.holdings(), "a leaver is not invited again"
    assert "person9@example.com" not in rig.holdings(), "the backup knew them: removed"


def test_a_leaver_invited_after_the_backup_was_taken_stops_the_sync_and_is_named(
    rig: Rig,
) -> None:
    """The backup does not know orgsync invited person9 after it was taken: person9 is
    unmanaged to it, and a sync would leave the leaver's invitation alone, silently. The
    database's write generation is behind the mark beside it: the sync is refused (exit 1,
    nothing changed) naming both marks and the way forward; the dry run, `status` and
    `runs` still work and say so, and the dry run names person9 for review. Once the
    operator accepts the restore, syncs run again (a full pass), still naming person9
    until that full pass ends clean; orgsync never removes an unmanaged person itself."""
    document = directory(10)
    rig.write(_without(document, "p9"))
    assert rig.orgsync("sync").returncode == 0
    shutil.copy(rig.folder / "state.db", rig.folder / "backup.db")
    rig.write(document)  # person9 joins: invited by orgsync after the backup
    assert rig.orgsync("sync").returncode == 0
    assert "person9@example.com" in rig.holdings()
    _restore_week_old(rig)
    rig.write(_without(document, "p9"))  # and leaves again
    before = rig.holdings()
    refused = rig.orgsync("sync")
    told = refused.stdout + refused.stderr
    assert refused.returncode == 1, told
    assert "is behind its high-water mark" in told, told
    assert "state.db.mark records generation" in told, told
    assert "people it invited or linked since are treated as unmanaged" in told, told
    assert "orgsync state accept-restore" in told, told
    assert rig.holdings() == before, "nothing changed"
    planned = rig.orgsync("sync", "--dry-run")
    assert planned.returncode in (0, 2), planned.stdout + planned.stderr
    assert "is behind its high-water mark" in planned.stdout, planned.stdout
    assert "not active in the source: person9@example.com" in planned.stdout, planned.stdout
    status = rig.orgsync("status")
    assert status.returncode == 0, status.stderr
    assert "WARNING: state database" in status.stdout, status.stdout
    runs = rig.orgsync("runs")
    assert runs.returncode == 0 and "is behind its high-water mark" in runs.stderr, runs.stderr
    accepted = rig.orgsync("state", "accept-restore")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "accepted the restored state database" in accepted.stdout, accepted.stdout
    synced = rig.orgsync("sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "person9@example.com" in synced.stdout, "named for review after the acceptance"
    assert "person9@example.com" in rig.holdings(), "unmanaged: never removed by orgsync"
    again = rig.orgsync("sync")
    assert again.returncode == 0 and "person9" not in again.stdout, again.stdout


def test_a_target_removed_from_the_configuration_keeps_its_people_and_status_says_so(
    rig: Rig, second: OpenAIEmulator
) -> None:
    rig.more_targets = openai_target("second", second.start())
    rig.write(directory(5))
    assert rig.orgsync("sync").returncode == 0
    held = {**rig.holdings()}
    rig.more_targets = ""
    rig.write(directory(4))  # person4 leaves; the config no longer names `second`
    assert rig.orgsync("sync").returncode == 0
    assert "person4@example.com" not in rig.holdings()
    assert len([i for i in second.state.invites() if i["status"] == "pending"]) == 5
    assert held.keys() - rig.holdings().keys() == {"person4@example.com"}
    status = rig.orgsync("status")
    assert "second (in the state database, not in the configuration):" in status.stdout
    assert "5 people orgsync manages there are left as they are" in status.stdout


def test_a_sync_while_the_daemon_applies_is_refused_with_exit_1_naming_the_daemon(
    tmp_path: Path, emulator: OpenAIEmulator
) -> None:
    """An operator runs `orgsync sync` by hand while the service is half-way through its
    pass: refused (exit 1), the daemon named, no second invitation to anyone."""
    rig = DaemonRig(folder=tmp_path, emulator=emulator, target_keys="max_concurrency = 1")
    document = directory(30)
    rig.write(document)
    emulator.faults = Faults(latency=0.25)
    emulator.allow_duplicate_invites = True  # only the single writer prevents a second e-mail
    daemon = rig.start()
    try:
        daemon.wait_started()
        wait_for(lambda: applying(rig.folder / "state.db"), timeout=60, what="the daemon to apply")
        emulator.faults = Faults(latency=2.0)
        by_hand = rig.orgsync("sync")
        emulator.faults = Faults()
        assert by_hand.returncode == 1, by_hand.stdout + by_hand.stderr
        assert "another orgsync is syncing openai-test: daemon" in by_hand.stdout
        wait_for(lambda: len(rig.holdings()) == 30, timeout=120, what="the daemon's pass")
    finally:
        assert daemon.terminate() == 0
    assert set(rig.pending_invites()) == set(wanted_roles(document))
    assert set(rig.pending_invites().values()) == {1}
