"""The applier: runs a plan's operations against one target, phase by phase, journaled.

Each operation is written to the journal before its call and after it. Phases run in order
(docs/reference.md "Order of application"), one after another; inside a phase, operations
run on a bounded thread pool. The rules for what a failure means live here, once, for every
target:
- transient errors are retried by the one retry policy (`orgsync.retrying`), and before a
  create is retried after a timeout, a reset or a 5xx the target is asked whether the
  object exists after all, since a lost response may hide a success (not after a 429 or
  a 503 with Retry-After: the server says it did nothing);
- 409 on a create → look the object up and adopt it; 404 on a removal → already done;
- 401/403 stop the run, and so does a Retry-After beyond the retry budget (the rest is
  skipped, left for the next run); any other error fails that operation alone;
- `check_lease` is asked before every operation and every call to the target: once the
  run's lease is lost (`orgsync.store.leases`) it raises, and the apply ends with no
  further call and nothing more journaled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import groupby

import structlog
from tenacity import Retrying

from orgsync.core.errors import (
    AuthError,
    ConflictError,
    Interrupted,
    NotFoundError,
    TargetError,
    TransientError,
)
from orgsync.core.model import normalize_email
from orgsync.core.plan import (
    AddGroupMember,
    CreateGroup,
    CreateUser,
    GroupOperationFields,
    Operation,
    Plan,
)
from orgsync.core.ports import OperationJournal, OperationStatus, Target
from orgsync.retrying import RetrySettings

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Outcome:
    seq: int
    operation: Operation
    status: OperationStatus
    detail: str | None = None
    object_id: str | None = None


@dataclass(slots=True)
class ApplyReport:
    outcomes: list[Outcome] = field(default_factory=list)
    aborted: str | None = None
    """Why the run stopped before the end (credentials refused, shutdown), if it did."""

    def count(self, status: OperationStatus) -> int:
        return sum(1 for o in self.outcomes if o.status is status)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is OperationStatus.FAILED]


@dataclass(frozen=True, slots=True)
class ApplySettings:
    max_concurrency: int = 4
    retry: RetrySettings = field(default_factory=RetrySettings)


class Applier:
    """Applies one plan; `stop` (SIGTERM) lets calls in flight finish and starts no more."""

    def __init__(
        self,
        target: Target,
        journal: OperationJournal,
        settings: ApplySettings,
        *,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
        check_lease: Callable[[], None] | None = None,
    ) -> None:
        self.target = target
        self._check_lease = check_lease or (lambda: None)
        self.journal = journal
        self.settings = settings
        self.stop = stop or threading.Event()
        self._sleep = sleep
        self._on_outcome = on_outcome
        self._abort: str | None = None
        self._lock = threading.Lock()
        self._created_groups: dict[str, str] = {}
        self._created_users: dict[str, str] = {}
        """Ids of groups this apply created, by source group id (phases run in order, so
        every create finishes before the memberships that need its id)."""

    def apply(self, plan: Plan) -> ApplyReport:
        report = ApplyReport()
        indexed = list(enumerate(plan.operations))
        with ThreadPoolExecutor(
            max_workers=self.settings.max_concurrency, thread_name_prefix="apply"
        ) as pool:
            for _, batch in groupby(indexed, key=lambda pair: pair[1].phase):
                report.outcomes.extend(pool.map(lambda pair: self._run(*pair), list(batch)))
        report.aborted = self._abort
        return report

    def _run(self, seq: int, operation: Operation) -> Outcome:
        self._check_lease()
        if self.stop.is_set() or self._abort is not None:
            outcome = Outcome(seq, operation, OperationStatus.SKIPPED, self._abort or "shutdown")
            self.journal.finished(seq, operation, outcome.status, detail=outcome.detail)
            return outcome
        resolved = self._resolve_group(operation)
        if resolved is None:
            reason = "skipped: the group or user it needs was not created"
            outcome = Outcome(seq, operation, OperationStatus.SKIPPED, reason)
            self.journal.finished(seq, operation, outcome.status, detail=reason)
            return outcome
        operation = resolved
        self.journal.started(seq, operation)
        bound = log.bind(seq=seq, op=operation.op, subject=operation.subject)
        try:
            object_id, detail = self._call(operation)
            outcome = Outcome(seq, operation, OperationStatus.DONE, detail, object_id)
            if object_id is not None:
                self._remember_created(operation, object_id)
            bound.info("apply.op.done", detail=detail)
        except AuthError as error:
            with self._lock:
                self._abort = f"credentials refused: {error}"
            outcome = Outcome(seq, operation, OperationStatus.FAILED, str(error))
            bound.error("apply.op.failed", error=str(error))
        except Interrupted as error:
            # Only what precedes a call (a token fetch) is interrupted during the apply:
            # the operation was not sent, as one skipped at a stop.
            outcome = Outcome(seq, operation, OperationStatus.SKIPPED, f"shutdown: {error}")
            bound.warning("apply.op.skipped", reason=str(error))
        except TargetError as error:
            outcome = Outcome(seq, operation, OperationStatus.FAILED, str(error))
            bound.error("apply.op.failed", error=str(error))
            self._stop_if_told_to_wait(error)
        self.journal.finished(
            seq, operation, outcome.status, detail=outcome.detail, object_id=outcome.object_id
        )
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        return outcome

    def _stop_if_told_to_wait(self, error: TargetError) -> None:
        """End the apply when the target asks for a wait beyond the retry budget.

        A Retry-After longer than `max_delay` (a quota spent for hours) is about the
        target, not this call: every later operation would send its call anyway and be
        refused (calls the server asked not to get), or, under a client-side rate limit,
        wait out the budget one after another (an apply of hours). What is left is
        skipped, as after refused credentials, and the next run does it."""
        if not isinstance(error, TransientError) or error.retry_after is None:
            return
        if error.retry_after <= self.settings.retry.max_delay:
            return
        with self._lock:
            if self._abort is None:
                self._abort = (
                    f"the target asks to wait {error.retry_after:.0f} s (Retry-After), "
                    f"longer than the retry budget of {self.settings.retry.max_delay:.0f} s: "
                    "the rest is left for the next run"
                )

    def _remember_created(self, operation: Operation, object_id: str) -> None:
        with self._lock:
            if isinstance(operation, CreateGroup):
                self._created_groups[operation.source_group_id or operation.group] = object_id
            elif isinstance(operation, CreateUser):
                self._created_users[normalize_email(operation.email)] = object_id

    def _resolve_group(self, operation: Operation) -> Operation | None:
        """Fill in ids of a group or user created earlier in this plan; None if one was not."""
        if not isinstance(operation, GroupOperationFields) or isinstance(operation, CreateGroup):
            return operation
        resolved = operation
        with self._lock:
            if operation.group_id is None:
                group_id = self._created_groups.get(operation.source_group_id or operation.group)
                if group_id is None:
                    return None
                resolved = replace(resolved, group_id=group_id)
            if isinstance(resolved, AddGroupMember) and resolved.user_id is None:
                user_id = self._created_users.get(normalize_email(resolved.email))
                if user_id is None:
                    return None
                resolved = replace(resolved, user_id=user_id)
        return resolved

    def _call(self, operation: Operation) -> tuple[str | None, str | None]:
        """Perform one operation; returns (object id, detail).

        Idempotent calls (removals, role changes) are retried inside the target's HTTP
        client. A create is not idempotent, so it is retried here, and only after asking
        the target whether an earlier attempt succeeded despite a lost response.
        """
        try:
            if not operation.read_back_before_retry:
                self._check_lease()
                return self.target.execute(operation), None
            uncertain = False  # may an earlier attempt have created it?
            for attempt in self._policy():
                with attempt:
                    self._check_lease()
                    if uncertain:
                        existing = self.target.find_existing(operation)
                        if existing is not None:
                            return existing, "adopted after a lost response"
                    try:
                        return self.target.execute(operation), None
                    except TransientError as error:
                        # A refusal for the rate (429, 503 with Retry-After) created
                        # nothing: retrying it needs no look-up, which may page through
                        # every invitation. Once an attempt is uncertain, every later one is.
                        uncertain = uncertain or not error.not_processed
                        raise
        except ConflictError as conflict:
            if not operation.read_back_before_retry:
                raise
            self._check_lease()
            existing = self.target.find_existing(operation)
            if existing is None:
                raise TargetError(
                    f"{conflict.message}; and no matching object was found to adopt",
                    status=conflict.status,
                    request_id=conflict.request_id,
                ) from conflict
            return existing, "already existed (409): adopted"
        except NotFoundError:
            if operation.done_if_absent:
                return None, "already gone (404)"
            raise
        raise AssertionError("retry policy ended without result or error")  # pragma: no cover

    def _policy(self) -> Retrying:
        retry = self.settings.retry
        if self._sleep is None:
            return retry.policy()
        return retry.policy(sleep=self._sleep)
