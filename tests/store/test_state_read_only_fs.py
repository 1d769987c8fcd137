"""Red team: the state database on a read-only filesystem (a volume mounted `ro`, a
backup mounted for inspection, a container's read-only root).

SQLite in WAL mode must create `<db>-shm` beside the file to open it, so every command
failed there, even `status`, and the message called a healthy database "unreadable" and
advised restoring it from a backup or moving it aside. It now says what is wrong (the
directory is not writable) and that the database was not found broken.

The read-only mount is made in a mount namespace of the command's own (`unshare`), so
nothing outside the test sees it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orgsync.testing.openai.emulator import OpenAIEmulator
from tests import cli
from tests.cli.harness import API_KEY, KEY_ENV, Rig, directory

READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && cd "$0" && exec "$@"'
UNSHARE = [
    "unshare",
    *(() if os.geteuid() == 0 else ("--user", "--map-root-user")),
    "--mount",
]


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [*UNSHARE, "sh", "-c", READ_ONLY, "/tmp", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and not _can_mount(),
    reason="needs unshare(1) and the right to make a mount namespace (never skipped in CI)",
)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with OpenAIEmulator(api_key=API_KEY) as emulator:
        yield Rig(folder=tmp_path, emulator=emulator)


def on_read_only_folder(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    process = cli.start(
        rig.config_path,
        *args,
        env={**os.environ, KEY_ENV: API_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        wrapper=[*UNSHARE, "sh", "-c", READ_ONLY, str(rig.folder)],
    )
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize("command", [["status"], ["sync", "--dry-run"]])
def test_a_read_only_folder_is_named_and_the_database_not_called_broken(
    rig: Rig, command: list[str]
) -> None:
    rig.write(directory(3))
    assert rig.orgsync("sync").returncode == 0
    before = (rig.folder / "state.db").read_bytes()
    result = on_read_only_folder(rig, *command)
    assert result.returncode == 1, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert "is not writable" in said, said
    assert "not found broken" in said, said
    assert "backup" not in said and "move it aside" not in said, said
    assert (rig.folder / "state.db").read_bytes() == before
