"""What is worth telling a person: a run that held or failed, a quarantine begun or ended.

`Notification` is the one event type every channel formats. `from_run` decides which runs
notify: a real sync (CLI or daemon) that ended `held` or `failed`. A dry run never does:
it is a person looking at a plan, who already sees it. `ok`, `changes-pending` and
`interrupted` (a shutdown, not a fault) never do either.

Everything a notification carries is bounded here, at the source: at most `MAX_SUBJECTS`
held operations and `MAX_GUARDS` reasons are kept, with the totals, so that a plan holding
thousands of removals is a small event in a bounded queue and a short message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from orgsync.core.plan import Plan, operation_json
from orgsync.core.ports import OperationStatus

Kind = Literal["held", "failed", "quarantined", "recovered"]

MAX_SUBJECTS = 10
"""Held operations named in a message; the rest are counted ("and N more")."""
MAX_GUARDS = 5
"""Distinct guard reasons named in a message."""
MAX_TEXT = 500
"""Characters of an error or reason kept (an error can quote a whole response body)."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One event for people. Only `kind` and `target` are always set."""

    kind: Kind
    target: str
    at: datetime
    trigger: str | None = None
    run_id: str | None = None
    held: int = 0
    """Operations the safety gate held back."""
    guards: tuple[tuple[str, int], ...] = ()
    """Distinct guard reasons, each with how many operations it held (most first)."""
    held_subjects: tuple[str, ...] = ()
    """The first `MAX_SUBJECTS` held operations, as "op subject"."""
    applied: int = 0
    failed_operations: int = 0
    summary: tuple[tuple[str, int], ...] = ()
    """The plan's operations by kind (what the run set out to do)."""
    error: str | None = None
    checksum: str | None = None
    held_digest: str | None = None
    """Digest of the held operations and their guards only: a run that also applied
    other changes and the next run holding the same removals hold "the same plan"."""
    failures: int = 0
    """Consecutive failed runs (quarantine events)."""
    next_run_at: datetime | None = None

    @property
    def fingerprint(self) -> str | None:
        """What makes two events "the same" for de-duplication; None: never de-duplicated.

        A held plan is the same while what it holds is; a failure is the same while its
        error reads the same with numbers and ids ignored (so "3 operation(s) failed" and
        "4 operation(s) failed" with the same cause, or a new request id, are one
        failure). Quarantine and recovery are transitions, each news on its own.
        """
        if self.kind == "held":
            return self.held_digest or self.checksum or _digest(";".join(g for g, _ in self.guards))
        if self.kind == "failed":
            return _digest(_normalized(self.error or ""))
        return None


KEPT_KINDS: frozenset[str] = frozenset({"quarantined", "recovered"})
"""Kinds whose message is kept to be sent again when every attempt failed (`ledger.py`):
a quarantined target is one orgsync stopped reconciling, and each is a transition that
never comes again, unlike a held plan or a failure, which the next run reports anew."""


def to_json(event: Notification) -> str:
    """`event` as JSON, for the ledger to keep (its texts are redacted already)."""
    fields = {name: getattr(event, name) for name in Notification.__slots__}
    for name in ("at", "next_run_at"):
        moment = fields[name]
        fields[name] = moment.isoformat() if moment is not None else None
    return json.dumps(fields, separators=(",", ":"))  # ASCII: a lone surrogate too


def from_json(text: str) -> Notification:
    """The event `to_json` wrote; ValueError (or TypeError, KeyError) if it is not one."""
    fields = json.loads(text)
    fields["at"] = datetime.fromisoformat(fields["at"])
    if fields.get("next_run_at") is not None:
        fields["next_run_at"] = datetime.fromisoformat(fields["next_run_at"])
    for name in ("guards", "summary"):
        fields[name] = tuple((str(k), int(n)) for k, n in fields.get(name, ()))
    fields["held_subjects"] = tuple(fields.get("held_subjects", ()))
    return Notification(**fields)


_REQUEST_ID = re.compile(r"\(request id [^)]*\)", re.IGNORECASE)
# A word with a digit in it is a count, a time or an id: a trace id such as "3fa85f64-5717-
# 4562-b3fc-2c963f66afa6" differs in its letters too, and a failing target paged again on
# every pass when only the digits were ignored.
_VARYING = re.compile(r"\b[0-9a-f]{8,}\b|[\w-]*\d[\w-]*", re.IGNORECASE)


def _normalized(error: str) -> str:
    return _VARYING.sub("#", _REQUEST_ID.sub("", error)).strip().lower()


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut to `limit` characters, saying that it was."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Report(Protocol):
    @property
    def failed(self) -> Sequence[object]: ...
    def count(self, status: OperationStatus) -> int: ...


class FinishedRun(Protocol):
    """The fields of one target's run result (`orgsync.results.TargetResult`) read here."""

    @property
    def target(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def plan(self) -> Plan | None: ...
    @property
    def report(self) -> _Report | None: ...
    @property
    def error(self) -> str | None: ...


class RunMode(Protocol):
    """The fields of a run's options (`orgsync.results.RunOptions`) read here."""

    @property
    def dry_run(self) -> bool: ...
    @property
    def trigger(self) -> str: ...


def _unchanged(text: str) -> str:
    return text


def from_run(
    result: FinishedRun,
    mode: RunMode,
    at: datetime,
    redact: Callable[[str], str] = _unchanged,
) -> Notification | None:
    """The notification a finished run calls for, if any (see the module docstring).

    `redact` runs before anything is cut to length: a secret straddling the cut would
    otherwise survive as a prefix the redactor no longer recognises.
    """
    if mode.dry_run or result.status not in ("held", "failed"):
        return None
    plan, report = result.plan, result.report
    held = plan.held if plan is not None else ()
    guards = Counter(clip(redact(h.guard), 300) for h in held)
    return Notification(
        kind="held" if result.status == "held" else "failed",
        target=result.target,
        at=at,
        trigger=mode.trigger,
        run_id=result.run_id,
        held=len(held),
        guards=tuple(guards.most_common(MAX_GUARDS)),
        held_subjects=tuple(
            clip(redact(f"{h.operation.op} {h.operation.subject}"), 200)
            for h in held[:MAX_SUBJECTS]
        ),
        applied=report.count(OperationStatus.DONE) if report is not None else 0,
        failed_operations=len(report.failed) if report is not None else 0,
        summary=tuple(plan.summary.items()) if plan is not None else (),
        error=clip(redact(result.error)) if result.error else None,
        checksum=plan.checksum if plan is not None else None,
        held_digest=_digest(
            json.dumps(
                [[operation_json(h.operation), h.guard] for h in held],
                sort_keys=True,
                separators=(",", ":"),
            )
        )
        if held
        else None,
    )


@dataclass(frozen=True, slots=True)
class Standing:
    """A target's quarantine standing as the daemon reports it after each run."""

    quarantined: bool
    failures: int = 0
    next_run_at: datetime | None = None
    error: str | None = None


def quarantine_change(
    target: str,
    before: Standing | None,
    after: Standing,
    at: datetime,
    redact: Callable[[str], str] = _unchanged,
) -> Notification | None:
    """`quarantined` or `recovered` when a target's standing flips; None otherwise.

    `before` is None for the first standing seen (a daemon starting): that is a baseline,
    not a change, so a restart does not page anyone again about an old quarantine. A
    recovery reports the failures and the error that ended with it.
    """
    if before is None or before.quarantined == after.quarantined:
        return None
    told = after if after.quarantined else before
    return Notification(
        kind="quarantined" if after.quarantined else "recovered",
        target=target,
        at=at,
        failures=told.failures,
        next_run_at=after.next_run_at,
        error=clip(redact(told.error)) if told.error else None,
    )
