"""Red team of reviewed plans (`sync --dry-run --plan-out FILE`, then `sync --plan FILE`)
through the real `orgsync` command against the OpenAI emulator.

How it could hurt an administrator, each tried below:
- applying something other than what was reviewed: an old plan replayed after it was
  applied or after the world changed; an edited file whose checksum and summary were
  recomputed; a plan of two targets of which one changed (applied whole or not at all);
  a plan applied with another organization's or state database's configuration; held removals made to apply by passing `--allow-removals` at apply time
  (or the other way round);
- a plan file swapped between review and apply: one others can write (world- or
  group-writable, owned by another user, in a folder others can rename files in);
- a plan leaking: `--plan-out` writing the plan's e-mails into a FIFO, or through a
  symlink, that another user planted at the path (they read it as it is written);
- a hostile file breaking the operator's terminal: escape sequences in a key or a target
  name of the file, printed in the refusal;
- the written file shows hostile IdP values escaped (it is reviewed with `cat` / `less`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from orgsync.core.plan import Plan
from orgsync.testing.openai.emulator import OpenAIEmulator
from tests.cli.harness import API_KEY, Rig, directory, openai_target
from tests.cli.test_only import without

# In this process (cli.run_here): what the command decides, writes and prints.
pytestmark = pytest.mark.orgsync_in_process

NOBODY = 65534
"""Another user of the machine (`nobody`)."""

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")


def writes(rig: Rig, since: int) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in rig.emulator.requests[since:] if r.method != "GET"]


def reviewed(rig: Rig, *extra: str, expect: int = 2) -> Path:
    plan_file = rig.folder / "plan.json"
    result = rig.orgsync("sync", "--dry-run", "--plan-out", str(plan_file), *extra)
    assert result.returncode == expect, result.stdout + result.stderr
    return plan_file


def test_a_reviewed_plan_applies_only_unedited_only_while_current_and_only_once(
    rig: Rig,
) -> None:
    """One review, tried four ways: edited by a tamperer who knows the format (person2
    raised to owner, checksum and summary rewritten: the file reads as a plan); applied
    after the source changed; applied as reviewed; replayed after it was applied."""
    rig.write(directory(3))
    plan_file = reviewed(rig)
    original = plan_file.read_text()
    mark = len(rig.emulator.requests)

    document = json.loads(original)
    (target,) = document["targets"]
    for operation in target["operations"]:
        if operation.get("email") == "person2@example.com":
            operation["role"] = "owner"
    document["targets"] = [Plan.from_json(target).to_json()]
    plan_file.write_text(json.dumps(document))
    forged = rig.orgsync("sync", "--plan", str(plan_file))
    assert forged.returncode == 1, forged.stdout + forged.stderr
    assert "no longer matches a fresh plan" in forged.stderr

    plan_file.write_text(original)
    rig.write(directory(4))  # someone joined since the review
    stale = rig.orgsync("sync", "--plan", str(plan_file))
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert writes(rig, mark) == []

    rig.write(directory(3))
    assert rig.orgsync("sync", "--plan", str(plan_file)).returncode == 0
    assert len(rig.emulator.state.invites()) == 3
    mark = len(rig.emulator.requests)
    again = rig.orgsync("sync", "--plan", str(plan_file))
    assert again.returncode == 1, again.stdout + again.stderr
    assert "no longer matches a fresh plan" in again.stderr
    assert writes(rig, mark) == []
    assert len(rig.emulator.state.invites()) == 3


def test_held_removals_never_apply_by_changing_the_allowance_at_apply_time(rig: Rig) -> None:
    rig.safety = "max_removals = 2\nmax_removal_ratio = 1.0"
    document = directory(12)
    rig.write(document)
    assert rig.orgsync("sync").returncode == 0
    rig.write(without(document, *(f"p{i}" for i in range(6, 12))))
    held_plan = reviewed(rig, expect=3)
    assert len(json.loads(held_plan.read_text())["targets"][0]["held"]) == 6
    before = rig.holdings()
    mark = len(rig.emulator.requests)

    lifted = rig.orgsync("sync", "--plan", str(held_plan), "--allow-removals", "6")
    assert lifted.returncode == 1, lifted.stdout + lifted.stderr
    assert writes(rig, mark) == [] and rig.holdings() == before

    as_reviewed = rig.orgsync("sync", "--plan", str(held_plan))
    assert as_reviewed.returncode == 3, as_reviewed.stdout + as_reviewed.stderr
    assert writes(rig, mark) == [] and rig.holdings() == before

    allowed = rig.folder / "allowed.json"
    result = rig.orgsync("sync", "--dry-run", "--plan-out", str(allowed), "--allow-removals", "6")
    assert result.returncode == 2, result.stdout + result.stderr
    without_allowance = rig.orgsync("sync", "--plan", str(allowed))
    assert without_allowance.returncode == 1, without_allowance.stdout + without_allowance.stderr
    assert writes(rig, mark) == [] and rig.holdings() == before


SWAPPABLE = [("world-writable", 0o666, False), ("group-writable", 0o620, False)]
if os.geteuid() == 0:  # planting another user's file needs root
    SWAPPABLE.append(("another user's", 0o644, True))


def test_a_plan_file_others_could_have_swapped_is_refused(rig: Rig) -> None:
    """Between review and apply, whoever can write the file can replace what was
    reviewed with what they want applied: such a file is refused, as ssh refuses a key
    file others can write."""
    rig.write(directory(3))
    plan_file = reviewed(rig)
    mark = len(rig.emulator.requests)
    for how, mode, other_owner in SWAPPABLE:
        plan_file.chmod(mode)
        os.chown(plan_file, NOBODY if other_owner else os.geteuid(), -1)
        result = rig.orgsync("sync", "--plan", str(plan_file))
        assert result.returncode == 1, f"{how}: {result.stdout + result.stderr}"
        assert f"--plan {plan_file}:" in result.stderr
        assert "others could have replaced" in result.stderr, result.stderr
    assert writes(rig, mark) == []


def test_a_plan_file_in_a_folder_others_can_write_is_refused(rig: Rig) -> None:
    rig.write(directory(3))
    shared = rig.folder / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may rename another file over plan.json
    plan_file = shared / "plan.json"
    mark = len(rig.emulator.requests)
    written = rig.orgsync("sync", "--dry-run", "--plan-out", str(plan_file))
    assert written.returncode == 1, written.stdout + written.stderr
    assert "others could replace the plan before it is applied" in written.stderr
    assert not plan_file.exists()
    assert len(rig.emulator.requests) == mark, "refused before anything was read"
    shared.chmod(0o700)
    assert rig.orgsync("sync", "--dry-run", "--plan-out", str(plan_file)).returncode == 2
    shared.chmod(0o777)  # opened up after the review
    result = rig.orgsync("sync", "--plan", str(plan_file))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "others could have replaced" in result.stderr
    shared.chmod(0o777 | stat.S_ISVTX)  # sticky, as /tmp: only the owner may replace it
    applied = rig.orgsync("sync", "--plan", str(plan_file))
    assert applied.returncode == 0, applied.stdout + applied.stderr


def _drain(fifo: Path, into: list[bytes]) -> threading.Thread:
    def read() -> None:
        with fifo.open("rb") as handle:
            into.append(handle.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


@as_root
@pytest.mark.parametrize("through_symlink", [False, True])
def test_plan_out_never_writes_into_another_users_fifo(rig: Rig, through_symlink: bool) -> None:
    """Another user plants a FIFO (or a symlink to one) where the plan is to be written
    and reads the e-mails as they arrive."""
    rig.write(directory(3))
    fifo = rig.folder / "trap"
    os.mkfifo(fifo, 0o666)
    os.chown(fifo, NOBODY, NOBODY)
    target = fifo
    if through_symlink:
        target = rig.folder / "plan.json"
        target.symlink_to(fifo)
        os.chown(target, NOBODY, NOBODY, follow_symlinks=False)
    stolen: list[bytes] = []
    reader = _drain(fifo, stolen)
    result = rig.orgsync("sync", "--dry-run", "--plan-out", str(target))
    # Release a reader still waiting (open for writing, write nothing, close); none
    # waits any more when it read what was written (ENXIO).
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(10)
    assert b"person0@example.com" not in b"".join(stolen)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"--plan-out {target}:" in result.stderr and "another user" in result.stderr


@pytest.mark.orgsync_in_process(False)  # /dev/stdout: the process's own descriptor 1
def test_plan_out_to_the_operators_own_stdout_still_works(rig: Rig) -> None:
    rig.write(directory(3))
    result = rig.orgsync("--quiet", "sync", "--dry-run", "--plan-out", "/dev/stdout")
    assert result.returncode == 2, result.stderr
    (target,) = json.loads(result.stdout)["targets"]
    assert target["summary"] == {"invite": 3}


ESCAPES = "\x1b[1A\x1b[2K\x1b]52;c;ZXZpbA==\x07\u202e"


def test_a_hostile_plan_file_cannot_write_to_the_terminal(rig: Rig) -> None:
    """Escape sequences in a key of an operation, then in a target's name."""
    rig.write(directory(3))
    plan_file = reviewed(rig)
    original: dict[str, Any] = json.loads(plan_file.read_text())
    with_key = json.loads(json.dumps(original))
    with_key["targets"][0]["operations"][0][f"x{ESCAPES}"] = 1
    renamed = Plan.from_json(original["targets"][0]).model_copy(
        update={"target": f"openai-test{ESCAPES}"}
    )
    mark = len(rig.emulator.requests)
    for document in (with_key, {"targets": [renamed.to_json()]}):
        plan_file.write_text(json.dumps(document))
        result = rig.orgsync("sync", "--plan", str(plan_file))
        assert result.returncode == 1, result.stdout + result.stderr
        for stream in (result.stdout, result.stderr):
            assert "\x1b" not in stream and "\x07" not in stream, stream
            assert "\u202e" not in stream, stream
        assert "[1A" in result.stderr, result.stderr  # shown, inert
    assert writes(rig, mark) == []


def test_the_plan_file_is_plain_ascii_and_holds_no_secret(rig: Rig) -> None:
    """A reviewer reads the file with `cat` or `less`: an IdP name's escapes stay inert."""
    document = directory(3)
    document["people"][1]["name"] = f"Mallory{ESCAPES}"
    rig.write(document)
    plan_file = reviewed(rig)
    raw = plan_file.read_bytes()
    assert raw.isascii() and b"\x1b" not in raw and b"\x07" not in raw
    assert API_KEY.encode() not in raw
    assert stat.S_IMODE(plan_file.stat().st_mode) == 0o600


def test_a_plan_reviewed_for_one_organization_never_applies_to_another_of_that_name(
    rig: Rig, second: OpenAIEmulator, tmp_path: Path
) -> None:
    """A careless operator applies with the other environment's configuration, whose
    target has the same name but another organization (and state database): the fresh
    plan there is not the reviewed one, so nothing is applied to either."""
    rig.write(directory(3))
    plan_file = reviewed(rig)
    other = Rig(folder=tmp_path / "other", emulator=second)
    other.folder.mkdir()
    second.state.add_user("person1@example.com", "reader")  # that organization differs
    other.write(directory(3))
    mark = len(second.requests)
    result = other.orgsync("sync", "--plan", str(plan_file))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no longer matches a fresh plan" in result.stderr
    assert [r for r in second.requests[mark:] if r.method != "GET"] == []
    assert rig.emulator.writes() == []


def test_a_plan_reviewed_against_another_state_database_is_refused(rig: Rig) -> None:
    """What orgsync manages is in its state database: a plan reviewed with one (which
    remembers inviting a leaver, and so revokes them) is refused with another (which
    never heard of them, and so leaves them alone)."""
    document = directory(4)
    rig.write(document)
    assert rig.orgsync("sync").returncode == 0
    rig.write(without(document, "p3"))
    plan_file = reviewed(rig)
    assert '"revoke_invite"' in plan_file.read_text()
    rig.state = 'path = "other-state.db"'
    rig.write(without(document, "p3"))
    mark = len(rig.emulator.requests)
    result = rig.orgsync("sync", "--plan", str(plan_file))
    assert result.returncode == 1, result.stdout + result.stderr
    assert writes(rig, mark) == []
    assert "person3@example.com" in rig.holdings()
    assert "no longer matches a fresh plan" in result.stderr, result.stderr


def test_a_file_whose_second_target_changed_applies_neither(
    rig: Rig, second: OpenAIEmulator
) -> None:
    """One review covers a move between two organizations (removed from one, invited to
    the other): when one of them no longer matches, applying the other alone could leave
    the person in neither. Nothing is applied unless every target still matches."""
    rig.more_targets = openai_target("openai-b", second.start())
    rig.write(directory(3))
    plan_file = reviewed(rig)
    second.state.add_user("person2@example.com", "reader")  # openai-b changed since
    result = rig.orgsync("sync", "--plan", str(plan_file))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "openai-b" in result.stderr and "no longer matches" in result.stderr
    assert rig.emulator.writes() == [], "openai-test matched, but was not applied alone"
    assert second.writes() == []


@pytest.mark.orgsync_in_process(False)  # the process's own /dev/stdout, in its own /dev
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare for a private /dev (CI runs as root)",
)
def test_plan_out_to_a_redirected_stdout_fills_the_file_and_keeps_dev_stdout(
    rig: Rig, tmp_path: Path
) -> None:
    """`orgsync sync --dry-run --plan-out /dev/stdout > plan.json`: /dev/stdout then names a
    regular file, and the plan went to a temporary file renamed over /dev/stdout: as root
    that replaced the system's /dev/stdout (every later `> /dev/stdout` wrote into a
    file) and plan.json stayed empty. Run in a private /dev, so that a failure harms
    nothing outside this test."""
    rig.write(directory(3))
    plan, report = tmp_path / "plan.json", tmp_path / "dev-stdout.txt"
    command = " ".join(
        shlex.quote(part)
        for part in (sys.executable, "-m", "orgsync", "--config", str(rig.config_path))
    )
    script = (
        "mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && "
        "ln -s /proc/self/fd/1 /dev/stdout && "
        f"{command} --quiet sync --dry-run --plan-out /dev/stdout > {shlex.quote(str(plan))}; "
        f"code=$?; stat -c %F /dev/stdout > {shlex.quote(str(report))}; exit $code"
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=rig.environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert report.read_text().strip() == "symbolic link", "/dev/stdout was replaced"
    (target,) = json.loads(plan.read_text())["targets"]
    assert target["summary"] == {"invite": 3}
