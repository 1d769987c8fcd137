"""Red team: the state database's files belong to the wrong user, or are read-only.

orgsync runs as a service user; an administrator runs `sudo orgsync sync` once to see
what happens, or a backup is restored by root, or a file is made read-only. What could
hurt: the error called the healthy database "unreadable" and advised restoring it from a
backup or moving it aside to start over (which forgets whom orgsync manages: leavers
are never removed, everyone is re-linked); or one root run left lock and mark files the
service user may not open, so every later run failed until someone found them; or a
write sent to the target before the database refused its first write.

Run as root (CI is root): the service user is `nobody`, each command started with its
uid. Skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import Rig, directory

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv(1) to run orgsync as another user (CI runs as root)",
)

NOBODY = 65534


# CAP_DAC_READ_SEARCH: the service user may read (never write) what it does not own, so
# that it can load orgsync from a checkout under a folder only root may enter (a clone in
# `mktemp -d`, /root): without it, that is "No module named orgsync". Writing, what these
# tests are about, is still refused on files it does not own.
AS_NOBODY = [
    "setpriv",
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=+dac_read_search",
    "--ambient-caps=+dac_read_search",
]


@pytest.fixture
def shared(emulator: OpenAIEmulator) -> Iterator[Rig]:
    """A rig in a folder the service user owns (pytest's own tmp folders are root's 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="orgsync-perm-"))
    os.chmod(folder, 0o755)
    os.chown(folder, NOBODY, NOBODY)
    try:
        rig = Rig(folder=folder, emulator=emulator)
        rig.write(directory(3))
        yield rig
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sync_as_nobody(rig: Rig) -> tuple[int, str]:
    process = cli.start(
        rig.config_path,
        "sync",
        env=rig.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        wrapper=AS_NOBODY,
    )
    out, err = process.communicate(timeout=120)
    return process.returncode, out + err


def test_one_root_run_leaves_files_the_service_user_can_still_use(shared: Rig) -> None:
    code, output = sync_as_nobody(shared)
    assert code == 0, output
    shared.write(directory(5))
    as_root = shared.orgsync("sync")  # `sudo orgsync sync`, once
    assert as_root.returncode == 0, as_root.stdout + as_root.stderr
    foreign = [
        p.name
        for p in shared.folder.iterdir()
        if p.name.startswith("state.db") and p.stat().st_uid != NOBODY
    ]
    assert foreign == [], f"root left files the service user does not own: {foreign}"
    shared.write(directory(6))
    code, output = sync_as_nobody(shared)
    assert code == 0, output
    assert len(shared.holdings()) == 6


@pytest.mark.parametrize("how", ["database made by root", "wal left by root", "read-only"])
def test_a_database_the_user_may_not_write_is_named_not_called_broken(
    shared: Rig, how: str
) -> None:
    db = shared.folder / "state.db"
    if how == "database made by root":
        made = shared.orgsync("sync")
        assert made.returncode == 0, made.stdout + made.stderr
        culprit, said = db, "is owned by uid 0"
    else:
        code, output = sync_as_nobody(shared)
        assert code == 0, output
        if how == "wal left by root":
            # Another tool run as root (sqlite3 state.db) while nothing else has it open.
            wal = shared.folder / "state.db-wal"
            wal.touch(mode=0o600)
            os.chown(wal, 0, 0)
            culprit, said = wal, "is owned by uid 0"
        else:
            db.chmod(0o400)
            culprit, said = db, "chmod 600"
    before = shared.holdings()
    kept = db.read_bytes()
    shared.write(directory(5))
    code, output = sync_as_nobody(shared)
    assert code == 1, output
    assert f"{culprit} is not readable and writable by this user" in output, output
    assert said in output and "not found broken" in output, output
    assert "Restore" not in output and ".broken" not in output, "advice that loses state"
    assert "Traceback" not in output
    assert shared.holdings() == before, "sent to the target before the failure was known"
    assert db.read_bytes() == kept


def test_a_database_others_may_read_is_said_at_every_run(shared: Rig) -> None:
    """Harm: a leaked secret's cousin, every managed person's e-mail readable by every
    local user, after a restore with `cp` (umask 022 makes it 0644). Was silent; now each
    command says so (and leaves the mode as the operator set it)."""
    made = shared.orgsync("sync")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "state.readable_by_others" not in made.stdout + made.stderr
    db = shared.folder / "state.db"
    db.chmod(0o644)
    again = shared.orgsync("sync")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "state.readable_by_others" in again.stdout + again.stderr
    assert f"chmod 600 {db}" in again.stdout + again.stderr
    assert db.stat().st_mode & 0o777 == 0o644
