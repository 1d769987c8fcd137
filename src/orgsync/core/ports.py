"""The small typed protocols the engine wires together. Adapters implement them.

They live in the core so that the applier and the planner depend on nothing but the core,
and every adapter depends only inwards. Sources and targets implement `Source`, `Target`
and the optional `ReadsPeople`, `LearnsForms` and `PlanAware`, sources `DetectsChanges`
and `ReportsProbeStatus` (what `orgsync validate` says of incremental passes); the store
implements `OperationJournal`; the entry points implement `RunObserver` (the daemon's
metrics) and `RunProgress` (the CLI's bars and events), which the engine reports to
without knowing Prometheus or terminals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from orgsync.core.forms import LearnedForm
from orgsync.core.model import (
    Capabilities,
    EmailKey,
    SourceSnapshot,
    TargetInvite,
    TargetSnapshot,
)

# Annotations only: every connector names a port, and the operation models are the
# costliest module of the core to import (`validate --offline` checks no plan).
if TYPE_CHECKING:
    from orgsync.core.plan import Operation, Plan


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


class ProbeState(StrEnum):
    """How an incremental pass over a source finds out whether anything changed."""

    AVAILABLE = "available"
    """The source's change probe works: a quiet pass costs a few requests."""
    DEGRADED = "degraded"
    """The source has a cheap probe, but this install cannot use it: each pass costs more."""
    NOT_APPLICABLE = "not applicable"
    """The source has no probe to enable (a file: each pass reads it and compares)."""


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    """What `orgsync validate` says of a source's change probe (`ReportsProbeStatus`).

    The texts are the ones the source logs (`source.change_probe_degraded`, a cursor
    expired): an operator reads the same words in either place."""

    state: ProbeState
    cost: str
    """What a quiet incremental pass costs (available, not applicable), or what each one
    costs as things are (degraded)."""
    reason: str = ""
    """Why the probe cannot be used (degraded only)."""
    enable: str = ""
    """Exactly what to enable or grant so that it can be (degraded only; may be empty when
    nothing on the operator's side would help)."""


@runtime_checkable
class ReportsProbeStatus(Protocol):
    """A source that can say whether its change probe works here (optional).

    Only `orgsync validate` asks, after a successful read: it takes a cursor and probes it
    once, as an incremental pass would, reading only. It logs no degradation of its own
    (validate prints the status), and a degraded probe is a warning, never a failure."""

    def change_probe_status(self, people: int, groups: int) -> ProbeStatus:
        """The probe's status; `people` (rejected records included) and `groups` are what
        the read just made held. Raises `SourceError` when the probe failed for a reason
        that says nothing about its configuration (the server went away)."""
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
class IdentifiesOrganization(Protocol):
    """A target whose API says which organization answered (optional).

    The state database remembers it per target and refuses a run whose target now
    answers as another organization (`orgsync.store.identity`); a target without it is
    known by its type and base URL only.
    """

    def organization(self) -> str | None:
        """The organization's id as the API gave it during this target's reads so far
        (no call of its own), or None when it gave none. Never a secret."""
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


@runtime_checkable
class PlanAware(Protocol):
    """A target that wants the plan before it is applied (to batch calls)."""

    def prepare(self, operations: Sequence[Operation]) -> None: ...


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


class RunObserver(Protocol):
    """What the engine reports while it works (the daemon's metrics implement it).

    Plain callbacks, so that the engine knows nothing of Prometheus; each must be cheap
    and must not raise.
    """

    def source_read(self, people: int) -> None: ...
    def http_response(self, system: str, status: int) -> None: ...
    def operation_finished(self, target: str, op: str, result: str) -> None: ...
    def run_finished(self, target: str, status: str, *, held: int, seconds: float) -> None: ...


class Unobserved:
    """A `RunObserver` that ignores everything (no daemon, no metrics)."""

    def source_read(self, people: int) -> None:
        pass

    def http_response(self, system: str, status: int) -> None:
        pass

    def operation_finished(self, target: str, op: str, result: str) -> None:
        pass

    def run_finished(self, target: str, status: str, *, held: int, seconds: float) -> None:
        pass


class RunProgress(Protocol):
    """How far a run has got, for a person watching (the CLI renders it; the engine
    knows nothing of terminals). Phases: `READ_SOURCE`, `READ_TARGET`, `APPLY`.

    Called from the run's threads (apply workers too); each call must be cheap and must
    not raise. `advance` counts requests during reads and operations during the apply;
    `end` gives the phase's result count (people, members, operations) and its unit.
    """

    def begin(self, phase: str, target: str | None, total: int | None) -> None: ...
    def advance(self, phase: str, target: str | None) -> None: ...
    def end(self, phase: str, target: str | None, count: int, unit: str) -> None: ...
    def planned(self, plan: Plan) -> None:
        """A sync's plan, once gated and before its first call (not for a dry run)."""


READ_SOURCE, READ_TARGET, APPLY = "read source", "read target", "apply"
"""The phases a `RunProgress` hears of."""


class Unwatched:
    """A `RunProgress` that shows nothing (`--quiet`, the daemon)."""

    def begin(self, phase: str, target: str | None, total: int | None) -> None:
        pass

    def advance(self, phase: str, target: str | None) -> None:
        pass

    def end(self, phase: str, target: str | None, count: int, unit: str) -> None:
        pass

    def planned(self, plan: Plan) -> None:
        pass
