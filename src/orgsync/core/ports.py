"""The small typed protocols the engine wires together. Adapters implement them.

They live in the core so that the applier and the planner depend on nothing but the core,
and every adapter depends only inwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from orgsync.core.forms import LearnedForm
from orgsync.core.model import (
    Capabilities,
    EmailKey,
    SourceSnapshot,
    TargetInvite,
    TargetSnapshot,
)
from orgsync.core.plan import Operation


class Source(Protocol):
    """An identity provider, read completely or not at all."""

    def read(self) -> SourceSnapshot:
        """Return the whole directory, or raise `SourceError`/`SourceDataError`."""
        ...


@dataclass(frozen=True, slots=True)
class ChangeProbe:
    """A source's answer to "did anything change since this cursor?"."""

    changed: bool
    cursor: str | None
    """Where the next probe starts: taken before this probe's first request, so a change
    made while it ran is seen by the next one."""
    calls: int = 0
    """Requests the probe made (for the run's log and the benchmark)."""


@runtime_checkable
class DetectsChanges(Protocol):
    """A source that can tell cheaply whether anything changed since a cursor.

    Optional: an incremental pass over any other source reads it whole and compares it
    with the digests kept in the state database (`orgsync.core.delta`). A probe never
    replaces a read: when it says "changed", the source is read whole, so the rules, the
    `min_source_users` guard and the safety gate see what a full pass sees.
    """

    def change_cursor(self) -> str | None:
        """A cursor for now, taken just before a full read (None: cannot)."""
        ...

    def probe_changes(self, cursor: str, people: int, groups: int) -> ChangeProbe:
        """Whether any person or group changed, appeared or disappeared since `cursor`;
        `people` and `groups` are how many person records (rejected ones included) and
        groups the last reconciled read held: a deletion leaves no timestamp. Raises
        `CursorExpired` when the cursor can no longer be used, `SourceError` otherwise."""
        ...


class Target(Protocol):
    """One organization's admin API."""

    @property
    def capabilities(self) -> Capabilities: ...

    def read(self) -> TargetSnapshot:
        """Return every member, invitation and the role catalog, or raise `TargetError`."""
        ...

    def execute(self, operation: Operation) -> str | None:
        """Perform one operation; return the id of the object it created, if any.

        Raises `TargetError` subclasses. Must not retry non-idempotent calls itself: the
        applier decides, after `find_existing`.
        """
        ...

    def find_existing(self, operation: Operation) -> str | None:
        """For a creation: the id of an object that already satisfies it (to adopt), or None."""
        ...

    def find_invite(self, email: str) -> TargetInvite | None:
        """The live invitation for `email`, if any (used to adopt after a 409 or a crash)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ReadsPeople(Protocol):
    """A target that can read a few named people without reading the whole organization.

    Optional: a targeted reconcile (a webhook, `sync --only`) uses it where a target has
    it and reads everything otherwise, so correctness never depends on it.
    """

    def read_people(
        self, emails: frozenset[EmailKey], member_ids: frozenset[str]
    ) -> TargetSnapshot:
        """A partial snapshot: every member whose normalized email is in `emails` or whose
        id is in `member_ids` (an id the server no longer knows is simply absent), the
        role catalog and the key owner. `invites` and `groups` are left empty: a targeted
        plan does not plan groups, and invitations are read only when one can matter
        (`read_invitations`). Raises `TargetError` as `read` does."""
        ...

    def read_invitations(self) -> tuple[TargetInvite, ...]:
        """At least every outstanding invitation (pending or expired) of the organization
        that `read` would return."""
        ...


@runtime_checkable
class LearnsForms(Protocol):
    """A target that learns which request forms its server accepts (SCIM).

    The engine hands it what earlier runs learned and a callback that stores each new
    finding at once (a run killed later keeps it).
    """

    def use_learned_forms(
        self, learned: Sequence[LearnedForm], record: Callable[[LearnedForm], None]
    ) -> None: ...


class OperationStatus(StrEnum):
    """The life of one journaled operation."""

    PLANNED = "planned"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    FAILED = "failed"
    HELD = "held"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"


class OperationJournal(Protocol):
    """Where the applier writes before and after each call (the state database)."""

    def started(self, seq: int, operation: Operation) -> None:
        """Written (durably) before the call is sent."""
        ...

    def finished(
        self,
        seq: int,
        operation: Operation,
        status: OperationStatus,
        *,
        detail: str | None = None,
        object_id: str | None = None,
    ) -> None:
        """Written after the call returned or finally failed."""
        ...
