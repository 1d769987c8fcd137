"""The kernel lock that makes one process the writer of a target for as long as it lives.

`flock(2)` on a lock file beside the state database: the kernel grants it to one open file
at a time, and drops it the moment its holder's process ends, however it ends (`kill -9`
included), whatever PID namespace or container each process runs in, on one host. So
"is the writer still there?" is answered by the kernel, never guessed from a process id
that another namespace may not see, or may see belonging to someone else. The lease row
(`lease.py`) only says who holds the lock, for `orgsync status` and the logs.

flock does not arbitrate between hosts on a network file system: the state directory
must be local (README "Operations"); SQLite's WAL mode needs that too.

Lock files are created 0600 and never deleted: unlinking a file another process holds
locked would let a third process lock a new file of the same name. A holder checks
(`intact`, at every lease renewal) that its file is still the one at the path and stops
writing if it was replaced; a file replaced between open and lock is locked afresh. A
symbolic link in its place is refused.

A `:memory:` database lives in one process, so its locks are process-local ones.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from pathlib import Path
from typing import Protocol

from orgsync.core.errors import StateError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
_POLL = 0.02


class WriterLock(Protocol):
    """One target's writer lock, as one holder sees it."""

    def try_acquire(self, patience: float = 0.0) -> bool:
        """Take it, waiting at most `patience` seconds; False if another holder has it."""
        ...

    def release(self) -> None:
        """Give it up (a no-op if not held)."""
        ...

    def held_elsewhere(self) -> bool:
        """Whether some other holder (another process, or another lock object) has it."""
        ...

    def intact(self) -> bool:
        """While held: whether the lock still guards the target (its file was not
        deleted or replaced under it, which would let another process lock a new one)."""
        ...


def lock_path(database: Path, target: str) -> Path:
    """`orgsync.db.<target>.lock` beside the database (a digest for an unusual name)."""
    label = target if _SAFE_NAME.match(target) else hashlib.sha256(target.encode()).hexdigest()
    return database.with_name(f"{database.name}.{label}.lock")


def share_owner(fd: int, database: Path | None) -> None:
    """Give a file orgsync just made beside the database (`fd`) the database file's owner,
    when running as root: as SQLite does for -wal and -shm. Otherwise one `sudo orgsync`
    leaves root-owned lock and mark files that stop every later run as the service user
    ("Permission denied")."""
    if database is None or os.geteuid() != 0:
        return
    try:
        owner = os.stat(database)
        made = os.fstat(fd)
        if (made.st_uid, made.st_gid) != (owner.st_uid, owner.st_gid):
            os.fchown(fd, owner.st_uid, owner.st_gid)
    except OSError:
        return  # no database yet (or gone): nothing to match


def owner_hint(path: Path, database: Path | None) -> str:
    """Why this process may not open `path`, when it belongs to another user."""
    try:
        info = os.stat(path)
    except OSError:
        return ""
    if info.st_uid == os.geteuid():
        return ""
    return (
        f" ({path.name} is owned by uid {info.st_uid}, mode {info.st_mode & 0o777:o}, and "
        f"orgsync runs as uid {os.geteuid()}: was it run once as another user, e.g. root? "
        f"chown the files {database or path}* back to the user orgsync runs as)"
    )


class FileLock:
    """An exclusive flock on a file (see the module docstring). Not shared between threads."""

    def __init__(self, path: Path, database: Path | None = None) -> None:
        self.path = path
        self.database = database
        """The database it guards, whose owner the lock file is given (`share_owner`)."""
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"FileLock({str(self.path)!r}, held={self._fd is not None})"

    def try_acquire(self, patience: float = 0.0) -> bool:
        if self._fd is not None:
            return True
        deadline = time.monotonic() + patience
        while True:
            fd = self._locked_fd(fcntl.LOCK_EX)
            if fd is not None:
                self._fd = fd
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the open file drops its flock

    def intact(self) -> bool:
        return self._fd is not None and _same_file(self._fd, self.path)

    def held_elsewhere(self) -> bool:
        if self._fd is not None:
            return False
        # A shared lock conflicts only with an exclusive one: two probes never block each
        # other, and a probe holds it for microseconds.
        fd = self._locked_fd(fcntl.LOCK_SH)
        if fd is None:
            return True
        os.close(fd)
        return False

    def _locked_fd(self, mode: int) -> int | None:
        """A descriptor of `path` holding `mode`, or None while another holds it."""
        for _ in range(10):
            try:
                fd = os.open(
                    self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
                )
            except OSError as error:
                raise StateError(
                    f"cannot open the lock file {self.path}: {error.strerror}"
                    f"{owner_hint(self.path, self.database)}"
                ) from error
            share_owner(fd, self.database)
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except OSError as error:
                os.close(fd)
                raise StateError(
                    f"cannot lock {self.path}: {error.strerror} (is the state directory on a "
                    "network file system? it must be local)"
                ) from error
            if _same_file(fd, self.path):
                return fd
            os.close(fd)  # replaced while we locked it: lock the file that is there now
        raise StateError(
            f"the lock file {self.path} keeps being replaced; is something deleting it?"
        )


def _same_file(fd: int, path: Path) -> bool:
    try:
        current = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


class _MemoryLocks:
    """The writer locks of one `:memory:` database: plain locks, held by lock objects."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._holders: dict[str, object] = {}

    def lock(self, target: str) -> WriterLock:
        return _MemoryLock(self, target)

    def acquire(self, target: str, holder: object) -> bool:
        with self._guard:
            current = self._holders.setdefault(target, holder)
            return current is holder

    def release(self, target: str, holder: object) -> None:
        with self._guard:
            if self._holders.get(target) is holder:
                del self._holders[target]

    def held_by_other(self, target: str, holder: object) -> bool:
        with self._guard:
            current = self._holders.get(target)
            return current is not None and current is not holder


class _MemoryLock:
    def __init__(self, locks: _MemoryLocks, target: str) -> None:
        self._locks = locks
        self._target = target

    def try_acquire(self, patience: float = 0.0) -> bool:
        deadline = time.monotonic() + patience
        while not self._locks.acquire(self._target, self):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    def release(self) -> None:
        self._locks.release(self._target, self)

    def held_elsewhere(self) -> bool:
        return self._locks.held_by_other(self._target, self)

    def intact(self) -> bool:
        return not self._locks.held_by_other(self._target, self)


class WriterLocks:
    """Hands out the writer lock of each target of one state database."""

    def __init__(self, database: Path | None) -> None:
        self._database = database
        self._memory = _MemoryLocks() if database is None else None

    def lock(self, target: str) -> WriterLock:
        if self._memory is not None:
            return self._memory.lock(target)
        assert self._database is not None
        return FileLock(lock_path(self._database, target), self._database)
