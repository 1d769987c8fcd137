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

    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                raise OrgsyncError(f"--plan {path}: a device, not a plan written by --plan-out")
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
        raise OrgsyncError(f"--plan {path}: {error}") from None


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (plans hold e-mails and ids).

    A new file replaces an existing one, so a file that was readable by others before is
    never written into, and a reader holding it open sees only its old content.
    """
    if path.exists() and not path.is_file():  # /dev/stdout and the like: write through
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as error:
            raise OrgsyncError(f"--plan-out {path}: cannot write: {error.strerror}") from None
        return
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
