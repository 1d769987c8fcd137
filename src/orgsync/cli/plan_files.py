"""Plan files: `sync --plan FILE` reads a reviewed plan, `sync --dry-run --plan-out FILE`
writes one readable by its owner only (plans hold e-mails and ids)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from orgsync.core.errors import OrgsyncError

if TYPE_CHECKING:
    from orgsync.core.plan import Plan


MAX_PLAN_BYTES = 1 << 30
"""Far above a plan for 100k people and 1M memberships (about 300 MB): a bound on what a
mistyped path (a device, an endless pipe) may make orgsync read into memory."""


def read_plans(path: Path) -> dict[str, Plan]:
    from orgsync.core.plan_file import PlanFileError, read_plan_file
    from orgsync.core.text import visible

    try:
        with path.open("rb") as handle:
            status = os.fstat(handle.fileno())
            if stat.S_ISCHR(status.st_mode) or stat.S_ISBLK(status.st_mode):
                raise OrgsyncError(f"--plan {path}: a device, not a plan written by --plan-out")
            swappable = _others_could_replace(path, status)
            if swappable is not None:
                raise OrgsyncError(
                    f"--plan {path}: {swappable}: others could have replaced what was "
                    "reviewed; nothing was applied (make it yours and writable by you "
                    "alone, chown and chmod go-w, in a folder of yours; or write the plan "
                    "again with --plan-out there)"
                )
            data = handle.read(MAX_PLAN_BYTES + 1)
    except OSError as error:
        raise OrgsyncError(f"--plan {path}: cannot read the plan: {error.strerror}") from None
    if len(data) > MAX_PLAN_BYTES:
        raise OrgsyncError(
            f"--plan {path}: larger than {MAX_PLAN_BYTES >> 20} MiB, not a plan written by "
            "--plan-out"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise OrgsyncError(f"--plan {path}: not a plan written by --plan-out (not UTF-8)") from None
    try:
        return read_plan_file(text)
    except PlanFileError as error:
        # A key or a value of the file quoted in the message reaches the terminal inert.
        raise OrgsyncError(f"--plan {path}: {visible(str(error))}") from None


def _trusted(uid: int) -> bool:
    """The user running orgsync, or root (who can change any file anyway)."""
    return uid in {os.geteuid(), 0}


def _others_could_replace(path: Path, status: os.stat_result) -> str | None:
    """Why someone other than the operator (and root) could have changed the plan file
    since it was reviewed, or None: the file's owner and mode, a symlink at `path` that
    another user owns (they can point it elsewhere), and the folder the file is in
    (anyone who can write a folder without the sticky bit can rename a file over it).
    The opened file's own status is `status` (fstat: the file read, not a later one)."""
    if not _trusted(status.st_uid):
        return f"owned by another user (uid {status.st_uid})"
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by {'others' if status.st_mode & stat.S_IWOTH else 'its group'}"
    link = path.lstat()
    if stat.S_ISLNK(link.st_mode) and not _trusted(link.st_uid):
        return f"a symlink owned by another user (uid {link.st_uid})"
    if not stat.S_ISREG(status.st_mode):
        return None  # the operator's own pipe (`--plan <(...)`): no folder holds it
    return _open_folder(path.resolve().parent)


def _open_folder(folder: Path) -> str | None:
    """Why others could rename a file over one of the operator's in `folder`, or None."""
    held = folder.stat()
    if not _trusted(held.st_uid):
        return f"in {folder}, a folder owned by another user (uid {held.st_uid})"
    if held.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not held.st_mode & stat.S_ISVTX:
        return f"in {folder}, a folder others can write without the sticky bit"
    return None


def check_plan_out(path: Path) -> None:
    """Refuse a `--plan-out` path whose folder others could rename a file in: told before
    the dry run rather than at `--plan`, which would refuse the file."""
    if _written_through(path):
        return  # `/dev/stdout` and the like: checked when it is opened
    try:
        swappable = _open_folder(path.parent.resolve())
    except OSError as error:
        raise OrgsyncError(f"--plan-out {path}: cannot write: {error.strerror}") from None
    if swappable is not None:
        raise OrgsyncError(
            f"--plan-out {path}: {swappable}: others could replace the plan before it is "
            "applied, and --plan would refuse it; nothing was run"
        )


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (plans hold e-mails and ids).

    A new file replaces an existing one, so a file that was readable by others before is
    never written into, and a reader holding it open sees only its old content.
    """
    if _written_through(path):
        _write_through(path, text)
        return
    check_plan_out(path)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise OrgsyncError(f"--plan-out {path}: cannot write: {error.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp makes it 0600
            handle.write(text)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise OrgsyncError(f"--plan-out {path}: cannot write: {error.strerror}") from None


def _written_through(path: Path) -> bool:
    """Whether the plan goes into what `path` already is (a pipe, a terminal, a device,
    the process's own descriptors) rather than a new file renamed over it. Anything under
    /dev or /proc is written through even when it is a regular file: `--plan-out
    /dev/stdout > plan.json` makes /dev/stdout name plan.json, and a file renamed over it
    replaced the system's /dev/stdout (as root) for every later process, while plan.json
    stayed empty."""
    if path.exists() and not path.is_file():
        return True
    return path.absolute().parts[1:2] in (("dev",), ("proc",))


def _write_through(path: Path, text: str) -> None:
    """Write into the pipe, terminal or device at `path`, only when it is the operator's
    (or root's): a FIFO another user planted where the plan was to go (or a symlink to
    one) would hand them every e-mail in the plan as it is written. Checked on the opened
    file (fstat), so nothing can be swapped in between."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_NOCTTY)
    except OSError as error:
        raise OrgsyncError(f"--plan-out {path}: cannot write: {error.strerror}") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        owner = os.fstat(descriptor).st_uid
        if not _trusted(owner):
            raise OrgsyncError(
                f"--plan-out {path}: belongs to another user (uid {owner}), who would read "
                "the plan's e-mails; nothing was written: choose a path of your own"
            )
        try:
            handle.write(text)
            handle.flush()
        except OSError as error:
            raise OrgsyncError(f"--plan-out {path}: cannot write: {error.strerror}") from None
