"""The engine: the one place that wires source, rules, planner, safety, applier and store.

`Engine.run(options)` reads the source once, then for each selected target: takes the
target's writer lock and lease (sync only), reads the organization, plans, holds what the
safety gate holds, applies (sync only), records links and run history, and returns one
`TargetResult` per target. The CLI and the daemon call it; adapters never call each other.

A sync refused because another process holds the target's lock is `busy`: not a run (it
changed nothing and is not recorded), so it never counts towards quarantine. A stop
request (SIGTERM) during a read ends the read at once and records the run `interrupted`.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Protocol

import structlog

from orgsync.applier import Applier, ApplySettings
from orgsync.applier import Outcome as ApplyOutcome
from orgsync.config import Config, TargetConfig
from orgsync.core.errors import (
    EXIT_ERROR,
    EXIT_OK,
    ConfigError,
    Interrupted,
    OrgsyncError,
    StateError,
)
from orgsync.core.explain import ExplainInput, Explanation, explain
from orgsync.core.model import (
    EmailKey,
    Memory,
    SourceSnapshot,
    TargetSnapshot,
    normalize_email,
    screen,
)
from orgsync.core.plan import (
    Plan,
    RemoveMember,
    RevokeInvite,
    SuspendMember,
)
from orgsync.core.plan_file import check_reviewed
from orgsync.core.planner import PlanInput, plan
from orgsync.core.ports import (
    APPLY,
    READ_SOURCE,
    READ_TARGET,
    DetectsChanges,
    LearnsForms,
    PlanAware,
    ReadsPeople,
    RunObserver,
    RunProgress,
    Source,
    Target,
    Unobserved,
    Unwatched,
)
from orgsync.core.rules import DesiredState, MembershipRules, desired_state
from orgsync.core.safety import (
    Allowances,
    Population,
    check_source_size,
    gate,
    managed_in_memory,
    managed_people,
)
from orgsync.core.scope import Scoped, Subjects, needs_invitations, restrict, unknown_subjects
from orgsync.factories import build_source, build_target, open_state_store, retry_settings
from orgsync.passes import FULL, TARGETED, Pass, Passes, SourceOnce
from orgsync.policy import (
    check_capabilities,
    check_roles,
    membership_rules,
    removal_policy,
    safety_limits,
)
from orgsync.results import RunOptions, TargetResult, dry_result, outcome_of, sync_result
from orgsync.store import (
    HeldLease,
    LeaseKeeper,
    LeaseLost,
    LinkingJournal,
    LinkRow,
    NoStateDatabase,
    Origin,
    Outcome,
    StateStore,
    TargetBusy,
)

log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from orgsync.interrupt import ReadInterrupt  # imports httpx: only when a run reads


BUSY = "busy"
"""A sync refused because another process is the target's writer: not recorded as a run."""
LEASE_LOST = "lease-lost"
"""A sync stopped because its lease was taken over or ran out (a frozen or cut-off replica):
it calls the target no more and records nothing further; the new holder's run does."""
LOCK_PATIENCE = 1.0
"""Seconds a sync waits for a target's writer lock before it is refused as busy (long
enough to ride out `orgsync status` probing the lock, far shorter than any run)."""


class TargetFactory(Protocol):
    def __call__(
        self, config: TargetConfig, environ: Mapping[str, str], *, interrupt: ReadInterrupt
    ) -> Target: ...


class SourceFactory(Protocol):
    def __call__(
        self, config: Config, environ: Mapping[str, str], *, interrupt: ReadInterrupt
    ) -> Source: ...


_PERSON_REMOVALS = (RemoveMember, SuspendMember, RevokeInvite)


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        environ: Mapping[str, str] | None = None,
        store: StateStore | None = None,
        source_factory: SourceFactory | None = None,
        target_factory: TargetFactory | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stop: threading.Event | None = None,
        observer: RunObserver | None = None,
        on_finished: Callable[[TargetResult, RunOptions], None] | None = None,
        origin: str = "cli",
        progress: RunProgress | None = None,
        on_lease: Callable[[str, bool], None] | None = None,
    ) -> None:
        """`origin`: "cli" or "daemon", recorded with each run; the daemon's quarantine and
        readiness count the daemon's own runs only. `on_lease(target, held)`: told when
        this engine takes or gives up (or loses) a target's lease (metrics)."""
        self.config = config
        self.environ = dict(os.environ if environ is None else environ)
        self._store = store
        self.observer: RunObserver = observer or Unobserved()
        # Told each target's result once a run returns (notifications); cheap, never raises.
        self.on_finished = on_finished or (lambda result, options: None)
        self.progress: RunProgress = progress or Unwatched()
        # The target being read, so that its HTTP responses count as that read's progress.
        self._reading: str | None = None
        self.source_factory: SourceFactory = source_factory or partial(
            build_source, on_response=self.observer.http_response
        )
        self.target_factory: TargetFactory = target_factory or partial(
            build_target, on_response=self._on_response
        )
        self.clock = clock
        self.passes = Passes(config, clock)
        self.stop = stop or threading.Event()
        self.instance = secrets.token_hex(4)
        self.origin = Origin(origin, self.instance)
        # Who holds a lease, for people: the pid is as this process sees itself, and is
        # never used to decide anything (see `orgsync.store.writer_lock`).
        self.holder = (
            f"{origin} on {socket.gethostname()} (pid {os.getpid()}, "
            f"instance {self.origin.instance})"
        )
        self._on_lease = on_lease
        self._keeper: LeaseKeeper | None = None
        self._keeper_guard = threading.Lock()

    def _on_response(self, system: str, status: int) -> None:
        self.observer.http_response(system, status)
        reading = self._reading
        if reading is not None:
            self.progress.advance(READ_TARGET, reading)

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = open_state_store(self.config.state, self.environ)
        return self._store

    @property
    def leases(self) -> LeaseKeeper:
        """This engine's leases (`orgsync.store.leases`): which targets it holds now."""
        with self._keeper_guard:
            if self._keeper is None:
                self._keeper = self.store.lease_keeper(
                    self.holder,
                    self.config.state.lease_ttl,
                    instance=self.instance,
                    on_change=self._on_lease,
                )
            return self._keeper

    def close(self) -> None:
        with self._keeper_guard:
            keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close()
        if self._store is not None:
            self._store.close()
            self._store = None

    def selected_targets(self, options: RunOptions) -> list[TargetConfig]:
        """`--target`, or every target; with reviewed plans exactly the reviewed targets."""
        reviewed = options.reviewed_plans
        if reviewed is None:
            return (
                [self.config.target(options.target)]
                if options.target
                else list(self.config.targets)
            )
        configured = [t.name for t in self.config.targets]
        unknown = sorted(set(reviewed) - set(configured))
        if unknown:
            raise ConfigError(
                f"--plan: the plan is for target(s) {', '.join(unknown)}, which the configuration "
                f"does not have (configured: {', '.join(configured)}); nothing was applied"
            )
        if options.target is not None and options.target not in reviewed:
            raise ConfigError(
                f"--target {options.target}: the reviewed plan has no plan for this target "
                f"(it has {', '.join(sorted(reviewed))}); nothing was applied"
            )
        chosen = {options.target} if options.target else set(reviewed)
        return [t for t in self.config.targets if t.name in chosen]

    def build_source(self) -> Source:
        from orgsync.interrupt import ReadInterrupt

        return self.source_factory(self.config, self.environ, interrupt=ReadInterrupt(self.stop))

    def read_source(self, source: Source | None = None) -> SourceSnapshot:
        source = source if source is not None else self.build_source()
        self.progress.begin(READ_SOURCE, None, None)
        snapshot = source.read()
        people, rejected = screen(snapshot)
        self.progress.end(READ_SOURCE, None, len(snapshot.people), "people")
        for record in rejected:
            log.warning("source.record_rejected", source_id=record.source_id, reason=record.reason)
        limits = safety_limits(self.config)
        # Only people orgsync can act on count: a directory whose emails all broke at
        # once (a mapping change) must stop the run, not shrink it.
        check_source_size(len(people), limits)
        self.observer.source_read(len(people))
        log.info(
            "source.read",
            people=len(people),
            groups=len(snapshot.groups),
            rejected=len(rejected),
        )
        return snapshot

    def run(self, options: RunOptions) -> list[TargetResult]:
        targets = self.selected_targets(options)
        mode = "dry-run" if options.dry_run else "sync"
        self.store  # noqa: B018 - an unusable state database stops the run before any read
        started = self.clock()
        if options.incremental and not options.subjects and options.reviewed_plans is None:
            once = SourceOnce(self.build_source, self.read_source)
            try:
                results = [self._incremental(t, options, started, once) for t in targets]
            finally:
                once.close()
            for result in results:
                self.on_finished(result, options)
            self._prune()
            return results
        kind = TARGETED if options.subjects else FULL
        try:
            source = self.build_source()
            cursor = source.change_cursor() if isinstance(source, DetectsChanges) else None
            snapshot = self.read_source(source)
        except Interrupted as error:
            log.warning("source.interrupted", error=str(error))
            results = [
                self._ended_early(
                    t.name, mode, options, started, status="interrupted", error=str(error)
                )
                for t in targets
            ]
        except OrgsyncError as error:
            log.error("source.failed", error=str(error))
            results = [
                self._ended_early(t.name, mode, options, started, status="failed", error=str(error))
                for t in targets
            ]
        else:
            results = [
                self._run_target(
                    t,
                    snapshot,
                    options,
                    self.passes.full(t, snapshot, cursor) if kind == FULL else Pass(kind),
                )
                for t in targets
            ]
        for result in results:
            self.on_finished(result, options)
        self._prune()
        return results

    def _incremental(
        self, config: TargetConfig, options: RunOptions, started: datetime, once: SourceOnce
    ) -> TargetResult:
        """One target's incremental pass (orgsync.passes decides what it plans)."""
        mode = "dry-run" if options.dry_run else "sync"
        try:
            decided = self.passes.decide(self.store, config, options, once)
            return self._run_target(config, decided.snapshot, decided.options, decided.pass_)
        except Interrupted as error:
            log.warning("source.interrupted", error=str(error))
            status, message = "interrupted", str(error)
        except OrgsyncError as error:
            log.error("source.failed", error=str(error))
            status, message = "failed", str(error)
        return self._ended_early(config.name, mode, options, started, status=status, error=message)

    def _ended_early(
        self,
        target: str,
        mode: str,
        options: RunOptions,
        started: datetime,
        *,
        status: str,
        error: str,
    ) -> TargetResult:
        """A run that ended before it reached the target (the source failed or stopped)."""
        # Counted like any other run: an alert on failed runs must see a source that fails.
        self.observer.run_finished(
            target, status, held=0, seconds=(self.clock() - started).total_seconds()
        )
        run_id = self.store.record_run(
            target,
            mode,
            options.trigger,
            origin=self.origin,
            started_at=started,
            outcome=Outcome(
                status=status, exit_code=EXIT_ERROR, summary={}, checksum=None, error=error
            ),
        )
        return TargetResult(target, EXIT_ERROR, status, run_id=run_id, error=error)

    def _run_target(
        self,
        config: TargetConfig,
        snapshot: SourceSnapshot | None,
        options: RunOptions,
        pass_: Pass,
    ) -> TargetResult:
        """`snapshot` None: an incremental pass with nothing to plan (no target call)."""
        mode = "dry-run" if options.dry_run else "sync"
        bound = log.bind(target=config.name, mode=mode)
        started = time.monotonic()
        if options.dry_run:
            began = self.clock()
            result = self._attempt(config, snapshot, options, None, store=self.store, lease=None)
            result.pass_kind, result.pass_reason = pass_.kind, pass_.reason
            result.run_id = self.store.record_run(
                config.name,
                mode,
                options.trigger,
                origin=self.origin,
                started_at=began,
                outcome=outcome_of(result),
            )
        else:
            try:
                with self._lease(config.name) as lease:
                    # Every write of the run is fenced by its lease: refused, nothing
                    # written, once another holder took the target over.
                    store = self.store.fenced(lease)
                    store.recover_interrupted(config.name)
                    run_id = store.start_run(config.name, mode, options.trigger, origin=self.origin)
                    result = self._attempt(
                        config, snapshot, options, run_id, store=store, lease=lease
                    )
                    result.pass_kind, result.pass_reason = pass_.kind, pass_.reason
                    if result.exit_code == EXIT_OK and pass_.on_clean is not None:
                        # Under the lease: the baseline is the state this writer left.
                        pass_.on_clean(store)
                    elif result.exit_code != EXIT_OK and pass_.kind == FULL:
                        # What it left undone concerns people no change may touch again:
                        # the next pass must be full too.
                        store.invalidate_baseline(config.name)
                    # Finished before the lease is released: a `running` row never outlives
                    # its writer's hold on the target.
                    ended = outcome_of(result)
                    store.finish_run(
                        run_id,
                        status=ended.status,
                        exit_code=ended.exit_code,
                        summary=dict(ended.summary),
                        checksum=ended.checksum,
                        error=ended.error,
                        held=ended.held,
                        failed=ended.failed,
                        waiting=ended.waiting,
                        pass_kind=ended.pass_kind,
                        pass_reason=ended.pass_reason,
                    )
            except TargetBusy as busy:
                bound.warning("run.busy", holder=busy.lease.holder if busy.lease else None)
                return TargetResult(config.name, EXIT_ERROR, BUSY, error=str(busy))
            except LeaseLost as lost:
                # Another holder has the target: nothing more is recorded by this run (the
                # journal refuses it); its `running` row is the new holder's to close.
                bound.error("run.lease_lost", error=str(lost))
                self.observer.run_finished(
                    config.name, LEASE_LOST, held=0, seconds=time.monotonic() - started
                )
                return TargetResult(config.name, EXIT_ERROR, LEASE_LOST, error=str(lost))
            except StateError as error:
                # The state database itself failed (busy beyond its timeout, gone bad):
                # nowhere to record the run; the next one tries again.
                bound.error("run.state_failed", error=str(error))
                self.observer.run_finished(
                    config.name, "failed", held=0, seconds=time.monotonic() - started
                )
                return TargetResult(config.name, EXIT_ERROR, "failed", error=str(error))
        plan_ = result.plan
        bound.info("run.finished", status=result.status, exit_code=result.exit_code)
        self.observer.run_finished(
            config.name,
            result.status,
            held=len(plan_.held) if plan_ else 0,
            seconds=time.monotonic() - started,
        )
        return result

    def _attempt(
        self,
        config: TargetConfig,
        snapshot: SourceSnapshot | None,
        options: RunOptions,
        run_id: str | None,
        *,
        store: StateStore,
        lease: HeldLease | None,
    ) -> TargetResult:
        """Plan (and apply); an error becomes a failed result, a stop an interrupted one,
        a lost lease `LeaseLost` (nothing of it may be recorded)."""
        if snapshot is None:  # an incremental pass that found nothing to do
            empty = Plan.build(target=config.name, generated_at=self.clock(), operations=[])
            return TargetResult(config.name, EXIT_OK, "ok", run_id=run_id, plan=empty)
        try:
            return self._plan_and_apply(config, snapshot, options, run_id, store=store, lease=lease)
        except LeaseLost:
            raise
        except Interrupted as error:
            log.warning("run.interrupted", target=config.name, error=str(error))
            return TargetResult(
                config.name, EXIT_ERROR, "interrupted", run_id=run_id, error=str(error)
            )
        except OrgsyncError as error:
            log.error("run.failed", target=config.name, error=str(error))
            return TargetResult(config.name, EXIT_ERROR, "failed", run_id=run_id, error=str(error))

    def _prune(self) -> None:
        """Forget runs older than `[state] keep_runs`, with their journal."""
        keep = self.config.state.keep_runs
        try:
            pruned = self.store.prune_runs(self.clock() - keep)
        except StateError as error:  # a busy database: the next run prunes
            log.warning("runs.prune_failed", error=str(error))
            return
        if pruned:
            log.info("runs.pruned", runs=pruned, older_than_days=keep.total_seconds() / 86400)

    def try_lease(self, target: str, *, patience: float = 0.0, limit: int | None = None) -> bool:
        """Become `target`'s writer (`orgsync.store.leases`); False while another holder
        has it, or while this engine already holds `limit` other targets (a replica's
        fair share).

        The daemon takes it before a run so that a busy target is a reason to wait, not a
        failed run; `run` then keeps it and releases it at the end. Taking it again while
        holding it extends the lease.
        """
        return self.leases.try_take(target, patience=patience, limit=limit) is not None

    def release_lease(self, target: str) -> None:
        """Stop being `target`'s writer (a no-op if this engine is not)."""
        if self._keeper is not None:
            self._keeper.release(target)

    def held_targets(self) -> frozenset[str]:
        """The targets this engine holds a valid lease on now."""
        return self._keeper.held_targets() if self._keeper is not None else frozenset()

    @contextmanager
    def _lease(self, target: str) -> Iterator[HeldLease]:
        lease = self.leases.try_take(target, patience=LOCK_PATIENCE)
        if lease is None:
            raise TargetBusy(target, self.store.lease_holder(target))
        try:
            yield lease
        finally:
            self.release_lease(target)

    def _plan_and_apply(
        self,
        config: TargetConfig,
        snapshot: SourceSnapshot,
        options: RunOptions,
        run_id: str | None,
        *,
        store: StateStore,
        lease: HeldLease | None,
    ) -> TargetResult:
        from orgsync.interrupt import ReadInterrupt

        interrupt = ReadInterrupt(self.stop)
        target = self.target_factory(config, self.environ, interrupt=interrupt)
        if isinstance(target, LearnsForms):  # SCIM: ask first in the forms that worked
            learned = store.learned_forms(config.name)
            target.use_learned_forms(learned, partial(store.learn_form, config.name))
        try:
            memory = store.memory(config.name)
            observed, desired, _ = self._read_target(
                config, snapshot, target, memory=memory, subjects=options.subjects
            )
            narrow = isinstance(target, ReadsPeople) and bool(options.subjects)
            scoped = self._scope(config.name, desired, observed, memory, options)
            if narrow and scoped and needs_invitations(scoped) and isinstance(target, ReadsPeople):
                # Only a person who is not a wanted member can be invited or lose one.
                observed = replace(observed, invites=target.read_invitations())
                scoped = self._scope(config.name, desired, observed, memory, options)
            if scoped is None and narrow:
                # A named person is an owner: the last-owner rule needs every owner, and
                # no API here lists owners alone, so read and plan the whole organization.
                observed, desired, _ = self._read_target(config, snapshot, target)
                narrow = False
            if options.only_must_exist:
                unknown = unknown_subjects(options.subjects, desired, observed, memory)
                if unknown:
                    raise ConfigError(
                        f"--only {' '.join(unknown)}: no such person in the source, in "
                        f"{config.name} or in orgsync's memory; nothing was planned or changed"
                    )
            # The gate's ratios stay measured against everyone orgsync manages: counted
            # from the state database when the organization was read for a few people.
            population = (
                managed_in_memory(memory, desired)
                if narrow
                else self._population(observed, memory, desired)
            )
            fresh = self.make_plan(
                config,
                scoped.desired if scoped else desired,
                scoped.observed if scoped else observed,
                target,
                options,
                memory=scoped.memory if scoped else memory,
                population=population,
            )
            reviewed = (options.reviewed_plans or {}).get(config.name)
            if options.reviewed_plans is not None and reviewed is None:
                raise ConfigError(f"the reviewed plan has no plan for {config.name}")
            if reviewed is not None:
                check_reviewed(reviewed, fresh)
            if options.dry_run or run_id is None:
                return dry_result(config.name, fresh, run_id)
            # From here on the calls are the apply's: a stop lets those in flight finish.
            interrupt.pause()
            store.record_plan(run_id, fresh)
            self._remember(
                store,
                config.name,
                scoped.desired if scoped else desired,
                observed,
                fresh,
                memory=memory,
                scope=scoped.keys if scoped else None,
                groups_read=not narrow,
            )
            if isinstance(target, PlanAware):
                # Knowing the plan, SCIM carries many member changes per PATCH request.
                target.prepare(fresh.operations)
            applier = Applier(
                target,
                LinkingJournal(store.journal(run_id), self.store, config.name),
                ApplySettings(max_concurrency=config.max_concurrency, retry=retry_settings(config)),
                stop=self.stop,
                check_lease=lease.check if lease is not None else None,
                on_outcome=partial(self._operation_finished, config.name),
            )
            self.progress.planned(fresh)
            self.progress.begin(APPLY, config.name, len(fresh.operations))
            report = applier.apply(fresh)
            self.progress.end(APPLY, config.name, len(report.outcomes), "operations")
        finally:
            target.close()
        return sync_result(config.name, fresh, report, run_id)

    def _operation_finished(self, target: str, outcome: ApplyOutcome) -> None:
        self.observer.operation_finished(target, outcome.operation.op, outcome.status.value)
        self.progress.advance(APPLY, target)

    @staticmethod
    def _read_org(
        target: Target, snapshot: SourceSnapshot, memory: Memory, subjects: Subjects
    ) -> TargetSnapshot:
        """The whole organization, or for a targeted run only the named people where the
        target can read people (`ReadsPeople`).

        Asked for: the named emails and those the source gives the named ids, and the
        members earlier runs linked to either (a person whose email changed since).
        """
        if not subjects or not isinstance(target, ReadsPeople):  # the test `narrow` repeats
            return target.read()
        emails = set(subjects.emails)
        source_ids = set(subjects.source_ids)
        for person in snapshot.people:
            key = person.email_key
            if person.id in subjects.source_ids:
                emails.add(key)
            elif key in subjects.emails:
                source_ids.add(person.id)
        source_ids.update(
            memory.linked_sources[k] for k in subjects.emails if k in memory.linked_sources
        )
        member_ids = frozenset(memory.links[s] for s in source_ids if s in memory.links)
        return target.read_people(frozenset(emails), member_ids)

    def _read_target(
        self,
        config: TargetConfig,
        snapshot: SourceSnapshot,
        target: Target,
        *,
        memory: Memory | None = None,
        subjects: Subjects | None = None,
    ) -> tuple[TargetSnapshot, DesiredState, MembershipRules]:
        """Read the organization (for a targeted run only the named people, where the
        target can: `_read_org`), check the configuration against it, and apply the rules."""
        self.progress.begin(READ_TARGET, config.name, None)
        self._reading = config.name
        try:
            if subjects and memory is not None:
                observed = self._read_org(target, snapshot, memory, subjects)
            else:
                observed = target.read()
        finally:
            self._reading = None
        self.progress.end(
            READ_TARGET,
            config.name,
            len(observed.members) + len(observed.invites),
            "members and invitations",
        )
        check_capabilities(config, target.capabilities)
        check_roles(config, observed.roles)
        rules = membership_rules(config, target.capabilities)
        return observed, desired_state(snapshot, rules, observed.roles), rules

    def explain(self, person: str, *, target: str | None = None) -> list[Explanation]:
        """`orgsync explain`: one person in each selected target, as a dry run plans it.

        Read-only: the same reads, rules, planner and safety gate as a dry run, but no
        writer lock, no run recorded, no pruning, nothing learned stored, and a missing
        state database is not created (orgsync then manages nobody yet).
        """
        from orgsync.interrupt import ReadInterrupt

        targets = self.selected_targets(RunOptions(target=target))
        store = self._read_only_store()
        snapshot = self.read_source()
        explanations: list[Explanation] = []
        for config in targets:
            connector = self.target_factory(
                config, self.environ, interrupt=ReadInterrupt(self.stop)
            )
            learned = store.learned_forms(config.name) if store is not None else []
            if isinstance(connector, LearnsForms):
                connector.use_learned_forms(learned, lambda form: None)
            try:
                observed, desired, rules = self._read_target(config, snapshot, connector)
                memory = store.memory(config.name) if store is not None else Memory()
                given = self.plan_input(config, desired, observed, connector, memory)
                inputs = ExplainInput(
                    given=given,
                    snapshot=snapshot,
                    rules=rules,
                    population=self._population(observed, memory, desired),
                    limits=safety_limits(self.config),
                )
                explanations.append(explain(person, inputs))
            finally:
                connector.close()
        return explanations

    def _read_only_store(self) -> StateStore | None:
        """The state database as it is, or None when there is none yet (never created)."""
        if self._store is None:
            try:
                self._store = StateStore.open(self.config.state.path, create=False)
            except NoStateDatabase:
                log.info("state.absent", path=str(self.config.state.path))
                return None
        return self._store

    @staticmethod
    def _scope(
        target: str,
        desired: DesiredState,
        observed: TargetSnapshot,
        memory: Memory,
        options: RunOptions,
    ) -> Scoped | None:
        """The slice of a targeted reconcile, or None to plan the whole organization."""
        subjects = options.subjects
        if not subjects:
            return None
        scoped = restrict(desired, observed, memory, subjects)
        if scoped is None:
            log.info("run.widened", target=target, reason="a named person is an owner")
        return scoped

    def make_plan(
        self,
        config: TargetConfig,
        desired: DesiredState,
        observed: TargetSnapshot,
        target: Target,
        options: RunOptions,
        *,
        memory: Memory | None = None,
        population: Population | None = None,
    ) -> Plan:
        """Plan and gate; `memory` defaults to the store's, `population` to the people
        orgsync manages in `observed` (and how many of them `desired` no longer reports).

        A targeted plan passes the whole organization's `population`: the ratios are
        measured against everyone orgsync manages, not against the few people in the slice.
        """
        memory = memory if memory is not None else self.store.memory(config.name)
        draft = plan(self.plan_input(config, desired, observed, target, memory))
        return gate(
            draft,
            population=(
                population
                if population is not None
                else self._population(observed, memory, desired)
            ),
            limits=safety_limits(self.config),
            allowances=Allowances(
                removals=options.allow_removals, additions=options.allow_additions
            ),
        )

    def plan_input(
        self,
        config: TargetConfig,
        desired: DesiredState,
        observed: TargetSnapshot,
        target: Target,
        memory: Memory,
    ) -> PlanInput:
        """What the planner plans from, with the target's `[safety]` removal policy: built
        here only, so a dry run, a sync and `explain` plan from the same inputs."""
        return PlanInput(
            target=config.name,
            desired=desired,
            observed=observed,
            memory=memory,
            policy=removal_policy(self.config, config),
            capabilities=target.capabilities,
            now=self.clock(),
        )

    def _population(
        self, observed: TargetSnapshot, memory: Memory, desired: DesiredState
    ) -> Population:
        return managed_people(
            observed, memory, desired, remove_unmanaged=self.config.safety.remove_unmanaged
        )

    def _remember(
        self,
        store: StateStore,
        target: str,
        desired: DesiredState,
        observed: TargetSnapshot,
        fresh: Plan,
        *,
        memory: Memory,
        scope: frozenset[EmailKey] | None = None,
        groups_read: bool = True,
    ) -> None:
        """Link wanted people to the members they matched, and track who went missing.

        `memory`: the target's, as read for this plan (the writer lock is held, so it is
        still what the database holds). `scope`: a targeted plan decided about these people
        only; everybody else's missing-since clock is kept as it is. `groups_read`: False
        when the organization was read for a few people only, so an owned group absent from
        `observed` was simply not read, not deleted by someone else.
        """
        by_email = {m.email_key: m for m in observed.members if m.email_key is not None}
        # One transaction writing only the links that change: a quiet pass costs no fsync.
        store.record_links(
            target,
            (
                LinkRow(email_key=key, source_id=wanted.source_id, member_id=member.id)
                for key, wanted in desired.wanted.items()
                if (member := by_email.get(key)) is not None
            ),
        )
        leaving = [op for op in fresh.operations if isinstance(op, _PERSON_REMOVALS)]
        leaving += [h.operation for h in fresh.held if isinstance(h.operation, _PERSON_REMOVALS)]
        # Held removals keep their clock: the grace must not restart while a person waits
        # for a human to lift the guard.
        missing = [normalize_email(w.email) for w in fresh.waiting if w.group is None]
        missing += [normalize_email(op.email) for op in leaving]
        store.mark_missing(target, missing, self.clock())
        if scope is not None:
            missing += [k for k in memory.missing_since if k not in scope]
        store.clear_missing(target, keep_only=missing)
        if not groups_read:
            return
        present = {group.id for group in observed.groups}
        for group_id in store.owned_groups(target):
            if group_id not in present:
                store.disown_group(target, group_id)  # deleted by someone else
